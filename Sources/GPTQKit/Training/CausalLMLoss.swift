import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// One training sequence: its tokens, and which of them are targets (predicted from the
/// tokens before them and counted in the loss). `targets[0]` is ignored: nothing predicts
/// the first token. All targets: train on all tokens; a chat's assistant turns only: train
/// on the response only.
public struct TrainingSequence: Sendable, Equatable {
    public var tokens: [Int32]
    public var targets: [Bool]

    public init(tokens: [Int32], targets: [Bool]) {
        precondition(tokens.count == targets.count, "one target flag per token")
        self.tokens = tokens
        self.targets = targets
    }

    /// Every token after the first is a target.
    public init(tokens: [Int32]) { self.init(tokens: tokens, targets: tokens.indices.map { $0 > 0 }) }

    /// The number of predictions the loss counts.
    public var targetCount: Int { targets.dropFirst().filter { $0 }.count }
}

/// The summed cross-entropy of a batch and how many predictions it sums.
public struct LossSum: Sendable {
    public var total: Double
    public var targets: Int
    public var mean: Double { targets > 0 ? total / Double(targets) : 0 }
}

extension LanguageModel {
    /// Rows of logits computed at once by the loss (bounds the [rows, vocab] buffer).
    static let lossChunkRows = 64

    /// The batch's sequences as rows of one pass, each its own segment at positions 0..<tokens
    /// (no padding: attention stays within a sequence), with a KV buffer per sequence.
    private func trainingSegments(_ batch: [TrainingSequence]) -> (segments: [Segment], caches: [KVCacheLayer]) {
        var row = 0
        var segments: [Segment] = [], caches: [KVCacheLayer] = []
        for sequence in batch {
            let cache = KVCacheLayer(attention: architecture.attention, capacity: sequence.tokens.count)
            caches.append(cache)
            segments.append(Segment(row: row, tokens: sequence.tokens.count, position: 0, cache: cache,
                                    frame: context.frame(position: 0, tokens: sequence.tokens.count)))
            row += sequence.tokens.count
        }
        return (segments, caches)
    }

    /// The summed cross-entropy of the batch's targets (no gradients): a held-out loss.
    public func loss(_ batch: [TrainingSequence]) throws -> LossSum {
        try run(batch, lossScale: nil)
    }

    /// The summed cross-entropy of the batch's targets, and the gradients of lossScale × that
    /// sum added to every installed LoRA adapter's (base weights are frozen). lossScale is
    /// 1 / (the targets of every batch accumulated into one optimizer step), so that the
    /// gradient is that of the mean, as transformers' Trainer normalises it.
    ///
    /// Activation checkpointing: the forward keeps only each layer's input; the backward
    /// recomputes one layer's forward at a time with a tape (DecoderBlock.forward), so that
    /// memory holds the weights, a [tokens, hidden] row per layer and one layer's activations.
    public func accumulateGradients(_ batch: [TrainingSequence], lossScale: Float) throws -> LossSum {
        try run(batch, lossScale: lossScale)
    }

    private func run(_ batch: [TrainingSequence], lossScale: Float?) throws -> LossSum {
        guard !batch.isEmpty, batch.allSatisfy({ !$0.tokens.isEmpty }) else { throw GPTQError.invalidArgument("training batch: no tokens given") }
        if let long = batch.first(where: { $0.tokens.count > architecture.maxPositions }) {
            throw GPTQError.invalidArgument("training sequence of \(long.tokens.count) tokens exceeds the model's \(architecture.maxPositions) positions")
        }
        let rows = batch.reduce(0) { $0 + $1.tokens.count }, h = hiddenSize
        var x = try batch.flatMap { try embed($0.tokens) }
        let (segments, caches) = trainingSegments(batch)
        defer { for cache in caches { cache.deallocate() } }
        let workspace = DecoderWorkspace(architecture: architecture, tokens: rows)
        var layerInputs: [[Float]] = []
        x.withUnsafeMutableBufferPointer { x in
            for layer in layers {
                if lossScale != nil { layerInputs.append(Array(x)) }
                layer.forward(x.baseAddress!, tokens: rows, segments: segments, context: context, workspace: workspace, observe: nil)
            }
        }
        // The target of row r: the next token of its sequence, where that token is a target.
        var targets = [Int32](repeating: -1, count: rows)
        for (sequence, segment) in zip(batch, segments) {
            for t in 0..<sequence.tokens.count - 1 where sequence.targets[t + 1] { targets[segment.row + t] = sequence.tokens[t + 1] }
        }
        var gradient = lossScale.map { _ in [Float](repeating: 0, count: rows * h) }
        let loss = try headLoss(x, targets: targets, lossScale: lossScale ?? 0, gradient: &gradient)
        guard var dx = gradient else { return loss }
        try dx.withUnsafeMutableBufferPointer { dx in
            for (index, layer) in layers.enumerated().reversed() {
                let tape = LayerTape()
                layerInputs[index].withUnsafeMutableBufferPointer { input in
                    layer.forward(input.baseAddress!, tokens: rows, segments: segments, context: context, workspace: workspace,
                                  observe: nil, tape: tape)
                }
                layerInputs[index] = []
                try layer.backward(dx.baseAddress!, tape: tape, tokens: rows, segments: segments, context: context)
            }
        }
        return loss
    }

