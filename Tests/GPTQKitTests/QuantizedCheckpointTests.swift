import Testing
import GPTQKit

@Suite struct QuantizedCheckpointTests {
    let dir = "/tmp/gptq-quantized-checkpoint-tests-\(UInt32.random(in: 0...UInt32.max))"
    static let variants = ["w4_g32_descact_asym", "w3_perchannel_sym", "w8_g32_sym", "w2_g32_asym"]

    /// AutoGPTQ's whole-model checkpoints load through LanguageModel.load and give the
    /// logits of AutoGPTQ's QuantLinear forward (its RoPE frequencies were float16-rounded,
    /// hence about 2e-4 of difference at best).
    @Test(arguments: variants)
    func autogptqCheckpointMatchesReferenceLogits(_ variant: String) throws {
        let folder = Fixtures.path("autogptq_ckpt/\(variant)")
        let model = try LanguageModel.load(folder: folder)
        #expect(model.layerLinear(0, "self_attn.q_proj") is GPTQLinear)
        #expect(model.layerLinear(1, "mlp.down_proj") is GPTQLinear)
        #expect(!(model.lmHead is GPTQLinear))
        let reference = try SafetensorsFile(path: folder + "/reference.safetensors")
        let ids = try reference.tensor("input_ids").ints(), logits = try reference.tensor("logits").floats()
        let length = ids.count / 2, vocab = model.vocabSize
        for b in 0..<2 {
            let session = model.makeSession(capacity: 32)
            let ours = try session.forward(Array(ids[(b * length)..<((b + 1) * length)]), allLogits: true)
            #expect(relativeError(ours, logits[(b * length * vocab)..<((b + 1) * length * vocab)]) < 1e-3, "\(variant) sequence \(b)")
        }
    }

