/// How rotary position embeddings scale their frequencies (config.json's `rope_scaling`,
/// or `rope_parameters` in transformers 5).
public enum RopeScaling: Equatable, Sendable {
    case none
    case linear(factor: Double)
    /// Llama 3.1's piecewise frequency rescaling.
    case llama3(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositions: Int)
}

/// The fields of a Hugging Face config.json that decoder-only models use. Families
/// read what they need; the raw document stays available in `json`.
public struct ModelConfig: Sendable {
    public let path: String
    public let json: JSON
    public let modelType: String
    public let hiddenSize: Int
    public let intermediateSize: Int
    public let numLayers: Int
    public let numHeads: Int
    public let numKVHeads: Int
    public let headDim: Int
    public let vocabSize: Int
    public let rmsNormEps: Double
    public let ropeTheta: Double
    public let ropeScaling: RopeScaling
    public let maxPositionEmbeddings: Int
    public let tieWordEmbeddings: Bool
    public let hiddenAct: String
    /// Sliding-window attention span, where the family uses one.
    public let slidingWindow: Int?
    public let bosTokenId: Int?
    public let eosTokenIds: [Int]

    /// Reads `config.json` from a model folder.
    public init(folder: String) throws {
        try self.init(path: FileIO.join(folder, "config.json"))
    }

    public init(path: String) throws {
        guard FileIO.exists(path) else { throw GPTQError.invalidFile(path: path, reason: "missing") }
        try self.init(json: try JSON.read(path: path), path: path)
    }

    public init(json: JSON, path: String) throws {
        self.path = path
        self.json = json
        func field(_ name: String) -> JSON? { json[name].flatMap { $0.isNull ? nil : $0 } }
        func int(_ name: String) throws -> Int? {
            guard let v = field(name) else { return nil }
            guard let i = v.int, i >= 0 else { throw GPTQError.badConfig(field: name, path: path, reason: "expected a non-negative integer") }
            return i
        }
        func required(_ name: String) throws -> Int {
            guard let v = try int(name) else { throw GPTQError.badConfig(field: name, path: path, reason: "missing") }
            guard v > 0 else { throw GPTQError.badConfig(field: name, path: path, reason: "must be positive") }
            return v
        }
        func double(_ name: String, in object: JSON? = nil) throws -> Double? {
            guard let v = (object ?? json)[name], !v.isNull else { return nil }
            guard let d = v.double else { throw GPTQError.badConfig(field: name, path: path, reason: "expected a number") }
            return d
        }
        guard let type = field("model_type")?.string else {
            throw GPTQError.badConfig(field: "model_type", path: path, reason: "missing")
        }
        modelType = type
        hiddenSize = try required("hidden_size")
        intermediateSize = try int("intermediate_size") ?? 4 * hiddenSize
        numLayers = try required("num_hidden_layers")
        numHeads = try required("num_attention_heads")
        numKVHeads = try int("num_key_value_heads") ?? numHeads
        headDim = try int("head_dim") ?? hiddenSize / numHeads
        vocabSize = try required("vocab_size")
        guard numHeads % numKVHeads == 0 else {
            throw GPTQError.badConfig(field: "num_key_value_heads", path: path, reason: "\(numKVHeads) does not divide num_attention_heads \(numHeads)")
        }
        rmsNormEps = try double("rms_norm_eps") ?? 1e-6
        maxPositionEmbeddings = try int("max_position_embeddings") ?? 2048
        tieWordEmbeddings = field("tie_word_embeddings")?.bool ?? false
        hiddenAct = field("hidden_act")?.string ?? "silu"
        slidingWindow = (field("use_sliding_window")?.bool == false) ? nil : try int("sliding_window")
        bosTokenId = try int("bos_token_id")
        if let list = field("eos_token_id")?.array { eosTokenIds = list.compactMap(\.int) }
        else { eosTokenIds = (try int("eos_token_id")).map { [$0] } ?? [] }

        // transformers 5 moves rope_theta and the scaling into `rope_parameters`.
        let rope = field("rope_parameters") ?? field("rope_scaling")
        ropeTheta = try double("rope_theta", in: field("rope_parameters")) ?? double("rope_theta") ?? 10000
        let ropeField = field("rope_parameters") != nil ? "rope_parameters" : "rope_scaling"
        let ropeType = rope?["rope_type"]?.string ?? rope?["type"]?.string ?? "default"
        switch ropeType {
        case "default": ropeScaling = .none
        case "linear":
            guard let f = try double("factor", in: rope) else { throw GPTQError.badConfig(field: "\(ropeField).factor", path: path, reason: "missing") }
            ropeScaling = .linear(factor: f)
        case "llama3":
            guard let f = try double("factor", in: rope), let lo = try double("low_freq_factor", in: rope),
                  let hi = try double("high_freq_factor", in: rope), let orig = rope?["original_max_position_embeddings"]?.int else {
                throw GPTQError.badConfig(field: ropeField, path: path, reason: "llama3 scaling needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings")
            }
            ropeScaling = .llama3(factor: f, lowFreqFactor: lo, highFreqFactor: hi, originalMaxPositions: orig)
        default:
            throw GPTQError.badConfig(field: "\(ropeField).rope_type", path: path, reason: "unsupported rope type '\(ropeType)' (supported: default, linear, llama3)")
        }
    }
}
