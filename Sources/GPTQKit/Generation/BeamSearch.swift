#if canImport(Glibc)
import Glibc
#endif
import CKernels

/// When beam search stops, as transformers' `early_stopping`.
public enum BeamEarlyStopping: String, Sendable, CaseIterable {
    /// early_stopping=False: stop once the best running beam, scored at its current length,
    /// cannot beat the worst of `numBeams` finished hypotheses.
    case heuristic = "false"
    /// early_stopping=True: stop as soon as `numBeams` hypotheses have finished.
    case always = "true"
    /// early_stopping="never": the heuristic, with the running beam scored at the longest
    /// length it could reach when the length penalty is positive.
    case never
}

public struct BeamSearchOptions: Sendable {
    public var numBeams: Int
    public var maxNewTokens: Int
    /// Finished hypotheses score sum(log p) / (generated tokens)^lengthPenalty.
    public var lengthPenalty: Float
    public var earlyStopping: BeamEarlyStopping
    /// No n-gram of this size (prompt included) occurs twice; 0 disables.
    public var noRepeatNgramSize: Int
    public var numReturnSequences: Int
    public var stopTokenIds: Set<Int32>

    public init(numBeams: Int = 4, maxNewTokens: Int = 64, lengthPenalty: Float = 1, earlyStopping: BeamEarlyStopping = .heuristic,
                noRepeatNgramSize: Int = 0, numReturnSequences: Int = 1, stopTokenIds: Set<Int32> = []) {
        self.numBeams = numBeams
        self.maxNewTokens = maxNewTokens
        self.lengthPenalty = lengthPenalty
        self.earlyStopping = earlyStopping
        self.noRepeatNgramSize = noRepeatNgramSize
        self.numReturnSequences = numReturnSequences
        self.stopTokenIds = stopTokenIds
    }

    public func validate() throws {
        guard numBeams >= 1 else { throw GPTQError.invalidArgument("--num-beams must be at least 1, got \(numBeams)") }
        guard maxNewTokens >= 1 else { throw GPTQError.invalidArgument("--max-new-tokens must be at least 1, got \(maxNewTokens)") }
        guard numReturnSequences >= 1, numReturnSequences <= numBeams else {
            throw GPTQError.invalidArgument("--num-return-sequences \(numReturnSequences) must be in 1...num-beams (\(numBeams))")
        }
        guard noRepeatNgramSize >= 0 else { throw GPTQError.invalidArgument("--no-repeat-ngram-size must be >= 0, got \(noRepeatNgramSize)") }
        guard lengthPenalty.isFinite else { throw GPTQError.invalidArgument("--length-penalty must be finite") }
    }
}

public struct BeamHypothesis: Sendable, Equatable {
    /// The generated ids, ending with the stop id when one ended the hypothesis.
    public var tokens: [Int32]
    /// Sum of the tokens' log-probabilities divided by tokens.count^lengthPenalty.
    public var score: Float
}

/// Beam search as transformers' generate(num_beams=…, do_sample=False) runs it (v5's
/// vectorised `_beam_search`): each step keeps the top max(2, 1 + stop ids)·numBeams
/// continuations of all beams by cumulative float32 log-softmax; those among the first
/// numBeams that end with a stop id or reach maxNewTokens join the finished hypotheses
/// (length-penalised, best numBeams kept), the best numBeams unfinished ones run on. The
/// -1e9 masks are transformers' own, so that ties and cut-offs fall the same way.
///
/// Each beam runs in a slot of a BatchInferenceSession. A beam whose parent's slot another
/// beam took moves to the free slot sharing the longest prefix with it, rewound to that
/// prefix: KV caches are never copied, only re-fed from where they differ.
public enum BeamSearch {
    static let masked: Float = -1.0e9

