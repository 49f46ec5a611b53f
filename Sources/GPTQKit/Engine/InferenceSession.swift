/// A model with its KV cache on some backend: the boundary that generation,
/// perplexity and the benchmarks talk to, so that they run unchanged on CPU or GPU.
public protocol InferenceSession: AnyObject {
    var vocabSize: Int { get }
    /// Number of tokens already in the KV cache.
    var position: Int { get }
    /// The longest sequence the cache holds.
    var capacity: Int { get }
    /// Feeds `tokens` after those already seen and returns float32 logits: the last
    /// token's ([vocabSize]) or, with `allLogits`, every token's ([tokens.count × vocabSize]).
    func forward(_ tokens: [Int32], allLogits: Bool) throws -> [Float]
    /// Feeds `tokens` like `forward` and returns the greedy next token: the argmax of the last
    /// token's logits (the lowest id among equal maxima). A GPU session finds it on the device
    /// and sends back one id instead of the logits.
    func forwardGreedy(_ tokens: [Int32]) throws -> Int32
    /// Feeds `tokens` like `forward` and draws the next token from the last token's logits with
    /// `parameters` (no repetition penalty) at `uniform` of the kept mass, as `Sampler.draw`
    /// does. A GPU session draws on the device and sends back one id.
    func forwardSample(_ tokens: [Int32], parameters: SamplingParameters, uniform: Float) throws -> Int32
    /// Forgets every cached position from `position` on (0 clears the cache).
    func rewind(to position: Int)
}

extension InferenceSession {
    public func forwardGreedy(_ tokens: [Int32]) throws -> Int32 { Sampler.argmax(try forward(tokens, allLogits: false)) }

    public func forwardSample(_ tokens: [Int32], parameters: SamplingParameters, uniform: Float) throws -> Int32 {
        try Sampler(parameters).draw(logits: try forward(tokens, allLogits: false), history: [], uniform: uniform)
    }
}
