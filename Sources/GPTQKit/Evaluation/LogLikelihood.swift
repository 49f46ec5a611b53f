/// A continuation to score after a context, as lm-eval's loglikelihood requests.
public struct ScoringRequest: Sendable {
    public let context: [Int32]
    public let continuation: [Int32]

    public init(context: [Int32], continuation: [Int32]) {
        self.context = context
        self.continuation = continuation
    }
}

public struct ContinuationScore: Sendable {
    /// Sum of the continuation tokens' log-probabilities.
    public let logLikelihood: Double
    /// Whether every continuation token is the argmax of its prediction (lm-eval's is_greedy).
    public let isGreedy: Bool
}

/// Log-likelihoods of continuations, several requests at once: each request in a slot of a
/// BatchInferenceSession (no padding: each slot has its own positions), so a batched score
/// equals the request scored alone.
public enum LogLikelihood {
    /// - progress: called after each batch with (requests done, requests in all, tokens fed so far).
    public static func score(_ requests: [ScoringRequest], session: BatchInferenceSession,
                             progress: ((Int, Int, Int) -> Void)? = nil) throws -> [ContinuationScore] {
        for (i, r) in requests.enumerated() {
            guard !r.context.isEmpty else { throw GPTQError.invalidArgument("scoring request \(i): the context has no tokens") }
            guard !r.continuation.isEmpty else { throw GPTQError.invalidArgument("scoring request \(i): the continuation has no tokens") }
            guard r.context.count + r.continuation.count <= session.capacity else {
                throw GPTQError.invalidArgument("scoring request \(i): \(r.context.count + r.continuation.count) tokens exceed the session capacity \(session.capacity)")
            }
        }
        var scores: [ContinuationScore] = []
        var fed = 0
        for start in stride(from: 0, to: requests.count, by: session.slots) {
            let group = Array(requests[start..<min(requests.count, start + session.slots)])
            for slot in group.indices { session.rewind(slot: slot, to: 0) }
            // The context but its last token needs no logits; from there on every row does.
            let prefixes = group.enumerated().filter { $0.element.context.count > 1 }.map { ($0.offset, Array($0.element.context.dropLast())) }
            if !prefixes.isEmpty { _ = try session.forward(prefixes, allLogits: false) }
            let rows = try session.forwardScoring(group.enumerated().map { slot, request in
                (slot, [request.context.last!] + request.continuation.dropLast(), request.continuation)
            })
            for (request, tokenScores) in zip(group, rows) {
                fed += request.context.count + request.continuation.count
                scores.append(ContinuationScore(logLikelihood: tokenScores.reduce(0) { $0 + Double($1.logProbability) },
                                                isGreedy: tokenScores.allSatisfy(\.isArgmax)))
            }
            progress?(scores.count, requests.count, fed)
        }
        return scores
    }
}