    public static func generate(prompt: [Int32], session: BatchInferenceSession, options: BeamSearchOptions) throws -> [BeamHypothesis] {
        try options.validate()
        guard !prompt.isEmpty else { throw GPTQError.invalidArgument("the prompt has no tokens") }
        let beams = options.numBeams
        guard session.slots >= beams else {
            throw GPTQError.invalidArgument("beam search with \(beams) beams needs \(beams) slots, the session has \(session.slots)")
        }
        guard prompt.count + options.maxNewTokens <= session.capacity else {
            throw GPTQError.invalidArgument("prompt (\(prompt.count)) + max new tokens (\(options.maxNewTokens)) exceed the session capacity \(session.capacity)")
        }
        let vocab = session.vocabSize
        let keep = max(2, 1 + options.stopTokenIds.count) * beams
        let penalty = options.lengthPenalty

        struct Beam { var tokens: [Int32]; var score: Float; var slot: Int }
        struct Finished { var tokens: [Int32]; var score: Float; var done: Bool }
        var running = (0..<beams).map { Beam(tokens: [], score: $0 == 0 ? 0 : masked, slot: $0) }
        var finished = [Finished](repeating: Finished(tokens: [], score: masked, done: false), count: beams)
        var improvable = true
        for slot in 0..<beams { session.rewind(slot: slot, to: 0) }
        var cached = [[Int32]](repeating: [], count: beams)

        for step in 0..<options.maxNewTokens {
            // Log-probabilities of every running beam's next token. At the first step every
            // beam is the prompt: one forward serves them all.
            let rows: [[Float]]
            if step == 0 {
                let logits = try session.forward([(slot: running[0].slot, tokens: prompt)], allLogits: false)[0]
                cached[running[0].slot] = prompt
                rows = Array(repeating: logSoftmax(logits), count: beams)
            } else {
                var batch: [(slot: Int, tokens: [Int32])] = []
                for beam in running {
                    let sequence = prompt + beam.tokens
                    let common = commonPrefix(cached[beam.slot], sequence)
                    session.rewind(slot: beam.slot, to: common)
                    batch.append((beam.slot, Array(sequence[common...])))
                    cached[beam.slot] = sequence
                }
                rows = try session.forward(batch, allLogits: false).map(logSoftmax)
            }

            // Cumulative scores of all beams × vocab, and the top `keep` of them.
            var candidates: [(score: Float, beam: Int, token: Int32)] = []
            candidates.reserveCapacity(beams * vocab)
            for (b, beam) in running.enumerated() {
                var row = rows[b]
                if options.noRepeatNgramSize > 0 { banRepeatedNgrams(&row, sequence: prompt + beam.tokens, size: options.noRepeatNgramSize) }
                for v in 0..<vocab { candidates.append((row[v] + beam.score, b, Int32(v))) }
            }
            let top = topK(candidates, keep)
            let generatedLength = step + 1
            let atMaxLength = generatedLength >= options.maxNewTokens
            let hits = top.map { atMaxLength || options.stopTokenIds.contains($0.token) }

            // The finished hypotheses: the old ones and the first numBeams candidates that just
            // stopped, length-penalised; the best numBeams of them stay.
            let lengthScale = Float(pow(Double(generatedLength), Double(penalty)))
            let full = finished.allSatisfy(\.done) && options.earlyStopping == .always
            var merged = finished
            for (k, candidate) in top.enumerated() {
                var score = candidate.score / lengthScale
                if full { score += masked }
                if !improvable { score += masked }
                let justFinished = hits[k] && k < beams
                if !justFinished { score += masked }
                merged.append(Finished(tokens: running[candidate.beam].tokens + [candidate.token], score: score, done: justFinished))
            }
            finished = Array(stableSortedDescending(merged) { $0.score }.prefix(beams))

            // The running beams: the best numBeams candidates, those that stopped masked out.
            var next = top.enumerated().map { k, candidate in
                (candidate: candidate, score: candidate.score + (hits[k] ? masked : 0))
            }
            next = Array(stableSortedDescending(next) { $0.score }.prefix(beams))
            var parentSlotTaken = [Bool](repeating: false, count: beams)
            var slotOf = [Int?](repeating: nil, count: beams)
            for (i, entry) in next.enumerated() {
                let parentSlot = running[entry.candidate.beam].slot
                if !parentSlotTaken[parentSlot] { parentSlotTaken[parentSlot] = true; slotOf[i] = parentSlot }
            }
            var newRunning: [Beam] = []
            for (i, entry) in next.enumerated() {
                let tokens = running[entry.candidate.beam].tokens + [entry.candidate.token]
                let slot = slotOf[i] ?? {
                    let sequence = prompt + tokens
                    let free = (0..<beams).filter { !parentSlotTaken[$0] }
                    let best = free.max { commonPrefix(cached[$0], sequence) < commonPrefix(cached[$1], sequence) }!
                    parentSlotTaken[best] = true
                    return best
                }()
                newRunning.append(Beam(tokens: tokens, score: entry.score, slot: slot))
            }
            running = newRunning

            // Whether the running beams can still beat the finished ones.
            let hypotheticalLength = options.earlyStopping == .never && penalty > 0 ? options.maxNewTokens : generatedLength
            let bestPossible = running[0].score / Float(pow(Double(hypotheticalLength), Double(penalty)))
            let worstFinished = finished.map(\.score).min()!
            improvable = improvable && finished.contains { bestPossible > ($0.done ? worstFinished : masked) }
            let allDone = finished.allSatisfy(\.done) && options.earlyStopping == .always
            if !improvable || allDone || hits.allSatisfy({ $0 }) { break }
        }
        return finished.prefix(options.numReturnSequences).map { BeamHypothesis(tokens: $0.tokens, score: $0.score) }
    }

    static func logSoftmax(_ logits: [Float]) -> [Float] {
        let lse = logits.withUnsafeBufferPointer { ck_logsumexp($0.baseAddress!, $0.count) }
        return logits.map { $0 - lse }
    }

    /// Sets to -inf every token that would complete an n-gram already in `sequence`
    /// (transformers' NoRepeatNGramLogitsProcessor).
    static func banRepeatedNgrams(_ row: inout [Float], sequence: [Int32], size n: Int) {
        // An n-gram can repeat only once the sequence holds one.
        guard sequence.count >= n else { return }
        let prefix = sequence[(sequence.count - n + 1)...]
        for start in 0...(sequence.count - n) where sequence[start..<(start + n - 1)].elementsEqual(prefix) {
            row[Int(sequence[start + n - 1])] = -.infinity
        }
    }

    /// The `k` largest by score, in descending order; equal scores keep their order.
    static func topK<T>(_ items: [(score: Float, beam: Int, token: T)], _ k: Int) -> [(score: Float, beam: Int, token: T)] {
        var indices = Array(items.indices)
        let count = min(k, items.count)
        // Partial selection: k is small (2·beams), the list is beams × vocab.
        for i in 0..<count {
            var best = i
            for j in (i + 1)..<indices.count where items[indices[j]].score > items[indices[best]].score
                || (items[indices[j]].score == items[indices[best]].score && indices[j] < indices[best]) { best = j }
            indices.swapAt(i, best)
        }
        return indices.prefix(count).map { items[$0] }
    }

    static func stableSortedDescending<T>(_ items: [T], by score: (T) -> Float) -> [T] {
        items.enumerated().sorted { score($0.element) > score($1.element) || (score($0.element) == score($1.element) && $0.offset < $1.offset) }
            .map(\.element)
    }

    static func commonPrefix(_ a: [Int32], _ b: [Int32]) -> Int {
        var n = 0
        while n < a.count, n < b.count, a[n] == b[n] { n += 1 }
        return n
    }
}
