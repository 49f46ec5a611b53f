import ArgumentParser
import GPTQKit

extension LearningRateSchedule.Shape: ExpressibleByArgument {}

struct FinetuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Train a LoRA adapter on a float or GPTQ model (CPU) and save it in PEFT's format.",
        discussion: """
            --data is JSONL: {"text": ...} samples train on every token; {"messages": [...]} samples go \
            through the model's chat template and train on the assistant turns only. A share of the \
            samples (--eval-fraction) is held out and its loss reported after each epoch. The base \
            weights stay frozen (and quantized); the adapter (adapter_config.json, \
            adapter_model.safetensors) loads in PEFT with PeftModel.from_pretrained, and in generate, \
            chat and perplexity with --adapter.
            """
    )

    @Option(parsing: .unconditional, help: "The model folder (float or GPTQ).")
    var model: String

    @Option(parsing: .unconditional, help: "JSONL training data.")
    var data: String

    @Option(parsing: .unconditional, help: "The adapter folder to write.")
    var out: String

    @Option(parsing: .unconditional, help: "LoRA rank r.")
    var loraR = 16

    @Option(parsing: .unconditional, help: "LoRA alpha (the update is scaled by alpha / r).")
    var loraAlpha = 32.0

    @Option(parsing: .unconditional, help: "Dropout on the adapter's input in training.")
    var loraDropout = 0.05

    @Flag(help: "rsLoRA: scale by alpha / sqrt(r).")
    var rslora = false

    @Option(parsing: .unconditional, help: "Comma-separated module names (PEFT's target_modules), e.g. q_proj,v_proj.")
    var targetModules = "q_proj,v_proj"

    @Option(parsing: .unconditional, help: "Passes over the training samples.")
    var epochs = 1

    @Option(parsing: .unconditional, help: "Peak learning rate.")
    var lr: Float = 2e-4

    @Option(parsing: .unconditional, help: "Learning-rate schedule after the warm-up: constant, linear or cosine.")
    var schedule: LearningRateSchedule.Shape = .linear

    @Option(parsing: .unconditional, help: "The warm-up's share of the optimizer steps.")
    var warmupRatio = 0.0

    @Option(parsing: .unconditional, help: "AdamW's decoupled weight decay.")
    var weightDecay: Float = 0

    @Option(parsing: .unconditional, help: "Clip the gradients' global norm to this; 0 disables.")
    var maxGradNorm: Float = 1

    @Option(parsing: .unconditional, help: "Samples per micro-batch.")
    var batch = 1

    @Option(parsing: .unconditional, help: "Micro-batches per optimizer step.")
    var gradAccum = 1

    @Option(parsing: .unconditional, help: "Samples are cut to this many tokens.")
    var maxLength = 512

    @Option(parsing: .unconditional, help: "The share of samples held out for the evaluation loss.")
    var evalFraction = 0.1

    @Option(parsing: .unconditional, help: "Seed of the split, the shuffling, the adapter's initialisation and dropout.")
    var seed: UInt64 = 42

    @Option(parsing: .unconditional, help: "Also save the adapter and the optimizer state every N optimizer steps (0: after each epoch only).")
    var saveSteps = 0

    @Flag(help: "Continue the run whose checkpoint is in --out (same data and flags): its adapter, optimizer state and step.")
    var resume = false

    @Option(parsing: .unconditional, help: "CPU threads (default: all cores).")
    var threads: Int?

    func validate() throws {
        if saveSteps < 0 { throw ValidationError("--save-steps must not be negative") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        useThreads(threads)
        let languageModel = try LanguageModel.load(folder: model)
        let tokenizer = try Tokenizer(folder: model)
        let data = try FinetuneData(tokenizer: tokenizer, tokenizerConfig: try TokenizerConfig(folder: model), maxLength: maxLength)
        let (train, heldOut) = try FinetuneData.split(try data.load(path: self.data), heldOutFraction: evalFraction, seed: seed)
        let targets = targetModules.split(separator: ",").map { $0.trimmingWhitespace() }.filter { !$0.isEmpty }
        let config = LoRAConfig(rank: loraR, alpha: loraAlpha, dropout: loraDropout, useRSLoRA: rslora, targetModules: targets)
        let adapter = resume ? try LoRAAdapter.load(folder: out, into: languageModel) : try LoRAAdapter.create(on: languageModel, config: config, seed: seed)
        if resume, adapter.config != config {
            throw ValidationError("--resume: the checkpoint in \(out) was trained with r \(adapter.config.rank), alpha \(adapter.config.alpha), dropout \(adapter.config.dropout), targets \(adapter.config.targetModules.joined(separator: ",")); give the same flags")
        }
        let options = TrainingOptions(epochs: epochs, batchSize: batch, gradientAccumulation: gradAccum, learningRate: lr, schedule: schedule,
                                      warmupRatio: warmupRatio, weightDecay: weightDecay, maxGradientNorm: maxGradNorm > 0 ? maxGradNorm : nil,
                                      seed: seed)
        let trainer = try LoRATrainer(model: languageModel, adapter: adapter, options: options)
        if resume {
            try adapter.restoreTrainingState(from: out, into: trainer.optimizer)
            printToStandardError("resuming after step \(trainer.optimizer.step)")
        }
        let trainable = adapter.modules.reduce(0) { $0 + $1.linear.a.count + $1.linear.b.count }
        printToStandardError("\(train.count) training samples (\(train.reduce(0) { $0 + $1.targetCount }) target tokens), \(heldOut.count) held out; "
            + "LoRA r \(loraR) alpha \(fixed(loraAlpha, 1)) on \(adapter.modules.count) modules, \(trainable) trainable parameters; "
            + "\(trainer.stepsPerEpoch(samples: train.count) * epochs) optimizer steps")
        if !heldOut.isEmpty, !resume { printToStandardError("held-out loss before training: \(fixed(try trainer.heldOutLoss(heldOut), 4))") }
        try trainer.train(train, heldOut: heldOut, checkpointSteps: saveSteps > 0 ? saveSteps : nil, progress: { p in
            printToStandardError("step \(p.step)/\(p.totalSteps) epoch \(p.epoch + 1): loss \(fixed(p.loss, 4)), lr \(p.learningRate), "
                + "grad norm \(fixed(p.gradientNorm, 3)), \(fixed(p.tokensPerSecond, 1)) tokens/s, elapsed \(clockTime(p.elapsedSeconds)), ETA \(clockTime(p.remainingSeconds))")
        }, checkpoint: { step in
            try adapter.save(to: out, baseModel: model, model: languageModel, optimizer: trainer.optimizer)
            printToStandardError("checkpoint after step \(step) saved to \(out)")
        }, epochEnd: { epoch, loss in
            if let loss { printToStandardError("epoch \(epoch + 1): held-out loss \(fixed(loss, 4))") }
            try adapter.save(to: out, baseModel: model, model: languageModel, optimizer: trainer.optimizer)
        })
        print("adapter saved to \(out)")
    }
}

/// h:mm:ss.
func clockTime(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    let (m, r) = ((s / 60) % 60, s % 60)
    return "\(s / 3600):\(m < 10 ? "0" : "")\(m):\(r < 10 ? "0" : "")\(r)"
}

extension Substring {
    func trimmingWhitespace() -> String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}

/// `--adapter`: a PEFT LoRA adapter applied unmerged on top of the model (CPU).
struct AdapterFlags: ParsableArguments {
    @Option(parsing: .unconditional, help: "A LoRA adapter folder (PEFT's adapter_config.json, adapter_model.safetensors), applied unmerged (CPU).")
    var adapter: String?

    func apply(to model: LanguageModel?) throws {
        guard let adapter else { return }
        guard let model else { throw ValidationError("--adapter runs on the CPU for now; drop --device cuda") }
        let loaded = try LoRAAdapter.load(folder: adapter, into: model)
        printToStandardError("adapter \(adapter): LoRA r \(loaded.config.rank) on \(loaded.modules.count) modules")
    }
}
