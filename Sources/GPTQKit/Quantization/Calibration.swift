import FoundationEssentials

/// How a calibration file holds its data.
public enum CalibrationFormat: String, CaseIterable, Sendable {
    /// Plain text, tokenized whole as one stream (GPTQ's wikitext2 protocol).
    case text
    /// One JSON object per line with a "text" string; each line is one document.
    case jsonl
    /// Token ids already: a JSON array of ids (one stream) or of id arrays (documents),
    /// a .safetensors tensor of int32/int64 (1-D: a stream, 2-D: one document per row),
    /// or raw little-endian int32 (any other extension).
    case tokens

    /// The format a file's extension suggests: .jsonl, .json/.safetensors/.bin, else text.
    public static func infer(path: String) -> CalibrationFormat {
        if path.hasSuffix(".jsonl") { return .jsonl }
        if path.hasSuffix(".json") || path.hasSuffix(".safetensors") || path.hasSuffix(".bin") { return .tokens }
        return .text
    }
}

/// Which samples to draw from a calibration corpus.
public enum CalibrationMode: Sendable, Equatable {
    /// `count` windows of `length` tokens at offsets Python's `random.randint` draws after
    /// `random.seed(seed)`, exactly as GPTQ's datautils do (documents are concatenated).
    case randomWindows(count: Int, length: Int, seed: Int)
    /// The first `count` non-empty documents, each truncated to `maxLength` tokens.
    case documents(count: Int, maxLength: Int)
}

/// Calibration token ids read from a file: the documents of a JSONL or pre-tokenized
/// file, or a single document for a text file or a flat token stream.
public struct CalibrationCorpus: Sendable {
    /// Where the tokens came from, for error messages.
    public let path: String
    public let documents: [[Int32]]

    public init(path: String, documents: [[Int32]]) {
        self.path = path
        self.documents = documents
    }

    public var tokenCount: Int { documents.reduce(0) { $0 + $1.count } }

    /// Reads `path` in `format`, tokenizing text with `tokenize`.
    public static func load(path: String, format: CalibrationFormat,
                            tokenize: (String) throws -> [Int32]) throws -> CalibrationCorpus {
        guard FileIO.exists(path) else { throw GPTQError.invalidFile(path: path, reason: "calibration file not found") }
        let documents: [[Int32]]
        switch format {
        case .text:
            // Read whole first: a pipe or /dev/stdin has no size to check beforehand.
            let text = try FileIO.readText(path: path)
            guard !text.isEmpty else { throw GPTQError.invalidFile(path: path, reason: "calibration file is empty") }
            documents = [try tokenize(text)]
        case .jsonl: documents = try readJSONL(path: path).map(tokenize)
        case .tokens: documents = try readTokens(path: path)
        }
        let corpus = CalibrationCorpus(path: path, documents: documents.filter { !$0.isEmpty })
        guard corpus.tokenCount > 0 else { throw GPTQError.invalidFile(path: path, reason: "calibration file holds no tokens") }
        return corpus
    }

    /// Throws, naming the file and the position, unless every id is below `vocabularySize`:
    /// an id past the embedding table would read memory that is not the model's.
    public func checkIds(below vocabularySize: Int) throws {
        for (d, document) in documents.enumerated() {
            if let i = document.firstIndex(where: { Int($0) >= vocabularySize }) {
                let place = documents.count == 1 ? "position \(i)" : "document \(d), position \(i)"
                throw GPTQError.invalidFile(path: path, reason: "token id \(document[i]) at \(place) is outside the model's vocabulary of \(vocabularySize)")
            }
        }
    }

    /// The samples `mode` selects.
    public func samples(_ mode: CalibrationMode) throws -> [[Int32]] {
        switch mode {
        case let .randomWindows(count, length, seed): return try randomWindows(count: count, length: length, seed: seed)
        case let .documents(count, maxLength): return try documentPrefixes(count: count, maxLength: maxLength)
        }
    }

    /// GPTQ's datautils: `random.seed(seed)`, then per sample
    /// `i = random.randint(0, ntokens - length - 1); ids[i:i+length]`.
    public func randomWindows(count: Int, length: Int, seed: Int) throws -> [[Int32]] {
        try Self.checkCounts(count: count, length: length)
        let ids = documents.count == 1 ? documents[0] : documents.flatMap { $0 }
        guard ids.count >= length + 1 else {
            throw GPTQError.invalidFile(path: path, reason: "calibration data has \(ids.count) tokens; random windows of \(length) tokens need at least \(length + 1)")
        }
        var random = PythonRandom(seed: seed)
        return (0..<count).map { _ in
            let start = random.randint(0, ids.count - length - 1)
            return Array(ids[start..<start + length])
        }
    }

