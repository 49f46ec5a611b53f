import CKernels

/// Makes the linear layer for `module` (`self_attn.q_proj`, ... or `lm_head` with layer nil),
/// e.g. a GPTQ-quantized one; nil loads the float weight from the checkpoint as usual.
public typealias LinearFactory = (_ layer: Int?, _ module: String, _ inFeatures: Int, _ outFeatures: Int) throws -> LinearLayer?

/// A decoder-only language model loaded from a Hugging Face folder, its weights
/// memory-mapped from the safetensors in their stored dtype.
public final class LanguageModel: @unchecked Sendable {
    public let config: ModelConfig
    public let family: ModelFamily
    public let checkpoint: Checkpoint
    /// Token embedding [vocab, hidden], stored dtype.
    public let embedding: Tensor
    public let finalNorm: [Float]
    public var lmHead: LinearLayer
    let layers: [DecoderLayer]
    let shape: DecoderShape
    let rope: RotaryEmbedding

    private init(config: ModelConfig, family: ModelFamily, checkpoint: Checkpoint, embedding: Tensor,
                 finalNorm: [Float], lmHead: LinearLayer, layers: [DecoderLayer]) {
        self.config = config
        self.family = family
        self.checkpoint = checkpoint
        self.embedding = embedding
        self.finalNorm = finalNorm
        self.lmHead = lmHead
        self.layers = layers
        shape = DecoderShape(config: config)
        rope = RotaryEmbedding(config: config)
    }

    /// Loads float and GPTQ-quantized folders alike (see QuantizedCheckpoint).
    /// `weightsAsFloat16`: the embedding and the float linears' weights and biases are
    /// rounded to float16 (copies, for float32 and bfloat16 checkpoints), as the CUDA backend
    /// holds them; norm weights stay float32, as there.
    public static func load(folder: String, linearFactory: LinearFactory? = nil, weightsAsFloat16: Bool = false) throws -> LanguageModel {
        let config = try ModelConfig(folder: folder)
        let family = try ModelFamily.forConfig(config)
        let checkpoint = try Checkpoint(folder: folder)
        // A GPTQ folder's quantized linears load as GPTQLinear unless the caller chose a factory.
        let linearFactory = try linearFactory
            ?? QuantizedCheckpoint(folder: folder, checkpoint: checkpoint)?.linearFactory(family: family)
        let weights = WeightReader(checkpoint: checkpoint)
        let (hidden, vocab) = (config.hiddenSize, config.vocabSize)
        guard config.headDim % 2 == 0 else {
            throw GPTQError.badConfig(field: "head_dim", path: config.path, reason: "\(config.headDim) is odd; rotary embeddings need an even head size")
        }

        func linear(layer: Int?, _ module: LinearModule) throws -> LinearLayer {
            let (inFeatures, outFeatures) = (module.inFeatures(config), module.outFeatures(config))
            let name = layer.map { family.layerModule($0, module.name) } ?? module.name
            if let made = try linearFactory?(layer, module.name, inFeatures, outFeatures) {
                guard made.inFeatures == inFeatures, made.outFeatures == outFeatures else {
                    throw GPTQError.badTensor(name: name, path: folder,
                        reason: "the linear factory made a [\(made.outFeatures), \(made.inFeatures)] layer, expected [\(outFeatures), \(inFeatures)]")
                }
                return made
            }
            let weight = try weights.floatTensor(name + ".weight", shape: [outFeatures, inFeatures])
            var bias = module.hasBias(config) ? try weights.vector(name + ".bias", count: outFeatures) : nil
            if weightsAsFloat16 { bias?.withUnsafeMutableBufferPointer { ck_round_f16($0.baseAddress!, $0.count) } }
            return DenseLinear(weight: weightsAsFloat16 ? weight.converted(to: .f16) : weight, bias: bias)
        }

        let storedEmbedding = try weights.floatTensor(family.embedding + ".weight", shape: [vocab, hidden])
        let embedding = weightsAsFloat16 ? storedEmbedding.converted(to: .f16) : storedEmbedding
        let headModule = LinearModule(family.lmHead, in: { $0.hiddenSize }, out: { $0.vocabSize }, bias: { _ in false })
        let tied = family.tiesHead(config: config, checkpoint: checkpoint)
        let lmHead: LinearLayer
        if let made = try linearFactory?(nil, family.lmHead, hidden, vocab) {
            lmHead = made
        } else if tied {
            lmHead = DenseLinear(weight: embedding)
        } else {
            lmHead = try linear(layer: nil, headModule)
        }

        var layers: [DecoderLayer] = []
        for i in 0..<config.numLayers {
            func norm(_ module: String, _ count: Int) throws -> [Float] {
                try weights.vector(family.layerModule(i, module) + ".weight", count: count)
            }
            var linears: [String: LinearLayer] = [:]
            for module in family.linears { linears[module.name] = try linear(layer: i, module) }
            layers.append(DecoderLayer(
                inputNorm: try norm("input_layernorm", hidden),
                postAttentionNorm: try norm("post_attention_layernorm", hidden),
                queryNorm: family.options.qkNorm ? try norm("self_attn.q_norm", config.headDim) : nil,
                keyNorm: family.options.qkNorm ? try norm("self_attn.k_norm", config.headDim) : nil,
                slidingWindow: family.slidingWindow(layer: i, config: config),
                linears: linears))
        }
        return LanguageModel(config: config, family: family, checkpoint: checkpoint, embedding: embedding,
                             finalNorm: try weights.vector(family.finalNorm + ".weight", count: hidden),
                             lmHead: lmHead, layers: layers)
    }

