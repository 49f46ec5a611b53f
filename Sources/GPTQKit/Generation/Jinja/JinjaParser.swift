/// A constant written in the template.
enum JinjaLiteral: Sendable {
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
}

indirect enum JinjaExpression: Sendable {
    case literal(JinjaLiteral)
    case name(String)
    case list([JinjaExpression])
    case tuple([JinjaExpression])
    case dict([(JinjaExpression, JinjaExpression)])
    case attribute(JinjaExpression, String)
    case item(JinjaExpression, JinjaExpression)
    case slice(JinjaExpression, start: JinjaExpression?, stop: JinjaExpression?, step: JinjaExpression?)
    case call(JinjaExpression, JinjaCallArguments)
    case filter(JinjaExpression, name: String, JinjaCallArguments)
    case test(JinjaExpression, name: String, JinjaCallArguments, negated: Bool)
    case not(JinjaExpression)
    case negate(JinjaExpression)
    /// `+ - * / // % ** ~` and the comparisons `== != < <= > >= in` ("not in" is not(in)).
    case binary(String, JinjaExpression, JinjaExpression)
    case and(JinjaExpression, JinjaExpression)
    case or(JinjaExpression, JinjaExpression)
    case conditional(JinjaExpression, condition: JinjaExpression, otherwise: JinjaExpression?)
}

struct JinjaCallArguments: Sendable {
    var positional: [JinjaExpression] = []
    var keywords: [(String, JinjaExpression)] = []
}

enum JinjaAssignTarget: Sendable {
    case name(String)
    case names([String])
    /// `set ns.attribute = ...` on a namespace.
    case attribute(String, String)
}

indirect enum JinjaNode: Sendable {
    case text(String)
    case output(JinjaExpression)
    case conditional([(condition: JinjaExpression, body: [JinjaNode])], otherwise: [JinjaNode])
    case loop(targets: [String], iterable: JinjaExpression, filter: JinjaExpression?, body: [JinjaNode], otherwise: [JinjaNode], line: Int)
    case set(JinjaAssignTarget, JinjaExpression)
    case setBlock(String, [JinjaNode])
    case macro(name: String, parameters: [(String, JinjaExpression?)], body: [JinjaNode])
    case breakLoop
    case continueLoop
}

/// Parses lexer segments into a tree with Jinja's grammar and operator precedence
/// (lowest first: `x if c else y`, or, and, not, comparisons, + -, ~, * / // %, **, unary
/// minus, then filters and tests, which bind tightest, as in Jinja's parser).
struct JinjaParser {
    private let segments: [JinjaSegment]
    private var index = 0
    /// Blocks open around the current one (bounded: each is a level of recursion here and
    /// when the template runs).
    private var blockNesting = 0

    static func parse(_ source: String) throws(JinjaError) -> [JinjaNode] {
        var parser = JinjaParser(segments: try JinjaLexer.segments(of: source))
        let (nodes, end) = try parser.parseBlock(until: [])
        if let end { throw .syntax("unexpected '\(end.tag)'", line: end.line) }
        return nodes
    }

    private init(segments: [JinjaSegment]) { self.segments = segments }

    /// Parses nodes until a statement whose first word is in `terminators` (returned, with
    /// its remaining tokens, for the caller to finish) or the end of the template (nil).
    private mutating func parseBlock(until terminators: Set<String>) throws(JinjaError)
        -> ([JinjaNode], (tag: String, tokens: TokenStream, line: Int)?)
    {
        blockNesting += 1
        defer { blockNesting -= 1 }
        guard blockNesting <= JinjaLimits.sourceNesting else {
            throw .syntax("blocks nested deeper than \(JinjaLimits.sourceNesting) levels", line: segments.count)
        }
        var nodes: [JinjaNode] = []
        while index < segments.count {
            let segment = segments[index]
            index += 1
            switch segment {
            case let .text(t): nodes.append(.text(t))
            case let .output(tokens, line):
                var stream = TokenStream(tokens: tokens, line: line)
                let expression = try stream.parseExpression()
                try stream.expectEnd()
                nodes.append(.output(expression))
            case let .statement(tokens, line):
                var stream = TokenStream(tokens: tokens, line: line)
                guard stream.current.kind == .name else { throw .syntax("expected a statement name", line: line) }
                let tag = stream.next().text
                if terminators.contains(tag) { return (nodes, (tag, stream, line)) }
                nodes.append(try parseStatement(tag, &stream, line: line))
            }
        }
        if !terminators.isEmpty {
            throw .syntax("missing one of \(terminators.sorted().map { "'\($0)'" }.joined(separator: ", ")) at the end of the template",
                          line: segments.count)
        }
        return (nodes, nil)
    }

