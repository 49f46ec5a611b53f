#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Testing
@testable import GPTQKit

// The fixtures come from scripts/fixtures/make_gguf_fixtures.py (GGUF files written by the
// `gguf` package, and the reference converter's output on them) and
// scripts/fixtures/make_smollm2_reference.py (digests of the reference's SmolLM2 output).

private let tinyLlama = Fixtures.path("gguf/tiny-llama.gguf")

private func makeTemporaryFolder() -> String { Fixtures.temporaryFolder("gguf-tests") }

/// A copy of `bytes` as a file in a fresh temporary folder.
private func temporaryFile(_ bytes: [UInt8], name: String = "test.gguf") throws -> (folder: String, path: String) {
    let folder = makeTemporaryFolder()
    let path = FileIO.join(folder, name)
    try FileIO.writeAtomically(path: path, bytes: bytes)
    return (folder, path)
}

private func offset(of needle: String, in bytes: [UInt8]) -> Int? {
    let n = Array(needle.utf8)
    return (0...(bytes.count - n.count)).first { bytes[$0..<$0 + n.count].elementsEqual(n) }
}

private func bits(_ t: Tensor) -> [UInt8] { Array(UnsafeRawBufferPointer(start: t.raw, count: t.byteCount)) }

/// The fixture's description of a metadata value: {"type", "value"} or {"type": "ARRAY", "items"}.
private func describe(_ value: GGUFValue) -> JSON {
    func scalar(_ type: String, _ text: String) -> JSON { .object([("type", .string(type)), ("value", .string(text))]) }
    switch value {
    case let .uint8(v): return scalar("UINT8", String(v))
    case let .int8(v): return scalar("INT8", String(v))
    case let .uint16(v): return scalar("UINT16", String(v))
    case let .int16(v): return scalar("INT16", String(v))
    case let .uint32(v): return scalar("UINT32", String(v))
    case let .int32(v): return scalar("INT32", String(v))
    case let .uint64(v): return scalar("UINT64", String(v))
    case let .int64(v): return scalar("INT64", String(v))
    case let .float32(v): return scalar("FLOAT32", String(v.bitPattern))
    case let .float64(v): return scalar("FLOAT64", String(v.bitPattern))
    case let .bool(v): return scalar("BOOL", v ? "true" : "false")
    case let .string(v): return scalar("STRING", v)
    case let .array(items): return .object([("type", .string("ARRAY")), ("items", .array(items.map(describe)))])
    }
}

private func expectError(_ message: String, contains fragments: [String], sourceLocation: SourceLocation = #_sourceLocation) {
    for fragment in fragments {
        #expect(message.contains(fragment), "error \"\(message)\" does not mention \(fragment)", sourceLocation: sourceLocation)
    }
}

private func errorMessage(_ body: () throws -> Void) -> String {
    do { try body() } catch { return String(describing: error) }
    return "no error"
}

@Suite struct GGUFReaderTests {
    @Test func sha256MatchesKnownDigests() {
        #expect(SHA256.hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        // 1000 bytes fed in uneven pieces: the block buffering across updates.
        let message = (0..<1000).map { UInt8($0 % 251) }
        var h = SHA256()
        message.withUnsafeBytes { all in
            var start = 0
            for size in [1, 63, 65, 200, 671] {
                h.update(UnsafeRawBufferPointer(rebasing: all[start..<start + size]))
                start += size
            }
        }
        #expect(h.finalize() == "4e4c294b331f7a2099a379bec34b9f9fc03dc46ab465d998f4d683da53487e6d")
    }

    @Test func metadataOfEveryTypeMatchesWhatTheWriterWrote() throws {
        let file = try GGUFFile(path: tinyLlama)
        let expected = try JSON.read(path: Fixtures.path("gguf/tiny-llama.metadata.json"))
        #expect(file.version == 3)
        #expect(file.alignment == 32)
        #expect(file.metadata.map { $0.key } == expected.keys)
        for (key, value) in file.metadata {
            #expect(describe(value) == expected[key], "metadata '\(key)'")
        }
        #expect(file["test.array.nested"] == .array([.array([.int32(1), .int32(2)]), .array([.int32(3)])]))
        #expect(file["llama.attention.layer_norm_rms_epsilon"]?.double == Double(Float(1e-5)))
    }

