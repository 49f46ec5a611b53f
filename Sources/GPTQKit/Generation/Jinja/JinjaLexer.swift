/// A piece of a template as the lexer cuts it: literal text, a `{{ expression }}` or a
/// `{% statement %}`, the last two as expression tokens. Comments are dropped.
enum JinjaSegment {
    case text(String)
    case output([JinjaToken], line: Int)
    case statement([JinjaToken], line: Int)
}

struct JinjaToken: Equatable {
    enum Kind: Equatable {
        case name
        case string
        case integer
        case float
        case op
        case end
    }
    let kind: Kind
    /// The name, the operator, the unescaped string, or the number's digits.
    let text: String
    let line: Int
}

/// Errors found while reading or running a template; `ChatTemplate` turns them into
/// `GPTQError`s naming the template.
enum JinjaError: Error {
    case syntax(String, line: Int)
    case runtime(String)
    /// `raise_exception(message)` called by the template itself.
    case raised(String)
}

/// Cuts a template into segments with Jinja's whitespace rules as transformers configures
/// them (trim_blocks and lstrip_blocks on, keep_trailing_newline off):
/// `{%-`/`-%}` (and the same for `{{ }}` and `{# #}`) strip all whitespace on that side;
/// trim_blocks removes the first newline after a block or comment tag; lstrip_blocks removes
/// spaces and tabs between a line start and a block or comment tag; `+` turns both off.
struct JinjaLexer {
    private let bytes: [UInt8]
    private var position = 0
    /// Line numbering for messages: `line` is the line of byte `lineOffset`.
    private var line = 1
    private var lineOffset = 0

    init(source: String) {
        var text = source.replacingCRLF()
        if text.hasSuffix("\n") { text.removeLast() }
        bytes = Array(text.utf8)
    }

    static func segments(of source: String) throws(JinjaError) -> [JinjaSegment] {
        var lexer = JinjaLexer(source: source)
        return try lexer.run()
    }

    private enum TagKind { case output, statement, comment }

    private mutating func run() throws(JinjaError) -> [JinjaSegment] {
        var segments: [JinjaSegment] = []
        var lineStarting = true
        while position < bytes.count {
            let (tagStart, kind) = nextTag(from: position)
            var textEnd = tagStart
            if let kind {
                let modifier = tagStart + 2 < bytes.count ? bytes[tagStart + 2] : 0
                if modifier == UInt8(ascii: "-") {
                    while textEnd > position, Self.isWhitespace(bytes[textEnd - 1]) { textEnd -= 1 }
                } else if modifier != UInt8(ascii: "+"), kind != .output {
                    // lstrip_blocks: drop the spaces and tabs that alone precede the tag on its line.
                    var lineStart = textEnd
                    while lineStart > position, bytes[lineStart - 1] == UInt8(ascii: " ") || bytes[lineStart - 1] == UInt8(ascii: "\t") {
                        lineStart -= 1
                    }
                    let atLineStart = lineStart > position ? bytes[lineStart - 1] == UInt8(ascii: "\n") : lineStarting
                    if atLineStart { textEnd = lineStart }
                }
            }
            if textEnd > position {
                segments.append(.text(String(decoding: bytes[position..<textEnd], as: UTF8.self)))
            }
            guard let kind else { position = bytes.count; break }
            let tagLine = lineNumber(at: tagStart)
            var cursor = tagStart + 2
            if cursor < bytes.count, bytes[cursor] == UInt8(ascii: "-") || bytes[cursor] == UInt8(ascii: "+") { cursor += 1 }
            let tokens: [JinjaToken]
            var rightModifier: UInt8 = 0
            switch kind {
            case .comment:
                guard let close = find("#}", from: cursor) else { throw .syntax("unterminated comment", line: tagLine) }
                if close > cursor, bytes[close - 1] == UInt8(ascii: "-") || bytes[close - 1] == UInt8(ascii: "+") { rightModifier = bytes[close - 1] }
                cursor = close + 2
                tokens = []
            case .output, .statement:
                var expression = JinjaTokenizer(bytes: bytes, position: cursor, line: tagLine,
                                                closing: kind == .output ? UInt8(ascii: "}") : UInt8(ascii: "%"))
                tokens = try expression.tokenize()
                rightModifier = expression.closingModifier
                cursor = expression.position
            }
            if rightModifier == UInt8(ascii: "-") {
                while cursor < bytes.count, Self.isWhitespace(bytes[cursor]) { cursor += 1 }
            } else if rightModifier != UInt8(ascii: "+"), kind != .output, cursor < bytes.count, bytes[cursor] == UInt8(ascii: "\n") {
                cursor += 1  // trim_blocks
            }
            lineStarting = cursor > 0 && bytes[cursor - 1] == UInt8(ascii: "\n")
            position = cursor
            switch kind {
            case .output: segments.append(.output(tokens, line: tagLine))
            case .statement: segments.append(.statement(tokens, line: tagLine))
            case .comment: break
            }
        }
        return segments
    }

