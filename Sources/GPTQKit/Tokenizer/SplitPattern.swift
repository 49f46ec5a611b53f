/// A stretch of text as a pattern sees it: a match, or the text between two matches.
struct PatternSpan: Equatable {
    var range: Range<Int>
    var isMatch: Bool
}

/// What a Split-like pre-tokenizer or a Replace normalizer looks for in text.
/// `spans(in:)` returns spans covering the whole text, as HF's `Pattern::find_matches` does.
enum SplitPattern: Sendable {
    /// Every scalar for which the predicate holds is a match of its own.
    case scalars(@Sendable (Unicode.Scalar) -> Bool)
    /// Non-overlapping occurrences of a literal string, left to right.
    case literal([Unicode.Scalar])
    /// A regular expression.
    case regex(RegexMatcher)

    func spans(in text: [Unicode.Scalar]) -> [PatternSpan] {
        if text.isEmpty { return [PatternSpan(range: 0..<0, isMatch: false)] }
        var spans: [PatternSpan] = []
        var previousEnd = 0
        func add(_ match: Range<Int>) {
            if previousEnd < match.lowerBound { spans.append(PatternSpan(range: previousEnd..<match.lowerBound, isMatch: false)) }
            spans.append(PatternSpan(range: match, isMatch: true))
            previousEnd = match.upperBound
        }
        switch self {
        case let .scalars(predicate):
            for (i, scalar) in text.enumerated() where predicate(scalar) { add(i..<i + 1) }
        case let .literal(needle):
            // An empty needle matches nowhere: HF escapes it into a regex that only finds empty matches.
            guard let first = needle.first else { break }
            var i = 0
            while i + needle.count <= text.count {
                if text[i] == first && text[i..<i + needle.count].elementsEqual(needle) {
                    add(i..<i + needle.count)
                    i += needle.count
                } else {
                    i += 1
                }
            }
        case let .regex(matcher):
            matcher.forEachMatch(in: text) { add($0) }
        }
        if previousEnd < text.count { spans.append(PatternSpan(range: previousEnd..<text.count, isMatch: false)) }
        return spans
    }

    /// Reads a `{"String": ...}` or `{"Regex": ...}` pattern object of tokenizer.json.
    static func parse(_ json: JSON?, field: String, path: String) throws -> SplitPattern {
        if let literal = json?["String"]?.string { return .literal(Array(literal.unicodeScalars)) }
        if let regex = json?["Regex"]?.string { return .regex(try RegexMatcher(pattern: regex, field: field, path: path)) }
        throw GPTQError.badConfig(field: field, path: path, reason: "expected {\"String\": ...} or {\"Regex\": ...}")
    }
}

/// How a split treats the matches of its pattern (HF's `SplitDelimiterBehavior`).
enum SplitBehavior: String, Sendable {
    case removed = "Removed"
    case isolated = "Isolated"
    case mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext"
    case contiguous = "Contiguous"

    /// The non-empty ranges of text the split keeps, in order.
    func apply(to spans: [PatternSpan]) -> [Range<Int>] {
        var kept: [(range: Range<Int>, removed: Bool)] = []
        kept.reserveCapacity(spans.count)
        switch self {
        case .isolated:
            kept = spans.map { ($0.range, false) }
        case .removed:
            kept = spans.map { ($0.range, $0.isMatch) }
        case .contiguous:
            var previousMatch = false
            for span in spans {
                if span.isMatch == previousMatch, let last = kept.indices.last {
                    kept[last].range = kept[last].range.lowerBound..<span.range.upperBound
                } else {
                    kept.append((span.range, false))
                }
                previousMatch = span.isMatch
            }
        case .mergedWithPrevious:
            var previousMatch = false
            for span in spans {
                if span.isMatch && !previousMatch, let last = kept.indices.last {
                    kept[last].range = kept[last].range.lowerBound..<span.range.upperBound
                } else {
                    kept.append((span.range, false))
                }
                previousMatch = span.isMatch
            }
        case .mergedWithNext:
            var previousMatch = false
            for span in spans.reversed() {
                if span.isMatch && !previousMatch, let last = kept.indices.last {
                    kept[last].range = span.range.lowerBound..<kept[last].range.upperBound
                } else {
                    kept.append((span.range, false))
                }
                previousMatch = span.isMatch
            }
            kept.reverse()
        }
        return kept.compactMap { $0.removed || $0.range.isEmpty ? nil : $0.range }
    }
}

extension [PatternSpan] {
    /// The spans with matches and non-matches swapped (Split's `invert`).
    func inverted() -> [PatternSpan] { map { PatternSpan(range: $0.range, isMatch: !$0.isMatch) } }
}
