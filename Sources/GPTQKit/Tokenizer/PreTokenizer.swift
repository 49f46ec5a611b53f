/// A piece of text on its way to the model. `startsText` records whether the piece begins at
/// the very start of the input, which Metaspace's "first" prepend scheme asks.
struct TextPiece {
    var scalars: [Unicode.Scalar]
    var startsText: Bool
}

/// tokenizer.json's `pre_tokenizer`: splits normalized text into the words the model encodes.
indirect enum PreTokenizer: Sendable {
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case split(SplitPattern, SplitBehavior, invert: Bool)
    case digits(individual: Bool)
    case metaspace(replacement: Unicode.Scalar, prepend: MetaspacePrependScheme, split: Bool)
    case whitespace
    case whitespaceSplit
    case punctuation(SplitBehavior)
    case sequence([PreTokenizer])

    func preTokenize(_ pieces: [TextPiece]) -> [TextPiece] {
        switch self {
        case let .byteLevel(addPrefixSpace, useRegex):
            var out: [TextPiece] = []
            out.reserveCapacity(pieces.count)
            for var piece in pieces {
                if addPrefixSpace && piece.scalars.first != " " { piece.scalars.insert(" ", at: 0) }
                let words = useRegex ? Self.split(piece, .regex(RegexMatcher(.gpt2)), .isolated) : [piece]
                for word in words {
                    out.append(TextPiece(scalars: ByteLevelAlphabet.encode(word.scalars), startsText: word.startsText))
                }
            }
            return out
        case let .split(pattern, behavior, invert):
            return pieces.flatMap { Self.split($0, pattern, behavior, invert: invert) }
        case let .digits(individual):
            let pattern = SplitPattern.scalars { CharacterClasses.isNumber($0) }
            return pieces.flatMap { Self.split($0, pattern, individual ? .isolated : .contiguous) }
        case let .metaspace(replacement, prepend, split):
            return pieces.flatMap { piece -> [TextPiece] in
                var piece = piece
                piece.scalars = piece.scalars.map { $0 == " " ? replacement : $0 }
                let wantsPrefix = prepend == .always || (prepend == .first && piece.startsText)
                if wantsPrefix && piece.scalars.first != replacement { piece.scalars.insert(replacement, at: 0) }
                return split ? Self.split(piece, .scalars { $0 == replacement }, .mergedWithNext) : [piece]
            }
        case .whitespace:
            return pieces.flatMap { Self.split($0, .regex(RegexMatcher(.words)), .removed, invert: true) }
        case .whitespaceSplit:
            return pieces.flatMap { Self.split($0, .scalars(CharacterClasses.isWhitespace), .removed) }
        case let .punctuation(behavior):
            return pieces.flatMap { Self.split($0, .scalars(CharacterClasses.isPunctuation), behavior) }
        case let .sequence(preTokenizers):
            return preTokenizers.reduce(pieces) { $1.preTokenize($0) }
        }
    }

    /// Splits one piece; empty results are dropped, as HF drops them.
    private static func split(_ piece: TextPiece, _ pattern: SplitPattern, _ behavior: SplitBehavior, invert: Bool = false) -> [TextPiece] {
        var spans = pattern.spans(in: piece.scalars)
        if invert { spans = spans.inverted() }
        return behavior.apply(to: spans).map { range in
            TextPiece(scalars: Array(piece.scalars[range]), startsText: piece.startsText && range.lowerBound == 0)
        }
    }

    static func parse(_ json: JSON, path: String, field: String = "pre_tokenizer") throws -> PreTokenizer {
        let type = json["type"]?.string ?? ""
        func behavior(_ key: String) throws -> SplitBehavior {
            let name = json[key]?.string ?? ""
            guard let behavior = SplitBehavior(rawValue: name) else {
                throw GPTQError.badConfig(field: "\(field).\(key)", path: path, reason: "unknown split behavior '\(name)'")
            }
            return behavior
        }
        switch type {
        case "ByteLevel":
            return .byteLevel(addPrefixSpace: json["add_prefix_space"]?.bool ?? true, useRegex: json["use_regex"]?.bool ?? true)
        case "Split":
            let pattern = try SplitPattern.parse(json["pattern"], field: field + ".pattern", path: path)
            return .split(pattern, try behavior("behavior"), invert: json["invert"]?.bool ?? false)
        case "Digits":
            return .digits(individual: json["individual_digits"]?.bool ?? false)
        case "Metaspace":
            let replacement = json["replacement"]?.string ?? "▁"
            guard replacement.unicodeScalars.count == 1, let scalar = replacement.unicodeScalars.first else {
                throw GPTQError.badConfig(field: field + ".replacement", path: path, reason: "expected one character, got '\(replacement)'")
            }
            let scheme = try MetaspacePrependScheme.parse(json, field: field, path: path)
            return .metaspace(replacement: scalar, prepend: scheme, split: json["split"]?.bool ?? true)
        case "Whitespace": return .whitespace
        case "WhitespaceSplit": return .whitespaceSplit
        case "Punctuation":
            return .punctuation(json["behavior"] == nil ? .isolated : try behavior("behavior"))
        case "Sequence":
            guard let items = json["pretokenizers"]?.array else {
                throw GPTQError.badConfig(field: field + ".pretokenizers", path: path, reason: "missing array")
            }
            return .sequence(try items.enumerated().map { try parse($1, path: path, field: "\(field).pretokenizers[\($0)]") })
        default:
            throw GPTQError.unsupported("\(path): \(field): pre-tokenizer type '\(type)'")
        }
    }
}

/// When Metaspace puts its replacement character before a piece.
enum MetaspacePrependScheme: String, Sendable {
    case always, first, never

    /// Reads `prepend_scheme`, or the older `add_prefix_space` flag.
    static func parse(_ json: JSON, field: String, path: String) throws -> MetaspacePrependScheme {
        if let name = json["prepend_scheme"]?.string {
            guard let scheme = MetaspacePrependScheme(rawValue: name) else {
                throw GPTQError.badConfig(field: field + ".prepend_scheme", path: path, reason: "unknown scheme '\(name)'")
            }
            return scheme
        }
        return json["add_prefix_space"]?.bool ?? true ? .always : .never
    }
}