    /// Checkpoints of every other family written by AutoGPTQ 0.7.1's own GPTQ, packing and
    /// QuantLinear (scripts/fixtures/make_autogptq_family_checkpoints.py): fused q/k/v,
    /// GPT-2's Conv1D, act-order and asymmetric zeros, AutoGPTQ's all-zero biases of bias-free
    /// linears, with the logits of its QuantLinear forward in float32.
    @Test(arguments: ["bloom", "gpt2", "gpt_neox", "gptj", "opt", "gpt_bigcode", "codegen", "falcon"])
    func autogptqFamilyCheckpointMatchesItsLogits(_ family: String) throws {
        let folder = Fixtures.path("autogptq_families/\(family)")
        let model = try LanguageModel.load(folder: folder)
        for module in model.architecture.linears.map(\.name) { #expect(model.layerLinear(0, module) is GPTQLinear, "\(family) \(module)") }
        let reference = try SafetensorsFile(path: folder + "/reference.safetensors")
        let ids = try reference.tensor("input_ids").ints(), logits = try reference.tensor("logits").floats()
        let length = ids.count / 2, vocab = model.vocabSize
        for b in 0..<2 {
            let ours = try model.makeSession(capacity: 32).forward(Array(ids[(b * length)..<((b + 1) * length)]), allLogits: true)
            #expect(relativeError(ours, logits[(b * length * vocab)..<((b + 1) * length * vocab)]) < 1e-3, "\(family) sequence \(b)")
        }
    }

    @Test func settingsComeFromQuantizeConfig() throws {
        let (config, path) = try #require(try QuantizedCheckpoint.config(folder: Fixtures.path("autogptq_ckpt/w4_g32_descact_asym")))
        #expect(path.hasSuffix("quantize_config.json"))
        #expect(config == QuantizeConfig(bits: 4, groupSize: 32, descAct: true, staticGroups: false, sym: false,
                                         dampPercent: 0.01, trueSequential: true, checkpointFormat: .gptq, quantizer: []))
        // What we write reads back the same, and names swift-gptq as its quantizer.
        #expect(try QuantizeConfig(json: config.json, path: "x") == config)
        let ours = QuantizeConfig(bits: 4, groupSize: 32, sym: false)
        #expect(ours.checkpointFormat == .gptqV2 && QuantizeConfig(sym: true).checkpointFormat == .gptq)
        #expect(try QuantizeConfig(json: ours.json, path: "x") == ours)
        #expect(ours.json["meta"]?["quantizer"] == .array([.string("swift-gptq:\(SwiftGPTQ.version)")]))
        #expect(!ours.packsV1LikeGPTQModel)
        for (entries, expected) in [(["gptqmodel:0.9.0"], true), (["gptqmodel:7.7.0", "x:1"], true), (["gptqmodel:0.8.9"], false), (["auto_gptq:0.7.1"], false)] {
            var config = ours
            config.quantizer = entries
            #expect(config.packsV1LikeGPTQModel == expected, "\(entries)")
        }
        #expect(try QuantizedCheckpoint.config(folder: Fixtures.path("arch/llama")) == nil)
    }

    /// A copy of a fixture variant whose quantize_config.json is replaced by `settings`
    /// (nil: removed, so that config.json's quantization_config is read).
    func copy(_ variant: String, settings: JSON?, configEdit: (JSON) -> JSON = { $0 }) throws -> String {
        let source = Fixtures.path("autogptq_ckpt/\(variant)"), folder = dir + "/" + variant + "-\(UInt32.random(in: 0...UInt32.max))"
        try FileIO.makeDirectory(folder)
        for name in ["model.safetensors"] {
            try FileIO.writeAtomically(path: folder + "/" + name, bytes: try FileIO.readAll(path: source + "/" + name))
        }
        try FileIO.writeAtomically(path: folder + "/config.json", text: configEdit(try JSON.read(path: source + "/config.json")).serialized())
        if let settings { try FileIO.writeAtomically(path: folder + "/quantize_config.json", text: settings.serialized()) }
        return folder
    }

    @Test func configJsonQuantizationConfigIsReadWithoutQuantizeConfig() throws {
        let folder = try copy("w8_g32_sym", settings: nil)
        let model = try LanguageModel.load(folder: folder)
        #expect(model.layerLinear(0, "mlp.up_proj") is GPTQLinear)
    }

    @Test func badSettingsNameFieldAndFile() throws {
        let settings = try JSON.read(path: Fixtures.path("autogptq_ckpt/w4_g32_descact_asym/quantize_config.json"))
        for (field, value, reason) in [
            ("bits", JSON.number(5), "5 is not one of 2, 3, 4, 8"),
            ("bits", JSON.string("4"), "\"4\" is not one of 2, 3, 4, 8"),
            ("group_size", JSON.number(0), "0 is neither -1 nor a positive integer"),
            ("checkpoint_format", JSON.string("marlin"), "\"marlin\" is not gptq or gptq_v2"),
            ("quant_method", JSON.string("awq"), "\"awq\" is not gptq"),
            ("desc_act", JSON.string("yes"), "expected true or false"),
        ] {
            let folder = try copy("w4_g32_descact_asym", settings: settings.setting(field, value))
            #expect(throws: GPTQError.badConfig(field: field, path: folder + "/quantize_config.json", reason: reason)) {
                try LanguageModel.load(folder: folder)
            }
        }
        // GPTQModel's per-module overrides: the error names the override's key.
        for (dynamic, field, reason) in [
            (JSON.object([("lm_head", .object([("bits", .number(5))]))]), "dynamic.lm_head.bits", "5 is not one of 2, 3, 4, 8"),
            (JSON.object([("-:.*mlp.*", .number(8))]), "dynamic.-:.*mlp.*", "not a JSON object"),
            (JSON.string("lm_head"), "dynamic", "not a JSON object"),
        ] {
            let folder = try copy("w4_g32_descact_asym", settings: settings.setting("dynamic", dynamic))
            #expect(throws: GPTQError.badConfig(field: field, path: folder + "/quantize_config.json", reason: reason)) {
                try LanguageModel.load(folder: folder)
            }
        }
        let exponential = try copy("w4_g32_descact_asym", settings: settings.setting("dynamic", .object([("(a+)+$", .object([]))])))
        do {
            _ = try LanguageModel.load(folder: exponential)
            Issue.record("loaded a dynamic pattern that backtracks for exponential time")
        } catch let GPTQError.badConfig(field, _, reason) {
            #expect(field == "dynamic.(a+)+$" && reason.contains("exponential time"), "\(reason)")
        }
        let badPattern = try copy("w4_g32_descact_asym", settings: settings.setting("dynamic", .object([("+:model.layers.(0", .object([]))])))
        do {
            _ = try LanguageModel.load(folder: badPattern)
            Issue.record("loaded a dynamic pattern that is no regular expression")
        } catch let GPTQError.badConfig(field, path, reason) {
            #expect(field == "dynamic.+:model.layers.(0" && path == badPattern + "/quantize_config.json")
            #expect(reason.hasPrefix("the pattern is not a regular expression"), "\(reason)")
        }
        let truncated = try copy("w4_g32_descact_asym", settings: settings)
        try FileIO.writeAtomically(path: truncated + "/quantize_config.json", text: "{\"bits\": 4, \"group_size\": ")
        do {
            _ = try LanguageModel.load(folder: truncated)
            Issue.record("loaded a truncated quantize_config.json")
        } catch let GPTQError.invalidFile(path, reason) {
            #expect(path == truncated + "/quantize_config.json" && reason.hasPrefix("invalid JSON"), "\(reason)")
        }
        let folder = try copy("w4_g32_descact_asym", settings: nil, configEdit: { $0.setting("quantization_config", .string("gptq")) })
        #expect(throws: GPTQError.badConfig(field: "quantization_config", path: folder + "/config.json", reason: "not a JSON object")) {
            try LanguageModel.load(folder: folder)
        }
    }

    /// A checkpoint whose bits disagree with its tensors: the qweight is named.
    @Test func bitsDisagreeingWithTensorsNameTheTensor() throws {
        let settings = try JSON.read(path: Fixtures.path("autogptq_ckpt/w4_g32_descact_asym/quantize_config.json"))
        let folder = try copy("w4_g32_descact_asym", settings: settings.setting("bits", .number(8)))
        do {
            _ = try LanguageModel.load(folder: folder)
            Issue.record("loaded 4-bit tensors as 8-bit")
        } catch let GPTQError.badTensor(name, path, _) {
            #expect(name.hasSuffix(".qweight") && path == folder)
        }
    }

    /// Our own writer's output (v2, zeros of 0 included) loads back to the same layer.
    @Test func packedLayerRoundTripsThroughAFolder() throws {
        let c = GPTQFixture.cases.first { $0.key == "b2_g32_act1_sym0_static0" }!
        let packed = try PackedLinear.pack(try GPTQFixture.autogptqResult(c), bias: GPTQFixture.bias, format: .gptqV2)
        #expect(packed.unpackedZeros().contains(0))
        let folder = dir + "/roundtrip"
        try FileIO.makeDirectory(folder)
        try SafetensorsWriter.write(path: folder + "/model.safetensors", tensors: packed.tensors(prefix: "layer"))
        var config = c.config
        config.checkpointFormat = packed.format
        try FileIO.writeAtomically(path: folder + "/quantize_config.json", text: config.json.serialized())
        let loaded = try #require(try QuantizedCheckpoint(folder: folder, checkpoint: Checkpoint(folder: folder)))
        let layer = try #require(try loaded.packedLinear("layer", inFeatures: GPTQFixture.columns, outFeatures: GPTQFixture.rows))
        #expect(layer.format == .gptqV2)
        #expect(layer.dequantized() == packed.dequantized())
        #expect(try loaded.packedLinear("other", inFeatures: 256, outFeatures: 96) == nil)
    }
}
