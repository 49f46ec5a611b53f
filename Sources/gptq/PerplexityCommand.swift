#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import GPTQKit

struct PerplexityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity",
        abstract: "Perplexity of a model on a text file, over non-overlapping windows.",
        discussion: """
            The text is tokenized once, whole, as GPTQ's evaluation does (tokenizer(text): the \
            tokenizer's own special tokens, e.g. a leading BOS for Llama-2 tokenizers, none for \
            SmolLM2), and cut into tokens/seqlen windows. Default protocol (GPTQ/AutoGPTQ): every \
            prediction of a window is scored and each window's mean loss weighs equally. \
            --llama-cpp-protocol scores only the second half of each window, as llama-perplexity \
            does, and replaces each window's first token by BOS when the tokenizer adds BOS. \
            Progress goes to stderr; the last line is `perplexity: <value>`.
            """
    )

    @Option(parsing: .unconditional, help: "The model folder.")
    var model: String

    @Option(parsing: .unconditional, help: "The text file (e.g. wikitext-2 test, documents joined with blank lines).")
    var text: String

    @Option(parsing: .unconditional, help: "Tokens per window.")
    var seqlen = 2048

    @Option(parsing: .unconditional, help: "Use only the first N windows.")
    var windows: Int?

    @Flag(help: "Score the second half of each window only (llama.cpp's llama-perplexity).")
    var llamaCppProtocol = false

    @Option(parsing: .unconditional, help: "CPU threads (default: all cores).")
    var threads: Int?

    @OptionGroup var device: DeviceFlags

    @OptionGroup var cpuKernels: CPUKernelFlags

    @OptionGroup var adapter: AdapterFlags

    func validate() throws {
        guard seqlen >= 2 else { throw ValidationError("--seqlen must be at least 2") }
        if let windows, windows < 1 { throw ValidationError("--windows must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        useThreads(threads)
        let loaded = try DeviceModel(folder: model, device: device.device)
        try cpuKernels.apply(to: loaded.cpu)
        try adapter.apply(to: loaded.cpu)
        // Checked before the KV cache of seqlen positions is allocated.
        guard seqlen <= loaded.architecture.maxPositions else {
            throw ValidationError("--seqlen \(seqlen) is more than the model's \(loaded.architecture.maxPositions) positions")
        }
        let tokenizer = try Tokenizer(folder: model)
        guard FileIO.exists(text) else { throw GPTQError.invalidFile(path: text, reason: "text file not found") }
        let clock = ContinuousClock()
        var tokens: [Int32] = []
        let tokenizing = try clock.measure { tokens = tokenizer.encode(try FileIO.readText(path: text), addSpecialTokens: true) }
        let count = windows ?? tokens.count / seqlen
        let scoring: PerplexityProtocol = llamaCppProtocol ? .llamaCpp : .gptq
        // llama-perplexity puts BOS first in each window when the vocabulary adds BOS; the
        // tokenizer adds it exactly when encoding nothing with special tokens yields a special token.
        let bos = tokenizer.encode("", addSpecialTokens: true).first { tokenizer.specialTokenIds.contains($0) }
        printToStandardError("\(tokens.count) tokens (tokenized in \(fixed(tokenizing.seconds, 2)) s), \(count) windows of \(seqlen), protocol \(scoring.rawValue)")
        let start = clock.now
        let result = try Perplexity.evaluate(tokens: tokens, session: loaded.makeSession(capacity: seqlen), seqlen: seqlen,
                                             windows: windows, protocol: scoring, bos: bos) { done, total, ppl in
            let elapsed = (clock.now - start).seconds
            printToStandardError("window \(done)/\(total): perplexity \(fixed(ppl, 4)) (\(fixed(Double(done * seqlen) / elapsed, 1)) tokens/s)")
        }
        print("perplexity: \(fixed(result.perplexity, 4))")
    }
}
