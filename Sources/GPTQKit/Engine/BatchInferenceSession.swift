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
