import FoundationEssentials

/// A JSON document. Objects keep their key order, so that files we rewrite
/// (config.json, tokenizer.json) keep the order their authors gave them.
public enum JSON: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    public static func == (a: JSON, b: JSON) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.number(x), .number(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    // MARK: access

    /// The value of `key`; where a key appears twice the last one counts, as Python's json
    /// (and so transformers) reads it.
    public subscript(key: String) -> JSON? {
        guard case let .object(pairs) = self else { return nil }
        return pairs.last(where: { $0.0 == key })?.1
    }

    public subscript(index: Int) -> JSON? {
        guard case let .array(items) = self, items.indices.contains(index) else { return nil }
        return items[index]
    }

    public var isNull: Bool { if case .null = self { return true } else { return false } }
    public var string: String? { if case let .string(s) = self { return s } else { return nil } }
    public var bool: Bool? { if case let .bool(b) = self { return b } else { return nil } }
    public var double: Double? { if case let .number(d) = self { return d } else { return nil } }
    public var array: [JSON]? { if case let .array(a) = self { return a } else { return nil } }
    public var object: [(String, JSON)]? { if case let .object(o) = self { return o } else { return nil } }
    /// An integer value; nil for non-integral numbers.
    public var int: Int? {
        guard case let .number(d) = self, d.rounded() == d, abs(d) < 9.0e15 else { return nil }
        return Int(d)
    }
    public var keys: [String] { object?.map(\.0) ?? [] }

    /// The first key that appears more than once in this object, if any.
    public var duplicateKey: String? {
        var seen = Set<String>()
        return object?.first { !seen.insert($0.0).inserted }?.0
    }

    /// Returns a copy with `key` set (replaced in place, or appended).
    public func setting(_ key: String, _ value: JSON) -> JSON {
        guard case var .object(pairs) = self else { return self }
        if let i = pairs.lastIndex(where: { $0.0 == key }) { pairs[i].1 = value } else { pairs.append((key, value)) }
        return .object(pairs)
    }

    // MARK: parsing

    public static func parse(_ text: String) throws(JSONParseError) -> JSON {
        var utf8 = Array(text.utf8)
        return try parse(bytes: &utf8)
    }

    public static func parse(bytes: inout [UInt8]) throws(JSONParseError) -> JSON {
        try bytes.withUnsafeBufferPointer { (buffer) throws(JSONParseError) -> JSON in
            var parser = JSONParser(bytes: buffer)
            let value = try parser.parseValue(depth: 0)
            parser.skipWhitespace()
            if parser.position != buffer.count { throw parser.error("trailing characters after the document") }
            return value
        }
    }

    /// Reads and parses a JSON file; errors name the file and the byte offset.
    public static func read(path: String) throws -> JSON {
        var bytes = try FileIO.readAll(path: path)
        // Editors on Windows start UTF-8 files with a byte-order mark; Python's json refuses
        // it with a message nobody can act on, transformers' readers (utf-8-sig) skip it.
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        do throws(JSONParseError) { return try parse(bytes: &bytes) } catch {
            throw GPTQError.invalidFile(path: path, reason: "invalid JSON: \(error.message)")
        }
    }

    // MARK: writing

    /// Serialises the document. `indent` > 0 pretty-prints with that many spaces.
    public func serialized(indent: Int = 2) -> String {
        var out = ""
        write(into: &out, indent: indent, level: 0)
        return out
    }

    private func write(into out: inout String, indent: Int, level: Int) {
        let newline = indent > 0 ? "\n" : ""
        let pad = { (l: Int) in String(repeating: " ", count: indent * l) }
        switch self {
        case .null: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .number(d): out += JSON.format(number: d)
        case let .string(s): JSON.writeString(s, into: &out)
        case let .array(items):
            if items.isEmpty { out += "[]"; return }
            out += "[" + newline
            for (i, item) in items.enumerated() {
                out += pad(level + 1)
                item.write(into: &out, indent: indent, level: level + 1)
                out += (i + 1 < items.count ? "," : "") + newline
            }
            out += pad(level) + "]"
        case let .object(pairs):
            if pairs.isEmpty { out += "{}"; return }
            out += "{" + newline
            for (i, (key, value)) in pairs.enumerated() {
                out += pad(level + 1)
                JSON.writeString(key, into: &out)
                out += indent > 0 ? ": " : ":"
                value.write(into: &out, indent: indent, level: level + 1)
                out += (i + 1 < pairs.count ? "," : "") + newline
            }
            out += pad(level) + "}"
        }
    }

    static func format(number d: Double) -> String {
        // Python's json writes (and reads) these words; Swift's "nan" and "inf" are no JSON at all.
        if d.isNaN { return "NaN" }
        if d.isInfinite { return d < 0 ? "-Infinity" : "Infinity" }
        if d.rounded() == d && abs(d) < 1e15 { return String(Int64(d)) }
        return "\(d)"
    }

    /// Python json.dumps's escaping; `ensureASCII` writes every non-ASCII scalar as \u escapes
    /// (surrogate pairs past the BMP), as its ensure_ascii does.
    static func writeString(_ s: String, into out: inout String, ensureASCII: Bool = false) {
        func hex4(_ v: UInt32) -> String {
            let h = String(v, radix: 16)
            return "\\u" + String(repeating: "0", count: 4 - h.count) + h
        }
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value < 0x20 {
                    out += hex4(scalar.value)
                } else if ensureASCII && scalar.value > 0x7E {
                    if scalar.value >= 0x10000 {
                        let v = scalar.value - 0x10000
                        out += hex4(0xD800 + (v >> 10)) + hex4(0xDC00 + (v & 0x3FF))
                    } else {
                        out += hex4(scalar.value)
                    }
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}

public struct JSONParseError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

private struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    var position = 0

    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    func error(_ what: String) -> JSONParseError { JSONParseError(message: "\(what) at byte \(position)") }

    mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x0A, 0x0D, 0x09: position += 1
            default: return
            }
        }
    }

    mutating func parseValue(depth: Int) throws(JSONParseError) -> JSON {
        if depth > 512 { throw error("nesting too deep") }
        skipWhitespace()
        guard position < bytes.count else { throw error("unexpected end of input") }
        switch bytes[position] {
        case UInt8(ascii: "{"):
            position += 1
            var pairs: [(String, JSON)] = []
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "}") { position += 1; return .object(pairs) }
            while true {
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw error("expected a key") }
                let key = try parseString()
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw error("expected ':'") }
                position += 1
                pairs.append((key, try parseValue(depth: depth + 1)))
                skipWhitespace()
                guard position < bytes.count else { throw error("unterminated object") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                if bytes[position] == UInt8(ascii: "}") { position += 1; return .object(pairs) }
                throw error("expected ',' or '}'")
            }
        case UInt8(ascii: "["):
            position += 1
            var items: [JSON] = []
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "]") { position += 1; return .array(items) }
            while true {
                items.append(try parseValue(depth: depth + 1))
                skipWhitespace()
                guard position < bytes.count else { throw error("unterminated array") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                if bytes[position] == UInt8(ascii: "]") { position += 1; return .array(items) }
                throw error("expected ',' or ']'")
            }
        case UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .null
        case UInt8(ascii: "N"): try expect("NaN"); return .number(.nan)
        case UInt8(ascii: "I"): try expect("Infinity"); return .number(.infinity)
        default:
            return .number(try parseNumber())
        }
    }

    mutating func expect(_ word: StaticString) throws(JSONParseError) {
        let n = word.utf8CodeUnitCount
        guard position + n <= bytes.count else { throw error("unexpected end of input") }
        for i in 0..<n where bytes[position + i] != word.utf8Start[i] { throw error("invalid literal") }
        position += n
    }

    mutating func parseNumber() throws(JSONParseError) -> Double {
        let start = position
        if position < bytes.count, bytes[position] == UInt8(ascii: "-") {
            position += 1
            if position < bytes.count, bytes[position] == UInt8(ascii: "I") { try expect("Infinity"); return -.infinity }
        }
        while position < bytes.count {
            let c = bytes[position]
            if (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E")
                || c == UInt8(ascii: "+") || c == UInt8(ascii: "-") { position += 1 } else { break }
        }
        guard position > start, let value = Double(String(decoding: bytes[start..<position], as: UTF8.self)) else {
            position = start
            throw error("invalid number")
        }
        return value
    }

    mutating func parseHex4() throws(JSONParseError) -> UInt32 {
        guard position + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[position]
            position += 1
            v <<= 4
            switch c {
            case 0x30...0x39: v |= UInt32(c - 0x30)
            case 0x41...0x46: v |= UInt32(c - 0x41 + 10)
            case 0x61...0x66: v |= UInt32(c - 0x61 + 10)
            default: throw error("invalid \\u escape")
            }
        }
        return v
    }

    mutating func parseString() throws(JSONParseError) -> String {
        position += 1  // opening quote
        let start = position
        // Fast path: no escapes.
        while position < bytes.count {
            let c = bytes[position]
            if c == UInt8(ascii: "\"") {
                let s = String(decoding: bytes[start..<position], as: UTF8.self)
                position += 1
                return s
            }
            if c == UInt8(ascii: "\\") { break }
            position += 1
        }
        var out = [UInt8](bytes[start..<position])
        while position < bytes.count {
            let c = bytes[position]
            position += 1
            if c == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
            if c != UInt8(ascii: "\\") { out.append(c); continue }
            guard position < bytes.count else { break }
            let e = bytes[position]
            position += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var code = try parseHex4()
                if code >= 0xD800 && code < 0xDC00 {
                    // A high surrogate must be followed by a low one; a lone one becomes U+FFFD.
                    if position + 6 <= bytes.count, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") {
                        position += 2
                        let low = try parseHex4()
                        if low >= 0xDC00 && low < 0xE000 {
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            code = 0xFFFD
                            position -= 6
                        }
                    } else {
                        code = 0xFFFD
                    }
                } else if code >= 0xDC00 && code < 0xE000 {
                    code = 0xFFFD
                }
                out.append(contentsOf: Array(String(Unicode.Scalar(code)!).utf8))
            default: throw error("invalid escape")
            }
        }
        throw error("unterminated string")
    }
}
