#if canImport(Glibc)
import Glibc
#endif
import CKernels

/// Which tokens a perplexity run scores.
public enum PerplexityProtocol: String, Sendable, CaseIterable {
    /// GPTQ/AutoGPTQ: every prediction of each window (seqlen − 1 of them); each window's
    /// mean loss weighs equally: ppl = exp(Σ loss_w·seqlen / (windows·seqlen)).
    case gptq
    /// llama.cpp's llama-perplexity: the first half of each window is context only, the
    /// predictions of tokens seqlen/2+1 ..< seqlen are scored, ppl = exp(mean over all of them).
    /// With a BOS token given, the first token of each window is replaced by it, as
    /// llama-perplexity does when the vocabulary adds BOS.
    case llamaCpp
}

public struct PerplexityResult: Sendable {
    public let perplexity: Double
    /// Mean negative log-likelihood of each window's scored predictions.
    public let windowLosses: [Double]
    public let scoredTokens: Int
}

/// Perplexity of a tokenized text over non-overlapping windows of `seqlen` tokens
/// (the text is tokenized once, whole; windows = tokens / seqlen, rounded down).
public enum Perplexity {
    /// - windows: use only the first this many windows.
    /// - chunk: tokens fed to the session per call (bounds the logits buffer: chunk × vocab floats).
    /// - progress: called after each window with (windows done, windows in all, perplexity so far).
    public static func evaluate(tokens: [Int32], session: InferenceSession, seqlen: Int = 2048, windows: Int? = nil,
                                protocol scoring: PerplexityProtocol = .gptq, bos: Int32? = nil, chunk: Int = 512,
                                progress: ((Int, Int, Double) -> Void)? = nil) throws -> PerplexityResult {
        guard seqlen >= 2 else { throw GPTQError.invalidArgument("seqlen \(seqlen): a window needs at least 2 tokens") }
        guard session.capacity >= seqlen else {
            throw GPTQError.invalidArgument("seqlen \(seqlen) exceeds the session capacity \(session.capacity)")
        }
        let available = tokens.count / seqlen
        guard available > 0 else {
            throw GPTQError.invalidArgument("the text has \(tokens.count) tokens, fewer than one window of seqlen \(seqlen)")
        }
        if let windows, windows < 1 || windows > available {
            throw GPTQError.invalidArgument("windows \(windows): the text has 1...\(available) windows of \(seqlen) tokens")
        }
        let count = windows ?? available
        let firstScored = scoring == .gptq ? 0 : seqlen / 2
        guard seqlen - 1 - firstScored > 0 else {
            throw GPTQError.invalidArgument("seqlen \(seqlen): the llama.cpp protocol scores the second half of a window, which needs at least 3 tokens")
        }
        let vocab = session.vocabSize
        var losses: [Double] = []
        var total = 0.0, scored = 0
        for w in 0..<count {
            var window = Array(tokens[w * seqlen..<(w + 1) * seqlen])
            if scoring == .llamaCpp, let bos { window[0] = bos }
            session.rewind(to: 0)
            var nll = 0.0
            for start in stride(from: 0, to: seqlen, by: chunk) {
                let end = min(seqlen, start + chunk)
                let logits = try session.forward(Array(window[start..<end]), allLogits: true)
                logits.withUnsafeBufferPointer { l in
                    // Row j predicts token j + 1 of the window.
                    for j in stride(from: max(start, firstScored), to: min(end, seqlen - 1), by: 1) {
                        let row = l.baseAddress! + (j - start) * vocab
                        nll += Double(ck_logsumexp(row, vocab)) - Double(row[Int(window[j + 1])])
                    }
                }
            }
            let predictions = seqlen - 1 - firstScored
            losses.append(nll / Double(predictions))
            total += nll
            scored += predictions
            progress?(w + 1, count, perplexity(losses: losses, total: total, scored: scored, scoring: scoring))
        }
        let result = perplexity(losses: losses, total: total, scored: scored, scoring: scoring)
        guard result.isFinite else {
            let window = losses.firstIndex { !$0.isFinite }.map { " (first in window \($0 + 1))" } ?? ""
            throw GPTQError.nonFinite("perplexity came out \(result)\(window); the model's weights or config values are not finite (loading warns which)")
        }
        return PerplexityResult(perplexity: result, windowLosses: losses, scoredTokens: scored)
    }

    private static func perplexity(losses: [Double], total: Double, scored: Int, scoring: PerplexityProtocol) -> Double {
        switch scoring {
        case .gptq: return exp(losses.reduce(0, +) / Double(losses.count))
        case .llamaCpp: return exp(total / Double(scored))
        }
    }
}