    private mutating func parseStatement(_ tag: String, _ stream: inout TokenStream, line: Int) throws(JinjaError) -> JinjaNode {
        switch tag {
        case "if":
            var branches: [(condition: JinjaExpression, body: [JinjaNode])] = []
            var condition = try stream.parseExpression()
            try stream.expectEnd()
            while true {
                let (body, end) = try parseBlock(until: ["elif", "else", "endif"])
                branches.append((condition, body))
                guard var end else { break }
                switch end.tag {
                case "elif":
                    condition = try end.tokens.parseExpression()
                    try end.tokens.expectEnd()
                case "else":
                    try end.tokens.expectEnd()
                    let (otherwise, close) = try parseBlock(until: ["endif"])
                    try close?.tokens.expectEnd()
                    return .conditional(branches, otherwise: otherwise)
                default:
                    try end.tokens.expectEnd()
                    return .conditional(branches, otherwise: [])
                }
            }
            return .conditional(branches, otherwise: [])
        case "for":
            var targets: [String] = [try stream.expectName()]
            while stream.skip(",") { targets.append(try stream.expectName()) }
            try stream.expectKeyword("in")
            // The iterable admits no `x if c else y`: a trailing `if` filters the loop instead.
            let iterable = try stream.parseIterable()
            var filter: JinjaExpression?
            if stream.skipKeyword("if") { filter = try stream.parseExpression() }
            if stream.skipKeyword("recursive") { throw .syntax("recursive loops are not supported", line: line) }
            try stream.expectEnd()
            var (body, end) = try parseBlock(until: ["else", "endfor"])
            var otherwise: [JinjaNode] = []
            if end?.tag == "else" {
                try end!.tokens.expectEnd()
                (otherwise, end) = try parseBlock(until: ["endfor"])
            }
            try end?.tokens.expectEnd()
            return .loop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise, line: line)
        case "set":
            let first = try stream.expectName()
            if stream.skip(".") {
                let attribute = try stream.expectName()
                try stream.expect("=")
                let value = try stream.parseExpression()
                try stream.expectEnd()
                return .set(.attribute(first, attribute), value)
            }
            var names = [first]
            while stream.skip(",") { names.append(try stream.expectName()) }
            if names.count == 1, stream.current.kind == .end {
                let (body, end) = try parseBlock(until: ["endset"])
                try end?.tokens.expectEnd()
                return .setBlock(first, body)
            }
            try stream.expect("=")
            let value = try stream.parseTupleOrExpression()
            try stream.expectEnd()
            return .set(names.count == 1 ? .name(first) : .names(names), value)
        case "macro":
            let name = try stream.expectName()
            try stream.expect("(")
            var parameters: [(String, JinjaExpression?)] = []
            while !stream.skip(")") {
                if !parameters.isEmpty { try stream.expect(",") }
                if stream.skip(")") { break }
                let parameter = try stream.expectName()
                parameters.append((parameter, stream.skip("=") ? try stream.parseExpression() : nil))
            }
            try stream.expectEnd()
            let (body, end) = try parseBlock(until: ["endmacro"])
            try end?.tokens.expectEnd()
            return .macro(name: name, parameters: parameters, body: body)
        case "break", "continue":
            try stream.expectEnd()
            return tag == "break" ? .breakLoop : .continueLoop
        case "generation":
            // transformers' AssistantTracker marks assistant text for masks; rendering is unchanged.
            try stream.expectEnd()
            let (body, end) = try parseBlock(until: ["endgeneration"])
            try end?.tokens.expectEnd()
            return .conditional([(.literal(.bool(true)), body)], otherwise: [])
        case "elif", "else", "endif", "endfor", "endset", "endmacro", "endgeneration":
            throw .syntax("unexpected '\(tag)'", line: line)
        default:
            throw .syntax("unsupported statement '\(tag)'", line: line)
        }
    }
}

