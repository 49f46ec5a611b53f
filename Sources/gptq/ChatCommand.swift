#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import GPTQKit

struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Chat on stdin: each line is a user turn; replies stream to stdout.",
        discussion: """
            The whole conversation goes through the model's chat template at every turn; the KV cache \
            keeps the tokens the new prompt shares with the last one, so only the new turn is run. \
            End with end-of-file (Ctrl-D).
            """
    )

    @Option(parsing: .unconditional, help: "The model folder (config.json, safetensors, tokenizer.json, a chat template).")
    var model: String

    @Option(parsing: .unconditional, help: "A system message to start the conversation with.")
    var system: String?

    @Option(parsing: .unconditional, help: "Most tokens the conversation may hold (default: the model's maximum, at most 4096).")
    var context: Int?

    @OptionGroup var sampling: SamplingFlags

    @OptionGroup var device: DeviceFlags

    @OptionGroup var cpuKernels: CPUKernelFlags

    @OptionGroup var adapter: AdapterFlags

    func validate() throws {
        if let context, context < 2 { throw ValidationError("--context must be at least 2") }
    }

    func run() throws {
        useThreads(sampling.threads)
        let loaded = try GenerationModel(folder: model, device: device.device)
        try cpuKernels.apply(to: loaded.model.cpu)
        try adapter.apply(to: loaded.model.cpu)
        let template = try ChatTemplate(config: loaded.tokenizerConfig)
        var options = try sampling.options(for: loaded)
        let positions = loaded.model.architecture.maxPositions
        if let context, context > positions {
            throw ValidationError("--context \(context) is more than the model's \(positions) positions")
        }
        let generator = Generator(session: try loaded.model.makeSession(capacity: context ?? min(positions, 4096)))
        var messages = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
        let interactive = isatty(0) != 0
        while true {
            if interactive { _ = write(2, ">>> ", 4) }
            guard let line = readLine() else { break }
            guard !line.allSatisfy(\.isWhitespace) else { continue }
            messages.append(ChatMessage(role: "user", content: line))
            let prompt = try loaded.chatPrompt(messages, template: template)
            guard prompt.count < generator.session.capacity else {
                throw GPTQError.invalidArgument("the conversation has \(prompt.count) tokens, the context holds \(generator.session.capacity) (--context)")
            }
            options.seed &+= 1  // a different draw each turn, reproducible from --seed
            let reply = try loaded.generate(generator, prompt: prompt, options: options)
            writeToStandardOutput("\n")
            printToStandardError(reply.statistics)
            messages.append(ChatMessage(role: "assistant", content: reply.text))
        }
    }
}
