/// A Hugging Face tokenizer (tokenizer.json), giving the same ids as the HF tokenizers
/// library: added tokens are found in the raw text, the rest is normalized, pre-tokenized
/// into words and encoded by the BPE model; decoding runs the decoder chain.
public final class Tokenizer: Sendable {
    let model: BPEModel
    private let normalizer: Normalizer?
    private let preTokenizer: PreTokenizer?
    private let decoder: Decoder?
    private let postProcessor: PostProcessor
    private let addedTokenStrings: [Int32: String]
    private let addedTokenIds: [String: Int32]
    /// Added tokens matched in the raw text, and those matched after normalization.
    private let rawMatcher: AddedTokenMatcher
    private let normalizedMatcher: AddedTokenMatcher

    public let specialTokenIds: Set<Int32>
    /// The number of distinct tokens: the model's vocabulary and the added tokens.
    public let vocabSize: Int

    /// Reads `tokenizer.json` in `folder`, and `tokenizer_config.json` when present:
    /// its `add_bos_token` / `add_eos_token` decide the special tokens `encode` adds,
    /// as transformers does.
    public convenience init(folder: String) throws {
        try self.init(tokenizerJSON: FileIO.join(folder, "tokenizer.json"), config: try TokenizerConfig(folder: folder))
    }

    public convenience init(tokenizerJSON path: String) throws {
        try self.init(tokenizerJSON: path, config: nil)
    }

    private init(tokenizerJSON path: String, config: TokenizerConfig?) throws {
        let json = try JSON.read(path: path)
        guard let modelJSON = json["model"] else {
            throw GPTQError.badConfig(field: "model", path: path, reason: "missing")
        }
        model = try BPEModel(json: modelJSON, path: path)
        let normalizer = try json["normalizer"].flatMap { $0.isNull ? nil : try Normalizer.parse($0, path: path) }
        self.normalizer = normalizer
        preTokenizer = try json["pre_tokenizer"].flatMap { $0.isNull ? nil : try PreTokenizer.parse($0, path: path) }
        decoder = try json["decoder"].flatMap { $0.isNull ? nil : try Decoder.parse($0, path: path) }

        var added: [AddedToken] = []
        for (i, entry) in (json["added_tokens"]?.array ?? []).enumerated() {
            guard let id = entry["id"]?.tokenId, let content = entry["content"]?.string else {
                throw GPTQError.badConfig(field: "added_tokens[\(i)]", path: path, reason: "expected an id (0 to \(Int32.max)) and a content")
            }
            let special = entry["special"]?.bool ?? false
            added.append(AddedToken(id: id, content: content, singleWord: entry["single_word"]?.bool ?? false,
                                    leftStrip: entry["lstrip"]?.bool ?? false, rightStrip: entry["rstrip"]?.bool ?? false,
                                    normalized: entry["normalized"]?.bool ?? !special, special: special))
        }
        // A normalized added token reads back (token(for:), decode) in its normalized form, as in HF.
        let addedTokenStrings = Dictionary(added.map { token in
            guard token.normalized, let normalizer else { return (token.id, token.content) }
            return (token.id, String(String.UnicodeScalarView(normalizer.normalize(Array(token.content.unicodeScalars)))))
        }, uniquingKeysWith: { $1 })
        self.addedTokenStrings = addedTokenStrings
        let addedTokenIds = Dictionary(added.map { ($0.content, $0.id) }, uniquingKeysWith: { $1 })
        self.addedTokenIds = addedTokenIds
        specialTokenIds = Set(added.filter(\.special).map(\.id))
        let raw = added.filter { !$0.normalized }
        rawMatcher = AddedTokenMatcher(tokens: raw, contents: raw.map { Array($0.content.unicodeScalars) })
        let normalizedTokens = added.filter(\.normalized)
        normalizedMatcher = AddedTokenMatcher(tokens: normalizedTokens, contents: normalizedTokens.map {
            Array(addedTokenStrings[$0.id]!.unicodeScalars)
        })
        let model = self.model
        vocabSize = model.vocab.count + addedTokenIds.keys.filter { model.vocab[$0] == nil }.count

        let processorJSON = json["post_processor"]
        var processor = try processorJSON.flatMap { $0.isNull ? nil : try PostProcessor.parse($0, path: path) } ?? .none
        if let config {
            processor = try Self.applyConfig(config, to: processor) {
                addedTokenIds[$0] ?? model.vocab[$0]
            }
        }
        postProcessor = processor
    }

    /// transformers rebuilds the template from `add_bos_token` / `add_eos_token` when the config sets them.
    private static func applyConfig(_ config: TokenizerConfig, to processor: PostProcessor, idOf: (String) -> Int32?) throws -> PostProcessor {
        func ids(add: Bool?, token: String?, flag: String, field: String) throws -> [Int32]? {
            guard let add else { return nil }
            guard add else { return [] }
            guard let token else {
                throw GPTQError.badConfig(field: field, path: config.path, reason: "\(flag) is true but \(field) is not set")
            }
            guard let id = idOf(token) else {
                throw GPTQError.badConfig(field: field, path: config.path, reason: "'\(token)' is not in the vocabulary")
            }
            return [id]
        }
        var processor = processor
        if let prefix = try ids(add: config.addBosToken, token: config.bosToken, flag: "add_bos_token", field: "bos_token") {
            processor.prefix = prefix
        }
        if let suffix = try ids(add: config.addEosToken, token: config.eosToken, flag: "add_eos_token", field: "eos_token") {
            processor.suffix = suffix
        }
        return processor
    }

    // MARK: encoding

    public func encode(_ text: String, addSpecialTokens: Bool = false) -> [Int32] {
        var ids: [Int32] = []
        var cache: [[Unicode.Scalar]: [Int32]] = [:]
        let input = TextPiece(scalars: Array(text.unicodeScalars), startsText: true)
        for segment in rawMatcher.split(input) {
            switch segment {
            case let .token(id):
                ids.append(id)
            case var .text(piece):
                if let normalizer { piece.scalars = normalizer.normalize(piece.scalars) }
                for inner in normalizedMatcher.split(piece) {
                    switch inner {
                    case let .token(id):
                        ids.append(id)
                    case let .text(normalized):
                        let words = preTokenizer?.preTokenize([normalized]) ?? [normalized]
                        for word in words { model.encode(word: word.scalars, cache: &cache, into: &ids) }
                    }
                }
            }
        }
        return addSpecialTokens ? postProcessor.apply(ids) : ids
    }

    // MARK: decoding

    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) -> String {
        var tokens: [String] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            if skipSpecialTokens && specialTokenIds.contains(id) { continue }
            if let token = token(for: id) { tokens.append(token) }
        }
        guard let decoder else { return tokens.joined(separator: " ") }
        return decoder.decode(tokens)
    }

    public func token(for id: Int32) -> String? {
        if let added = addedTokenStrings[id] { return added }
        guard id >= 0 && Int(id) < model.tokens.count else { return nil }
        return model.tokens[Int(id)]
    }

    public func id(for token: String) -> Int32? {
        addedTokenIds[token] ?? model.vocab[token]
    }
}

extension JSON {
    /// A token id: a non-negative integer that fits the Int32 ids the tokenizer hands out.
    var tokenId: Int32? { int.flatMap { $0 >= 0 ? Int32(exactly: $0) : nil } }
}
