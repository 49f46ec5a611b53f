#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Converts a llama-architecture GGUF file into a Hugging Face model folder (config.json,
/// model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json),
/// with the same tensors and settings as the reference converter gguf_to_hf.py: tensors
/// are dequantized to float32 as ggml does it, llama.cpp's Q/K row permutation is
/// undone, and the result is rounded to the output dtype to nearest even.
public enum GGUFConverter {
    public struct Summary: Sendable {
        public let tensorCount: Int
        public let vocabSize: Int
        public let tiedEmbeddings: Bool
        /// Leftover folders of interrupted conversions to the same output, removed first.
        public let removedStaleFolders: [String]
    }

    /// Output dtypes and the names config.json gives them.
    public static let outputDTypes: [(name: String, dtype: DType)] = [("float16", .f16), ("float32", .f32), ("bfloat16", .bf16)]

    /// Converts `ggufPath` into the folder `outputFolder`, which must not exist yet (or be
    /// empty). The folder is filled under a temporary name and renamed into place, so it
    /// never exists half-written.
    @discardableResult
    public static func convert(ggufPath: String, outputFolder: String, dtype: DType = .f16) throws -> Summary {
        guard let dtypeName = outputDTypes.first(where: { $0.dtype == dtype })?.name else {
            throw GPTQError.invalidArgument("output dtype \(dtype.rawValue) is not supported; use one of \(outputDTypes.map(\.name).joined(separator: ", "))")
        }
        try checkAvailable(outputFolder)
        let removedStaleFolders = try FileIO.removeStaleTemporaries(of: outputFolder)
        let gguf = try GGUFFile(path: ggufPath)
        let fields = GGUFFields(gguf)
        let architecture = try fields.string("general.architecture")
        guard architecture == "llama" else {
            throw GPTQError.badConfig(field: "general.architecture", path: ggufPath, reason: "'\(architecture)': only llama-architecture GGUF files are converted")
        }
        // Tensor names and types first: they fail a file fastest, before any work is done.
        for info in gguf.tensors {
            _ = try huggingFaceName(of: info.name, path: ggufPath)
            try gguf.checkDequantizable(info)
        }
        let headCount = try fields.int("llama.attention.head_count")
        let kvHeadCount = try fields.int("llama.attention.head_count_kv", default: headCount)
        let tokenizer = try GGUFTokenizerExport(fields)

        var tensors: [(String, Tensor)] = []
        for info in gguf.tensors {
            let (name, kind) = try huggingFaceName(of: info.name, path: ggufPath)
            var tensor = try gguf.dequantize(info)
            if kind == "attn_q" { tensor = try unpermuteRows(tensor, heads: headCount, name: info.name, path: ggufPath) }
            if kind == "attn_k" { tensor = try unpermuteRows(tensor, heads: kvHeadCount, name: info.name, path: ggufPath) }
            tensors.append((name, tensor.converted(to: dtype)))
        }
        tensors.sort { Array($0.0.utf8).lexicographicallyPrecedes(Array($1.0.utf8)) }
        let tied = !tensors.contains { $0.0 == "lm_head.weight" }

        let config = try makeConfig(fields, headCount: headCount, kvHeadCount: kvHeadCount, vocabSize: tokenizer.vocabSize,
                                    tied: tied, dtypeName: dtypeName)
        let generationConfig = JSON.object(["bos_token_id", "eos_token_id", "pad_token_id"].map { ($0, config[$0]!) })
        let tokenizerConfig = try tokenizer.tokenizerConfig(
            bosTokenId: config["bos_token_id"]!.int!, eosTokenId: config["eos_token_id"]!.int!,
            padTokenId: config["pad_token_id"]!.int!, modelMaxLength: config["max_position_embeddings"]!.int!)

        let staging = outputFolder + ".tmp-\(getpid())"
        try FileIO.makeDirectory(staging)
        do {
            try SafetensorsWriter.write(path: FileIO.join(staging, "model.safetensors"), tensors: tensors)
            try FileIO.writeAtomically(path: FileIO.join(staging, "config.json"), text: config.serialized())
            try FileIO.writeAtomically(path: FileIO.join(staging, "generation_config.json"), text: generationConfig.serialized())
            try FileIO.writeAtomically(path: FileIO.join(staging, "tokenizer.json"), text: tokenizer.tokenizerJSON().serialized(indent: 0))
            try FileIO.writeAtomically(path: FileIO.join(staging, "tokenizer_config.json"), text: tokenizerConfig.serialized())
            try checkLoads(staging, ggufPath: ggufPath)
            try checkAvailable(outputFolder)
            if FileIO.isDirectory(outputFolder) { try FileIO.removeTree(outputFolder) }
            try FileIO.move(staging, to: outputFolder)
        } catch {
            try? FileIO.removeTree(staging)
            throw error
        }
        return Summary(tensorCount: tensors.count, vocabSize: tokenizer.vocabSize, tiedEmbeddings: tied, removedStaleFolders: removedStaleFolders)
    }