    /// The 1-based line of byte `offset`; offsets only grow, so counting resumes where it stopped.
    private mutating func lineNumber(at offset: Int) -> Int {
        while lineOffset < offset {
            if bytes[lineOffset] == UInt8(ascii: "\n") { line += 1 }
            lineOffset += 1
        }
        return line
    }

    private func nextTag(from start: Int) -> (Int, TagKind?) {
        var i = start
        while i + 1 < bytes.count {
            if bytes[i] == UInt8(ascii: "{") {
                switch bytes[i + 1] {
                case UInt8(ascii: "{"): return (i, .output)
                case UInt8(ascii: "%"): return (i, .statement)
                case UInt8(ascii: "#"): return (i, .comment)
                default: break
                }
            }
            i += 1
        }
        return (bytes.count, nil)
    }

    private func find(_ needle: StaticString, from start: Int) -> Int? {
        let a = needle.utf8Start[0], b = needle.utf8Start[1]
        var i = start
        while i + 1 < bytes.count {
            if bytes[i] == a && bytes[i + 1] == b { return i }
            i += 1
        }
        return nil
    }

    static func isWhitespace(_ c: UInt8) -> Bool {
        c == 0x20 || c == 0x0A || c == 0x09 || c == 0x0D || c == 0x0B || c == 0x0C
    }
}

/// Reads the expression tokens of one tag up to its closing `}}` or `%}` (outside any
/// brackets, so a dict literal's `}}` does not end the tag).
private struct JinjaTokenizer {
    let bytes: [UInt8]
    var position: Int
    /// The tag's line, given to every token.
    let line: Int
    /// `}` for `}}`, `%` for `%}`.
    let closing: UInt8
    var closingModifier: UInt8 = 0

    init(bytes: [UInt8], position: Int, line: Int, closing: UInt8) {
        self.bytes = bytes
        self.position = position
        self.line = line
        self.closing = closing
    }

    func at(_ offset: Int) -> UInt8 { position + offset < bytes.count ? bytes[position + offset] : 0 }

    mutating func tokenize() throws(JinjaError) -> [JinjaToken] {
        var tokens: [JinjaToken] = []
        var depth = 0
        while true {
            while position < bytes.count, JinjaLexer.isWhitespace(bytes[position]) { position += 1 }
            guard position < bytes.count else {
                throw .syntax("unexpected end of template inside a tag", line: line)
            }
            if depth == 0 {
                if at(0) == closing && at(1) == UInt8(ascii: "}") {
                    position += 2
                    break
                }
                if (at(0) == UInt8(ascii: "-") || at(0) == UInt8(ascii: "+")) && at(1) == closing && at(2) == UInt8(ascii: "}") {
                    closingModifier = at(0)
                    position += 3
                    break
                }
            }
            let c = at(0)
            if Self.isNameStart(c) {
                let start = position
                while position < bytes.count, Self.isNameStart(bytes[position]) || Self.isDigit(bytes[position]) { position += 1 }
                tokens.append(JinjaToken(kind: .name, text: String(decoding: bytes[start..<position], as: UTF8.self), line: line))
            } else if Self.isDigit(c) {
                tokens.append(readNumber())
            } else if c == UInt8(ascii: "'") || c == UInt8(ascii: "\"") {
                tokens.append(try readString(quote: c))
            } else {
                let two = String(decoding: [c, at(1)], as: UTF8.self)
                let op: String
                if ["//", "**", "==", "!=", "<=", ">="].contains(two) {
                    op = two
                } else if Array("+-*/%~<>=.,:|()[]{};".utf8).contains(c) {
                    op = String(UnicodeScalar(c))
                } else {
                    throw .syntax("unexpected character '\(String(UnicodeScalar(c)))'", line: line)
                }
                switch op {
                case "(", "[", "{": depth += 1
                case ")", "]", "}": depth -= 1
                default: break
                }
                position += op.utf8.count
                tokens.append(JinjaToken(kind: .op, text: op, line: line))
            }
        }
        tokens.append(JinjaToken(kind: .end, text: "", line: line))
        return tokens
    }

