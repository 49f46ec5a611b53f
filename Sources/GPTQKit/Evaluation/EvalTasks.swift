import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// What a task runs on: a model's batch session, its tokenizer and its end-of-sequence ids.
/// The session is wrapped to count the tokens fed and the time spent in the model.
public final class EvalModel {
    public let session: MeteredBatchSession
    public let tokenizer: Tokenizer
    public let stopTokenIds: Set<Int32>

    public init(session: BatchInferenceSession, tokenizer: Tokenizer, stopTokenIds: Set<Int32>) {
        self.session = MeteredBatchSession(session)
        self.tokenizer = tokenizer
        self.stopTokenIds = stopTokenIds
    }

    /// lm-eval's _encode_pair: the continuation's tokens are those of context + continuation
    /// after the context's own (so a word boundary tokenizes as in running text), with
    /// trailing spaces of the context moved to the continuation.
    func encodePair(context: String, continuation: String) -> (context: [Int32], continuation: [Int32]) {
        var context = context, continuation = continuation
        while context.last == " " { context.removeLast(); continuation = " " + continuation }
        let whole = tokenizer.encode(context + continuation, addSpecialTokens: true)
        let head = tokenizer.encode(context, addSpecialTokens: true)
        return (head, Array(whole[min(head.count, whole.count)...]))
    }
}

/// A BatchInferenceSession that counts the tokens fed through it and the seconds spent, for
/// the tokens/s that `gptq eval` reports (batched against unbatched scoring).
public final class MeteredBatchSession: BatchInferenceSession {
    let inner: BatchInferenceSession
    public private(set) var tokensFed = 0
    public private(set) var seconds = 0.0

    init(_ inner: BatchInferenceSession) { self.inner = inner }

    public var vocabSize: Int { inner.vocabSize }
    public var slots: Int { inner.slots }
    public var capacity: Int { inner.capacity }
    public func position(of slot: Int) -> Int { inner.position(of: slot) }
    public func rewind(slot: Int, to position: Int) { inner.rewind(slot: slot, to: position) }

    public func forward(_ batch: [(slot: Int, tokens: [Int32])], allLogits: Bool) throws -> [[Float]] {
        let clock = ContinuousClock(), start = clock.now
        defer { seconds += (clock.now - start).seconds }
        tokensFed += batch.reduce(0) { $0 + $1.tokens.count }
        return try inner.forward(batch, allLogits: allLogits)
    }

    public var tokensPerSecond: Double { seconds > 0 ? Double(tokensFed) / seconds : 0 }
}

/// Where a task's samples come from and how their prompts are made.
public struct EvalData: Sendable {
    public var dataset: EvalDataset
    public var template: PromptTemplate
    /// Draw this many records (nil: all) with Python's random.sample under `seed`.
    public var numSamples: Int?
    public var seed: Int
    /// Prompts longer than this many tokens keep their last ones (AutoGPTQ's truncate_prompt);
    /// the language-modeling task applies it to prompt + label (AutoGPTQ's sample_max_len).
    public var maxLength: Int

    public init(dataset: EvalDataset, template: PromptTemplate, numSamples: Int? = nil, seed: Int = 0, maxLength: Int = 1024) {
        self.dataset = dataset
        self.template = template
        self.numSamples = numSamples
        self.seed = seed
        self.maxLength = maxLength
    }

    func records() throws -> [EvalRecord] {
        guard maxLength >= 2 else { throw GPTQError.invalidArgument("--max-length must be at least 2, got \(maxLength)") }
        return try dataset.sample(count: numSamples, seed: seed)
    }

    /// Every sample's prompt tokens, as the generating tasks feed them.
    public func prompts(model: EvalModel, labels: [String] = []) throws -> [[Int32]] {
        try records().map { try prompt($0, model: model, labels: labels) }
    }

    func promptText(_ record: EvalRecord, labels: [String] = []) throws -> String {
        try template.render(record, dataset: dataset, labels: labels)
    }

    func where_(_ record: EvalRecord) -> String { "\(dataset.path):\(record.line)" }

