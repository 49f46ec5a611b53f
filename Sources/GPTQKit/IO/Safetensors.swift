import FoundationEssentials

/// Where one tensor lives inside a safetensors file.
public struct SafetensorsEntry: Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Byte range relative to the start of the data section.
    public let begin: Int
    public let end: Int
}

/// One memory-mapped safetensors file with a validated header.
///
/// Format: an 8-byte little-endian header length N, N bytes of JSON mapping each
/// tensor name to {dtype, shape, data_offsets} (plus an optional `__metadata__`
/// object of strings), then the data section.
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    public let entries: [String: SafetensorsEntry]
    /// Tensor names in the order of their data.
    public let names: [String]
    public let metadata: [String: String]
    private let file: MappedFile
    private let dataStart: Int

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path)
        guard file.count >= 8 else {
            throw GPTQError.invalidFile(path: path, reason: "truncated: \(file.count) bytes, shorter than the 8-byte header length")
        }
        let headerLength = Int(min(file.base.loadUnaligned(as: UInt64.self).littleEndian, UInt64(Int.max / 2)))
        guard headerLength <= file.count - 8 else {
            throw GPTQError.invalidFile(path: path, reason: "truncated: header claims \(headerLength) bytes but the file has \(file.count - 8) after the length")
        }
        dataStart = 8 + headerLength
        var headerBytes = [UInt8](UnsafeRawBufferPointer(start: file.base + 8, count: headerLength))
        let header: JSON
        do throws(JSONParseError) { header = try JSON.parse(bytes: &headerBytes) } catch {
            throw GPTQError.invalidFile(path: path, reason: "header is not valid JSON: \(error.message)")
        }
        guard let pairs = header.object else { throw GPTQError.invalidFile(path: path, reason: "header is not a JSON object") }
        let dataSize = file.count - dataStart
        var entries: [String: SafetensorsEntry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in pairs {
            if name == "__metadata__" {
                for (k, v) in value.object ?? [] {
                    guard let s = v.string else { throw GPTQError.invalidFile(path: path, reason: "__metadata__ value '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let dtypeName = value["dtype"]?.string else {
                throw GPTQError.badTensor(name: name, path: path, reason: "no dtype in header")
            }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw GPTQError.badTensor(name: name, path: path, reason: "unknown dtype '\(dtypeName)'")
            }
            guard let dims = value["shape"]?.array?.map(\.int), dims.allSatisfy({ $0 != nil && $0! >= 0 }) else {
                throw GPTQError.badTensor(name: name, path: path, reason: "shape is not a list of non-negative integers")
            }
            let shape = dims.map { $0! }
            guard let offsets = value["data_offsets"]?.array?.compactMap(\.int), offsets.count == 2 else {
                throw GPTQError.badTensor(name: name, path: path, reason: "data_offsets is not a pair of integers")
            }
            let (begin, end) = (offsets[0], offsets[1])
            guard begin >= 0, begin <= end, end <= dataSize else {
                throw GPTQError.badTensor(name: name, path: path, reason: "data_offsets [\(begin), \(end)] fall outside the \(dataSize)-byte data section (truncated file?)")
            }
            guard let byteCount = Self.byteCount(shape: shape, elementBytes: dtype.byteSize) else {
                throw GPTQError.badTensor(name: name, path: path, reason: "shape \(shape) of \(dtypeName) holds more bytes than any file can")
            }
            guard end - begin == byteCount else {
                throw GPTQError.badTensor(name: name, path: path, reason: "holds \(end - begin) bytes but shape \(shape) of \(dtypeName) needs \(byteCount)")
            }
            // The HF loader refuses a header that names a tensor twice; taking either copy would be a guess.
            guard entries[name] == nil else {
                throw GPTQError.badTensor(name: name, path: path, reason: "appears twice in the header")
            }
            entries[name] = SafetensorsEntry(name: name, dtype: dtype, shape: shape, begin: begin, end: end)
        }
        let ordered = entries.values.sorted { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        for (a, b) in zip(ordered, ordered.dropFirst()) where b.begin < a.end {
            throw GPTQError.badTensor(name: b.name, path: path, reason: "its bytes overlap those of '\(a.name)'")
        }
        self.entries = entries
        self.names = ordered.map(\.name)
        self.metadata = metadata
    }

    /// The bytes of `shape` elements of `elementBytes` each; nil where the product overflows.
    static func byteCount(shape: [Int], elementBytes: Int) -> Int? {
        var bytes = elementBytes
        for d in shape {
            let (product, overflow) = bytes.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            bytes = product
        }
        return bytes
    }

    public func contains(_ name: String) -> Bool { entries[name] != nil }

    /// The tensor's bytes, memory-mapped (no copy).
    public func tensor(_ name: String) throws -> Tensor {
        guard let e = entries[name] else { throw GPTQError.missingTensor(name: name, path: path) }
        let storage = TensorStorage(borrowing: file.base + dataStart + e.begin, byteCount: e.end - e.begin, owner: file)
        return Tensor(dtype: e.dtype, shape: e.shape, storage: storage)
    }
}

/// The weights of a model folder: the checkpoint's own files, never any other
/// `*.safetensors` that sits beside them (a reference output, a second model).
///
/// The base name is quantize_config.json's `model_file_base_name` (else config.json's
/// `quantization_config` one) where set, as AutoGPTQ-era checkpoints name theirs
/// (gptq_model-4bit-128g), then `model`. For the first base name present, `<base>.safetensors.index.json`
/// gives the shards, else `<base>.safetensors` is the file. A folder with neither takes its
/// only `*.safetensors` file; with several it is ambiguous, and the error lists them.
public final class Checkpoint: @unchecked Sendable {
    public let folder: String
    public let files: [SafetensorsFile]
    private let location: [String: SafetensorsFile]

    public init(folder: String) throws {
        self.folder = folder
        guard FileIO.isDirectory(folder) else { throw GPTQError.invalidFile(path: folder, reason: "not a folder") }
        let listing = try FileIO.listDirectory(folder)
        var files: [SafetensorsFile] = []
        var location: [String: SafetensorsFile] = [:]
        switch try Self.weightFiles(folder: folder, listing: listing) {
        case let .sharded(indexName):
            let indexPath = FileIO.join(folder, indexName)
            let index = try JSON.read(path: indexPath)
            guard let map = index["weight_map"]?.object else {
                throw GPTQError.badConfig(field: "weight_map", path: indexPath, reason: "missing or not an object")
            }
            if let twice = index["weight_map"]?.duplicateKey {
                throw GPTQError.badConfig(field: "weight_map.\(twice)", path: indexPath, reason: "the tensor is listed twice")
            }
            var opened: [String: SafetensorsFile] = [:]
            for (tensor, fileValue) in map {
                guard let fileName = fileValue.string else {
                    throw GPTQError.badConfig(field: "weight_map.\(tensor)", path: indexPath, reason: "not a file name")
                }
                let file: SafetensorsFile
                if let f = opened[fileName] { file = f } else {
                    let shardPath = FileIO.join(folder, fileName)
                    guard FileIO.exists(shardPath) else {
                        throw GPTQError.invalidFile(path: shardPath, reason: "shard named by \(indexName) is missing")
                    }
                    file = try SafetensorsFile(path: shardPath)
                    opened[fileName] = file
                    files.append(file)
                }
                guard file.contains(tensor) else { throw GPTQError.missingTensor(name: tensor, path: file.path) }
                location[tensor] = file
            }
        case let .single(name):
            let file = try SafetensorsFile(path: FileIO.join(folder, name))
            files.append(file)
            for tensor in file.names { location[tensor] = file }
        }
        self.files = files
        self.location = location
    }

    enum WeightFiles: Equatable {
        /// The index file naming the shards.
        case sharded(index: String)
        case single(String)
    }

    /// Which of the folder's files hold the checkpoint (see the type's comment).
    static func weightFiles(folder: String, listing: [String]) throws -> WeightFiles {
        for base in try declaredBaseName(folder: folder).map({ [$0, "model"] }) ?? ["model"] {
            if listing.contains(base + ".safetensors.index.json") { return .sharded(index: base + ".safetensors.index.json") }
            if listing.contains(base + ".safetensors") { return .single(base + ".safetensors") }
        }
        let candidates = listing.filter { $0.hasSuffix(".safetensors") || $0.hasSuffix(".safetensors.index.json") }.sorted()
        guard candidates.count == 1 else {
            throw GPTQError.invalidFile(path: folder, reason: candidates.isEmpty ? "no .safetensors file in the folder" : """
                no model.safetensors, model.safetensors.index.json or file named by model_file_base_name, and several \
                candidates: \(candidates.joined(separator: ", ")); keep only the checkpoint's own, or name it in \
                quantize_config.json's model_file_base_name
                """)
        }
        return candidates[0].hasSuffix(".index.json") ? .sharded(index: candidates[0]) : .single(candidates[0])
    }

    /// `model_file_base_name` of quantize_config.json, else of config.json's `quantization_config`.
    static func declaredBaseName(folder: String) throws -> String? {
        let quantizePath = FileIO.join(folder, "quantize_config.json"), configPath = FileIO.join(folder, "config.json")
        let (settings, path): (JSON?, String)
        if FileIO.exists(quantizePath) {
            (settings, path) = (try JSON.read(path: quantizePath), quantizePath)
        } else if FileIO.exists(configPath) {
            (settings, path) = (try JSON.read(path: configPath)["quantization_config"], configPath)
        } else {
            return nil
        }
        guard let value = settings?["model_file_base_name"], !value.isNull else { return nil }
        guard let name = value.string, !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
            throw GPTQError.badConfig(field: "model_file_base_name", path: path, reason: "\(value.serialized(indent: 0)) is not a file name")
        }
        return name
    }

    /// The file holding tensor `name` (the folder where none does).
    public func path(of name: String) -> String { location[name]?.path ?? folder }

    public var tensorNames: [String] { location.keys.sorted() }
    public func contains(_ name: String) -> Bool { location[name] != nil }
    public func entry(_ name: String) -> SafetensorsEntry? { location[name]?.entries[name] }

    public func tensor(_ name: String) throws -> Tensor {
        guard let file = location[name] else { throw GPTQError.missingTensor(name: name, path: folder) }
        return try file.tensor(name)
    }

    /// One line per tensor holding NaN or infinite values, naming it, its file and how many:
    /// such a model computes NaN, and its outputs say nothing about where it came from.
    public func nonFiniteWeightWarnings() throws -> [String] {
        var warnings: [String] = []
        for name in tensorNames {
            let (count, first) = try tensor(name).nonFiniteElements()
            guard let first else { continue }
            warnings.append("\(location[name]!.path): tensor '\(name)' has \(count) NaN or infinite values (the first at element \(first))")
        }
        return warnings
    }

    /// The tensor, checked to have `shape`.
    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        let t = try tensor(name)
        guard t.shape == shape else {
            throw GPTQError.badTensor(name: name, path: location[name]!.path, reason: "shape \(t.shape), expected \(shape)")
        }
        return t
    }
}

