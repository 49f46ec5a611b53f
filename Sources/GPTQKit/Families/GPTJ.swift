extension ModelFamily {
    /// GPT-J: separate q/k/v without biases, rotary over the leading rotary_dim dimensions
    /// of each head in interleaved pairs (base 10000), attention and MLP in parallel from
    /// one norm, an untied LM head with a bias.
    public static let gptj = gptjStyle(name: "gptj", modelTypes: ["gptj"],
                                       projection: .separate(q: "attn.q_proj", k: "attn.k_proj", v: "attn.v_proj"),
                                       qkvGroup: ["attn.k_proj", "attn.v_proj", "attn.q_proj"])

    /// GPT-J's block with the q/k/v projection `projection` (CodeGen fuses it).
    static func gptjStyle(name: String, modelTypes: [String], projection: QKVProjection, qkvGroup: [String]) -> ModelFamily {
        ModelFamily(name: name, modelTypes: modelTypes) { c in
            let hidden = try c.positiveInt("n_embd", "hidden_size"), heads = try c.positiveInt("n_head", "num_attention_heads")
            guard hidden % heads == 0 else { throw c.error("n_head", "\(heads) heads do not divide n_embd \(hidden)") }
            let headDim = hidden / heads, eps = try c.positiveDouble("layer_norm_epsilon", default: 1e-5)
            return Architecture(
                hidden: hidden, layers: try c.positiveInt("n_layer", "num_hidden_layers"), vocab: c.vocabSize,
                layerPrefix: "transformer.h", basePrefix: "transformer",
                stem: Stem(embedding: "transformer.wte", embeddingWidth: hidden),
                attention: AttentionSpec(heads: heads, kvHeads: heads, headDim: headDim, projection: projection,
                                         output: "attn.out_proj", qkvBias: false, outputBias: false),
                positions: .rotary(RotarySpec(dimensions: try c.positiveInt("rotary_dim", default: headDim), interleaved: true, theta: 10000)),
                mlp: MLPSpec(up: "mlp.fc_in", down: "mlp.fc_out",
                             activation: try .named(try c.string("activation_function", default: "gelu_new"), field: "activation_function", config: c),
                             inner: try c.positiveInt("n_inner", default: 4 * hidden), bias: true),
                block: BlockSpec(attentionNorm: .layer("ln_1", width: hidden, eps: eps), mlpNorm: nil, residual: .parallel),
                head: Head(finalNorm: .layer("transformer.ln_f", width: hidden, eps: eps), bias: true,
                           tied: try c.bool("tie_word_embeddings", default: false)),
                quantizationGroups: [qkvGroup, ["attn.out_proj"], ["mlp.fc_in"], ["mlp.fc_out"]])
        }
    }
}
