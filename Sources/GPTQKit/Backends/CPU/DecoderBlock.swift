import CKernels

/// One layer's cached keys and values, each laid out [kvHeads][capacity][headDim] so
/// that a head's keys are contiguous for the attention products.
struct KVCacheLayer {
    let keys: UnsafeMutablePointer<Float>
    let values: UnsafeMutablePointer<Float>
    let capacity: Int

    init(attention: AttentionSpec, capacity: Int) {
        let count = max(1, attention.kvWidth * capacity)
        keys = .allocate(capacity: count)
        values = .allocate(capacity: count)
        self.capacity = capacity
    }

    func deallocate() {
        keys.deallocate()
        values.deallocate()
    }
}

/// Called with a module name and its input rows before each linear runs.
public typealias LinearObserver = (String, UnsafePointer<Float>, Int) -> Void

/// A norm's weights (float32) and how it normalizes.
struct NormWeights: Sendable {
    let spec: NormSpec
    let weight: [Float]?
    let bias: [Float]?

    /// Normalizes `rows` rows of spec.width floats from `source` into `destination` (which may be `source`).
    func apply(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, rows: Int) {
        let n = spec.width
        weight.withOptionalPointer { w in
            bias.withOptionalPointer { b in
                CPUThreads.parallelRanges(rows, minimumChunk: 64) { r0, r1 in
                    for r in r0..<r1 {
                        switch spec.kind {
                        case .rms: ck_rmsnorm(source + r * n, w!, destination + r * n, n, spec.eps)
                        case .layer: ck_layernorm(source + r * n, w, b, destination + r * n, n, spec.eps)
                        }
                    }
                }
            }
        }
    }
}

extension Optional where Wrapped == [Float] {
    func withOptionalPointer<R>(_ body: (UnsafePointer<Float>?) -> R) -> R {
        guard let self else { return body(nil) }
        return self.withUnsafeBufferPointer { body($0.baseAddress) }
    }
}

/// What every layer of a model shares: the architecture, and the position machinery.
struct BlockContext: Sendable {
    let architecture: Architecture
    let rope: RotaryEmbedding?
    let alibi: ALiBi?
    /// For a fused q/k/v projection: the fused output row of each element of [q | k | v].
    let fusedRows: [Int]?

    init(_ architecture: Architecture) {
        self.architecture = architecture
        let a = architecture.attention
        switch architecture.positions {
        case let .rotary(spec): (rope, alibi) = (RotaryEmbedding(spec), nil)
        case let .alibi(spec): (rope, alibi) = (nil, ALiBi(heads: a.heads, spec: spec))
        case .none: (rope, alibi) = (nil, nil)
        }
        fusedRows = a.fusedOutputOrder
    }

    /// The rotary angles of positions position..<position+tokens and the ALiBi biases of keys 0..<position+tokens.
    func frame(position: Int, tokens: Int) -> PositionFrame {
        let (cos, sin) = rope?.tables(start: position, count: tokens) ?? ([], [])
        return PositionFrame(cos: cos, sin: sin, alibi: alibi?.table(keys: position + tokens))
    }
}

struct PositionFrame {
    let cos: [Float], sin: [Float]
    /// [heads][keys] biases.
    let alibi: [Float]?
}

/// One sequence's rows in a layer's pass: rows row..<row+tokens at positions
/// position..<position+tokens, its keys and values going to `cache`. Linears, norms and the
/// MLP run over every segment's rows at once; attention runs per segment.
struct Segment {
    let row: Int
    let tokens: Int
    let position: Int
    let cache: KVCacheLayer
    let frame: PositionFrame
}

/// Float32 scratch for one forward of `tokens` rows through a layer.
final class DecoderWorkspace {
    let normed, mlpNormed, fused, query, key, value, attention, output, mlpOutput, gate, up: UnsafeMutablePointer<Float>
    private let all: [UnsafeMutablePointer<Float>]

    init(architecture a: Architecture, tokens: Int) {
        func buffer(_ width: Int) -> UnsafeMutablePointer<Float> { .allocate(capacity: max(1, tokens * width)) }
        let attention = a.attention
        normed = buffer(a.hidden)
        mlpNormed = buffer(a.hidden)
        fused = buffer(attention.queryWidth + 2 * attention.kvWidth)
        query = buffer(attention.queryWidth)
        key = buffer(attention.kvWidth)
        value = buffer(attention.kvWidth)
        self.attention = buffer(attention.queryWidth)
        output = buffer(a.hidden)
        mlpOutput = buffer(a.hidden)
        gate = buffer(a.mlp.inner)
        up = buffer(a.mlp.inner)
        all = [normed, mlpNormed, fused, query, key, value, self.attention, output, mlpOutput, gate, up]
    }