/// Writes safetensors files: header padded with spaces to 8-byte alignment, tensors
/// laid out in order, `__metadata__` first. Files are written atomically.
public enum SafetensorsWriter {
    public static func write(path: String, tensors: [(String, Tensor)], metadata: [String: String] = ["format": "pt"]) throws {
        var pairs: [(String, JSON)] = []
        if !metadata.isEmpty {
            pairs.append(("__metadata__", .object(metadata.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })))
        }
        var offset = 0
        for (name, t) in tensors {
            pairs.append((name, .object([
                ("dtype", .string(t.dtype.rawValue)),
                ("shape", .array(t.shape.map { .number(Double($0)) })),
                ("data_offsets", .array([.number(Double(offset)), .number(Double(offset + t.byteCount))])),
            ])))
            offset += t.byteCount
        }
        var header = Array(JSON.object(pairs).serialized(indent: 0).utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        try FileIO.writeAtomically(path: path) { fd in
            var length = UInt64(header.count).littleEndian
            try FileIO.writeAll(fd: fd, path: path, pointer: &length, count: 8)
            try FileIO.writeAll(fd: fd, path: path, pointer: header, count: header.count)
            for (_, t) in tensors where t.byteCount > 0 {
                try FileIO.writeAll(fd: fd, path: path, pointer: t.raw, count: t.byteCount)
            }
        }
    }

