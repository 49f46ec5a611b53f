#if canImport(Glibc)
import Glibc
#endif

/// A linear whose output lands at column `column` of a wider row (q, k and v share one
/// row; so do gate and up), so separately stored projections still feed one buffer.
package struct PlacedLinear {
    package let linear: CUDALinear
    package let column: Int
}

/// A norm's weights on the GPU (float32; OPT's non-affine LayerNorm has none).
package struct CUDANorm: Sendable {
    let kind: NormKind
    let weight: DeviceBuffer?, bias: DeviceBuffer?
    let eps: Float

    init(_ weights: NormWeights, device: CUDADevice) throws {
        kind = weights.spec.kind
        eps = weights.spec.eps
        weight = try weights.weight.map { try device.upload($0) }
        bias = try weights.bias.map { try device.upload($0) }
    }

    init(rmsWeight: DeviceBuffer, eps: Float) {
        (kind, weight, bias, self.eps) = (.rms, rmsWeight, nil, eps)
    }
}

/// One decoder layer's weights on the GPU: the linears of the architecture's block, q/k/v
/// and gate/up each feeding one row ([q | k | v], [gate | up]).
package final class CUDADecoderLayer: @unchecked Sendable {
    let attentionNorm: CUDANorm, mlpNorm: CUDANorm?
    let queryNorm: DeviceBuffer?, keyNorm: DeviceBuffer?
    /// Their outputs side by side in [q | k | v] order (a fused projection's rows reordered at load).
    package let qkv: [PlacedLinear]
    package let output: CUDALinear
    /// [gate | up], or up alone in an MLP without a gate.
    package let gateUp: [PlacedLinear]
    package let down: CUDALinear
    let window: Int?
    /// The attention scores' factor in this layer.
    let attentionScale: Float

    init(attentionNorm: CUDANorm, mlpNorm: CUDANorm?, queryNorm: DeviceBuffer?, keyNorm: DeviceBuffer?,
         qkv: [PlacedLinear], output: CUDALinear, gateUp: [PlacedLinear], down: CUDALinear, window: Int?, attentionScale: Float) {
        self.attentionNorm = attentionNorm
        self.mlpNorm = mlpNorm
        self.queryNorm = queryNorm
        self.keyNorm = keyNorm
        self.qkv = qkv
        self.output = output
        self.gateUp = gateUp
        self.down = down
        self.window = window
        self.attentionScale = attentionScale
    }

    var linears: [CUDALinear] { qkv.map(\.linear) + [output] + gateUp.map(\.linear) + [down] }
}

/// The stem's tensors on the GPU beyond the token embedding.
package struct CUDAStem: Sendable {
    /// Learned absolute positions, float32 [rows, hidden]: row position + offset.
    let positions: DeviceBuffer?
    let positionOffset: Int
    /// The positions the table holds (nil: no table, no limit from the stem).
    let positionLimit: Int?
    let norm: CUDANorm?
    let projectIn: CUDALinear?
}

/// The head's tensors on the GPU beyond the LM head.
package struct CUDAHead: Sendable {
    let finalNorm: CUDANorm?
    let projectOut: CUDALinear?
}

/// How attention places tokens on the GPU: rotary angles over the leading `rotaryDimensions`
/// of each head (0: none), or ALiBi's per-head slopes.
package struct CUDAPositions: Sendable {
    let inverseFrequencies: DeviceBuffer
    let rotaryDimensions: Int
    let interleaved: Bool
    /// Float32 [heads], already rounded to bfloat16 when the biases are (Falcon).
    let alibiSlopes: DeviceBuffer?
    let alibiBFloat16: Bool
    let alibiScale: Float
}

/// A model of any family the block engine runs, on the GPU: float16 weights or GPTQ layers,
/// float16 embedding and LM head, float32 norms; its layers run the architecture's block steps.
public final class CUDAModel: @unchecked Sendable {
    public let backend: CUDABackend
    public let architecture: Architecture
    public let hidden: Int, heads: Int, kvHeads: Int, headDim: Int, intermediate: Int, vocab: Int
    /// Token embedding [vocab, embeddingWidth], float16.
    let embedding: DeviceBuffer
    let stem: CUDAStem
    let head: CUDAHead
    package let lmHead: CUDALinear
    package let layers: [CUDADecoderLayer]
    let positions: CUDAPositions
    /// How the layers are stored, e.g. "4-bit g128 fast4".
    public let weightsDescription: String

