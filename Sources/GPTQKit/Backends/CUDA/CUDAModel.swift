#if canImport(Glibc)
import Glibc
#endif

/// A linear whose output lands at column `column` of a wider row (q, k and v share one
/// row; so do gate and up), so separately stored projections still feed one buffer.
package struct PlacedLinear {
    package let linear: CUDALinear
    package let column: Int
}

/// One llama-style decoder layer's weights on the GPU.
package final class CUDADecoderLayer: @unchecked Sendable {
    let inputNorm: DeviceBuffer, postAttentionNorm: DeviceBuffer
    let queryNorm: DeviceBuffer?, keyNorm: DeviceBuffer?
    package let qkv: [PlacedLinear]
    package let output: CUDALinear
    package let gateUp: [PlacedLinear]
    package let down: CUDALinear
    let window: Int?

    init(inputNorm: DeviceBuffer, postAttentionNorm: DeviceBuffer, queryNorm: DeviceBuffer?, keyNorm: DeviceBuffer?,
         qkv: [PlacedLinear], output: CUDALinear, gateUp: [PlacedLinear], down: CUDALinear, window: Int?) {
        self.inputNorm = inputNorm
        self.postAttentionNorm = postAttentionNorm
        self.queryNorm = queryNorm
        self.keyNorm = keyNorm
        self.qkv = qkv
        self.output = output
        self.gateUp = gateUp
        self.down = down
        self.window = window
    }
}

/// A llama-family model (llama, mistral, qwen2, qwen3) on the GPU: float16 weights or
/// GPTQ layers, float16 embedding and LM head, float32 norms.
public final class CUDAModel: @unchecked Sendable {
    public let backend: CUDABackend
    public let hidden: Int, heads: Int, kvHeads: Int, headDim: Int, intermediate: Int, vocab: Int
    let eps: Float
    let embedding: DeviceBuffer
    let finalNorm: DeviceBuffer
    package let lmHead: CUDALinear
    package let layers: [CUDADecoderLayer]
    let inverseFrequencies: DeviceBuffer
    /// How the layers are stored, e.g. "4-bit g128 fast4".
    public let weightsDescription: String

    init(backend: CUDABackend, hidden: Int, heads: Int, kvHeads: Int, headDim: Int, intermediate: Int, vocab: Int, eps: Float,
         embedding: DeviceBuffer, finalNorm: DeviceBuffer, lmHead: CUDALinear, layers: [CUDADecoderLayer],
         inverseFrequencies: [Float], weightsDescription: String) throws {
        // Decode attention reads a key 8 dimensions (16 bytes) a lane, at most 32 lanes a key;
        // RMSNorm keeps at most 16 of a row's elements in each of its at most 1024 threads.
        guard headDim % 8 == 0, headDim <= 256, kvHeads > 0, heads % kvHeads == 0, CUDASession.rmsNormLaunch(hidden: hidden) != nil else {
            throw GPTQError.unsupported("CUDA model with hidden size \(hidden) (at most 16384 supported), head dimension \(headDim) "
                                        + "(a multiple of 8, at most 256) and \(heads) heads over \(kvHeads) key/value heads")
        }
        self.backend = backend
        self.hidden = hidden
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.intermediate = intermediate
        self.vocab = vocab
        self.eps = eps
        self.embedding = embedding
        self.finalNorm = finalNorm
        self.lmHead = lmHead
        self.layers = layers
        self.inverseFrequencies = try backend.device.upload(inverseFrequencies)
        self.weightsDescription = weightsDescription
    }

    public var numLayers: Int { layers.count }
    package var qkvWidth: Int { (heads + 2 * kvHeads) * headDim }

    /// Bytes one decode step reads from the weights (every linear and the LM head).
    public var weightBytes: Int {
        layers.reduce(lmHead.weightBytes) { sum, l in
            sum + (l.qkv + l.gateUp).reduce(0) { $0 + $1.linear.weightBytes } + l.output.weightBytes + l.down.weightBytes
        }
    }

    /// A session holding `capacity` positions for each of `batch` sequences.
    public func makeSession(capacity: Int, batch: Int = 1, prefillChunk: Int = 2048) throws -> CUDASession {
        try CUDASession(model: self, capacity: capacity, batch: batch, prefillChunk: prefillChunk)
    }

    /// Whether every decoder linear multiplies float16-rounded weights in a pass of `rows`
    /// rows (CUDALinear.multipliesFloat16Weights): what a CPU reference of this model's float16
    /// arithmetic must round.
    package func multipliesFloat16Weights(rows: Int) -> Bool {
        layers.allSatisfy { layer in
            (layer.qkv.map(\.linear) + [layer.output] + layer.gateUp.map(\.linear) + [layer.down])
                .allSatisfy { $0.multipliesFloat16Weights(rows: rows) }
        }
    }

    // MARK: loading

