#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How the next token is chosen from the logits. The defaults change nothing: greedy
/// decoding with no penalty.
public struct SamplingParameters: Equatable, Sendable {
    /// 0 means greedy (argmax); otherwise logits are divided by it before sampling.
    public var temperature: Float
    /// Keep only the k most likely tokens (ties with the k-th kept, as transformers does); 0 disables.
    public var topK: Int
    /// Keep the smallest set of most likely tokens whose probability sums to at least this; 1 disables.
    public var topP: Float
    /// CTRL's penalty on tokens already in the prompt or the output; 1 disables.
    public var repetitionPenalty: Float

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, repetitionPenalty: Float = 1) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.repetitionPenalty = repetitionPenalty
    }

    public var isGreedy: Bool { temperature == 0 }

    /// Rejects values transformers would reject, naming the flag-like field.
    public func validate() throws {
        guard temperature >= 0, temperature.isFinite else { throw GPTQError.invalidArgument("temperature must be >= 0, got \(temperature)") }
        guard topK >= 0 else { throw GPTQError.invalidArgument("top-k must be >= 0, got \(topK)") }
        guard topP > 0, topP <= 1 else { throw GPTQError.invalidArgument("top-p must be in (0, 1], got \(topP)") }
        guard repetitionPenalty > 0, repetitionPenalty.isFinite else {
            throw GPTQError.invalidArgument("repetition penalty must be > 0, got \(repetitionPenalty)")
        }
    }
}

/// Chooses tokens from logits the way transformers' `generate` does: repetition penalty,
/// then temperature, top-k and top-p, then a draw from the remaining distribution (or
/// the argmax when greedy). Deterministic for a given seed.
public struct Sampler: Sendable {
    public let parameters: SamplingParameters
    private var random: Xoshiro256StarStar

    public init(_ parameters: SamplingParameters, seed: UInt64 = 0) throws {
        try parameters.validate()
        self.parameters = parameters
        self.random = Xoshiro256StarStar(seed: seed)
    }

    /// Picks the next token. `history` is every token so far (prompt and output), which
    /// the repetition penalty looks at.
    public mutating func next(logits: [Float], history: [Int32]) -> Int32 {
        if parameters.isGreedy { return draw(logits: logits, history: history, uniform: 0) }
        return draw(logits: logits, history: history, uniform: nextUniform())
    }

    /// The uniform number in [0, 1) the next sampled token is drawn with (what `next` uses).
    public mutating func nextUniform() -> Float { Float(random.nextUnit()) }

    /// The token at `uniform` of the kept probability mass (or the argmax when greedy);
    /// `Sampler.noToken` when every logit is NaN. NaN logits are never drawn.
    public func draw(logits: [Float], history: [Int32], uniform: Float) -> Int32 {
        var scores = logits.map { $0.isNaN ? -Float.infinity : $0 }
        guard scores.contains(where: { $0 > -.infinity }) else { return Self.noToken }
        applyRepetitionPenalty(&scores, history: history)
        if parameters.isGreedy { return Self.argmax(scores) }
        let (kept, weights) = candidates(penalizedLogits: scores)
        let total = kept.reduce(Float(0)) { $0 + weights[Int($1)] }
        var u = uniform * total
        for token in kept {
            u -= weights[Int(token)]
            if u < 0 { return token }
        }
        // Rounding left a sliver of mass unassigned: it belongs to the last kept token.
        return kept[kept.count - 1]
    }

    /// The distribution a sampled token is drawn from: the kept tokens, most likely first,
    /// with probabilities summing to 1.
    public func distribution(logits: [Float], history: [Int32]) -> [(token: Int32, probability: Float)] {
        var scores = logits
        applyRepetitionPenalty(&scores, history: history)
        var (kept, weights) = candidates(penalizedLogits: scores)
        kept.sort(by: Self.descending(weights))
        let total = kept.reduce(Float(0)) { $0 + weights[Int($1)] }
        return kept.map { (token: $0, probability: weights[Int($0)] / total) }
    }

