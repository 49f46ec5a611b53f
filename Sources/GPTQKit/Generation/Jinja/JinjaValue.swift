/// A value while a template runs, with Python's semantics (Jinja evaluates Python objects):
/// truthiness, equality across int/float/bool, `str()` and `repr()` formatting.
enum JinjaValue {
    /// A name or attribute that does not exist: falsy, prints as "", iterates as empty.
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([JinjaValue])
    case tuple([JinjaValue])
    case dict(JinjaDict)
    case namespace(JinjaNamespace)
    case function(JinjaFunction)

    init(_ json: JSON) {
        switch json {
        case .null: self = .none
        case let .bool(b): self = .bool(b)
        case let .number(d):
            // JSON does not tell 2 from 2.0; integral values read as Python ints.
            if d.rounded() == d, abs(d) < 9.0e15 { self = .int(Int(d)) } else { self = .double(d) }
        case let .string(s): self = .string(s)
        case let .array(items): self = .list(items.map(JinjaValue.init))
        case let .object(pairs): self = .dict(JinjaDict(pairs.map { ($0.0, JinjaValue($0.1)) }))
        }
    }

    var isTruthy: Bool {
        switch self {
        case .undefined, .none: return false
        case let .bool(b): return b
        case let .int(i): return i != 0
        case let .double(d): return d != 0
        case let .string(s): return !s.isEmpty
        case let .list(items), let .tuple(items): return !items.isEmpty
        case let .dict(d): return !d.keys.isEmpty
        case .namespace, .function: return true
        }
    }

    /// Whether containers nest more than `limit` levels deep in the value, or it holds
    /// `target`; the walk stops at the limit, so a cycle through namespaces ends too.
    func nests(deeperThan limit: Int, orReaches target: JinjaNamespace? = nil) -> Bool {
        switch self {
        case let .list(items), let .tuple(items):
            return limit == 0 || items.contains { $0.nests(deeperThan: limit - 1, orReaches: target) }
        case let .dict(d):
            return limit == 0 || d.pairs.contains { $0.1.nests(deeperThan: limit - 1, orReaches: target) }
        case let .namespace(ns):
            return ns === target || limit == 0 || ns.attributes.pairs.contains { $0.1.nests(deeperThan: limit - 1, orReaches: target) }
        default:
            return false
        }
    }

    var isUndefined: Bool { if case .undefined = self { return true } else { return false } }

    /// The elements a `for` loop or a filter walks: a list's items, a dict's keys, a
    /// string's characters; nothing for undefined.
    func iterated() throws(JinjaError) -> [JinjaValue] {
        switch self {
        case .undefined: return []
        case let .list(items), let .tuple(items): return items
        case let .dict(d): return d.keys.map { .string($0) }
        case let .string(s): return s.unicodeScalars.map { .string(String($0)) }
        default: throw .runtime("'\(typeName)' object is not iterable")
        }
    }

