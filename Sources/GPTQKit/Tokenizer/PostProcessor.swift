/// tokenizer.json's `post_processor`, for a single sequence: the special tokens that
/// `encode(_:addSpecialTokens: true)` puts around the text's ids.
struct PostProcessor: Sendable {
    /// Ids before and after the sequence.
    var prefix: [Int32] = []
    var suffix: [Int32] = []

    func apply(_ ids: [Int32]) -> [Int32] { prefix + ids + suffix }

    /// A processor that adds nothing.
    static let none = PostProcessor()

    static func parse(_ json: JSON, path: String, field: String = "post_processor") throws -> PostProcessor {
        let type = json["type"]?.string ?? ""
        switch type {
        case "ByteLevel":
            return .none  // it only adjusts offsets
        case "TemplateProcessing":
            return try template(json, path: path, field: field)
        case "BertProcessing", "RobertaProcessing":
            // {"cls": ["[CLS]", 101], "sep": ["[SEP]", 102]}: [CLS] A [SEP]
            guard let cls = json["cls"]?[1]?.tokenId, let sep = json["sep"]?[1]?.tokenId else {
                throw GPTQError.badConfig(field: field + ".cls/sep", path: path, reason: "expected [token, id] pairs")
            }
            return PostProcessor(prefix: [cls], suffix: [sep])
        case "Sequence":
            guard let items = json["processors"]?.array else {
                throw GPTQError.badConfig(field: field + ".processors", path: path, reason: "missing array")
            }
            var combined = PostProcessor()
            for (i, item) in items.enumerated() {
                let step = try parse(item, path: path, field: "\(field).processors[\(i)]")
                combined = PostProcessor(prefix: step.prefix + combined.prefix, suffix: combined.suffix + step.suffix)
            }
            return combined
        default:
            throw GPTQError.unsupported("\(path): \(field): post-processor type '\(type)'")
        }
    }

    /// TemplateProcessing's `single` template: special tokens around the `$A` sequence.
    private static func template(_ json: JSON, path: String, field: String) throws -> PostProcessor {
        guard let single = json["single"]?.array else {
            throw GPTQError.badConfig(field: field + ".single", path: path, reason: "missing array")
        }
        var result = PostProcessor()
        var seenSequence = false
        for (i, piece) in single.enumerated() {
            if piece["Sequence"] != nil {
                seenSequence = true
            } else if let name = piece["SpecialToken"]?["id"]?.string {
                guard let items = json["special_tokens"]?[name]?["ids"]?.array else {
                    throw GPTQError.badConfig(field: "\(field).special_tokens", path: path, reason: "no ids for '\(name)'")
                }
                let ids = items.compactMap(\.tokenId)
                guard ids.count == items.count else {
                    throw GPTQError.badConfig(field: "\(field).special_tokens.\(name).ids", path: path, reason: "expected token ids (0 to \(Int32.max))")
                }
                if seenSequence { result.suffix += ids } else { result.prefix += ids }
            } else {
                throw GPTQError.badConfig(field: "\(field).single[\(i)]", path: path, reason: "expected Sequence or SpecialToken")
            }
        }
        return result
    }
}
