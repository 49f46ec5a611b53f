import Testing
import GPTQKit

/// Sequences fed together through CPUBatchSession give the logits each gives alone
/// (CPUSession): prompts of different lengths, then decode steps with slots joining and
/// sitting out, on families with rotary, ALiBi, learned and no positions.
@Suite struct BatchSessionTests {
    @Test(arguments: ["llama", "qwen2", "gpt2", "bloom", "falcon-rw-alibi", "opt-350m-layout", "gptj"])
    func batchedEqualsAlone(arch: String) throws {
        let model = try LanguageModel.load(folder: Fixtures.path("arch/\(arch)"))
        var random = PythonRandom(seed: 7)
        let prompts: [[Int32]] = [5, 12, 1, 9].map { n in (0..<n).map { _ in Int32(random.randbelow(model.vocabSize)) } }
        let batch = model.makeBatchSession(slots: 4, capacity: 24)
        let alone = prompts.map { _ in model.makeSession(capacity: 24) }

        // Prefill slots 0, 1, 3 together (every row's logits), then slot 2 alone.
        let first = try batch.forward([(0, prompts[0]), (1, prompts[1]), (3, prompts[3])], allLogits: true)
        for (i, slot) in [0, 1, 3].enumerated() {
            #expect(relativeError(first[i], try alone[slot].forward(prompts[slot], allLogits: true)) < 1e-5, "\(arch) slot \(slot)")
        }
        _ = try batch.forward([(2, prompts[2])], allLogits: false)
        _ = try alone[2].forward(prompts[2], allLogits: false)
        // Decode steps: every slot a token, last-token logits.
        for step in 0..<4 {
            let tokens = (0..<4).map { Int32(($0 * 31 + step * 7) % model.vocabSize) }
            let together = try batch.forward((0..<4).map { ($0, [tokens[$0]]) }, allLogits: false)
            for slot in 0..<4 {
                #expect(relativeError(together[slot], try alone[slot].forward([tokens[slot]], allLogits: false)) < 1e-5, "\(arch) step \(step)")
                #expect(batch.position(of: slot) == alone[slot].position)
            }
        }
        #expect(throws: GPTQError.invalidArgument("batch forward: slot 1 named twice")) {
            try batch.forward([(1, [1]), (1, [2])], allLogits: false)
        }
    }
}
