/// Decodes generated ids one at a time into text, giving back only complete text: while the
/// ids so far end inside a multi-byte character (the decoded text ends with U+FFFD), it is
/// held back. A few previous ids are kept as context, so that decoders which treat the first
/// token specially (Metaspace, Strip) give the text that decoding all ids at once gives.
/// Same algorithm as the HF library's DecodeStream.
public struct TokenStreamDecoder: Sendable {
    public let tokenizer: Tokenizer
    public let skipSpecialTokens: Bool
    /// The context ids and the ids not yet turned into text.
    private var ids: [Int32] = []
    /// The text of `ids[..<prefixIndex]`, already given back.
    private var prefix = ""
    private var prefixIndex = 0

    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// Adds one id; returns the new complete text ("" while a character is incomplete).
    public mutating func push(_ id: Int32) -> String {
        if prefix.isEmpty && !ids.isEmpty {
            let text = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
            if !text.hasSuffix("\u{FFFD}") {
                prefix = text
                prefixIndex = ids.count
            }
        }
        ids.append(id)
        let text = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        guard text.utf8.count > prefix.utf8.count, !text.hasSuffix("\u{FFFD}") else { return "" }
        let newText = Self.text(text, after: prefix)
        let newPrefixIndex = ids.count - prefixIndex
        ids.removeFirst(prefixIndex)
        prefix = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        prefixIndex = newPrefixIndex
        return newText
    }

    /// The text still held back (an incomplete character decodes as U+FFFD), for the end of a stream.
    public mutating func finish() -> String {
        let text = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        let rest = text.utf8.count > prefix.utf8.count ? Self.text(text, after: prefix) : ""
        ids.removeAll()
        prefix = ""
        prefixIndex = 0
        return rest
    }

    /// `text` less `prefix`. Decoders keep earlier text unchanged as ids are added, so the
    /// prefix is a prefix of the text; should one not be, only the text past the common prefix is new.
    private static func text(_ text: String, after prefix: String) -> String {
        let a = Array(text.utf8), b = Array(prefix.utf8)
        var common = 0
        while common < b.count && common < a.count && a[common] == b[common] { common += 1 }
        return String(decoding: a[common...], as: UTF8.self)
    }
}
