extension ModelFamily {
    /// Qwen3: the llama layer with a per-head RMSNorm of queries and keys before RoPE,
    /// and head_dim taken from the config (not hidden/heads).
    public static let qwen3 = ModelFamily.llamaStyle(name: "qwen3", modelTypes: ["qwen3"],
                                                     options: DecoderOptions(qkNorm: true, slidingWindow: .fromMaxWindowLayers))
}
