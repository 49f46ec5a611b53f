import ArgumentParser
import GPTQKit

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Encode text to token ids, or decode ids to text, with a model's tokenizer.json.",
        discussion: """
            Prints the ids of --text FILE (or of an inline TEXT) on one line as a JSON array; --plain \
            prints them space-separated, --count only their number and the encoding speed. --decode \
            reads ids instead and prints their text.
            """
    )

    @Option(parsing: .unconditional, help: "The folder with tokenizer.json (and tokenizer_config.json).")
    var model: String

    @Argument(help: "Text to encode (or ids to decode, with --decode) given inline instead of --text.")
    var inline: String?

    @Option(name: [.customLong("text"), .customLong("file")], parsing: .unconditional, help: "The file whose text to encode (or whose ids to decode).")
    var file: String?

    @Flag(help: "Add the special tokens the tokenizer adds around a sequence (e.g. BOS).")
    var special = false

    @Flag(help: "Print only the number of ids and the time encoding took.")
    var count = false

    @Flag(help: "Print the ids space-separated instead of as a JSON array.")
    var plain = false

    @Flag(help: "Decode space-separated ids to text.")
    var decode = false

    func validate() throws {
        guard (inline == nil) != (file == nil) else { throw ValidationError("give either --text FILE or an inline TEXT") }
    }

    func run() throws {
        let tokenizer = try Tokenizer(folder: model)
        let input = try file.map { try FileIO.readText(path: $0) } ?? inline ?? ""
        if decode {
            let ids = try input.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "," }).map { word -> Int32 in
                guard let id = Int32(word) else { throw ValidationError("not a token id: '\(word)'") }
                // decode() skips ids it does not know; asked for by hand, that would hide a typo.
                guard tokenizer.token(for: id) != nil else { throw ValidationError("token id \(id) is not in the vocabulary") }
                return id
            }
            print(tokenizer.decode(ids))
            return
        }
        let clock = ContinuousClock()
        var ids: [Int32] = []
        let seconds = clock.measure { ids = tokenizer.encode(input, addSpecialTokens: special) }.seconds
        if count {
            let megabytes = Double(input.utf8.count) / 1e6
            print("\(ids.count) tokens from \(input.unicodeScalars.count) characters (\(fixed(megabytes, 2)) MB) in \(fixed(seconds, 3)) s = \(fixed(megabytes / seconds, 2)) MB/s")
        } else if plain {
            print(ids.map(String.init).joined(separator: " "))
        } else {
            print(JSON.array(ids.map { .number(Double($0)) }).serialized(indent: 0))
        }
    }
}
