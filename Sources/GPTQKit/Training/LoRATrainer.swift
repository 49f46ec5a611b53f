/// How a LoRA fine-tune runs, with transformers' Trainer's meanings.
public struct TrainingOptions: Sendable {
    public var epochs: Int
    /// Sequences per micro-batch (one forward and backward).
    public var batchSize: Int
    /// Micro-batches whose gradients add up to one optimizer step.
    public var gradientAccumulation: Int
    public var learningRate: Float
    public var schedule: LearningRateSchedule.Shape
    /// The warm-up's share of the optimizer steps.
    public var warmupRatio: Double
    public var weightDecay: Float
    /// The gradients' global norm is clipped to this (nil: no clipping).
    public var maxGradientNorm: Float?
    /// Shuffling, LoRA's initialisation and dropout.
    public var seed: UInt64

    public init(epochs: Int = 1, batchSize: Int = 1, gradientAccumulation: Int = 1, learningRate: Float = 2e-4,
                schedule: LearningRateSchedule.Shape = .linear, warmupRatio: Double = 0, weightDecay: Float = 0,
                maxGradientNorm: Float? = 1, seed: UInt64 = 42) {
        self.epochs = epochs
        self.batchSize = batchSize
        self.gradientAccumulation = gradientAccumulation
        self.learningRate = learningRate
        self.schedule = schedule
        self.warmupRatio = warmupRatio
        self.weightDecay = weightDecay
        self.maxGradientNorm = maxGradientNorm
        self.seed = seed
    }

    func validate() throws {
        for (flag, value) in [("--epochs", epochs), ("--batch", batchSize), ("--grad-accum", gradientAccumulation)] where value < 1 {
            throw GPTQError.invalidArgument("\(flag) must be at least 1, got \(value)")
        }
        guard learningRate > 0, learningRate.isFinite else { throw GPTQError.invalidArgument("--lr must be positive, got \(learningRate)") }
        guard (0..<1).contains(warmupRatio) else { throw GPTQError.invalidArgument("--warmup-ratio must be in [0, 1), got \(warmupRatio)") }
        guard weightDecay >= 0 else { throw GPTQError.invalidArgument("--weight-decay must not be negative, got \(weightDecay)") }
        if let maxGradientNorm, !(maxGradientNorm > 0) { throw GPTQError.invalidArgument("--max-grad-norm must be positive, got \(maxGradientNorm)") }
    }
}

/// Where training stands after an optimizer step, for a progress line.
public struct TrainingProgress: Sendable {
    public var step: Int
    public var totalSteps: Int
    public var epoch: Int
    /// The step's mean loss over its targets.
    public var loss: Double
    public var learningRate: Float
    public var gradientNorm: Double
    /// Tokens through the model per second since training started.
    public var tokensPerSecond: Double
    public var elapsedSeconds: Double
    public var remainingSeconds: Double
}

/// Trains an installed LoRA adapter: shuffled micro-batches, gradient accumulation, global
/// norm clipping, AdamW under a warm-up schedule; the held-out loss after each epoch.
public final class LoRATrainer {
    public let model: LanguageModel
    public let adapter: LoRAAdapter
    public let options: TrainingOptions
    public let optimizer: AdamW

    public init(model: LanguageModel, adapter: LoRAAdapter, options: TrainingOptions) throws {
        try options.validate()
        self.model = model
        self.adapter = adapter
        self.options = options
        optimizer = AdamW(weightDecay: options.weightDecay)
    }

    /// The optimizer steps of an epoch of `samples` sequences.
    public func stepsPerEpoch(samples: Int) -> Int {
        let batches = (samples + options.batchSize - 1) / options.batchSize
        return (batches + options.gradientAccumulation - 1) / options.gradientAccumulation
    }

    /// The mean held-out loss (dropout off).
    public func heldOutLoss(_ samples: [TrainingSequence]) throws -> Double {
        for module in adapter.modules { module.linear.dropoutSeed = nil }
        var sum = LossSum(total: 0, targets: 0)
        for start in stride(from: 0, to: samples.count, by: options.batchSize) {
            let part = try model.loss(Array(samples[start..<min(samples.count, start + options.batchSize)]))
            sum.total += part.total
            sum.targets += part.targets
        }
        return sum.mean
    }

