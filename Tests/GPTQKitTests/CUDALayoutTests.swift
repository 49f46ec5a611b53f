import Testing
import GPTQKit

/// The host side of the CUDA GPTQ layers, checked on the CPU: act-order rows sorted by
/// group without changing the function, kernel choice, launch shapes, bad tensors.
@Suite struct CUDALayoutTests {
    let actOrderCheckpoint = Fixtures.path("autogptq_ckpt/w4_g32_descact_asym")

    func layer(_ folder: String, _ module: String, bits: Int, group: Int) throws -> PackedLinear {
        try PackedLinear.load(from: try Checkpoint(folder: folder), prefix: "model.layers.0.\(module)", bits: bits, groupSize: group, format: .gptq)
    }

    @Test func actOrderLayerIsSortedByGroupWithTheSameWeights() throws {
        let packed = try layer(actOrderCheckpoint, "mlp.down_proj", bits: 4, group: 32)
        let layout = CUDAGPTQLayout(packed)
        #expect(layout.kernel == .fast4)
        let perm = try #require(layout.permutation)
        #expect(Set(perm).count == packed.inFeatures)
        let inOrder = (0..<packed.inFeatures).map { Int32($0 / 32) }
        let sorted = try PackedLinear(name: "sorted", path: "test", bits: 4, format: .gptq, inFeatures: packed.inFeatures,
                                      outFeatures: packed.outFeatures,
                                      qweight: Tensor(bitPattern: layout.qweight, dtype: .i32, shape: packed.qweight.shape),
                                      qzeros: packed.qzeros, scales: packed.scales,
                                      gIdx: Tensor(bitPattern: inOrder, dtype: .i32, shape: [packed.inFeatures]), bias: nil)
        // W [out, in]: column k' of the sorted layer is column perm[k'] of the checkpoint's.
        let original = packed.dequantized(), permuted = sorted.dequantized()
        let k = packed.inFeatures
        for o in 0..<packed.outFeatures {
            for (kNew, kOld) in perm.enumerated() { #expect(permuted[o * k + kNew] == original[o * k + Int(kOld)]) }
        }
        // The checkpoint really is act-order: the permutation is not the identity.
        #expect(perm != (0..<Int32(packed.inFeatures)).map { $0 })
    }

    @Test func otherWidthsUseTheGenericKernel() throws {
        let three = try layer(Fixtures.path("autogptq_ckpt/w3_perchannel_sym"), "self_attn.q_proj", bits: 3, group: -1)
        #expect(CUDAGPTQLayout(three).kernel == .generic)
        #expect(CUDAGPTQLayout(three).groupSize == three.inFeatures)
        let eight = try layer(Fixtures.path("autogptq_ckpt/w8_g32_sym"), "self_attn.q_proj", bits: 8, group: 32)
        #expect(CUDAGPTQLayout(eight).kernel == .generic)
    }

    @Test func fastLaunchFillsAnH100ForTheLlamaShapes() {
        // 132 multiprocessors: narrow layers get narrow blocks, long inputs long chunks.
        #expect(CUDAGPTQLayout.fastLaunch(inFeatures: 4096, outFeatures: 4096, groupSize: 128, multiprocessors: 132) == (2, 4))
        #expect(CUDAGPTQLayout.fastLaunch(inFeatures: 11008, outFeatures: 4096, groupSize: 128, multiprocessors: 132) == (2, 8))
        #expect(CUDAGPTQLayout.fastLaunch(inFeatures: 4096, outFeatures: 11008, groupSize: 128, multiprocessors: 132) == (8, 16))
        #expect(CUDAGPTQLayout.fastLaunch(inFeatures: 8192, outFeatures: 28672, groupSize: 128, multiprocessors: 132) == (8, 16))
        #expect(CUDAGPTQLayout.fastLaunch(inFeatures: 64, outFeatures: 160, groupSize: 32, multiprocessors: 132) == (2, 4))
    }

    @Test func missingTensorIsNamed() throws {
        let file = Fixtures.path("autogptq_ckpt/w4_g32_descact_asym")
        #expect(throws: GPTQError.missingTensor(name: "model.layers.0.mlp.nope.qweight", path: file)) {
            try layer(file, "mlp.nope", bits: 4, group: 32)
        }
    }
}
