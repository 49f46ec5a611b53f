/// Whether a BatchInferenceSession gives, slot by slot, what a single session gives each
/// prompt alone: every position's logits, and the greedy continuation. Prompts of different
/// lengths share a batch, so a backend that pads or packs them shows any leak here.
public struct BatchConsistency: Sendable {
    /// The largest |batched − alone| over every logit of every prompt.
    public let maxLogitDifference: Float
    /// The largest ‖batched − alone‖ / ‖alone‖ over the prompts (all of a prompt's logits).
    public let maxRelativeError: Double
    /// The indices of the prompts whose greedy continuations differ.
    public let greedyMismatches: [Int]
    public let prompts: Int

    public static func check(prompts: [[Int32]], batch: BatchInferenceSession, alone: InferenceSession, maxNewTokens: Int,
                             stopTokenIds: Set<Int32>) throws -> BatchConsistency {
        var worst: Float = 0, worstRelative = 0.0
        for start in stride(from: 0, to: prompts.count, by: batch.slots) {
            let group = Array(prompts[start..<min(prompts.count, start + batch.slots)])
            for slot in group.indices { batch.rewind(slot: slot, to: 0) }
            let batched = try batch.forward(group.enumerated().map { ($0.offset, $0.element) }, allLogits: true)
            for (prompt, logits) in zip(group, batched) {
                alone.rewind(to: 0)
                let reference = try alone.forward(prompt, allLogits: true)
                var difference = 0.0, norm = 0.0
                for (a, b) in zip(logits, reference) {
                    worst = max(worst, abs(a - b))
                    difference += Double(a - b) * Double(a - b)
                    norm += Double(b) * Double(b)
                }
                worstRelative = max(worstRelative, (difference / max(norm, .leastNormalMagnitude)).squareRoot())
            }
        }
        let batchedTokens = try BatchGeneration.greedy(prompts: prompts, session: batch, maxNewTokens: maxNewTokens, stopTokenIds: stopTokenIds)
        let generator = Generator(session: alone)
        var mismatches: [Int] = []
        for (i, prompt) in prompts.enumerated() {
            generator.reset()
            let single = try generator.generate(prompt: prompt, options: GenerationOptions(maxNewTokens: maxNewTokens, stopTokenIds: stopTokenIds))
            if single.tokens != batchedTokens[i] { mismatches.append(i) }
        }
        return BatchConsistency(maxLogitDifference: worst, maxRelativeError: worstRelative, greedyMismatches: mismatches, prompts: prompts.count)
    }
}