    deinit { for b in all { b.deallocate() } }
}

/// A decoder layer on the CPU: the block engine's one dataflow for every family. The
/// architecture says which norm, projections, positions, activation and residual style
/// it runs; the operations are the CPU kernels.
final class DecoderBlock: @unchecked Sendable {
    let index: Int
    let attentionNorm: NormWeights
    let mlpNorm: NormWeights?
    /// Qwen3's per-head RMSNorms of queries and keys.
    let queryNorm: NormWeights?, keyNorm: NormWeights?
    var linears: [String: LinearLayer]

    init(index: Int, attentionNorm: NormWeights, mlpNorm: NormWeights?, queryNorm: NormWeights?, keyNorm: NormWeights?,
         linears: [String: LinearLayer]) {
        self.index = index
        self.attentionNorm = attentionNorm
        self.mlpNorm = mlpNorm
        self.queryNorm = queryNorm
        self.keyNorm = keyNorm
        self.linears = linears
    }

    /// Signals that the module named in `stopAfter` was observed: the layer stops there.
    private struct Stopped: Error {}

    /// Runs the layer in place on x [tokens, hidden], the rows of `segments` (each appends its
    /// keys and values to its cache, which holds its earlier positions).
    /// `arithmetic` `.cudaFloat16` rounds where the CUDA session stores float16 (CPUArithmetic).
    func forward(_ x: UnsafeMutablePointer<Float>, tokens: Int, segments: [Segment], context: BlockContext,
                 workspace ws: DecoderWorkspace, observe: LinearObserver?, stopAfter: String? = nil,
                 arithmetic: CPUArithmetic = .float32, tape: LayerTape? = nil) {
        let a = context.architecture, h = a.hidden, n = tokens * h
        let roundsToHalf = arithmetic == .cudaFloat16
        func linear(_ name: String, _ input: UnsafeMutablePointer<Float>, _ output: UnsafeMutablePointer<Float>) throws {
            let layer = linears[name]!
            if roundsToHalf { ck_round_f16(input, tokens * layer.inFeatures) }
            observe?(name, input, tokens)
            tape?.linearInputs[name] = Array(UnsafeBufferPointer(start: input, count: tokens * layer.inFeatures))
            if name == stopAfter { throw Stopped() }
            layer.forward(input, rows: tokens, into: output)
            if roundsToHalf { ck_round_f16(output, tokens * layer.outFeatures) }
        }
        func attention(_ input: UnsafeMutablePointer<Float>) throws {
            try attend(input, tokens: tokens, segments: segments, context: context, workspace: ws, roundsToHalf: roundsToHalf,
                       tape: tape, linear: linear)
        }
        func mlp(_ input: UnsafeMutablePointer<Float>, into output: UnsafeMutablePointer<Float>) throws {
            let m = a.mlp, count = tokens * m.inner
            if let gate = m.gate {
                try linear(gate, input, ws.gate)
                try linear(m.up, input, ws.up)
                tape?.preActivation = Array(UnsafeBufferPointer(start: ws.gate, count: count))
                tape?.up = Array(UnsafeBufferPointer(start: ws.up, count: count))
                CPUThreads.parallelRanges(count, minimumChunk: 1 << 14) { s, e in
                    ck_gated(m.activation.kernelCode, ws.gate + s, ws.up + s, ws.gate + s, e - s)
                }
            } else {
                try linear(m.up, input, ws.gate)
                tape?.preActivation = Array(UnsafeBufferPointer(start: ws.gate, count: count))
                CPUThreads.parallelRanges(count, minimumChunk: 1 << 14) { s, e in ck_activate(m.activation.kernelCode, ws.gate + s, e - s) }
            }
            try linear(m.down, ws.gate, output)
        }
        func input(_ which: SublayerInput) -> UnsafeMutablePointer<Float> { which == .first ? ws.normed : ws.mlpNormed }
        do {
            for (index, step) in a.block.steps.enumerated() {
                switch step {
                case let .normalize(role, into, replacesResidual):
                    let norm = role.map { $0 == .attention ? attentionNorm : mlpNorm! }
                    if norm != nil { tape?.normInputs[index] = Array(UnsafeBufferPointer(start: x, count: n)) }
                    if replacesResidual { norm?.apply(x, into: x, rows: tokens) }
                    guard let into else { continue }
                    if let norm, !replacesResidual { norm.apply(x, into: input(into), rows: tokens) } else { input(into).update(from: x, count: n) }
                case let .attention(from):
                    try attention(input(from))
                case let .mlp(from):
                    try mlp(input(from), into: ws.mlpOutput)
                case let .addToResidual(outputs):
                    for output in outputs { ck_add(x, output == .attention ? ws.output : ws.mlpOutput, n) }
                }
            }
        } catch {
            // Stopped: the observer has seen what it needed; x is left partly updated.
        }
    }

