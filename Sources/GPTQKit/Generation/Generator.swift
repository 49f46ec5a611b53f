/// Text of generated ids as they arrive, with incomplete UTF-8 characters held back
/// (the tokenizer's `TokenStreamDecoder` is one).
public protocol GeneratedTextDecoder {
    /// Adds one id; returns the text that became complete.
    mutating func push(_ id: Int32) -> String
    /// Returns whatever is still held back, at the end of a stream.
    mutating func finish() -> String
}

extension TokenStreamDecoder: GeneratedTextDecoder {}

public struct GenerationOptions: Sendable {
    public var maxNewTokens: Int
    public var sampling: SamplingParameters
    public var seed: UInt64
    /// Ids that end generation (the id itself is returned in `tokens` but not as text).
    public var stopTokenIds: Set<Int32>
    /// Texts that end generation; the text stops before the first occurrence of any.
    public var stopStrings: [String]

    public init(maxNewTokens: Int = 256, sampling: SamplingParameters = SamplingParameters(), seed: UInt64 = 0,
                stopTokenIds: Set<Int32> = [], stopStrings: [String] = []) {
        self.maxNewTokens = maxNewTokens
        self.sampling = sampling
        self.seed = seed
        self.stopTokenIds = stopTokenIds
        self.stopStrings = stopStrings
    }

    /// Every end-of-sequence id a model folder names: generation_config.json's, config.json's
    /// and the id of tokenizer_config.json's eos_token (chat models often end turns with a
    /// token that only one of them lists).
    public static func endOfSequenceIds(generation: GenerationConfig, model: ModelConfig, eosToken: Int32?) -> Set<Int32> {
        // An id past Int32 can never be sampled, so it can never end generation either.
        Set((generation.eosTokenIds + model.eosTokenIds).compactMap { Int32(exactly: $0) } + (eosToken.map { [$0] } ?? []))
    }
}

public enum StopReason: Equatable, Sendable {
    case endOfSequence(Int32)
    case stopString(String)
    case maxNewTokens
    /// The session's KV cache is full.
    case capacity
}

public struct GenerationResult: Sendable {
    /// The generated ids, including the end-of-sequence id that stopped generation.
    public var tokens: [Int32]
    /// Their text, cut before a stop string.
    public var text: String
    public var stopReason: StopReason
    /// Prompt tokens run in the prefill (those not already in the KV cache).
    public var prefillTokens: Int
    public var prefillSeconds: Double
    /// Single-token forwards after the prefill.
    public var decodeSteps: Int
    public var decodeSeconds: Double

    public var prefillTokensPerSecond: Double { prefillSeconds > 0 ? Double(prefillTokens) / prefillSeconds : 0 }
    public var decodeTokensPerSecond: Double { decodeSeconds > 0 ? Double(decodeSteps) / decodeSeconds : 0 }
}

/// Autoregressive generation over any `InferenceSession`: the prompt in one forward, then
/// one token per forward, sampled by `Sampler`. The generator remembers which tokens the
/// session's KV cache holds, so a prompt that extends the previous one (a chat's next
/// turn) only runs its new tokens.
public final class Generator {
    public let session: InferenceSession
    /// The tokens whose keys and values the session holds, in order.
    public private(set) var cachedTokens: [Int32] = []

    public init(session: InferenceSession) {
        self.session = session
        session.rewind(to: 0)
    }

