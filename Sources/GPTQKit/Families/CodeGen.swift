extension ModelFamily {
    /// CodeGen: GPT-J's block with one fused q/k/v (`qkv_proj`) laid out in 4 blocks of
    /// [q, v, k] (mp_num = 4).
    public static let codegen = codegenStyle(name: "codegen", modelTypes: ["codegen"])

    static func codegenStyle(name: String, modelTypes: [String]) -> ModelFamily {
        gptjStyle(name: name, modelTypes: modelTypes, projection: .fused("attn.qkv_proj", .codegen(blocks: 4)), qkvGroup: ["attn.qkv_proj"])
    }
}
