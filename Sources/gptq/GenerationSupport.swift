#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import GPTQKit

/// The sampling flags `generate` and `chat` share; each overrides generation_config.json.
struct SamplingFlags: ParsableArguments {
    @Option(parsing: .unconditional, help: "Most tokens to generate (default: generation_config.json's max_new_tokens, else 256).")
    var maxNewTokens: Int?

    @Option(parsing: .unconditional, help: "Sampling temperature; 0 is greedy (default: generation_config.json's, greedy unless it sets do_sample).")
    var temperature: Float?

    @Option(parsing: .unconditional, help: "Sample among the K most likely tokens; 0 disables (default: generation_config.json's, else 50).")
    var topK: Int?

    @Option(parsing: .unconditional, help: "Sample among the most likely tokens whose probability adds up to P (default: generation_config.json's, else 1).")
    var topP: Float?

    @Option(parsing: .unconditional, help: "Penalty on tokens already present (CTRL); 1 disables (default: generation_config.json's, else 1).")
    var repetitionPenalty: Float?

    @Option(parsing: .unconditional, help: "Random seed for sampling.")
    var seed: UInt64 = 0

    @Option(parsing: .upToNextOption, help: "Stop when the text contains any of these strings (not printed).")
    var stop: [String] = []

    @Option(parsing: .unconditional, help: "CPU threads (default: all cores).")
    var threads: Int?

    func validate() throws {
        if let maxNewTokens, maxNewTokens < 1 { throw ValidationError("--max-new-tokens must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if stop.contains("") { throw ValidationError("--stop strings must not be empty") }
    }

    /// The options for a model: its defaults with the flags given laid over them.
    func options(for model: GenerationModel) throws -> GenerationOptions {
        let defaults = model.generationConfig
        var sampling = defaults.sampling
        // A temperature asks for sampling even where the model's defaults are greedy.
        if let temperature { sampling.temperature = temperature }
        if let topK { sampling.topK = topK }
        if let topP { sampling.topP = topP }
        if let repetitionPenalty { sampling.repetitionPenalty = repetitionPenalty }
        try sampling.validate()
        return GenerationOptions(maxNewTokens: maxNewTokens ?? defaults.maxNewTokens ?? 256, sampling: sampling, seed: seed,
                                 stopTokenIds: model.endOfSequenceIds, stopStrings: stop)
    }
}

/// What generation needs from a model folder: the network, its tokenizer and the configs.
struct GenerationModel {
    let model: DeviceModel
    let tokenizer: Tokenizer
    let tokenizerConfig: TokenizerConfig
    let generationConfig: GenerationConfig
    let endOfSequenceIds: Set<Int32>

    init(folder: String, device: ComputeDevice) throws {
        model = try DeviceModel(folder: folder, device: device)
        tokenizer = try Tokenizer(folder: folder)
        tokenizerConfig = try TokenizerConfig(folder: folder)
        generationConfig = try GenerationConfig(folder: folder)
        endOfSequenceIds = GenerationOptions.endOfSequenceIds(
            generation: generationConfig, model: model.config, eosToken: tokenizerConfig.eosToken.flatMap(tokenizer.id(for:)))
    }

    /// The prompt of a conversation: the chat template's text, tokenized without adding
    /// special tokens (the template writes them), as apply_chat_template(tokenize=True) does.
    func chatPrompt(_ messages: [ChatMessage], template: ChatTemplate) throws -> [Int32] {
        let text = try template.render(messages: messages, addGenerationPrompt: true, specialTokens: tokenizerConfig)
        return tokenizer.encode(text, addSpecialTokens: false)
    }

    /// Generates, printing text to stdout as it comes.
    func generate(_ generator: Generator, prompt: [Int32], options: GenerationOptions) throws -> GenerationResult {
        try generator.generate(prompt: prompt, options: options, textDecoder: TokenStreamDecoder(tokenizer: tokenizer)) { piece in
            writeToStandardOutput(piece)
        }
    }
}

/// Unbuffered, so streamed text shows as it comes.
func writeToStandardOutput(_ text: String) {
    var text = text
    text.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
}

extension GenerationResult {
    /// One line for stderr: token counts, speeds, why generation stopped.
    var statistics: String {
        func rate(_ r: Double) -> String {
            let tenths = Int((r * 10).rounded())
            return "\(tenths / 10).\(tenths % 10)"
        }
        let reason: String
        switch stopReason {
        case let .endOfSequence(id): reason = "end of sequence (id \(id))"
        case let .stopString(s): reason = "stop string \(JSON.string(s).serialized(indent: 0))"
        case .maxNewTokens: reason = "max new tokens"
        case .capacity: reason = "context full"
        }
        return "prefill: \(prefillTokens) tokens, \(rate(prefillTokensPerSecond)) tokens/s; "
            + "decode: \(tokens.count) tokens, \(rate(decodeTokensPerSecond)) tokens/s; stopped by \(reason)"
    }
}
