import CKernels
import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// What a training forward of one layer keeps for its backward pass (DecoderBlock.forward
/// fills it when given one): the inputs of the norms and linears, the rotated queries and
/// keys, the values, and the MLP's pre-activations. Attention probabilities are recomputed
/// from the queries and keys, head by head, so that the tape stays linear in the tokens.
final class LayerTape {
    /// The residual stream x before each `.normalize` step that applies a norm, by step index.
    var normInputs: [Int: [Float]] = [:]
    /// Each linear's input [tokens, inFeatures], by module name.
    var linearInputs: [String: [Float]] = [:]
    /// Queries [tokens, queryWidth], keys and values [tokens, kvWidth], as attention read them.
    var queries: [Float] = [], keys: [Float] = [], values: [Float] = []
    /// Qwen3's queries and keys before their per-head norms.
    var unnormedQueries: [Float] = [], unnormedKeys: [Float] = []
    /// The MLP's activation input (the gate's output, or up's for an ungated MLP), and up's output of a gated MLP.
    var preActivation: [Float] = [], up: [Float] = []
}

extension NormWeights {
    /// The gradient with respect to the norm's input x [rows, width] for `dy` with respect to
    /// its output, written into `dx` (or added to it, `accumulate`). dx may not alias x or dy.
    func backward(input x: UnsafePointer<Float>, outputGradient dy: UnsafePointer<Float>, rows: Int,
                  into dx: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let n = spec.width
        weight.withOptionalPointer { w in
            CPUThreads.parallelRanges(rows, minimumChunk: 16) { r0, r1 in
                let g = UnsafeMutablePointer<Float>.allocate(capacity: n)
                defer { g.deallocate() }
                for r in r0..<r1 {
                    let xr = x + r * n, dyr = dy + r * n, dxr = dx + r * n
                    for i in 0..<n { g[i] = w.map { $0[i] * dyr[i] } ?? dyr[i] }
                    switch spec.kind {
                    case .rms:
                        // y = w · x · s, s = (mean(x²) + eps)^(-1/2): dx = s·g − x · s³ · mean(g·x).
                        var squares = 0.0, gx = 0.0
                        for i in 0..<n { squares += Double(xr[i] * xr[i]); gx += Double(g[i] * xr[i]) }
                        let s = 1 / (squares / Double(n) + Double(spec.eps)).squareRoot()
                        let c = Float(s * s * s * gx / Double(n)), sf = Float(s)
                        for i in 0..<n {
                            let v = sf * g[i] - xr[i] * c
                            dxr[i] = accumulate ? dxr[i] + v : v
                        }
                    case .layer:
                        // x̂ = (x − mean) · s: dx = s · (g − mean(g) − x̂ · mean(g · x̂)).
                        var sum = 0.0
                        for i in 0..<n { sum += Double(xr[i]) }
                        let mean = sum / Double(n)
                        var squares = 0.0
                        for i in 0..<n { let d = Double(xr[i]) - mean; squares += d * d }
                        let s = 1 / (squares / Double(n) + Double(spec.eps)).squareRoot()
                        var gSum = 0.0, gxhat = 0.0
                        for i in 0..<n { gSum += Double(g[i]); gxhat += Double(g[i]) * (Double(xr[i]) - mean) * s }
                        let gMean = gSum / Double(n), gxMean = gxhat / Double(n)
                        for i in 0..<n {
                            let xhat = (Double(xr[i]) - mean) * s
                            let v = Float(s * (Double(g[i]) - gMean - xhat * gxMean))
                            dxr[i] = accumulate ? dxr[i] + v : v
                        }
                    }
                }
            }
        }
    }
}

extension Activation {
    /// act(g) and its derivative act'(g), as ck_activate computes act.
    func valueAndDerivative(_ g: Float) -> (Float, Float) {
        switch self {
        case .silu:
            let sigma = 1 / (1 + expf(-g))
            return (g * sigma, sigma * (1 + g * (1 - sigma)))
        case .gelu:
            let cdf = 0.5 * (1 + erff(g * 0.70710678118654752))
            return (g * cdf, cdf + g * 0.39894228040143268 * expf(-0.5 * g * g))
        case .geluTanh:
            let k: Float = 0.79788456080286536
            let t = tanhf(k * (g + 0.044715 * g * g * g))
            return (0.5 * g * (1 + t), 0.5 * (1 + t) + 0.5 * g * (1 - t * t) * k * (1 + 3 * 0.044715 * g * g))
        case .relu:
            return g > 0 ? (g, 1) : (0, 0)
        }
    }
}

