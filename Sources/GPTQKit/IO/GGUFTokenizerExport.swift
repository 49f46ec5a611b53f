/// Builds a Hugging Face tokenizer.json and tokenizer_config.json from the byte-level
/// BPE tokenizer a GGUF file carries (tokenizer.ggml.*), as the reference converter
/// gguf_to_hf.py writes them; the pre-tokenizer follows `tokenizer.ggml.pre`.
struct GGUFTokenizerExport {
    let tokens: [String]
    let tokenTypes: [Int]
    let merges: [String]
    let preTokenizer: JSON
    let vocabSize: Int
    let addBosToken: Bool
    let unknownTokenId: Int
    let chatTemplate: String?
    let path: String

    /// llama.cpp's token type of control tokens (<|im_start|>, <|endoftext|>, ...).
    static let controlTokenType = 3

    static func byteLevel(trimOffsets: Bool = true, useRegex: Bool) -> JSON {
        .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(false)), ("trim_offsets", .bool(trimOffsets)),
                 ("use_regex", .bool(useRegex))])
    }

    static func split(regex: String) -> JSON {
        .object([("type", .string("Split")), ("pattern", .object([("Regex", .string(regex))])),
                 ("behavior", .string("Isolated")), ("invert", .bool(false))])
    }

    /// The pre-tokenizer Hugging Face uses for each llama.cpp `tokenizer.ggml.pre` name.
    static let preTokenizers: [String: JSON] = [
        "default": byteLevel(useRegex: true),
        "gpt2": byteLevel(useRegex: true),
        "smollm": .object([("type", .string("Sequence")), ("pretokenizers", .array([
            .object([("type", .string("Digits")), ("individual_digits", .bool(true))]), byteLevel(useRegex: true),
        ]))]),
        "llama-bpe": llama3,
        "llama3": llama3,
        "qwen2": .object([("type", .string("Sequence")), ("pretokenizers", .array([
            split(regex: #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#),
            byteLevel(trimOffsets: false, useRegex: false),
        ]))]),
    ]

    static let llama3: JSON = .object([("type", .string("Sequence")), ("pretokenizers", .array([
        split(regex: #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#),
        byteLevel(useRegex: false),
    ]))])

    init(_ fields: GGUFFields) throws {
        path = fields.path
        let model = try fields.string("tokenizer.ggml.model")
        guard model == "gpt2" else {
            throw GPTQError.badConfig(field: "tokenizer.ggml.model", path: path, reason: "'\(model)': only byte-level BPE (gpt2) tokenizers are converted")
        }
        tokens = try fields.strings("tokenizer.ggml.tokens")
        tokenTypes = try fields.ints("tokenizer.ggml.token_type")
        guard tokenTypes.count == tokens.count else {
            throw GPTQError.badConfig(field: "tokenizer.ggml.token_type", path: path, reason: "\(tokenTypes.count) types for \(tokens.count) tokens")
        }
        merges = try fields.strings("tokenizer.ggml.merges")
        let pre = try fields.string("tokenizer.ggml.pre", default: "default")
        guard let preTokenizer = Self.preTokenizers[pre] else {
            throw GPTQError.badConfig(field: "tokenizer.ggml.pre", path: path, reason: "unknown pre-tokenizer '\(pre)'; supported: \(Self.preTokenizers.keys.sorted().joined(separator: ", "))")
        }
        self.preTokenizer = preTokenizer
        vocabSize = try fields.int("llama.vocab_size", default: tokens.count)
        addBosToken = try fields.bool("tokenizer.ggml.add_bos_token", default: false)
        unknownTokenId = try fields.int("tokenizer.ggml.unknown_token_id", default: 0)
        let template = fields.has("tokenizer.chat_template") ? try fields.string("tokenizer.chat_template") : ""
        chatTemplate = template.isEmpty ? nil : template
    }

    func tokenizerJSON() -> JSON {
        let added: [JSON] = zip(tokens, tokenTypes).enumerated().compactMap { id, item in
            guard item.1 == Self.controlTokenType else { return nil }
            return .object([("id", .number(Double(id))), ("content", .string(item.0)), ("single_word", .bool(false)),
                            ("lstrip", .bool(false)), ("rstrip", .bool(false)), ("normalized", .bool(false)), ("special", .bool(true))])
        }
        // A token listed twice keeps its first position and its last id, as a Python dict does.
        var vocab: [(String, JSON)] = []
        var position: [String: Int] = [:]
        vocab.reserveCapacity(tokens.count)
        for (id, token) in tokens.enumerated() {
            if let p = position[token] { vocab[p].1 = .number(Double(id)); continue }
            position[token] = vocab.count
            vocab.append((token, .number(Double(id))))
        }
        let mergePairs: [JSON] = merges.map { merge in
            guard let space = merge.firstIndex(of: " ") else { return .array([.string(merge)]) }
            return .array([.string(String(merge[..<space])), .string(String(merge[merge.index(after: space)...]))])
        }
        let byteLevelWithPrefix = { (trim: Bool) in
            JSON.object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(true)), ("trim_offsets", .bool(trim)),
                         ("use_regex", .bool(true))])
        }
        return .object([
            ("version", .string("1.0")), ("truncation", .null), ("padding", .null), ("added_tokens", .array(added)),
            ("normalizer", .null), ("pre_tokenizer", preTokenizer),
            ("post_processor", byteLevelWithPrefix(false)), ("decoder", byteLevelWithPrefix(true)),
            ("model", .object([
                ("type", .string("BPE")), ("dropout", .null), ("unk_token", .null), ("continuing_subword_prefix", .null),
                ("end_of_word_suffix", .null), ("fuse_unk", .bool(false)), ("byte_fallback", .bool(false)),
                ("ignore_merges", .bool(false)), ("vocab", .object(vocab)), ("merges", .array(mergePairs)),
            ])),
        ])
    }

    func tokenizerConfig(bosTokenId: Int, eosTokenId: Int, padTokenId: Int, modelMaxLength: Int) throws -> JSON {
        func token(_ id: Int, _ key: String) throws -> JSON {
            guard id < tokens.count else {
                throw GPTQError.badConfig(field: key, path: path, reason: "token id \(id) is outside the \(tokens.count)-token vocabulary")
            }
            return .string(tokens[id])
        }
        var pairs: [(String, JSON)] = [
            ("tokenizer_class", .string("GPT2Tokenizer")), ("add_bos_token", .bool(addBosToken)),
            ("bos_token", try token(bosTokenId, "tokenizer.ggml.bos_token_id")),
            ("eos_token", try token(eosTokenId, "tokenizer.ggml.eos_token_id")),
            ("pad_token", try token(padTokenId, "tokenizer.ggml.padding_token_id")),
            ("unk_token", try token(unknownTokenId, "tokenizer.ggml.unknown_token_id")),
            ("model_max_length", .number(Double(modelMaxLength))), ("clean_up_tokenization_spaces", .bool(false)),
        ]
        if let chatTemplate { pairs.append(("chat_template", .string(chatTemplate))) }
        return .object(pairs)
    }
}