    /// transformers' RepetitionPenaltyLogitsProcessor: each distinct earlier token's logit
    /// is divided by the penalty when positive and multiplied by it otherwise.
    func applyRepetitionPenalty(_ scores: inout [Float], history: [Int32]) {
        let penalty = parameters.repetitionPenalty
        guard penalty != 1 else { return }
        var seen = Set<Int32>()
        for token in history where scores.indices.contains(Int(token)) && seen.insert(token).inserted {
            let s = scores[Int(token)]
            scores[Int(token)] = s > 0 ? s / penalty : s * penalty
        }
    }

    /// The tokens temperature, top-k and top-p keep (in no particular order unless top-p
    /// sorted them), with the unnormalised softmax weights of every token.
    private func candidates(penalizedLogits scores: [Float]) -> (kept: [Int32], weights: [Float]) {
        let temperature = parameters.isGreedy ? 1 : parameters.temperature
        let maxScore = scores.max() ?? 0
        // Softmax numerators of scores / temperature, relative to the maximum.
        let weights = scores.map { expf(($0 - maxScore) / temperature) }
        var kept = Array(0..<Int32(weights.count))
        if parameters.topK > 0 && parameters.topK < weights.count {
            // transformers keeps every token tied with the k-th.
            let kth = Self.kthLargest(weights, k: parameters.topK)
            kept = kept.filter { weights[Int($0)] >= kth }
        }
        if parameters.topP < 1 {
            let mass = kept.reduce(Float(0)) { $0 + weights[Int($1)] }
            // transformers sorts ascending and drops tokens while the running sum of
            // probabilities stays <= 1 - top_p. Tokens below (1 - top_p) / n hold less than
            // that together and come first in that order, so they go before the sort.
            let limit = (1 - parameters.topP) * mass
            let floor = limit / Float(kept.count)
            var cumulative: Float = 0
            kept = kept.filter { token in
                let w = weights[Int(token)]
                if w < floor { cumulative += w; return false }
                return true
            }
            kept.sort(by: Self.descending(weights))
            var count = kept.count
            while count > 1 {
                cumulative += weights[Int(kept[count - 1])]
                if cumulative > limit { break }
                count -= 1
            }
            kept.removeLast(kept.count - count)
        }
        return (kept, weights)
    }

    /// Most likely first; ties by id.
    static func descending(_ weights: [Float]) -> (Int32, Int32) -> Bool {
        { weights[Int($0)] > weights[Int($1)] || (weights[Int($0)] == weights[Int($1)] && $0 < $1) }
    }

    /// What `draw` and `argmax` return when no logit is a number: a model whose weights
    /// or config hold NaN or infinity computes nothing else, and the caller must say so.
    public static let noToken: Int32 = -1

    /// The index of the largest score, NaN scores skipped; `noToken` when all are NaN.
    static func argmax(_ scores: [Float]) -> Int32 {
        var best = -1
        for i in scores.indices where !scores[i].isNaN && (best < 0 || scores[i] > scores[best]) { best = i }
        return Int32(best)
    }

    /// The k-th largest of `values` (1-based), through a min-heap of the best k seen.
    static func kthLargest(_ values: [Float], k: Int) -> Float {
        var heap: [Float] = []
        heap.reserveCapacity(k)
        for v in values {
            if heap.count < k {
                heap.append(v)
                var c = heap.count - 1
                while c > 0, heap[c] < heap[(c - 1) / 2] { heap.swapAt(c, (c - 1) / 2); c = (c - 1) / 2 }
            } else if v > heap[0] {
                heap[0] = v
                var p = 0
                while true {
                    let l = 2 * p + 1, r = l + 1
                    var m = p
                    if l < k, heap[l] < heap[m] { m = l }
                    if r < k, heap[r] < heap[m] { m = r }
                    if m == p { break }
                    heap.swapAt(p, m)
                    p = m
                }
            }
        }
        return heap[0]
    }
}
