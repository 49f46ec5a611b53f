import GPTQKit

/// A request's JSON object, read field by field: a field of the wrong type is a 400 naming
/// it; an absent field and `null` are alike (OpenAI's clients send null for "not given").
struct RequestFields {
    let pairs: [(String, JSON)]

    init(body: [UInt8]) throws(APIError) {
        var bytes = body
        let json: JSON
        do throws(JSONParseError) {
            json = try JSON.parse(bytes: &bytes)
        } catch {
            throw .malformedJSON(error.message)
        }
        guard let pairs = json.object else { throw .malformedJSON("the body must be a JSON object") }
        self.pairs = pairs
    }

    subscript(key: String) -> JSON? {
        guard let value = pairs.last(where: { $0.0 == key })?.1, !value.isNull else { return nil }
        return value
    }

    func string(_ key: String) throws(APIError) -> String? {
        guard let value = self[key] else { return nil }
        guard let s = value.string else { throw .wrongType(key, expected: "a string") }
        return s
    }

    func int(_ key: String) throws(APIError) -> Int? {
        guard let value = self[key] else { return nil }
        guard let i = value.int else { throw .wrongType(key, expected: "an integer") }
        return i
    }

    func number(_ key: String) throws(APIError) -> Double? {
        guard let value = self[key] else { return nil }
        guard let d = value.double, d.isFinite else { throw .wrongType(key, expected: "a number") }
        return d
    }

    func bool(_ key: String) throws(APIError) -> Bool? {
        guard let value = self[key] else { return nil }
        guard let b = value.bool else { throw .wrongType(key, expected: "a boolean") }
        return b
    }

    /// A number within `range`, or a 400 naming the field.
    func number(_ key: String, in range: ClosedRange<Double>) throws(APIError) -> Double? {
        guard let value = try number(key) else { return nil }
        guard range.contains(value) else { throw .badParameter(key, "'\(key)' must be between \(range.lowerBound) and \(range.upperBound), got \(value)") }
        return value
    }

    func int(_ key: String, in range: ClosedRange<Int>) throws(APIError) -> Int? {
        guard let value = try int(key) else { return nil }
        guard range.contains(value) else { throw .badParameter(key, "'\(key)' must be between \(range.lowerBound) and \(range.upperBound), got \(value)") }
        return value
    }

    /// Token ids, each in the vocabulary.
    func tokenIds(_ key: String, vocabSize: Int) throws(APIError) -> [Int32]? {
        guard let value = self[key] else { return nil }
        return try Self.tokenIds(value, param: key, vocabSize: vocabSize)
    }

    static func tokenIds(_ value: JSON, param: String, vocabSize: Int) throws(APIError) -> [Int32] {
        guard let items = value.array else { throw .wrongType(param, expected: "an array of token ids") }
        var ids: [Int32] = []
        for item in items {
            guard let id = item.int else { throw .wrongType(param, expected: "an array of token ids") }
            guard id >= 0, id < vocabSize else { throw .badParameter(param, "token id \(id) is outside the vocabulary (size \(vocabSize))") }
            ids.append(Int32(id))
        }
        return ids
    }
}

/// The fields /v1/chat/completions and /v1/completions share: sampling, stopping, choices, streaming.
struct GenerationFields {
    var sampling: SamplingParameters
    var seed: UInt64?
    var presencePenalty: Float
    var frequencyPenalty: Float
    var stopStrings: [String]
    var choices: Int
    var stream: Bool
    var includeUsage: Bool

    /// The most choices one request may ask for.
    static let maxChoices = 16

    /// Reads the fields; those left out take the model's defaults (generation_config.json),
    /// as `gptq generate` does.
    init(_ fields: RequestFields, defaults: SamplingParameters) throws(APIError) {
        sampling = defaults
        if let temperature = try fields.number("temperature", in: 0...2) { sampling.temperature = Float(temperature) }
        if let topP = try fields.number("top_p") {
            guard topP > 0, topP <= 1 else { throw .badParameter("top_p", "'top_p' must be in (0, 1], got \(topP)") }
            sampling.topP = Float(topP)
        }
        // vLLM's extension; -1 (its "off") and 0 both disable it.
        if let topK = try fields.int("top_k") {
            guard topK >= -1 else { throw .badParameter("top_k", "'top_k' must be -1, 0 or positive, got \(topK)") }
            sampling.topK = max(0, topK)
        }
        if let penalty = try fields.number("repetition_penalty") {
            guard penalty > 0 else { throw .badParameter("repetition_penalty", "'repetition_penalty' must be > 0, got \(penalty)") }
            sampling.repetitionPenalty = Float(penalty)
        }
        if let seed = try fields.int("seed") { self.seed = UInt64(bitPattern: Int64(seed)) }
        presencePenalty = Float(try fields.number("presence_penalty", in: -2...2) ?? 0)
        frequencyPenalty = Float(try fields.number("frequency_penalty", in: -2...2) ?? 0)
        switch fields["stop"] {
        case nil: stopStrings = []
        case let .string(s)?: stopStrings = [s]
        case let .array(items)?:
            stopStrings = []
            for item in items {
                guard let s = item.string else { throw .wrongType("stop", expected: "a string or an array of strings") }
                stopStrings.append(s)
            }
        default: throw .wrongType("stop", expected: "a string or an array of strings")
        }
        guard stopStrings.count <= 16 else { throw .badParameter("stop", "'stop' holds at most 16 strings") }
        guard !stopStrings.contains("") else { throw .badParameter("stop", "'stop' strings must not be empty") }
        choices = try fields.int("n", in: 1...Self.maxChoices) ?? 1
        stream = try fields.bool("stream") ?? false
        includeUsage = false
        if let options = fields["stream_options"] {
            guard stream else { throw .badParameter("stream_options", "'stream_options' is only allowed when 'stream' is true") }
            guard options.object != nil else { throw .wrongType("stream_options", expected: "an object") }
            if let include = options["include_usage"], !include.isNull {
                guard let flag = include.bool else { throw .wrongType("stream_options.include_usage", expected: "a boolean") }
                includeUsage = flag
            }
        }
    }

    /// One sequence per choice; with a seed, choice i draws with seed + i so choices differ
    /// yet repeat run to run; without one, each draws from a fresh random seed.
    func sequences(prompt: [Int32], maxTokens: Int, stopTokenIds: Set<Int32>, topLogprobs: Int?, promptLogprobs: Bool) -> [SequenceParameters] {
        (0..<choices).map { choice in
            SequenceParameters(prompt: prompt, maxTokens: maxTokens, sampling: sampling,
                               seed: seed.map { $0 &+ UInt64(choice) } ?? UInt64.random(in: .min ... .max),
                               presencePenalty: presencePenalty, frequencyPenalty: frequencyPenalty,
                               stopTokenIds: stopTokenIds, stopStrings: stopStrings,
                               topLogprobs: topLogprobs, promptLogprobs: promptLogprobs)
        }
    }
}
