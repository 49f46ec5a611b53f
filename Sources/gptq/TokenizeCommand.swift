import ArgumentParser
import GPTQKit

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Encode text to token ids, or decode ids to text, with a model's tokenizer.json.",
        discussion: """
            Prints the ids of TEXT (or of --file), one line, space-separated; --count prints only their \
            number and the encoding speed. --decode reads ids instead and prints their text.
            """
    )

    @Option(help: "The folder with tokenizer.json (and tokenizer_config.json).")
    var model: String

    @Argument(help: "The text to encode (or the ids to decode, with --decode).")
    var text: String?

    @Option(help: "Read the text from this file instead.")
    var file: String?

    @Flag(help: "Add the special tokens the tokenizer adds around a sequence (e.g. BOS).")
    var special = false

    @Flag(help: "Print only the number of ids and the time encoding took.")
    var count = false

    @Flag(help: "Print the ids as a JSON array.")
    var json = false

    @Flag(help: "Decode space-separated ids to text.")
    var decode = false

    func validate() throws {
        guard (text == nil) != (file == nil) else { throw ValidationError("give either TEXT or --file") }
    }

    func run() throws {
        let tokenizer = try Tokenizer(folder: model)
        let input = try file.map { try FileIO.readText(path: $0) } ?? text ?? ""
        if decode {
            let ids = try input.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "," }).map { word -> Int32 in
                guard let id = Int32(word) else { throw ValidationError("not a token id: '\(word)'") }
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
        } else if json {
            print(JSON.array(ids.map { .number(Double($0)) }).serialized(indent: 0))
        } else {
            print(ids.map(String.init).joined(separator: " "))
        }
    }
}
