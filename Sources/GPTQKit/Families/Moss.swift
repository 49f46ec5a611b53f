extension ModelFamily {
    /// MOSS: CodeGen's architecture and tensor names under its own model_type (its
    /// checkpoints load with trust_remote_code in transformers).
    public static let moss = codegenStyle(name: "moss", modelTypes: ["moss"])
}
