extension ModelFamily {
    /// Mistral: the llama layer with sliding-window attention.
    public static let mistral = ModelFamily.llamaStyle(name: "mistral", modelTypes: ["mistral"],
                                                       options: DecoderOptions(slidingWindow: .everyLayer))
}
