extension ModelFamily {
    /// OPT: learned positions with an offset of 2, separate q/k/v, ReLU MLP (fc1/fc2),
    /// pre-norm or, with do_layer_norm_before false (OPT-350M), post-norm; project_in and
    /// project_out when word_embed_proj_dim differs from hidden_size.
    public static let opt = ModelFamily(name: "opt", modelTypes: ["opt"]) { c in
        let hidden = try c.positiveInt("hidden_size"), heads = try c.positiveInt("num_attention_heads")
        guard hidden % heads == 0 else { throw c.error("num_attention_heads", "\(heads) heads do not divide hidden_size \(hidden)") }
        let embeddingWidth = try c.positiveInt("word_embed_proj_dim", default: hidden)
        let preNorm = try c.bool("do_layer_norm_before", default: true)
        let bias = try c.bool("enable_bias", default: true), affine = try c.bool("layer_norm_elementwise_affine", default: true)
        let projected = embeddingWidth != hidden
        let finalNorm = try preNorm && !c.bool("_remove_final_layer_norm", default: false)
        // OPT's LayerNorms use PyTorch's default eps; the config has no key for it.
        func norm(_ name: String) -> NormSpec { .layer(name, width: hidden, eps: 1e-5, affine: affine) }
        return Architecture(
            hidden: hidden, layers: try c.positiveInt("num_hidden_layers"), vocab: c.vocabSize,
            layerPrefix: "model.decoder.layers", basePrefix: "model",
            stem: Stem(embedding: "model.decoder.embed_tokens", embeddingWidth: embeddingWidth,
                       learnedPositions: LearnedPositions(name: "model.decoder.embed_positions",
                                                          count: try c.positiveInt("max_position_embeddings", default: 2048) + 2, offset: 2),
                       projectIn: projected ? "model.decoder.project_in" : nil),
            attention: AttentionSpec(heads: heads, kvHeads: heads, headDim: hidden / heads,
                                     projection: .separate(q: "self_attn.q_proj", k: "self_attn.k_proj", v: "self_attn.v_proj"),
                                     output: "self_attn.out_proj", qkvBias: bias, outputBias: bias),
            positions: .none,
            mlp: MLPSpec(up: "fc1", down: "fc2",
                         activation: try .named(try c.string("activation_function", default: "relu"), field: "activation_function", config: c),
                         inner: try c.positiveInt("ffn_dim", default: 4 * hidden), bias: bias),
            block: BlockSpec(attentionNorm: norm("self_attn_layer_norm"), mlpNorm: norm("final_layer_norm"),
                             residual: preNorm ? .sequential : .postNorm),
            head: Head(finalNorm: finalNorm ? norm("model.decoder.final_layer_norm") : nil,
                       projectOut: projected ? "model.decoder.project_out" : nil, tied: try c.bool("tie_word_embeddings", default: true)),
            quantizationGroups: [["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"], ["self_attn.out_proj"], ["fc1"], ["fc2"]])
    }
}
