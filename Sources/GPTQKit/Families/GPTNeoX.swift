extension ModelFamily {
    /// GPT-NeoX (Pythia): per-head fused q/k/v, rotary halves over the leading
    /// partial_rotary_factor (rotary_pct, default 0.25) of each head, parallel residual from
    /// two norms unless use_parallel_residual is false, an untied head (`embed_out` in the files transformers writes, `lm_head` in GPTQModel's and in transformers 5's module tree;
    /// quantized checkpoints save it as `lm_head`, which GPTQModel loads: docs/FORMAT.md).
    public static let gptNeoX = ModelFamily(name: "gpt_neox", modelTypes: ["gpt_neox"]) { c in
        let hidden = try c.positiveInt("hidden_size"), heads = try c.positiveInt("num_attention_heads")
        guard hidden % heads == 0 else { throw c.error("num_attention_heads", "\(heads) heads do not divide hidden_size \(hidden)") }
        let headDim = hidden / heads, eps = try c.positiveDouble("layer_norm_eps", default: 1e-5)
        let bias = try c.bool("attention_bias", default: true)
        return Architecture(
            hidden: hidden, layers: try c.positiveInt("num_hidden_layers"), vocab: c.vocabSize,
            layerPrefix: "gpt_neox.layers", basePrefix: "gpt_neox", legacyNames: ["lm_head": "embed_out"],
            stem: Stem(embedding: "gpt_neox.embed_in", embeddingWidth: hidden),
            attention: AttentionSpec(heads: heads, kvHeads: heads, headDim: headDim, projection: .fused("attention.query_key_value", .perHead),
                                     output: "attention.dense", qkvBias: bias, outputBias: bias),
            positions: .rotary(RotarySpec(dimensions: Int(Double(headDim) * (try c.partialRotaryFactor(default: 0.25))),
                                          theta: try c.ropeTheta(), scaling: try c.ropeScaling())),
            mlp: MLPSpec(up: "mlp.dense_h_to_4h", down: "mlp.dense_4h_to_h",
                         activation: try .named(try c.string("hidden_act", default: "gelu"), field: "hidden_act", config: c),
                         inner: try c.positiveInt("intermediate_size", default: 4 * hidden), bias: true),
            block: BlockSpec(attentionNorm: .layer("input_layernorm", width: hidden, eps: eps),
                             mlpNorm: .layer("post_attention_layernorm", width: hidden, eps: eps),
                             residual: try c.bool("use_parallel_residual", default: true) ? .parallel : .sequential),
            head: Head(finalNorm: .layer("gpt_neox.final_layer_norm", width: hidden, eps: eps),
                       tied: try c.bool("tie_word_embeddings", default: false)),
            quantizationGroups: [["attention.query_key_value"], ["attention.dense"], ["mlp.dense_h_to_4h"], ["mlp.dense_4h_to_h"]])
    }
}
