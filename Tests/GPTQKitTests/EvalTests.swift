#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import GPTQKit

/// ROUGE against Google's rouge-score (use_stemmer=False) on 260 text pairs
/// (scripts/fixtures/make_rouge_fixtures.py).
@Suite struct RougeTests {
    @Test func matchesRougeScorePackage() throws {
        let fixture = try JSON.read(path: Fixtures.path("rouge/rouge_score_pairs.json"))
        let pairs = try #require(fixture["pairs"]?.array)
        #expect(pairs.count >= 200)
        for pair in pairs {
            let target = try #require(pair["target"]?.string), prediction = try #require(pair["prediction"]?.string)
            let scores = Rouge.score(target: target, prediction: prediction)
            for (name, mine) in [("rouge1", scores.rouge1), ("rouge2", scores.rouge2), ("rougeL", scores.rougeL)] {
                let expected = try #require(pair[name])
                for (field, value) in [("precision", mine.precision), ("recall", mine.recall), ("fmeasure", mine.fmeasure)] {
                    let reference = try #require(expected[field]?.double)
                    #expect(abs(value - reference) <= 1e-6, "\(name) \(field) of \(target) | \(prediction): \(value) vs \(reference)")
                }
            }
        }
    }
}

@Suite struct ClassMatchingTests {
    @Test func editDistance() {
        #expect(ClassMatching.editDistance("kitten", "sitting") == 3)
        #expect(ClassMatching.editDistance("", "abc") == 3)
        #expect(ClassMatching.editDistance("flaw", "lawn") == 2)
        #expect(ClassMatching.editDistance("positive", "positive") == 0)
        #expect(ClassMatching.editDistance("négatif", "negatif") == 1)
    }

    @Test func closestClassStripsLowercasesAndTakesTheFirstOnTies() {
        let classes = ["positive", "negative", "neutral"]
        #expect(ClassMatching.closestClass("  Positive.\n", classes: classes) == 0)
        #expect(ClassMatching.closestClass("negativ", classes: classes) == 1)
        #expect(ClassMatching.closestClass("neutr", classes: classes) == 2)
        // "ab" is one edit from both "a" and "b": the first class wins.
        #expect(ClassMatching.closestClass("ab", classes: ["a", "b"]) == 0)
        #expect(ClassMatching.closestClass("ab", classes: ["b", "a"]) == 0)
    }

    @Test func majorityVoteBreaksTiesByFirstVote() {
        #expect(ClassMatching.majority([2, 1, 1]) == 1)
        #expect(ClassMatching.majority([2, 1, 1, 2]) == 2)
        #expect(ClassMatching.majority([0, 1, 2]) == 0)
        #expect(ClassMatching.majority([1]) == 1)
    }
}

/// Beam search against transformers' generate(num_beams=4, ...) on the arch fixtures
/// (scripts/fixtures/make_beam_search_fixtures.py).
@Suite struct BeamSearchTests {
    @Test(arguments: ["llama", "qwen2", "gpt2", "opt"])
    func idsMatchTransformers(arch: String) throws {
        let model = try LanguageModel.load(folder: Fixtures.path("arch/\(arch)"))
        let fixture = try JSON.read(path: Fixtures.path("beam_search/\(arch).json"))
        let cases = try #require(fixture["cases"]?.array)
        let session = SequentialBatchSession(sessions: (0..<4).map { _ in model.makeSession(capacity: 32) })
        for c in cases {
            let prompt = try #require(c["prompt"]?.array).map { Int32($0.int!) }
            let early = try #require(c["early_stopping"])
            let options = BeamSearchOptions(
                numBeams: c["num_beams"]!.int!, maxNewTokens: c["max_new_tokens"]!.int!, lengthPenalty: Float(c["length_penalty"]!.double!),
                earlyStopping: early.bool.map { $0 ? .always : .heuristic } ?? .never, noRepeatNgramSize: c["no_repeat_ngram_size"]!.int!,
                numReturnSequences: c["num_return_sequences"]!.int!, stopTokenIds: [Int32(c["eos_token_id"]!.int!)])
            let expected = try #require(c["sequences"]?.array)
            let got = try BeamSearch.generate(prompt: prompt, session: session, options: options)
            #expect(got.count == expected.count)
            for (hypothesis, reference) in zip(got, expected) {
                let ids = reference["ids"]!.array!.map { Int32($0.int!) }
                #expect(hypothesis.tokens == ids, "\(arch) \(options.lengthPenalty) \(options.earlyStopping) ngram \(options.noRepeatNgramSize)")
                #expect(abs(Double(hypothesis.score) - reference["score"]!.double!) < 1e-4)
            }
        }
    }

