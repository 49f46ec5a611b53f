/// GPT-2's reversible map between bytes and printable characters: byte-level BPE vocabularies
/// spell every byte as one visible character (space is "Ġ", newline "Ċ").
enum ByteLevelAlphabet {
    /// The character of each byte value.
    static let characters: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: "\0", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            if printable {
                table[b] = Unicode.Scalar(UInt32(b))!
            } else {
                table[b] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    /// The byte of each character of the alphabet.
    static let bytes: [Unicode.Scalar: UInt8] = {
        var map: [Unicode.Scalar: UInt8] = [:]
        for (b, c) in characters.enumerated() { map[c] = UInt8(b) }
        return map
    }()

    /// Spells the UTF-8 bytes of `text` in the alphabet.
    static func encode(_ text: some Sequence<Unicode.Scalar>) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        for scalar in text {
            if scalar.value < 0x80 {
                out.append(characters[Int(scalar.value)])
            } else {
                for byte in UTF8.encode(scalar)! { out.append(characters[Int(byte)]) }
            }
        }
        return out
    }
}