    @Test func dequantizationMatchesTheGGUFPackageBitForBit() throws {
        let file = try GGUFFile(path: tinyLlama)
        let expected = try SafetensorsFile(path: Fixtures.path("gguf/tiny-llama.dequantized.safetensors"))
        #expect(Set(file.tensors.map(\.type)) == Set(GGMLType.dequantizable), "the fixture covers every supported type")
        #expect(Set(file.tensors.map(\.name)) == Set(expected.names))
        for info in file.tensors {
            let ours = try file.dequantize(info)
            let reference = try expected.tensor(info.name)
            #expect(ours.shape == reference.shape, "\(info.name)")
            #expect(bits(ours) == bits(reference), "\(info.name) (\(info.type.name))")
        }
    }

    @Test func alignmentFromMetadataPlacesTheData() throws {
        let file = try GGUFFile(path: Fixtures.path("gguf/tiny-llama-tied.gguf"))
        #expect(file.alignment == 64)
        #expect(file.dataOffset % 64 == 0)
        #expect(file.tensors.allSatisfy { $0.offset % 64 == 0 })
        let last = file.tensors.max { $0.offset < $1.offset }!
        #expect(file.dataOffset + last.offset + last.byteCount <= (try FileIO.fileSize(file.path)))
    }

    @Test func version2ReadsLikeVersion3() throws {
        var bytes = try FileIO.readAll(path: tinyLlama)
        bytes[4] = 2
        let (folder, path) = try temporaryFile(bytes)
        defer { try? FileIO.removeTree(folder) }
        let v2 = try GGUFFile(path: path)
        let v3 = try GGUFFile(path: tinyLlama)
        #expect(v2.version == 2)
        #expect(v2.metadata.map { $0.key } == v3.metadata.map { $0.key })
        #expect(v2.metadata.map { $0.value } == v3.metadata.map { $0.value })
        #expect(v2.tensors.map(\.offset) == v3.tensors.map(\.offset))
    }

    @Test func badMagicIsNamed() throws {
        var bytes = try FileIO.readAll(path: tinyLlama)
        bytes.replaceSubrange(0..<4, with: Array("GGML".utf8))
        let (folder, path) = try temporaryFile(bytes)
        defer { try? FileIO.removeTree(folder) }
        expectError(errorMessage { _ = try GGUFFile(path: path) }, contains: [path, "bad magic", "not a GGUF file"])
    }

    @Test func unsupportedVersionIsNamed() throws {
        var bytes = try FileIO.readAll(path: tinyLlama)
        bytes[4] = 1
        let (folder, path) = try temporaryFile(bytes)
        defer { try? FileIO.removeTree(folder) }
        expectError(errorMessage { _ = try GGUFFile(path: path) }, contains: [path, "unsupported GGUF version 1", "supported: 2, 3"])
    }

    @Test func truncatedHeaderNamesTheKeyBeingRead() throws {
        let bytes = try FileIO.readAll(path: tinyLlama)
        let keyStart = try #require(offset(of: "tokenizer.ggml.merges", in: bytes))
        // Cut inside the value of the merges array.
        let (folder, path) = try temporaryFile(Array(bytes[..<(keyStart + 60)]))
        defer { try? FileIO.removeTree(folder) }
        expectError(errorMessage { _ = try GGUFFile(path: path) }, contains: [path, "truncated", "'tokenizer.ggml.merges'"])

        let (folder2, tiny) = try temporaryFile(Array(bytes[..<10]))
        defer { try? FileIO.removeTree(folder2) }
        expectError(errorMessage { _ = try GGUFFile(path: tiny) }, contains: [tiny, "truncated", "the tensor count"])
    }

    @Test func truncatedDataNamesTheTensorOutOfBounds() throws {
        let full = try GGUFFile(path: tinyLlama)
        let last = full.tensors.max { $0.offset < $1.offset }!
        let bytes = try FileIO.readAll(path: tinyLlama)
        let (folder, path) = try temporaryFile(Array(bytes[..<(full.dataOffset + last.offset + last.byteCount - 1)]))
        defer { try? FileIO.removeTree(folder) }
        expectError(errorMessage { _ = try GGUFFile(path: path) }, contains: [path, "'\(last.name)'", "outside", "truncated"])
    }

    @Test func unsupportedTensorTypeIsNamed() throws {
        let path = Fixtures.path("gguf/unsupported-q5k.gguf")
        let file = try GGUFFile(path: path)
        #expect(file.tensors.map(\.type) == [.q5_K])
        #expect(file.tensors[0].shape == [2, 256])
        let expected = "tensor 'blk.0.attn_q.weight' has type Q5_K, supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1"
        expectError(errorMessage { _ = try file.dequantize("blk.0.attn_q.weight") }, contains: [path, expected])

        let parent = makeTemporaryFolder()
        defer { try? FileIO.removeTree(parent) }
        let out = FileIO.join(parent, "converted")
        expectError(errorMessage { try GGUFConverter.convert(ggufPath: path, outputFolder: out) }, contains: [path, expected])
        #expect(!FileIO.exists(out))
    }
}

