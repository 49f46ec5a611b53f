extension ModelFamily {
    /// BLOOM: ALiBi, a LayerNorm after the embedding, per-head fused q/k/v, GELU (tanh),
    /// tied head; apply_residual_connection_post_layernorm takes the residual after the norms.
    public static let bloom = ModelFamily(name: "bloom", modelTypes: ["bloom"]) { c in
        let hidden = try c.positiveInt("hidden_size", "n_embed"), heads = try c.positiveInt("n_head", "num_attention_heads")
        guard hidden % heads == 0 else { throw c.error("n_head", "\(heads) heads do not divide hidden_size \(hidden)") }
        let eps = try c.positiveDouble("layer_norm_epsilon", default: 1e-5)
        return Architecture(
            hidden: hidden, layers: try c.positiveInt("n_layer", "num_hidden_layers"), vocab: c.vocabSize,
            layerPrefix: "transformer.h", basePrefix: "transformer",
            stem: Stem(embedding: "transformer.word_embeddings", embeddingWidth: hidden,
                       norm: .layer("transformer.word_embeddings_layernorm", width: hidden, eps: eps)),
            attention: AttentionSpec(heads: heads, kvHeads: heads, headDim: hidden / heads,
                                     projection: .fused("self_attention.query_key_value", .perHead),
                                     output: "self_attention.dense", qkvBias: true, outputBias: true),
            positions: .alibi(ALiBiSpec()),
            mlp: MLPSpec(up: "mlp.dense_h_to_4h", down: "mlp.dense_4h_to_h", activation: .geluTanh, inner: 4 * hidden, bias: true),
            block: BlockSpec(attentionNorm: .layer("input_layernorm", width: hidden, eps: eps),
                             mlpNorm: .layer("post_attention_layernorm", width: hidden, eps: eps),
                             residual: try c.bool("apply_residual_connection_post_layernorm", default: false) ? .normedResidual : .sequential),
            head: Head(finalNorm: .layer("transformer.ln_f", width: hidden, eps: eps), tied: try c.bool("tie_word_embeddings", default: true)),
            quantizationGroups: [["self_attention.query_key_value"], ["self_attention.dense"], ["mlp.dense_h_to_4h"], ["mlp.dense_4h_to_h"]])
    }
}
