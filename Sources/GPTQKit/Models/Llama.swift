import CKernels
import COpenBLAS

extension ModelFamily {
    /// Llama (and every checkpoint with its layout: SmolLM2, TinyLlama, ...).
    public static let llama = ModelFamily.llamaStyle(name: "llama", modelTypes: ["llama"])
}

/// Sizes of a llama-style decoder layer.
struct DecoderShape: Sendable {
    let hidden: Int, heads: Int, kvHeads: Int, headDim: Int, intermediate: Int
    let eps: Float

    init(config: ModelConfig) {
        hidden = config.hiddenSize
        heads = config.numHeads
        kvHeads = config.numKVHeads
        headDim = config.headDim
        intermediate = config.intermediateSize
        eps = Float(config.rmsNormEps)
    }

    var queryWidth: Int { heads * headDim }
    var kvWidth: Int { kvHeads * headDim }
}

/// One layer's cached keys and values, each laid out [kvHeads][capacity][headDim] so
/// that a head's keys are contiguous for the attention products.
struct KVCacheLayer {
    let keys: UnsafeMutablePointer<Float>
    let values: UnsafeMutablePointer<Float>
    let capacity: Int
}

/// Called with a module name and its input rows before each linear runs.
public typealias LinearObserver = (String, UnsafePointer<Float>, Int) -> Void

/// Float32 scratch for one forward of `tokens` rows through a layer.
final class DecoderWorkspace {
    let normed, query, key, value, attention, output, gate, up: UnsafeMutablePointer<Float>
    private let all: [UnsafeMutablePointer<Float>]

    init(shape: DecoderShape, tokens: Int) {
        func buffer(_ width: Int) -> UnsafeMutablePointer<Float> { .allocate(capacity: max(1, tokens * width)) }
        normed = buffer(shape.hidden)
        query = buffer(shape.queryWidth)
        key = buffer(shape.kvWidth)
        value = buffer(shape.kvWidth)
        attention = buffer(shape.queryWidth)
        output = buffer(shape.hidden)
        gate = buffer(shape.intermediate)
        up = buffer(shape.intermediate)
        all = [normed, query, key, value, attention, output, gate, up]
    }

    deinit { for b in all { b.deallocate() } }
}

/// The llama decoder layer shared by every llama-style family:
/// x += o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))) with n = rmsnorm(x), then
/// x += down_proj(silu(gate_proj(m)) * up_proj(m)) with m = rmsnorm(x).
final class DecoderLayer: @unchecked Sendable {
    let inputNorm: [Float]
    let postAttentionNorm: [Float]
    /// Qwen3's per-head RMSNorm weights ([headDim]) of queries and keys.
    let queryNorm: [Float]?
    let keyNorm: [Float]?
    let slidingWindow: Int?
    var linears: [String: LinearLayer]

    init(inputNorm: [Float], postAttentionNorm: [Float], queryNorm: [Float]?, keyNorm: [Float]?,
         slidingWindow: Int?, linears: [String: LinearLayer]) {
        self.inputNorm = inputNorm
        self.postAttentionNorm = postAttentionNorm
        self.queryNorm = queryNorm
        self.keyNorm = keyNorm
        self.slidingWindow = slidingWindow
        self.linears = linears
    }

    /// Runs the layer in place on x [tokens, hidden] at positions position..<position+tokens,
    /// appending their keys and values to `cache` (which holds the earlier positions).
    /// `arithmetic` `.cudaFloat16` rounds where the CUDA session stores float16 (CPUArithmetic).
    func forward(_ x: UnsafeMutablePointer<Float>, tokens: Int, position: Int, cache: KVCacheLayer,
                 cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, shape: DecoderShape,
                 workspace ws: DecoderWorkspace, observe: LinearObserver?, stopAfter: String? = nil,
                 arithmetic: CPUArithmetic = .float32) {
        let h = shape.hidden
        let roundsToHalf = arithmetic == .cudaFloat16
        /// false: `name` is `stopAfter`, observed but not run, and the layer stops here.
        func linear(_ name: String, _ input: UnsafeMutablePointer<Float>, _ output: UnsafeMutablePointer<Float>) -> Bool {
            let layer = linears[name]!
            if roundsToHalf { ck_round_f16(input, tokens * layer.inFeatures) }
            observe?(name, input, tokens)
            if name == stopAfter { return false }
            layer.forward(input, rows: tokens, into: output)
            if roundsToHalf { ck_round_f16(output, tokens * layer.outFeatures) }
            return true
        }
        func normRows(_ weight: [Float], _ src: UnsafeMutablePointer<Float>, _ dst: UnsafeMutablePointer<Float>, width: Int, rows: Int) {
            weight.withUnsafeBufferPointer { w in
                CPUThreads.parallelRanges(rows, minimumChunk: 64) { r0, r1 in
                    for r in r0..<r1 { ck_rmsnorm(src + r * width, w.baseAddress!, dst + r * width, width, shape.eps) }
                }
            }
        }

        normRows(inputNorm, x, ws.normed, width: h, rows: tokens)
        guard linear("self_attn.q_proj", ws.normed, ws.query), linear("self_attn.k_proj", ws.normed, ws.key),
              linear("self_attn.v_proj", ws.normed, ws.value) else { return }
        if let queryNorm, let keyNorm {
            normRows(queryNorm, ws.query, ws.query, width: shape.headDim, rows: tokens * shape.heads)
            normRows(keyNorm, ws.key, ws.key, width: shape.headDim, rows: tokens * shape.kvHeads)
        }
        let half = shape.headDim / 2
        // The GPU rounds the rotated queries and keys to float16 on both paths (values are
        // already, as v_proj's output); only its prefill stores the probabilities in float16.
        let prefill = tokens > 1
        for t in 0..<tokens {
            ck_rope(ws.query + t * shape.queryWidth, shape.heads, shape.headDim, cos + t * half, sin + t * half)
            ck_rope(ws.key + t * shape.kvWidth, shape.kvHeads, shape.headDim, cos + t * half, sin + t * half)
            if roundsToHalf {
                ck_round_f16(ws.query + t * shape.queryWidth, shape.queryWidth)
                ck_round_f16(ws.key + t * shape.kvWidth, shape.kvWidth)
            }
            for g in 0..<shape.kvHeads {
                let slot = (g * cache.capacity + position + t) * shape.headDim
                (cache.keys + slot).update(from: ws.key + t * shape.kvWidth + g * shape.headDim, count: shape.headDim)
                (cache.values + slot).update(from: ws.value + t * shape.kvWidth + g * shape.headDim, count: shape.headDim)
            }
        }
        Attention.run(queries: ws.query, tokens: tokens, position: position, cache: cache,
                      window: slidingWindow, shape: shape, roundsProbabilities: roundsToHalf && prefill, into: ws.attention)
        guard linear("self_attn.o_proj", ws.attention, ws.output) else { return }
        ck_add(x, ws.output, tokens * h)

        normRows(postAttentionNorm, x, ws.normed, width: h, rows: tokens)
        guard linear("mlp.gate_proj", ws.normed, ws.gate), linear("mlp.up_proj", ws.normed, ws.up) else { return }
        CPUThreads.parallelRanges(tokens * shape.intermediate, minimumChunk: 1 << 14) { a, b in
            ck_silu_mul(ws.gate + a, ws.up + a, ws.gate + a, b - a)
        }
        guard linear("mlp.down_proj", ws.gate, ws.output) else { return }
        ck_add(x, ws.output, tokens * h)
    }
}
