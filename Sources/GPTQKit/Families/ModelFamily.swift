/// A model architecture declared as data: the config keys it reads (with transformers'
/// defaults), its tensor names, weight layout, norms, activation, positions, attention and
/// fused q/k/v layout, residual style, stem, head and GPTQ's true-sequential groups, as one
/// `Architecture` per config. The block engine runs any architecture, so a family is one
/// declaration in its own file.
public struct ModelFamily: Sendable {
    public let name: String
    /// config.json `model_type` values this family loads.
    public let modelTypes: [String]
    let declaration: @Sendable (ModelConfig) throws -> Architecture

    public init(name: String, modelTypes: [String], declaration: @escaping @Sendable (ModelConfig) throws -> Architecture) {
        self.name = name
        self.modelTypes = modelTypes
        self.declaration = declaration
    }

    /// The architecture `config` makes, checked; errors name the config field.
    public func architecture(_ config: ModelConfig) throws -> Architecture {
        var architecture = try declaration(config)
        try architecture.validate(config)
        if let table = architecture.stem.learnedPositions {
            architecture.maxPositions = table.count - table.offset
        } else if let positions = try config.optionalInt("max_position_embeddings", "n_positions", "n_ctx", "seq_length"), positions > 0 {
            architecture.maxPositions = positions
        }
        return architecture
    }

    /// Families in the order `gptq inspect` lists them.
    public static let registered: [ModelFamily] = [
        .llama, .mistral, .qwen2, .qwen3, .gpt2, .gptBigCode, .gptNeoX, .gptj, .codegen, .moss, .opt, .bloom, .falcon,
    ]

    /// The family of `config.model_type`.
    public static func forConfig(_ config: ModelConfig) throws -> ModelFamily {
        if let family = registered.first(where: { $0.modelTypes.contains(config.modelType) }) { return family }
        let supported = registered.flatMap(\.modelTypes).joined(separator: ", ")
        throw config.error("model_type", "unsupported model type '\(config.modelType)' (supported: \(supported))")
    }
}