    /// The Hugging Face name of a GGUF tensor, and its llama.cpp kind (attn_q, ffn_up, ...).
    static func huggingFaceName(of ggufName: String, path: String) throws -> (name: String, kind: String) {
        let global = ["token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                      "output.weight": "lm_head.weight"]
        let perLayer = ["attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                        "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                        "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                        "ffn_down": "mlp.down_proj"]
        if let name = global[ggufName] { return (name, "") }
        let parts = ggufName.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 4, parts[0] == "blk", let layer = Int(parts[1]), layer >= 0, let module = perLayer[parts[2]] else {
            throw GPTQError.badTensor(name: ggufName, path: path, reason: "no Hugging Face llama counterpart")
        }
        return ("model.layers.\(layer).\(module).\(parts[3])", parts[2])
    }

    /// Undoes llama.cpp's permutation of Q/K rows: within each head, GGUF row 2i+j holds
    /// Hugging Face row j*(d/2)+i (d rows per head), as the reference's
    /// reshape(heads, d/2, 2, ...).swapaxes(1, 2) does.
    static func unpermuteRows(_ t: Tensor, heads: Int, name: String, path: String) throws -> Tensor {
        let rows = t.shape[0]
        guard heads > 0, rows % (2 * heads) == 0 else {
            throw GPTQError.badTensor(name: name, path: path, reason: "\(rows) rows do not split into \(heads) heads of rotary pairs")
        }
        let half = rows / heads / 2
        let rowBytes = t.byteCount / max(rows, 1)
        let out = Tensor(zeros: t.shape, dtype: t.dtype)
        for head in 0..<heads {
            for j in 0..<2 {
                for i in 0..<half {
                    let source = head * 2 * half + i * 2 + j
                    let destination = head * 2 * half + j * half + i
                    (out.mutableRaw + destination * rowBytes).copyMemory(from: t.raw + source * rowBytes, byteCount: rowBytes)
                }
            }
        }
        return out
    }

    /// config.json with the reference converter's keys and values, in its order.
    static func makeConfig(_ fields: GGUFFields, headCount: Int, kvHeadCount: Int, vocabSize: Int, tied: Bool,
                           dtypeName: String) throws -> JSON {
        let hidden = try fields.int("llama.embedding_length")
        guard headCount > 0 else {
            throw GPTQError.badConfig(field: "llama.attention.head_count", path: fields.path, reason: "must be positive, got 0")
        }
        func number(_ v: Int) -> JSON { .number(Double(v)) }
        return .object([
            ("architectures", .array([.string("LlamaForCausalLM")])), ("model_type", .string("llama")),
            ("hidden_size", number(hidden)), ("intermediate_size", number(try fields.int("llama.feed_forward_length"))),
            ("num_hidden_layers", number(try fields.int("llama.block_count"))), ("num_attention_heads", number(headCount)),
            ("num_key_value_heads", number(kvHeadCount)), ("head_dim", number(hidden / headCount)),
            ("max_position_embeddings", number(try fields.int("llama.context_length"))),
            ("rms_norm_eps", .number(try fields.double("llama.attention.layer_norm_rms_epsilon"))),
            ("rope_theta", .number(try fields.double("llama.rope.freq_base", default: 10000))), ("vocab_size", number(vocabSize)),
            ("hidden_act", .string("silu")), ("tie_word_embeddings", .bool(tied)), ("attention_bias", .bool(false)),
            ("mlp_bias", .bool(false)),
            ("bos_token_id", number(try fields.int("tokenizer.ggml.bos_token_id", default: 1))),
            ("eos_token_id", number(try fields.int("tokenizer.ggml.eos_token_id", default: 2))),
            ("pad_token_id", number(try fields.int("tokenizer.ggml.padding_token_id", default: 2))),
            ("torch_dtype", .string(dtypeName)), ("initializer_range", .number(0.02)), ("use_cache", .bool(true)),
        ])
    }

    /// Loads the written folder as `generate` would: a GGUF file whose metadata disagrees
    /// with its tensors (layers missing, a vocabulary of another size) fails here, naming the
    /// GGUF file, instead of leaving a folder that nothing can load.
    private static func checkLoads(_ folder: String, ggufPath: String) throws {
        do {
            _ = try LanguageModel.load(folder: folder)
            _ = try Tokenizer(folder: folder)
        } catch {
            throw GPTQError.invalidFile(path: ggufPath, reason: "converts into a folder that does not load: \(error)")
        }
    }

    /// The output folder must not hold anything yet: a conversion never overwrites.
    private static func checkAvailable(_ folder: String) throws {
        guard FileIO.exists(folder) else { return }
        guard FileIO.isDirectory(folder), try FileIO.listDirectory(folder).isEmpty else {
            throw GPTQError.invalidArgument("\(folder) already exists and is not an empty folder; remove it or choose another output folder")
        }
    }
}

/// Typed access to a GGUF file's metadata; a missing or mistyped key is an error naming it.
struct GGUFFields {
    let file: GGUFFile
    init(_ file: GGUFFile) { self.file = file }

    var path: String { file.path }
    func has(_ key: String) -> Bool { file[key] != nil }

    /// The value of `key` converted by `convert` (nil: not of the `expected` kind), or `fallback` when absent.
    private func value<T>(_ key: String, _ fallback: T?, expected: String, _ convert: (GGUFValue) -> T?) throws -> T {
        guard let value = file[key] else {
            if let fallback { return fallback }
            throw GPTQError.badConfig(field: key, path: path, reason: "missing")
        }
        guard let converted = convert(value) else { throw GPTQError.badConfig(field: key, path: path, reason: "\(value) is not \(expected)") }
        return converted
    }

    func int(_ key: String, default fallback: Int? = nil) throws -> Int {
        try value(key, fallback, expected: "a non-negative integer") { $0.int.flatMap { $0 >= 0 ? $0 : nil } }
    }

    func double(_ key: String, default fallback: Double? = nil) throws -> Double {
        try value(key, fallback, expected: "a number") { $0.double }
    }

    func bool(_ key: String, default fallback: Bool) throws -> Bool {
        try value(key, fallback, expected: "a bool") { $0.bool }
    }

    func string(_ key: String, default fallback: String? = nil) throws -> String {
        try value(key, fallback, expected: "a string") { $0.string }
    }

    /// The array at `key`, each item converted by `convert` (nil: not of the `expected` kind).
    private func array<T>(_ key: String, expected: String, _ convert: (GGUFValue) -> T?) throws -> [T] {
        guard let value = file[key] else { throw GPTQError.badConfig(field: key, path: path, reason: "missing") }
        guard let items = value.array else { throw GPTQError.badConfig(field: key, path: path, reason: "not an array") }
        return try items.enumerated().map { i, item in
            guard let converted = convert(item) else { throw GPTQError.badConfig(field: "\(key)[\(i)]", path: path, reason: "not \(expected)") }
            return converted
        }
    }

    func strings(_ key: String) throws -> [String] { try array(key, expected: "a string") { $0.string } }

    func ints(_ key: String) throws -> [Int] { try array(key, expected: "an integer") { $0.int } }
}