/// A float32 buffer of the backward's, zeroed.
private final class GradientBuffer {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int
    init(_ count: Int) {
        self.count = max(1, count)
        pointer = .allocate(capacity: self.count)
        pointer.initialize(repeating: 0, count: self.count)
    }
    func zero() { pointer.update(repeating: 0, count: count) }
    deinit { pointer.deallocate() }
}

extension DecoderBlock {
    /// The backward pass of the layer through the block engine's steps in reverse, for the
    /// forward recorded in `tape` over the rows of `segments` (each at positions 0..<tokens):
    /// `dx` holds the loss's gradient with respect to the layer's output and leaves with the
    /// gradient with respect to its input. Linears pass gradients to their inputs (and LoRA
    /// adapters accumulate their own, see DifferentiableLinear).
    func backward(_ dx: UnsafeMutablePointer<Float>, tape: LayerTape, tokens: Int, segments: [Segment], context: BlockContext) throws {
        let a = context.architecture, h = a.hidden, n = tokens * h
        let firstInput = GradientBuffer(n), secondInput = GradientBuffer(n)
        let attentionOutput = GradientBuffer(n), mlpOutput = GradientBuffer(n)
        func inputGradient(_ which: SublayerInput) -> GradientBuffer { which == .first ? firstInput : secondInput }
        let steps = a.block.steps
        for index in steps.indices.reversed() {
            switch steps[index] {
            case let .addToResidual(outputs):
                // x += output: the output's gradient is x's.
                for output in outputs { (output == .attention ? attentionOutput : mlpOutput).pointer.update(from: dx, count: n) }
            case let .mlp(from):
                try mlpBackward(mlpOutput.pointer, tape: tape, tokens: tokens, context: context, addingTo: inputGradient(from).pointer)
            case let .attention(from):
                try attentionBackward(attentionOutput.pointer, tape: tape, tokens: tokens, segments: segments, context: context,
                                      addingTo: inputGradient(from).pointer)
            case let .normalize(role, into, replacesResidual):
                let norm = role.map { $0 == .attention ? attentionNorm : mlpNorm! }
                let input = norm.map { _ in tape.normInputs[index]! }
                if replacesResidual {
                    // x ← norm(x), and the sublayer input (if any) is that same x.
                    if let into { ck_add(dx, inputGradient(into).pointer, n); inputGradient(into).zero() }
                    guard let norm, let input else { continue }
                    let after = GradientBuffer(n)
                    after.pointer.update(from: dx, count: n)
                    input.withUnsafeBufferPointer { norm.backward(input: $0.baseAddress!, outputGradient: after.pointer, rows: tokens, into: dx, accumulate: false) }
                } else if let into {
                    let gradient = inputGradient(into)
                    if let norm, let input {
                        input.withUnsafeBufferPointer {
                            norm.backward(input: $0.baseAddress!, outputGradient: gradient.pointer, rows: tokens, into: dx, accumulate: true)
                        }
                    } else {
                        ck_add(dx, gradient.pointer, n)
                    }
                    gradient.zero()
                }
            }
        }
    }

    /// dx = the gradient with respect to linear `name`'s input for `dy` with respect to its output (or added to dx).
    private func linearBackward(_ name: String, _ dy: UnsafePointer<Float>, tape: LayerTape, tokens: Int,
                                into dx: UnsafeMutablePointer<Float>, accumulate: Bool) throws {
        guard let layer = linears[name] as? DifferentiableLinear else {
            throw GPTQError.unsupported("layer \(index) \(name): a \(type(of: linears[name]!)) has no backward pass (training needs float or GPTQ linears)")
        }
        let input = tape.linearInputs[name]!
        let count = tokens * layer.inFeatures
        let target = accumulate ? UnsafeMutablePointer<Float>.allocate(capacity: max(1, count)) : dx
        defer { if accumulate { target.deallocate() } }
        input.withUnsafeBufferPointer { layer.backward(input: $0.baseAddress!, outputGradient: dy, rows: tokens, inputGradient: target) }
        if accumulate { ck_add(dx, target, count) }
    }