    /// The prompt's tokens (with the tokenizer's special tokens), cut to the last maxLength.
    func prompt(_ record: EvalRecord, model: EvalModel, labels: [String] = []) throws -> [Int32] {
        let tokens = model.tokenizer.encode(try promptText(record, labels: labels), addSpecialTokens: true)
        guard !tokens.isEmpty else { throw GPTQError.invalidFile(path: where_(record), reason: "the prompt has no tokens") }
        return Array(tokens.suffix(maxLength))
    }
}

/// How the generating tasks generate.
public struct TaskGeneration: Sendable {
    public var maxNewTokens: Int
    /// 1: greedy or sampling; more: beam search with these options (maxNewTokens, returns and
    /// stop ids are the task's).
    public var beams: BeamSearchOptions
    /// Temperature 0 is greedy; otherwise each return sequence is sampled (seed + its index).
    public var sampling: SamplingParameters
    public var numReturnSequences: Int
    public var seed: UInt64

    public init(maxNewTokens: Int = 64, beams: BeamSearchOptions = BeamSearchOptions(numBeams: 1), sampling: SamplingParameters = SamplingParameters(),
                numReturnSequences: Int = 1, seed: UInt64 = 0) {
        self.maxNewTokens = maxNewTokens
        self.beams = beams
        self.sampling = sampling
        self.numReturnSequences = numReturnSequences
        self.seed = seed
    }

    /// Per prompt, its return sequences' ids (stop ids removed).
    func run(_ prompts: [[Int32]], model: EvalModel, progress: ((Int, Int) -> Void)?) throws -> [[[Int32]]] {
        guard maxNewTokens >= 1 else { throw GPTQError.invalidArgument("--max-new-tokens must be at least 1, got \(maxNewTokens)") }
        guard numReturnSequences >= 1 else { throw GPTQError.invalidArgument("--num-return-sequences must be at least 1") }
        let stops = model.stopTokenIds
        func strip(_ ids: [Int32]) -> [Int32] { ids.filter { !stops.contains($0) } }
        if beams.numBeams > 1 {
            var options = beams
            options.maxNewTokens = maxNewTokens
            options.numReturnSequences = numReturnSequences
            options.stopTokenIds = stops
            return try prompts.enumerated().map { i, prompt in
                defer { progress?(i + 1, prompts.count) }
                return try BeamSearch.generate(prompt: prompt, session: model.session, options: options).map { strip($0.tokens) }
            }
        }
        if sampling.isGreedy {
            guard numReturnSequences == 1 else {
                throw GPTQError.invalidArgument("--num-return-sequences \(numReturnSequences) needs beams (--num-beams) or sampling (--temperature > 0)")
            }
            return try BatchGeneration.greedy(prompts: prompts, session: model.session, maxNewTokens: maxNewTokens,
                                              stopTokenIds: stops, progress: progress).map { [strip($0)] }
        }
        try sampling.validate()
        let generator = Generator(session: BatchSlotSession(batch: model.session, slot: 0))
        return try prompts.enumerated().map { i, prompt in
            defer { progress?(i + 1, prompts.count) }
            return try (0..<numReturnSequences).map { r in
                let options = GenerationOptions(maxNewTokens: maxNewTokens, sampling: sampling, seed: seed &+ UInt64(r), stopTokenIds: stops)
                return strip(try generator.generate(prompt: prompt, options: options).tokens)
            }
        }
    }
}

// MARK: language modeling

public struct LanguageModelingResult: Sendable {
    /// AutoGPTQ's figure: exp of the mean of the blocks' mean label losses.
    public let perplexity: Double
    /// exp of the mean loss over all label tokens.
    public let perTokenPerplexity: Double
    public let blocks: Int
    public let samples: Int
    public let labelTokens: Int
}

/// AutoGPTQ's LanguageModelingTask: prompt and label joined, only the label's tokens scored;
/// samples sorted by length and packed into blocks of at most blockMaxLen (padded) tokens as
/// AutoGPTQ's make_data_block packs them, each block's loss the mean over its label tokens.
/// The prompt is tokenized with the tokenizer's special tokens, the label without them.
public struct LanguageModelingTask: Sendable {
    public var data: EvalData
    public var labelColumn: String
    public var blockMaxLen: Int

