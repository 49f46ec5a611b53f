import Testing
@testable import GPTQKit

/// Checks the tokenizer against the HF tokenizers library's outputs committed under
/// Tests/Fixtures/tokenizers (made by scripts/fixtures/make_tokenizer_fixtures.py).
@Suite struct TokenizerTests {
    static let styles = ["smollm2", "spm-llama2", "spm-unk", "spm-metaspace", "llama3", "qwen2", "o200k-regex", "misc-pieces", "bpe-suffix"]

    static func folder(_ style: String) -> String { Fixtures.path("tokenizers/" + style) }

    static func readIds(_ path: String) throws -> [Int32] {
        let bytes = try FileIO.readAll(path: path)
        return stride(from: 0, to: bytes.count, by: 4).map { (i: Int) -> Int32 in
            var value: UInt32 = 0
            for k in 0..<4 { value |= UInt32(bytes[i + k]) << (8 * UInt32(k)) }
            return Int32(bitPattern: value)
        }
    }

    static func ids(_ json: JSON?) -> [Int32] { (json?.array ?? []).compactMap { $0.int.map(Int32.init) } }

    static let wikitext: String = try! FileIO.readText(path: Fixtures.path("data/wikitext2-test.txt"))

    @Test(arguments: styles) func edgeCasesMatchHF(style: String) throws {
        let tokenizer = try Tokenizer(folder: Self.folder(style))
        let fixture = try JSON.read(path: Self.folder(style) + "/cases.json")
        #expect(tokenizer.vocabSize == fixture["vocab_size"]?.int)
        let cases = try #require(fixture["cases"]?.array)
        #expect(cases.count > 50)
        for entry in cases {
            let text = try #require(entry["text"]?.string)
            let ids = Self.ids(entry["ids"])
            #expect(tokenizer.encode(text) == ids, "encode \(style): \(text.debugDescription)")
            #expect(tokenizer.encode(text, addSpecialTokens: true) == Self.ids(entry["ids_with_special"]),
                    "encode with special tokens \(style): \(text.debugDescription)")
            #expect(tokenizer.decode(ids) == entry["decoded"]?.string, "decode \(style): \(text.debugDescription)")
            #expect(tokenizer.decode(ids, skipSpecialTokens: true) == entry["decoded_skipping_special"]?.string,
                    "decode skipping special tokens \(style): \(text.debugDescription)")
            var stream = TokenStreamDecoder(tokenizer: tokenizer)
            let chunks = ids.map { stream.push($0) }
            let expected = (entry["stream"]?.array ?? []).map { $0.string ?? "" }
            #expect(chunks == expected, "stream \(style): \(text.debugDescription)")
        }
    }

    @Test(arguments: styles) func tokensAndIdsMatchHF(style: String) throws {
        let tokenizer = try Tokenizer(folder: Self.folder(style))
        let fixture = try JSON.read(path: Self.folder(style) + "/cases.json")
        for probe in fixture["id_to_token"]?.array ?? [] {
            let id = Int32(try #require(probe[0]?.int))
            let token = probe[1]?.string
            #expect(tokenizer.token(for: id) == token)
            // HF reads normalized added tokens back normalized, and has no id for that form.
            if let token { #expect(tokenizer.id(for: token) == probe[2]?.int.map(Int32.init)) }
        }
        #expect(tokenizer.token(for: -1) == nil)
    }

    @Test func wholeWikitextMatchesHFWithSmolLM2() throws {
        let tokenizer = try Tokenizer(folder: Self.folder("smollm2"))
        let expected = try Self.readIds(Self.folder("smollm2") + "/wikitext2-test.ids.bin")
        let ids = tokenizer.encode(Self.wikitext)
        #expect(ids.count == expected.count)
        #expect(ids == expected)
        #expect(tokenizer.decode(ids) == Self.wikitext)
    }

    /// `gptq tokenize --text FILE` prints HF's ids for the whole wikitext file as one JSON line.
    @Test func theTokenizeCommandPrintsTheIdsAsJSON() throws {
        let binary = try #require(CommandLineTool.path("gptq"))
        let expected = try Self.readIds(Self.folder("smollm2") + "/wikitext2-test.ids.bin")
        let run = try CommandLineTool.run(binary, ["tokenize", "--model", Self.folder("smollm2"), "--text", Fixtures.path("data/wikitext2-test.txt")])
        #expect(run.status == 0)
        #expect(run.standardOutput.filter { $0 == "\n" }.count == 1)
        #expect(Self.ids(try JSON.parse(run.standardOutput)) == expected)
        let missing = try CommandLineTool.run(binary, ["tokenize", "--model", Self.folder("smollm2")])
        #expect(missing.status != 0 && missing.standardError.contains("give either --text FILE or an inline TEXT"))
    }

    /// The folder scripts/fetch-model.sh converts (with `gptq convert-gguf`) tokenizes as HF does.
    @Test(.enabled(if: RealModel.folder != nil)) func fetchedModelTokenizesWikitextAsHF() throws {
        let tokenizer = try Tokenizer(folder: try #require(RealModel.folder))
        let expected = try Self.readIds(Self.folder("smollm2") + "/wikitext2-test.ids.bin")
        #expect(tokenizer.encode(Self.wikitext) == expected)
        #expect(tokenizer.encode("Hi", addSpecialTokens: true) == tokenizer.encode("Hi"))  // add_bos_token is false
    }

    @Test(arguments: styles.dropFirst()) func wikitextHeadMatchesHF(style: String) throws {
        let tokenizer = try Tokenizer(folder: Self.folder(style))
        let expected = try Self.readIds(Self.folder(style) + "/wikitext2-head.ids.bin")
        // The script encodes the first 100,000 characters (Python str: Unicode scalars).
        let head = String(String.UnicodeScalarView(Self.wikitext.unicodeScalars.prefix(100_000)))
        let ids = tokenizer.encode(head)
        #expect(ids.count == expected.count)
        if let i = ids.indices.first(where: { $0 >= expected.count || ids[$0] != expected[$0] }) {
            let context = Array(expected[max(0, i - 6)..<min(expected.count, i + 6)])
            Issue.record("\(style): first difference at id \(i), near \(tokenizer.decode(context).debugDescription)")
        }
    }

    @Test func streamingReassemblesTheWholeText() throws {
        let tokenizer = try Tokenizer(folder: Self.folder("spm-llama2"))
        let text = "Ünïcödé 😀👍🏽 日本語 and <s> bytes\n" + String(Self.wikitext.prefix(2000))
        let ids = tokenizer.encode(text)
        var stream = TokenStreamDecoder(tokenizer: tokenizer)
        var out = ""
        for id in ids {
            let chunk = stream.push(id)
            #expect(!chunk.unicodeScalars.contains("\u{FFFD}"))
            out += chunk
        }
        out += stream.finish()
        #expect(out == tokenizer.decode(ids))
    }

    @Test func streamingHoldsBackAnIncompleteCharacterUntilFinish() throws {
        let tokenizer = try Tokenizer(folder: Self.folder("smollm2"))
        let ids = tokenizer.encode("a😀")
        #expect(ids.count == 4)  // "a" and the emoji's three byte-level tokens
        var stream = TokenStreamDecoder(tokenizer: tokenizer)
        #expect(stream.push(ids[0]) == "a")
        #expect(stream.push(ids[1]) == "")
        #expect(stream.push(ids[2]) == "")
        #expect(stream.finish() == "\u{FFFD}")  // the stream ended inside the character
        #expect(stream.push(ids[1]) == "")
        #expect(stream.push(ids[2]) == "")
        #expect(stream.push(ids[3]) == "😀")
    }

    /// Swift's Regex (the fallback for unknown patterns) and the hand-written matchers agree.
    /// (Not `words`: Swift's `\w` is not Oniguruma's, see CharacterClasses.isWord.)
    @Test(arguments: [RegexMatcher.KnownPattern.gpt2, .llama3, .qwen2]) func handWrittenMatchersEqualSwiftRegex(pattern: RegexMatcher.KnownPattern) throws {
        let fixture = try JSON.read(path: Self.folder("smollm2") + "/cases.json")
        var texts = (fixture["cases"]?.array ?? []).compactMap { $0["text"]?.string }
        texts.append(String(Self.wikitext.prefix(20_000)))
        let known = RegexMatcher(pattern)
        let generic = try RegexMatcher(pattern: pattern.rawValue, field: "test", path: "test", useKnownMatchers: false)
        for text in texts {
            // Unicode 17 characters are letters to Swift's Regex but not to HF; leave them out here.
            let scalars = Array(text.unicodeScalars).filter { $0.properties.age.map { $0.major <= 16 } ?? true }
            var a: [Range<Int>] = [], b: [Range<Int>] = []
            known.forEachMatch(in: scalars) { a.append($0) }
            generic.forEachMatch(in: scalars) { b.append($0) }
            #expect(a == b, "\(pattern): \(text.prefix(80).debugDescription)")
        }
    }

    /// \p{L}, \p{N}, \s and \w equal the library's over every code point.
    @Test func characterClassesMatchHF() throws {
        let fixture = try JSON.read(path: Fixtures.path("tokenizers/character-classes.json"))
        let classes: [(String, (Unicode.Scalar) -> Bool)] = [
            ("L", CharacterClasses.isLetter), ("N", CharacterClasses.isNumber),
            ("s", CharacterClasses.isWhitespace), ("w", CharacterClasses.isWord),
        ]
        for (name, predicate) in classes {
            var members = Set<UInt32>()
            for range in fixture[name]?.array ?? [] {
                let lower = try #require(range[0]?.int), upper = try #require(range[1]?.int)
                for code in lower...upper { members.insert(UInt32(code)) }
            }
            #expect(members.count > 20)
            var mismatches: [String] = []
            for code in UInt32(0)...0x10FFFF {
                guard let scalar = Unicode.Scalar(code) else { continue }
                if predicate(scalar) != members.contains(code) { mismatches.append(String(code, radix: 16)) }
            }
            #expect(mismatches.isEmpty, "\(name): \(mismatches.count) code points differ, e.g. \(mismatches.prefix(8))")
        }
    }

    @Test func configFlagsDecideTheAddedSpecialTokens() throws {
        let dir = "/tmp/gptq-tokenizer-tests-\(UInt32.random(in: 0...UInt32.max))"
        try FileIO.makeDirectory(dir)
        defer { for name in ["tokenizer.json", "tokenizer_config.json"] { FileIO.remove(dir + "/" + name) } }
        let json = try FileIO.readAll(path: Self.folder("spm-llama2") + "/tokenizer.json")
        try FileIO.writeAtomically(path: dir + "/tokenizer.json", bytes: json)
        let plain = try Tokenizer(tokenizerJSON: dir + "/tokenizer.json")
        let ids = plain.encode("hello there")
        #expect(plain.encode("hello there", addSpecialTokens: true) == [1] + ids)  // the template adds <s>

        try FileIO.writeAtomically(path: dir + "/tokenizer_config.json", text: #"""
            {"add_bos_token": false, "add_eos_token": true, "bos_token": "<s>", "eos_token": {"content": "</s>"}}
            """#)
        #expect(try Tokenizer(folder: dir).encode("hello there", addSpecialTokens: true) == ids + [2])

        try FileIO.writeAtomically(path: dir + "/tokenizer_config.json", text: #"{"add_eos_token": true, "eos_token": "<nope>"}"#)
        #expect(throws: GPTQError.badConfig(field: "eos_token", path: dir + "/tokenizer_config.json",
                                            reason: "'<nope>' is not in the vocabulary")) { try Tokenizer(folder: dir) }
    }

    @Test func badFilesNameTheCulprit() throws {
        let dir = "/tmp/gptq-tokenizer-tests-\(UInt32.random(in: 0...UInt32.max))"
        try FileIO.makeDirectory(dir)
        let path = dir + "/tokenizer.json"
        defer { FileIO.remove(path) }
        #expect(throws: GPTQError.self) { try Tokenizer(tokenizerJSON: path) }

        func expectError(_ json: String, _ expected: GPTQError) throws {
            try FileIO.writeAtomically(path: path, text: json)
            #expect(throws: expected) { try Tokenizer(tokenizerJSON: path) }
        }
        let model = #""model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}"#
        try expectError(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}"#,
                        .badConfig(field: "model.merges[0]", path: path, reason: "merge 'a b' uses a token missing from the vocabulary"))
        try expectError(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["ab"]}}"#,
                        .badConfig(field: "model.merges[0]", path: path, reason: "expected \"left right\", got 'ab'"))
        try expectError(#"{"model": {"type": "Unigram", "vocab": []}}"#, .unsupported("\(path): model type 'Unigram' (only BPE is implemented)"))
        try expectError(#"{"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Bogus"}]}, \#(model)}"#,
                        .unsupported("\(path): pre_tokenizer.pretokenizers[0]: pre-tokenizer type 'Bogus'"))
        try expectError(#"{"normalizer": {"type": "NFKC"}, \#(model)}"#, .unsupported("\(path): normalizer: normalizer type 'NFKC'"))
        try expectError(#"{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways"}, \#(model)}"#,
                        .badConfig(field: "pre_tokenizer.behavior", path: path, reason: "unknown split behavior 'Sideways'"))
        try FileIO.writeAtomically(path: path, text: #"{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"}, \#(model)}"#)
        do {
            _ = try Tokenizer(tokenizerJSON: path)
            Issue.record("a broken regular expression was accepted")
        } catch let GPTQError.badConfig(field, errorPath, reason) {
            #expect(field == "pre_tokenizer.pattern" && errorPath == path && reason.contains("(unclosed"))
        }
    }
}
