extension ModelFamily {
    /// Mistral: the llama layer with sliding-window attention in every layer.
    public static let mistral = llamaStyle(name: "mistral", modelTypes: ["mistral"], slidingWindow: .everyLayer)
}