    public init(data: EvalData, labelColumn: String = "label", blockMaxLen: Int = 2048) {
        self.data = data
        self.labelColumn = labelColumn
        self.blockMaxLen = blockMaxLen
    }

    public func run(model: EvalModel, progress: ((Int, Int) -> Void)? = nil) throws -> LanguageModelingResult {
        guard blockMaxLen >= 2 else { throw GPTQError.invalidArgument("--block-max-len must be at least 2, got \(blockMaxLen)") }
        var samples: [(prompt: [Int32], label: [Int32])] = []
        for record in try data.records() {
            let label = model.tokenizer.encode(try data.dataset.column(labelColumn, of: record), addSpecialTokens: false)
            guard !label.isEmpty else { throw GPTQError.invalidFile(path: data.where_(record), reason: "column '\(labelColumn)' has no tokens") }
            let limit = min(data.maxLength, blockMaxLen)
            guard label.count < limit else {
                throw GPTQError.invalidFile(path: data.where_(record),
                    reason: "the label has \(label.count) tokens; with at least one prompt token it must fit --max-length/--block-max-len (\(limit))")
            }
            var prompt = model.tokenizer.encode(try data.promptText(record), addSpecialTokens: true)
            guard !prompt.isEmpty else { throw GPTQError.invalidFile(path: data.where_(record), reason: "the prompt has no tokens") }
            prompt = Array(prompt.suffix(data.maxLength - label.count))
            samples.append((prompt, label))
        }
        return try Self.evaluate(samples: samples, blockMaxLen: blockMaxLen, session: model.session, progress: progress)
    }

    /// The task on tokenized samples: each prompt's label scored after it, blocks packed.
    public static func evaluate(samples: [(prompt: [Int32], label: [Int32])], blockMaxLen: Int, session: BatchInferenceSession,
                                progress: ((Int, Int) -> Void)? = nil) throws -> LanguageModelingResult {
        guard !samples.isEmpty else { throw GPTQError.invalidArgument("no samples to evaluate") }
        let blocks = packBlocks(lengths: samples.map { $0.prompt.count + $0.label.count }, blockMaxLen: blockMaxLen)
        let scores = try LogLikelihood.score(samples.map { ScoringRequest(context: $0.prompt, continuation: $0.label) },
                                             session: session) { done, total, _ in progress?(done, total) }
        var blockLosses: [Double] = [], total = 0.0, tokens = 0
        for block in blocks {
            let nll = block.reduce(0.0) { $0 - scores[$1].logLikelihood }
            let count = block.reduce(0) { $0 + samples[$1].label.count }
            blockLosses.append(nll / Double(count))
            total += nll
            tokens += count
        }
        return LanguageModelingResult(perplexity: exp(blockLosses.reduce(0, +) / Double(blockLosses.count)),
                                      perTokenPerplexity: exp(total / Double(tokens)), blocks: blocks.count,
                                      samples: samples.count, labelTokens: tokens)
    }

    /// AutoGPTQ's make_data_block (merge_prompt_label=True): samples sorted by length (stably),
    /// added to a block while its padded size, rows × longest row, stays within blockMaxLen.
    /// Returns each block's sample indices.
    static func packBlocks(lengths: [Int], blockMaxLen: Int) -> [[Int]] {
        let order = lengths.indices.sorted { lengths[$0] < lengths[$1] || (lengths[$0] == lengths[$1] && $0 < $1) }
        var blocks: [[Int]] = [], block: [Int] = []
        var longest = 0, padded = 0
        for index in order {
            let length = lengths[index]
            var added = length <= longest ? longest : block.count * (length - longest) + length
            var rowLength = max(longest, length)
            if padded + added > blockMaxLen, !block.isEmpty {
                blocks.append(block)
                (block, longest, padded) = ([], 0, 0)
                (added, rowLength) = (length, length)
            }
            block.append(index)
            longest = rowLength
            padded += added
        }
        if !block.isEmpty { blocks.append(block) }
        return blocks
    }
}

