/// Several sequences on the GPU, slot s being sequence s of one CUDASession: the named
/// slots' new tokens go through every linear together, as segments of one prefill pass
/// (attention per segment over its own cache), so the weights stream once for the batch.
/// When every slot brings one token, the step runs the session's captured decode graph.
public final class CUDABatchSession: BatchInferenceSession {
    public let session: CUDASession

    /// `slots` sequences of up to `capacity` positions (1...CUDALinear.maxGEMVRows slots),
    /// passes of up to `prefillChunk` rows.
    public init(model: CUDAModel, slots: Int, capacity: Int, prefillChunk: Int = 2048) throws {
        session = try model.makeSession(capacity: capacity, batch: slots, prefillChunk: prefillChunk)
    }

    public var vocabSize: Int { session.vocabSize }
    public var slots: Int { session.batch }
    public var capacity: Int { session.capacity }
    public func position(of slot: Int) -> Int { session.positions[slot] }
    public func rewind(slot: Int, to position: Int) { session.rewind(sequence: slot, to: position) }

    public func forward(_ batch: [(slot: Int, tokens: [Int32])], allLogits: Bool) throws -> [[Float]] {
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
        guard !batch.isEmpty else { return [] }
        let device = session.backend.device
        try device.makeCurrent()
        if batch.count == slots && batch.allSatisfy({ $0.tokens.count == 1 }) {
            let bySlot = batch.sorted { $0.slot < $1.slot }.map { $0.tokens[0] }
            try session.decode(bySlot)
            let logits = try device.download(session.logits, as: Float.self, count: slots * vocab)
            return batch.map { Array(logits[($0.slot * vocab)..<(($0.slot + 1) * vocab)]) }
        }
        // Passes of at most maxRows rows, each slot once a pass; a long entry continues in the next.
        var results = [[Float]](repeating: [], count: batch.count)
        var offsets = [Int](repeating: 0, count: batch.count)
        while offsets.indices.contains(where: { offsets[$0] < batch[$0].tokens.count }) {
            var pass: [(index: Int, ids: [Int32])] = [], rows = 0
            for (index, entry) in batch.enumerated() where offsets[index] < entry.tokens.count && rows < session.maxRows {
                let take = min(entry.tokens.count - offsets[index], session.maxRows - rows)
                pass.append((index, Array(entry.tokens[offsets[index]..<(offsets[index] + take)])))
                rows += take
            }
            try session.prefill(pass.map { (batch[$0.index].slot, $0.ids) }, logitRows: rows)
            let logits = try device.download(session.logits, as: Float.self, count: rows * vocab)
            var row = 0
            for (index, ids) in pass {
                offsets[index] += ids.count
                let done = offsets[index] == batch[index].tokens.count
                if allLogits {
                    results[index] += logits[(row * vocab)..<((row + ids.count) * vocab)]
                } else if done {
                    results[index] = Array(logits[((row + ids.count - 1) * vocab)..<((row + ids.count) * vocab)])
                }
                row += ids.count
            }
        }
        return results
    }
}
