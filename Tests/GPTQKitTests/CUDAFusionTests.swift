import Testing
@testable import GPTQKit
@testable import GPTQChecks

/// The host side of CUDAModel's fused projections (q/k/v and gate/up as one linear),
/// checked on the CPU: a fused layer computes exactly its parts, stacked along outputs.
@Suite struct CUDAFusionTests {
    func denseParts(_ arch: String, layer: Int, _ names: [String]) throws -> [HostLinear] {
        let model = try LanguageModel.load(folder: Fixtures.path("arch/" + arch))
        return try names.map { name in
            let module = model.architecture.linear(name)!, full = model.tensorName(layer: layer, module: name)
            let w = try model.checkpoint.tensor(full + ".weight", shape: [module.outFeatures, module.inFeatures])
            let b = module.hasBias ? try model.checkpoint.tensor(full + ".bias", shape: [module.outFeatures]) : nil
            return .dense(w, b)
        }
    }

    func packedParts(_ variant: String, _ names: [String]) throws -> [PackedLinear] {
        let folder = Fixtures.path("autogptq_ckpt/" + variant)
        let config = try ModelConfig(folder: folder)
        let q = try QuantizeConfig(json: config.json["quantization_config"]!, path: config.path)
        let checkpoint = try Checkpoint(folder: folder)
        return try names.map {
            try PackedLinear.load(from: checkpoint, prefix: "model.layers.0." + $0, bits: q.bits, groupSize: q.groupSize, format: q.checkpointFormat)
        }
    }

