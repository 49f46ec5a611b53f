/// Inference on the CPU with a float32 KV cache of fixed capacity.
public final class CPUSession: InferenceSession {
    public let model: LanguageModel
    public let capacity: Int
    public private(set) var position = 0
    private let cache: [KVCacheLayer]

    public init(model: LanguageModel, capacity: Int) {
        precondition(capacity > 0, "session capacity must be positive")
        self.model = model
        self.capacity = capacity
        let count = model.shape.kvHeads * capacity * model.shape.headDim
        cache = (0..<model.numLayers).map { _ in
            KVCacheLayer(keys: .allocate(capacity: count), values: .allocate(capacity: count), capacity: capacity)
        }
    }

    deinit { for layer in cache { layer.keys.deallocate(); layer.values.deallocate() } }

    public var vocabSize: Int { model.vocabSize }

    public func forward(_ tokens: [Int32], allLogits: Bool) throws -> [Float] {
        guard !tokens.isEmpty else { throw GPTQError.invalidArgument("forward: no tokens given") }
        guard position + tokens.count <= capacity else {
            throw GPTQError.invalidArgument("forward: \(tokens.count) tokens after \(position) cached exceed the session capacity \(capacity)")
        }
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= vocabSize }) {
            throw GPTQError.invalidArgument("forward: token id \(bad) outside the vocabulary 0..<\(vocabSize)")
        }
        let n = tokens.count, h = model.hiddenSize
        var hidden = model.embed(tokens)
        let (cos, sin) = model.rope.tables(start: position, count: n)
        let workspace = DecoderWorkspace(shape: model.shape, tokens: n)
        hidden.withUnsafeMutableBufferPointer { x in
            cos.withUnsafeBufferPointer { c in
                sin.withUnsafeBufferPointer { s in
                    for (layer, kv) in zip(model.layers, cache) {
                        layer.forward(x.baseAddress!, tokens: n, position: position, cache: kv,
                                      cos: c.baseAddress!, sin: s.baseAddress!, shape: model.shape,
                                      workspace: workspace, observe: nil)
                    }
                }
            }
        }
        position += n
        return hidden.withUnsafeBufferPointer { x in
            allLogits ? model.logits(x.baseAddress!, rows: n) : model.logits(x.baseAddress! + (n - 1) * h, rows: 1)
        }
    }

    public func rewind(to position: Int) {
        precondition(position >= 0 && position <= self.position, "rewind to \(position) outside 0...\(self.position)")
        self.position = position
    }
}
