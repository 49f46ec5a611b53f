/// One entry of tokenizer.json's `added_tokens`.
struct AddedToken: Sendable {
    var id: Int32
    var content: String
    var singleWord: Bool
    var leftStrip: Bool
    var rightStrip: Bool
    var normalized: Bool
    var special: Bool
}

/// A segment of input after added tokens have been found in it.
enum AddedTokenSegment {
    case token(Int32)
    case text(TextPiece)
}

/// Finds added tokens in text as HF does: leftmost-longest literal matches, non-overlapping,
/// with the single_word / lstrip / rstrip rules applied to each match afterwards.
struct AddedTokenMatcher: Sendable {
    private struct Pattern {
        var scalars: [Unicode.Scalar]
        var token: AddedToken
    }

    /// Patterns by first scalar, longest first.
    private let patternsByFirst: [Unicode.Scalar: [Pattern]]

    init(tokens: [AddedToken], contents: [[Unicode.Scalar]]) {
        var byFirst: [Unicode.Scalar: [Pattern]] = [:]
        for (token, scalars) in zip(tokens, contents) {
            guard let first = scalars.first else { continue }
            byFirst[first, default: []].append(Pattern(scalars: scalars, token: token))
        }
        patternsByFirst = byFirst.mapValues { $0.sorted { $0.scalars.count > $1.scalars.count } }
    }

    /// Splits a piece into added tokens and the text between them (empty text is dropped).
    func split(_ piece: TextPiece) -> [AddedTokenSegment] {
        let text = piece.scalars
        if patternsByFirst.isEmpty || text.isEmpty { return text.isEmpty ? [] : [.text(piece)] }
        var segments: [AddedTokenSegment] = []
        var textStart = 0  // start of the text not yet emitted
        var i = 0
        func emitText(upTo end: Int) {
            if textStart < end {
                segments.append(.text(TextPiece(scalars: Array(text[textStart..<end]), startsText: piece.startsText && textStart == 0)))
            }
        }
        while i < text.count {
            guard let candidates = patternsByFirst[text[i]],
                  let pattern = candidates.first(where: { i + $0.scalars.count <= text.count && text[i..<i + $0.scalars.count].elementsEqual($0.scalars) })
            else {
                i += 1
                continue
            }
            var start = i
            var stop = i + pattern.scalars.count
            i = stop  // matches never overlap, even when discarded below
            let token = pattern.token
            if token.singleWord {
                let wordBefore = start > 0 && CharacterClasses.isWord(text[start - 1])
                let wordAfter = stop < text.count && CharacterClasses.isWord(text[stop])
                if wordBefore || wordAfter { continue }
            }
            if token.leftStrip {
                while start > textStart && CharacterClasses.isWhitespace(text[start - 1]) { start -= 1 }
            }
            if token.rightStrip {
                // HF's matcher goes on from the unstripped end; only the text segments move.
                while stop < text.count && CharacterClasses.isWhitespace(text[stop]) { stop += 1 }
            }
            emitText(upTo: start)
            segments.append(.token(token.id))
            textStart = stop
        }
        emitText(upTo: text.count)
        return segments
    }
}