    /// The attention sublayer on `input` (its norm already applied): q/k/v, their norms and
    /// rotation, the cache, attention and the output projection into ws.output.
    private func attend(_ input: UnsafeMutablePointer<Float>, tokens: Int, segments: [Segment], context: BlockContext,
                        workspace ws: DecoderWorkspace, roundsToHalf: Bool, tape: LayerTape?,
                        linear: (String, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) throws -> Void) throws {
        let a = context.architecture.attention
        let (qWidth, kvWidth, hd) = (a.queryWidth, a.kvWidth, a.headDim)
        switch a.projection {
        case let .separate(q, k, v):
            try linear(q, input, ws.query)
            try linear(k, input, ws.key)
            try linear(v, input, ws.value)
        case let .fused(name, _):
            let fusedWidth = qWidth + 2 * kvWidth
            try linear(name, input, ws.fused)
            let rows = context.fusedRows!
            rows.withUnsafeBufferPointer { map in
                for t in 0..<tokens {
                    let source = ws.fused + t * fusedWidth
                    for i in 0..<qWidth { ws.query[t * qWidth + i] = source[map[i]] }
                    for i in 0..<kvWidth {
                        ws.key[t * kvWidth + i] = source[map[qWidth + i]]
                        ws.value[t * kvWidth + i] = source[map[qWidth + kvWidth + i]]
                    }
                }
            }
        }
        if let queryNorm, let keyNorm {
            tape?.unnormedQueries = Array(UnsafeBufferPointer(start: ws.query, count: tokens * qWidth))
            tape?.unnormedKeys = Array(UnsafeBufferPointer(start: ws.key, count: tokens * kvWidth))
            queryNorm.apply(ws.query, into: ws.query, rows: tokens * a.heads)
            keyNorm.apply(ws.key, into: ws.key, rows: tokens * a.kvHeads)
        }
        let rotary = context.rope?.spec
        let half = (rotary?.dimensions ?? 0) / 2
        for segment in segments {
            let (cache, position) = (segment.cache, segment.position)
            segment.frame.cos.withUnsafeBufferPointer { cos in
                segment.frame.sin.withUnsafeBufferPointer { sin in
                    for t in 0..<segment.tokens {
                        let query = ws.query + (segment.row + t) * qWidth, key = ws.key + (segment.row + t) * kvWidth
                        let value = ws.value + (segment.row + t) * kvWidth
                        if let rotary {
                            ck_rope(query, a.heads, hd, rotary.dimensions, rotary.interleaved ? 1 : 0, cos.baseAddress! + t * half, sin.baseAddress! + t * half)
                            ck_rope(key, a.kvHeads, hd, rotary.dimensions, rotary.interleaved ? 1 : 0, cos.baseAddress! + t * half, sin.baseAddress! + t * half)
                        }
                        // The GPU rounds the rotated queries and keys to float16 on both paths (values
                        // are already, as v_proj's output).
                        if roundsToHalf {
                            ck_round_f16(query, qWidth)
                            ck_round_f16(key, kvWidth)
                        }
                        for g in 0..<a.kvHeads {
                            let slot = (g * cache.capacity + position + t) * hd
                            (cache.keys + slot).update(from: key + g * hd, count: hd)
                            (cache.values + slot).update(from: value + g * hd, count: hd)
                        }
                    }
                }
            }
            // Only the GPU's prefill (several tokens) stores the probabilities in float16.
            Attention.run(queries: ws.query + segment.row * qWidth, tokens: segment.tokens, position: position, cache: cache, attention: a,
                          scale: a.scale(layer: index), window: a.window(layer: index), alibi: segment.frame.alibi,
                          roundsProbabilities: roundsToHalf && segment.tokens > 1, into: ws.attention + segment.row * qWidth)
        }
        if let tape {
            tape.queries = Array(UnsafeBufferPointer(start: ws.query, count: tokens * qWidth))
            tape.keys = Array(UnsafeBufferPointer(start: ws.key, count: tokens * kvWidth))
            tape.values = Array(UnsafeBufferPointer(start: ws.value, count: tokens * kvWidth))
        }
        try linear(a.output, ws.attention, ws.output)
    }
}

extension Activation {
    /// ck_activate's code.
    var kernelCode: Int32 {
        switch self {
        case .silu: return 0
        case .gelu: return 1
        case .geluTanh: return 2
        case .relu: return 3
        }
    }
}
