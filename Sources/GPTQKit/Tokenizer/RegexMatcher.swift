/// A regular expression of tokenizer.json, matched as the HF library's engine (Oniguruma)
/// matches it. The pre-tokenizer patterns of the common model families are matched by hand
/// (Swift's Regex is far too slow for whole corpora); any other pattern goes to Swift's
/// Regex at Unicode-scalar semantics, so that nothing is silently approximated.
struct RegexMatcher: @unchecked Sendable {  // Regex holds immutable compiled state
    /// Pre-tokenizer patterns with a hand-written matcher.
    enum KnownPattern: String, CaseIterable, Sendable {
        case gpt2 = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
        case llama3 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        case qwen2 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        /// HF's Whitespace pre-tokenizer.
        case words = #"\w+|[^\w\s]+"#
    }

    let pattern: String
    private let known: KnownPattern?
    private let regex: Regex<AnyRegexOutput>?

    /// `useKnownMatchers: false` forces Swift's Regex even for a known pattern (tests compare the two).
    init(pattern: String, field: String, path: String, useKnownMatchers: Bool = true) throws {
        self.pattern = pattern
        if useKnownMatchers, let known = KnownPattern(rawValue: pattern) {
            self.known = known
            self.regex = nil
            return
        }
        known = nil
        if let hazard = Self.backtrackingHazard(in: pattern) {
            throw GPTQError.badConfig(field: field, path: path, reason: "regular expression \(pattern): \(hazard) can backtrack for exponential time; not supported")
        }
        do {
            regex = try Regex(pattern).matchingSemantics(.unicodeScalar)
        } catch {
            throw GPTQError.badConfig(field: field, path: path, reason: "cannot compile regular expression \(pattern): \(error)")
        }
    }

    init(_ known: KnownPattern) {
        pattern = known.rawValue
        self.known = known
        regex = nil
    }

    /// Calls `body` with each match, leftmost first, non-overlapping (empty matches included, as HF's find_iter).
    func forEachMatch(in text: [Unicode.Scalar], _ body: (Range<Int>) -> Void) {
        if let known {
            text.withUnsafeBufferPointer { buffer in
                var position = 0
                while position < buffer.count {
                    let end: Int
                    switch known {
                    case .gpt2: end = Self.matchGPT2(buffer, at: position)
                    case .llama3: end = Self.matchLlama3(buffer, at: position, maxDigits: 3)
                    case .qwen2: end = Self.matchLlama3(buffer, at: position, maxDigits: 1)
                    case .words: end = Self.matchWords(buffer, at: position)
                    }
                    if end > position {
                        body(position..<end)
                        position = end
                    } else {
                        position += 1  // only `words` can fail (at whitespace); search on
                    }
                }
            }
            return
        }
        forEachRegexMatch(in: text, body)
    }

    private func forEachRegexMatch(in text: [Unicode.Scalar], _ body: (Range<Int>) -> Void) {
        guard let regex else { return }
        var string = String.UnicodeScalarView()
        string.append(contentsOf: text)
        let haystack = String(string)
        let scalars = haystack.unicodeScalars
        // Offsets are counted incrementally: matches come left to right.
        var lastIndex = scalars.startIndex
        var lastOffset = 0
        func offset(of index: String.Index) -> Int {
            lastOffset += scalars.distance(from: lastIndex, to: index)
            lastIndex = index
            return lastOffset
        }
        for match in haystack.matches(of: regex) {
            let start = offset(of: match.range.lowerBound)
            let end = offset(of: match.range.upperBound)
            body(start..<end)
        }
    }

    /// Describes the first group that repeats (`*`, `+`, `{n,}`, `{n,m}` with m > 1) while
    /// itself holding a quantifier or an alternation, as in `(a+)+` or `(a|aa)*`: on a near
    /// match a backtracking engine such as Swift's Regex tries exponentially many ways to
    /// split the text among the repetitions. Tokenizer patterns never need such a group.
    static func backtrackingHazard(in pattern: String) -> String? {
        let p = Array(pattern.unicodeScalars)
        /// Per open group: where it starts, and whether it holds a quantifier or an alternation.
        var groups: [(start: Int, ambiguous: Bool)] = [(0, false)]
        /// The length of a repeating quantifier at `i` (0 where there is none).
        func repetition(at i: Int) -> Int {
            guard i < p.count else { return 0 }
            if p[i] == "*" || p[i] == "+" { return 1 }
            guard p[i] == "{", let close = p[i...].firstIndex(of: "}") else { return 0 }
            let bounds = String(String.UnicodeScalarView(p[(i + 1)..<close])).split(separator: ",", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count), bounds.allSatisfy({ $0.isEmpty || Int($0) != nil }), !bounds[0].isEmpty else { return 0 }
            let upper = bounds.count == 1 ? Int(bounds[0])! : (bounds[1].isEmpty ? Int.max : Int(bounds[1])!)
            return upper > 1 ? close - i + 1 : 0
        }
        var i = 0
        while i < p.count {
            switch p[i] {
            case "\\":
                i += 2
                continue
            case "[":
                // A class is one atom: skip to its closing bracket (escapes and nested classes included).
                var depth = 0
                while i < p.count {
                    if p[i] == "\\" { i += 2; continue }
                    if p[i] == "[" { depth += 1 } else if p[i] == "]" { depth -= 1; if depth == 0 { break } }
                    i += 1
                }
            case "(":
                groups.append((i, false))
            case ")":
                guard groups.count > 1 else { break }
                let group = groups.removeLast()
                let repeats = repetition(at: i + 1) > 0
                if repeats && group.ambiguous {
                    return "the repeated group \(String(String.UnicodeScalarView(p[group.start...i]))) holds a quantifier or an alternation, so it"
                }
                groups[groups.count - 1].ambiguous = groups[groups.count - 1].ambiguous || group.ambiguous || repeats
            case "|":
                groups[groups.count - 1].ambiguous = true
            case "*", "+", "?", "{":
                // `?` after `(` opens a group option, not a quantifier.
                if p[i] == "?" && i > 0 && p[i - 1] == "(" { break }
                if p[i] != "{" || repetition(at: i) > 0 { groups[groups.count - 1].ambiguous = true }
            default:
                break
            }
            i += 1
        }
        return nil
    }

