extension ModelFamily {
    /// Falcon: one fused q/k/v laid out by the config (new_decoder_architecture: grouped by
    /// key/value head; multi_query: [q | k | v] with one key/value head; else per head),
    /// rotary halves or (alibi) ALiBi scaled by 1/sqrt(head_dim) in bfloat16 as transformers
    /// computes it, attention and MLP in parallel from one norm or two (ln_attn, ln_mlp), or
    /// sequential (parallel_attn false, Falcon-RW).
    public static let falcon = ModelFamily(name: "falcon", modelTypes: ["falcon", "RefinedWeb", "RefinedWebModel"]) { c in
        let hidden = try c.positiveInt("hidden_size", "n_embed"), heads = try c.positiveInt("num_attention_heads", "n_head")
        guard hidden % heads == 0 else { throw c.error("num_attention_heads", "\(heads) heads do not divide hidden_size \(hidden)") }
        let headDim = hidden / heads, eps = try c.positiveDouble("layer_norm_epsilon", default: 1e-5)
        let newArchitecture = try c.bool("new_decoder_architecture", default: false)
        let multiQuery = try c.bool("multi_query", default: true), parallel = try c.bool("parallel_attn", default: true)
        let alibi = try c.bool("alibi", default: false), bias = try c.bool("bias", default: false)
        let kvHeads = newArchitecture || !multiQuery ? try c.positiveInt("num_kv_heads", "n_head_kv", default: heads) : 1
        let layerNorms = try c.positiveInt("num_ln_in_parallel_attn", default: newArchitecture ? 2 : 1)
        if newArchitecture && !parallel { throw c.error("parallel_attn", "false with new_decoder_architecture, which transformers cannot run either") }
        func norm(_ name: String) -> NormSpec { .layer(name, width: hidden, eps: eps) }
        let block = !parallel ? BlockSpec(attentionNorm: norm("input_layernorm"), mlpNorm: norm("post_attention_layernorm"), residual: .sequential)
            : newArchitecture && layerNorms == 2 ? BlockSpec(attentionNorm: norm("ln_attn"), mlpNorm: norm("ln_mlp"), residual: .parallel)
            : BlockSpec(attentionNorm: norm("input_layernorm"), mlpNorm: nil, residual: .parallel)
        return Architecture(
            hidden: hidden, layers: try c.positiveInt("num_hidden_layers", "n_layer"), vocab: c.vocabSize,
            layerPrefix: "transformer.h", basePrefix: "transformer",
            stem: Stem(embedding: "transformer.word_embeddings", embeddingWidth: hidden),
            attention: AttentionSpec(heads: heads, kvHeads: kvHeads, headDim: headDim,
                                     projection: .fused("self_attention.query_key_value", newArchitecture ? .grouped : multiQuery ? .contiguous : .perHead),
                                     output: "self_attention.dense", qkvBias: bias, outputBias: bias),
            positions: alibi ? .alibi(ALiBiSpec(scale: 1 / Float(headDim).squareRoot(), bfloat16: true))
                : .rotary(RotarySpec(dimensions: headDim, theta: try c.ropeTheta(), scaling: try c.ropeScaling())),
            mlp: MLPSpec(up: "mlp.dense_h_to_4h", down: "mlp.dense_4h_to_h",
                         activation: try .named(try c.string("activation", default: "gelu"), field: "activation", config: c),
                         inner: try c.positiveInt("ffn_hidden_size", default: 4 * hidden), bias: bias),
            block: block,
            head: Head(finalNorm: norm("transformer.ln_f"), tied: try c.bool("tie_word_embeddings", default: true)),
            quantizationGroups: [["self_attention.query_key_value"], ["self_attention.dense"], ["mlp.dense_h_to_4h"], ["mlp.dense_4h_to_h"]])
    }
}
