import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// One row of an evaluation dataset: its columns as text, and where it came from (for errors).
public struct EvalRecord: Sendable {
    public let fields: [String: String]
    /// 1-based line of the file where the record starts (JSON arrays: the element's index + 1).
    public let line: Int

    public init(fields: [String: String], line: Int) {
        self.fields = fields
        self.line = line
    }
}

/// Rows of a local dataset file: JSONL (one object per line), a JSON array of objects, or CSV
/// with a header row (RFC 4180 quoting). Columns named by the tasks are read through `column`,
/// whose errors name the file, the line and the missing column.
public struct EvalDataset: Sendable {
    public let path: String
    public let records: [EvalRecord]

    public init(path: String, records: [EvalRecord]) {
        self.path = path
        self.records = records
    }

    /// Loads by extension: .jsonl, .json, .csv.
    public static func load(path: String) throws -> EvalDataset {
        guard FileIO.exists(path) else { throw GPTQError.invalidFile(path: path, reason: "dataset file not found") }
        let text = try FileIO.readText(path: path)
        let records: [EvalRecord]
        if path.hasSuffix(".jsonl") { records = try jsonLines(text, path: path) }
        else if path.hasSuffix(".json") { records = try jsonArray(text, path: path) }
        else if path.hasSuffix(".csv") { records = try csv(text, path: path) }
        else { throw GPTQError.invalidFile(path: path, reason: "unknown dataset format: expected a .jsonl, .json or .csv file") }
        guard !records.isEmpty else { throw GPTQError.invalidFile(path: path, reason: "the dataset has no records") }
        return EvalDataset(path: path, records: records)
    }

    /// The text of `name` in `record`; throws naming the file, the line and the column.
    public func column(_ name: String, of record: EvalRecord) throws -> String {
        guard let value = record.fields[name] else {
            let known = record.fields.keys.sorted().joined(separator: ", ")
            throw GPTQError.invalidFile(path: "\(path):\(record.line)", reason: "missing column '\(name)' (the record has: \(known))")
        }
        return value
    }

    /// A list column: a JSON array of strings (JSONL/JSON), or, in CSV, a JSON array written as text.
    public func listColumn(_ name: String, of record: EvalRecord) throws -> [String] {
        let raw = try column(name, of: record)
        let where_ = "\(path):\(record.line)"
        guard let items = (try? JSON.parse(raw))?.array else {
            throw GPTQError.invalidFile(path: where_, reason: "column '\(name)' is not a JSON array of strings")
        }
        return try items.map {
            guard let s = $0.string else { throw GPTQError.invalidFile(path: where_, reason: "column '\(name)' holds a non-string item") }
            return s
        }
    }

    /// `count` records drawn without replacement with Python's random.seed(seed) and
    /// random.sample(range(records), count), as AutoGPTQ's tasks draw them; all records when nil.
    public func sample(count: Int?, seed: Int) throws -> [EvalRecord] {
        guard let count else { return records }
        guard count >= 1, count <= records.count else {
            throw GPTQError.invalidArgument("--num-samples \(count): \(path) has 1...\(records.count) records")
        }
        var random = PythonRandom(seed: seed)
        return Self.pythonSample(population: records.count, count: count, random: &random).map { records[$0] }
    }

    /// CPython's random.sample(range(population), count).
    static func pythonSample(population n: Int, count k: Int, random: inout PythonRandom) -> [Int] {
        var setSize = 21
        if k > 5 { setSize += Int(pow(4.0, ceil(log(Double(k * 3)) / log(4.0)))) }
        var result = [Int](repeating: 0, count: k)
        if n <= setSize {
            var pool = Array(0..<n)
            for i in 0..<k {
                let j = random.randbelow(n - i)
                result[i] = pool[j]
                pool[j] = pool[n - i - 1]
            }
        } else {
            var selected = Set<Int>()
            for i in 0..<k {
                var j = random.randbelow(n)
                while selected.contains(j) { j = random.randbelow(n) }
                selected.insert(j)
                result[i] = j
            }
        }
        return result
    }

    // MARK: formats

    static func fields(of value: JSON, path: String, line: Int) throws -> [String: String] {
        guard let object = value.object else { throw GPTQError.invalidFile(path: "\(path):\(line)", reason: "a record must be a JSON object") }
        var fields: [String: String] = [:]
        for (key, item) in object {
            switch item {
            case let .string(s): fields[key] = s
            case let .number(d): fields[key] = item.int.map(String.init) ?? "\(d)"
            case let .bool(b): fields[key] = b ? "true" : "false"
            case .null: continue
            case .array, .object: fields[key] = item.serialized(indent: 0)
            }
        }
        return fields
    }