    init(backend: CUDABackend, architecture a: Architecture, embedding: DeviceBuffer, stem: CUDAStem, head: CUDAHead, lmHead: CUDALinear,
         layers: [CUDADecoderLayer], weightsDescription: String) throws {
        let attention = a.attention
        // Attention reads a head 8 dimensions (16 bytes) a lane, at most 32 lanes; a norm keeps
        // at most 16 of a row's elements in each of its at most 1024 threads.
        guard attention.headDim % 8 == 0, attention.headDim <= 256, CUDASession.normLaunch(hidden: a.hidden) != nil else {
            throw GPTQError.unsupported("CUDA model with hidden size \(a.hidden) (at most 16384 supported) and head dimension "
                                        + "\(attention.headDim) (a multiple of 8, at most 256); run it on the CPU (--device cpu)")
        }
        self.backend = backend
        architecture = a
        hidden = a.hidden
        heads = attention.heads
        kvHeads = attention.kvHeads
        headDim = attention.headDim
        intermediate = a.mlp.inner
        vocab = a.vocab
        self.embedding = embedding
        self.stem = stem
        self.head = head
        self.lmHead = lmHead
        self.layers = layers
        let device = backend.device
        switch a.positions {
        case let .rotary(rotary):
            positions = CUDAPositions(inverseFrequencies: try device.upload(RotaryEmbedding(rotary).inverseFrequencies),
                                      rotaryDimensions: rotary.dimensions, interleaved: rotary.interleaved, alibiSlopes: nil,
                                      alibiBFloat16: false, alibiScale: 1)
        case let .alibi(spec):
            let slopes = ALiBi(heads: heads, spec: spec).slopes.map { spec.bfloat16 ? ALiBi.bfloat16($0) : $0 }
            positions = CUDAPositions(inverseFrequencies: try device.upload([Float(0)]), rotaryDimensions: 0, interleaved: false,
                                      alibiSlopes: try device.upload(slopes), alibiBFloat16: spec.bfloat16, alibiScale: spec.scale)
        case .none:
            positions = CUDAPositions(inverseFrequencies: try device.upload([Float(0)]), rotaryDimensions: 0, interleaved: false,
                                      alibiSlopes: nil, alibiBFloat16: false, alibiScale: 1)
        }
        self.weightsDescription = weightsDescription
    }

    public var numLayers: Int { layers.count }
    package var qkvWidth: Int { (heads + 2 * kvHeads) * headDim }
    /// The width of the gate and up projections' shared row.
    package var gateUpWidth: Int { (architecture.mlp.gate == nil ? 1 : 2) * intermediate }
    var embeddingWidth: Int { architecture.stem.embeddingWidth }

    /// Bytes one decode step reads from the weights (every linear and the LM head).
    public var weightBytes: Int {
        layers.reduce(lmHead.weightBytes) { sum, l in sum + l.linears.reduce(0) { $0 + $1.weightBytes } }
            + [stem.projectIn, head.projectOut].compactMap { $0 }.reduce(0) { $0 + $1.weightBytes }
    }

    /// A session holding `capacity` positions for each of `batch` sequences.
    public func makeSession(capacity: Int, batch: Int = 1, prefillChunk: Int = 2048, cache: CUDASession.CacheSize = .everySequenceFull) throws -> CUDASession {
        try CUDASession(model: self, capacity: capacity, batch: batch, prefillChunk: prefillChunk, cache: cache)
    }

    /// Whether every decoder linear multiplies float16-rounded weights in a pass of `rows`
    /// rows (CUDALinear.multipliesFloat16Weights): what a CPU reference of this model's float16
    /// arithmetic must round.
    package func multipliesFloat16Weights(rows: Int) -> Bool {
        layers.allSatisfy { layer in layer.linears.allSatisfy { $0.multipliesFloat16Weights(rows: rows) } }
    }

    // MARK: loading

