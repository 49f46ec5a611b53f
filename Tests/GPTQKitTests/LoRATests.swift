import Testing
import GPTQKit

/// LoRA on the block engine against PyTorch + PEFT: one step's gradients, the loss, and the
/// adapted logits of Tests/Fixtures/lora (scripts/fixtures/make_lora_fixtures.py), on float
/// bases of every family and on GPTQ checkpoints.
@Suite struct LoRATests {
    struct Case: Sendable, CustomStringConvertible {
        let name: String, base: String, targets: [String], rank: Int, alpha: Double, rsLoRA: Bool, hasLogits: Bool
        var description: String { name }
        var folder: String { Fixtures.path("lora/\(name)") }
    }

    static let cases: [Case] = {
        let list = try! JSON.read(path: Fixtures.path("lora/cases.json")).array!
        return list.map {
            Case(name: $0["name"]!.string!, base: $0["base"]!.string!, targets: $0["target_modules"]!.array!.map { $0.string! },
                 rank: $0["r"]!.int!, alpha: $0["lora_alpha"]!.double!, rsLoRA: $0["use_rslora"]!.bool!, hasLogits: $0["logits"]!.bool!)
        }
    }()

    /// The fixture's batch: row 0 whole (its first tokens not targets), row 1 without its padding.
    struct Reference {
        let batch: [TrainingSequence]
        let file: SafetensorsFile
        let loss: Float

        init(_ folder: String) throws {
            file = try SafetensorsFile(path: folder + "/reference.safetensors")
            let ids = try file.tensor("input_ids"), labels = try file.tensor("labels").ints(), lengths = try file.tensor("lengths").ints()
            let width = ids.shape[1], flat = ids.ints()
            batch = (0..<ids.shape[0]).map { row in
                let count = Int(lengths[row])
                return TrainingSequence(tokens: Array(flat[row * width..<row * width + count]),
                                        targets: (0..<count).map { labels[row * width + $0] != -100 })
            }
            loss = try file.tensor("loss").floats()[0]
        }
    }

    @Test(arguments: cases)
    func gradientsMatchPEFT(_ c: Case) throws {
        let model = try LanguageModel.load(folder: Fixtures.path(c.base))
        let adapter = try LoRAAdapter.load(folder: c.folder, into: model)
        #expect(adapter.config == LoRAConfig(rank: c.rank, alpha: c.alpha, useRSLoRA: c.rsLoRA, targetModules: adapter.config.targetModules))
        #expect(Set(adapter.config.targetModules) == Set(c.targets))
        let reference = try Reference(c.folder)
        let targets = reference.batch.reduce(0) { $0 + $1.targetCount }
        let loss = try model.accumulateGradients(reference.batch, lossScale: 1 / Float(targets))
        #expect(loss.targets == targets)
        #expect(abs(loss.mean - Double(reference.loss)) / Double(reference.loss) < 1e-5, "\(c) loss \(loss.mean) vs \(reference.loss)")
        var worst = 0.0
        for module in adapter.modules {
            let name = "base_model.model.\(module.name)"
            for (gradient, factor) in [(module.linear.gradientA, "lora_A"), (module.linear.gradientB, "lora_B")] {
                let expected = try reference.file.tensor("grad:\(name).\(factor).weight").floats()
                let error = relativeError(gradient, expected)
                worst = max(worst, error)
                #expect(error < 1e-4, "\(c) \(name).\(factor): relative error \(error)")
            }
        }
        #expect(adapter.modules.count * 2 == reference.file.names.filter { $0.hasPrefix("grad:") }.count)
        print("\(c): \(adapter.modules.count) adapted modules, worst gradient relative error \(worst)")
    }

    /// A PEFT-written adapter, applied unmerged, gives PEFT's logits.
    @Test(arguments: cases.filter(\.hasLogits))
    func adaptedLogitsMatchPEFT(_ c: Case) throws {
        let model = try LanguageModel.load(folder: Fixtures.path(c.base))
        let reference = try Reference(c.folder)
        let expected = try reference.file.tensor("logits")
        let (width, vocab) = (expected.shape[1], expected.shape[2])
        let plain = try model.makeSession(capacity: 16).forward(reference.batch[0].tokens, allLogits: true)
        let adapter = try LoRAAdapter.load(folder: c.folder, into: model)
        for (row, sequence) in reference.batch.enumerated() {
            let logits = try model.makeSession(capacity: 16).forward(sequence.tokens, allLogits: true)
            let start = row * width * vocab
            let error = relativeError(logits, expected.floats(start: start, count: sequence.tokens.count * vocab))
            #expect(error < 1e-4, "\(c) row \(row): relative error \(error)")
        }
        // The adapter moves the logits (so the comparison above sees it), and removing it restores the base.
        let first = try model.makeSession(capacity: 16).forward(reference.batch[0].tokens, allLogits: true)
        #expect(relativeError(first, plain) > 1e-3)
        adapter.remove(from: model)
        #expect(try model.makeSession(capacity: 16).forward(reference.batch[0].tokens, allLogits: true) == plain)
    }
}