    var typeName: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .list: return "list"
        case .tuple: return "tuple"
        case .dict: return "dict"
        case .namespace: return "Namespace"
        case .function: return "function"
        }
    }

    /// The number, with bools as 0/1 as Python treats them; nil for non-numbers.
    var number: Double? {
        switch self {
        case let .int(i): return Double(i)
        case let .double(d): return d
        case let .bool(b): return b ? 1 : 0
        default: return nil
        }
    }

    var integer: Int? {
        switch self {
        case let .int(i): return i
        case let .bool(b): return b ? 1 : 0
        default: return nil
        }
    }

    /// Python's `==`.
    func equals(_ other: JinjaValue) -> Bool {
        switch (self, other) {
        case (.undefined, .undefined), (.none, .none): return true
        case let (.string(a), .string(b)): return a == b
        case let (.list(a), .list(b)), let (.tuple(a), .tuple(b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.equals($1) }
        case let (.dict(a), .dict(b)):
            return a.keys.count == b.keys.count && a.keys.allSatisfy { k in b[k].map { a[k]!.equals($0) } ?? false }
        case let (.namespace(a), .namespace(b)): return a === b
        case let (.function(a), .function(b)): return a === b
        default:
            if let x = number, let y = other.number { return x == y }
            return false
        }
    }

    /// Python's `<` for the types that order: numbers, strings, lists.
    func lessThan(_ other: JinjaValue) throws(JinjaError) -> Bool {
        switch (self, other) {
        case let (.string(a), .string(b)): return a.unicodeScalars.lexicographicallyPrecedes(b.unicodeScalars)
        case let (.list(a), .list(b)), let (.tuple(a), .tuple(b)):
            for (x, y) in zip(a, b) where !x.equals(y) { return try x.lessThan(y) }
            return a.count < b.count
        default:
            if let x = number, let y = other.number { return x < y }
            throw .runtime("'<' not supported between instances of '\(typeName)' and '\(other.typeName)'")
        }
    }

    func lessThanOrEqual(_ other: JinjaValue) throws(JinjaError) -> Bool {
        if equals(other) { return true }
        return try lessThan(other)
    }

    /// Python's `str()`: what `{{ value }}` prints.
    var text: String {
        switch self {
        case .undefined: return ""
        case let .string(s): return s
        default: return repr
        }
    }

    /// Python's `repr()`, which `str()` of containers uses for their elements.
    var repr: String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case let .bool(b): return b ? "True" : "False"
        case let .int(i): return String(i)
        case let .double(d): return Self.pythonRepr(d)
        case let .string(s): return Self.pythonRepr(s)
        case let .list(items): return "[" + items.map(\.repr).joined(separator: ", ") + "]"
        case let .tuple(items): return "(" + items.map(\.repr).joined(separator: ", ") + (items.count == 1 ? ",)" : ")")
        case let .dict(d): return "{" + d.keys.map { Self.pythonRepr($0) + ": " + d[$0]!.repr }.joined(separator: ", ") + "}"
        case let .namespace(n): return "<Namespace \(JinjaValue.dict(n.attributes).repr)>"
        case let .function(f): return "<function \(f.name)>"
        }
    }

    /// Python's float repr: the shortest digits that round-trip, in positional notation for
    /// exponents -4 ..< 16 and scientific ("1e+16", "1e-05") otherwise.
    static func pythonRepr(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        // Swift's description also gives the shortest round-trip digits; re-lay them out.
        var text = "\(abs(d))"
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(text[text.index(after: e)...])!
            text = String(text[..<e])
        }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        var digits = String(parts[0]) + (parts.count > 1 ? String(parts[1]) : "")
        exponent += parts[0].count - 1  // value = 0.d1d2... × 10^(exponent + 1)
        let leadingZeros = digits.prefix(while: { $0 == "0" }).count
        digits.removeFirst(leadingZeros)
        exponent -= leadingZeros
        while digits.count > 1, digits.hasSuffix("0") { digits.removeLast() }
        let sign = d < 0 ? "-" : ""
        if exponent < -4 || exponent >= 16 {
            let mantissa = digits.count > 1 ? "\(digits.first!).\(digits.dropFirst())" : digits
            let e = abs(exponent) < 10 ? "0\(abs(exponent))" : "\(abs(exponent))"
            return sign + mantissa + "e" + (exponent < 0 ? "-" : "+") + e
        }
        if exponent < 0 { return sign + "0." + String(repeating: "0", count: -exponent - 1) + digits }
        if digits.count <= exponent + 1 { return sign + digits + String(repeating: "0", count: exponent + 1 - digits.count) + ".0" }
        return sign + digits.prefix(exponent + 1) + "." + digits.dropFirst(exponent + 1)
    }

    /// Python's str repr: single quotes unless the text has one and no double quote.
    static func pythonRepr(_ s: String) -> String {
        let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String(quote)
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if Character(scalar) == quote { out += "\\" + String(quote) }
                else if scalar.value < 0x20 || scalar.value == 0x7F {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\x" + (hex.count < 2 ? "0" : "") + hex
                } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out + String(quote)
    }
}

/// A dict with Python's insertion order.
struct JinjaDict {
    private(set) var keys: [String] = []
    private var storage: [String: JinjaValue] = [:]

    init(_ pairs: [(String, JinjaValue)] = []) {
        for (k, v) in pairs { self[k] = v }
    }

    subscript(key: String) -> JinjaValue? {
        get { storage[key] }
        set {
            if storage[key] == nil, newValue != nil { keys.append(key) }
            if newValue == nil { keys.removeAll { $0 == key } }
            storage[key] = newValue
        }
    }

    var pairs: [(String, JinjaValue)] { keys.map { ($0, storage[$0]!) } }
}

/// `namespace(...)`: the one mutable object templates get, so that a loop can carry state out.
final class JinjaNamespace {
    var attributes: JinjaDict
    init(_ attributes: JinjaDict) { self.attributes = attributes }
}

/// A callable value: a macro, a global like `range`, or a bound method like `"s".strip`.
final class JinjaFunction {
    let name: String
    let call: (_ arguments: JinjaArguments) throws(JinjaError) -> JinjaValue
    init(_ name: String, _ call: @escaping (_ arguments: JinjaArguments) throws(JinjaError) -> JinjaValue) {
        self.name = name
        self.call = call
    }
}

/// The positional and keyword arguments of a call, filter or test.
struct JinjaArguments {
    var positional: [JinjaValue]
    var keywords: [(String, JinjaValue)]
    let callee: String

    init(_ positional: [JinjaValue] = [], keywords: [(String, JinjaValue)] = [], callee: String) {
        self.positional = positional
        self.keywords = keywords
        self.callee = callee
    }

    /// The argument at `index` (-1: keyword only) or named `name`, or nil when not given.
    func optional(_ index: Int, _ name: String) -> JinjaValue? {
        if let kw = keywords.first(where: { $0.0 == name }) { return kw.1 }
        return positional.indices.contains(index) ? positional[index] : nil
    }

    func required(_ index: Int, _ name: String) throws(JinjaError) -> JinjaValue {
        guard let v = optional(index, name) else { throw .runtime("\(callee)() missing argument '\(name)'") }
        return v
    }

    func string(_ index: Int, _ name: String) throws(JinjaError) -> String? {
        guard let v = optional(index, name), !v.isUndefined, !(v.equals(.none)) else { return nil }
        guard case let .string(s) = v else { throw .runtime("\(callee)(): '\(name)' must be a string, not \(v.typeName)") }
        return s
    }

    func int(_ index: Int, _ name: String) throws(JinjaError) -> Int? {
        guard let v = optional(index, name), !v.isUndefined, !(v.equals(.none)) else { return nil }
        guard let i = v.integer else { throw .runtime("\(callee)(): '\(name)' must be an integer, not \(v.typeName)") }
        return i
    }
}
