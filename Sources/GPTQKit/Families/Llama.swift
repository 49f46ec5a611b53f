/// Which layers of a llama-style family limit attention to config.sliding_window past
/// positions, when config.json has no `layer_types` list saying it per layer.
enum SlidingWindowRule {
    case none
    /// Every layer (Mistral).
    case everyLayer
    /// Layers from config.max_window_layers on (Qwen2, Qwen3).
    case fromMaxWindowLayers
}

extension ModelFamily {
    /// Llama (and every checkpoint with its layout: SmolLM2, TinyLlama, ...).
    public static let llama = llamaStyle(name: "llama", modelTypes: ["llama"])

    /// AutoGPTQ's inside_layer_modules of the llama layer (the GPU benchmark quantizes its random layers in this order too).
    package static let llamaQuantizationGroups = [["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"], ["self_attn.o_proj"],
                                          ["mlp.up_proj", "mlp.gate_proj"], ["mlp.down_proj"]]

    /// The llama decoder layer: RMSNorm, grouped-query attention with rotary halves over the
    /// whole head, SwiGLU MLP, sequential residual. `qkvBias`: q/k/v carry a bias whatever
    /// the config says (Qwen2); `qkNorm`: per-head RMSNorm of queries and keys (Qwen3).
    static func llamaStyle(name: String, modelTypes: [String], qkvBias: Bool = false, qkNorm: Bool = false,
                           slidingWindow: SlidingWindowRule = .none) -> ModelFamily {
        ModelFamily(name: name, modelTypes: modelTypes) { c in
            let hidden = try c.positiveInt("hidden_size"), layers = try c.positiveInt("num_hidden_layers")
            let heads = try c.positiveInt("num_attention_heads")
            let headDim = try c.positiveInt("head_dim", default: hidden / heads)
            let eps = try c.positiveDouble("rms_norm_eps", default: 1e-6)
            let attentionBias = try c.bool("attention_bias", default: false)
            let window = try c.bool("use_sliding_window", default: true) ? try c.optionalInt("sliding_window") : nil
            let layerTypes = c.value("layer_types")?.array
            let maxWindowLayers = try c.optionalInt("max_window_layers") ?? 28
            let windows: [Int?] = (0..<layers).map { layer in
                guard let window else { return nil }
                if let layerTypes, layer < layerTypes.count { return layerTypes[layer].string == "sliding_attention" ? window : nil }
                switch slidingWindow {
                case .none: return nil
                case .everyLayer: return window
                case .fromMaxWindowLayers: return layer >= maxWindowLayers ? window : nil
                }
            }
            return Architecture(
                hidden: hidden, layers: layers, vocab: c.vocabSize, layerPrefix: "model.layers", basePrefix: "model",
                stem: Stem(embedding: "model.embed_tokens", embeddingWidth: hidden),
                attention: AttentionSpec(
                    heads: heads, kvHeads: try c.positiveInt("num_key_value_heads", default: heads), headDim: headDim,
                    projection: .separate(q: "self_attn.q_proj", k: "self_attn.k_proj", v: "self_attn.v_proj"),
                    output: "self_attn.o_proj", qkvBias: qkvBias || attentionBias, outputBias: attentionBias,
                    qkNorm: qkNorm ? (.rms("self_attn.q_norm", width: headDim, eps: eps), .rms("self_attn.k_norm", width: headDim, eps: eps)) : nil,
                    windows: windows),
                positions: .rotary(RotarySpec(dimensions: headDim, theta: try c.ropeTheta(), scaling: try c.ropeScaling())),
                mlp: MLPSpec(gate: "mlp.gate_proj", up: "mlp.up_proj", down: "mlp.down_proj",
                             activation: try .named(try c.string("hidden_act", default: "silu"), field: "hidden_act", config: c),
                             inner: try c.positiveInt("intermediate_size", default: 4 * hidden), bias: try c.bool("mlp_bias", default: false)),
                block: BlockSpec(attentionNorm: .rms("input_layernorm", width: hidden, eps: eps),
                                 mlpNorm: .rms("post_attention_layernorm", width: hidden, eps: eps), residual: .sequential),
                head: Head(finalNorm: .rms("model.norm", width: hidden, eps: eps), tied: try c.bool("tie_word_embeddings", default: false)),
                quantizationGroups: llamaQuantizationGroups)
        }
    }
}