/// The tokens of one tag and the expression grammar over them.
struct TokenStream {
    private let tokens: [JinjaToken]
    private var position = 0
    let line: Int
    /// Depth of the expression tree being built, counted as it grows: the tree is walked
    /// recursively when it runs and when it is freed, so its depth must stay bounded.
    private var nesting = 0

    init(tokens: [JinjaToken], line: Int) {
        self.tokens = tokens
        self.line = line
    }

    var current: JinjaToken { tokens[position] }

    @discardableResult
    mutating func next() -> JinjaToken {
        let token = tokens[position]
        if token.kind != .end { position += 1 }
        return token
    }

    func isOperator(_ op: String) -> Bool { current.kind == .op && current.text == op }
    func isKeyword(_ word: String) -> Bool { current.kind == .name && current.text == word }

    mutating func skip(_ op: String) -> Bool {
        guard isOperator(op) else { return false }
        position += 1
        return true
    }

    mutating func skipKeyword(_ word: String) -> Bool {
        guard isKeyword(word) else { return false }
        position += 1
        return true
    }

    func fail(_ message: String) -> JinjaError {
        let found = current.kind == .end ? "end of tag" : "'\(current.text)'"
        return .syntax("\(message), found \(found)", line: line)
    }

    mutating func expect(_ op: String) throws(JinjaError) {
        guard skip(op) else { throw fail("expected '\(op)'") }
    }

    mutating func expectKeyword(_ word: String) throws(JinjaError) {
        guard skipKeyword(word) else { throw fail("expected '\(word)'") }
    }

    mutating func expectName() throws(JinjaError) -> String {
        guard current.kind == .name else { throw fail("expected a name") }
        return next().text
    }

    func expectEnd() throws(JinjaError) {
        guard current.kind == .end else { throw fail("expected the end of the tag") }
    }

    /// One level deeper; the caller restores `nesting` when its subtree is done.
    private mutating func deepen() throws(JinjaError) {
        nesting += 1
        guard nesting <= JinjaLimits.sourceNesting else {
            throw .syntax("expression nested deeper than \(JinjaLimits.sourceNesting) levels", line: line)
        }
    }

    // MARK: expressions

    mutating func parseExpression() throws(JinjaError) -> JinjaExpression {
        let outer = nesting
        defer { nesting = outer }
        try deepen()
        let value = try parseOr()
        guard skipKeyword("if") else { return value }
        let condition = try parseOr()
        let otherwise = skipKeyword("else") ? try parseExpression() : nil
        return .conditional(value, condition: condition, otherwise: otherwise)
    }

    /// `a, b` as a tuple (the right side of `set a, b = ...`), or one expression.
    mutating func parseTupleOrExpression() throws(JinjaError) -> JinjaExpression {
        let first = try parseExpression()
        guard isOperator(",") else { return first }
        var items = [first]
        while skip(",") {
            if current.kind == .end { break }
            items.append(try parseExpression())
        }
        return .tuple(items)
    }

    mutating func parseIterable() throws(JinjaError) -> JinjaExpression {
        let first = try parseOr()
        guard isOperator(",") else { return first }
        var items = [first]
        while skip(",") { items.append(try parseOr()) }
        return .tuple(items)
    }

    private mutating func parseOr() throws(JinjaError) -> JinjaExpression {
        let outer = nesting
        defer { nesting = outer }
        var left = try parseAnd()
        while skipKeyword("or") {
            try deepen()
            left = .or(left, try parseAnd())
        }
        return left
    }

    private mutating func parseAnd() throws(JinjaError) -> JinjaExpression {
        let outer = nesting
        defer { nesting = outer }
        var left = try parseNot()
        while skipKeyword("and") {
            try deepen()
            left = .and(left, try parseNot())
        }
        return left
    }