    public var numLayers: Int { layers.count }
    public var vocabSize: Int { config.vocabSize }
    public var hiddenSize: Int { config.hiddenSize }

    /// The linear `module` (e.g. `self_attn.q_proj`) of layer `layer`.
    public func layerLinear(_ layer: Int, _ module: String) -> LinearLayer {
        guard let linear = layers[layer].linears[module] else {
            preconditionFailure("layer \(layer) has no linear '\(module)' (family \(family.name) has \(family.linears.map(\.name)))")
        }
        return linear
    }

    /// Replaces a linear (e.g. by its quantized version); it must keep the feature counts.
    public func setLayerLinear(_ layer: Int, _ module: String, _ linear: LinearLayer) {
        let old = layerLinear(layer, module)
        precondition(old.inFeatures == linear.inFeatures && old.outFeatures == linear.outFeatures,
                     "layer \(layer) \(module): replacement is [\(linear.outFeatures), \(linear.inFeatures)], expected [\(old.outFeatures), \(old.inFeatures)]")
        layers[layer].linears[module] = linear
    }

    /// Embedding rows of `tokens`, [tokens.count, hidden] float32.
    public func embed(_ tokens: [Int32]) -> [Float] {
        let h = hiddenSize
        return [Float](unsafeUninitializedCapacity: tokens.count * h) { buffer, initialized in
            for (t, token) in tokens.enumerated() {
                precondition(token >= 0 && Int(token) < vocabSize, "token \(token) outside the vocabulary of \(vocabSize)")
                embedding.readFloats(start: Int(token) * h, count: h, into: buffer.baseAddress! + t * h)
            }
            initialized = tokens.count * h
        }
    }

    /// Runs decoder layer `layer` on hidden states [tokens, hidden] of one sequence at positions
    /// 0..<tokens (causal, no cache), in place, calling observe(module, input rows, rows)
    /// before each linear in execution order. With `stopAfter`, the layer stops once that
    /// module's input has been observed (GPTQ needs nothing further; `hidden` is then left
    /// partly updated).
    public func layerForward(_ layer: Int, hidden: UnsafeMutablePointer<Float>, tokens: Int, stopAfter: String? = nil,
                             observe: ((String, UnsafePointer<Float>, Int) -> Void)?) {
        let kvCount = shape.kvHeads * tokens * shape.headDim
        let keys = UnsafeMutablePointer<Float>.allocate(capacity: max(1, kvCount))
        let values = UnsafeMutablePointer<Float>.allocate(capacity: max(1, kvCount))
        defer { keys.deallocate(); values.deallocate() }
        let (cos, sin) = rope.tables(start: 0, count: tokens)
        cos.withUnsafeBufferPointer { c in
            sin.withUnsafeBufferPointer { s in
                layers[layer].forward(hidden, tokens: tokens, position: 0,
                                      cache: KVCacheLayer(keys: keys, values: values, capacity: tokens),
                                      cos: c.baseAddress!, sin: s.baseAddress!, shape: shape,
                                      workspace: DecoderWorkspace(shape: shape, tokens: tokens), observe: observe,
                                      stopAfter: stopAfter)
            }
        }
    }

    /// Every linear layer, the LM head last.
    public var allLinears: [LinearLayer] {
        layers.flatMap { layer in family.linears.map { layer.linears[$0.name]! } } + [lmHead]
    }

    /// A CPU session holding up to `capacity` positions in its KV cache.
    public func makeSession(capacity: Int, arithmetic: CPUArithmetic = .float32) -> InferenceSession {
        CPUSession(model: self, capacity: capacity, arithmetic: arithmetic)
    }

    /// Final norm then LM head on `rows` hidden rows: [rows, vocab] logits (float32 under
    /// either arithmetic; `.cudaFloat16` rounds the LM head's input).
    func logits(_ hidden: UnsafePointer<Float>, rows: Int, arithmetic: CPUArithmetic) -> [Float] {
        let h = hiddenSize
        let normed = UnsafeMutablePointer<Float>.allocate(capacity: rows * h)
        defer { normed.deallocate() }
        finalNorm.withUnsafeBufferPointer { w in
            for r in 0..<rows { ck_rmsnorm(hidden + r * h, w.baseAddress!, normed + r * h, h, shape.eps) }
        }
        if arithmetic == .cudaFloat16 { ck_round_f16(normed, rows * h) }
        return [Float](unsafeUninitializedCapacity: rows * vocabSize) { buffer, initialized in
            lmHead.forward(normed, rows: rows, into: buffer.baseAddress!)
            initialized = rows * vocabSize
        }
    }
}

/// Reads model tensors with the checks loading needs: present, the expected shape, a float dtype.
struct WeightReader {
    let checkpoint: Checkpoint

    func floatTensor(_ name: String, shape: [Int]) throws -> Tensor {
        let t = try checkpoint.tensor(name, shape: shape)
        guard [.f16, .bf16, .f32].contains(t.dtype) else {
            throw GPTQError.badTensor(name: name, path: checkpoint.folder, reason: "dtype \(t.dtype.rawValue), expected F16, BF16 or F32")
        }
        return t
    }

    func vector(_ name: String, count: Int) throws -> [Float] {
        try floatTensor(name, shape: [count]).floats()
    }
}