    private func mlpBackward(_ dOutput: UnsafePointer<Float>, tape: LayerTape, tokens: Int, context: BlockContext,
                             addingTo dInput: UnsafeMutablePointer<Float>) throws {
        let m = context.architecture.mlp, count = tokens * m.inner
        let dActivated = GradientBuffer(count)
        try linearBackward(m.down, dOutput, tape: tape, tokens: tokens, into: dActivated.pointer, accumulate: false)
        let d = dActivated.pointer
        if let gate = m.gate {
            // out = act(g) · u: dg = d · u · act'(g), du = d · act(g).
            let dUp = GradientBuffer(count)
            tape.preActivation.withUnsafeBufferPointer { g in
                tape.up.withUnsafeBufferPointer { u in
                    for i in 0..<count {
                        let (value, slope) = m.activation.valueAndDerivative(g[i])
                        dUp.pointer[i] = d[i] * value
                        d[i] *= u[i] * slope
                    }
                }
            }
            try linearBackward(gate, d, tape: tape, tokens: tokens, into: dInput, accumulate: true)
            try linearBackward(m.up, dUp.pointer, tape: tape, tokens: tokens, into: dInput, accumulate: true)
        } else {
            tape.preActivation.withUnsafeBufferPointer { g in
                for i in 0..<count { d[i] *= m.activation.valueAndDerivative(g[i]).1 }
            }
            try linearBackward(m.up, d, tape: tape, tokens: tokens, into: dInput, accumulate: true)
        }
    }