    /// Loads a Hugging Face folder of any registered family: float weights, or a GPTQ
    /// checkpoint (quantization_config in config.json, or quantize_config.json) whose linears
    /// are AutoGPTQ's packed tensors.
    public static func load(folder: String, backend: CUDABackend) throws -> CUDAModel {
        let config = try ModelConfig(folder: folder)
        let a = try ModelFamily.forConfig(config).architecture(config)
        let checkpoint = try Checkpoint(folder: folder)
        let names = try TensorNames(a, checkpoint: checkpoint)
        let weights = WeightReader(checkpoint: checkpoint, names: names, layout: a.weightLayout, asFloat16: false)
        let quantized = try QuantizedCheckpoint(folder: folder, checkpoint: checkpoint)
        let device = backend.device
        func host(_ name: String, in inFeatures: Int, out outFeatures: Int, bias: Bool, layout: WeightLayout? = nil) throws -> HostLinear {
            let stored = names.stored(name)
            if checkpoint.contains(stored + ".qweight") {
                guard let quantized else {
                    throw GPTQError.badConfig(field: "quantization_config", path: config.path, reason: "\(stored).qweight is GPTQ-packed but no quantization config says how")
                }
                return .packed(try quantized.packedLinear(stored, inFeatures: inFeatures, outFeatures: outFeatures)!)
            }
            let weight = try weights.linearWeight(name, in: inFeatures, out: outFeatures, layout: layout)
            return .dense(weight, bias ? Tensor(try weights.vector(name + ".bias", count: outFeatures), shape: [outFeatures]) : nil)
        }
        func layerLinear(_ layer: Int, _ module: String) throws -> HostLinear {
            let spec = a.linear(module)!
            return try host(a.layerModule(layer, module), in: spec.inFeatures, out: spec.outFeatures, bias: spec.hasBias)
        }
        func norm(_ spec: NormSpec, prefix: String) throws -> CUDANorm { try CUDANorm(weights.norm(spec, prefix: prefix), device: device) }
        let attention = a.attention
        var layers: [CUDADecoderLayer] = []
        var description = "float16"
        for i in 0..<a.layers {
            let qkv: [PlacedLinear]
            switch attention.projection {
            case let .separate(q, k, v):
                qkv = try HostLinear.fused([q, k, v].map { try layerLinear(i, $0) }, backend: backend)
            case let .fused(name, _):
                qkv = [PlacedLinear(linear: try layerLinear(i, name).reorderingOutputs(attention.fusedOutputOrder!).upload(backend), column: 0)]
            }
            let down = try layerLinear(i, a.mlp.down).upload(backend)
            description = down.kernelDescription
            let prefix = a.layerModule(i, "")
            layers.append(CUDADecoderLayer(
                attentionNorm: try norm(a.block.attentionNorm, prefix: prefix), mlpNorm: try a.block.mlpNorm.map { try norm($0, prefix: prefix) },
                queryNorm: try attention.qkNorm.map { try device.upload(try weights.norm($0.query, prefix: prefix).weight!) },
                keyNorm: try attention.qkNorm.map { try device.upload(try weights.norm($0.key, prefix: prefix).weight!) },
                qkv: qkv, output: try layerLinear(i, attention.output).upload(backend),
                gateUp: try HostLinear.fused(([a.mlp.gate].compactMap { $0 } + [a.mlp.up]).map { try layerLinear(i, $0) }, backend: backend),
                down: down, window: attention.window(layer: i), attentionScale: attention.scale(layer: i)))
        }
        let width = a.stem.embeddingWidth
        let embedding = try device.upload(try weights.floatTensor(a.stem.embedding + ".weight", shape: [a.vocab, width]).converted(to: .f16))
        let table = a.stem.learnedPositions
        let stem = CUDAStem(
            positions: try table.map { try device.upload(try weights.floatTensor($0.name + ".weight", shape: [$0.count, a.hidden]).floats()) },
            positionOffset: table?.offset ?? 0, positionLimit: table.map { $0.count - $0.offset },
            norm: try a.stem.norm.map { try norm($0, prefix: "") },
            projectIn: try a.stem.projectIn.map { try host($0, in: width, out: a.hidden, bias: false, layout: .linear).upload(backend) })
        let head = CUDAHead(finalNorm: try a.head.finalNorm.map { try norm($0, prefix: "") },
                            projectOut: try a.head.projectOut.map { try host($0, in: a.hidden, out: width, bias: false, layout: .linear).upload(backend) })
        let lmHead: CUDALinear
        if try a.tiesHead(checkpoint: checkpoint) {
            let bias = a.head.bias ? Tensor(try weights.vector(a.head.lmHead + ".bias", count: a.vocab), shape: [a.vocab]) : nil
            lmHead = try CUDALinear(backend: backend, halfWeight: embedding, inFeatures: width, outFeatures: a.vocab, bias: bias)
        } else {
            // The head is a Linear in every family, GPT-2's Conv1D ones included.
            lmHead = try host(a.head.lmHead, in: width, out: a.vocab, bias: a.head.bias, layout: .linear).upload(backend)
        }
        return try CUDAModel(backend: backend, architecture: a, embedding: embedding, stem: stem, head: head, lmHead: lmHead,
                             layers: layers, weightsDescription: description)
    }

