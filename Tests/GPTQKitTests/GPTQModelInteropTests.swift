import Testing
import GPTQKit

/// Checkpoints that GPTQModel 7.7.0 quantized and saved (Tests/Fixtures/gptqmodel, written by
/// scripts/fixtures/make_gptqmodel_fixtures.py) load here with GPTQModel's own float32 logits.
@Suite struct GPTQModelInteropTests {
    static let variants = ["llama-sym-v1", "llama-asym-zero0-v1", "llama-desc-act-asym-v2", "llama-act-group-aware", "qwen2-asym-v1",
                           "llama-lm-head"]
    let dir = "/tmp/gptq-gptqmodel-interop-tests-\(UInt32.random(in: 0...UInt32.max))"

    static func logits(_ model: LanguageModel, folder: String) throws -> (ours: [Float], theirs: [Float]) {
        let reference = try SafetensorsFile(path: folder + "/reference.safetensors")
        let ids = try reference.tensor("input_ids"), length = ids.shape[1]
        var ours: [Float] = []
        for b in 0..<ids.shape[0] {
            ours += try model.makeSession(capacity: length).forward(Array(ids.ints()[(b * length)..<((b + 1) * length)]), allLogits: true)
        }
        return (ours, try reference.tensor("logits").floats())
    }

    @Test(arguments: variants)
    func gptqModelCheckpointMatchesItsLogits(_ variant: String) throws {
        let folder = Fixtures.path("gptqmodel/\(variant)")
        let model = try LanguageModel.load(folder: folder)
        #expect(model.layerLinear(0, "self_attn.q_proj") is GPTQLinear && model.layerLinear(1, "mlp.down_proj") is GPTQLinear)
        let (ours, theirs) = try Self.logits(model, folder: folder)
        #expect(relativeError(ours, theirs) < 1e-5, "\(variant)")
    }

    /// GPTQModel's `lm_head=True`: the head is stored as lm_head.qweight/qzeros/scales/g_idx
    /// at GPTQModel's own default for it, 8-bit group 32, which quantize_config.json gives as
    /// `dynamic: {"lm_head": {...}}` beside 4-bit layers; it loads as an 8-bit GPTQ head (the
    /// logits are checked against GPTQModel's with the other variants).
    @Test func quantizedHeadTakesItsDynamicPacking() throws {
        let folder = Fixtures.path("gptqmodel/llama-lm-head")
        let quantized = try #require(try QuantizedCheckpoint(folder: folder, checkpoint: Checkpoint(folder: folder)))
        #expect(quantized.config.lmHead && quantized.config.bits == 4)
        #expect(quantized.config.packing(ofModule: "lm_head") == (8, 32))
        #expect(quantized.config.packing(ofModule: "model.layers.0.mlp.up_proj") == (4, 32))
        let model = try LanguageModel.load(folder: folder)
        let head = try #require(model.lmHead as? GPTQLinear)
        #expect(head.bits == 8 && head.inFeatures == 64 && head.outFeatures == 384)
        #expect((model.layerLinear(0, "mlp.up_proj") as? GPTQLinear)?.bits == 4)
    }

    /// GPTQModel's v1 with zero points of 0: it stores the v2 word minus 0x11111111, so a zero
    /// of 0 borrows from the next field. Its meta names gptqmodel:7.7.0, which is why the maxq
    /// fields the borrows leave are not taken for AutoGPTQ's overflow; without that meta they
    /// are, and the module is named.
    @Test func zeroPointsOfZeroBorrowAcrossFields() throws {
        let folder = Fixtures.path("gptqmodel/llama-asym-zero0-v1")
        let quantized = try #require(try QuantizedCheckpoint(folder: folder, checkpoint: Checkpoint(folder: folder)))
        #expect(quantized.config.checkpointFormat == .gptq && quantized.config.quantizer == ["gptqmodel:7.7.0"])
        #expect(quantized.config.packsV1LikeGPTQModel)
        let layer = try #require(try quantized.packedLinear("model.layers.0.mlp.gate_proj", inFeatures: 64, outFeatures: 160))
        #expect(layer.unpackedZeros().contains(0))
        #expect(!layer.autoGPTQOverflowWords().isEmpty)
        // Reading each field + 1 on its own, as AutoGPTQ does, gets some zeros wrong.
        let words = layer.qzeros.ints().map { UInt32(bitPattern: $0) }
        let fieldByField = (0..<(layer.groups * 160)).map { i in Int32((words[i / 8] >> UInt32(4 * (i % 8))) & 15) + 1 }
        #expect(fieldByField != layer.unpackedZeros())

        let copy = dir + "/no-meta"
        try FileIO.makeDirectory(copy)
        for name in ["config.json", "model.safetensors"] {
            try FileIO.writeAtomically(path: copy + "/" + name, bytes: try FileIO.readAll(path: folder + "/" + name))
        }
        let settings = try JSON.read(path: folder + "/quantize_config.json")
        try FileIO.writeAtomically(path: copy + "/quantize_config.json", text: settings.setting("meta", .null).serialized())
        do {
            _ = try LanguageModel.load(folder: copy)
            Issue.record("loaded v1 words that look like AutoGPTQ's overflow without a GPTQModel quantizer")
        } catch let GPTQError.badTensor(name, path, reason) {
            #expect(name == "model.layers.0.mlp.gate_proj.qzeros" && path == copy + "/model.safetensors")
            #expect(reason.contains("AutoGPTQ's packing of a zero point of 0") && reason.contains("gptq_v2"), "\(reason)")
        }
    }
}