    /// Cross-entropy of the logits of the last layer's output x [rows, hidden] against
    /// `targets` (−1: not counted), in chunks of rows; with `gradient`, d(lossScale · loss)/dx.
    private func headLoss(_ x: [Float], targets: [Int32], lossScale: Float, gradient: inout [Float]?) throws -> LossSum {
        let h = hiddenSize, vocab = vocabSize, rows = targets.count
        var loss = LossSum(total: 0, targets: 0)
        for r0 in stride(from: 0, to: rows, by: Self.lossChunkRows) {
            let count = min(Self.lossChunkRows, rows - r0)
            guard targets[r0..<r0 + count].contains(where: { $0 >= 0 }) else { continue }
            var logits = x.withUnsafeBufferPointer { self.logits($0.baseAddress! + r0 * h, rows: count, arithmetic: .float32) }
            for r in 0..<count {
                let target = targets[r0 + r]
                let row = logits.withUnsafeMutableBufferPointer { $0.baseAddress! + r * vocab }
                guard target >= 0 else {
                    row.update(repeating: 0, count: vocab)
                    continue
                }
                let logSum = ck_logsumexp(row, vocab)
                let value = Double(logSum - row[Int(target)])
                guard value.isFinite else { throw GPTQError.nonFinite("the loss of row \(r0 + r) (logits not finite)") }
                loss.total += value
                loss.targets += 1
                // d loss / d logits = softmax − one-hot.
                for j in 0..<vocab { row[j] = expf(row[j] - logSum) * lossScale }
                row[Int(target)] -= lossScale
            }
            guard gradient != nil else { continue }
            try headBackward(x, rows: r0..<r0 + count, logitGradient: logits, into: &gradient!)
        }
        return loss
    }

    /// dx of rows `rows` for the gradient of their logits: back through the LM head, project_out and the final norm.
    private func headBackward(_ x: [Float], rows: Range<Int>, logitGradient: [Float], into dx: inout [Float]) throws {
        let h = hiddenSize, count = rows.count
        func differentiable(_ layer: LinearLayer, _ name: String) throws -> DifferentiableLinear {
            guard let layer = layer as? DifferentiableLinear else {
                throw GPTQError.unsupported("\(name): a \(type(of: layer)) has no backward pass (train without --int8-head)")
            }
            return layer
        }
        let input = Array(x[rows.lowerBound * h..<rows.upperBound * h])
        // The inputs of the final norm, project_out and the head, as logits(_:rows:arithmetic:) computed them.
        var normed = input
        if let finalNorm { normed.withUnsafeMutableBufferPointer { finalNorm.apply($0.baseAddress!, into: $0.baseAddress!, rows: count) } }
        var headInput = normed
        if let projectOut {
            headInput = [Float](repeating: 0, count: count * projectOut.outFeatures)
            headInput.withUnsafeMutableBufferPointer { projectOut.forward(normed, rows: count, into: $0.baseAddress!) }
        }
        var dHeadInput = [Float](repeating: 0, count: count * lmHead.inFeatures)
        try differentiable(lmHead, architecture.head.lmHead).backward(input: headInput, outputGradient: logitGradient, rows: count,
                                                                      inputGradient: &dHeadInput)
        var dNormed = dHeadInput
        if let projectOut {
            dNormed = [Float](repeating: 0, count: count * h)
            try differentiable(projectOut, architecture.head.projectOut!).backward(input: normed, outputGradient: dHeadInput, rows: count,
                                                                                    inputGradient: &dNormed)
        }
        dx.withUnsafeMutableBufferPointer { dx in
            let target = dx.baseAddress! + rows.lowerBound * h
            if let finalNorm {
                finalNorm.backward(input: input, outputGradient: dNormed, rows: count, into: target, accumulate: false)
            } else {
                target.update(from: dNormed, count: count * h)
            }
        }
    }
}