@Suite struct GGUFConverterTests {
    /// Converts `gguf` into a fresh folder and compares it with the reference converter's folder.
    private func expectMatchesReference(gguf: String, reference: String, dtype: DType = .f16, referenceModel: String = "model.safetensors") throws {
        let parent = makeTemporaryFolder()
        defer { try? FileIO.removeTree(parent) }
        let out = FileIO.join(parent, "converted")
        try GGUFConverter.convert(ggufPath: gguf, outputFolder: out, dtype: dtype)
        #expect(try FileIO.listDirectory(parent) == ["converted"], "no staging folder is left behind")

        let ours = try SafetensorsFile(path: FileIO.join(out, "model.safetensors"))
        let theirs = try SafetensorsFile(path: FileIO.join(reference, referenceModel))
        #expect(ours.names == theirs.names)
        #expect(ours.metadata == theirs.metadata)
        for name in theirs.names {
            let (a, b) = (try ours.tensor(name), try theirs.tensor(name))
            #expect(a.dtype == b.dtype && a.shape == b.shape, "\(name): \(a.dtype) \(a.shape) vs \(b.dtype) \(b.shape)")
            #expect(bits(a) == bits(b), "\(name) differs from the reference converter's")
        }
        for file in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"] {
            var expected = try JSON.read(path: FileIO.join(reference, file))
            if file == "config.json" && dtype != .f16 { expected = expected.setting("torch_dtype", .string(dtype == .f32 ? "float32" : "bfloat16")) }
            let actual = try JSON.read(path: FileIO.join(out, file))
            #expect(actual.keys == expected.keys, "\(file): keys")
            #expect(actual == expected, "\(file): values")
        }
    }

    @Test(arguments: ["tiny-llama", "tiny-llama-tied"])
    func float16OutputEqualsTheReferenceConverter(name: String) throws {
        try expectMatchesReference(gguf: Fixtures.path("gguf/\(name).gguf"), reference: Fixtures.path("gguf/reference/\(name)"))
    }

    @Test func float32OutputEqualsTheReferenceConverter() throws {
        try expectMatchesReference(gguf: tinyLlama, reference: Fixtures.path("gguf/reference/tiny-llama"), dtype: .f32,
                                   referenceModel: "model-float32.safetensors")
    }

    @Test func bfloat16OutputIsTheReferenceFloat32RoundedToNearestEven() throws {
        let parent = makeTemporaryFolder()
        defer { try? FileIO.removeTree(parent) }
        let out = FileIO.join(parent, "converted")
        try GGUFConverter.convert(ggufPath: tinyLlama, outputFolder: out, dtype: .bf16)
        #expect(try ModelConfig(folder: out).json["torch_dtype"]?.string == "bfloat16")
        let ours = try SafetensorsFile(path: FileIO.join(out, "model.safetensors"))
        let reference = try SafetensorsFile(path: Fixtures.path("gguf/reference/tiny-llama/model-float32.safetensors"))
        #expect(ours.names == reference.names)
        for name in reference.names {
            let f32 = try reference.tensor(name)
            let bf16 = try ours.tensor(name)
            #expect(bf16.dtype == .bf16 && bf16.shape == f32.shape)
            let expected: [UInt16] = (0..<f32.count).map { i in
                let x = f32.pointer(as: UInt32.self)[i]
                return UInt16((UInt64(x) + 0x7FFF + UInt64((x >> 16) & 1)) >> 16)
            }
            #expect(Array(UnsafeBufferPointer(start: bf16.pointer(as: UInt16.self), count: bf16.count)) == expected, "\(name)")
        }
    }

    @Test func undoesTheQKPermutationRowByRow() throws {
        // llama.cpp stores, within each head of d rows, HF row j*d/2+i at row 2i+j.
        let rows = 2 * 4, columns = 3
        let values = (0..<rows * columns).map(Float.init)
        let permuted = try GGUFConverter.unpermuteRows(Tensor(values, shape: [rows, columns]), heads: 2, name: "q", path: "p").floats()
        let expectedRowOrder = [0, 2, 1, 3, 4, 6, 5, 7]
        #expect(permuted == expectedRowOrder.flatMap { r in (0..<columns).map { Float(r * columns + $0) } })
    }

    @Test func unknownPreTokenizerIsNamed() throws {
        var bytes = try FileIO.readAll(path: tinyLlama)
        let at = try #require(offset(of: "smollm", in: bytes))
        bytes.replaceSubrange(at..<at + 6, with: Array("foobar".utf8))
        let (folder, path) = try temporaryFile(bytes)
        defer { try? FileIO.removeTree(folder) }
        let out = FileIO.join(folder, "converted")
        expectError(errorMessage { try GGUFConverter.convert(ggufPath: path, outputFolder: out) },
                    contains: [path, "tokenizer.ggml.pre", "'foobar'", "smollm"])
        #expect(try FileIO.listDirectory(folder) == ["test.gguf"], "nothing is written for a failed conversion")
    }

    @Test func otherArchitecturesAreRefused() throws {
        var bytes = try FileIO.readAll(path: tinyLlama)
        let key = try #require(offset(of: "general.architecture", in: bytes))
        let value = key + "general.architecture".utf8.count + 4 + 8  // value type, string length
        #expect(Array(bytes[value..<value + 5]) == Array("llama".utf8))
        bytes.replaceSubrange(value..<value + 5, with: Array("gemma".utf8))
        let (folder, path) = try temporaryFile(bytes)
        defer { try? FileIO.removeTree(folder) }
        expectError(errorMessage { try GGUFConverter.convert(ggufPath: path, outputFolder: FileIO.join(folder, "out")) },
                    contains: [path, "general.architecture", "'gemma'", "llama"])
    }

    @Test func refusesToOverwriteAFolder() throws {
        let folder = makeTemporaryFolder()
        defer { try? FileIO.removeTree(folder) }
        try FileIO.writeAtomically(path: FileIO.join(folder, "keep.txt"), text: "mine")
        expectError(errorMessage { try GGUFConverter.convert(ggufPath: tinyLlama, outputFolder: folder) },
                    contains: [folder, "already exists"])
        #expect(try FileIO.readText(path: FileIO.join(folder, "keep.txt")) == "mine")
    }
}

