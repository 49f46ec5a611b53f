import ArgumentParser
import GPTQKit

struct LogitsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logits",
        abstract: "Write a model's float32 logits for the token ids of a safetensors file (for comparisons with other tools).",
        discussion: """
            Reads `input_ids` (int32 or int64, [batch, length]) from --input and writes `logits` \
            (float32, [batch, length, vocab]) and the ids to --out; each row runs as its own sequence on the CPU.
            """
    )

    @Option(help: "The model folder (float or GPTQ).") var model: String
    @Option(help: "A safetensors file holding input_ids [batch, length].") var input: String
    @Option(help: "The safetensors file to write.") var out: String

    func run() throws {
        let ids = try SafetensorsFile(path: input).tensor("input_ids")
        guard ids.rank == 2, ids.dtype == .i32 || ids.dtype == .i64, ids.shape[1] > 0 else {
            throw GPTQError.badTensor(name: "input_ids", path: input, reason: "\(ids.dtype.rawValue) \(ids.shape); expected I32 or I64 [batch, length]")
        }
        let languageModel = try LanguageModel.load(folder: model)
        let (batch, length) = (ids.shape[0], ids.shape[1]), values = ids.ints()
        var logits: [Float] = []
        for b in 0..<batch {
            logits += try languageModel.makeSession(capacity: length).forward(Array(values[(b * length)..<((b + 1) * length)]), allLogits: true)
        }
        try SafetensorsWriter.write(path: out, tensors: [
            ("input_ids", Tensor(bitPattern: values, dtype: .i32, shape: [batch, length])),
            ("logits", Tensor(logits, shape: [batch, length, languageModel.vocabSize])),
        ])
    }
}
