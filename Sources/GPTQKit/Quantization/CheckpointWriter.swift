#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Saves a quantized model folder the way AutoGPTQ's save_quantized lays it out, atomically:
/// everything is written into `OUT.tmp-<pid>` and renamed to OUT at the end, so that an
/// interrupted save never leaves a folder that looks complete.
public enum CheckpointWriter {
    /// Files of the source model folder copied unchanged when present (tokenizer, chat
    /// template, generation defaults).
    public static let copiedFiles = [
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
        "added_tokens.json", "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model",
    ]

    /// Refuses an output folder that would clobber the source model or an existing folder
    /// (unless `overwrite`). Called before quantizing, so that a bad path fails in seconds.
    public static func checkDestination(_ out: String, source: String, overwrite: Bool) throws {
        let outPath = FileIO.canonicalPath(out)
        let sourcePath = FileIO.canonicalPath(source)
        guard outPath != sourcePath, !outPath.hasPrefix(sourcePath + "/") else {
            throw GPTQError.invalidArgument("output folder \(out) is inside the model folder \(source); choose a folder outside it")
        }
        guard !sourcePath.hasPrefix(outPath + "/") else {
            throw GPTQError.invalidArgument("output folder \(out) contains the model folder \(source); replacing it would delete the model")
        }
        if FileIO.exists(out) {
            guard overwrite else { throw GPTQError.invalidArgument("output folder \(out) already exists; pass --overwrite (overwrite: true) to replace it") }
            guard FileIO.isDirectory(out) else { throw GPTQError.invalidArgument("output path \(out) exists and is not a folder") }
        }
    }

    /// Writes `tensors` (sharded past `maxShardBytes`), quantize_config.json, config.json
    /// carrying `quantizationConfig` as `quantization_config`, and the tokenizer files of
    /// `source` into the folder `out`. `untiesHead`: the head was quantized from a tied
    /// embedding, so config.json says `tie_word_embeddings: false` (as GPTQModel's
    /// untie_word_embeddings does), or transformers would tie the quantized head to it.
    public static func write(to out: String, source: String, tensors: [(String, Tensor)], quantizationConfig: JSON,
                             untiesHead: Bool = false, maxShardBytes: Int? = nil, overwrite: Bool = false) throws {
        let out = out.count > 1 && out.hasSuffix("/") ? String(out.dropLast()) : out
        try checkDestination(out, source: source, overwrite: overwrite)
        let temp = out + ".tmp-\(getpid())"
        try FileIO.removeTree(temp)
        try FileIO.makeDirectory(temp)
        do {
            try SafetensorsWriter.writeSharded(folder: temp, baseName: "model", tensors: tensors, maxShardBytes: maxShardBytes)
            try FileIO.writeAtomically(path: FileIO.join(temp, "quantize_config.json"), text: quantizationConfig.serialized() + "\n")
            try FileIO.writeAtomically(path: FileIO.join(temp, "config.json"),
                                       text: try modelConfig(source: source, quantizationConfig: quantizationConfig, untiesHead: untiesHead).serialized() + "\n")
            for name in copiedFiles where FileIO.exists(FileIO.join(source, name)) {
                try FileIO.writeAtomically(path: FileIO.join(temp, name), bytes: try FileIO.readAll(path: FileIO.join(source, name)))
            }
        } catch {
            try? FileIO.removeTree(temp)
            throw error
        }
        try publish(temp, as: out)
    }

    /// The source config.json with `quantization_config` added and the dtype set to float16,
    /// the type of the tensors saved unquantized.
    static func modelConfig(source: String, quantizationConfig: JSON, untiesHead: Bool) throws -> JSON {
        var config = try JSON.read(path: FileIO.join(source, "config.json"))
        guard config.object != nil else {
            throw GPTQError.badConfig(field: "(root)", path: FileIO.join(source, "config.json"), reason: "not a JSON object")
        }
        let dtypeKey = config["dtype"] != nil && config["torch_dtype"] == nil ? "dtype" : "torch_dtype"
        config = config.setting(dtypeKey, .string("float16"))
        if untiesHead { config = config.setting("tie_word_embeddings", .bool(false)) }
        return config.setting("quantization_config", quantizationConfig)
    }

    /// Renames the finished `temp` folder to `out`. An existing `out` is swapped with `temp` in
    /// one atomic exchange, so that `out` is always either the old folder or the new one; the
    /// old one, now at `temp`, is removed after.
    static func publish(_ temp: String, as out: String) throws {
        do {
            if FileIO.exists(out) { try FileIO.exchange(temp, out) } else { try FileIO.move(temp, to: out) }
        } catch {
            try? FileIO.removeTree(temp)
            throw error
        }
        try FileIO.removeTree(temp)
    }
}
