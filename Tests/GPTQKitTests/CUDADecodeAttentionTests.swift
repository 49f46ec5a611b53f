import Testing
@testable import GPTQKit

/// The decode attention kernel's launch, as CUDASession sizes it (the kernel itself runs in
/// `gptq gpu-check` on a GPU: decode against prefill at head dimensions 64, 128 and 256, over
/// contexts split over up to 4 blocks a head).
@Suite struct CUDADecodeAttentionTests {
    @Test func splitsFillTheGPUWithinTheCapacity() {
        // Llama-2-7B (32 heads) on an H100 (132 multiprocessors) after a 2000-token prompt:
        // batch 1 takes the capacity's limit, one block for every 256 positions (ceil(2130 / 256)).
        #expect(CUDASession.decodeAttentionSplits(capacity: 2130, blocksWithoutSplitting: 32, multiprocessors: 132) == 9)
        // Batch 8: 256 blocks already; ceil(264 / 256).
        #expect(CUDASession.decodeAttentionSplits(capacity: 2130, blocksWithoutSplitting: 256, multiprocessors: 132) == 2)
        // A short capacity never splits; SmolLM2's 9 heads at a long one: ceil(264 / 9) = 30, under 32.
        #expect(CUDASession.decodeAttentionSplits(capacity: 200, blocksWithoutSplitting: 9, multiprocessors: 132) == 1)
        #expect(CUDASession.decodeAttentionSplits(capacity: 8192, blocksWithoutSplitting: 9, multiprocessors: 132) == 30)
        #expect(CUDASession.decodeAttentionSplits(capacity: 1 << 20, blocksWithoutSplitting: 1, multiprocessors: 132) == 32)
        #expect(CUDASession.decodeAttentionSplits(capacity: 1 << 20, blocksWithoutSplitting: 4096, multiprocessors: 132) == 1)
    }

    @Test func sharedMemoryDoesNotGrowWithTheContext() {
        // q in float32, the new k and v in float16, and 8 warps x lanes x (max, sum, 8 sums);
        // lanes: the head dimension over 8, rounded up to a power of two.
        #expect(CUDASession.decodeAttentionSharedBytes(headDim: 128) == (2 * 128 + 8 * 16 * 10) * 4)
        #expect(CUDASession.decodeAttentionSharedBytes(headDim: 64) == (2 * 64 + 8 * 8 * 10) * 4)
        #expect(CUDASession.decodeAttentionSharedBytes(headDim: 96) == (2 * 96 + 8 * 16 * 10) * 4)
        #expect(CUDASession.decodeAttentionSharedBytes(headDim: 16) == (2 * 16 + 8 * 2 * 10) * 4)
    }

    /// The flash prefill kernel compiled for the padded head width, and its q, k and v tiles
    /// of 64 rows of that width plus 8 halves.
    @Test func prefillKernelPadsTheHeadDimension() {
        #expect(CUDASession.prefillAttentionKernel(headDim: 8)! == ("attention_prefill_d16", 3 * 64 * 24 * 2))
        #expect(CUDASession.prefillAttentionKernel(headDim: 64)! == ("attention_prefill_d64", 3 * 64 * 72 * 2))
        #expect(CUDASession.prefillAttentionKernel(headDim: 72)!.name == "attention_prefill_d80")
        #expect(CUDASession.prefillAttentionKernel(headDim: 112)!.name == "attention_prefill_d128")
        #expect(CUDASession.prefillAttentionKernel(headDim: 128)! == ("attention_prefill_d128", 52_224))
        #expect(CUDASession.prefillAttentionKernel(headDim: 136)!.name == "attention_prefill_d256")
        #expect(CUDASession.prefillAttentionKernel(headDim: 12) == nil)
        #expect(CUDASession.prefillAttentionKernel(headDim: 264) == nil)
    }
}
