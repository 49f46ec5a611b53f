import CKernels

/// ggml's tensor element types, with their numbers in GGUF files.
public enum GGMLType: UInt32, Sendable, CaseIterable {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
    case iq2_XXS = 16, iq2_XS = 17, iq3_XXS = 18, iq1_S = 19, iq4_NL = 20, iq3_S = 21, iq2_S = 22, iq4_XS = 23
    case i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_M = 29, bf16 = 30
    case tq1_0 = 34, tq2_0 = 35, mxfp4 = 39, nvfp4 = 40, q1_0 = 41

    /// The types `GGUFFile.dequantize` reads.
    public static let dequantizable: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1]

    /// ggml's name of the type (Q4_0, IQ2_XXS, BF16, ...).
    public var name: String { String(describing: self).uppercased() }

    /// (elements per block, bytes per block), as ggml's type traits give them.
    public var blockLayout: (elements: Int, bytes: Int) {
        let qk = 256
        switch self {
        case .f32, .i32: return (1, 4)
        case .f16, .bf16, .i16: return (1, 2)
        case .i8: return (1, 1)
        case .i64, .f64: return (1, 8)
        case .q4_0, .iq4_NL: return (32, 18)
        case .q4_1: return (32, 20)
        case .q5_0: return (32, 22)
        case .q5_1: return (32, 24)
        case .q8_0: return (32, 34)
        case .q8_1: return (32, 40)
        case .q2_K: return (qk, 4 + qk / 16 + qk / 4)
        case .q3_K: return (qk, 2 + qk / 4 + qk / 8 + 12)
        case .q4_K: return (qk, 4 + qk / 2 + 12)
        case .q5_K: return (qk, 4 + qk / 2 + qk / 8 + 12)
        case .q6_K: return (qk, 2 + qk / 2 + qk / 4 + qk / 16)
        case .q8_K: return (qk, 4 + qk + qk / 8)
        case .iq2_XXS: return (qk, 2 + qk / 4)
        case .iq2_XS: return (qk, 2 + qk / 4 + qk / 32)
        case .iq3_XXS: return (qk, 2 + qk / 4 + qk / 8)
        case .iq1_S: return (qk, 2 + qk / 8 + qk / 16)
        case .iq3_S: return (qk, 2 + qk / 4 + qk / 8 + qk / 32 + 4)
        case .iq2_S: return (qk, 2 + qk / 4 + qk / 16)
        case .iq4_XS: return (qk, 4 + qk / 2 + qk / 64)
        case .iq1_M: return (qk, qk / 8 + qk / 16 + qk / 32)
        case .tq1_0: return (qk, 2 + 4 * 13)
        case .tq2_0: return (qk, 2 + 64)
        case .mxfp4: return (32, 17)
        case .nvfp4: return (64, 36)
        case .q1_0: return (128, 18)
        }
    }
}

/// A metadata value of a GGUF file.
public enum GGUFValue: Equatable, Sendable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool), string(String)
    case array([GGUFValue])

    /// Any integer value that fits in Int.
    public var int: Int? {
        switch self {
        case let .uint8(v): return Int(v)
        case let .int8(v): return Int(v)
        case let .uint16(v): return Int(v)
        case let .int16(v): return Int(v)
        case let .uint32(v): return Int(v)
        case let .int32(v): return Int(v)
        case let .uint64(v): return Int(exactly: v)
        case let .int64(v): return Int(v)
        default: return nil
        }
    }

    /// Any numeric value, widened to Double.
    public var double: Double? {
        switch self {
        case let .float32(v): return Double(v)
        case let .float64(v): return v
        default: return int.map(Double.init)
        }
    }

    public var bool: Bool? { if case let .bool(b) = self { return b } else { return nil } }
    public var string: String? { if case let .string(s) = self { return s } else { return nil } }
    public var array: [GGUFValue]? { if case let .array(a) = self { return a } else { return nil } }
}

/// Where one tensor lives in a GGUF file.
public struct GGUFTensorInfo: Sendable {
    public let name: String
    /// ggml's dimensions, innermost first (ne[0] is the row length).
    public let dimensions: [Int]
    public let type: GGMLType
    /// Byte offset from the start of the data section.
    public let offset: Int
    public let byteCount: Int

