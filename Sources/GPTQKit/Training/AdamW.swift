#if canImport(Glibc)
import Glibc
#endif

/// AdamW as torch.optim.AdamW computes it (decoupled weight decay: p ← p · (1 − lr · wd)
/// before the Adam step, bias-corrected moments, eps added to √v̂).
public final class AdamW {
    public var beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float
    /// Steps taken (the bias corrections' t).
    public private(set) var step = 0
    /// First and second moments of each parameter, by the index the caller gives it.
    private var moments: [Int: (m: [Float], v: [Float])] = [:]

    public init(beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }

    /// Starts a step: every parameter updated until the next call shares its bias corrections.
    public func beginStep() { step += 1 }

    /// Updates parameter `index` (any stable numbering) by its gradient at `learningRate`.
    public func update(_ index: Int, value: inout [Float], gradient: [Float], learningRate: Float) {
        precondition(step > 0, "AdamW.update before beginStep")
        precondition(value.count == gradient.count, "parameter \(index): \(value.count) values, \(gradient.count) gradients")
        var state = moments[index] ?? ([Float](repeating: 0, count: value.count), [Float](repeating: 0, count: value.count))
        moments[index] = nil  // keeps the arrays uniquely referenced while they change
        let correction1 = 1 - powf(beta1, Float(step)), correction2 = 1 - powf(beta2, Float(step))
        let stepSize = learningRate / correction1, decay = 1 - learningRate * weightDecay
        let root2 = correction2.squareRoot()
        for i in 0..<value.count {
            let g = gradient[i]
            state.m[i] = beta1 * state.m[i] + (1 - beta1) * g
            state.v[i] = beta2 * state.v[i] + (1 - beta2) * g * g
            value[i] = value[i] * decay - stepSize * state.m[i] / (state.v[i].squareRoot() / root2 + epsilon)
        }
        moments[index] = state
    }

    /// The moments, for a training checkpoint: (index, m, v) sorted by index.
    public var state: [(index: Int, m: [Float], v: [Float])] {
        moments.keys.sorted().map { ($0, moments[$0]!.m, moments[$0]!.v) }
    }

    /// Restores a checkpoint's moments and step count.
    public func restore(step: Int, state: [(index: Int, m: [Float], v: [Float])]) {
        self.step = step
        moments = Dictionary(uniqueKeysWithValues: state.map { ($0.index, ($0.m, $0.v)) })
    }
}

/// The learning rate over the optimizer steps: a linear warm-up from 0, then constant,
/// linear decay to 0 or a cosine half-wave to 0, as transformers' get_*_schedule_with_warmup.
public struct LearningRateSchedule: Sendable, Equatable {
    public enum Shape: String, Sendable, CaseIterable {
        case constant, linear, cosine
    }

    public var peak: Float
    public var shape: Shape
    public var warmupSteps: Int
    public var totalSteps: Int

    public init(peak: Float, shape: Shape, warmupSteps: Int, totalSteps: Int) {
        self.peak = peak
        self.shape = shape
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
    }

    /// The rate of optimizer step `step` (0-based, as the LambdaLR's step count before the update).
    public func rate(at step: Int) -> Float {
        if step < warmupSteps { return peak * Float(step) / Float(max(1, warmupSteps)) }
        let progress = Double(step - warmupSteps) / Double(max(1, totalSteps - warmupSteps))
        switch shape {
        case .constant: return peak
        case .linear: return peak * Float(max(0, Double(totalSteps - step) / Double(max(1, totalSteps - warmupSteps))))
        case .cosine: return peak * Float(max(0, 0.5 * (1 + cos(Double.pi * progress))))
        }
    }
}