    @Test func noRepeatNgramBansTheCompletingToken() {
        var row = [Float](repeating: 0, count: 10)
        BeamSearch.banRepeatedNgrams(&row, sequence: [1, 2, 3, 1, 2, 4, 1], size: 2)
        #expect(row[2] == -.infinity)
        #expect(row.filter { $0 == -.infinity }.count == 1)
        var trigram = [Float](repeating: 0, count: 10)
        BeamSearch.banRepeatedNgrams(&trigram, sequence: [1, 2, 3, 1, 2], size: 3)
        #expect(trigram[3] == -.infinity && trigram.filter { $0 == -.infinity }.count == 1)
    }
}

/// Log-likelihood scoring and AutoGPTQ's language-modeling blocks against transformers
/// (scripts/fixtures/make_eval_scoring_fixtures.py), batched and not.
@Suite struct EvalScoringTests {
    static let reference = try! JSON.read(path: Fixtures.path("eval/scoring_reference.json"))

    static func ids(_ json: JSON?) -> [Int32] { json!.array!.map { Int32($0.int!) } }

    @Test(arguments: ["llama", "gpt2", "opt"])
    func logLikelihoodsMatchTransformers(arch: String) throws {
        let model = try LanguageModel.load(folder: Fixtures.path("arch/\(arch)"))
        let rows = try #require(Self.reference["loglikelihood"]?[arch]?.array)
        let requests = rows.map { ScoringRequest(context: Self.ids($0["context"]), continuation: Self.ids($0["continuation"])) }
        let sessions: [BatchInferenceSession] = [SequentialBatchSession(sessions: [model.makeSession(capacity: 32)]),
                                                 model.makeBatchSession(slots: 3, capacity: 32)]
        for session in sessions {
            let scores = try LogLikelihood.score(requests, session: session)
            for (score, row) in zip(scores, rows) {
                #expect(abs(score.logLikelihood - row["loglikelihood"]!.double!) < 1e-4)
                #expect(score.isGreedy == row["is_greedy"]!.bool!)
            }
        }
    }

    @Test func languageModelingBlocksMatchAutoGPTQ() throws {
        let lm = try #require(Self.reference["language_modeling"])
        let model = try LanguageModel.load(folder: Fixtures.path("arch/llama"))
        let samples = lm["samples"]!.array!.map { (prompt: Self.ids($0["prompt"]), label: Self.ids($0["label"])) }
        let blockMaxLen = lm["block_max_len"]!.int!
        let blocks = LanguageModelingTask.packBlocks(lengths: samples.map { $0.prompt.count + $0.label.count }, blockMaxLen: blockMaxLen)
        #expect(blocks.map(\.count) == lm["block_sizes"]!.array!.map { $0.int! })
        let session = SequentialBatchSession(sessions: (0..<4).map { _ in model.makeSession(capacity: 64) })
        let result = try LanguageModelingTask.evaluate(samples: samples, blockMaxLen: blockMaxLen, session: session)
        #expect(abs(result.perplexity - lm["perplexity"]!.double!) / lm["perplexity"]!.double! < 1e-4)
        #expect(result.blocks == blocks.count)
        #expect(result.labelTokens == samples.reduce(0) { $0 + $1.label.count })
    }

    @Test func pythonRandomSample() throws {
        for row in try #require(Self.reference["python_sample"]?.array) {
            var random = PythonRandom(seed: row["seed"]!.int!)
            let sample = EvalDataset.pythonSample(population: row["population"]!.int!, count: row["count"]!.int!, random: &random)
            #expect(sample == row["sample"]!.array!.map { $0.int! })
        }
    }
}