    /// Loads a Hugging Face folder: float weights, or a GPTQ checkpoint (quantization_config in
    /// config.json, or quantize_config.json) whose linears are AutoGPTQ's packed tensors.
    public static func load(folder: String, backend: CUDABackend) throws -> CUDAModel {
        let config = try ModelConfig(folder: folder)
        let family = try ModelFamily.forConfig(config)
        let a = try family.architecture(config)
        guard a.runsOnCUDA, case let .rotary(rotary) = a.positions, case let .separate(q, k, v) = a.attention.projection,
              let gate = a.mlp.gate, let postAttentionNorm = a.block.mlpNorm, let finalNorm = a.head.finalNorm else {
            throw GPTQError.unsupported("the CUDA backend runs the llama-style families (llama, mistral, qwen2, qwen3) so far; "
                                        + "\(family.name) runs on the CPU (--device cpu)")
        }
        let checkpoint = try Checkpoint(folder: folder)
        let names = try TensorNames(a, checkpoint: checkpoint)
        let quantized = try QuantizedCheckpoint(folder: folder, checkpoint: checkpoint)
        let device = backend.device
        func floats(_ name: String, _ count: Int) throws -> DeviceBuffer {
            try device.upload(try checkpoint.tensor(names.stored(name), shape: [count]).floats())
        }
        func halves(_ name: String, _ shape: [Int]) throws -> DeviceBuffer {
            let t = try checkpoint.tensor(names.stored(name), shape: shape).converted(to: .f16)
            return try device.upload(t)
        }
        func host(_ name: String, _ module: LinearModule) throws -> HostLinear {
            if checkpoint.contains(name + ".qweight") {
                guard let quantized else {
                    throw GPTQError.badConfig(field: "quantization_config", path: config.path, reason: "\(name).qweight is GPTQ-packed but no quantization config says how")
                }
                return .packed(try quantized.packedLinear(name, inFeatures: module.inFeatures, outFeatures: module.outFeatures)!)
            }
            let w = try checkpoint.tensor(name + ".weight", shape: [module.outFeatures, module.inFeatures])
            let b = module.hasBias ? try checkpoint.tensor(name + ".bias", shape: [module.outFeatures]) : nil
            return .dense(w, b)
        }
        func linears(_ layer: Int, _ modules: [String]) throws -> [HostLinear] {
            try modules.map { module in try host(names.stored(a.layerModule(layer, module)), a.linear(module)!) }
        }
        let attention = a.attention
        var layers: [CUDADecoderLayer] = []
        var description = "float16"
        for i in 0..<a.layers {
            let output = try HostLinear.fused(try linears(i, [attention.output]), backend: backend)[0].linear
            let down = try HostLinear.fused(try linears(i, [a.mlp.down]), backend: backend)[0].linear
            description = down.kernelDescription
            func norm(_ spec: NormSpec) throws -> DeviceBuffer { try floats(a.layerModule(i, spec.name + ".weight"), spec.width) }
            layers.append(CUDADecoderLayer(
                inputNorm: try norm(a.block.attentionNorm), postAttentionNorm: try norm(postAttentionNorm),
                queryNorm: try attention.qkNorm.map { try norm($0.query) }, keyNorm: try attention.qkNorm.map { try norm($0.key) },
                qkv: try HostLinear.fused(try linears(i, [q, k, v]), backend: backend), output: output,
                gateUp: try HostLinear.fused(try linears(i, [gate, a.mlp.up]), backend: backend), down: down,
                window: attention.window(layer: i)))
        }
        let embedding = try halves(a.stem.embedding + ".weight", [a.vocab, a.hidden])
        let tied = a.head.tied || !checkpoint.contains(names.stored(a.head.lmHead) + ".weight")
        let lmHead = tied ? CUDALinear(backend: backend, halfWeight: embedding, inFeatures: a.hidden, outFeatures: a.vocab)
            : try CUDALinear(backend: backend, weight: try checkpoint.tensor(names.stored(a.head.lmHead) + ".weight", shape: [a.vocab, a.hidden]))
        return try CUDAModel(backend: backend, hidden: a.hidden, heads: attention.heads, kvHeads: attention.kvHeads,
                             headDim: attention.headDim, intermediate: a.mlp.inner, vocab: a.vocab,
                             eps: finalNorm.eps, embedding: embedding,
                             finalNorm: try floats(finalNorm.name + ".weight", a.hidden), lmHead: lmHead, layers: layers,
                             inverseFrequencies: RotaryEmbedding(rotary).inverseFrequencies, weightsDescription: description)
    }

    /// A model of the given shape with pseudo-random 4-bit group-`groupSize` layers and
    /// float16 embedding and LM head, built on the GPU (benchmarks: Llama-2-7B is hidden
    /// 4096, 32 layers, 32 heads, intermediate 11008, vocab 32000), every layer's attention
    /// within `window` positions when given.
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
        func norm(_ n: Int) throws -> DeviceBuffer { try device.upload((0..<n).map { _ in Float(0.5 + rng.nextUnit()) }) }
        let layers = try (0..<count).map { _ in
            CUDADecoderLayer(inputNorm: try norm(hidden), postAttentionNorm: try norm(hidden), queryNorm: nil, keyNorm: nil,
                             qkv: [PlacedLinear(linear: try q4(hidden, (heads + 2 * kvHeads) * headDim), column: 0)],
                             output: try q4(heads * headDim, hidden),
                             gateUp: [PlacedLinear(linear: try q4(hidden, 2 * intermediate), column: 0)],
                             down: try q4(intermediate, hidden), window: window)
        }
        let embedding = try device.allocate(bytes: vocab * hidden * 2)
        try backend.fillRandomHalves(embedding, seed: next(), lo: -1, hi: 1)
        let lmHead = try CUDALinear(backend: backend, randomHalfInFeatures: hidden, outFeatures: vocab, scale: 0.05, seed: next())
        let inv = stride(from: 0, to: headDim, by: 2).map { 1 / Float(pow(10000, Double($0) / Double(headDim))) }
        return try CUDAModel(backend: backend, hidden: hidden, heads: heads, kvHeads: kvHeads, headDim: headDim,
                             intermediate: intermediate, vocab: vocab, eps: 1e-5, embedding: embedding, finalNorm: try norm(hidden),
                             lmHead: lmHead, layers: layers, inverseFrequencies: inv,
                             weightsDescription: layers[0].down.kernelDescription + " (random)")
    }
}
