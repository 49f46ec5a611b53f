/// How rotary position embeddings scale their frequencies (config.json's `rope_scaling`,
/// or `rope_parameters` in transformers 5).
public enum RopeScaling: Equatable, Sendable {
    case none
    case linear(factor: Double)
    /// Llama 3.1's piecewise frequency rescaling.
    case llama3(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositions: Int)
}

/// A Hugging Face config.json. Every family names its own keys (GPT-2's `n_embd` is
/// Llama's `hidden_size`): the typed readers take a key and its aliases, first present
/// wins, and their errors name the field and the file. The fields every family shares
/// (type, vocabulary, special tokens) are read here.
public struct ModelConfig: Sendable {
    public let path: String
    public let json: JSON
    public let modelType: String
    public private(set) var vocabSize = 0
    public private(set) var bosTokenId: Int?
    public private(set) var eosTokenIds: [Int] = []

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
        guard let type = json["model_type"]?.string else {
            throw GPTQError.badConfig(field: "model_type", path: path, reason: "missing")
        }
        modelType = type
        vocabSize = try positiveInt("vocab_size")
        bosTokenId = try optionalInt("bos_token_id")
        if let list = value("eos_token_id")?.array {
            eosTokenIds = try list.map { item in
                guard let id = item.int, id >= 0 else { throw GPTQError.badConfig(field: "eos_token_id", path: path, reason: "expected non-negative integers") }
                return id
            }
        } else {
            eosTokenIds = (try optionalInt("eos_token_id")).map { [$0] } ?? []
        }
    }

    /// The value of the first of `keys` present and not null.
    public func value(_ keys: String...) -> JSON? { value(keys) }

    func value(_ keys: [String]) -> JSON? {
        for key in keys { if let v = json[key], !v.isNull { return v } }
        return nil
    }

    /// The first of `keys` present, a non-negative integer; nil when none is.
    public func optionalInt(_ keys: String...) throws -> Int? {
        guard let key = keys.first(where: { json[$0].map { !$0.isNull } ?? false }) else { return nil }
        guard let i = json[key]!.int, i >= 0 else { throw GPTQError.badConfig(field: key, path: path, reason: "expected a non-negative integer") }
        return i
    }

    /// The first of `keys` present, a positive integer (`fallback` when none is; an error naming the first key without one).
    public func positiveInt(_ keys: String..., default fallback: Int? = nil) throws -> Int {
        guard let key = keys.first(where: { json[$0].map { !$0.isNull } ?? false }) else {
            guard let fallback else { throw GPTQError.badConfig(field: keys[0], path: path, reason: "missing") }
            return fallback
        }
        guard let i = json[key]!.int, i > 0 else { throw GPTQError.badConfig(field: key, path: path, reason: "expected a positive integer") }
        return i
    }

    /// The first of `keys` present, a finite number (`fallback` when none is).
    public func double(_ keys: String..., in object: String? = nil, default fallback: Double? = nil) throws -> Double? {
        let source = object.flatMap { value($0) } ?? (object == nil ? json : .null)
        guard let key = keys.first(where: { source[$0].map { !$0.isNull } ?? false }) else { return fallback }
        guard let d = source[key]!.double, d.isFinite else {
            throw GPTQError.badConfig(field: object.map { "\($0).\(key)" } ?? key, path: path, reason: "expected a finite number")
        }
        return d
    }

    /// A positive finite number: norm epsilons, rotary bases.
    public func positiveDouble(_ keys: String..., in object: String? = nil, default fallback: Double) throws -> Double {
        let source = object.flatMap { value($0) } ?? (object == nil ? json : .null)
        guard let key = keys.first(where: { source[$0].map { !$0.isNull } ?? false }) else { return fallback }
        guard let d = source[key]!.double, d.isFinite, d > 0 else {
            throw GPTQError.badConfig(field: object.map { "\($0).\(key)" } ?? key, path: path, reason: "expected a positive number")
        }
        return d
    }

    /// The first of `keys` present, a boolean (`fallback` when none is).
    public func bool(_ keys: String..., default fallback: Bool) throws -> Bool {
        guard let key = keys.first(where: { json[$0].map { !$0.isNull } ?? false }) else { return fallback }
        guard let b = json[key]!.bool else { throw GPTQError.badConfig(field: key, path: path, reason: "expected true or false") }
        return b
    }

    /// The first of `keys` present, a string (`fallback` when none is).
    public func string(_ keys: String..., default fallback: String) throws -> String {
        guard let key = keys.first(where: { json[$0].map { !$0.isNull } ?? false }) else { return fallback }
        guard let s = json[key]!.string else { throw GPTQError.badConfig(field: key, path: path, reason: "expected a string") }
        return s
    }

    /// An error about field `field` of this file.
    public func error(_ field: String, _ reason: String) -> GPTQError { .badConfig(field: field, path: path, reason: reason) }

    /// The rotary base: `rope_parameters.rope_theta` (transformers 5), else `rope_theta`
    /// (GPT-NeoX's older configs: `rotary_emb_base`), else `fallback`.
    public func ropeTheta(default fallback: Double = 10000) throws -> Double {
        if let theta = try double("rope_theta", in: "rope_parameters") {
            guard theta > 0 else { throw error("rope_parameters.rope_theta", "expected a positive number") }
            return theta
        }
        return try positiveDouble("rope_theta", "rotary_emb_base", default: fallback)
    }

    /// The rotary frequency scaling of `rope_parameters` (transformers 5) or `rope_scaling`.
    public func ropeScaling() throws -> RopeScaling {
        let field = value("rope_parameters") != nil ? "rope_parameters" : "rope_scaling"
        guard let rope = value(field) else { return .none }
        let type = rope["rope_type"]?.string ?? rope["type"]?.string ?? "default"
        func number(_ key: String) throws -> Double {
            guard let v = try double(key, in: field) else { throw error("\(field).\(key)", "missing (needed by \(type) scaling)") }
            guard v > 0 else { throw error("\(field).\(key)", "expected a positive number") }
            return v
        }
        switch type {
        case "default": return .none
        case "linear": return .linear(factor: try number("factor"))
        case "llama3":
            guard let original = rope["original_max_position_embeddings"]?.int, original > 0 else {
                throw error("\(field).original_max_position_embeddings", "missing (needed by llama3 scaling)")
            }
            return .llama3(factor: try number("factor"), lowFreqFactor: try number("low_freq_factor"),
                           highFreqFactor: try number("high_freq_factor"), originalMaxPositions: original)
        default:
            throw error("\(field).rope_type", "unsupported rope type '\(type)' (supported: default, linear, llama3)")
        }
    }

    /// The share of each head that rotary embeddings rotate: `rope_parameters.partial_rotary_factor`
    /// (transformers 5), else `partial_rotary_factor` or `rotary_pct`, else `fallback`.
    public func partialRotaryFactor(default fallback: Double) throws -> Double {
        let factor = try double("partial_rotary_factor", in: "rope_parameters")
            ?? double("partial_rotary_factor", "rotary_pct", default: fallback)!
        guard factor > 0, factor <= 1 else { throw error("partial_rotary_factor", "\(factor) is outside (0, 1]") }
        return factor
    }
}
