extension ModelFamily {
    /// Qwen3: the llama layer with a per-head RMSNorm of queries and keys before the rotation,
    /// head_dim taken from the config (not hidden/heads).
    public static let qwen3 = llamaStyle(name: "qwen3", modelTypes: ["qwen3"], qkNorm: true, slidingWindow: .fromMaxWindowLayers)
}