/// A batch of prompts of different lengths gives, slot by slot, the logits and the greedy
/// text of each prompt run alone.
@Suite struct BatchedEqualsUnbatchedTests {
    static let prompts: [[Int32]] = [[5, 17, 42], [11, 200, 7, 64, 150, 23, 88, 9, 301], [1], [99, 98, 97, 96, 95]]

    @Test(arguments: ["llama", "gpt2"])
    func logitsAndGreedyTokens(arch: String) throws {
        let model = try LanguageModel.load(folder: Fixtures.path("arch/\(arch)"))
        // One session per slot: exactly the unbatched arithmetic.
        let sequential = try BatchConsistency.check(
            prompts: Self.prompts, batch: SequentialBatchSession(sessions: (0..<3).map { _ in model.makeSession(capacity: 40) }),
            alone: model.makeSession(capacity: 40), maxNewTokens: 12, stopTokenIds: [7])
        #expect(sequential.maxLogitDifference <= 1e-5)
        #expect(sequential.greedyMismatches.isEmpty)
        #expect(sequential.prompts == Self.prompts.count)
        // The CPU engine's batch session: all slots' rows through each layer in one pass.
        let batched = try BatchConsistency.check(prompts: Self.prompts, batch: model.makeBatchSession(slots: 3, capacity: 40),
                                                 alone: model.makeSession(capacity: 40), maxNewTokens: 12, stopTokenIds: [7])
        #expect(batched.maxRelativeError < 1e-5)
        #expect(batched.greedyMismatches.isEmpty)
    }

    @Test func theCheckSeesADifferentSlot() throws {
        // A batch whose second slot runs another model must fail the check.
        let llama = try LanguageModel.load(folder: Fixtures.path("arch/llama"))
        let qwen = try LanguageModel.load(folder: Fixtures.path("arch/qwen2"))
        let batch = SequentialBatchSession(sessions: [llama.makeSession(capacity: 40), qwen.makeSession(capacity: 40)])
        let check = try BatchConsistency.check(prompts: Self.prompts, batch: batch, alone: llama.makeSession(capacity: 40),
                                               maxNewTokens: 6, stopTokenIds: [])
        #expect(check.maxLogitDifference > 1e-3)
        #expect(!check.greedyMismatches.isEmpty)
    }
}

/// Datasets: formats, sampling, and errors that name the file, line and column.
@Suite struct EvalDatasetTests {
    static let directory: String = {
        let path = "/tmp/gptq-eval-tests-\(getpid())"
        try? FileIO.makeDirectory(path)
        return path
    }()

    static func write(_ name: String, _ text: String) throws -> String {
        let path = directory + "/" + name
        try FileIO.writeAtomically(path: path, text: text)
        return path
    }

    static func message(_ body: () throws -> Void) -> String {
        do { try body() } catch { return "\(error)" }
        return "no error"
    }

    @Test func formatsAgree() throws {
        let jsonl = try EvalDataset.load(path: Self.write("a.jsonl", "{\"prompt\": \"Hi, \\\"you\\\"\", \"label\": \"x\"}\n\n{\"prompt\": \"two\\nlines\", \"label\": 3}\n"))
        let json = try EvalDataset.load(path: Self.write("a.json", "[{\"prompt\": \"Hi, \\\"you\\\"\", \"label\": \"x\"}, {\"prompt\": \"two\\nlines\", \"label\": 3}]"))
        let csv = try EvalDataset.load(path: Self.write("a.csv", "prompt,label\r\n\"Hi, \"\"you\"\"\",x\n\"two\nlines\",3\n"))
        for dataset in [jsonl, json, csv] {
            #expect(dataset.records.map { $0.fields["prompt"] } == ["Hi, \"you\"", "two\nlines"])
            #expect(dataset.records.map { $0.fields["label"] } == ["x", "3"])
        }
        #expect(jsonl.records.map(\.line) == [1, 3])
        #expect(csv.records.map(\.line) == [2, 3])
    }

