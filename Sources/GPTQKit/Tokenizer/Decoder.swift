/// tokenizer.json's `decoder`: turns vocabulary strings back into text. Each step maps the
/// list of token strings to a new list (HF's `decode_chain`); the result is their concatenation.
indirect enum Decoder: Sendable {
    case byteLevel
    case byteFallback
    case metaspace(replacement: Unicode.Scalar, prepend: MetaspacePrependScheme)
    case replace(SplitPattern, with: [Unicode.Scalar])
    case fuse
    case strip(content: Unicode.Scalar, start: Int, stop: Int)
    case bpeSuffix(String)
    case sequence([Decoder])

    func decode(_ tokens: [String]) -> String {
        decodeChain(tokens).joined()
    }

    func decodeChain(_ tokens: [String]) -> [String] {
        switch self {
        case .byteLevel:
            // One string of all bytes; a token with a character outside the alphabet keeps its own UTF-8.
            var bytes: [UInt8] = []
            for token in tokens {
                let start = bytes.count
                for scalar in token.unicodeScalars {
                    guard let byte = ByteLevelAlphabet.bytes[scalar] else {
                        bytes.removeSubrange(start...)
                        bytes += token.utf8
                        break
                    }
                    bytes.append(byte)
                }
            }
            return [String(decoding: bytes, as: UTF8.self)]
        case .byteFallback:
            var out: [String] = []
            var pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let text = String(validating: pending, as: UTF8.self) {
                    out.append(text)
                } else {
                    // HF gives one replacement character per byte of an invalid run.
                    out += Array(repeating: "\u{FFFD}", count: pending.count)
                }
                pending.removeAll()
            }
            for token in tokens {
                if let byte = ByteFallback.byte(of: token) {
                    pending.append(byte)
                } else {
                    flush()
                    out.append(token)
                }
            }
            flush()
            return out
        case let .metaspace(replacement, prepend):
            return tokens.enumerated().map { i, token in
                var view = String.UnicodeScalarView()
                for scalar in token.unicodeScalars {
                    if scalar != replacement {
                        view.append(scalar)
                    } else if i > 0 || prepend == .never {
                        view.append(" ")
                    }
                }
                return String(view)
            }
        case let .replace(pattern, content):
            return tokens.map { token in
                String(String.UnicodeScalarView(Normalizer.replace(pattern, with: content).normalize(Array(token.unicodeScalars))))
            }
        case .fuse:
            return [tokens.joined()]
        case let .strip(content, start, stop):
            return tokens.map { token in
                let scalars = Array(token.unicodeScalars)
                var lower = 0, upper = scalars.count
                while lower < min(start, scalars.count) && scalars[lower] == content { lower += 1 }
                var stripped = 0
                while stripped < stop && upper > lower && scalars[upper - 1] == content {
                    upper -= 1
                    stripped += 1
                }
                return String(String.UnicodeScalarView(scalars[lower..<upper]))
            }
        case let .bpeSuffix(suffix):
            return tokens.enumerated().map { i, token in
                token.replacing(suffix, with: i == tokens.count - 1 ? "" : " ")
            }
        case let .sequence(decoders):
            return decoders.reduce(tokens) { $1.decodeChain($0) }
        }
    }

    static func parse(_ json: JSON, path: String, field: String = "decoder") throws -> Decoder {
        let type = json["type"]?.string ?? ""
        func char(_ key: String, default value: String) throws -> Unicode.Scalar {
            let text = json[key]?.string ?? value
            guard text.unicodeScalars.count == 1 else {
                throw GPTQError.badConfig(field: "\(field).\(key)", path: path, reason: "expected one character, got '\(text)'")
            }
            return text.unicodeScalars.first!
        }
        switch type {
        case "ByteLevel": return .byteLevel
        case "ByteFallback": return .byteFallback
        case "Metaspace":
            return .metaspace(replacement: try char("replacement", default: "▁"),
                              prepend: try MetaspacePrependScheme.parse(json, field: field, path: path))
        case "Replace":
            guard let content = json["content"]?.string else {
                throw GPTQError.badConfig(field: field + ".content", path: path, reason: "missing string")
            }
            return .replace(try SplitPattern.parse(json["pattern"], field: field + ".pattern", path: path), with: Array(content.unicodeScalars))
        case "Fuse": return .fuse
        case "Strip":
            return .strip(content: try char("content", default: " "), start: json["start"]?.int ?? 0, stop: json["stop"]?.int ?? 0)
        case "BPEDecoder": return .bpeSuffix(json["suffix"]?.string ?? "</w>")
        case "Sequence":
            guard let items = json["decoders"]?.array else {
                throw GPTQError.badConfig(field: field + ".decoders", path: path, reason: "missing array")
            }
            return .sequence(try items.enumerated().map { try parse($1, path: path, field: "\(field).decoders[\($0)]") })
        default:
            throw GPTQError.unsupported("\(path): \(field): decoder type '\(type)'")
        }
    }
}

/// SentencePiece's byte tokens: "<0x0A>" stands for the byte 0x0A.
enum ByteFallback {
    static func tokenName(_ byte: UInt8) -> String {
        let hex = String(byte, radix: 16, uppercase: true)
        return "<0x" + (hex.count == 1 ? "0" + hex : hex) + ">"
    }

    /// The byte a token stands for, or nil if it is not a byte token (HF accepts either case of hex digit).
    static func byte(of token: String) -> UInt8? {
        let utf8 = token.utf8
        guard utf8.count == 6, token.hasPrefix("<0x"), token.hasSuffix(">") else { return nil }
        return UInt8(token.dropFirst(3).prefix(2), radix: 16)
    }
}
