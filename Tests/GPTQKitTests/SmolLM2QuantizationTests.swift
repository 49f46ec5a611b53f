import Testing
import GPTQKit

/// GPTQ on the real model, with a small calibration set so that it runs in a couple of
/// minutes (the full 128 × 512 acceptance run is in BENCHMARKS.md and scripts/main-job.sh).
@Suite(.enabled(if: RealModel.folder != nil, "needs the SmolLM2 folder of scripts/fetch-model.sh"))
struct SmolLM2QuantizationTests {
    let dir = "/tmp/gptq-smollm2-quantization-tests-\(UInt32.random(in: 0...UInt32.max))"

    /// 4-bit group 128 (SmolLM2's 576 columns leave a partial last group): on the first two
    /// windows of wikitext-2 test GPTQ beats round-to-nearest, both stay above the float
    /// model, and the saved folder gives the in-memory model's logits.
    @Test func gptqBeatsRoundToNearestAndItsFolderReloads() throws {
        let folder = RealModel.folder!
        let tokenizer = try Tokenizer(folder: folder)
        let corpus = try CalibrationCorpus.load(path: Fixtures.path("data/wikitext2-valid-tokenized.txt"), format: .text,
                                                tokenize: { tokenizer.encode($0) })
        let samples = try corpus.samples(.randomWindows(count: 16, length: 256, seed: 0))
        let config = QuantizeConfig(bits: 4, groupSize: 128)
        let gptq = try GPTQPipeline.quantize(try LanguageModel.load(folder: folder), config: config, calibration: samples)
        let rtn = try GPTQPipeline.quantize(try LanguageModel.load(folder: folder), config: config, calibration: [], method: .rtn)

        let text = tokenizer.encode(try FileIO.readText(path: Fixtures.path("data/wikitext2-test.txt")))
        func perplexity(_ model: LanguageModel) throws -> Double {
            try Perplexity.evaluate(tokens: text, session: model.makeSession(capacity: 2048), windows: 2).perplexity
        }
        let float = try perplexity(try LanguageModel.load(folder: folder))
        let gptqPerplexity = try perplexity(gptq.model), rtnPerplexity = try perplexity(rtn.model)
        #expect(float < gptqPerplexity && gptqPerplexity < rtnPerplexity, "float \(float), GPTQ \(gptqPerplexity), RTN \(rtnPerplexity)")
        #expect(gptqPerplexity < float * 1.5, "float \(float), GPTQ \(gptqPerplexity)")

        try gptq.save(to: dir + "/gptq")
        let reloaded = try LanguageModel.load(folder: dir + "/gptq")
        // The folder's embeddings and norms are SmolLM2's own float16 values and the layers the
        // same packed tensors: the logits agree but for summation order.
        let prefix = Array(text.prefix(64))
        let expected = try gptq.model.makeSession(capacity: 64).forward(prefix, allLogits: true)
        #expect(relativeError(try reloaded.makeSession(capacity: 64).forward(prefix, allLogits: true), expected) < 1e-4)
    }
}