    /// The row-major shape (outermost first), as PyTorch and safetensors see the tensor.
    public var shape: [Int] { dimensions.reversed() }
    public var elementCount: Int { dimensions.reduce(1, *) }
}

/// A memory-mapped GGUF file (versions 2 and 3, little-endian) with a validated header.
///
/// Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count; the metadata
/// (key string, u32 value type, value); the tensor infos (name, u32 rank, u64 dims, u32
/// ggml type, u64 offset); padding to `general.alignment` (default 32); the data.
/// Strings are a u64 length and UTF-8 bytes; arrays a u32 element type, a u64 count
/// and the elements.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: Int
    /// Metadata in file order.
    public let metadata: [(key: String, value: GGUFValue)]
    /// Tensor infos in file order.
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Absolute offset of the data section.
    public let dataOffset: Int
    private let file: MappedFile
    private let metadataIndex: [String: Int]
    private let tensorIndex: [String: Int]

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path)
        var reader = GGUFByteReader(bytes: file.bytes, path: path)

        let magic = try reader.bytes(4, what: "the magic number")
        guard Array(magic) == Array("GGUF".utf8) else {
            throw GPTQError.invalidFile(path: path, reason: "bad magic \(magic.map { String($0, radix: 16) }), not a GGUF file")
        }
        let rawVersion = try reader.uint32(what: "the version")
        guard rawVersion == 2 || rawVersion == 3 else {
            let hint = rawVersion & 0xFFFF == 0 ? " (a big-endian file?)" : ""
            throw GPTQError.invalidFile(path: path, reason: "unsupported GGUF version \(rawVersion)\(hint); supported: 2, 3")
        }
        version = Int(rawVersion)
        let tensorCount = try reader.count(what: "the tensor count", minimumBytesEach: 24)
        let metadataCount = try reader.count(what: "the metadata count", minimumBytesEach: 12)

        var metadata: [(key: String, value: GGUFValue)] = []
        var metadataIndex: [String: Int] = [:]
        for i in 0..<metadataCount {
            let key = try reader.string(what: "the key of metadata entry \(i)")
            guard metadataIndex[key] == nil else {
                throw GPTQError.invalidFile(path: path, reason: "metadata key '\(key)' appears twice")
            }
            let typeCode = try reader.uint32(what: "the value type of '\(key)'")
            let value = try reader.value(typeCode: typeCode, key: key, depth: 0)
            metadataIndex[key] = metadata.count
            metadata.append((key, value))
        }
        self.metadata = metadata
        self.metadataIndex = metadataIndex

        if let value = metadataIndex["general.alignment"].map({ metadata[$0].value }) {
            guard let a = value.int, a > 0, a & (a - 1) == 0 else {
                throw GPTQError.badConfig(field: "general.alignment", path: path, reason: "\(value) is not a positive power of two")
            }
            alignment = a
        } else {
            alignment = 32
        }

        var infos: [(name: String, dimensions: [Int], typeCode: UInt32, offset: UInt64)] = []
        var tensorIndex: [String: Int] = [:]
        for i in 0..<tensorCount {
            let name = try reader.string(what: "the name of tensor \(i)")
            guard tensorIndex[name] == nil else {
                throw GPTQError.invalidFile(path: path, reason: "tensor '\(name)' appears twice")
            }
            let rank = try reader.uint32(what: "the rank of tensor '\(name)'")
            guard rank >= 1 && rank <= 4 else {
                throw GPTQError.badTensor(name: name, path: path, reason: "rank \(rank), ggml allows 1 to 4")
            }
            var dimensions: [Int] = []
            for _ in 0..<rank {
                let d = try reader.uint64(what: "the dimensions of tensor '\(name)'")
                guard d <= UInt64(Int32.max) else {
                    throw GPTQError.badTensor(name: name, path: path, reason: "dimension \(d) is too large")
                }
                dimensions.append(Int(d))
            }
            let typeCode = try reader.uint32(what: "the type of tensor '\(name)'")
            let offset = try reader.uint64(what: "the data offset of tensor '\(name)'")
            tensorIndex[name] = infos.count
            infos.append((name, dimensions, typeCode, offset))
        }
        self.tensorIndex = tensorIndex

        let headerEnd = reader.position
        dataOffset = (headerEnd + alignment - 1) / alignment * alignment
        let dataSize = file.count - min(dataOffset, file.count)

        var tensors: [GGUFTensorInfo] = []
        for info in infos {
            guard let type = GGMLType(rawValue: info.typeCode) else {
                throw GPTQError.badTensor(name: info.name, path: path, reason: "unknown ggml type number \(info.typeCode)")
            }
            let (blockElements, blockBytes) = type.blockLayout
            guard info.dimensions[0] % blockElements == 0 else {
                throw GPTQError.badTensor(name: info.name, path: path, reason: "row length \(info.dimensions[0]) is not a multiple of the \(type.name) block size \(blockElements)")
            }
            // Rows of whole blocks: the bytes are (rows × blocks per row × block bytes), checked.
            let rowBytes = [info.dimensions[0] / blockElements * blockBytes] + info.dimensions.dropFirst()
            guard let byteCount = SafetensorsFile.byteCount(shape: rowBytes, elementBytes: 1) else {
                throw GPTQError.badTensor(name: info.name, path: path, reason: "dimensions \(info.dimensions) of \(type.name) hold more bytes than any file can")
            }
            guard info.offset % UInt64(alignment) == 0 else {
                throw GPTQError.badTensor(name: info.name, path: path, reason: "data offset \(info.offset) is not a multiple of the alignment \(alignment)")
            }
            guard info.offset <= UInt64(dataSize), byteCount <= dataSize - Int(info.offset) else {
                throw GPTQError.badTensor(name: info.name, path: path, reason: "its \(byteCount) bytes at data offset \(info.offset) lie outside the \(dataSize)-byte data section (truncated file?)")
            }
            tensors.append(GGUFTensorInfo(name: info.name, dimensions: info.dimensions, type: type, offset: Int(info.offset), byteCount: byteCount))
        }
        self.tensors = tensors
    }

    /// The metadata value under `key`, if present.
    public subscript(key: String) -> GGUFValue? { metadataIndex[key].map { metadata[$0].value } }

    public func tensorInfo(_ name: String) -> GGUFTensorInfo? { tensorIndex[name].map { tensors[$0] } }

    /// The raw bytes of a tensor, memory-mapped.
    public func data(of info: GGUFTensorInfo) -> UnsafeRawPointer { file.base + dataOffset + info.offset }

    /// The tensor as float32 with its row-major `shape`, dequantized exactly as ggml
    /// (and the `gguf` package) do it.
    public func dequantize(_ name: String) throws -> Tensor {
        guard let info = tensorInfo(name) else { throw GPTQError.missingTensor(name: name, path: path) }
        return try dequantize(info)
    }

    public func dequantize(_ info: GGUFTensorInfo) throws -> Tensor {
        try checkDequantizable(info)
        let out = Tensor(zeros: info.shape, dtype: .f32)
        let src = data(of: info)
        let dst = out.mutablePointer(as: Float.self)
        let n = info.elementCount
        switch info.type {
        case .f32: dst.update(from: src.assumingMemoryBound(to: Float.self), count: n)
        case .f16: ck_f16_to_f32(src.assumingMemoryBound(to: UInt16.self), dst, n)
        case .bf16: ck_bf16_to_f32(src.assumingMemoryBound(to: UInt16.self), dst, n)
        case .q8_0: ck_dequant_q8_0(src.assumingMemoryBound(to: UInt8.self), dst, n / 32)
        case .q4_0: ck_dequant_q4_0(src.assumingMemoryBound(to: UInt8.self), dst, n / 32)
        case .q4_1: ck_dequant_q4_1(src.assumingMemoryBound(to: UInt8.self), dst, n / 32)
        default: preconditionFailure("checkDequantizable let \(info.type.name) through")
        }
        return out
    }

    /// Throws, naming the tensor and its type, unless `dequantize` reads the type.
    public func checkDequantizable(_ info: GGUFTensorInfo) throws {
        guard GGMLType.dequantizable.contains(info.type) else {
            throw GPTQError.unsupported("\(path): tensor '\(info.name)' has type \(info.type.name), supported: \(GGMLType.dequantizable.map(\.name).joined(separator: ", "))")
        }
    }
}

