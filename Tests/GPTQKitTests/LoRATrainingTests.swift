import Testing
import GPTQKit

/// The optimizer against torch (Tests/Fixtures/lora/adamw.safetensors), gradient
/// accumulation, the training loop, PEFT's format both ways, the data's targets and the
/// errors of bad input.
@Suite struct LoRATrainingTests {
    static let llama = Fixtures.path("arch/llama")

    @Test func adamWWithScheduleAndClippingMatchesTorch() throws {
        let file = try SafetensorsFile(path: Fixtures.path("lora/adamw.safetensors"))
        var parameters = [try file.tensor("init:p0").floats(), try file.tensor("init:p1").floats()]
        let optimizer = AdamW(weightDecay: 0.1)
        let schedule = LearningRateSchedule(peak: 0.01, shape: .cosine, warmupSteps: 2, totalSteps: 6)
        let rates = try file.tensor("lr").floats()
        for step in 0..<6 {
            var gradients = [try file.tensor("grad:\(step):p0").floats(), try file.tensor("grad:\(step):p1").floats()]
            let norm = gradients.joined().reduce(0.0) { $0 + Double($1 * $1) }.squareRoot()
            if let factor = GradientClipping.factor(norm: norm, maxNorm: 1) {
                gradients = gradients.map { $0.map { $0 * factor } }
            }
            #expect(abs(schedule.rate(at: step) - rates[step]) <= 1e-9 + 1e-6 * rates[step], "step \(step) rate")
            optimizer.beginStep()
            for i in 0..<2 { optimizer.update(i, value: &parameters[i], gradient: gradients[i], learningRate: schedule.rate(at: step)) }
            for i in 0..<2 {
                let expected = try file.tensor("after:\(step):p\(i)").floats()
                #expect(relativeError(parameters[i], expected) < 1e-6, "step \(step) p\(i)")
            }
        }
    }

    /// Two micro-batches of one sequence accumulate the gradients of one batch of both.
    @Test func accumulatedGradientsEqualOneBatch() throws {
        let model = try LanguageModel.load(folder: Self.llama)
        let adapter = try LoRAAdapter.load(folder: Fixtures.path("lora/llama"), into: model)
        let batch = try LoRATests.Reference(Fixtures.path("lora/llama")).batch
        let scale = 1 / Float(batch.reduce(0) { $0 + $1.targetCount })
        _ = try model.accumulateGradients(batch, lossScale: scale)
        let together = adapter.modules.map { $0.linear.gradientA + $0.linear.gradientB }
        for module in adapter.modules { module.linear.zeroGradients() }
        for sequence in batch { _ = try model.accumulateGradients([sequence], lossScale: scale) }
        let apart = adapter.modules.map { $0.linear.gradientA + $0.linear.gradientB }
        #expect(relativeError(apart.joined(), together.joined()) < 1e-6)
        #expect(adapter.gradientNorm() > 0)
    }

