/// tokenizer.json's `normalizer`: rewrites text before pre-tokenization.
indirect enum Normalizer: Sendable {
    case nfc
    case lowercase
    case strip(left: Bool, right: Bool)
    case stripAccents
    case prepend([Unicode.Scalar])
    case replace(SplitPattern, with: [Unicode.Scalar])
    case sequence([Normalizer])

    func normalize(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        switch self {
        case .nfc:
            if text.allSatisfy({ $0.value < 0x300 }) { return text }  // nothing below U+0300 composes
            var view = String.UnicodeScalarView()
            view.append(contentsOf: text)
            return Array(String(decoding: String(view)._nfcCodeUnits, as: UTF8.self).unicodeScalars)
        case .lowercase:
            // Per scalar, as Rust's char::to_lowercase (no final-sigma context).
            var out: [Unicode.Scalar] = []
            out.reserveCapacity(text.count)
            for scalar in text {
                if scalar.value < 0x80 {
                    out.append(scalar.value >= 0x41 && scalar.value <= 0x5A ? Unicode.Scalar(scalar.value + 0x20)! : scalar)
                } else {
                    out.append(contentsOf: scalar.properties.lowercaseMapping.unicodeScalars)
                }
            }
            return out
        case let .strip(left, right):
            var lower = 0, upper = text.count
            if left { while lower < upper && CharacterClasses.isWhitespace(text[lower]) { lower += 1 } }
            if right { while upper > lower && CharacterClasses.isWhitespace(text[upper - 1]) { upper -= 1 } }
            return Array(text[lower..<upper])
        case .stripAccents:
            return text.filter { !CharacterClasses.isMark($0) }
        case let .prepend(prefix):
            return text.isEmpty ? text : prefix + text
        case let .replace(pattern, content):
            var out: [Unicode.Scalar] = []
            out.reserveCapacity(text.count)
            for span in pattern.spans(in: text) {
                if span.isMatch { out += content } else { out += text[span.range] }
            }
            return out
        case let .sequence(normalizers):
            return normalizers.reduce(text) { $1.normalize($0) }
        }
    }

    static func parse(_ json: JSON, path: String, field: String = "normalizer") throws -> Normalizer {
        let type = json["type"]?.string ?? ""
        switch type {
        case "NFC": return .nfc
        case "Lowercase": return .lowercase
        case "Strip": return .strip(left: json["strip_left"]?.bool ?? true, right: json["strip_right"]?.bool ?? true)
        case "StripAccents": return .stripAccents
        case "Prepend":
            guard let prefix = json["prepend"]?.string else {
                throw GPTQError.badConfig(field: field + ".prepend", path: path, reason: "missing string")
            }
            return .prepend(Array(prefix.unicodeScalars))
        case "Replace":
            guard let content = json["content"]?.string else {
                throw GPTQError.badConfig(field: field + ".content", path: path, reason: "missing string")
            }
            let pattern = try SplitPattern.parse(json["pattern"], field: field + ".pattern", path: path)
            return .replace(pattern, with: Array(content.unicodeScalars))
        case "Sequence":
            guard let items = json["normalizers"]?.array else {
                throw GPTQError.badConfig(field: field + ".normalizers", path: path, reason: "missing array")
            }
            return .sequence(try items.enumerated().map { try parse($1, path: path, field: "\(field).normalizers[\($0)]") })
        default:
            throw GPTQError.unsupported("\(path): \(field): normalizer type '\(type)'")
        }
    }
}
