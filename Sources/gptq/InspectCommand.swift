import ArgumentParser
import GPTQKit

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Describe a model folder: architecture, sizes, parameter count, tensor dtypes, quantization."
    )

    @Argument(help: "The model folder (config.json and safetensors).")
    var folder: String

    func run() throws {
        let config = try ModelConfig(folder: folder)
        let checkpoint = try Checkpoint(folder: folder)
        let architectures = config.json["architectures"]?.array?.compactMap(\.string).joined(separator: ", ") ?? "-"
        print("folder: \(folder)")
        print("model type: \(config.modelType) (\(architectures))")
        let family: ModelFamily?
        do { family = try ModelFamily.forConfig(config) } catch {
            family = nil
            print("family: \(error)")
        }
        if let family { print("family: \(family.name)") }
        print("layers: \(config.numLayers), hidden \(config.hiddenSize), intermediate \(config.intermediateSize)")
        print("attention: \(config.numHeads) heads, \(config.numKVHeads) kv heads, head dim \(config.headDim)"
              + (config.slidingWindow.map { ", sliding window \($0)" } ?? ""))
        print("rope: theta \(config.ropeTheta), scaling \(describe(config.ropeScaling)), max positions \(config.maxPositionEmbeddings)")
        let tied = family?.tiesHead(config: config, checkpoint: checkpoint) ?? config.tieWordEmbeddings
        print("vocab: \(config.vocabSize), tied embeddings: \(tied ? "yes" : "no")")
        if let family {
            print("parameters: \(formatCount(family.parameterCount(config: config, tiedHead: tied)))")
        }
        var byType: [DType: (tensors: Int, bytes: Int)] = [:]
        for name in checkpoint.tensorNames {
            let entry = checkpoint.entry(name)!
            byType[entry.dtype, default: (0, 0)].tensors += 1
            byType[entry.dtype, default: (0, 0)].bytes += entry.end - entry.begin
        }
        let dtypes = byType.sorted { $0.value.bytes > $1.value.bytes }
            .map { "\($0.key.rawValue) \($0.value.tensors) tensors \(formatBytes($0.value.bytes))" }
        print("tensors: \(checkpoint.tensorNames.count) in \(checkpoint.files.count) file(s): \(dtypes.joined(separator: ", "))")
        print("quantization: \(try quantization(config))")
        let packed = checkpoint.tensorNames.filter { $0.hasSuffix(".qweight") }.count
        if packed > 0 { print("quantized linears: \(packed) (qweight/qzeros/scales/g_idx)") }
    }

    /// quantize_config.json, else config.json's quantization_config, as key=value pairs.
    func quantization(_ config: ModelConfig) throws -> String {
        let path = FileIO.join(folder, "quantize_config.json")
        let settings = FileIO.exists(path) ? try JSON.read(path: path) : config.json["quantization_config"]
        guard let pairs = settings?.object else { return "none" }
        return pairs.map { "\($0.0)=\($0.1.serialized(indent: 0))" }.joined(separator: ", ")
    }

    func describe(_ scaling: RopeScaling) -> String {
        switch scaling {
        case .none: return "none"
        case let .linear(factor): return "linear ×\(factor)"
        case let .llama3(factor, low, high, original):
            return "llama3 ×\(factor) (low \(low), high \(high), original \(original))"
        }
    }
}

func formatCount(_ n: Int) -> String {
    n >= 1_000_000_000 ? "\(fixed(Double(n) / 1e9, 2)) B" : n >= 1_000_000 ? "\(fixed(Double(n) / 1e6, 1)) M" : "\(n)"
}

func formatBytes(_ n: Int) -> String {
    n >= 1 << 30 ? "\(fixed(Double(n) / Double(1 << 30), 2)) GiB" : "\(fixed(Double(n) / Double(1 << 20), 1)) MiB"
}

/// `value` with `digits` decimals.
func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    var text = String(rounded)
    if let dot = text.firstIndex(of: ".") {
        let decimals = text.distance(from: dot, to: text.endIndex) - 1
        if digits == 0 { text = String(text[..<dot]) } else if decimals < digits { text += String(repeating: "0", count: digits - decimals) }
    }
    return text
}
