#if canImport(Glibc)
import Glibc
#endif
import Testing
import GPTQKit

@Suite struct PerplexityTests {
    /// Mean cross-entropy of the predictions rows[from..<to) make of tokens[from+1...], in
    /// float64 from transformers' logits.
    static func referenceLoss(logits: [Float], tokens: [Int32], vocab: Int, rows: Range<Int>) -> Double {
        var sum = 0.0
        for j in rows {
            let row = logits[j * vocab..<(j + 1) * vocab].map(Double.init)
            let m = row.max()!
            let logSumExp = m + log(row.reduce(0) { $0 + exp($1 - m) })
            sum += logSumExp - row[Int(tokens[j + 1])]
        }
        return sum / Double(rows.count)
    }

    /// The two fixture sequences as one text of two 12-token windows, fed in chunks of 5
    /// (so the KV cache carries each window across calls).
    @Test(arguments: PerplexityProtocol.allCases)
    func matchesTheFormulaOnTransformersLogits(scoring: PerplexityProtocol) throws {
        let model = try LanguageModel.load(folder: Fixtures.path("arch/llama"))
        let ref = try ArchTests.Reference("llama")
        let tokens = ref.inputIds[0] + ref.inputIds[1]
        let vocab = model.vocabSize, n = 12
        let first = scoring == .gptq ? 0 : n / 2
        let losses = (0..<2).map { w in
            Self.referenceLoss(logits: Array(ref.logits[w * n * vocab..<(w + 1) * n * vocab]), tokens: Array(ref.inputIds[w]),
                          vocab: vocab, rows: first..<n - 1)
        }
        var reported: [Int] = []
        let result = try Perplexity.evaluate(tokens: tokens + [1, 2, 3], session: model.makeSession(capacity: 16), seqlen: n,
                                             protocol: scoring, chunk: 5) { done, total, _ in
            reported.append(done)
            #expect(total == 2)
        }
        #expect(reported == [1, 2])
        #expect(result.scoredTokens == 2 * (n - 1 - first))
        for (ours, theirs) in zip(result.windowLosses, losses) { #expect((ours - theirs).magnitude < 1e-4 * theirs) }
        let expected = exp((losses[0] + losses[1]) / 2)
        #expect((result.perplexity - expected).magnitude < 1e-4 * expected)
    }

    @Test func windowsLimitsTheWindowsUsed() throws {
        let model = try LanguageModel.load(folder: Fixtures.path("arch/llama"))
        let ref = try ArchTests.Reference("llama")
        let session = model.makeSession(capacity: 12)
        let one = try Perplexity.evaluate(tokens: ref.inputIds[0] + ref.inputIds[1], session: session, seqlen: 12, windows: 1)
        let alone = try Perplexity.evaluate(tokens: ref.inputIds[0], session: session, seqlen: 12)
        #expect(one.windowLosses == alone.windowLosses)
    }

    @Test func badArgumentsAreNamed() throws {
        let model = try LanguageModel.load(folder: Fixtures.path("arch/llama"))
        let session = model.makeSession(capacity: 8)
        let tokens = [Int32](repeating: 5, count: 20)
        #expect(throws: GPTQError.invalidArgument("seqlen 16 exceeds the session capacity 8")) {
            try Perplexity.evaluate(tokens: tokens, session: session, seqlen: 16)
        }
        #expect(throws: GPTQError.invalidArgument("the text has 5 tokens, fewer than one window of seqlen 8")) {
            try Perplexity.evaluate(tokens: Array(tokens.prefix(5)), session: session, seqlen: 8)
        }
        #expect(throws: GPTQError.invalidArgument("windows 3: the text has 1...2 windows of 8 tokens")) {
            try Perplexity.evaluate(tokens: tokens, session: session, seqlen: 8, windows: 3)
        }
    }

    /// SmolLM2-135M in float32 arithmetic on wikitext-2 (ids from the HF tokenizers library):
    /// transformers gives 20.7146 over the first 16 windows of 2048 (REFERENCE.md).
    @Test(.enabled(if: RealModel.folder != nil, "needs the SmolLM2 folder of scripts/fetch-model.sh"))
    func realModelMatchesTransformers() throws {
        let model = try LanguageModel.load(folder: RealModel.folder!)
        let ids = try SafetensorsFile(path: Fixtures.path("data/wikitext2-test-smollm2-ids.safetensors")).tensor("input_ids").ints()
        let result = try Perplexity.evaluate(tokens: ids, session: model.makeSession(capacity: 2048), seqlen: 2048, windows: 16)
        #expect((result.perplexity - 20.7146).magnitude < 0.001 * 20.7146, "perplexity \(result.perplexity)")
    }
}