    /// Training on a small batch lowers its loss, and dropout does not break the backward
    /// (the checkpointed recompute draws the forward's mask).
    @Test func trainingLowersTheLoss() throws {
        let model = try LanguageModel.load(folder: Self.llama)
        let adapter = try LoRAAdapter.create(on: model, config: LoRAConfig(rank: 4, alpha: 8, dropout: 0.1, targetModules: ["q_proj", "v_proj", "down_proj"]), seed: 1)
        let batch = try LoRATests.Reference(Fixtures.path("lora/llama")).batch
        let before = try model.loss(batch).mean
        let trainer = try LoRATrainer(model: model, adapter: adapter,
                                      options: TrainingOptions(epochs: 40, batchSize: 1, gradientAccumulation: 2, learningRate: 2e-2,
                                                               schedule: .cosine, warmupRatio: 0.1, weightDecay: 0.01))
        var steps = 0
        try trainer.train(batch, heldOut: [], progress: { _ in steps += 1 }, epochEnd: { _, loss in #expect(loss == nil) })
        #expect(steps == 40)
        let after = try model.loss(batch).mean
        print("training on the llama fixture's batch: loss \(before) -> \(after)")
        #expect(after < 0.75 * before, "loss \(before) -> \(after)")
    }

    /// A run stopped after a checkpoint and resumed from it takes the uninterrupted run's steps.
    @Test func resumedTrainingFollowsTheUninterruptedRun() throws {
        let batch = try LoRATests.Reference(Fixtures.path("lora/llama")).batch
        let samples = batch + batch.map { TrainingSequence(tokens: Array($0.tokens.reversed())) }
        let config = LoRAConfig(rank: 2, alpha: 4, dropout: 0.2, targetModules: ["k_proj", "up_proj"])
        let options = TrainingOptions(epochs: 3, batchSize: 1, gradientAccumulation: 2, learningRate: 1e-2, schedule: .linear, warmupRatio: 0.2)
        struct Stop: Error {}
        func run(resumeFrom folder: String?, stopAfter: Int?) throws -> (losses: [Int: Double], adapter: LoRAAdapter) {
            let model = try LanguageModel.load(folder: Self.llama)
            let adapter = try folder.map { try LoRAAdapter.load(folder: $0, into: model) } ?? LoRAAdapter.create(on: model, config: config, seed: 7)
            let trainer = try LoRATrainer(model: model, adapter: adapter, options: options)
            if let folder { try adapter.restoreTrainingState(from: folder, into: trainer.optimizer) }
            var losses: [Int: Double] = [:]
            do {
                try trainer.train(samples, heldOut: [], checkpointSteps: 2, progress: { losses[$0.step] = $0.loss }, checkpoint: { step in
                    guard step == stopAfter else { return }
                    try adapter.save(to: Self.resumeFolder, baseModel: Self.llama, model: model, optimizer: trainer.optimizer)
                    throw Stop()
                }, epochEnd: { _, _ in })
            } catch is Stop {}
            return (losses, adapter)
        }
        let whole = try run(resumeFrom: nil, stopAfter: nil)
        #expect(whole.losses.count == 6)
        let first = try run(resumeFrom: nil, stopAfter: 4)
        #expect(first.losses.keys.sorted() == [1, 2, 3, 4])
        let rest = try run(resumeFrom: Self.resumeFolder, stopAfter: nil)
        #expect(rest.losses.keys.sorted() == [5, 6])
        for (step, loss) in first.losses.merging(rest.losses, uniquingKeysWith: { a, _ in a }) {
            #expect(abs(loss - whole.losses[step]!) <= 1e-6 * whole.losses[step]!, "step \(step): \(loss) vs \(whole.losses[step]!)")
        }
        let final = rest.adapter.modules.flatMap { $0.linear.a + $0.linear.b }, expected = whole.adapter.modules.flatMap { $0.linear.a + $0.linear.b }
        #expect(relativeError(final, expected) < 1e-6)
    }

    static let resumeFolder = Fixtures.temporaryFolder("lora-resume") + "/adapter"

    /// An adapter saved here has PEFT's tensor names and config, and loads back to the same factors.
    @Test func savedAdapterRoundTrips() throws {
        let model = try LanguageModel.load(folder: Self.llama)
        let peftFolder = Fixtures.path("lora/llama")
        let adapter = try LoRAAdapter.load(folder: peftFolder, into: model)
        let folder = Fixtures.temporaryFolder("lora") + "/adapter"
        try adapter.save(to: folder, baseModel: Self.llama, model: model)
        let peft = try SafetensorsFile(path: peftFolder + "/adapter_model.safetensors")
        let ours = try SafetensorsFile(path: folder + "/adapter_model.safetensors")
        #expect(Set(ours.names) == Set(peft.names))
        for name in peft.names { #expect(try ours.tensor(name).floats() == peft.tensor(name).floats(), "\(name)") }
        let config = try JSON.read(path: folder + "/adapter_config.json")
        #expect(config["peft_type"]?.string == "LORA" && config["r"]?.int == 4 && config["lora_alpha"]?.double == 8)
        adapter.remove(from: model)
        let reloaded = try LoRAAdapter.load(folder: folder, into: model)
        #expect(reloaded.config == adapter.config)
        #expect(zip(reloaded.modules, adapter.modules).allSatisfy { $0.name == $1.name && $0.linear.a == $1.linear.a && $0.linear.b == $1.linear.b })
    }

    /// An adapter `gptq finetune` wrote (Tests/Fixtures/lora/swift-adapter) gives, here, the
    /// logits PEFT gives with it (peft_logits.safetensors, from make_lora_fixtures.py --check-adapter).
    @Test func adapterTrainedHereMatchesPEFTLogits() throws {
        let folder = Fixtures.path("lora/swift-adapter")
        let model = try LanguageModel.load(folder: Self.llama)
        let plain = try SafetensorsFile(path: folder + "/peft_logits.safetensors")
        let ids = try plain.tensor("input_ids"), lengths = try plain.tensor("lengths").ints(), expected = try plain.tensor("logits")
        let (width, vocab) = (ids.shape[1], expected.shape[2])
        let baseLogits = try model.makeSession(capacity: 16).forward(Array(ids.ints()[0..<width]), allLogits: true)
        _ = try LoRAAdapter.load(folder: folder, into: model)
        for row in 0..<ids.shape[0] {
            let tokens = Array(ids.ints()[row * width..<row * width + Int(lengths[row])])
            let logits = try model.makeSession(capacity: 16).forward(tokens, allLogits: true)
            let error = relativeError(logits, expected.floats(start: row * width * vocab, count: tokens.count * vocab))
            #expect(error < 1e-4, "row \(row): relative error \(error)")
        }
        #expect(relativeError(baseLogits, expected.floats(start: 0, count: width * vocab)) > 1e-3, "the trained adapter moves the logits")
    }

    /// A chat sample trains on the assistant's answer and its end of turn only.
    @Test func chatSamplesTargetTheAssistantTurns() throws {
        let folder = Fixtures.path("tokenizers/smollm2")
        let tokenizer = try Tokenizer(folder: folder)
        let data = try FinetuneData(tokenizer: tokenizer, tokenizerConfig: try TokenizerConfig(folder: folder), maxLength: 512)
        let file = Fixtures.temporaryFolder("lora") + "/chat.jsonl"
        try FileIO.writeAtomically(path: file, text: """
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye"}]}

            {"text": "plain text"}
            """)
        let samples = try data.load(path: file)
        #expect(samples.count == 2)
        let chat = samples[0]
        // Two runs of targets, each an answer with the template's end of turn.
        var runs: [[Int32]] = []
        for t in chat.tokens.indices where chat.targets[t] {
            if t > 0, chat.targets[t - 1], !runs.isEmpty { runs[runs.count - 1].append(chat.tokens[t]) } else { runs.append([chat.tokens[t]]) }
        }
        #expect(runs.map { tokenizer.decode($0, skipSpecialTokens: false) } == ["Hello there<|im_end|>\n", "Goodbye<|im_end|>\n"])
        let text = samples[1]
        #expect(text.targets == text.tokens.indices.map { $0 > 0 })
        #expect(tokenizer.decode(text.tokens, skipSpecialTokens: false) == "plain text<|im_end|>")
    }

    @Test func badInputGivesClearErrors() throws {
        let model = try LanguageModel.load(folder: Self.llama)
        func message(_ body: () throws -> Void) -> String {
            do { try body(); return "no error" } catch { return "\(error)" }
        }
        #expect(message { _ = try LoRAAdapter.create(on: model, config: LoRAConfig(rank: 4, alpha: 8, targetModules: ["q_proj", "qkv"]), seed: 0) }
            .contains("target module 'qkv' matches no linear of the llama model's layers (its linears: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"))
        #expect(message { _ = try LoRAAdapter.create(on: model, config: LoRAConfig(rank: 0, alpha: 8, targetModules: ["q_proj"]), seed: 0) }
            .contains("LoRA rank (r, --lora-r) must be positive, got 0"))
        // GPT-2's adapter names modules the llama model lacks; a llama adapter of other shapes does not fit.
        let otherBase = message { _ = try LoRAAdapter.load(folder: Fixtures.path("lora/gpt2"), into: model) }
        #expect(otherBase.contains("the llama model has no linear 'transformer.h.") && otherBase.hasSuffix("in its layers: an adapter of another base?"))
        let folder = Fixtures.temporaryFolder("lora")
        try FileIO.writeAtomically(path: folder + "/adapter_config.json", text: #"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}"#)
        try SafetensorsWriter.write(path: folder + "/adapter_model.safetensors", tensors: [
            ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", Tensor([Float](repeating: 0, count: 2 * 32), shape: [2, 32])),
            ("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", Tensor([Float](repeating: 0, count: 64 * 2), shape: [64, 2])),
        ])
        #expect(message { _ = try LoRAAdapter.load(folder: folder, into: model) }
            .contains("tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight': shape [2, 32] F32, expected [2, 64] float for r = 2 on this model: an adapter of another base?"))
        let tokenizerFolder = Fixtures.path("tokenizers/smollm2")
        let data = try FinetuneData(tokenizer: try Tokenizer(folder: tokenizerFolder), tokenizerConfig: try TokenizerConfig(folder: tokenizerFolder), maxLength: 64)
        try FileIO.writeAtomically(path: folder + "/empty.jsonl", text: "\n\n")
        #expect(message { _ = try data.load(path: folder + "/empty.jsonl") }.contains("empty.jsonl: no samples (an empty dataset)"))
        try FileIO.writeAtomically(path: folder + "/bad.jsonl", text: "{\"text\": \"a\"}\n{\"prompt\": \"b\"}\n")
        #expect(message { _ = try data.load(path: folder + "/bad.jsonl") }.contains("bad.jsonl: line 2: a sample needs a \"text\" string or a \"messages\" list"))
    }
}