    /// Runs every epoch over `samples`; calls `progress` after each optimizer step,
    /// `checkpoint` after every `checkpointSteps` steps (to save a TrainingCheckpoint) and
    /// `epochEnd(epoch, held-out loss)` after each epoch (nil loss without held-out samples).
    /// A trainer whose optimizer was restored from a checkpoint (resume) skips the steps it
    /// already took: each epoch's order and each step's dropout depend only on the seed, the
    /// epoch and the step, so the resumed run takes the steps the uninterrupted one would.
    public func train(_ samples: [TrainingSequence], heldOut: [TrainingSequence], checkpointSteps: Int? = nil,
                      progress: (TrainingProgress) -> Void, checkpoint: (Int) throws -> Void = { _ in },
                      epochEnd: (Int, Double?) throws -> Void) throws {
        guard !samples.isEmpty else { throw GPTQError.invalidArgument("no training samples") }
        guard samples.contains(where: { $0.targetCount > 0 }) else {
            throw GPTQError.invalidArgument("no training sample has a token to predict (every sample is one token, or has no assistant turn)")
        }
        let perEpoch = stepsPerEpoch(samples: samples.count), total = perEpoch * options.epochs
        let schedule = LearningRateSchedule(peak: options.learningRate, shape: options.schedule,
                                            warmupSteps: Int((Double(total) * options.warmupRatio).rounded(.up)), totalSteps: total)
        var random = Xoshiro256StarStar(seed: options.seed)
        let clock = ContinuousClock(), start = clock.now, resumedAt = optimizer.step
        var tokens = 0
        for epoch in 0..<options.epochs {
            var order = Array(samples.indices)
            order.shuffle(using: &random)
            if (epoch + 1) * perEpoch <= resumedAt { continue }
            let batches = stride(from: 0, to: order.count, by: options.batchSize).map { Array(order[$0..<min(order.count, $0 + options.batchSize)]) }
            for stepInEpoch in 0..<perEpoch where epoch * perEpoch + stepInEpoch >= resumedAt {
                let group = batches[stepInEpoch * options.gradientAccumulation..<min(batches.count, (stepInEpoch + 1) * options.gradientAccumulation)]
                let micro = group.map { $0.map { samples[$0] } }
                // Steps without targets still count, so that step numbers (and a resume) follow the schedule.
                let targets = max(1, micro.joined().reduce(0) { $0 + $1.targetCount })
                var loss = LossSum(total: 0, targets: 0)
                for (index, batch) in micro.enumerated() {
                    for (m, module) in adapter.modules.enumerated() {
                        module.linear.dropoutSeed = options.seed ^ (UInt64(optimizer.step) << 32) ^ (UInt64(index) << 20) ^ UInt64(m) &* 0x9E37_79B9
                    }
                    let part = try model.accumulateGradients(batch, lossScale: 1 / Float(targets))
                    loss.total += part.total
                    loss.targets += part.targets
                    tokens += batch.reduce(0) { $0 + $1.tokens.count }
                }
                let norm = adapter.gradientNorm()
                if let maxNorm = options.maxGradientNorm, let factor = GradientClipping.factor(norm: norm, maxNorm: maxNorm) {
                    adapter.scaleGradients(by: factor)
                }
                let rate = schedule.rate(at: optimizer.step)
                adapter.applyGradients(optimizer, learningRate: rate)
                let elapsed = (clock.now - start).seconds
                let done = optimizer.step
                progress(TrainingProgress(step: done, totalSteps: total, epoch: epoch, loss: loss.mean, learningRate: rate, gradientNorm: norm,
                                          tokensPerSecond: Double(tokens) / max(elapsed, 1e-9), elapsedSeconds: elapsed,
                                          remainingSeconds: elapsed / Double(done - resumedAt) * Double(total - done)))
                if let checkpointSteps, done % checkpointSteps == 0, done < total { try checkpoint(done) }
            }
            try epochEnd(epoch, heldOut.isEmpty ? nil : try heldOutLoss(heldOut))
        }
        for module in adapter.modules { module.linear.dropoutSeed = nil }
    }
}

/// Global-norm gradient clipping as torch's clip_grad_norm_ does it.
public enum GradientClipping {
    /// The factor the gradients are scaled by, max / (norm + 1e-6), where it is below 1; nil otherwise.
    public static func factor(norm: Double, maxNorm: Float) -> Float? {
        let factor = Double(maxNorm) / (norm + 1e-6)
        return factor < 1 ? Float(factor) : nil
    }
}

extension LoRAAdapter {
    /// The global L2 norm of every factor's gradient (torch's clip_grad_norm_ total norm).
    public func gradientNorm() -> Double {
        var sum = 0.0
        for module in modules {
            for g in module.linear.gradientA { sum += Double(g * g) }
            for g in module.linear.gradientB { sum += Double(g * g) }
        }
        return sum.squareRoot()
    }

    public func scaleGradients(by factor: Float) {
        for module in modules {
            for i in module.linear.gradientA.indices { module.linear.gradientA[i] *= factor }
            for i in module.linear.gradientB.indices { module.linear.gradientB[i] *= factor }
        }
    }

    /// One AdamW step on every factor (A of module i is parameter 2i, B 2i + 1), then zeroes the gradients.
    public func applyGradients(_ optimizer: AdamW, learningRate: Float) {
        optimizer.beginStep()
        for (i, module) in modules.enumerated() {
            let linear = module.linear
            optimizer.update(2 * i, value: &linear.a, gradient: linear.gradientA, learningRate: learningRate)
            optimizer.update(2 * i + 1, value: &linear.b, gradient: linear.gradientB, learningRate: learningRate)
            linear.zeroGradients()
        }
    }
}