    /// The first `count` documents, each cut to its first `maxLength` tokens.
    public func documentPrefixes(count: Int, maxLength: Int) throws -> [[Int32]] {
        try Self.checkCounts(count: count, length: maxLength)
        return documents.prefix(count).map { Array($0.prefix(maxLength)) }
    }

    private static func checkCounts(count: Int, length: Int) throws {
        guard count > 0 else { throw GPTQError.invalidArgument("the number of calibration samples must be positive, got \(count)") }
        guard length > 0 else { throw GPTQError.invalidArgument("the calibration sequence length must be positive, got \(length)") }
    }

    /// The "text" field of every non-blank line.
    static func readJSONL(path: String) throws -> [String] {
        var texts: [String] = []
        for (number, line) in try FileIO.readText(path: path).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if line.allSatisfy(\.isWhitespace) { continue }
            let value: JSON
            do throws(JSONParseError) { value = try JSON.parse(String(line)) } catch {
                throw GPTQError.invalidFile(path: path, reason: "line \(number + 1) is not valid JSON: \(error.message)")
            }
            guard let text = value["text"]?.string else {
                throw GPTQError.invalidFile(path: path, reason: "line \(number + 1) has no \"text\" string")
            }
            texts.append(text)
        }
        return texts
    }

    static func readTokens(path: String) throws -> [[Int32]] {
        if path.hasSuffix(".json") { return try readTokenJSON(path: path) }
        if path.hasSuffix(".safetensors") { return try readTokenTensor(path: path) }
        let bytes = try FileIO.readAll(path: path)
        guard bytes.count % 4 == 0 else {
            throw GPTQError.invalidFile(path: path, reason: "\(bytes.count) bytes is not a whole number of int32 token ids")
        }
        let ids = bytes.withUnsafeBytes { raw in (0..<bytes.count / 4).map { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) } }
        try checkNonNegative(ids, path: path, what: "token stream")
        return [ids]
    }

    static func readTokenJSON(path: String) throws -> [[Int32]] {
        guard let items = try JSON.read(path: path).array else {
            throw GPTQError.invalidFile(path: path, reason: "expected a JSON array of token ids or of token id arrays")
        }
        func ids(_ values: [JSON], _ what: String) throws -> [Int32] {
            try values.enumerated().map { i, v in
                guard let id = v.int, id >= 0, id <= Int(Int32.max) else {
                    throw GPTQError.invalidFile(path: path, reason: "\(what) item \(i) is not a non-negative token id")
                }
                return Int32(id)
            }
        }
        if items.allSatisfy({ $0.array != nil }) {
            return try items.enumerated().map { try ids($1.array!, "document \($0)") }
        }
        return [try ids(items, "array")]
    }

    static func readTokenTensor(path: String) throws -> [[Int32]] {
        let file = try SafetensorsFile(path: path)
        guard let name = file.contains("input_ids") ? "input_ids" : (file.names.count == 1 ? file.names[0] : nil) else {
            throw GPTQError.invalidFile(path: path, reason: "expected a tensor named 'input_ids' (or a single tensor), found \(file.names)")
        }
        let tensor = try file.tensor(name)
        guard tensor.dtype == .i32 || tensor.dtype == .i64, tensor.rank == 1 || tensor.rank == 2 else {
            throw GPTQError.badTensor(name: name, path: path, reason: "expected a 1-D or 2-D int32/int64 tensor, got \(tensor.dtype.rawValue) \(tensor.shape)")
        }
        if tensor.dtype == .i64, let i = (0..<tensor.count).first(where: { Int32(exactly: tensor.pointer(as: Int64.self)[$0]) == nil }) {
            throw GPTQError.badTensor(name: name, path: path, reason: "token id \(tensor.pointer(as: Int64.self)[i]) at position \(i) is beyond the largest token id \(Int32.max)")
        }
        let ids = tensor.ints()
        try checkNonNegative(ids, path: path, what: "tensor '\(name)'")
        guard tensor.rank == 2 else { return [ids] }
        let width = tensor.shape[1]
        return (0..<tensor.shape[0]).map { Array(ids[$0 * width..<($0 + 1) * width]) }
    }

    private static func checkNonNegative(_ ids: [Int32], path: String, what: String) throws {
        if let i = ids.firstIndex(where: { $0 < 0 }) {
            throw GPTQError.invalidFile(path: path, reason: "\(what) has a negative token id \(ids[i]) at position \(i)")
        }
    }
}
