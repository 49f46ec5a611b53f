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
        let architecture: Architecture?
        do {
            let family = try ModelFamily.forConfig(config)
            architecture = try family.architecture(config)
            print("family: \(family.name)")
        } catch {
            architecture = nil
            print("family: \(error)")
        }
        if let a = architecture {
            let attention = a.attention
            print("layers: \(a.layers), hidden \(a.hidden), intermediate \(a.mlp.inner)")
            print("block: \(describe(a.block)), \(a.block.attentionNorm.kind == .rms ? "RMSNorm" : "LayerNorm"), "
                  + "\(a.mlp.gate != nil ? "gated " : "")\(a.mlp.activation.rawValue) MLP, \(a.weightLayout == .conv1D ? "Conv1D" : "Linear") weights")
            print("attention: \(attention.heads) heads, \(attention.kvHeads) kv heads, head dim \(attention.headDim), "
                  + "\(describe(attention.projection))" + (attention.windows.compactMap { $0 }.first.map { ", sliding window \($0)" } ?? ""))
            print("positions: \(describe(a.positions, stem: a.stem)), max positions \(a.maxPositions)")
            let tied = try a.tiesHead(checkpoint: checkpoint)
            print("vocab: \(a.vocab), tied embeddings: \(tied ? "yes" : "no")")
            let parameters = a.parameterCount(tiedHead: tied), shown = formatCount(parameters)
            print("parameters: \(shown)" + (shown == String(parameters) ? "" : " (\(parameters))"))
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

    func describe(_ block: BlockSpec) -> String {
        switch block.residual {
        case .sequential: return "sequential residual"
        case .parallel: return "parallel attention and MLP (\(block.mlpNorm == nil ? "one norm" : "two norms"))"
        case .postNorm: return "post-norm residual"
        case .normedResidual: return "residual after the norms"
        }
    }

    func describe(_ projection: QKVProjection) -> String {
        switch projection {
        case .separate: return "separate q/k/v"
        case let .fused(name, layout): return "fused q/k/v \(name) (\(layout))"
        }
    }

    func describe(_ positions: PositionSpec, stem: Stem) -> String {
        let learned = stem.learnedPositions.map { "learned (\($0.name), \($0.count) rows, offset \($0.offset))" }
        switch positions {
        case let .rotary(r):
            return "rotary over \(r.dimensions) dims (\(r.interleaved ? "interleaved pairs" : "halves")), theta \(r.theta), scaling \(describe(r.scaling))"
        case .alibi: return "ALiBi"
        case .none: return learned ?? "none"
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