// MARK: classification

public enum ClassificationMethod: Sendable {
    /// AutoGPTQ's: generate at most as many tokens as the longest class name, map each return
    /// sequence to the closest class by edit distance, majority vote.
    case generate(TaskGeneration)
    /// lm-eval's: score " class" after the prompt for every class, take the most likely.
    case logLikelihood
}

public struct ClassificationResult: Sendable {
    public let accuracy: Double
    public let correct: Int
    public let samples: Int
    /// The class chosen for each sample.
    public let predictions: [String]
}

/// AutoGPTQ's SequenceClassificationTask, and its log-likelihood counterpart.
public struct ClassificationTask: Sendable {
    public var data: EvalData
    public var labelColumn: String
    /// The class names; nil: the distinct labels of the whole dataset, in order of appearance.
    public var classes: [String]?
    public var method: ClassificationMethod

    public init(data: EvalData, labelColumn: String = "label", classes: [String]? = nil, method: ClassificationMethod) {
        self.data = data
        self.labelColumn = labelColumn
        self.classes = classes
        self.method = method
    }

    public func run(model: EvalModel, progress: ((Int, Int) -> Void)? = nil) throws -> ClassificationResult {
        let records = try data.records()
        var classes = self.classes ?? []
        if self.classes == nil {
            for record in data.dataset.records {
                let label = try data.dataset.column(labelColumn, of: record).strippingWhitespace()
                if !classes.contains(label) { classes.append(label) }
            }
        }
        guard classes.count >= 2 else {
            throw GPTQError.invalidFile(path: data.dataset.path, reason: "classification needs at least two classes, found \(classes)")
        }
        var truth: [Int] = []
        for record in records {
            let label = try data.dataset.column(labelColumn, of: record).strippingWhitespace()
            guard let index = classes.firstIndex(of: label) else {
                throw GPTQError.invalidFile(path: data.where_(record), reason: "label '\(label)' is not one of the classes \(classes)")
            }
            truth.append(index)
        }
        var chosen: [Int] = []
        switch method {
        case var .generate(generation):
            generation.maxNewTokens = classes.map { model.tokenizer.encode($0, addSpecialTokens: false).count }.max()!
            let prompts = try records.map { try data.prompt($0, model: model, labels: classes) }
            let outputs = try generation.run(prompts, model: model, progress: progress)
            chosen = outputs.map { sequences in
                ClassMatching.majority(sequences.map {
                    ClassMatching.closestClass(model.tokenizer.decode($0, skipSpecialTokens: true), classes: classes)
                })
            }
        case .logLikelihood:
            var requests: [ScoringRequest] = []
            for record in records {
                let context = try data.promptText(record, labels: classes)
                for name in classes {
                    let pair = model.encodePair(context: context, continuation: " " + name)
                    requests.append(ScoringRequest(context: Array(pair.context.suffix(data.maxLength)), continuation: pair.continuation))
                }
            }
            let scores = try LogLikelihood.score(requests, session: model.session) { done, total, _ in progress?(done, total) }
            chosen = stride(from: 0, to: scores.count, by: classes.count).map { start in
                Self.best(scores[start..<(start + classes.count)].map(\.logLikelihood))
            }
        }
        let correct = zip(chosen, truth).filter { $0 == $1 }.count
        return ClassificationResult(accuracy: Double(correct) / Double(records.count), correct: correct, samples: records.count,
                                    predictions: chosen.map { classes[$0] })
    }

    /// The index of the largest value (the first on ties, as numpy's argmax).
    static func best(_ values: [Double]) -> Int {
        var best = 0
        for i in values.indices where values[i] > values[best] { best = i }
        return best
    }
}

// MARK: summarization

public struct SummarizationResult: Sendable {
    /// Mean ROUGE over the samples (rouge-score, no stemming).
    public let rouge: RougeScores
    public let samples: Int
    public let summaries: [String]
}

