extension ModelFamily {
    /// Qwen2: the llama layer with biases on q/k/v, sliding windows from max_window_layers on.
    public static let qwen2 = llamaStyle(name: "qwen2", modelTypes: ["qwen2"], qkvBias: true, slidingWindow: .fromMaxWindowLayers)
}
