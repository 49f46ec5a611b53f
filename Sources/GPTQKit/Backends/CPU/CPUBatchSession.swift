/// Several sequences on the CPU, each slot a CPUSession's cache and position, fed through the
/// model in one pass: their rows share each linear's product (the weights stream once for
/// the whole batch), and attention runs per sequence over its own cache.
public final class CPUBatchSession: BatchInferenceSession {
    public let model: LanguageModel
    let sequences: [CPUSession]

    public init(model: LanguageModel, slots: Int, capacity: Int) {
        precondition(slots > 0, "a batch session needs at least one slot")
        self.model = model
        sequences = (0..<slots).map { _ in CPUSession(model: model, capacity: capacity) }
    }

    public var vocabSize: Int { model.vocabSize }
    public var slots: Int { sequences.count }
    public var capacity: Int { sequences[0].capacity }
    public func position(of slot: Int) -> Int { sequences[slot].position }
    public func rewind(slot: Int, to position: Int) { sequences[slot].rewind(to: position) }

    public func forward(_ batch: [(slot: Int, tokens: [Int32])], allLogits: Bool) throws -> [[Float]] {
        try BatchRequest.validate(batch, slots: slots)
        for entry in batch where sequences[entry.slot].position + entry.tokens.count > capacity {
            throw GPTQError.invalidArgument("batch forward: \(entry.tokens.count) tokens after \(sequences[entry.slot].position) cached in slot \(entry.slot) exceed the capacity \(capacity)")
        }
        guard !batch.isEmpty else { return [] }
        let h = model.hiddenSize
        var hidden: [Float] = []
        for entry in batch { hidden += try model.embed(entry.tokens, position: sequences[entry.slot].position) }
        hidden.withUnsafeMutableBufferPointer { x in
            model.forwardLayers(x.baseAddress!, sequences: batch.map { (tokens: $0.tokens.count, position: sequences[$0.slot].position,
                                                                         caches: sequences[$0.slot].cache) },
                                arithmetic: .float32)
        }
        for entry in batch { sequences[entry.slot].position += entry.tokens.count }
        let vocab = vocabSize
        if allLogits {
            let logits = hidden.withUnsafeBufferPointer { model.logits($0.baseAddress!, rows: hidden.count / h, arithmetic: .float32) }
            var start = 0
            return batch.map { entry in
                defer { start += entry.tokens.count }
                return Array(logits[start * vocab..<(start + entry.tokens.count) * vocab])
            }
        }
        // Each sequence's last row, through the head together.
        var lastRows: [Float] = []
        var end = 0
        for entry in batch {
            end += entry.tokens.count
            lastRows += hidden[(end - 1) * h..<end * h]
        }
        let logits = lastRows.withUnsafeBufferPointer { model.logits($0.baseAddress!, rows: batch.count, arithmetic: .float32) }
        return batch.indices.map { Array(logits[$0 * vocab..<($0 + 1) * vocab]) }
    }
}
