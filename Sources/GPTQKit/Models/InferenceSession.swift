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
    /// Forgets every cached position from `position` on (0 clears the cache).
    func rewind(to position: Int)
}
