import Testing
import GPTQKit

@Suite struct CalibrationTests {
    let dir = "/tmp/gptq-calibration-tests-\(UInt32.random(in: 0...UInt32.max))"
    /// A stand-in tokenizer: one id per UTF-8 byte.
    static func byteTokens(_ text: String) -> [Int32] { text.utf8.map { Int32($0) } }

    func write(_ name: String, _ text: String) throws -> String {
        try FileIO.makeDirectory(dir)
        let path = dir + "/" + name
        try FileIO.writeAtomically(path: path, text: text)
        return path
    }

    @Test func randomWindowsAreGPTQsDatautilsWindows() throws {
        // CPython: random.seed(0); [randint(0, 304986 - 512 - 1) for _ in range(128)]
        let expected = try JSON.read(path: Fixtures.path("python_random/expected.json"))["cases"]![0]!["windows"]!.array!.map { $0.int! }
        let corpus = CalibrationCorpus(path: "stream", documents: [(0..<304_986).map { Int32($0) }])
        let windows = try corpus.samples(.randomWindows(count: 128, length: 512, seed: 0))
        #expect(windows.count == 128)
        #expect(windows.map { Int($0[0]) } == expected)
        #expect(windows.allSatisfy { $0.count == 512 && $0.last! == $0.first! + 511 })
    }

    @Test func textIsTokenizedWhole() throws {
        let path = try write("calib.txt", "abcdefghij")
        let corpus = try CalibrationCorpus.load(path: path, format: .text, tokenize: Self.byteTokens)
        #expect(corpus.documents == [Array("abcdefghij".utf8).map { Int32($0) }])
        // ntokens - seqlen - 1 = 0: the only window starts at 0.
        #expect(try corpus.randomWindows(count: 3, length: 9, seed: 0) == Array(repeating: Array(corpus.documents[0][0..<9]), count: 3))
    }

    @Test func jsonlDocumentsAreTruncated() throws {
        let path = try write("calib.jsonl", "{\"text\": \"hello world\"}\n\n{\"text\": \"hi\", \"id\": 2}\n{\"text\": \"\"}\n{\"text\": \"third\"}\n")
        #expect(CalibrationFormat.infer(path: path) == .jsonl)
        let corpus = try CalibrationCorpus.load(path: path, format: .jsonl, tokenize: Self.byteTokens)
        #expect(corpus.documents.count == 3)
        let samples = try corpus.samples(.documents(count: 2, maxLength: 5))
        #expect(samples == [Array("hello".utf8).map { Int32($0) }, Array("hi".utf8).map { Int32($0) }])
    }

    @Test func pretokenizedFormats() throws {
        let nested = try write("ids.json", "[[1, 2, 3], [4, 5]]")
        #expect(try CalibrationCorpus.load(path: nested, format: .tokens, tokenize: Self.byteTokens).documents == [[1, 2, 3], [4, 5]])
        let flat = try write("flat.json", "[7, 8, 9]")
        #expect(try CalibrationCorpus.load(path: flat, format: .tokens, tokenize: Self.byteTokens).documents == [[7, 8, 9]])

        let bin = dir + "/ids.bin"
        try FileIO.writeAtomically(path: bin, bytes: [Int32(10), 20, 70000].flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) })
        #expect(try CalibrationCorpus.load(path: bin, format: .tokens, tokenize: Self.byteTokens).documents == [[10, 20, 70000]])

        let tensors = dir + "/ids.safetensors"
        try SafetensorsWriter.write(path: tensors, tensors: [("input_ids", Tensor(bitPattern: [Int64(1), 2, 3, 4, 5, 6], dtype: .i64, shape: [2, 3]))])
        #expect(try CalibrationCorpus.load(path: tensors, format: .tokens, tokenize: Self.byteTokens).documents == [[1, 2, 3], [4, 5, 6]])
    }

    @Test func emptyFileIsRejectedByName() throws {
        let path = try write("empty.txt", "")
        #expect(throws: GPTQError.invalidFile(path: path, reason: "calibration file is empty")) {
            try CalibrationCorpus.load(path: path, format: .text, tokenize: Self.byteTokens)
        }
        let blank = try write("blank.jsonl", "\n\n")
        #expect(throws: GPTQError.invalidFile(path: blank, reason: "calibration file holds no tokens")) {
            try CalibrationCorpus.load(path: blank, format: .jsonl, tokenize: Self.byteTokens)
        }
    }

    @Test func textShorterThanSeqlenNamesFileAndCounts() throws {
        let path = try write("short.txt", String(repeating: "x", count: 512))
        let corpus = try CalibrationCorpus.load(path: path, format: .text, tokenize: Self.byteTokens)
        #expect(throws: GPTQError.invalidFile(path: path, reason: "calibration data has 512 tokens; random windows of 512 tokens need at least 513")) {
            try corpus.samples(.randomWindows(count: 4, length: 512, seed: 0))
        }
    }

    @Test func malformedInputsNameTheirPlace() throws {
        let jsonl = try write("bad.jsonl", "{\"text\": \"ok\"}\n{\"body\": \"no text\"}\n")
        #expect(throws: GPTQError.invalidFile(path: jsonl, reason: "line 2 has no \"text\" string")) {
            try CalibrationCorpus.load(path: jsonl, format: .jsonl, tokenize: Self.byteTokens)
        }
        let ids = try write("neg.json", "[[1, -2]]")
        #expect(throws: GPTQError.invalidFile(path: ids, reason: "document 0 item 1 is not a non-negative token id")) {
            try CalibrationCorpus.load(path: ids, format: .tokens, tokenize: Self.byteTokens)
        }
        let odd = try write("odd.bin", "abcde")
        #expect(throws: GPTQError.invalidFile(path: odd, reason: "5 bytes is not a whole number of int32 token ids")) {
            try CalibrationCorpus.load(path: odd, format: .tokens, tokenize: Self.byteTokens)
        }
        let corpus = CalibrationCorpus(path: "x", documents: [[1, 2, 3]])
        #expect(throws: GPTQError.invalidArgument("the number of calibration samples must be positive, got 0")) {
            try corpus.samples(.documents(count: 0, maxLength: 3))
        }
    }
}