    static func jsonLines(_ text: String, path: String) throws -> [EvalRecord] {
        var records: [EvalRecord] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.strippingWhitespace()
            if trimmed.isEmpty { continue }
            let value: JSON
            do { value = try JSON.parse(trimmed) } catch {
                throw GPTQError.invalidFile(path: "\(path):\(index + 1)", reason: "invalid JSON: \(error.message)")
            }
            records.append(EvalRecord(fields: try fields(of: value, path: path, line: index + 1), line: index + 1))
        }
        return records
    }

    static func jsonArray(_ text: String, path: String) throws -> [EvalRecord] {
        let value: JSON
        do { value = try JSON.parse(text) } catch { throw GPTQError.invalidFile(path: path, reason: "invalid JSON: \(error.message)") }
        guard let items = value.array else { throw GPTQError.invalidFile(path: path, reason: "a .json dataset must be an array of objects") }
        return try items.enumerated().map { EvalRecord(fields: try fields(of: $1, path: path, line: $0 + 1), line: $0 + 1) }
    }

    /// RFC 4180: fields separated by commas, quoted with double quotes (doubled inside),
    /// quoted fields may span lines; the first row names the columns.
    static func csv(_ text: String, path: String) throws -> [EvalRecord] {
        var rows: [(line: Int, cells: [String])] = []
        var cells: [String] = [], cell: [Character] = []
        var inQuotes = false, line = 1, rowLine = 1, quotedCell = false
        var characters = Array(text)
        if characters.first == "\u{FEFF}" { characters.removeFirst() }
        var i = 0
        func endRow() {
            cells.append(String(cell))
            if !(cells.count == 1 && cells[0].isEmpty && !quotedCell) { rows.append((rowLine, cells)) }
            cells = []; cell = []; quotedCell = false
        }
        while i < characters.count {
            let c = characters[i]
            if inQuotes {
                if c == "\"" {
                    if i + 1 < characters.count, characters[i + 1] == "\"" { cell.append("\""); i += 1 } else { inQuotes = false }
                } else {
                    if c == "\n" || c == "\r\n" { line += 1 }
                    cell.append(c)
                }
            } else if c == "\"" {
                guard cell.isEmpty else { throw GPTQError.invalidFile(path: "\(path):\(line)", reason: "a quote inside an unquoted CSV field") }
                inQuotes = true
                quotedCell = true
            } else if c == "," {
                cells.append(String(cell)); cell = []
            } else if c == "\n" || c == "\r\n" {
                endRow()
                line += 1
                rowLine = line
            } else {
                cell.append(c)
            }
            i += 1
        }
        if inQuotes { throw GPTQError.invalidFile(path: "\(path):\(rowLine)", reason: "a quoted CSV field is not closed") }
        if !cell.isEmpty || !cells.isEmpty { endRow() }
        guard let header = rows.first else { return [] }
        return try rows.dropFirst().map { row in
            guard row.cells.count == header.cells.count else {
                throw GPTQError.invalidFile(path: "\(path):\(row.line)",
                                            reason: "\(row.cells.count) fields, the header has \(header.cells.count)")
            }
            return EvalRecord(fields: Dictionary(zip(header.cells, row.cells), uniquingKeysWith: { first, _ in first }), line: row.line)
        }
    }
}

/// A prompt template: `{text}` is replaced by the record's prompt column, `{labels}` by the
/// class names joined with ", " (AutoGPTQ's examples write their prompts this way), any other
/// `{name}` by the column `name`; `{{` and `}}` stand for braces.
public struct PromptTemplate: Sendable {
    public let text: String
    /// The column `{text}` stands for.
    public let promptColumn: String

    public init(_ text: String, promptColumn: String) {
        self.text = text
        self.promptColumn = promptColumn
    }

    enum Piece { case literal(String), field(String) }

    var pieces: [Piece] {
        var out: [Piece] = []
        var literal = "", i = text.startIndex
        while i < text.endIndex {
            let c = text[i]
            let next = text.index(after: i)
            if c == "{", next < text.endIndex, text[next] == "{" { literal.append("{"); i = text.index(after: next); continue }
            if c == "}", next < text.endIndex, text[next] == "}" { literal.append("}"); i = text.index(after: next); continue }
            if c == "{", let close = text[next...].firstIndex(of: "}") {
                if !literal.isEmpty { out.append(.literal(literal)); literal = "" }
                out.append(.field(String(text[next..<close])))
                i = text.index(after: close)
                continue
            }
            literal.append(c)
            i = next
        }
        if !literal.isEmpty { out.append(.literal(literal)) }
        return out
    }

    public func render(_ record: EvalRecord, dataset: EvalDataset, labels: [String] = []) throws -> String {
        try pieces.map { piece in
            switch piece {
            case let .literal(s): return s
            case .field("labels"): return labels.joined(separator: ", ")
            case .field("text"): return try dataset.column(promptColumn, of: record)
            case let .field(name): return try dataset.column(name, of: record)
            }
        }.joined()
    }
}
