extension ModelFamily {
    /// GPT-2: learned positions, Conv1D weights ([in, out]), one fused q/k/v (`c_attn`,
    /// contiguous), LayerNorm, GELU (tanh), tied head.
    public static let gpt2 = ModelFamily(name: "gpt2", modelTypes: ["gpt2"]) { c in
        let hidden = try c.positiveInt("n_embd", "hidden_size"), heads = try c.positiveInt("n_head", "num_attention_heads")
        guard hidden % heads == 0 else { throw c.error("n_head", "\(heads) heads do not divide n_embd \(hidden)") }
        let eps = try c.positiveDouble("layer_norm_epsilon", default: 1e-5)
        return Architecture(
            hidden: hidden, layers: try c.positiveInt("n_layer", "num_hidden_layers"), vocab: c.vocabSize,
            layerPrefix: "transformer.h", basePrefix: "transformer", weightLayout: .conv1D,
            stem: Stem(embedding: "transformer.wte", embeddingWidth: hidden,
                       learnedPositions: LearnedPositions(name: "transformer.wpe", count: try c.positiveInt("n_positions", default: 1024))),
            attention: AttentionSpec(heads: heads, kvHeads: heads, headDim: hidden / heads, projection: .fused("attn.c_attn", .contiguous),
                                     output: "attn.c_proj", qkvBias: true, outputBias: true,
                                     scale: try c.bool("scale_attn_weights", default: true) ? nil : 1,
                                     scalesByInverseLayer: try c.bool("scale_attn_by_inverse_layer_idx", default: false)),
            positions: .none,
            mlp: MLPSpec(up: "mlp.c_fc", down: "mlp.c_proj",
                         activation: try .named(try c.string("activation_function", default: "gelu_new"), field: "activation_function", config: c),
                         inner: try c.positiveInt("n_inner", default: 4 * hidden), bias: true),
            block: BlockSpec(attentionNorm: .layer("ln_1", width: hidden, eps: eps), mlpNorm: .layer("ln_2", width: hidden, eps: eps),
                             residual: .sequential),
            head: Head(finalNorm: .layer("transformer.ln_f", width: hidden, eps: eps), tied: try c.bool("tie_word_embeddings", default: true)),
            quantizationGroups: [["attn.c_attn"], ["attn.c_proj"], ["mlp.c_fc"], ["mlp.c_proj"]])
    }
}