@Suite struct RealModelGGUFTests {
    /// Every tensor and file of our SmolLM2 conversion against digests of the reference
    /// converter's output (scripts/fixtures/make_smollm2_reference.py).
    @Test(.enabled(if: RealModel.folder != nil, "run scripts/fetch-model.sh first"))
    func smolLM2ConversionEqualsTheReferenceConverter() throws {
        let gguf = try #require(RealModel.gguf)
        let reference = try JSON.read(path: Fixtures.path("gguf/smollm2-reference.json"))
        let mapped = try MappedFile(path: gguf)
        #expect(SHA256.hex(mapped.bytes) == reference["gguf_sha256"]?.string, "the fetched GGUF is the one the fixture was made from")

        let parent = makeTemporaryFolder()
        defer { try? FileIO.removeTree(parent) }
        let out = FileIO.join(parent, "SmolLM2")
        try GGUFConverter.convert(ggufPath: gguf, outputFolder: out)

        let model = try SafetensorsFile(path: FileIO.join(out, "model.safetensors"))
        let tensors = try #require(reference["tensors"]?.object)
        #expect(model.names.sorted() == tensors.map(\.0).sorted())
        for (name, expected) in tensors {
            let t = try model.tensor(name)
            #expect(t.dtype.rawValue == expected["dtype"]?.string, "\(name)")
            #expect(t.shape == expected["shape"]?.array?.compactMap(\.int), "\(name)")
            #expect(SHA256.hex(UnsafeRawBufferPointer(start: t.raw, count: t.byteCount)) == expected["sha256"]?.string, "\(name)")
        }
        for name in ["config", "generation_config", "tokenizer_config"] {
            #expect(try JSON.read(path: FileIO.join(out, name + ".json")) == reference[name], "\(name).json")
        }

        let tokenizer = try JSON.read(path: FileIO.join(out, "tokenizer.json"))
        let bpe = try #require(tokenizer["model"]?.object)
        let vocab = try #require(tokenizer["model"]?["vocab"]?.object)
        let merges = try #require(tokenizer["model"]?["merges"]?.array)
        let rest = tokenizer.setting("model", .object(bpe.filter { $0.0 != "vocab" && $0.0 != "merges" }))
        #expect(rest == reference["tokenizer"])
        let byId = vocab.sorted { $0.1.int! < $1.1.int! }
        #expect(byId.map { $0.1.int! } == Array(0..<vocab.count))
        #expect(SHA256.hex(byId.map { $0.0 + "\n" }.joined()) == reference["vocab_sha256"]?.string)
        let mergeLines = merges.map { pair in (pair.array ?? []).compactMap(\.string).joined(separator: " ") + "\n" }
        #expect(SHA256.hex(mergeLines.joined()) == reference["merges_sha256"]?.string)
    }
}
