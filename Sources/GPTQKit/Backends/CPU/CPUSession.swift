/// What a CPU forward computes in.
public enum CPUArithmetic: Sendable {
    /// float32 throughout: the CPU backend, and the reference of every other.
    case float32
    /// float32 arithmetic with the CUDA session's float16 roundings: each linear's input and
    /// output, the rotated queries and keys (values are v_proj's output), and in a pass over
    /// several tokens (the GPU's prefill path) the attention probabilities, where CUDASession
    /// stores float16. On a model loaded with `weightsAsFloat16` (the GPU's
    /// weights) the CPU then computes the GPU's function up to the order of summation: what
    /// `gptq gpu-check` holds the GPU to with the bound for float16 arithmetic (1e-3).
    case cudaFloat16
}

/// Inference on the CPU with a float32 KV cache of fixed capacity.
public final class CPUSession: InferenceSession {
    public let model: LanguageModel
    public let capacity: Int
    public let arithmetic: CPUArithmetic
    public internal(set) var position = 0
    let cache: [KVCacheLayer]

    public init(model: LanguageModel, capacity: Int, arithmetic: CPUArithmetic = .float32) {
        precondition(capacity > 0, "session capacity must be positive")
        self.model = model
        self.capacity = capacity
        self.arithmetic = arithmetic
        cache = (0..<model.numLayers).map { _ in KVCacheLayer(attention: model.architecture.attention, capacity: capacity) }
    }

    deinit { for layer in cache { layer.deallocate() } }

    public var vocabSize: Int { model.vocabSize }

    public func forward(_ tokens: [Int32], allLogits: Bool) throws -> [Float] {
        guard !tokens.isEmpty else { throw GPTQError.invalidArgument("forward: no tokens given") }
        guard position + tokens.count <= capacity else {
            throw GPTQError.invalidArgument("forward: \(tokens.count) tokens after \(position) cached exceed the session capacity \(capacity)")
        }
        let n = tokens.count, h = model.hiddenSize
        var hidden = try model.embed(tokens, position: position, arithmetic: arithmetic)
        hidden.withUnsafeMutableBufferPointer { x in
            model.forwardLayers(x.baseAddress!, sequences: [(n, position, cache)], arithmetic: arithmetic)
        }
        position += n
        return hidden.withUnsafeBufferPointer { x in
            allLogits ? model.logits(x.baseAddress!, rows: n, arithmetic: arithmetic)
                : model.logits(x.baseAddress! + (n - 1) * h, rows: 1, arithmetic: arithmetic)
        }
    }

    public func rewind(to position: Int) {
        precondition(position >= 0 && position <= self.position, "rewind to \(position) outside 0...\(self.position)")
        self.position = position
    }
}