    @Test(arguments: ["llama", "qwen2", "qwen3"])
    func denseQKVStacksWeightsAndBiases(arch: String) throws {
        let parts = try denseParts(arch, layer: 1, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"])
        #expect(HostLinear.canFuse(parts))
        guard case let .dense(w, b) = try HostLinear.concatenated(parts) else { Issue.record("not dense"); return }
        var expectedW: [Float] = [], expectedB: [Float] = []
        for case let .dense(pw, pb) in parts {
            expectedW += pw.converted(to: .f16).floats()
            expectedB += pb?.converted(to: .f16).floats() ?? []
        }
        #expect(w.shape == [parts.reduce(0) { $0 + $1.outFeatures }, parts[0].inFeatures])
        #expect(w.floats() == expectedW)
        #expect((b?.floats() ?? []) == expectedB)
        #expect((b == nil) == (arch != "qwen2"))
    }

    @Test func packedGateUpDequantizesToItsPartsStacked() throws {
        let parts = try packedParts("w8_g32_sym", ["mlp.gate_proj", "mlp.up_proj"])
        #expect(HostLinear.canFuse(parts.map { .packed($0) }))
        guard case let .packed(fused) = try HostLinear.concatenated(parts.map { .packed($0) }) else { Issue.record("not packed"); return }
        #expect(fused.outFeatures == parts[0].outFeatures + parts[1].outFeatures)
        // W is [out, in]: the fused rows are the parts' rows one after the other.
        #expect(fused.dequantized() == parts[0].dequantized() + parts[1].dequantized())
    }

    @Test func actOrderQKVShareTheirGroupOrderAndFuse() throws {
        // AutoGPTQ orders q, k and v by one Hessian (their shared input), so they fuse.
        let parts = try packedParts("w4_g32_descact_asym", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"])
        #expect(HostLinear.canFuse(parts.map { .packed($0) }))
        guard case let .packed(fused) = try HostLinear.concatenated(parts.map { .packed($0) }) else { Issue.record("not packed"); return }
        #expect(fused.dequantized() == parts.flatMap { $0.dequantized() })
    }

    @Test func partsWithDifferentGroupOrdersStaySeparate() throws {
        let inOrder = try CUDAChecks.randomLayer(bits: 4, groupSize: 32, inFeatures: 64, outFeatures: 32, actOrder: false, bias: false, seed: 1)
        let actOrder = try CUDAChecks.randomLayer(bits: 4, groupSize: 32, inFeatures: 64, outFeatures: 32, actOrder: true, bias: false, seed: 2)
        #expect(!HostLinear.canFuse([.packed(inOrder), .packed(actOrder)]))
        #expect(HostLinear.canFuse([.packed(inOrder), .packed(inOrder)]))
    }

    /// A fused q/k/v reordered into [q | k | v] rows once, as CUDAModel loads it, computes what
    /// the CPU computes by gathering the fused product's outputs (BlockContext.fusedRows).
    @Test(arguments: ["gpt_neox", "bloom", "falcon-7b-layout", "falcon", "codegen", "gpt_bigcode"])
    func fusedQKVReorderedGivesTheGatheredProduct(arch: String) throws {
        let model = try LanguageModel.load(folder: Fixtures.path("arch/" + arch))
        let a = model.architecture
        guard case let .fused(name, _) = a.attention.projection, let order = a.attention.fusedOutputOrder else {
            Issue.record("\(arch) has no fused q/k/v"); return
        }
        let (weight, bias) = try model.storedWeights(layer: 1, module: name)
        let host = HostLinear.dense(weight, bias.map { Tensor($0, shape: [$0.count]) })
        guard case let .dense(reordered, reorderedBias) = try host.reorderingOutputs(order) else { Issue.record("not dense"); return }
        let k = weight.shape[1]
        var rng = Xoshiro256StarStar(seed: 3)
        let x = (0..<k).map { _ in Float(rng.nextUnit() - 0.5) }
        func product(_ w: Tensor, _ b: [Float]?) -> [Float] {
            let values = w.floats()
            return (0..<w.shape[0]).map { r in (0..<k).reduce(b?[r] ?? 0) { $0 + values[r * k + $1] * x[$1] } }
        }
        let fused = product(weight, bias)
        #expect(product(reordered, reorderedBias?.floats()) == order.map { fused[$0] })
        #expect(Set(order) == Set(0..<weight.shape[0]), "the order is a permutation of the fused rows")
    }

    /// GPTQ layers reorder their outputs with the zero points repacked (3-bit zeros straddle
    /// words; v1 zeros become gptq_v2): the dequantized rows are the original rows reordered.
    @Test(arguments: [("w3_perchannel_sym", "self_attn.q_proj"), ("w4_g32_descact_asym", "mlp.up_proj"), ("w8_g32_sym", "mlp.down_proj")])
    func packedReorderingDequantizesToTheRowsReordered(variant: String, module: String) throws {
        let layer = try packedParts(variant, [module])[0]
        var rng = Xoshiro256StarStar(seed: 11)
        let order = Array(0..<layer.outFeatures).shuffled(using: &rng)
        guard case let .packed(reordered) = try HostLinear.packed(layer).reorderingOutputs(order) else { Issue.record("not packed"); return }
        let k = layer.inFeatures, original = layer.dequantized()
        #expect(reordered.format == .gptqV2)
        #expect(reordered.dequantized() == order.flatMap { original[($0 * k)..<(($0 + 1) * k)] })
    }

    /// AutoGPTQ's own GPT-NeoX checkpoint: its fused, asymmetric v1 q/k/v reordered for the GPU.
    @Test func autoGPTQFusedQKVReorders() throws {
        let folder = Fixtures.path("autogptq_families/gpt_neox")
        let model = try LanguageModel.load(folder: folder)
        let a = model.architecture
        guard case let .fused(name, _) = a.attention.projection, let order = a.attention.fusedOutputOrder,
              let quantized = try QuantizedCheckpoint(folder: folder, checkpoint: model.checkpoint),
              let layer = try quantized.packedLinear(model.tensorName(layer: 0, module: name), inFeatures: a.hidden, outFeatures: order.count) else {
            Issue.record("no packed fused q/k/v"); return
        }
        guard case let .packed(reordered) = try HostLinear.packed(layer).reorderingOutputs(order) else { Issue.record("not packed"); return }
        let k = layer.inFeatures, original = layer.dequantized()
        #expect(reordered.dequantized() == order.flatMap { original[($0 * k)..<(($0 + 1) * k)] })
        #expect(reordered.bias?.floats() == layer.bias.map { b in order.map { b.floats()[$0] } })
    }
}
