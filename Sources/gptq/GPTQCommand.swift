import ArgumentParser
import GPTQKit

@main
struct GPTQCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gptq",
        abstract: "GPTQ quantization and inference for Hugging Face causal language models.",
        subcommands: [ConvertGGUFCommand.self, InspectCommand.self, BenchCommand.self, BenchGPTQCommand.self, QuantizeCommand.self, TokenizeCommand.self, LogitsCommand.self,
                      GenerateCommand.self, ChatCommand.self, PerplexityCommand.self, ServeCommand.self]
            + GPUCommands.subcommands
    )
}