    @Test func templateFillsColumnsAndLabels() throws {
        let dataset = try EvalDataset.load(path: Self.write("t.jsonl", "{\"review\": \"Great film\", \"source\": \"web\"}\n"))
        let template = PromptTemplate("Classify ({labels}) from {source}: {text} {{literal}}", promptColumn: "review")
        #expect(try template.render(dataset.records[0], dataset: dataset, labels: ["good", "bad"])
                == "Classify (good, bad) from web: Great film {literal}")
    }

    @Test func errorsNameFileLineAndColumn() throws {
        let path = try Self.write("missing.jsonl", "{\"prompt\": \"a\", \"label\": \"x\"}\n{\"prompt\": \"b\"}\n")
        let dataset = try EvalDataset.load(path: path)
        let missing = Self.message { _ = try dataset.column("label", of: dataset.records[1]) }
        #expect(missing.contains("\(path):2") && missing.contains("missing column 'label'"))
        let empty = try Self.write("empty.jsonl", "\n\n")
        #expect(Self.message { _ = try EvalDataset.load(path: empty) }.contains("no records"))
        let bad = try Self.write("bad.jsonl", "{\"prompt\": \"a\"}\n{\"prompt\": }\n")
        #expect(Self.message { _ = try EvalDataset.load(path: bad) }.contains("\(bad):2"))
        let ragged = try Self.write("ragged.csv", "prompt,label\na,b\nc\n")
        #expect(Self.message { _ = try EvalDataset.load(path: ragged) }.contains("\(ragged):3"))
        #expect(Self.message { _ = try EvalDataset.load(path: Self.directory + "/none.jsonl") }.contains("not found"))
        #expect(Self.message { _ = try dataset.sample(count: 3, seed: 0) }.contains("--num-samples 3"))
    }

    static func evalModel() throws -> EvalModel {
        let model = try LanguageModel.load(folder: Fixtures.path("arch/llama"))
        return EvalModel(session: SequentialBatchSession(sessions: [model.makeSession(capacity: 64)]),
                         tokenizer: try Tokenizer(folder: Fixtures.path("tokenizers/smollm2")), stopTokenIds: [])
    }

    @Test func taskErrors() throws {
        let model = try Self.evalModel()
        let one = try Self.write("one.jsonl", "{\"question\": \"Sky?\", \"choices\": [\"blue\", \"red\"], \"answer\": 0}\n{\"question\": \"Sea?\", \"choices\": [\"wet\"], \"answer\": 0}\n")
        let choice = MultipleChoiceTask(data: EvalData(dataset: try EvalDataset.load(path: one), template: PromptTemplate("{text}", promptColumn: "question")))
        let oneMessage = Self.message { _ = try choice.run(model: model) }
        #expect(oneMessage.contains("\(one):2") && oneMessage.contains("at least two"))

        let long = try Self.write("long.jsonl", "{\"prompt\": \"a\", \"label\": \"" + String(repeating: "word ", count: 40) + "\"}\n")
        let lm = LanguageModelingTask(data: EvalData(dataset: try EvalDataset.load(path: long), template: PromptTemplate("{text}", promptColumn: "prompt")),
                                      blockMaxLen: 16)
        let longMessage = Self.message { _ = try lm.run(model: model) }
        #expect(longMessage.contains("\(long):1") && longMessage.contains("the label has"))

        let single = try Self.write("single.jsonl", "{\"prompt\": \"a\", \"label\": \"yes\"}\n")
        let classification = ClassificationTask(data: EvalData(dataset: try EvalDataset.load(path: single), template: PromptTemplate("{text}", promptColumn: "prompt")),
                                                method: .logLikelihood)
        #expect(Self.message { _ = try classification.run(model: model) }.contains("at least two classes"))

        let badAnswer = try Self.write("answer.jsonl", "{\"question\": \"Sky?\", \"choices\": [\"blue\", \"red\"], \"answer\": \"green\"}\n")
        let answerTask = MultipleChoiceTask(data: EvalData(dataset: try EvalDataset.load(path: badAnswer), template: PromptTemplate("{text}", promptColumn: "question")))
        #expect(Self.message { _ = try answerTask.run(model: model) }.contains("answer 'green'"))
    }
}
