import CKernels
import COpenBLAS

/// Causal grouped-query attention over a KV cache, float32:
/// softmax(scale · q·kᵀ + alibi) v over the keys each query may see (all earlier
/// positions, or the last `window` of them).
enum Attention {
    /// Below this many query rows each (row, head) pair is one task for the SIMD kernel;
    /// from it on, blocks of rows go through sgemm.
    static let gemmRows = 8
    /// Query rows per sgemm block: bounds the score buffer and the masked waste.
    static let blockRows = 256
    /// Keys a tile of the CUDA flash prefill kernel (PREFILL_KEYS in DecoderKernels).
    static let flashKeyTile = 64

    /// queries: [tokens, heads*headDim] at positions position..<position+tokens, whose keys
    /// and values are already in `cache`. Writes [tokens, heads*headDim] into `out`.
    /// `alibi`: each head's biases of keys 0..<position+tokens, [heads][position+tokens].
    /// `roundsProbabilities`: the softmax is rounded as the CUDA session's flash prefill kernel
    /// rounds it (CPUArithmetic.cudaFloat16): float16 weights relative to a running max over
    /// key tiles of `flashKeyTile`.
    static func run(queries: UnsafePointer<Float>, tokens: Int, position: Int, cache: KVCacheLayer, attention shape: AttentionSpec,
                    scale: Float, window: Int?, alibi: [Float]?, roundsProbabilities: Bool = false, into out: UnsafeMutablePointer<Float>) {
        let (hd, width) = (shape.headDim, shape.queryWidth)
        let group = shape.heads / shape.kvHeads
        let maxKeys = position + tokens
        func firstKey(_ pos: Int) -> Int { window.map { max(0, pos - $0 + 1) } ?? 0 }
        alibi.withOptionalPointer { bias in
            if tokens < gemmRows && !roundsProbabilities {
                CPUThreads.parallelRanges(tokens * shape.heads) { start, end in
                    let scores = UnsafeMutablePointer<Float>.allocate(capacity: position + tokens)
                    defer { scores.deallocate() }
                    for item in start..<end {
                        let (t, head) = (item / shape.heads, item % shape.heads)
                        let base = (head / group) * cache.capacity
                        let lo = firstKey(position + t), hi = position + t + 1
                        ck_attend(queries + t * width + head * hd, cache.keys + (base + lo) * hd, cache.values + (base + lo) * hd,
                                  hi - lo, hd, scale, bias.map { $0 + head * maxKeys + lo }, scores, out + t * width + head * hd)
                    }
                }
                return
            }
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: min(blockRows, tokens) * maxKeys)
            defer { scores.deallocate() }
            for head in 0..<shape.heads {
                let base = (head / group) * cache.capacity
                for b0 in stride(from: 0, to: tokens, by: blockRows) {
                    let rows = min(blockRows, tokens - b0)
                    let lo = firstKey(position + b0), hi = position + b0 + rows
                    let keys = hi - lo
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(keys), Int32(hd),
                                scale, queries + b0 * width + head * hd, Int32(width),
                                cache.keys + (base + lo) * hd, Int32(hd), 0, scores, Int32(keys))
                    CPUThreads.parallelRanges(rows, minimumChunk: 16) { r0, r1 in
                        for r in r0..<r1 {
                            let pos = position + b0 + r
                            if let bias { ck_add(scores + r * keys, bias + head * maxKeys + lo, keys) }
                            if roundsProbabilities {
                                ck_flash_softmax_f16(scores + r * keys, keys, firstKey(pos) - lo, pos + 1 - lo, lo, flashKeyTile)
                            } else {
                                ck_masked_softmax(scores + r * keys, keys, firstKey(pos) - lo, pos + 1 - lo)
                            }
                        }
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(hd), Int32(keys),
                                1, scores, Int32(keys), cache.values + (base + lo) * hd, Int32(hd),
                                0, out + b0 * width + head * hd, Int32(width))
                }
            }
        }
    }
}