    private mutating func parseNot() throws(JinjaError) -> JinjaExpression {
        if skipKeyword("not") {
            let outer = nesting
            defer { nesting = outer }
            try deepen()
            return .not(try parseNot())
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws(JinjaError) -> JinjaExpression {
        let outer = nesting
        defer { nesting = outer }
        let first = try parseMath1()
        var comparisons: [JinjaExpression] = []
        var left = first
        while true {
            try deepen()
            let op: String
            var negated = false
            if current.kind == .op, ["==", "!=", "<", "<=", ">", ">="].contains(current.text) {
                op = next().text
            } else if skipKeyword("in") {
                op = "in"
            } else if isKeyword("not"), position + 1 < tokens.count, tokens[position + 1].kind == .name, tokens[position + 1].text == "in" {
                position += 2
                op = "in"
                negated = true
            } else {
                break
            }
            let right = try parseMath1()
            let comparison = JinjaExpression.binary(op, left, right)
            comparisons.append(negated ? .not(comparison) : comparison)
            left = right
        }
        // Chained comparisons (a < b < c) mean each pair holds.
        guard var result = comparisons.first else { return first }
        for c in comparisons.dropFirst() { result = .and(result, c) }
        return result
    }

    private mutating func parseMath1() throws(JinjaError) -> JinjaExpression {
        let outer = nesting
        defer { nesting = outer }
        var left = try parseConcat()
        while isOperator("+") || isOperator("-") {
            try deepen()
            let op = next().text
            left = .binary(op, left, try parseConcat())
        }
        return left
    }

    private mutating func parseConcat() throws(JinjaError) -> JinjaExpression {
        let outer = nesting
        defer { nesting = outer }
        var left = try parseMath2()
        while skip("~") {
            try deepen()
            left = .binary("~", left, try parseMath2())
        }
        return left
    }

    private mutating func parseMath2() throws(JinjaError) -> JinjaExpression {
        let outer = nesting
        defer { nesting = outer }
        var left = try parsePow()
        while isOperator("*") || isOperator("/") || isOperator("//") || isOperator("%") {
            try deepen()
            let op = next().text
            left = .binary(op, left, try parsePow())
        }
        return left
    }

    private mutating func parsePow() throws(JinjaError) -> JinjaExpression {
        let outer = nesting
        defer { nesting = outer }
        var left = try parseUnary(withFilters: true)
        while skip("**") {
            try deepen()
            left = .binary("**", left, try parseUnary(withFilters: true))
        }
        return left
    }

    private mutating func parseUnary(withFilters: Bool) throws(JinjaError) -> JinjaExpression {
        let outer = nesting
        defer { nesting = outer }
        var node: JinjaExpression
        if isOperator("-") || isOperator("+") { try deepen() }
        if skip("-") {
            node = .negate(try parseUnary(withFilters: false))
        } else if skip("+") {
            node = try parseUnary(withFilters: false)
        } else {
            node = try parsePostfix(try parsePrimary())
        }
        if withFilters { node = try parseFiltersAndTests(node) }
        return node
    }

    private mutating func parsePrimary() throws(JinjaError) -> JinjaExpression {
        let token = current
        switch token.kind {
        case .name:
            next()
            switch token.text {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(token.text)
            }
        case .string:
            var text = next().text
            while current.kind == .string { text += next().text }  // adjacent literals concatenate
            return .literal(.string(text))
        case .integer:
            next()
            guard let i = Int(token.text) else { throw .syntax("integer \(token.text) is too large", line: line) }
            return .literal(.int(i))
        case .float:
            next()
            guard let d = Double(token.text) else { throw .syntax("invalid number \(token.text)", line: line) }
            return .literal(.double(d))
        case .op:
            if skip("(") {
                if skip(")") { return .tuple([]) }
                let first = try parseExpression()
                if skip(")") { return first }
                var items = [first]
                while skip(",") {
                    if isOperator(")") { break }
                    items.append(try parseExpression())
                }
                try expect(")")
                return .tuple(items)
            }
            if skip("[") {
                var items: [JinjaExpression] = []
                while !skip("]") {
                    if !items.isEmpty { try expect(",") }
                    if skip("]") { break }
                    items.append(try parseExpression())
                }
                return .list(items)
            }
            if skip("{") {
                var pairs: [(JinjaExpression, JinjaExpression)] = []
                while !skip("}") {
                    if !pairs.isEmpty { try expect(",") }
                    if skip("}") { break }
                    let key = try parseExpression()
                    try expect(":")
                    pairs.append((key, try parseExpression()))
                }
                return .dict(pairs)
            }
            throw fail("unexpected operator")
        case .end:
            throw fail("expected an expression")
        }
    }

    private mutating func parsePostfix(_ base: JinjaExpression) throws(JinjaError) -> JinjaExpression {
        let outer = nesting
        defer { nesting = outer }
        var node = base
        while true {
            try deepen()
            if skip(".") {
                if current.kind == .integer {
                    let digits = next().text
                    guard let index = Int(digits) else { throw .syntax("integer \(digits) is too large", line: line) }
                    node = .item(node, .literal(.int(index)))
                } else {
                    node = .attribute(node, try expectName())
                }
            } else if skip("[") {
                node = try parseSubscript(node)
            } else if isOperator("(") {
                node = .call(node, try parseCallArguments())
            } else {
                return node
            }
        }
    }

    private mutating func parseSubscript(_ base: JinjaExpression) throws(JinjaError) -> JinjaExpression {
        var parts: [JinjaExpression?] = [nil]
        var isSlice = false
        while !skip("]") {
            if skip(":") {
                isSlice = true
                parts.append(nil)
                guard parts.count <= 3 else { throw fail("too many ':' in a slice") }
                continue
            }
            guard parts[parts.count - 1] == nil else { throw fail("expected ']'") }
            parts[parts.count - 1] = try parseExpression()
        }
        if !isSlice {
            guard let key = parts[0] else { throw fail("expected a subscript") }
            return .item(base, key)
        }
        while parts.count < 3 { parts.append(nil) }
        return .slice(base, start: parts[0], stop: parts[1], step: parts[2])
    }

    private mutating func parseCallArguments() throws(JinjaError) -> JinjaCallArguments {
        try expect("(")
        var arguments = JinjaCallArguments()
        var first = true
        while !skip(")") {
            if !first { try expect(",") }
            first = false
            if skip(")") { break }
            if current.kind == .name, position + 1 < tokens.count, tokens[position + 1].kind == .op, tokens[position + 1].text == "=" {
                let name = next().text
                next()
                arguments.keywords.append((name, try parseExpression()))
            } else {
                guard arguments.keywords.isEmpty else { throw fail("positional argument after keyword arguments") }
                arguments.positional.append(try parseExpression())
            }
        }
        return arguments
    }

    private mutating func parseFiltersAndTests(_ base: JinjaExpression) throws(JinjaError) -> JinjaExpression {
        let outer = nesting
        defer { nesting = outer }
        var node = base
        while true {
            try deepen()
            if skip("|") {
                var name = try expectName()
                while skip(".") { name += "." + (try expectName()) }
                let arguments = isOperator("(") ? try parseCallArguments() : JinjaCallArguments()
                node = .filter(node, name: name, arguments)
            } else if skipKeyword("is") {
                let negated = skipKeyword("not")
                var name = try expectName()
                while skip(".") { name += "." + (try expectName()) }
                var arguments = JinjaCallArguments()
                if isOperator("(") {
                    arguments = try parseCallArguments()
                } else if [.name, .string, .integer, .float].contains(current.kind) || isOperator("[") || isOperator("{") || isOperator("("),
                          !isKeyword("else"), !isKeyword("or"), !isKeyword("and") {
                    // Jinja takes one bare argument: `x is divisibleby 3`, `x is sameas false`.
                    arguments.positional = [try parsePostfix(try parsePrimary())]
                }
                node = .test(node, name: name, arguments, negated: negated)
            } else if isOperator("(") {
                node = .call(node, try parseCallArguments())
            } else {
                return node
            }
        }
    }
}
