#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import GPTQKit

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text after a prompt, streaming it to stdout (statistics go to stderr).",
        discussion: """
            Sampling defaults come from the model's generation_config.json; the flags override them. \
            Generation stops at an end-of-sequence token (from generation_config.json, config.json or \
            tokenizer_config.json), at a --stop string, or after --max-new-tokens.
            """
    )

    @Option(parsing: .unconditional, help: "The model folder (config.json, safetensors, tokenizer.json).")
    var model: String

    @Option(parsing: .unconditional, help: "The prompt text.")
    var prompt: String

    @Flag(help: "Send the prompt as a user message through the model's chat template.")
    var chat = false

    @OptionGroup var sampling: SamplingFlags

    @OptionGroup var device: DeviceFlags

    @OptionGroup var cpuKernels: CPUKernelFlags

    @OptionGroup var adapter: AdapterFlags

    func run() throws {
        useThreads(sampling.threads)
        let loaded = try GenerationModel(folder: model, device: device.device)
        try cpuKernels.apply(to: loaded.model.cpu)
        try adapter.apply(to: loaded.model.cpu)
        let options = try sampling.options(for: loaded)
        let ids = chat
            ? try loaded.chatPrompt([ChatMessage(role: "user", content: prompt)], template: ChatTemplate(config: loaded.tokenizerConfig))
            : loaded.tokenizer.encode(prompt, addSpecialTokens: true)
        let positions = loaded.model.architecture.maxPositions
        // Past max_position_embeddings the model was never trained: its output would be noise.
        guard ids.count < positions else {
            throw GPTQError.invalidArgument("the prompt has \(ids.count) tokens; the model reads at most \(positions) (its max positions), and needs room for one more")
        }
        // The cache holds the prompt and the new tokens, never past the model's positions
        // (min before adding: --max-new-tokens may be as large as Int.max).
        let generator = Generator(session: try loaded.model.makeSession(capacity: ids.count + min(options.maxNewTokens, positions - ids.count)))
        let result = try loaded.generate(generator, prompt: ids, options: options)
        writeToStandardOutput("\n")
        printToStandardError(result.statistics)
    }
}
