/// Several sequences on the GPU, slot s being sequence s of one CUDASession: the named
/// slots' new tokens go through every linear together, as segments of one prefill pass
/// (attention per segment over its own cache), so the weights stream once for the batch.
/// When every slot brings one token, the step runs the session's captured decode graph.
public final class CUDABatchSession: BatchInferenceSession {
    public let session: CUDASession

    /// `slots` sequences of up to `capacity` positions (1...CUDASession.maxBatch slots),
    /// passes of up to `prefillChunk` rows, a KV cache of `cache`'s size.
    public init(model: CUDAModel, slots: Int, capacity: Int, prefillChunk: Int = 2048, cache: CUDASession.CacheSize = .everySequenceFull) throws {
        session = try model.makeSession(capacity: capacity, batch: slots, prefillChunk: prefillChunk, cache: cache)
    }

    public var vocabSize: Int { session.vocabSize }
    public var slots: Int { session.batch }
    public var capacity: Int { session.capacity }
    public func position(of slot: Int) -> Int { session.positions[slot] }
    public func rewind(slot: Int, to position: Int) { session.rewind(sequence: slot, to: position) }
    public var cacheBlocks: (inUse: Int, total: Int)? { (session.blocks.blocksInUse, session.blocks.blockCount) }

    /// Maps the cached blocks of the prompt's first tokens, then reserves the blocks for the
    /// rest of `length` (so running sequences never find the cache full).
    public func admit(slot: Int, prompt: [Int32], length: Int) -> Int? {
        let mapped = session.mapPrefix(sequence: slot, prompt: prompt)
        guard (try? session.blocks.reserve(sequence: slot, upTo: min(length, capacity))) != nil else {
            session.rewind(sequence: slot, to: 0)
            return nil
        }
        return mapped
    }

    public func forward(_ batch: [(slot: Int, tokens: [Int32])], allLogits: Bool) throws -> [[Float]] {
        try validate(batch)
        guard !batch.isEmpty else { return [] }
        let device = session.backend.device
        try device.makeCurrent()
        let vocab = vocabSize
        if batch.count == slots && batch.allSatisfy({ $0.tokens.count == 1 }) {
            let bySlot = batch.sorted { $0.slot < $1.slot }.map { $0.tokens[0] }
            try session.decode(bySlot)
            let logits = try device.download(session.logits, as: Float.self, count: slots * vocab)
            return batch.map { Array(logits[($0.slot * vocab)..<(($0.slot + 1) * vocab)]) }
        }
        var results = [[Float]](repeating: [], count: batch.count)
        try passes(batch) { pass, rows in
            let logits = try device.download(session.logits, as: Float.self, count: rows * vocab)
            var row = 0
            for (index, range) in pass {
                if allLogits {
                    results[index] += logits[(row * vocab)..<((row + range.count) * vocab)]
                } else if range.upperBound == batch[index].tokens.count {
                    results[index] = Array(logits[((row + range.count - 1) * vocab)..<((row + range.count) * vocab)])
                }
                row += range.count
            }
        }
        return results
    }

    /// Scores on the GPU: only each row's log-probability and argmax flag come back.
    public func forwardScoring(_ batch: [(slot: Int, tokens: [Int32], targets: [Int32])]) throws -> [[TokenScore]] {
        try BatchRequest.validateTargets(batch, vocab: vocabSize)
        try validate(batch.map { ($0.slot, $0.tokens) })
        try session.backend.device.makeCurrent()
        var results = [[TokenScore]](repeating: [], count: batch.count)
        try passes(batch.map { ($0.slot, $0.tokens) }) { pass, rows in
            let scores = try session.scoreTargets(pass.flatMap { batch[$0.index].targets[$0.range] })
            var row = 0
            for (index, range) in pass {
                results[index] += scores[row..<(row + range.count)]
                row += range.count
            }
        }
        return results
    }

    private func validate(_ batch: [(slot: Int, tokens: [Int32])]) throws {
        try BatchRequest.validate(batch, slots: slots)
        let vocab = vocabSize
        for entry in batch {
            guard position(of: entry.slot) + entry.tokens.count <= capacity else {
                throw GPTQError.invalidArgument("batch forward: \(entry.tokens.count) tokens after \(position(of: entry.slot)) cached in slot \(entry.slot) exceed the capacity \(capacity)")
            }
            if let bad = entry.tokens.first(where: { $0 < 0 || Int($0) >= vocab }) {
                throw GPTQError.invalidArgument("batch forward: token \(bad) of slot \(entry.slot) outside the vocabulary of \(vocab)")
            }
            try session.checkLearnedPositions(upTo: position(of: entry.slot) + entry.tokens.count)
        }
    }

    /// Runs the entries in prefill passes of at most maxRows rows, each slot once a pass (a
    /// long entry continues in the next); after each pass `afterPass(pass, rows)` sees which
    /// tokens of which entries it ran, in row order, with every row's logits in the session's buffer.
    private func passes(_ batch: [(slot: Int, tokens: [Int32])],
                        afterPass: (_ pass: [(index: Int, range: Range<Int>)], _ rows: Int) throws -> Void) throws {
        var offsets = [Int](repeating: 0, count: batch.count)
        while offsets.indices.contains(where: { offsets[$0] < batch[$0].tokens.count }) {
            var pass: [(index: Int, range: Range<Int>)] = [], rows = 0
            for (index, entry) in batch.enumerated() where offsets[index] < entry.tokens.count && rows < session.maxRows {
                let take = min(entry.tokens.count - offsets[index], session.maxRows - rows)
                pass.append((index, offsets[index]..<(offsets[index] + take)))
                rows += take
            }
            try session.prefill(pass.map { (batch[$0.index].slot, Array(batch[$0.index].tokens[$0.range])) }, logitRows: rows)
            try afterPass(pass, rows)
            for (index, range) in pass { offsets[index] = range.upperBound }
        }
    }
}
