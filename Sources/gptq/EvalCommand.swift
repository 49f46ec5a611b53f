#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import GPTQKit

enum EvalTaskKind: String, ExpressibleByArgument, CaseIterable {
    case lm, classification, summarization, choice

    /// The columns a task reads by default: the prompt's and the answer's.
    var defaultColumns: (prompt: String, label: String) {
        switch self {
        case .lm, .classification: return ("prompt", "label")
        case .summarization: return ("document", "summary")
        case .choice: return ("question", "answer")
        }
    }
}

enum ClassificationMethodFlag: String, ExpressibleByArgument, CaseIterable {
    case generate, loglikelihood
}

extension BeamEarlyStopping: ExpressibleByArgument {}

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate a model on a task from a local dataset (AutoGPTQ's tasks, lm-eval's multiple choice).",
        discussion: """
            Tasks: lm (AutoGPTQ's LanguageModelingTask: prompt + label, the label's tokens scored, \
            blocks of --block-max-len tokens; perplexity as exp(mean block loss) and per token), \
            classification (AutoGPTQ's SequenceClassificationTask: generate, closest class by edit \
            distance, majority vote over --num-return-sequences; or --method loglikelihood), \
            summarization (AutoGPTQ's TextSummarizationTask: ROUGE-1/2/L as rouge-score computes \
            them without stemming), choice (lm-eval's multiple choice: acc and acc_norm). \
            Datasets are .jsonl, .json (an array of objects) or .csv files. The prompt is \
            --template with {text} the prompt column, {labels} the class names, {name} any column. \
            --baseline runs a second model (e.g. the float one) on the same samples and prints both. \
            Progress goes to stderr; the table and the tokens/s of the model calls to stdout.
            """
    )

    @Option(parsing: .unconditional, help: "The model folder.")
    var model: String

    @Option(parsing: .unconditional, help: "A second model folder evaluated on the same samples (e.g. the float model), printed side by side.")
    var baseline: String?

    @Option(parsing: .unconditional, help: "The task: lm, classification, summarization or choice.")
    var task: EvalTaskKind

    @Option(parsing: .unconditional, help: "The dataset: a .jsonl, .json or .csv file.")
    var data: String

    @Option(parsing: .unconditional, help: "The prompt template ({text}: the prompt column; {labels}: the class names; {column}: any column).")
    var template = "{text}"

    @Option(parsing: .unconditional, help: "The prompt column (default: prompt; document for summarization; question for choice).")
    var promptColumn: String?

    @Option(parsing: .unconditional, help: "The answer column (default: label; summary for summarization; answer for choice: an index or the choice's text).")
    var labelColumn: String?

    @Option(parsing: .unconditional, help: "The choices column of the choice task (a JSON array of strings).")
    var choicesColumn = "choices"

    @Option(parsing: .unconditional, help: "Evaluate this many records, drawn with Python's random.sample under --seed (default: all).")
    var numSamples: Int?

    @Option(parsing: .unconditional, help: "Seed for drawing the samples and for sampled generation.")
    var seed = 0

    @Option(parsing: .unconditional, help: "Prompts keep their last this many tokens (lm: prompt + label, AutoGPTQ's sample_max_len).")
    var maxLength = 1024

    @Option(parsing: .unconditional, help: "lm: the most tokens (padded, as AutoGPTQ packs them) in one block of samples.")
    var blockMaxLen = 2048

    @Option(parsing: .unconditional, help: "classification: the class names, comma-separated (default: the dataset's distinct labels).")
    var classes: String?

    @Option(parsing: .unconditional, help: "classification: generate (AutoGPTQ) or loglikelihood (lm-eval).")
    var method: ClassificationMethodFlag = .generate

    @Option(parsing: .unconditional, help: "summarization: most tokens to generate.")
    var maxNewTokens = 64

    @Option(parsing: .unconditional, help: "Beam search with this many beams (1: greedy or sampling).")
    var numBeams = 1

    @Option(parsing: .unconditional, help: "Beam search: finished hypotheses score sum(log p) / length^P.")
    var lengthPenalty: Float = 1

    @Option(parsing: .unconditional, help: "Beam search: false (transformers' heuristic), true (stop at num-beams finished) or never.")
    var earlyStopping: BeamEarlyStopping = .heuristic

    @Option(parsing: .unconditional, help: "Beam search: no n-gram of this size repeats (0: off).")
    var noRepeatNgramSize = 0

    @Option(parsing: .unconditional, help: "Sequences per prompt (beams, or samples with --temperature); classification votes over them.")
    var numReturnSequences = 1

    @Option(parsing: .unconditional, help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0

    @Option(parsing: .unconditional, help: "Sample among the K most likely tokens; 0 disables.")
    var topK = 0

    @Option(parsing: .unconditional, help: "Sample among the most likely tokens whose probability adds up to P.")
    var topP: Float = 1

    @Option(parsing: .unconditional, help: "Sequences fed through the model together (batched scoring and greedy generation).")
    var batchSize = 8

    @Flag(help: "Instead of the task, check batching on the samples' prompts: every logit and --max-new-tokens greedy tokens, batched against one prompt at a time.")
    var checkBatching = false

    @Option(parsing: .unconditional, help: "CPU threads (default: all cores).")
    var threads: Int?

    @OptionGroup var device: DeviceFlags

    func validate() throws {
        if let numSamples, numSamples < 1 { throw ValidationError("--num-samples must be at least 1") }
        guard maxLength >= 2 else { throw ValidationError("--max-length must be at least 2") }
        guard blockMaxLen >= 2 else { throw ValidationError("--block-max-len must be at least 2") }
        guard maxNewTokens >= 1 else { throw ValidationError("--max-new-tokens must be at least 1") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        try beamOptions.validate()
    }

    var beamOptions: BeamSearchOptions {
        BeamSearchOptions(numBeams: numBeams, maxNewTokens: maxNewTokens, lengthPenalty: lengthPenalty, earlyStopping: earlyStopping,
                          noRepeatNgramSize: noRepeatNgramSize, numReturnSequences: numBeams > 1 ? numReturnSequences : 1)
    }

    var generation: TaskGeneration {
        TaskGeneration(maxNewTokens: maxNewTokens, beams: beamOptions,
                       sampling: SamplingParameters(temperature: temperature, topK: topK, topP: topP),
                       numReturnSequences: numReturnSequences, seed: UInt64(seed))
    }

    /// A task's figures, in table order, with the decimals each is printed with (0: a count;
    /// -1: Swift's shortest form, for differences far below 1e-4).
    typealias Figures = [(name: String, value: Double, digits: Int)]

    func run() throws {
        useThreads(threads)
        let dataset = try EvalDataset.load(path: data)
        let columns = task.defaultColumns
        let evalData = EvalData(dataset: dataset, template: PromptTemplate(template, promptColumn: promptColumn ?? columns.prompt),
                                numSamples: numSamples, seed: seed, maxLength: maxLength)
        var results: [(folder: String, figures: Figures, speed: String)] = []
        for folder in [model] + (baseline.map { [$0] } ?? []) {
            results.append(try evaluate(folder: folder, data: evalData, labelColumn: labelColumn ?? columns.label))
        }
        var description = checkBatching ? "batching check" : "task: \(task.rawValue)"
        if task == .classification { description += " (\(method.rawValue))" }
        print(description + ", \(data), seed \(seed)")
        let width = max(24, results.map(\.folder.count).max()! + 2)
        print("metric".padded(to: 22) + results.map { $0.folder.padded(to: width) }.joined())
        for (row, figure) in results[0].figures.enumerated() {
            print(figure.name.padded(to: 22) + results.map { result in
                let value = result.figures[row].value
                let text = figure.digits == 0 ? "\(Int(value))" : figure.digits < 0 ? "\(value)" : fixed(value, figure.digits)
                return text.padded(to: width)
            }.joined())
        }
        for result in results { print("\(result.folder): \(result.speed)") }
    }

    func evaluate(folder: String, data evalData: EvalData, labelColumn: String) throws -> (folder: String, figures: Figures, speed: String) {
        printToStandardError("== \(folder)")
        let loaded = try GenerationModel(folder: folder, device: device.device)
        // lm samples fit --max-length; the other tasks add generated tokens or a choice or class
        // after a prompt of at most --max-length.
        let added = task == .lm && !checkBatching ? 0 : max(maxNewTokens, 256)
        let capacity = min(loaded.model.architecture.maxPositions, maxLength + added)
        let slots = max(batchSize, numBeams)
        let evalModel = EvalModel(session: try loaded.model.makeBatchSession(slots: slots, capacity: capacity),
                                  tokenizer: loaded.tokenizer, stopTokenIds: loaded.endOfSequenceIds)
        var bar = ProgressBar(label: task.rawValue)
        let progress: (Int, Int) -> Void = { bar.update(done: $0, total: $1) }
        let figures: Figures
        if checkBatching {
            let check = try BatchConsistency.check(prompts: try evalData.prompts(model: evalModel), batch: evalModel.session,
                                                   alone: try loaded.model.makeSession(capacity: capacity), maxNewTokens: maxNewTokens,
                                                   stopTokenIds: loaded.endOfSequenceIds)
            figures = [("max |logit diff|", Double(check.maxLogitDifference), -1), ("max relative error", check.maxRelativeError, -1),
                       ("greedy equal", Double(check.prompts - check.greedyMismatches.count), 0), ("prompts", Double(check.prompts), 0)]
            return (folder, figures, "batched against one prompt at a time (batch \(slots), \(device.device.rawValue))")
        }
        switch task {
        case .lm:
            let r = try LanguageModelingTask(data: evalData, labelColumn: labelColumn, blockMaxLen: blockMaxLen).run(model: evalModel, progress: progress)
            figures = [("perplexity (AutoGPTQ)", r.perplexity, 4), ("perplexity per token", r.perTokenPerplexity, 4),
                       ("blocks", Double(r.blocks), 0), ("samples", Double(r.samples), 0), ("label tokens", Double(r.labelTokens), 0)]
        case .classification:
            let names = classes.map { $0.split(separator: ",").map { $0.strippingWhitespace() } }
            let r = try ClassificationTask(data: evalData, labelColumn: labelColumn, classes: names,
                                           method: method == .generate ? .generate(generation) : .logLikelihood).run(model: evalModel, progress: progress)
            figures = [("accuracy", r.accuracy, 4), ("correct", Double(r.correct), 0), ("samples", Double(r.samples), 0)]
        case .summarization:
            let r = try SummarizationTask(data: evalData, summaryColumn: labelColumn, generation: generation).run(model: evalModel, progress: progress)
            figures = [("rouge1 F", r.rouge.rouge1.fmeasure, 4), ("rouge1 P", r.rouge.rouge1.precision, 4), ("rouge1 R", r.rouge.rouge1.recall, 4),
                       ("rouge2 F", r.rouge.rouge2.fmeasure, 4), ("rouge2 P", r.rouge.rouge2.precision, 4), ("rouge2 R", r.rouge.rouge2.recall, 4),
                       ("rougeL F", r.rouge.rougeL.fmeasure, 4), ("rougeL P", r.rouge.rougeL.precision, 4), ("rougeL R", r.rouge.rougeL.recall, 4),
                       ("samples", Double(r.samples), 0)]
        case .choice:
            let r = try MultipleChoiceTask(data: evalData, choicesColumn: choicesColumn, answerColumn: labelColumn).run(model: evalModel, progress: progress)
            figures = [("acc", r.accuracy, 4), ("acc_norm", r.normalizedAccuracy, 4), ("samples", Double(r.samples), 0)]
        }
        bar.finish()
        let session = evalModel.session
        let speed = "\(session.tokensFed) tokens through the model in \(fixed(session.seconds, 2)) s, "
            + "\(fixed(session.tokensPerSecond, 1)) tokens/s (batch \(slots), \(device.device.rawValue))"
        return (folder, figures, speed)
    }
}

/// A one-line progress bar with an ETA on stderr, redrawn in place.
struct ProgressBar {
    let label: String
    let clock = ContinuousClock()
    let start: ContinuousClock.Instant
    var drawn = false

    init(label: String) {
        self.label = label
        start = clock.now
    }

    mutating func update(done: Int, total: Int) {
        let elapsed = (clock.now - start).seconds
        let fraction = total > 0 ? Double(done) / Double(total) : 1
        let filled = Int(fraction * 30)
        let eta = done > 0 ? elapsed / Double(done) * Double(total - done) : 0
        let line = "\r\(label) [" + String(repeating: "#", count: filled) + String(repeating: ".", count: 30 - filled)
            + "] \(done)/\(total) \(Self.clockTime(elapsed)) elapsed, ETA \(Self.clockTime(eta))"
        var text = line
        text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
        drawn = true
    }

    func finish() { if drawn { printToStandardError("") } }

    static func clockTime(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return "\(s / 60):" + (s % 60 < 10 ? "0" : "") + "\(s % 60)"
    }
}

extension String {
    func padded(to width: Int) -> String { count >= width ? self + " " : self + String(repeating: " ", count: width - count) }
}