    /// Writes `tensors` as one file `<base>.safetensors`, or, past `maxShardBytes`, as
    /// `<base>-0000i-of-0000n.safetensors` shards plus `<base>.safetensors.index.json`.
    /// Returns the names of the files written.
    @discardableResult
    public static func writeSharded(folder: String, baseName: String = "model", tensors: [(String, Tensor)],
                                    maxShardBytes: Int?, metadata: [String: String] = ["format": "pt"]) throws -> [String] {
        var shards: [[(String, Tensor)]] = [[]]
        var size = 0
        for item in tensors {
            if let limit = maxShardBytes, size > 0, size + item.1.byteCount > limit {
                shards.append([])
                size = 0
            }
            shards[shards.count - 1].append(item)
            size += item.1.byteCount
        }
        if shards.count == 1 {
            let name = "\(baseName).safetensors"
            try write(path: FileIO.join(folder, name), tensors: tensors, metadata: metadata)
            return [name]
        }
        func pad(_ i: Int) -> String { let s = String(i); return String(repeating: "0", count: max(0, 5 - s.count)) + s }
        var names: [String] = []
        var weightMap: [(String, JSON)] = []
        for (i, shard) in shards.enumerated() {
            let name = "\(baseName)-\(pad(i + 1))-of-\(pad(shards.count)).safetensors"
            try write(path: FileIO.join(folder, name), tensors: shard, metadata: metadata)
            names.append(name)
            weightMap += shard.map { ($0.0, .string(name)) }
        }
        let total = tensors.reduce(0) { $0 + $1.1.byteCount }
        let index = JSON.object([
            ("metadata", .object([("total_size", .number(Double(total)))])),
            ("weight_map", .object(weightMap.sorted { $0.0 < $1.0 })),
        ])
        let indexName = "\(baseName).safetensors.index.json"
        try FileIO.writeAtomically(path: FileIO.join(folder, indexName), text: index.serialized() + "\n")
        return names + [indexName]
    }
}
