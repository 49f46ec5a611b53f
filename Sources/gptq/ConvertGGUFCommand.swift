import ArgumentParser
import GPTQKit

struct ConvertGGUFCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert-gguf",
        abstract: "Convert a llama-architecture GGUF file into a Hugging Face model folder.",
        discussion: """
            Writes config.json, model.safetensors, tokenizer.json, tokenizer_config.json and \
            generation_config.json. Quantized tensors (Q8_0, Q4_0, Q4_1) are dequantized as ggml does it.
            """
    )

    @Argument(help: "The .gguf file.")
    var gguf: String

    @Argument(help: "The output folder; it must not exist yet.")
    var outputFolder: String

    @Option(parsing: .unconditional, help: "Element type of the written tensors: float16, float32 or bfloat16.")
    var dtype: String = "float16"

    func run() throws {
        guard let target = GGUFConverter.outputDTypes.first(where: { $0.name == dtype })?.dtype else {
            throw ValidationError("--dtype \(dtype) is not one of \(GGUFConverter.outputDTypes.map(\.name).joined(separator: ", "))")
        }
        let summary = try GGUFConverter.convert(ggufPath: gguf, outputFolder: outputFolder, dtype: target)
        for stale in summary.removedStaleFolders { print("removed \(stale), left by an interrupted conversion") }
        print("wrote \(outputFolder): \(summary.tensorCount) tensors, vocab \(summary.vocabSize), tied embeddings \(summary.tiedEmbeddings)")
    }
}