    static func isNameStart(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == UInt8(ascii: "_")
    }

    static func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }

    mutating func readNumber() -> JinjaToken {
        let start = position
        func digits() { while position < bytes.count, Self.isDigit(bytes[position]) || bytes[position] == UInt8(ascii: "_") { position += 1 } }
        digits()
        var isFloat = false
        if at(0) == UInt8(ascii: "."), Self.isDigit(at(1)) {
            isFloat = true
            position += 1
            digits()
        }
        if at(0) == UInt8(ascii: "e") || at(0) == UInt8(ascii: "E") {
            let sign = at(1) == UInt8(ascii: "+") || at(1) == UInt8(ascii: "-") ? 1 : 0
            if Self.isDigit(at(1 + sign)) {
                isFloat = true
                position += 1 + sign
                digits()
            }
        }
        let text = String(decoding: bytes[start..<position].filter { $0 != UInt8(ascii: "_") }, as: UTF8.self)
        return JinjaToken(kind: isFloat ? .float : .integer, text: text, line: line)
    }

    /// A quoted string, unescaped as Python's "unicode-escape" codec does (Jinja's rule).
    mutating func readString(quote: UInt8) throws(JinjaError) -> JinjaToken {
        position += 1
        var out: [UInt8] = []
        while true {
            guard position < bytes.count else { throw .syntax("unterminated string", line: line) }
            let c = bytes[position]
            position += 1
            if c == quote { break }
            guard c == UInt8(ascii: "\\"), position < bytes.count else { out.append(c); continue }
            let e = bytes[position]
            position += 1
            func scalar(hexDigits: Int) throws(JinjaError) {
                guard position + hexDigits <= bytes.count,
                      let v = UInt32(String(decoding: bytes[position..<position + hexDigits], as: UTF8.self), radix: 16),
                      let s = Unicode.Scalar(v) else { throw .syntax("invalid \\x, \\u or \\U escape", line: line) }
                out.append(contentsOf: Array(String(s).utf8))
                position += hexDigits
            }
            switch e {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "'"): out.append(0x27)
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "a"): out.append(0x07)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "v"): out.append(0x0B)
            case UInt8(ascii: "0"): out.append(0x00)
            case UInt8(ascii: "\n"): break  // an escaped newline continues the line
            case UInt8(ascii: "x"): try scalar(hexDigits: 2)
            case UInt8(ascii: "u"): try scalar(hexDigits: 4)
            case UInt8(ascii: "U"): try scalar(hexDigits: 8)
            default: out.append(contentsOf: [0x5C, e])  // unknown escapes stay as written
            }
        }
        return JinjaToken(kind: .string, text: String(decoding: out, as: UTF8.self), line: line)
    }
}

extension String {
    /// Jinja reads "\r\n" and "\r" as "\n".
    func replacingCRLF() -> String {
        guard utf8.contains(0x0D) else { return self }
        var out: [UInt8] = []
        let b = Array(utf8)
        var i = 0
        while i < b.count {
            if b[i] == 0x0D {
                out.append(0x0A)
                if i + 1 < b.count, b[i + 1] == 0x0A { i += 1 }
            } else {
                out.append(b[i])
            }
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}
