extension ModelFamily {
    /// Qwen2: the llama layer with biases on q/k/v (sliding window per config.layer_types).
    public static let qwen2 = ModelFamily.llamaStyle(name: "qwen2", modelTypes: ["qwen2"],
                                                     options: DecoderOptions(qkvBias: true, slidingWindow: .fromMaxWindowLayers))
}