    private func attentionBackward(_ dOutput: UnsafePointer<Float>, tape: LayerTape, tokens: Int, segments: [Segment],
                                   context: BlockContext, addingTo dInput: UnsafeMutablePointer<Float>) throws {
        let a = context.architecture.attention
        let (qWidth, kvWidth, hd) = (a.queryWidth, a.kvWidth, a.headDim)
        let dAttention = GradientBuffer(tokens * qWidth)
        try linearBackward(a.output, dOutput, tape: tape, tokens: tokens, into: dAttention.pointer, accumulate: false)
        let dQuery = GradientBuffer(tokens * qWidth), dKey = GradientBuffer(tokens * kvWidth), dValue = GradientBuffer(tokens * kvWidth)
        let (scale, window) = (a.scale(layer: index), a.window(layer: index))
        let group = a.heads / a.kvHeads
        tape.queries.withUnsafeBufferPointer { qs in
            tape.keys.withUnsafeBufferPointer { ks in
                tape.values.withUnsafeBufferPointer { vs in
                    for segment in segments {
                        let t = segment.tokens, row = segment.row
                        let probabilities = UnsafeMutablePointer<Float>.allocate(capacity: t * t)
                        let dScores = UnsafeMutablePointer<Float>.allocate(capacity: t * t)
                        defer { probabilities.deallocate(); dScores.deallocate() }
                        for head in 0..<a.heads {
                            let kv = head / group
                            let q = qs.baseAddress! + row * qWidth + head * hd, k = ks.baseAddress! + row * kvWidth + kv * hd
                            let v = vs.baseAddress! + row * kvWidth + kv * hd, dO = dAttention.pointer + row * qWidth + head * hd
                            // P = softmax(scale · q·kᵀ + alibi) over the keys each query sees, as the forward.
                            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(t), Int32(t), Int32(hd), scale, q, Int32(qWidth),
                                        k, Int32(kvWidth), 0, probabilities, Int32(t))
                            for i in 0..<t {
                                if let alibi = segment.frame.alibi {
                                    alibi.withUnsafeBufferPointer { ck_add(probabilities + i * t, $0.baseAddress! + head * t, t) }
                                }
                                ck_masked_softmax(probabilities + i * t, t, window.map { max(0, i - $0 + 1) } ?? 0, i + 1)
                            }
                            // dP = dO·vᵀ; dS = P ⊙ (dP − rowsum(dP ⊙ P)).
                            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(t), Int32(t), Int32(hd), 1, dO, Int32(qWidth),
                                        v, Int32(kvWidth), 0, dScores, Int32(t))
                            for i in 0..<t {
                                let p = probabilities + i * t, d = dScores + i * t
                                var dot: Float = 0
                                for j in 0...i { dot += p[j] * d[j] }
                                for j in 0..<t { d[j] = p[j] * (d[j] - dot) }
                            }
                            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(t), Int32(hd), Int32(t), scale, dScores, Int32(t),
                                        k, Int32(kvWidth), 0, dQuery.pointer + row * qWidth + head * hd, Int32(qWidth))
                            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(t), Int32(hd), Int32(t), scale, dScores, Int32(t),
                                        q, Int32(qWidth), 1, dKey.pointer + row * kvWidth + kv * hd, Int32(kvWidth))
                            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(t), Int32(hd), Int32(t), 1, probabilities, Int32(t),
                                        dO, Int32(qWidth), 1, dValue.pointer + row * kvWidth + kv * hd, Int32(kvWidth))
                        }
                    }
                }
            }
        }
        if let rotary = context.rope?.spec {
            // The rotation is orthogonal: its gradient rotates back, by the negated angles.
            let half = rotary.dimensions / 2
            for segment in segments {
                let negatedSin = segment.frame.sin.map { -$0 }
                segment.frame.cos.withUnsafeBufferPointer { cos in
                    negatedSin.withUnsafeBufferPointer { sin in
                        for t in 0..<segment.tokens {
                            let r = segment.row + t
                            ck_rope(dQuery.pointer + r * qWidth, a.heads, hd, rotary.dimensions, rotary.interleaved ? 1 : 0,
                                    cos.baseAddress! + t * half, sin.baseAddress! + t * half)
                            ck_rope(dKey.pointer + r * kvWidth, a.kvHeads, hd, rotary.dimensions, rotary.interleaved ? 1 : 0,
                                    cos.baseAddress! + t * half, sin.baseAddress! + t * half)
                        }
                    }
                }
            }
        }
        if let queryNorm, let keyNorm {
            for (norm, unnormed, gradient, rows) in [(queryNorm, tape.unnormedQueries, dQuery, tokens * a.heads),
                                                     (keyNorm, tape.unnormedKeys, dKey, tokens * a.kvHeads)] {
                let after = GradientBuffer(gradient.count)
                after.pointer.update(from: gradient.pointer, count: gradient.count)
                unnormed.withUnsafeBufferPointer {
                    norm.backward(input: $0.baseAddress!, outputGradient: after.pointer, rows: rows, into: gradient.pointer, accumulate: false)
                }
            }
        }
        switch a.projection {
        case let .separate(q, k, v):
            try linearBackward(q, dQuery.pointer, tape: tape, tokens: tokens, into: dInput, accumulate: true)
            try linearBackward(k, dKey.pointer, tape: tape, tokens: tokens, into: dInput, accumulate: true)
            try linearBackward(v, dValue.pointer, tape: tape, tokens: tokens, into: dInput, accumulate: true)
        case let .fused(name, _):
            // The forward gathered q, k and v from the fused rows; the gradient scatters back.
            let fusedWidth = qWidth + 2 * kvWidth
            let dFused = GradientBuffer(tokens * fusedWidth)
            context.fusedRows!.withUnsafeBufferPointer { map in
                for t in 0..<tokens {
                    let target = dFused.pointer + t * fusedWidth
                    for i in 0..<qWidth { target[map[i]] = dQuery.pointer[t * qWidth + i] }
                    for i in 0..<kvWidth {
                        target[map[qWidth + i]] = dKey.pointer[t * kvWidth + i]
                        target[map[qWidth + kvWidth + i]] = dValue.pointer[t * kvWidth + i]
                    }
                }
            }
            try linearBackward(name, dFused.pointer, tape: tape, tokens: tokens, into: dInput, accumulate: true)
        }
    }
}