/// AutoGPTQ's TextSummarizationTask: a summary generated per prompt, lower-cased and
/// stripped, scored against the reference (likewise) with ROUGE-1, ROUGE-2 and ROUGE-L.
/// With several return sequences the first (the best beam) is scored.
public struct SummarizationTask: Sendable {
    public var data: EvalData
    public var summaryColumn: String
    public var generation: TaskGeneration

    public init(data: EvalData, summaryColumn: String = "summary", generation: TaskGeneration) {
        self.data = data
        self.summaryColumn = summaryColumn
        self.generation = generation
    }

    public func run(model: EvalModel, progress: ((Int, Int) -> Void)? = nil) throws -> SummarizationResult {
        let records = try data.records()
        let references = try records.map { try data.dataset.column(summaryColumn, of: $0).strippingWhitespace().lowercased() }
        let prompts = try records.map { try data.prompt($0, model: model) }
        let outputs = try generation.run(prompts, model: model, progress: progress)
        let summaries = outputs.map { model.tokenizer.decode($0[0], skipSpecialTokens: true).strippingWhitespace().lowercased() }
        let scores = zip(references, summaries).map { Rouge.score(target: $0, prediction: $1) }
        return SummarizationResult(rouge: Rouge.mean(scores), samples: records.count, summaries: summaries)
    }
}

// MARK: multiple choice

public struct MultipleChoiceResult: Sendable {
    /// The most likely choice is the answer.
    public let accuracy: Double
    /// The choice most likely per character is the answer (lm-eval's acc_norm).
    public let normalizedAccuracy: Double
    public let samples: Int
}

/// lm-eval's multiple choice (HellaSwag, ARC, PIQA): each choice scored as " choice" after
/// the prompt by the sum of its tokens' log-probabilities.
public struct MultipleChoiceTask: Sendable {
    public var data: EvalData
    public var choicesColumn: String
    /// The correct choice: its 0-based index, or its text.
    public var answerColumn: String

    public init(data: EvalData, choicesColumn: String = "choices", answerColumn: String = "answer") {
        self.data = data
        self.choicesColumn = choicesColumn
        self.answerColumn = answerColumn
    }

    public func run(model: EvalModel, progress: ((Int, Int) -> Void)? = nil) throws -> MultipleChoiceResult {
        let records = try data.records()
        var requests: [ScoringRequest] = [], items: [(choices: [String], answer: Int)] = []
        for record in records {
            let choices = try data.dataset.listColumn(choicesColumn, of: record)
            guard choices.count >= 2 else {
                throw GPTQError.invalidFile(path: data.where_(record), reason: "column '\(choicesColumn)' has \(choices.count) choice(s); at least two are needed")
            }
            let answerText = try data.dataset.column(answerColumn, of: record)
            guard let answer = Int(answerText).flatMap({ choices.indices.contains($0) ? $0 : nil }) ?? choices.firstIndex(of: answerText) else {
                throw GPTQError.invalidFile(path: data.where_(record),
                                            reason: "answer '\(answerText)' is neither an index 0..<\(choices.count) nor one of the choices")
            }
            let context = try data.promptText(record)
            for choice in choices {
                let pair = model.encodePair(context: context, continuation: " " + choice)
                requests.append(ScoringRequest(context: Array(pair.context.suffix(data.maxLength)), continuation: pair.continuation))
            }
            items.append((choices, answer))
        }
        let scores = try LogLikelihood.score(requests, session: model.session) { done, total, _ in progress?(done, total) }
        var correct = 0, correctNormalized = 0, offset = 0
        for item in items {
            let ll = scores[offset..<(offset + item.choices.count)].map(\.logLikelihood)
            offset += item.choices.count
            if ClassificationTask.best(ll) == item.answer { correct += 1 }
            // lm-eval divides by the choice's length in characters (Python's len: code points).
            let normalized = zip(ll, item.choices).map { $0 / Double($1.unicodeScalars.count) }
            if ClassificationTask.best(normalized) == item.answer { correctNormalized += 1 }
        }
        return MultipleChoiceResult(accuracy: Double(correct) / Double(items.count),
                                    normalizedAccuracy: Double(correctNormalized) / Double(items.count), samples: items.count)
    }
}