    /// Generates after `prompt`, streaming text through `onText` as it becomes final when a
    /// `textDecoder` is given (without one, only ids come back and stop strings are not checked).
    public func generate(prompt: [Int32], options: GenerationOptions, textDecoder: (any GeneratedTextDecoder)? = nil,
                         onText: (String) -> Void = { _ in }) throws -> GenerationResult {
        guard !prompt.isEmpty else { throw GPTQError.invalidArgument("the prompt has no tokens") }
        guard options.maxNewTokens >= 0 else { throw GPTQError.invalidArgument("max new tokens must be >= 0, got \(options.maxNewTokens)") }
        guard prompt.count <= session.capacity else {
            throw GPTQError.invalidArgument("the prompt has \(prompt.count) tokens, more than the session's capacity of \(session.capacity)")
        }
        if let bad = prompt.first(where: { $0 < 0 || Int($0) >= session.vocabSize }) {
            throw GPTQError.invalidArgument("prompt token id \(bad) is outside the vocabulary (size \(session.vocabSize))")
        }
        var sampler = try Sampler(options.sampling, seed: options.seed)
        var stream = StopStringFilter(stopStrings: options.stopStrings)
        var decoder = textDecoder
        let clock = ContinuousClock()

        // Reuse the cached prefix; at least the last prompt token runs, for its logits.
        var reused = 0
        while reused < min(cachedTokens.count, prompt.count - 1), cachedTokens[reused] == prompt[reused] { reused += 1 }
        session.rewind(to: reused)
        cachedTokens = Array(prompt[..<reused])
        var result = GenerationResult(tokens: [], text: "", stopReason: .maxNewTokens, prefillTokens: prompt.count - reused,
                                      prefillSeconds: 0, decodeSteps: 0, decodeSeconds: 0)
        guard options.maxNewTokens > 0 else { return result }

        var history = prompt
        // Without a repetition penalty the next token needs no history: the session picks it
        // (a GPU session on its device, copying back one id instead of the logits), with the
        // uniform number the sampler would have drawn.
        let noPenalty = options.sampling.repetitionPenalty == 1
        func run(_ tokens: [Int32]) throws -> Int32 {
            let next: Int32
            if noPenalty && options.sampling.isGreedy {
                next = try session.forwardGreedy(tokens)
            } else if noPenalty {
                next = try session.forwardSample(tokens, parameters: options.sampling, uniform: sampler.nextUniform())
            } else {
                next = sampler.next(logits: try session.forward(tokens, allLogits: false), history: history)
            }
            guard next != Sampler.noToken else {
                throw GPTQError.nonFinite("every logit at position \(session.position) is NaN; the model's weights or config values are not finite (loading warns which)")
            }
            return next
        }
        let start = clock.now
        var token = try run(Array(prompt[reused...]))
        cachedTokens = prompt
        result.prefillSeconds = (clock.now - start).seconds

        let decodeStart = clock.now
        while true {
            result.tokens.append(token)
            history.append(token)
            if options.stopTokenIds.contains(token) {
                result.stopReason = .endOfSequence(token)
                break
            }
            if decoder != nil, let stop = stream.append(decoder!.push(token), onText: onText) {
                result.stopReason = .stopString(stop)
                break
            }
            if result.tokens.count == options.maxNewTokens { break }
            guard session.position < session.capacity else {
                result.stopReason = .capacity
                break
            }
            let fed = token
            token = try run([fed])
            cachedTokens.append(fed)
            result.decodeSteps += 1
        }
        result.decodeSeconds = (clock.now - decodeStart).seconds
        if decoder != nil {
            if case .stopString = result.stopReason {} else if let stop = stream.append(decoder!.finish(), onText: onText) {
                result.stopReason = .stopString(stop)
            }
            if case .stopString = result.stopReason {} else { stream.flush(onText: onText) }
            result.text = stream.text
        }
        return result
    }

    /// Empties the KV cache.
    public func reset() {
        session.rewind(to: 0)
        cachedTokens = []
    }
}

/// Watches streamed text for stop strings. Text that could be the start of a stop string is
/// held back until it is not, so a stop string is never emitted, even in part.
public struct StopStringFilter: Sendable {
    let stopStrings: [[UInt8]]
    /// All text so far (cut at a stop string once one is found), as UTF-8.
    private var bytes: [UInt8] = []
    private var emitted = 0

    public init(stopStrings: [String]) {
        self.stopStrings = stopStrings.map { Array($0.utf8) }.filter { !$0.isEmpty }
    }

    public var text: String { String(decoding: bytes, as: UTF8.self) }

    /// Adds text; emits what is safe; returns the stop string when one has appeared.
    public mutating func append(_ piece: String, onText: (String) -> Void) -> String? {
        guard !piece.isEmpty else { return nil }
        let searchFrom = max(0, bytes.count - (stopStrings.map(\.count).max() ?? 1) + 1)
        bytes.append(contentsOf: piece.utf8)
        // The earliest occurrence wins, as if the text were checked after every byte.
        var earliest: (at: Int, stop: [UInt8])?
        for stop in stopStrings {
            if let at = Self.find(stop, in: bytes, from: searchFrom), at < earliest?.at ?? .max { earliest = (at, stop) }
        }
        if let earliest {
            bytes.removeLast(bytes.count - earliest.at)
            flush(onText: onText)
            return String(decoding: earliest.stop, as: UTF8.self)
        }
        var held = 0
        for stop in stopStrings {
            // The longest end of the text that is a proper beginning of this stop string.
            for length in stride(from: min(stop.count - 1, bytes.count), to: held, by: -1)
                where bytes[(bytes.count - length)...].elementsEqual(stop[..<length]) {
                held = length
                break
            }
        }
        emit(upTo: bytes.count - held, onText: onText)
        return nil
    }

    /// Emits everything held back (at the end of a generation that no stop string ended).
    public mutating func flush(onText: (String) -> Void) { emit(upTo: bytes.count, onText: onText) }

    private mutating func emit(upTo end: Int, onText: (String) -> Void) {
        guard end > emitted else { return }
        onText(String(decoding: bytes[emitted..<end], as: UTF8.self))
        emitted = end
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        var i = start
        while i + needle.count <= haystack.count {
            if haystack[i] == needle[0], haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}

extension Duration {
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) * 1e-18
    }
}