/// A bounds-checked little-endian cursor over the header of a GGUF file. Every read
/// says what it was reading, so that a truncated or corrupt file names the culprit.
private struct GGUFByteReader {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var position = 0

    init(bytes: UnsafeRawBufferPointer, path: String) {
        self.bytes = bytes
        self.path = path
    }

    private func truncated(_ what: String) -> GPTQError {
        .invalidFile(path: path, reason: "truncated at byte \(position) of \(bytes.count) while reading \(what)")
    }

    mutating func bytes(_ n: Int, what: String) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= bytes.count - position else { throw truncated(what) }
        defer { position += n }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<position + n])
    }

    mutating func load<T: FixedWidthInteger>(_ type: T.Type, what: String) throws -> T {
        let raw = try bytes(MemoryLayout<T>.size, what: what)
        return T(littleEndian: raw.loadUnaligned(as: T.self))
    }

    mutating func uint32(what: String) throws -> UInt32 { try load(UInt32.self, what: what) }
    mutating func uint64(what: String) throws -> UInt64 { try load(UInt64.self, what: what) }

    /// A u64 count of items that each take at least `minimumBytesEach` bytes: a count the
    /// rest of the file cannot hold means truncation, and must not size an allocation.
    mutating func count(what: String, minimumBytesEach: Int) throws -> Int {
        let n = try uint64(what: what)
        guard n <= UInt64((bytes.count - position) / max(minimumBytesEach, 1)) else {
            throw GPTQError.invalidFile(path: path, reason: "truncated: \(what) is \(n) but only \(bytes.count - position) bytes follow")
        }
        return Int(n)
    }

    mutating func string(what: String) throws -> String {
        let length = try uint64(what: what)
        guard length <= UInt64(bytes.count - position) else { throw truncated(what) }
        let raw = try bytes(Int(length), what: what)
        guard let s = String(validating: raw, as: UTF8.self) else {
            throw GPTQError.invalidFile(path: path, reason: "\(what) is not valid UTF-8")
        }
        return s
    }

    mutating func value(typeCode: UInt32, key: String, depth: Int) throws -> GGUFValue {
        let what = "the value of '\(key)'"
        switch typeCode {
        case 0: return .uint8(try load(UInt8.self, what: what))
        case 1: return .int8(try load(Int8.self, what: what))
        case 2: return .uint16(try load(UInt16.self, what: what))
        case 3: return .int16(try load(Int16.self, what: what))
        case 4: return .uint32(try load(UInt32.self, what: what))
        case 5: return .int32(try load(Int32.self, what: what))
        case 6: return .float32(Float(bitPattern: try load(UInt32.self, what: what)))
        case 7:
            let b = try load(UInt8.self, what: what)
            guard b <= 1 else { throw GPTQError.badConfig(field: key, path: path, reason: "bool byte \(b) is neither 0 nor 1") }
            return .bool(b == 1)
        case 8: return .string(try string(what: what))
        case 9:
            guard depth < 8 else { throw GPTQError.badConfig(field: key, path: path, reason: "arrays nested deeper than 8 levels") }
            let elementType = try uint32(what: "the element type of '\(key)'")
            let minimumBytes: Int
            switch elementType {
            case 0, 1, 7: minimumBytes = 1
            case 2, 3: minimumBytes = 2
            case 4, 5, 6: minimumBytes = 4
            case 8, 10, 11, 12: minimumBytes = 8
            case 9: minimumBytes = 12
            default: throw GPTQError.badConfig(field: key, path: path, reason: "unknown array element type \(elementType)")
            }
            let n = try count(what: "the length of '\(key)'", minimumBytesEach: minimumBytes)
            var items: [GGUFValue] = []
            items.reserveCapacity(n)
            for _ in 0..<n { items.append(try value(typeCode: elementType, key: key, depth: depth + 1)) }
            return .array(items)
        case 10: return .uint64(try load(UInt64.self, what: what))
        case 11: return .int64(try load(Int64.self, what: what))
        case 12: return .float64(Double(bitPattern: try load(UInt64.self, what: what)))
        default: throw GPTQError.badConfig(field: key, path: path, reason: "unknown value type \(typeCode)")
        }
    }
}
