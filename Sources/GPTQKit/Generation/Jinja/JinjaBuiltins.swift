#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Jinja's operators, filters, tests and globals, and the Python str/dict methods
/// templates call, with the semantics of Python and of transformers' environment.
enum JinjaBuiltins {
    // MARK: globals

    /// What transformers puts in every chat template's environment.
    static func globals() -> [String: JinjaValue] {
        var g: [String: JinjaValue] = [:]
        func define(_ name: String, _ body: @escaping (JinjaArguments) throws(JinjaError) -> JinjaValue) {
            g[name] = .function(JinjaFunction(name, body))
        }
        define("raise_exception") { arguments throws(JinjaError) in
            throw .raised(try arguments.required(0, "message").text)
        }
        define("namespace") { arguments throws(JinjaError) in
            var attributes = JinjaDict()
            for value in arguments.positional {
                guard case let .dict(d) = value else { throw .runtime("namespace() takes a dict or keyword arguments") }
                for (k, v) in d.pairs { attributes[k] = v }
            }
            for (k, v) in arguments.keywords { attributes[k] = v }
            return .namespace(JinjaNamespace(attributes))
        }
        define("dict") { arguments throws(JinjaError) in
            .dict(JinjaDict(arguments.keywords))
        }
        define("range") { arguments throws(JinjaError) in
            let numbers = arguments.positional.compactMap(\.integer)
            guard numbers.count == arguments.positional.count, (1...3).contains(numbers.count) else {
                throw .runtime("range() takes 1 to 3 integers")
            }
            let (start, stop, step) = numbers.count == 1 ? (0, numbers[0], 1) : (numbers[0], numbers[1], numbers.count == 3 ? numbers[2] : 1)
            guard step != 0 else { throw .runtime("range() step must not be zero") }
            let (span, overflow) = stop.subtractingReportingOverflow(start)
            try JinjaLimits.checkList(items: overflow ? 0 : span / step, overflow: overflow, "range(\(start), \(stop), \(step))")
            return .list(Swift.stride(from: start, to: stop, by: step).map { .int($0) })
        }
        define("strftime_now") { arguments throws(JinjaError) in
            let format = try arguments.string(0, "format") ?? ""
            var now = time(nil)
            var parts = tm()
            localtime_r(&now, &parts)
            var buffer = [CChar](repeating: 0, count: 256)
            let n = strftime(&buffer, buffer.count, format, &parts)
            return .string(String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return g
    }

    // MARK: access

    /// `value.name`: Jinja tries the Python attribute (a method) first, then the item.
    static func attribute(_ value: JinjaValue, _ name: String) throws(JinjaError) -> JinjaValue {
        switch value {
        case let .undefined(base): throw .runtime("'\(base)' is undefined (reading '.\(name)')")
        case let .dict(d): return dictMethod(d, name) ?? d[name] ?? .undefined(name)
        case let .string(s): return stringMethod(s, name) ?? .undefined(name)
        case let .namespace(ns): return ns.attributes[name] ?? .undefined(name)
        default: return .undefined(name)
        }
    }

    /// `value[key]`: the item first, then (for a string key) the attribute.
    static func item(_ value: JinjaValue, _ key: JinjaValue) throws(JinjaError) -> JinjaValue {
        switch (value, key) {
        case let (.undefined(base), _): throw .runtime("'\(base)' is undefined (reading [\(key.repr)])")
        case let (.dict(d), .string(k)): return d[k] ?? dictMethod(d, k) ?? .undefined(k)
        case let (.list(items), _), let (.tuple(items), _):
            guard let i = key.integer else { return .undefined(key.repr) }
            let index = i < 0 ? items.count + i : i
            return items.indices.contains(index) ? items[index] : .undefined("[\(i)]")
        case let (.string(s), _):
            guard let i = key.integer else { return .undefined(key.repr) }
            let scalars = Array(s.unicodeScalars)
            let index = i < 0 ? scalars.count + i : i
            return scalars.indices.contains(index) ? .string(String(scalars[index])) : .undefined("[\(i)]")
        case let (_, .string(k)): return try attribute(value, k)
        default: return .undefined(key.repr)
        }
    }

    /// Python's `sequence[start:stop:step]`.
    static func slice(_ value: JinjaValue, start: Int?, stop: Int?, step: Int?) throws(JinjaError) -> JinjaValue {
        let step = step ?? 1
        guard step != 0 else { throw .runtime("slice step cannot be zero") }
        func indices(_ count: Int) -> [Int] {
            func clamp(_ i: Int?, _ defaultValue: Int, lower: Int, upper: Int) -> Int {
                guard var i else { return defaultValue }
                if i < 0 { i += count }
                return min(max(i, lower), upper)
            }
            if step > 0 {
                let a = clamp(start, 0, lower: 0, upper: count), b = clamp(stop, count, lower: 0, upper: count)
                return Array(Swift.stride(from: a, to: b, by: step))
            }
            let a = clamp(start, count - 1, lower: -1, upper: count - 1), b = clamp(stop, -1, lower: -1, upper: count - 1)
            return Array(Swift.stride(from: a, to: b, by: step))
        }
        switch value {
        case let .list(items): return .list(indices(items.count).map { items[$0] })
        case let .tuple(items): return .tuple(indices(items.count).map { items[$0] })
        case let .string(s):
            let scalars = Array(s.unicodeScalars)
            var out = String.UnicodeScalarView()
            for i in indices(scalars.count) { out.append(scalars[i]) }
            return .string(String(out))
        case let .undefined(name): throw .runtime("'\(name)' is undefined (slicing it)")
        default: throw .runtime("'\(value.typeName)' object is not subscriptable")
        }
    }

    // MARK: operators

    static func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws(JinjaError) -> JinjaValue {
        func unsupported() -> JinjaError {
            if case let .undefined(name) = a { return .runtime("'\(name)' is undefined") }
            if case let .undefined(name) = b { return .runtime("'\(name)' is undefined") }
            return .runtime("unsupported operand types for \(op): '\(a.typeName)' and '\(b.typeName)'")
        }
        func arithmetic(_ ints: (Int, Int) -> (Int, Bool), _ doubles: (Double, Double) -> Double) throws(JinjaError) -> JinjaValue {
            if let x = a.integer, let y = b.integer {
                let (r, overflow) = ints(x, y)
                guard !overflow else { throw .runtime("integer overflow in \(op)") }
                return .int(r)
            }
            guard let x = a.number, let y = b.number else { throw unsupported() }
            return .double(doubles(x, y))
        }
        switch op {
        case "+":
            switch (a, b) {
            case let (.string(x), .string(y)):
                try JinjaLimits.checkString(bytes: x.utf8.count + y.utf8.count, "the sum of two strings")
                return .string(x + y)
            case let (.list(x), .list(y)):
                try JinjaLimits.checkList(items: x.count + y.count, "the sum of two lists")
                return .list(x + y)
            case let (.tuple(x), .tuple(y)):
                try JinjaLimits.checkList(items: x.count + y.count, "the sum of two tuples")
                return .tuple(x + y)
            default: return try arithmetic({ $0.addingReportingOverflow($1) }, +)
            }
        case "-": return try arithmetic({ $0.subtractingReportingOverflow($1) }, -)
        case "*":
            switch (a, b) {
            case let (.string(s), n) where n.integer != nil, let (n, .string(s)) where n.integer != nil:
                let times = max(0, n.integer!)
                let (bytes, overflow) = s.utf8.count.multipliedReportingOverflow(by: times)
                try JinjaLimits.checkString(bytes: bytes, overflow: overflow, "a string repeated \(times) times")
                return .string(String(repeating: s, count: times))
            case let (.list(items), n) where n.integer != nil, let (n, .list(items)) where n.integer != nil:
                let times = max(0, n.integer!)
                let (count, overflow) = items.count.multipliedReportingOverflow(by: times)
                try JinjaLimits.checkList(items: count, overflow: overflow, "a list repeated \(times) times")
                return .list(Array(repeating: items, count: times).flatMap { $0 })
            default: return try arithmetic({ $0.multipliedReportingOverflow(by: $1) }, *)
            }
        case "/":
            guard let x = a.number, let y = b.number else { throw unsupported() }
            guard y != 0 else { throw .runtime("division by zero") }
            return .double(x / y)
        case "//", "%":
            if let x = a.integer, let y = b.integer {
                guard y != 0 else { throw .runtime("integer division or modulo by zero") }
                guard !(x == .min && y == -1) else { throw .runtime("integer overflow in \(op)") }
                // Python floors: the remainder takes the divisor's sign.
                var q = x / y
                if (x % y != 0) && ((x < 0) != (y < 0)) { q -= 1 }
                return .int(op == "//" ? q : x - q * y)
            }
            guard let x = a.number, let y = b.number else { throw unsupported() }
            guard y != 0 else { throw .runtime("float division or modulo by zero") }
            let q = (x / y).rounded(.down)
            return .double(op == "//" ? q : x - q * y)
        case "**":
            if let x = a.integer, var y = b.integer, y >= 0 {
                // By squaring: 1 ** 10**12 must not take 10^12 steps.
                var result = 1, base = x
                while y > 0 {
                    if y & 1 == 1 {
                        let (r, overflow) = result.multipliedReportingOverflow(by: base)
                        guard !overflow else { throw .runtime("integer overflow in **") }
                        result = r
                    }
                    y >>= 1
                    if y > 0 {
                        let (square, overflow) = base.multipliedReportingOverflow(by: base)
                        guard !overflow else { throw .runtime("integer overflow in **") }
                        base = square
                    }
                }
                return .int(result)
            }
            guard let x = a.number, let y = b.number else { throw unsupported() }
            return .double(pow(x, y))
        case "~":
            let (x, y) = (a.text, b.text)
            try JinjaLimits.checkString(bytes: x.utf8.count + y.utf8.count, "the concatenation")
            return .string(x + y)
        case "==": return .bool(a.equals(b))
        case "!=": return .bool(!a.equals(b))
        case "<": return .bool(try a.lessThan(b))
        case ">": return .bool(try b.lessThan(a))
        case "<=": return .bool(try a.lessThanOrEqual(b))
        case ">=": return .bool(try b.lessThanOrEqual(a))
        case "in": return .bool(try contains(b, a))
        default: throw .runtime("unknown operator \(op)")
        }
    }

    /// Python's `needle in container`.
    static func contains(_ container: JinjaValue, _ needle: JinjaValue) throws(JinjaError) -> Bool {
        switch container {
        case .undefined: return false
        case let .string(s):
            guard case let .string(n) = needle else { throw .runtime("'in <string>' requires a string, not \(needle.typeName)") }
            return n.isEmpty || s.contains(n)
        case let .list(items), let .tuple(items): return items.contains { $0.equals(needle) }
        case let .dict(d):
            guard case let .string(k) = needle else { return false }
            return d[k] != nil
        default: throw .runtime("argument of type '\(container.typeName)' is not iterable")
        }
    }

    // MARK: methods

    static func dictMethod(_ d: JinjaDict, _ name: String) -> JinjaValue? {
        let body: (JinjaArguments) throws(JinjaError) -> JinjaValue
        switch name {
        case "items": body = { _ in .list(d.pairs.map { .tuple([.string($0.0), $0.1]) }) }
        case "keys": body = { _ in .list(d.keys.map { .string($0) }) }
        case "values": body = { _ in .list(d.pairs.map(\.1)) }
        case "get":
            body = { arguments throws(JinjaError) in
                guard case let .string(key) = try arguments.required(0, "key") else { return arguments.optional(1, "default") ?? .none }
                return d[key] ?? arguments.optional(1, "default") ?? .none
            }
        default: return nil
        }
        return .function(JinjaFunction("dict.\(name)", body))
    }

    static func stringMethod(_ s: String, _ name: String) -> JinjaValue? {
        let body: (JinjaArguments) throws(JinjaError) -> JinjaValue
        switch name {
        case "strip", "lstrip", "rstrip":
            body = { arguments throws(JinjaError) in
                .string(strip(s, characters: try arguments.string(0, "chars"), leading: name != "rstrip", trailing: name != "lstrip"))
            }
        case "startswith", "endswith":
            body = { arguments throws(JinjaError) in
                let candidates: [JinjaValue]
                switch try arguments.required(0, name == "startswith" ? "prefix" : "suffix") {
                case let .tuple(items), let .list(items): candidates = items
                case let single: candidates = [single]
                }
                for candidate in candidates {
                    guard case let .string(c) = candidate else { throw .runtime("\(name)() takes strings, not \(candidate.typeName)") }
                    if name == "startswith" ? s.unicodeScalars.starts(with: c.unicodeScalars)
                                            : s.unicodeScalars.reversed().starts(with: c.unicodeScalars.reversed()) { return .bool(true) }
                }
                return .bool(false)
            }
        case "split", "rsplit":
            body = { arguments throws(JinjaError) in
                .list(try split(s, separator: try arguments.string(0, "sep"), limit: try arguments.int(1, "maxsplit") ?? -1,
                                fromRight: name == "rsplit").map { .string($0) })
            }
        case "splitlines":
            body = { _ in .list(s.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }
                    .map { .string(String($0)) }.dropLast(s.hasSuffix("\n") ? 1 : 0)) }
        case "upper": body = { _ in .string(s.uppercased()) }
        case "lower": body = { _ in .string(s.lowercased()) }
        case "title": body = { _ in .string(pythonTitle(s)) }
        case "capitalize": body = { _ in .string(capitalize(s)) }
        case "replace":
            body = { arguments throws(JinjaError) in
                .string(try replace(s, try arguments.string(0, "old") ?? "", try arguments.string(1, "new") ?? "", count: try arguments.int(2, "count") ?? -1))
            }
        case "find":
            body = { arguments throws(JinjaError) in
                guard let needle = try arguments.string(0, "sub") else { throw .runtime("find() takes a string") }
                let parts = components(s, separatedBy: needle)
                return .int(parts.count > 1 ? parts[0].unicodeScalars.count : -1)
            }
        case "count":
            body = { arguments throws(JinjaError) in
                guard let needle = try arguments.string(0, "sub"), !needle.isEmpty else { throw .runtime("count() takes a non-empty string") }
                return .int(components(s, separatedBy: needle).count - 1)
            }
        case "join":
            body = { arguments throws(JinjaError) in
                .string(try joined(try arguments.required(0, "iterable").iterated().map(\.text), separator: s))
            }
        case "isdigit": body = { _ in .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.numericType == .decimal || $0.properties.numericType == .digit }) }
        case "isspace": body = { _ in .bool(!s.isEmpty && s.unicodeScalars.allSatisfy(isSpace)) }
        default: return nil
        }
        return .function(JinjaFunction("str.\(name)", body))
    }

    /// Python's str.isspace for one scalar.
    static func isSpace(_ c: Unicode.Scalar) -> Bool {
        c.properties.isWhitespace || (c.value >= 0x1C && c.value <= 0x1F)
    }

    static func strip(_ s: String, characters: String?, leading: Bool, trailing: Bool) -> String {
        let set = characters.map { Set($0.unicodeScalars) }
        func strippable(_ c: Unicode.Scalar) -> Bool { set?.contains(c) ?? isSpace(c) }
        var scalars = Substring(s).unicodeScalars[...]
        if leading { while let f = scalars.first, strippable(f) { scalars.removeFirst() } }
        if trailing { while let l = scalars.last, strippable(l) { scalars.removeLast() } }
        return String(String.UnicodeScalarView(scalars))
    }

    /// Python's str.split / rsplit (`separator` nil: runs of whitespace, no empty parts).
    static func split(_ s: String, separator: String?, limit: Int, fromRight: Bool) throws(JinjaError) -> [String] {
        if let separator {
            guard !separator.isEmpty else { throw .runtime("split(): empty separator") }
            var parts = components(s, separatedBy: separator)
            if limit >= 0, parts.count > limit + 1 {
                if fromRight {
                    let head = parts[0..<(parts.count - limit)].joined(separator: separator)
                    parts = [head] + parts[(parts.count - limit)...]
                } else {
                    parts = Array(parts[0..<limit]) + [parts[limit...].joined(separator: separator)]
                }
            }
            return parts
        }
        var words: [String] = []
        var current = String.UnicodeScalarView()
        var scalars = Array(s.unicodeScalars)
        if fromRight { scalars.reverse() }
        var i = 0
        while i < scalars.count {
            let c = scalars[i]
            if isSpace(c) {
                if !current.isEmpty {
                    words.append(String(current))
                    current = String.UnicodeScalarView()
                    if limit >= 0, words.count == limit {
                        // The rest, less its leading whitespace, is the last part.
                        var j = i
                        while j < scalars.count, isSpace(scalars[j]) { j += 1 }
                        if j < scalars.count { current.append(contentsOf: scalars[j...]) }
                        break
                    }
                }
            } else {
                current.append(c)
            }
            i += 1
        }
        if !current.isEmpty { words.append(String(current)) }
        if fromRight { return words.reversed().map { String(String.UnicodeScalarView($0.unicodeScalars.reversed())) } }
        return words
    }

    /// The parts of `s` between non-overlapping occurrences of `separator` (non-empty), left to right.
    static func components(_ s: String, separatedBy separator: String) -> [String] {
        let text = Array(s.unicodeScalars), needle = Array(separator.unicodeScalars)
        guard !needle.isEmpty else { return [s] }
        var parts: [String] = []
        var start = 0, i = 0
        while i + needle.count <= text.count {
            if text[i] == needle[0] && Array(text[i..<i + needle.count]) == needle {
                parts.append(String(String.UnicodeScalarView(text[start..<i])))
                i += needle.count
                start = i
            } else {
                i += 1
            }
        }
        parts.append(String(String.UnicodeScalarView(text[start...])))
        return parts
    }

    static func replace(_ s: String, _ old: String, _ new: String, count: Int) throws(JinjaError) -> String {
        guard count != 0 else { return s }
        var parts = components(s, separatedBy: old)
        if old.isEmpty { parts = [""] + s.unicodeScalars.map { String($0) } + [""] }
        guard count > 0, parts.count - 1 > count else { return try joined(parts, separator: new) }
        return try joined([try joined(Array(parts[0...count]), separator: new), try joined(Array(parts[(count + 1)...]), separator: old)],
                          separator: old)
    }

    /// `parts` joined, refused before it is built when it would pass the string limit.
    static func joined(_ parts: [String], separator: String) throws(JinjaError) -> String {
        var bytes = separator.utf8.count * max(parts.count - 1, 0)
        for part in parts { bytes += part.utf8.count }
        try JinjaLimits.checkString(bytes: bytes, "the joined string")
        return parts.joined(separator: separator)
    }

    static func capitalize(_ s: String) -> String {
        guard let first = s.unicodeScalars.first else { return s }
        return String(first).uppercased() + String(String.UnicodeScalarView(s.unicodeScalars.dropFirst())).lowercased()
    }

    /// Python's str.title: a cased letter after an uncased character starts a word.
    static func pythonTitle(_ s: String) -> String {
        var out = ""
        var previousCased = false
        for c in s.unicodeScalars {
            let cased = c.properties.isCased
            out += cased ? (previousCased ? String(c).lowercased() : String(c).uppercased()) : String(c)
            previousCased = cased
        }
        return out
    }

    // MARK: tests

    static func test(_ name: String, _ value: JinjaValue, _ arguments: JinjaArguments) throws(JinjaError) -> Bool {
        func other() throws(JinjaError) -> JinjaValue { try arguments.required(0, "other") }
        switch name {
        case "defined": return !value.isUndefined
        case "undefined": return value.isUndefined
        case "none": if case .none = value { return true } else { return false }
        case "true": if case .bool(true) = value { return true } else { return false }
        case "false": if case .bool(false) = value { return true } else { return false }
        case "boolean": if case .bool = value { return true } else { return false }
        case "string": if case .string = value { return true } else { return false }
        case "mapping": if case .dict = value { return true } else { return false }
        case "number": return value.number != nil
        case "integer": if case .int = value { return true } else { return false }
        case "float": if case .double = value { return true } else { return false }
        case "callable": if case .function = value { return true } else { return false }
        case "iterable", "sequence":
            switch value {
            case .undefined, .string, .list, .tuple, .dict: return true
            default: return false
            }
        case "even", "odd":
            guard let i = value.integer else { throw .runtime("'\(name)' test needs an integer, not \(value.typeName)") }
            return (i % 2 == 0) == (name == "even")
        case "divisibleby":
            guard let i = value.integer, let d = try other().integer, d != 0 else { throw .runtime("'divisibleby' test needs integers") }
            return i % d == 0
        case "equalto", "eq", "==": return value.equals(try other())
        case "sameas":
            // Python's `is`: same type and value for the constants templates compare with.
            let o = try other()
            return value.typeName == o.typeName && value.equals(o)
        case "ne", "!=": return !value.equals(try other())
        case "lt", "<": return try value.lessThan(try other())
        case "gt", ">": return try other().lessThan(value)
        case "le", "<=": return try value.lessThanOrEqual(try other())
        case "ge", ">=": return try other().lessThanOrEqual(value)
        case "in": return try contains(try other(), value)
        case "lower", "upper":
            guard case let .string(s) = value else { return false }
            let cased = s.unicodeScalars.filter { $0.properties.isCased }
            return !cased.isEmpty && cased.allSatisfy { name == "lower" ? $0.properties.isLowercase : $0.properties.isUppercase }
        default: throw .runtime("unknown test '\(name)'")
        }
    }

    // MARK: filters

    static func filter(_ name: String, _ value: JinjaValue, _ arguments: JinjaArguments) throws(JinjaError) -> JinjaValue {
        switch name {
        case "safe", "string": return name == "safe" ? value : .string(value.text)
        case "trim":
            return .string(strip(value.text, characters: try arguments.string(0, "chars"), leading: true, trailing: true))
        case "length", "count":
            switch value {
            case .undefined: return .int(0)
            case let .string(s): return .int(s.unicodeScalars.count)
            case let .list(items), let .tuple(items): return .int(items.count)
            case let .dict(d): return .int(d.keys.count)
            case let .namespace(ns): return .int(ns.attributes.keys.count)
            default: throw .runtime("object of type '\(value.typeName)' has no len()")
            }
        case "upper": return .string(value.text.uppercased())
        case "lower": return .string(value.text.lowercased())
        case "capitalize": return .string(capitalize(value.text))
        case "title":
            // Jinja's title: words start after whitespace and - ( { [ <.
            var out = ""
            var atStart = true
            for c in value.text.unicodeScalars {
                let separator = isSpace(c) || "-({[<".unicodeScalars.contains(c)
                out += separator ? String(c) : (atStart ? String(c).uppercased() : String(c).lowercased())
                atStart = separator
            }
            return .string(out)
        case "replace":
            return .string(try replace(value.text, try arguments.required(0, "old").text, try arguments.required(1, "new").text,
                                   count: try arguments.int(2, "count") ?? -1))
        case "default", "d":
            let fallback = arguments.optional(0, "default_value") ?? .string("")
            let boolean = arguments.optional(1, "boolean")?.isTruthy ?? false
            return value.isUndefined || (boolean && !value.isTruthy) ? fallback : value
        case "first", "last":
            let items = try value.iterated()
            return (name == "first" ? items.first : items.last) ?? .undefined("\(name) of an empty sequence")
        case "join":
            var items = try value.iterated()
            if let attribute = try arguments.string(1, "attribute") {
                var picked: [JinjaValue] = []
                for item in items { picked.append(try self.attribute(item, attribute)) }
                items = picked
            }
            return .string(try joined(items.map(\.text), separator: try arguments.string(0, "d") ?? ""))
        case "list": return .list(try value.iterated())
        case "items":
            switch value {
            case .undefined: return .list([])
            case let .dict(d): return .list(d.pairs.map { .tuple([.string($0.0), $0.1]) })
            default: throw .runtime("items filter needs a mapping, not \(value.typeName)")
            }
        case "reverse":
            if case let .string(s) = value { return .string(String(String.UnicodeScalarView(s.unicodeScalars.reversed()))) }
            return .list(try value.iterated().reversed())
        case "sort":
            let reverse = arguments.optional(0, "reverse")?.isTruthy ?? false
            let caseSensitive = arguments.optional(1, "case_sensitive")?.isTruthy ?? false
            let attribute = try arguments.string(2, "attribute")
            return .list(try sorted(try value.iterated(), reverse: reverse, caseSensitive: caseSensitive, attribute: attribute))
        case "unique":
            let caseSensitive = arguments.optional(0, "case_sensitive")?.isTruthy ?? false
            let attribute = try arguments.string(1, "attribute")
            var seen: [JinjaValue] = []
            var out: [JinjaValue] = []
            for item in try value.iterated() {
                let key = try sortKey(item, caseSensitive: caseSensitive, attribute: attribute)
                if !seen.contains(where: { $0.equals(key) }) { seen.append(key); out.append(item) }
            }
            return .list(out)
        case "map":
            let items = try value.iterated()
            if let attribute = try arguments.string(-1, "attribute") {
                var out: [JinjaValue] = []
                for item in items {
                    let v = try self.attribute(item, attribute)
                    out.append(v.isUndefined ? (arguments.optional(-1, "default") ?? v) : v)
                }
                return .list(out)
            }
            guard case let .string(filterName)? = arguments.positional.first else { throw .runtime("map() needs a filter name or attribute=") }
            let rest = JinjaArguments(Array(arguments.positional.dropFirst()), keywords: arguments.keywords, callee: filterName)
            var out: [JinjaValue] = []
            for item in items { out.append(try filter(filterName, item, rest)) }
            return .list(out)
        case "select", "reject", "selectattr", "rejectattr":
            let byAttribute = name.hasSuffix("attr")
            let keep = name.hasPrefix("select")
            var rest = arguments.positional
            let attribute = byAttribute ? try arguments.required(0, "attribute").text : nil
            if byAttribute { rest.removeFirst() }
            let testName = rest.first.map(\.text)
            let testArguments = JinjaArguments(Array(rest.dropFirst()), callee: testName ?? name)
            var out: [JinjaValue] = []
            for item in try value.iterated() {
                let subject = try attribute.map { a throws(JinjaError) in try self.attribute(item, a) } ?? item
                let passed = try testName.map { t throws(JinjaError) in try test(t, subject, testArguments) } ?? subject.isTruthy
                if passed == keep { out.append(item) }
            }
            return .list(out)
        case "attr": return try attribute(value, try arguments.required(0, "name").text)
        case "tojson":
            var out = ""
            let indent = try arguments.int(1, "indent").map { max(0, $0) }
            try JinjaLimits.checkString(bytes: indent ?? 0, "tojson(indent=\(indent ?? 0))")
            var itemSeparator = indent == nil ? ", " : ","
            var keySeparator = ": "
            if let separators = arguments.optional(2, "separators"), case let .tuple(pair) = separators, pair.count == 2 {
                itemSeparator = pair[0].text
                keySeparator = pair[1].text
            } else if let separators = arguments.optional(2, "separators"), case let .list(pair) = separators, pair.count == 2 {
                itemSeparator = pair[0].text
                keySeparator = pair[1].text
            }
            try writeJSON(value, into: &out, indent: indent, level: 0, itemSeparator: itemSeparator, keySeparator: keySeparator,
                          ensureASCII: arguments.optional(0, "ensure_ascii")?.isTruthy ?? false,
                          sortKeys: arguments.optional(3, "sort_keys")?.isTruthy ?? false)
            return .string(out)
        case "int":
            switch value {
            case let .int(i): return .int(i)
            case let .bool(b): return .int(b ? 1 : 0)
            case let .double(d): return d.isFinite && abs(d) < 9e18 ? .int(Int(d)) : (arguments.optional(0, "default") ?? .int(0))
            case let .string(s):
                let t = strip(s, characters: nil, leading: true, trailing: true)
                if let i = Int(t) { return .int(i) }
                if let d = Double(t), d.isFinite, abs(d) < 9e18 { return .int(Int(d)) }
                return arguments.optional(0, "default") ?? .int(0)
            default: return arguments.optional(0, "default") ?? .int(0)
            }
        case "float":
            if let d = value.number { return .double(d) }
            if case let .string(s) = value, let d = Double(strip(s, characters: nil, leading: true, trailing: true)) { return .double(d) }
            return arguments.optional(0, "default") ?? .double(0)
        case "abs":
            switch value {
            case let .int(i):
                guard i != .min else { throw .runtime("integer overflow in abs") }
                return .int(abs(i))
            case let .double(d): return .double(abs(d))
            default: throw .runtime("bad operand type for abs(): '\(value.typeName)'")
            }
        case "round":
            guard let d = value.number else { throw .runtime("round needs a number") }
            let precision = try arguments.int(0, "precision") ?? 0
            let method = try arguments.string(1, "method") ?? "common"
            let scale = pow(10, Double(precision))
            // "common" is Python's round(), which breaks ties to even.
            let rule: FloatingPointRoundingRule = method == "ceil" ? .up : method == "floor" ? .down : .toNearestOrEven
            return .double((d * scale).rounded(rule) / scale)
        case "sum":
            var total = arguments.optional(1, "start") ?? .int(0)
            let attribute = try arguments.string(0, "attribute")
            for item in try value.iterated() {
                total = try binary("+", total, try attribute.map { a throws(JinjaError) in try self.attribute(item, a) } ?? item)
            }
            return total
        case "min", "max":
            let caseSensitive = arguments.optional(0, "case_sensitive")?.isTruthy ?? false
            let attribute = try arguments.string(1, "attribute")
            let items = try sorted(try value.iterated(), reverse: name == "max", caseSensitive: caseSensitive, attribute: attribute)
            return items.first ?? .undefined("\(name) of an empty sequence")
        case "indent":
            let width: String
            switch arguments.optional(0, "width") {
            case let .string(s)?: width = s
            case let w?:
                let spaces = max(0, w.integer ?? 4)
                try JinjaLimits.checkString(bytes: spaces, "indent(\(spaces))")
                width = String(repeating: " ", count: spaces)
            case nil: width = "    "
            }
            let first = arguments.optional(1, "first")?.isTruthy ?? false
            let blank = arguments.optional(2, "blank")?.isTruthy ?? false
            let lines = value.text.split(separator: "\n", omittingEmptySubsequences: false)
            let indented = lines.enumerated().map { i, line -> String in
                (i == 0 && !first) || (!blank && line.allSatisfy { $0 == " " || $0 == "\t" }) ? String(line) : width + line
            }
            return .string(try joined(indented, separator: "\n"))
        case "escape", "e":
            var out = ""
            for c in value.text {
                switch c {
                case "&": out += "&amp;"
                case "<": out += "&lt;"
                case ">": out += "&gt;"
                case "'": out += "&#39;"
                case "\"": out += "&#34;"
                default: out.append(c)
                }
            }
            return .string(out)
        default: throw .runtime("unknown filter '\(name)'")
        }
    }

    private static func sortKey(_ item: JinjaValue, caseSensitive: Bool, attribute: String?) throws(JinjaError) -> JinjaValue {
        let key = try attribute.map { a throws(JinjaError) in try self.attribute(item, a) } ?? item
        if !caseSensitive, case let .string(s) = key { return .string(s.lowercased()) }
        return key
    }

    private static func sorted(_ items: [JinjaValue], reverse: Bool, caseSensitive: Bool, attribute: String?) throws(JinjaError) -> [JinjaValue] {
        var keyed: [(JinjaValue, JinjaValue)] = []
        for item in items { keyed.append((try sortKey(item, caseSensitive: caseSensitive, attribute: attribute), item)) }
        // A stable insertion sort: comparisons can throw, which Swift's sort does not allow.
        var out: [(JinjaValue, JinjaValue)] = []
        for entry in keyed {
            var i = out.count
            while i > 0, reverse ? try out[i - 1].0.lessThan(entry.0) : try entry.0.lessThan(out[i - 1].0) { i -= 1 }
            out.insert(entry, at: i)
        }
        return out.map(\.1)
    }

    /// Python's json.dumps, which transformers' tojson filter calls (ensure_ascii off by default).
    static func writeJSON(_ value: JinjaValue, into out: inout String, indent: Int?, level: Int, itemSeparator: String,
                          keySeparator: String, ensureASCII: Bool, sortKeys: Bool) throws(JinjaError) {
        func newline(_ l: Int) -> String { indent.map { "\n" + String(repeating: " ", count: $0 * l) } ?? "" }
        try JinjaLimits.checkString(bytes: out.utf8.count + (indent ?? 0) * (level + 1), "the JSON text")
        switch value {
        case .none: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .int(i): out += String(i)
        case let .double(d):
            out += d.isNaN ? "NaN" : d.isInfinite ? (d < 0 ? "-Infinity" : "Infinity") : JinjaValue.pythonRepr(d)
        case let .string(s): JSON.writeString(s, into: &out, ensureASCII: ensureASCII)
        case let .list(items), let .tuple(items):
            if items.isEmpty { out += "[]"; return }
            out += "[" + newline(level + 1)
            for (i, item) in items.enumerated() {
                if i > 0 { out += itemSeparator + newline(level + 1) }
                try writeJSON(item, into: &out, indent: indent, level: level + 1, itemSeparator: itemSeparator,
                              keySeparator: keySeparator, ensureASCII: ensureASCII, sortKeys: sortKeys)
            }
            out += newline(level) + "]"
        case let .dict(d):
            if d.keys.isEmpty { out += "{}"; return }
            out += "{" + newline(level + 1)
            let keys = sortKeys ? d.keys.sorted { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) } : d.keys
            for (i, key) in keys.enumerated() {
                if i > 0 { out += itemSeparator + newline(level + 1) }
                JSON.writeString(key, into: &out, ensureASCII: ensureASCII)
                out += keySeparator
                try writeJSON(d[key]!, into: &out, indent: indent, level: level + 1, itemSeparator: itemSeparator,
                              keySeparator: keySeparator, ensureASCII: ensureASCII, sortKeys: sortKeys)
            }
            out += newline(level) + "}"
        default: throw .runtime("Object of type \(value.typeName) is not JSON serializable")
        }
    }
}
