/// The character classes of the Hugging Face tokenizers library's regular expressions
/// (\s, \p{L}, \p{N}, \w) and character predicates, with its Unicode version: HF's tables
/// are Unicode 16.0; the Swift runtime may know newer characters, which HF treats as
/// unassigned (neither letters nor numbers), so the classes stop at that version. The tests
/// compare \s, \p{L}, \p{N} and \w with the library's over every code point.
enum CharacterClasses {
    private static let letterFlag: UInt8 = 1, numberFlag: UInt8 = 2, whitespaceFlag: UInt8 = 4, wordFlag: UInt8 = 8

    private static let asciiFlags: [UInt8] = (0..<128).map { code in
        let c = UInt8(code)
        var flags: UInt8 = 0
        if (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) { flags |= letterFlag | wordFlag }
        if c >= 0x30 && c <= 0x39 { flags |= numberFlag | wordFlag }
        if c == 0x5F { flags |= wordFlag }
        if (c >= 0x09 && c <= 0x0D) || c == 0x20 { flags |= whitespaceFlag }
        return flags
    }

    /// Whether HF's Unicode tables know the scalar (assigned in Unicode 16.0 or earlier).
    @inline(__always) private static func isKnown(_ s: Unicode.Scalar) -> Bool {
        guard let age = s.properties.age else { return false }
        return age.major <= 16
    }

    /// `\s` (Oniguruma) and Rust's `char::is_whitespace`: the White_Space property.
    @inline(__always) static func isWhitespace(_ s: Unicode.Scalar) -> Bool {
        if s.value < 128 { return asciiFlags[Int(s.value)] & whitespaceFlag != 0 }
        return s.properties.isWhitespace
    }

    /// `\p{L}`: general category L (Lu, Ll, Lt, Lm, Lo).
    @inline(__always) static func isLetter(_ s: Unicode.Scalar) -> Bool {
        if s.value < 128 { return asciiFlags[Int(s.value)] & letterFlag != 0 }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return isKnown(s)
        default: return false
        }
    }

    /// `\p{N}` and Rust's `char::is_numeric`: general category N (Nd, Nl, No).
    @inline(__always) static func isNumber(_ s: Unicode.Scalar) -> Bool {
        if s.value < 128 { return asciiFlags[Int(s.value)] & numberFlag != 0 }
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return isKnown(s)
        default: return false
        }
    }

    /// `\w` of Rust's regex crate, which HF uses for the Whitespace pre-tokenizer and the
    /// single_word rule of added tokens: Alphabetic, marks, decimal digits, connector
    /// punctuation and the joiners (U+200C, U+200D).
    static func isWord(_ s: Unicode.Scalar) -> Bool {
        if s.value < 128 { return asciiFlags[Int(s.value)] & wordFlag != 0 }
        guard isKnown(s) else { return false }
        let properties = s.properties
        if properties.isAlphabetic || properties.isJoinControl { return true }
        switch properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }

    /// Rust's `char::is_alphanumeric`: Alphabetic or numeric.
    static func isAlphanumeric(_ s: Unicode.Scalar) -> Bool {
        if s.value < 128 { return asciiFlags[Int(s.value)] & (letterFlag | numberFlag) != 0 }
        return isKnown(s) && (s.properties.isAlphabetic || isNumber(s))
    }

    /// Punctuation as HF's Punctuation pre-tokenizer has it: ASCII punctuation or category P.
    static func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        if s.value < 128 {
            let c = s.value
            return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E)
        }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation: return isKnown(s)
        default: return false
        }
    }

    /// Marks (category M), which HF's StripAccents normalizer removes.
    static func isMark(_ s: Unicode.Scalar) -> Bool {
        guard s.value >= 0x300 else { return false }
        switch s.properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark: return true
        default: return false
        }
    }
}
