import Testing
import GPTQKit

/// The host side of the CUDA GPTQ layers, checked on the CPU: act-order rows sorted by
/// group without changing the function, kernel choice, launch shapes, bad tensors.
@Suite struct CUDALayoutTests {
    let actOrderCheckpoint = Fixtures.path("autogptq_ckpt/w4_g32_descact_asym")

    func layer(_ folder: String, _ module: String, bits: Int, group: Int) throws -> GPTQPackedLayer {
        try GPTQPackedLayer(checkpoint: try Checkpoint(folder: folder), prefix: "model.layers.0.\(module)", bits: bits, groupSize: group, zeroOffset: 1)
    }

    @Test func actOrderLayerIsSortedByGroupWithTheSameWeights() throws {
        let packed = try layer(actOrderCheckpoint, "mlp.down_proj", bits: 4, group: 32)
        let layout = CUDAGPTQLayout(packed)
        #expect(layout.kernel == .fast4)
        let perm = try #require(layout.permutation)
        #expect(Set(perm).count == packed.inFeatures)
        let sorted = try GPTQPackedLayer(bits: 4, groupSize: 32, inFeatures: packed.inFeatures, outFeatures: packed.outFeatures,
                                         qweight: layout.qweight, qzeros: packed.qzeros, scales: packed.scales, gIdx: nil,
                                         bias: nil, zeroOffset: 1)
        let original = packed.dequantized(), permuted = sorted.dequantized()
        let n = packed.outFeatures
        for (kNew, kOld) in perm.enumerated() {
            #expect(Array(permuted[(kNew * n)..<((kNew + 1) * n)]) == Array(original[(Int(kOld) * n)..<((Int(kOld) + 1) * n)]))
        }
        // The checkpoint really is act-order: the permutation is not the identity.
        #expect(perm != (0..<Int32(packed.inFeatures)).map { $0 })
    }

    @Test func otherWidthsUseTheGenericKernel() throws {
        let three = try layer(Fixtures.path("autogptq_ckpt/w3_perchannel_sym"), "self_attn.q_proj", bits: 3, group: -1)
        #expect(CUDAGPTQLayout(three).kernel == .generic)
        #expect(three.groupSize == three.inFeatures)
        let eight = try layer(Fixtures.path("autogptq_ckpt/w8_g32_sym"), "self_attn.q_proj", bits: 8, group: 32)
        #expect(CUDAGPTQLayout(eight).kernel == .generic)
    }

    @Test func zerosAreReadAsAutoGPTQReadsThem() throws {
        // v1 stores zero − 1; a field of all ones (written for a zero of 0) reads 2^bits.
        let words: [Int32] = [Int32(bitPattern: 0xFFFF_FF10)]  // nibbles 0, 1, 15, 15, ...
        let layer = try GPTQPackedLayer(bits: 4, groupSize: 32, inFeatures: 32, outFeatures: 8, qweight: [Int32](repeating: 0, count: 32),
                                        qzeros: words, scales: [UInt16](repeating: 0x3C00, count: 8), gIdx: nil, bias: nil, zeroOffset: 1)
        #expect((0..<4).map { layer.zero(0, $0) } == [1, 2, 16, 16])
    }

    @Test func fastLaunchFillsAnH100ForTheLlamaShapes() {
        // 132 multiprocessors: narrow layers get narrow blocks, long inputs long chunks.
        #expect(CUDAGPTQLayout.fastLaunch(inFeatures: 4096, outFeatures: 4096, groupSize: 128, multiprocessors: 132) == (2, 4))
        #expect(CUDAGPTQLayout.fastLaunch(inFeatures: 11008, outFeatures: 4096, groupSize: 128, multiprocessors: 132) == (2, 8))
        #expect(CUDAGPTQLayout.fastLaunch(inFeatures: 4096, outFeatures: 11008, groupSize: 128, multiprocessors: 132) == (8, 16))
        #expect(CUDAGPTQLayout.fastLaunch(inFeatures: 8192, outFeatures: 28672, groupSize: 128, multiprocessors: 132) == (8, 16))
        #expect(CUDAGPTQLayout.fastLaunch(inFeatures: 64, outFeatures: 160, groupSize: 32, multiprocessors: 132) == (2, 4))
    }

    @Test func wrongTensorShapesNameTheTensor() {
        #expect(throws: GPTQError.badTensor(name: "blk.scales", path: "blk", reason: "holds 7 values, expected [1, 8]")) {
            try GPTQPackedLayer(bits: 4, groupSize: 32, inFeatures: 32, outFeatures: 8, qweight: [Int32](repeating: 0, count: 32),
                                qzeros: [0], scales: [UInt16](repeating: 0, count: 7), gIdx: nil, bias: nil, zeroOffset: 1, name: "blk")
        }
        #expect(throws: GPTQError.unsupported("blk: 5-bit GPTQ (supported: 2, 3, 4, 8)")) {
            try GPTQPackedLayer(bits: 5, groupSize: 32, inFeatures: 32, outFeatures: 8, qweight: [], qzeros: [], scales: [],
                                gIdx: nil, bias: nil, zeroOffset: 1, name: "blk")
        }
    }
}