    /// A llama-shaped model with pseudo-random 4-bit group-`groupSize` layers and float16
    /// embedding and LM head, built on the GPU (benchmarks: Llama-2-7B is hidden 4096, 32
    /// layers, 32 heads, intermediate 11008, vocab 32000), every layer's attention within
    /// `window` positions when given.
    public static func random4Bit(backend: CUDABackend, hidden: Int, layers count: Int, heads: Int, kvHeads: Int,
                                  intermediate: Int, vocab: Int, groupSize: Int = 128, halfWeights: Bool = false,
                                  window: Int? = nil) throws -> CUDAModel {
        let headDim = hidden / heads
        let device = backend.device
        var seed: UInt32 = 1
        func next() -> UInt32 { seed &+= 7; return seed }
        func q4(_ k: Int, _ n: Int) throws -> CUDALinear {
            // halfWeights: float16 linears instead (the float model GPTQ starts from).
            halfWeights ? try CUDALinear(backend: backend, randomHalfInFeatures: k, outFeatures: n, scale: 0.02, seed: next())
                : try CUDALinear(backend: backend, random4BitInFeatures: k, outFeatures: n, groupSize: groupSize, seed: next())
        }
        var rng = Xoshiro256StarStar(seed: 5)
        func norm(_ n: Int) throws -> CUDANorm {
            CUDANorm(rmsWeight: try device.upload((0..<n).map { _ in Float(0.5 + rng.nextUnit()) }), eps: 1e-5)
        }
        let attention = AttentionSpec(heads: heads, kvHeads: kvHeads, headDim: headDim,
                                      projection: .separate(q: "self_attn.q_proj", k: "self_attn.k_proj", v: "self_attn.v_proj"),
                                      output: "self_attn.o_proj", qkvBias: false, outputBias: false,
                                      windows: [Int?](repeating: window, count: count))
        let architecture = Architecture(
            hidden: hidden, layers: count, vocab: vocab, layerPrefix: "model.layers", basePrefix: "model",
            stem: Stem(embedding: "model.embed_tokens", embeddingWidth: hidden), attention: attention,
            positions: .rotary(RotarySpec(dimensions: headDim, theta: 10000)),
            mlp: MLPSpec(gate: "mlp.gate_proj", up: "mlp.up_proj", down: "mlp.down_proj", activation: .silu, inner: intermediate, bias: false),
            block: BlockSpec(attentionNorm: .rms("input_layernorm", width: hidden, eps: 1e-5),
                             mlpNorm: .rms("post_attention_layernorm", width: hidden, eps: 1e-5), residual: .sequential),
            head: Head(finalNorm: .rms("model.norm", width: hidden, eps: 1e-5), tied: false), quantizationGroups: [])
        let layers = try (0..<count).map { _ in
            CUDADecoderLayer(attentionNorm: try norm(hidden), mlpNorm: try norm(hidden), queryNorm: nil, keyNorm: nil,
                             qkv: [PlacedLinear(linear: try q4(hidden, (heads + 2 * kvHeads) * headDim), column: 0)],
                             output: try q4(heads * headDim, hidden),
                             gateUp: [PlacedLinear(linear: try q4(hidden, 2 * intermediate), column: 0)],
                             down: try q4(intermediate, hidden), window: window, attentionScale: attention.scale)
        }
        let embedding = try device.allocate(bytes: vocab * hidden * 2)
        try backend.fillRandomHalves(embedding, seed: next(), lo: -1, hi: 1)
        let lmHead = try CUDALinear(backend: backend, randomHalfInFeatures: hidden, outFeatures: vocab, scale: 0.05, seed: next())
        return try CUDAModel(backend: backend, architecture: architecture, embedding: embedding,
                             stem: CUDAStem(positions: nil, positionOffset: 0, positionLimit: nil, norm: nil, projectIn: nil),
                             head: CUDAHead(finalNorm: try norm(hidden), projectOut: nil), lmHead: lmHead, layers: layers,
                             weightsDescription: layers[0].down.kernelDescription + " (random)")
    }
}
