import Testing
import GPTQKit

/// The layer-by-layer pipeline on the tiny random fixtures: round trip through the saved
/// folder, consistency with GPTQ run by hand on captured inputs, and bad input.
@Suite struct PipelineTests {
    let dir = "/tmp/gptq-pipeline-tests-\(UInt32.random(in: 0...UInt32.max))"

    /// Calibration: `count` sequences of `length` ids drawn with Python's random (seed 1).
    static func samples(count: Int = 6, length: Int = 24, vocab: Int = 384) -> [[Int32]] {
        var random = PythonRandom(seed: 1)
        return (0..<count).map { _ in (0..<length).map { _ in Int32(random.randbelow(vocab)) } }
    }

    static func logits(_ model: LanguageModel, _ tokens: [Int32]) throws -> [Float] {
        try model.makeSession(capacity: tokens.count).forward(tokens, allLogits: true)
    }

    static func relativeError(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count)
        let scale = b.map(abs).max()!
        return zip(a, b).map { abs($0 - $1) }.max()! / scale
    }

    /// Quantizes a fixture, collecting each module's fake-quantized weight Q.
    static func quantize(_ arch: String, config: QuantizeConfig, method: QuantizationMethod = .gptq)
        throws -> (QuantizedModel, [String: [Float]]) {
        let model = try LanguageModel.load(folder: Fixtures.path("arch/\(arch)"))
        var fakeQuantized: [String: [Float]] = [:]
        var events: [QuantizationProgress] = []
        let quantized = try GPTQPipeline.quantize(model, config: config, calibration: samples(), method: method) { event in
            fakeQuantized[model.tensorName(layer: event.layer, module: event.module)] = event.result.q
            events.append(event)
        }
        // Every module of every layer, in the family's true-sequential order.
        let order = model.architecture.quantizationGroups.flatMap { $0 }
        #expect(events.map(\.module) == Array((0..<model.numLayers).map { _ in order }.joined()))
        #expect(events.allSatisfy { method == .rtn ? $0.loss == nil : $0.loss! > 0 })
        #expect(events.last!.line.hasPrefix("layer 2/2 \(order.last!)  ") && events.last!.line.hasSuffix("ETA 0s"))
        return (quantized, fakeQuantized)
    }

    /// The float fixture with the fake-quantized weights Q in place of W.
    static func fakeQuantizedModel(_ arch: String, _ q: [String: [Float]]) throws -> LanguageModel {
        let folder = Fixtures.path("arch/\(arch)")
        let checkpoint = try Checkpoint(folder: folder)
        return try LanguageModel.load(folder: folder) { name, inFeatures, outFeatures in
            guard q[name] != nil else { return nil }
            let bias = checkpoint.contains(name + ".bias") ? try checkpoint.tensor(name + ".bias").floats() : nil
            return DenseLinear(weight: Tensor(q[name]!, shape: [outFeatures, inFeatures]), bias: bias)
        }
    }

    /// qwen2 has q/k/v biases; its group size 48 leaves partial last groups (64 = 48 + 16, 160 = 3·48 + 16).
    @Test(arguments: [("llama", QuantizationMethod.gptq, 32), ("qwen2", .gptq, 48), ("llama", .rtn, 32)])
    func savedFolderLoadsAndMatchesTheFakeQuantizedModel(arch: String, method: QuantizationMethod, groupSize: Int) throws {
        let config = QuantizeConfig(bits: 4, groupSize: groupSize, sym: method == .gptq)
        let (quantized, q) = try Self.quantize(arch, config: config, method: method)
        let out = dir + "/\(arch)-\(method.rawValue)"
        try quantized.save(to: out)
        #expect(try FileIO.listDirectory(dir) == [out.split(separator: "/").last!].map(String.init))
        #expect(try FileIO.listDirectory(out) == ["config.json", "generation_config.json", "model.safetensors", "quantize_config.json"])

        let expectedConfig = JSON.object([
            ("bits", .number(4)), ("group_size", .number(Double(groupSize))), ("damp_percent", .number(0.01)), ("desc_act", .bool(false)),
            ("static_groups", .bool(false)), ("sym", .bool(method == .gptq)), ("true_sequential", .bool(true)),
            ("model_name_or_path", .string(out)), ("model_file_base_name", .string("model")), ("quant_method", .string("gptq")),
            ("checkpoint_format", .string(method == .gptq ? "gptq" : "gptq_v2")),
            ("meta", .object([("quantizer", .array([.string("swift-gptq:\(SwiftGPTQ.version)")])), ("damp_percent", .number(0.01)),
                              ("static_groups", .bool(false)), ("true_sequential", .bool(true)), ("mse", .number(0)),
                              ("act_group_aware", .bool(false))])),
        ])
        #expect(try JSON.read(path: out + "/quantize_config.json") == expectedConfig)
        #expect(try JSON.read(path: out + "/config.json")["quantization_config"] == expectedConfig)

        let checkpoint = try Checkpoint(folder: out)
        #expect(!checkpoint.contains("model.layers.0.self_attn.q_proj.weight"))
        #expect(try checkpoint.tensor("model.layers.1.mlp.down_proj.qweight").shape == [160 * 4 / 32, 64])
        #expect(try checkpoint.tensor("model.layers.1.mlp.down_proj.scales").shape == [(160 + groupSize - 1) / groupSize, 64])
        #expect(try checkpoint.tensor("model.embed_tokens.weight").dtype == .f16)
        #expect(checkpoint.contains("model.layers.0.self_attn.q_proj.bias") == (arch == "qwen2"))

        let tokens = try SafetensorsFile(path: Fixtures.path("arch/\(arch)/reference.safetensors")).tensor("input_ids").ints()
        let fake = try Self.logits(try Self.fakeQuantizedModel(arch, q), Array(tokens.prefix(12)))
        let float = try Self.logits(try LanguageModel.load(folder: Fixtures.path("arch/\(arch)")), Array(tokens.prefix(12)))
        // Only float16 rounding (scales, embeddings, norms) separates the saved model from Q in float32.
        #expect(Self.relativeError(try Self.logits(quantized.model, Array(tokens.prefix(12))), fake) < 2e-3)
        let loaded = try LanguageModel.load(folder: out)
        #expect(loaded.layerLinear(1, "mlp.down_proj") is GPTQLinear)
        #expect(Self.relativeError(try Self.logits(loaded, Array(tokens.prefix(12))), fake) < 2e-3)
        #expect(Self.relativeError(fake, float) > 1e-2, "quantization changed nothing")
    }

    /// Every family through GPTQ (fused q/k/v as one module, GPT-2's Conv1D weights as
    /// [out, in], the stems' learned positions, project_in/out and embedding norms feeding
    /// layer 0): the saved folder loads as GPTQ layers and generates greedily what the float
    /// model with the fake-quantized weights generates.
    @Test(arguments: ["gpt2", "gpt_bigcode", "gpt_neox", "gptj", "codegen", "moss", "opt", "opt-350m-layout", "bloom", "falcon",
                      "falcon-7b-layout", "falcon-rw-alibi"])
    func everyFamilyQuantizesSavesAndLoads(arch: String) throws {
        let (quantized, q) = try Self.quantize(arch, config: QuantizeConfig(bits: 4, groupSize: 32, sym: true))
        let out = dir + "/\(arch)"
        try quantized.save(to: out)
        let loaded = try LanguageModel.load(folder: out)
        // Greedy tokens are compared with the fake-quantized float model: float activations, as it has
        // (the tiny fixtures' near-tied logits flip under int8 activations' rounding; Int8KernelTests bound it).
        for case let layer as GPTQLinear in loaded.allLinears { layer.int8Activations = .off }
        let float = try LanguageModel.load(folder: Fixtures.path("arch/\(arch)"))
        for module in float.architecture.linears.map(\.name) {
            #expect(loaded.layerLinear(1, module) is GPTQLinear, "\(arch) \(module)")
            #expect(try Checkpoint(folder: out).contains(loaded.tensorName(layer: 0, module: module) + ".qweight"))
        }
        // GPT-NeoX's head, stored as `embed_out` in the fixture, is saved under its current name, which GPTQModel loads.
        if arch == "gpt_neox" {
            let saved = try Checkpoint(folder: out)
            #expect(saved.contains("lm_head.weight") && !saved.contains("embed_out.weight"))
        }
        let fake = try Self.fakeQuantizedModel(arch, q)
        let prompt = Array(try SafetensorsFile(path: Fixtures.path("arch/\(arch)/reference.safetensors")).tensor("input_ids").ints().prefix(12))
        #expect(Self.relativeError(try Self.logits(loaded, prompt), try Self.logits(fake, prompt)) < 2e-3, "\(arch)")
        #expect(Self.relativeError(try Self.logits(fake, prompt), try Self.logits(float, prompt)) > 1e-2, "\(arch): quantization changed nothing")
        func greedy(_ model: LanguageModel) throws -> [Int32] {
            try Generator(session: model.makeSession(capacity: 24)).generate(prompt: prompt, options: GenerationOptions(maxNewTokens: 8)).tokens
        }
        #expect(try greedy(loaded) == greedy(fake), "\(arch)")
    }

    /// Layer 0 by hand: Hessians from inputs captured with observers, GPTQ.quantize on each
    /// linear, q/k/v replaced by their Q before o_proj's inputs are captured (true-sequential),
    /// or every input captured from the float layer (not true-sequential).
    @Test(arguments: [true, false])
    func layerZeroEqualsGPTQOnCapturedInputs(trueSequential: Bool) throws {
        let config = QuantizeConfig(bits: 3, groupSize: 32, descAct: true, sym: false, trueSequential: trueSequential)
        let (_, pipelineQ) = try Self.quantize("llama", config: config)

        let model = try LanguageModel.load(folder: Fixtures.path("arch/llama"))
        let hidden = try Self.samples().map { try model.embed($0) }
        func gptqOnCapturedInputs(_ module: String) throws -> [Float] {
            var hessian = HessianAccumulator(columns: model.layerLinear(0, module).inFeatures)
            for var h in hidden {
                h.withUnsafeMutableBufferPointer { buffer in
                    model.layerForward(0, hidden: buffer.baseAddress!, tokens: buffer.count / 64) { name, input, rows in
                        if name == module { hessian.add(input, count: rows) }
                    }
                }
            }
            let weight = try model.checkpoint.tensor("model.layers.0.\(module).weight").floats()
            return try GPTQ.quantize(weight: weight, hessian: hessian, config: config).q
        }
        for module in ["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"] {
            let q = try gptqOnCapturedInputs(module)
            #expect(q == pipelineQ["model.layers.0.\(module)"], "\(module)")
            if trueSequential { model.setLayerLinear(0, module, DenseLinear(weight: Tensor(q, shape: [module == "self_attn.q_proj" ? 64 : 32, 64]))) }
        }
        #expect(try gptqOnCapturedInputs("self_attn.o_proj") == pipelineQ["model.layers.0.self_attn.o_proj"])
    }

    /// `lmHead`: after the last layer GPTQ quantizes the head from what it reads, the final
    /// norm's outputs of the quantized layers (captured here by hand through the fake-quantized
    /// model), and the folder saves it as GPTQModel does: `lm_head.qweight`/…, `lm_head: true`.
    /// llama's head is its own; opt's is tied (the embedding stays float, config.json unties
    /// the head); gpt_neox's is stored as `embed_out` and saved as `lm_head`.
    @Test(arguments: [("llama", "model.embed_tokens.weight"), ("opt", "model.decoder.embed_tokens.weight"),
                      ("gpt_neox", "gpt_neox.embed_in.weight")])
    func lmHeadIsQuantizedFromTheFinalNormOutputs(arch: String, embedding: String) throws {
        let config = QuantizeConfig(bits: 4, groupSize: 32, lmHead: true)
        let model = try LanguageModel.load(folder: Fixtures.path("arch/\(arch)"))
        let headName = try model.storedHeadWeights().name
        var q: [String: [Float]] = [:]
        var head: QuantizationProgress?
        let quantized = try GPTQPipeline.quantize(model, config: config, calibration: Self.samples()) { event in
            if event.module == headName { head = event } else { q[model.tensorName(layer: event.layer, module: event.module)] = event.result.q }
        }
        let headEvent = try #require(head)
        #expect(headEvent.line.hasPrefix("layer 2/2 \(headName)  loss "))
        #expect(quantized.model.lmHead is GPTQLinear)

        let fake = try Self.fakeQuantizedModel(arch, q)
        var hessian = HessianAccumulator(columns: fake.lmHead.inFeatures)
        for sample in Self.samples() {
            var hidden = try fake.embed(sample)
            hidden.withUnsafeMutableBufferPointer { buffer in
                for layer in 0..<fake.numLayers { fake.layerForward(layer, hidden: buffer.baseAddress!, tokens: sample.count, observe: nil) }
            }
            hessian.add(fake.headInput(hidden, rows: sample.count), count: sample.count)
        }
        let expected = try GPTQ.quantize(weight: try fake.storedHeadWeights().weight.floats(), hessian: hessian, config: config)
        #expect(expected.q == headEvent.result.q, "\(arch)")

        let out = dir + "/\(arch)-head"
        try quantized.save(to: out)
        let checkpoint = try Checkpoint(folder: out)
        #expect(checkpoint.contains("lm_head.qweight") && checkpoint.contains("lm_head.scales"))
        #expect(!checkpoint.contains("lm_head.weight") && !checkpoint.contains("embed_out.weight") && !checkpoint.contains("embed_out.qweight"))
        #expect(try checkpoint.tensor(embedding).dtype == .f16)
        let source = try JSON.read(path: Fixtures.path("arch/\(arch)/config.json"))
        #expect(source["tie_word_embeddings"]?.bool == (arch == "opt"))
        let written = try JSON.read(path: out + "/config.json")
        #expect(written["tie_word_embeddings"]?.bool == false)
        #expect(written["quantization_config"]?["lm_head"]?.bool == true)
        #expect(try JSON.read(path: out + "/quantize_config.json")["lm_head"]?.bool == true)

        let loaded = try LanguageModel.load(folder: out)
        #expect(loaded.lmHead is GPTQLinear)
        let prompt = Array(try SafetensorsFile(path: Fixtures.path("arch/\(arch)/reference.safetensors")).tensor("input_ids").ints().prefix(12))
        q[headName] = headEvent.result.q
        let fakeWithHead = try Self.logits(try Self.fakeQuantizedModel(arch, q), prompt)
        #expect(Self.relativeError(try Self.logits(loaded, prompt), fakeWithHead) < 2e-3, "\(arch)")
        #expect(Self.relativeError(fakeWithHead, try Self.logits(fake, prompt)) > 1e-2, "\(arch): quantizing the head changed nothing")
    }

    /// README's library flow: calibration corpus, quantize, save, load the folder, generate.
    /// Greedy generation from the loaded folder follows the fake-quantized float model.
    @Test func libraryFlowQuantizesSavesLoadsAndGenerates() throws {
        try FileIO.makeDirectory(dir)
        let ids = dir + "/calibration.json"
        var random = PythonRandom(seed: 2)
        try FileIO.writeAtomically(path: ids, text: "[" + (0..<400).map { _ in String(random.randbelow(384)) }.joined(separator: ",") + "]")
        let model = try LanguageModel.load(folder: Fixtures.path("arch/llama"))
        let corpus = try CalibrationCorpus.load(path: ids, format: .tokens, tokenize: { _ in [] })
        let samples = try corpus.samples(.randomWindows(count: 8, length: 32, seed: 0))
        var q: [String: [Float]] = [:]
        let quantized = try GPTQPipeline.quantize(model, config: QuantizeConfig(bits: 4, groupSize: 32), calibration: samples) {
            q[model.tensorName(layer: $0.layer, module: $0.module)] = $0.result.q
        }
        try quantized.save(to: dir + "/llama-gptq")

        let loaded = try LanguageModel.load(folder: dir + "/llama-gptq")
        // Float activations, as the fake-quantized model has (see everyFamilyQuantizesSavesAndLoads).
        for case let layer as GPTQLinear in loaded.allLinears { layer.int8Activations = .off }
        let prompt: [Int32] = [5, 17, 42, 99]
        let options = GenerationOptions(maxNewTokens: 12)
        let generated = try Generator(session: loaded.makeSession(capacity: 32)).generate(prompt: prompt, options: options)
        let expected = try Generator(session: try Self.fakeQuantizedModel("llama", q).makeSession(capacity: 32)).generate(prompt: prompt, options: options)
        let float = try Generator(session: try LanguageModel.load(folder: Fixtures.path("arch/llama")).makeSession(capacity: 32))
            .generate(prompt: prompt, options: options)
        #expect(generated.tokens.count == 12)
        #expect(generated.tokens == expected.tokens)
        #expect(generated.tokens != float.tokens, "quantization changed no token")
    }

    @Test func badConfigurationsNameTheCulprit() throws {
        let model = try LanguageModel.load(folder: Fixtures.path("arch/llama"))
        #expect(throws: GPTQError.invalidArgument("group size -2 must be positive or -1 (one group per row)")) {
            try GPTQPipeline.quantize(model, config: QuantizeConfig(groupSize: -2), calibration: Self.samples())
        }
        #expect(throws: GPTQError.invalidArgument("bits 5 is not supported (use 2, 3, 4 or 8)")) {
            try GPTQPipeline.quantize(model, config: QuantizeConfig(bits: 5), calibration: Self.samples())
        }
        #expect(throws: GPTQError.invalidArgument("calibration sample 1 has token id 384, outside the vocabulary of 384")) {
            try GPTQPipeline.quantize(model, config: QuantizeConfig(groupSize: 32), calibration: [[1, 2], [3, 384]])
        }
        #expect(throws: GPTQError.invalidArgument("GPTQ needs calibration samples; none were given")) {
            try GPTQPipeline.quantize(model, config: QuantizeConfig(groupSize: 32), calibration: [])
        }
        #expect(throws: GPTQError.invalidArgument("desc_act orders columns by GPTQ's Hessian; round-to-nearest has none")) {
            try GPTQPipeline.quantize(model, config: QuantizeConfig(groupSize: 32, descAct: true), calibration: [], method: .rtn)
        }
    }

    @Test func jobChecksArgumentsBeforeWorking() throws {
        let model = Fixtures.path("arch/llama")
        try FileIO.makeDirectory(dir)
        func job(out: String? = nil, calibration: String, _ edit: (inout QuantizeJob) -> Void = { _ in }) -> QuantizeJob {
            var job = QuantizeJob(model: model, out: out ?? dir + "/out")
            job.config = QuantizeConfig(bits: 4, groupSize: 32)
            job.calibration = calibration
            job.calibrationMode = .randomWindows(count: 4, length: 16, seed: 0)
            edit(&job)
            return job
        }
        let ids = dir + "/ids.json"
        try FileIO.writeAtomically(path: ids, text: "[" + (0..<40).map { String($0 * 7 % 384) }.joined(separator: ", ") + "]")
        let empty = dir + "/empty.txt"
        try FileIO.writeAtomically(path: empty, text: "")
        let short = dir + "/short.json"
        try FileIO.writeAtomically(path: short, text: "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]")

        #expect(throws: GPTQError.invalidArgument("bits 5 is not supported (use 2, 3, 4 or 8)")) {
            try job(calibration: ids) { $0.config.bits = 5 }.run()
        }
        #expect(throws: GPTQError.invalidArgument("output folder \(model)/q4 is inside the model folder \(model); choose a folder outside it")) {
            try job(out: model + "/q4", calibration: ids).run()
        }
        #expect(throws: GPTQError.invalidArgument("group size 0 must be positive or -1 (one group per row)")) {
            try job(calibration: ids) { $0.config.groupSize = 0 }.run()
        }
        #expect(throws: GPTQError.invalidFile(path: empty, reason: "calibration file is empty")) {
            try job(calibration: empty).run()
        }
        #expect(throws: GPTQError.invalidFile(path: short, reason: "calibration data has 16 tokens; random windows of 16 tokens need at least 17")) {
            try job(calibration: short).run()
        }
        #expect(throws: GPTQError.invalidArgument("GPTQ needs calibration data: pass --calib FILE")) {
            try job(calibration: ids) { $0.calibration = nil }.run()
        }
        #expect(try FileIO.listDirectory(dir) == ["empty.txt", "ids.json", "short.json"])

        var lines: [String] = []
        let quantized = try job(calibration: ids) { $0.maxShardBytes = 100_000 }.run { lines.append($0) }
        #expect(lines.first == "calibration: 4 samples, 64 tokens from \(ids) (40 tokens)")
        #expect(lines.count == 15 && quantized.packed.count == 14)
        #expect(try FileIO.listDirectory(dir + "/out").contains("model.safetensors.index.json"))
        #expect(throws: GPTQError.invalidArgument("output folder \(dir)/out already exists; pass --overwrite (overwrite: true) to replace it")) {
            try job(calibration: ids).run()
        }
        #expect(try QuantizeJob.parseByteSize("2GB") == 2_000_000_000)
        #expect(try QuantizeJob.parseByteSize("1.5 MiB") == 1_572_864)
        #expect(try QuantizeJob.parseByteSize("4096") == 4096)
        #expect(throws: GPTQError.invalidArgument("size '2XB' is not a positive number of bytes with an optional unit (KB, MB, GB, KiB, MiB, GiB)")) {
            try QuantizeJob.parseByteSize("2XB")
        }
    }
}
