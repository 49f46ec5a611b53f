import CKernels

/// Several sequences, each in its own slot with its own KV cache, fed through a model in one
/// call: what batched scoring, batched generation and a server's continuous batching talk to.
/// A slot's results equal those of an `InferenceSession` fed the same tokens.
public protocol BatchInferenceSession: AnyObject {
    var vocabSize: Int { get }
    /// Slots (sequences) the session holds.
    var slots: Int { get }
    /// The longest sequence one slot's cache holds.
    var capacity: Int { get }
    /// Tokens cached in `slot`.
    func position(of slot: Int) -> Int
    /// Feeds each entry's tokens after those its slot already holds (a slot appears at most
    /// once; slots not named sit this call out) and returns, per entry in order, float32
    /// logits: the last token's ([vocabSize]) or, with `allLogits`, every token's.
    func forward(_ batch: [(slot: Int, tokens: [Int32])], allLogits: Bool) throws -> [[Float]]
    /// Forgets every position of `slot` from `position` on (0 frees the slot for a new sequence).
    func rewind(slot: Int, to position: Int)
    /// Takes a new sequence into empty `slot` when the cache has room for `length` positions
    /// of it (a paged cache holds fewer than slots × capacity, so room is reserved here), and
    /// returns the positions of `prompt` the slot already holds, computed for another sequence
    /// (prefix caching): feed the prompt from there. Nil: no room now. Contiguous caches always
    /// have room and share nothing.
    func admit(slot: Int, prompt: [Int32], length: Int) -> Int?
    /// KV cache blocks in use and in all, where the cache is paged.
    var cacheBlocks: (inUse: Int, total: Int)? { get }
    /// Feeds each entry's tokens as `forward` does and scores `targets` against the logits of
    /// its tokens (targets[j] after tokens[j]): per entry, each target's log-probability and
    /// whether it is the argmax (the lowest id among equal maxima).
    func forwardScoring(_ batch: [(slot: Int, tokens: [Int32], targets: [Int32])]) throws -> [[TokenScore]]
}

/// A token's log-probability under a row of logits, and whether it is the row's argmax.
public struct TokenScore: Sendable, Equatable {
    public let logProbability: Float
    public let isArgmax: Bool
    public init(logProbability: Float, isArgmax: Bool) {
        self.logProbability = logProbability
        self.isArgmax = isArgmax
    }
}

extension BatchInferenceSession {
    public func admit(slot: Int, prompt: [Int32], length: Int) -> Int? { 0 }
    public var cacheBlocks: (inUse: Int, total: Int)? { nil }

    /// Scores on the host from every row's logits.
    public func forwardScoring(_ batch: [(slot: Int, tokens: [Int32], targets: [Int32])]) throws -> [[TokenScore]] {
        try BatchRequest.validateTargets(batch, vocab: vocabSize)
        let vocab = vocabSize
        let rows = try forward(batch.map { ($0.slot, $0.tokens) }, allLogits: true)
        return zip(batch, rows).map { entry, logits in
            logits.withUnsafeBufferPointer { l in
                entry.targets.enumerated().map { j, token in
                    let row = l.baseAddress! + j * vocab, target = row[Int(token)]
                    let beaten = (0..<vocab).contains { row[$0] > target || (row[$0] == target && $0 < Int(token)) }
                    return TokenScore(logProbability: target - ck_logsumexp(row, vocab), isArgmax: !beaten)
                }
            }
        }
    }
}

/// A BatchInferenceSession over one InferenceSession per slot, fed one after another: the
/// results of batching on any backend, without its speed.
public final class SequentialBatchSession: BatchInferenceSession {
    let sessions: [InferenceSession]

    public init(sessions: [InferenceSession]) {
        precondition(!sessions.isEmpty, "a batch session needs at least one slot")
        self.sessions = sessions
    }

    public var vocabSize: Int { sessions[0].vocabSize }
    public var slots: Int { sessions.count }
    public var capacity: Int { sessions.map(\.capacity).min()! }
    public func position(of slot: Int) -> Int { sessions[slot].position }

    public func forward(_ batch: [(slot: Int, tokens: [Int32])], allLogits: Bool) throws -> [[Float]] {
        try BatchRequest.validate(batch, slots: slots)
        return try batch.map { try sessions[$0.slot].forward($0.tokens, allLogits: allLogits) }
    }

    public func rewind(slot: Int, to position: Int) { sessions[slot].rewind(to: position) }
}

enum BatchRequest {
    /// A target for each token, each in the vocabulary.
    static func validateTargets(_ batch: [(slot: Int, tokens: [Int32], targets: [Int32])], vocab: Int) throws {
        for entry in batch {
            guard entry.targets.count == entry.tokens.count else {
                throw GPTQError.invalidArgument("scoring forward: slot \(entry.slot) has \(entry.tokens.count) tokens but \(entry.targets.count) targets")
            }
            if let bad = entry.targets.first(where: { $0 < 0 || Int($0) >= vocab }) {
                throw GPTQError.invalidArgument("scoring forward: target \(bad) of slot \(entry.slot) outside the vocabulary of \(vocab)")
            }
        }
    }

    /// Each slot in range and named once, each entry with tokens.
    static func validate(_ batch: [(slot: Int, tokens: [Int32])], slots: Int) throws {
        var seen = Set<Int>()
        for entry in batch {
            guard entry.slot >= 0, entry.slot < slots else {
                throw GPTQError.invalidArgument("batch forward: slot \(entry.slot) outside 0..<\(slots)")
            }
            guard seen.insert(entry.slot).inserted else { throw GPTQError.invalidArgument("batch forward: slot \(entry.slot) named twice") }
            guard !entry.tokens.isEmpty else { throw GPTQError.invalidArgument("batch forward: no tokens for slot \(entry.slot)") }
        }
    }
}