    // MARK: hand-written matchers
    // Each returns the end of the match that the pattern's leftmost-first alternation finds at
    // `i`. These patterns match at every position (their classes cover every character), except
    // `words`, which skips whitespace.

    private typealias Text = UnsafeBufferPointer<Unicode.Scalar>

    @inline(__always) private static func isOther(_ s: Unicode.Scalar) -> Bool {
        !CharacterClasses.isWhitespace(s) && !CharacterClasses.isLetter(s) && !CharacterClasses.isNumber(s)
    }

    @inline(__always) private static func isNewline(_ s: Unicode.Scalar) -> Bool { s == "\r" || s == "\n" }

    @inline(__always) private static func run(_ t: Text, from start: Int, limit: Int = .max, while predicate: (Unicode.Scalar) -> Bool) -> Int {
        var j = start
        while j < t.count && j - start < limit && predicate(t[j]) { j += 1 }
        return j
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d`, optionally case-insensitive (Oniguruma folds "ſ" to "s").
    @inline(__always) private static func matchContraction(_ t: Text, at i: Int, ignoringCase: Bool) -> Int? {
        guard t[i] == "'", i + 1 < t.count else { return nil }
        func lower(_ s: Unicode.Scalar) -> Unicode.Scalar {
            guard ignoringCase else { return s }
            if s.value >= 0x41 && s.value <= 0x5A { return Unicode.Scalar(s.value + 0x20)! }
            return s == "\u{17F}" ? "s" : s
        }
        let a = lower(t[i + 1])
        switch a {
        case "s", "t", "m", "d": return i + 2
        default: break
        }
        guard i + 2 < t.count else { return nil }
        let b = lower(t[i + 2])
        switch (a, b) {
        case ("r", "e"), ("v", "e"), ("l", "l"): return i + 3
        default: return nil
        }
    }

    /// `\s+(?!\S)|\s+` at a whitespace scalar: a run of whitespace, less its last scalar when
    /// a non-space follows (that scalar then prefixes the next word).
    @inline(__always) private static func matchWhitespace(_ t: Text, at i: Int) -> Int {
        let end = run(t, from: i, while: CharacterClasses.isWhitespace)
        if end == t.count || end - i == 1 { return end }
        return end - 1
    }

    private static func matchGPT2(_ t: Text, at i: Int) -> Int {
        if let end = matchContraction(t, at: i, ignoringCase: false) { return end }
        let c = t[i]
        // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`
        let start = c == " " && i + 1 < t.count ? i + 1 : i
        let first = t[start]
        if CharacterClasses.isLetter(first) { return run(t, from: start + 1, while: CharacterClasses.isLetter) }
        if CharacterClasses.isNumber(first) { return run(t, from: start + 1, while: CharacterClasses.isNumber) }
        if isOther(first) { return run(t, from: start + 1, while: isOther) }
        return matchWhitespace(t, at: i)
    }

    private static func matchLlama3(_ t: Text, at i: Int, maxDigits: Int) -> Int {
        if let end = matchContraction(t, at: i, ignoringCase: true) { return end }
        let c = t[i]
        // `[^\r\n\p{L}\p{N}]?\p{L}+`
        if CharacterClasses.isLetter(c) { return run(t, from: i + 1, while: CharacterClasses.isLetter) }
        let isNumber = CharacterClasses.isNumber(c)
        if !isNumber && !isNewline(c) && i + 1 < t.count && CharacterClasses.isLetter(t[i + 1]) {
            return run(t, from: i + 2, while: CharacterClasses.isLetter)
        }
        // `\p{N}{1,3}` (Qwen2: `\p{N}`)
        if isNumber { return run(t, from: i, limit: maxDigits, while: CharacterClasses.isNumber) }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let start = c == " " && i + 1 < t.count ? i + 1 : i
        if isOther(t[start]) {
            let end = run(t, from: start + 1, while: isOther)
            return run(t, from: end, while: isNewline)
        }
        // `\s*[\r\n]+`: the whitespace run up to and including its last line break.
        let end = run(t, from: i, while: CharacterClasses.isWhitespace)
        var lastNewline = end - 1
        while lastNewline >= i && !isNewline(t[lastNewline]) { lastNewline -= 1 }
        if lastNewline >= i { return lastNewline + 1 }
        // `\s+(?!\S)|\s+`
        return matchWhitespace(t, at: i)
    }

    /// `\w+|[^\w\s]+`; returns `i` at whitespace (no match starts there).
    private static func matchWords(_ t: Text, at i: Int) -> Int {
        let c = t[i]
        if CharacterClasses.isWord(c) { return run(t, from: i + 1, while: CharacterClasses.isWord) }
        if CharacterClasses.isWhitespace(c) { return i }
        return run(t, from: i + 1) { !CharacterClasses.isWord($0) && !CharacterClasses.isWhitespace($0) }
    }
}
