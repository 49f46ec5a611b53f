#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import GPTQKit

@main
struct GPTQCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gptq",
        abstract: "GPTQ quantization and inference for Hugging Face causal language models.",
        subcommands: [ConvertGGUFCommand.self, InspectCommand.self, BenchCommand.self, BenchGPTQCommand.self, QuantizeCommand.self, TokenizeCommand.self, LogitsCommand.self,
                      GenerateCommand.self, ChatCommand.self, PerplexityCommand.self, EvalCommand.self, ServeCommand.self,
                      FinetuneCommand.self]
            + GPUCommands.subcommands
    )
}

/// Sets the CPU threads: one per core by default. More threads than cores only contend for
/// them (and a typo like --threads 640 would start hundreds), so a larger request is capped
/// with a warning.
func useThreads(_ requested: Int?) {
    let cores = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    if let requested, requested > cores {
        printToStandardError("warning: --threads \(requested) is more than the \(cores) cores here; using \(cores)")
    }
    CPUThreads.set(min(requested ?? cores, cores))
}
