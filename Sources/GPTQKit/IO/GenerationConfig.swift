/// The decoding defaults a model ships in generation_config.json. The CLI starts from
/// these and lets flags override them, as `model.generate()` does in transformers.
public struct GenerationConfig: Equatable, Sendable {
    public var bosTokenId: Int?
    /// Every id that ends generation (`eos_token_id` may be an integer or a list).
    public var eosTokenIds: [Int]
    public var padTokenId: Int?
    /// False means greedy decoding whatever the temperature says (transformers' rule).
    public var doSample: Bool
    public var temperature: Double
    /// 0 disables top-k.
    public var topK: Int
    public var topP: Double
    public var repetitionPenalty: Double
    public var maxNewTokens: Int?

    /// transformers' defaults, used for fields a file leaves out and when there is no file.
    public init() {
        bosTokenId = nil
        eosTokenIds = []
        padTokenId = nil
        doSample = false
        temperature = 1
        topK = 50
        topP = 1
        repetitionPenalty = 1
        maxNewTokens = nil
    }

    /// Reads `generation_config.json` from a model folder; a folder without one gets the defaults.
    public init(folder: String) throws {
        let path = FileIO.join(folder, "generation_config.json")
        if FileIO.exists(path) { try self.init(path: path) } else { self.init() }
    }

    public init(path: String) throws {
        try self.init(json: try JSON.read(path: path), path: path)
    }

    public init(json: JSON, path: String) throws {
        self.init()
        guard json.object != nil else { throw GPTQError.badConfig(field: "(root)", path: path, reason: "expected an object") }
        let fields = ConfigFields(json: json, path: path)
        bosTokenId = try fields.tokenId("bos_token_id")
        eosTokenIds = try fields.tokenIds("eos_token_id")
        padTokenId = try fields.tokenId("pad_token_id")
        doSample = try fields.bool("do_sample") ?? doSample
        temperature = try fields.number("temperature", atLeast: 0) ?? temperature
        topK = try fields.nonNegativeInt("top_k") ?? topK
        topP = try fields.number("top_p", atLeast: 0) ?? topP
        guard topP <= 1 else { throw GPTQError.badConfig(field: "top_p", path: path, reason: "must be in [0, 1], got \(topP)") }
        repetitionPenalty = try fields.number("repetition_penalty", atLeast: 0) ?? repetitionPenalty
        guard repetitionPenalty > 0 else { throw GPTQError.badConfig(field: "repetition_penalty", path: path, reason: "must be positive") }
        maxNewTokens = try fields.nonNegativeInt("max_new_tokens")
    }

    /// The sampling these defaults describe: greedy unless `do_sample` (the repetition
    /// penalty applies either way, as in transformers).
    public var sampling: SamplingParameters {
        SamplingParameters(temperature: doSample ? Float(temperature) : 0, topK: topK, topP: Float(topP),
                           repetitionPenalty: Float(repetitionPenalty))
    }
}

/// Typed reads of optional fields of a JSON config, throwing `badConfig` naming the field and file.
struct ConfigFields {
    let json: JSON
    let path: String

    /// The field's value; absent and `null` both read as nil.
    func value(_ name: String) -> JSON? { json[name].flatMap { $0.isNull ? nil : $0 } }

    func fail(_ name: String, _ reason: String) -> GPTQError { GPTQError.badConfig(field: name, path: path, reason: reason) }

    func bool(_ name: String) throws -> Bool? {
        guard let v = value(name) else { return nil }
        guard let b = v.bool else { throw fail(name, "expected true or false") }
        return b
    }

    func nonNegativeInt(_ name: String) throws -> Int? {
        guard let v = value(name) else { return nil }
        guard let i = v.int, i >= 0 else { throw fail(name, "expected a non-negative integer") }
        return i
    }

    func number(_ name: String, atLeast minimum: Double) throws -> Double? {
        guard let v = value(name) else { return nil }
        guard let d = v.double, d.isFinite else { throw fail(name, "expected a number") }
        guard d >= minimum else { throw fail(name, "must be at least \(minimum), got \(d)") }
        return d
    }

    func string(_ name: String) throws -> String? {
        guard let v = value(name) else { return nil }
        guard let s = v.string else { throw fail(name, "expected a string") }
        return s
    }

    /// Token ids are Int32 everywhere downstream (the tokenizer, the sampler), as in the HF libraries.
    func tokenId(_ name: String) throws -> Int? {
        guard let id = try nonNegativeInt(name) else { return nil }
        guard id <= Int(Int32.max) else { throw fail(name, "token id \(id) is beyond the largest token id \(Int32.max)") }
        return id
    }

    /// An id or a list of ids.
    func tokenIds(_ name: String) throws -> [Int] {
        guard let v = value(name) else { return [] }
        let list = v.int != nil ? [v] : v.array
        guard let list else { throw fail(name, "expected a token id or a list of token ids") }
        return try list.map { item in
            guard let id = item.int, id >= 0 else { throw fail(name, "expected a list of non-negative token ids") }
            guard id <= Int(Int32.max) else { throw fail(name, "token id \(id) is beyond the largest token id \(Int32.max)") }
            return id
        }
    }
}
