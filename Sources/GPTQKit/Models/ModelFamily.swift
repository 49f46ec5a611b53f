/// A linear module of a decoder layer, as the family declares it.
public struct LinearModule: Sendable {
    /// Name inside the layer, e.g. `self_attn.q_proj`.
    public let name: String
    public let inFeatures: @Sendable (ModelConfig) -> Int
    public let outFeatures: @Sendable (ModelConfig) -> Int
    public let hasBias: @Sendable (ModelConfig) -> Bool

    public init(_ name: String, in inFeatures: @escaping @Sendable (ModelConfig) -> Int,
                out outFeatures: @escaping @Sendable (ModelConfig) -> Int,
                bias hasBias: @escaping @Sendable (ModelConfig) -> Bool) {
        self.name = name
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.hasBias = hasBias
    }
}

public enum SlidingWindowRule: Sendable {
    case none
    /// Every layer (Mistral).
    case everyLayer
    /// Layers from config.max_window_layers on (Qwen2, Qwen3).
    case fromMaxWindowLayers
}

/// What distinguishes the llama-style families from one another.
public struct DecoderOptions: Sendable {
    /// q/k/v projections carry a bias whatever the config says (Qwen2).
    public var qkvBias = false
    /// Per-head RMSNorm of queries and keys before RoPE (`self_attn.q_norm`, `k_norm`: Qwen3).
    public var qkNorm = false
    /// Which layers limit attention to config.sliding_window past positions, when
    /// config.json has no `layer_types` list saying it per layer.
    public var slidingWindow = SlidingWindowRule.none

    public init(qkvBias: Bool = false, qkNorm: Bool = false, slidingWindow: SlidingWindowRule = .none) {
        self.qkvBias = qkvBias
        self.qkNorm = qkNorm
        self.slidingWindow = slidingWindow
    }
}

/// A model architecture declared as data, the way GPTQModel declares its models: which
/// tensors sit outside the decoder layers, what each layer holds, and in which groups
/// GPTQ quantizes a layer's linear modules (true-sequential order).
public struct ModelFamily: Sendable {
    public let name: String
    /// config.json `model_type` values this family loads.
    public let modelTypes: [String]
    public let embedding: String
    public let finalNorm: String
    public let lmHead: String
    /// Layer `i`'s tensors are named `\(layerPrefix).\(i).<module>.weight`.
    public let layerPrefix: String
    /// RMSNorm weights of each layer, in execution order.
    public let layerNorms: [String]
    /// Every linear module of a layer, in execution order.
    public let linears: [LinearModule]
    /// Groups of `linears` names quantized together, each after the previous group's
    /// outputs were recomputed with the quantized weights.
    public let quantizationOrder: [[String]]
    public let options: DecoderOptions

    /// Tensor name of a module of layer `layer`, e.g. `model.layers.3.self_attn.q_proj`.
    public func layerModule(_ layer: Int, _ module: String) -> String { "\(layerPrefix).\(layer).\(module)" }

    public func linear(_ name: String) -> LinearModule? { linears.first { $0.name == name } }

    /// The sliding window of layer `layer`, nil for full attention. transformers decides
    /// it from config.layer_types when present, else from the family's rule.
    public func slidingWindow(layer: Int, config: ModelConfig) -> Int? {
        guard let window = config.slidingWindow else { return nil }
        if let types = config.json["layer_types"]?.array, layer < types.count {
            return types[layer].string == "sliding_attention" ? window : nil
        }
        switch options.slidingWindow {
        case .none: return nil
        case .everyLayer: return window
        case .fromMaxWindowLayers: return layer >= (config.json["max_window_layers"]?.int ?? 28) ? window : nil
        }
    }

    /// Whether the LM head reuses the embedding: config.tie_word_embeddings, or no head tensor stored.
    public func tiesHead(config: ModelConfig, checkpoint: Checkpoint) -> Bool {
        config.tieWordEmbeddings || !checkpoint.contains(lmHead + ".weight")
    }

    /// Parameters of the architecture (not of how a checkpoint stores them): embedding,
    /// norms, linears with their biases, and the LM head unless it is the embedding.
    public func parameterCount(config: ModelConfig, tiedHead: Bool) -> Int {
        let (h, v) = (config.hiddenSize, config.vocabSize)
        let norms = 2 * h + (options.qkNorm ? 2 * config.headDim : 0)
        let linearParameters = linears.reduce(0) { sum, m in
            sum + m.inFeatures(config) * m.outFeatures(config) + (m.hasBias(config) ? m.outFeatures(config) : 0)
        }
        return v * h + h + (tiedHead ? 0 : v * h) + config.numLayers * (norms + linearParameters)
    }

    /// Families in the order `gptq inspect` lists them.
    public static let registered: [ModelFamily] = [.llama, .mistral, .qwen2, .qwen3]

    /// The family of `config.model_type`.
    public static func forConfig(_ config: ModelConfig) throws -> ModelFamily {
        if let family = registered.first(where: { $0.modelTypes.contains(config.modelType) }) { return family }
        let supported = registered.flatMap(\.modelTypes).joined(separator: ", ")
        throw GPTQError.badConfig(field: "model_type", path: config.path,
                                  reason: "unsupported model type '\(config.modelType)' (supported: \(supported))")
    }

    /// A family with the llama decoder layer (RMSNorm, GQA attention with RoPE, SwiGLU MLP),
    /// varied by `options`.
    static func llamaStyle(name: String, modelTypes: [String], options: DecoderOptions = .init()) -> ModelFamily {
        let qkvBias = options.qkvBias
        let hidden: @Sendable (ModelConfig) -> Int = { $0.hiddenSize }
        let qOut: @Sendable (ModelConfig) -> Int = { $0.numHeads * $0.headDim }
        let kvOut: @Sendable (ModelConfig) -> Int = { $0.numKVHeads * $0.headDim }
        let inner: @Sendable (ModelConfig) -> Int = { $0.intermediateSize }
        let attentionBias: @Sendable (ModelConfig) -> Bool = { $0.json["attention_bias"]?.bool ?? false }
        let projectionBias: @Sendable (ModelConfig) -> Bool = { qkvBias || attentionBias($0) }
        let mlpBias: @Sendable (ModelConfig) -> Bool = { $0.json["mlp_bias"]?.bool ?? false }
        return ModelFamily(
            name: name, modelTypes: modelTypes,
            embedding: "model.embed_tokens", finalNorm: "model.norm", lmHead: "lm_head", layerPrefix: "model.layers",
            layerNorms: ["input_layernorm", "post_attention_layernorm"]
                + (options.qkNorm ? ["self_attn.q_norm", "self_attn.k_norm"] : []),
            linears: [
                LinearModule("self_attn.q_proj", in: hidden, out: qOut, bias: projectionBias),
                LinearModule("self_attn.k_proj", in: hidden, out: kvOut, bias: projectionBias),
                LinearModule("self_attn.v_proj", in: hidden, out: kvOut, bias: projectionBias),
                LinearModule("self_attn.o_proj", in: qOut, out: hidden, bias: attentionBias),
                LinearModule("mlp.gate_proj", in: hidden, out: inner, bias: mlpBias),
                LinearModule("mlp.up_proj", in: hidden, out: inner, bias: mlpBias),
                LinearModule("mlp.down_proj", in: inner, out: hidden, bias: mlpBias),
            ],
            quantizationOrder: [
                ["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"],
                ["self_attn.o_proj"],
                ["mlp.up_proj", "mlp.gate_proj"],
                ["mlp.down_proj"],
            ],
            options: options)
    }
}
