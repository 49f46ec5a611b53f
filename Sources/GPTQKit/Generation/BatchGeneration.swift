/// One slot of a BatchInferenceSession seen as an InferenceSession, so that the generator
/// and the scorers written against one sequence run on a batch session's slot.
public final class BatchSlotSession: InferenceSession {
    public let batch: BatchInferenceSession
    public let slot: Int

    public init(batch: BatchInferenceSession, slot: Int) {
        self.batch = batch
        self.slot = slot
    }

    public var vocabSize: Int { batch.vocabSize }
    public var position: Int { batch.position(of: slot) }
    public var capacity: Int { batch.capacity }
    public func forward(_ tokens: [Int32], allLogits: Bool) throws -> [Float] { try batch.forward([(slot, tokens)], allLogits: allLogits)[0] }
    public func rewind(to position: Int) { batch.rewind(slot: slot, to: position) }
}

/// Greedy generation for many prompts at once: each prompt in a slot of its own (no padding:
/// a slot has its own positions), every unfinished slot fed in one call per step, and a slot
/// whose sequence ended takes the next prompt (continuous batching). Each result equals
/// Generator's greedy generation of that prompt alone.
public enum BatchGeneration {
    /// - progress: called as each prompt finishes, with (prompts done, prompts in all).
    public static func greedy(prompts: [[Int32]], session: BatchInferenceSession, maxNewTokens: Int, stopTokenIds: Set<Int32>,
                              progress: ((Int, Int) -> Void)? = nil) throws -> [[Int32]] {
        guard maxNewTokens >= 1 else { throw GPTQError.invalidArgument("max new tokens must be at least 1, got \(maxNewTokens)") }
        for (i, prompt) in prompts.enumerated() {
            guard !prompt.isEmpty else { throw GPTQError.invalidArgument("prompt \(i) has no tokens") }
            guard prompt.count < session.capacity else {
                throw GPTQError.invalidArgument("prompt \(i) has \(prompt.count) tokens; the session holds \(session.capacity)")
            }
        }
        var outputs = [[Int32]](repeating: [], count: prompts.count)
        var next = 0, done = 0
        // slot → the prompt it runs and the tokens to feed it next.
        var active: [Int: (prompt: Int, feed: [Int32])] = [:]
        func fill(_ slot: Int) {
            guard next < prompts.count else { return }
            session.rewind(slot: slot, to: 0)
            active[slot] = (next, prompts[next])
            next += 1
        }
        for slot in 0..<session.slots { fill(slot) }
        while !active.isEmpty {
            let slots = active.keys.sorted()
            let logits = try session.forward(slots.map { ($0, active[$0]!.feed) }, allLogits: false)
            for (slot, row) in zip(slots, logits) {
                let index = active[slot]!.prompt
                let token = Sampler.argmax(row)
                outputs[index].append(token)
                let finished = stopTokenIds.contains(token) || outputs[index].count == maxNewTokens
                    || session.position(of: slot) >= session.capacity
                if finished {
                    active[slot] = nil
                    done += 1
                    progress?(done, prompts.count)
                    fill(slot)
                } else {
                    active[slot] = (index, [token])
                }
            }
        }
        return outputs
    }
}
