#if canImport(Glibc)
import Glibc
#endif
import GPTQKit

/// One parser under fuzzing: `run` gets the input bytes and, for parsers that read files,
/// the path of a file holding them. Throwing is the parser doing its job; a trap, a hang
/// or a memory blow-up is the bug libFuzzer reports.
struct FuzzTarget: Sendable {
    let name: String
    /// The extension of the file the bytes are written to (some parsers go by it).
    let fileExtension: String
    let run: @Sendable (_ bytes: [UInt8], _ path: String) throws -> Void

    static let all: [FuzzTarget] = [
        FuzzTarget(name: "safetensors", fileExtension: "safetensors") { _, path in
            let file = try SafetensorsFile(path: path)
            for name in file.names where file.entries[name]!.end - file.entries[name]!.begin <= 1 << 16 {
                let tensor = try file.tensor(name)
                if tensor.dtype.isFloatingPoint { _ = tensor.floats() }
            }
        },
        FuzzTarget(name: "gguf", fileExtension: "gguf") { _, path in
            let file = try GGUFFile(path: path)
            for info in file.tensors where info.byteCount <= 1 << 16 && GGMLType.dequantizable.contains(info.type) {
                _ = try file.dequantize(info)
            }
        },
        FuzzTarget(name: "json", fileExtension: "json") { bytes, _ in
            var input = bytes
            let document = try JSON.parse(bytes: &input)
            // What we write we must read back: config.json and tokenizer.json are rewritten.
            for indent in [0, 2] {
                var written = Array(document.serialized(indent: indent).utf8)
                do { _ = try JSON.parse(bytes: &written) } catch {
                    fatalError("serialized JSON does not parse back: \(error)")
                }
            }
        },
        FuzzTarget(name: "config", fileExtension: "json") { _, path in
            let json = try JSON.read(path: path)
            // Every family's declaration reads the config (whatever its model_type says).
            if let config = try? ModelConfig(json: json, path: path) {
                for family in ModelFamily.registered {
                    if let architecture = try? family.architecture(config) { _ = architecture.parameterCount(tiedHead: false) }
                }
            }
            _ = try? GenerationConfig(json: json, path: path)
            _ = try? TokenizerConfig(json: json, path: path)
            _ = try? QuantizeConfig(json: json, path: path)
        },
        FuzzTarget(name: "tokenizer", fileExtension: "json") { _, path in
            let tokenizer = try Tokenizer(tokenizerJSON: path)
            exercise(tokenizer)
        },
        FuzzTarget(name: "regex", fileExtension: "json") { bytes, path in
            // The input is a Split pattern of tokenizer.json, run on a tokenizer around it.
            let pattern = String(decoding: bytes, as: UTF8.self)
            let vocab = JSON.object((0..<256).map { (String(UnicodeScalar(UInt8($0))), JSON.number(Double($0))) })
            let document = JSON.object([
                ("model", .object([("type", .string("BPE")), ("vocab", vocab), ("merges", .array([]))])),
                ("pre_tokenizer", .object([("type", .string("Split")), ("pattern", .object([("Regex", .string(pattern))])),
                                           ("behavior", .string("Isolated")), ("invert", .bool(false))])),
            ])
            try FileIO.writeAtomically(path: path, text: document.serialized(indent: 0))
            exercise(try Tokenizer(tokenizerJSON: path))
        },
        FuzzTarget(name: "jinja", fileExtension: "jinja") { bytes, _ in
            let template = try ChatTemplate(String(decoding: bytes, as: UTF8.self))
            let messages = [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi"),
                            ChatMessage(role: "assistant", content: "Hello!"), ChatMessage(role: "user", content: "2+2?")]
            _ = try template.render(messages: messages.map(\.json), addGenerationPrompt: true,
                                    tools: [.object([("name", .string("add")), ("parameters", .object([]))])])
        },
        FuzzTarget(name: "calibration", fileExtension: "calib") { bytes, path in
            // The first byte picks the format (and so the extension the token reader goes by).
            guard let selector = bytes.first else { return }
            let formats: [(CalibrationFormat, String)] = [(.text, "txt"), (.jsonl, "jsonl"), (.tokens, "json"), (.tokens, "safetensors"), (.tokens, "bin")]
            let (format, fileExtension) = formats[Int(selector) % formats.count]
            let typed = path + "." + fileExtension
            defer { FileIO.remove(typed) }
            try FileIO.writeAtomically(path: typed, bytes: bytes.dropFirst())
            let corpus = try CalibrationCorpus.load(path: typed, format: format) { text in text.utf8.map { Int32($0) } }
            try corpus.checkIds(below: 1000)
            _ = try corpus.samples(.randomWindows(count: 4, length: 8, seed: 0))
            _ = try corpus.samples(.documents(count: 4, maxLength: 8))
        },
    ]

    /// Encodes and decodes texts that reach every part of a tokenizer (added tokens,
    /// byte fallback, digits, whitespace runs, non-ASCII).
    private static func exercise(_ tokenizer: Tokenizer) {
        for text in ["Hello world, it's 2024!", "  \n\t x<s></s>[INST] é日本語🙂 12345 ", ""] {
            let ids = tokenizer.encode(text, addSpecialTokens: true)
            _ = tokenizer.decode(ids)
            _ = tokenizer.decode(ids, skipSpecialTokens: true)
        }
        _ = tokenizer.decode([0, 1, 2, 3, 255, 256, 1000, Int32.max])
    }
}
