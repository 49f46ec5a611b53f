/// The GPTQ side of a quantized model folder (AutoGPTQ / GPTQModel layout): its
/// quantization settings, and the linear layers stored as qweight/qzeros/scales/g_idx.
/// LanguageModel.load uses `linearFactory` so that quantized folders load transparently;
/// a module saved with `.weight` instead of `.qweight` stays a float layer.
public struct QuantizedCheckpoint: Sendable {
    public let config: QuantizeConfig
    /// The file the settings came from (quantize_config.json or config.json).
    public let configPath: String
    public let checkpoint: Checkpoint

    /// The folder's GPTQ settings: quantize_config.json, else config.json's
    /// `quantization_config`; nil when the folder has neither (a float model).
    public static func config(folder: String) throws -> (config: QuantizeConfig, path: String)? {
        let quantizePath = FileIO.join(folder, "quantize_config.json")
        if FileIO.exists(quantizePath) { return (try QuantizeConfig(path: quantizePath), quantizePath) }
        let configPath = FileIO.join(folder, "config.json")
        guard FileIO.exists(configPath), let settings = try JSON.read(path: configPath)["quantization_config"], !settings.isNull else {
            return nil
        }
        return (try QuantizeConfig(json: settings, path: configPath), configPath)
    }

    /// nil when the folder is not GPTQ-quantized.
    public init?(folder: String, checkpoint: Checkpoint) throws {
        guard let (config, path) = try Self.config(folder: folder) else { return nil }
        self.config = config
        configPath = path
        self.checkpoint = checkpoint
    }

    /// The packed tensors of module `name` (e.g. "model.layers.0.mlp.up_proj"), nil when
    /// the checkpoint stores it unquantized. The qweight must be the `bits`-bit packing of
    /// the model's [outFeatures, inFeatures].
    public func packedLinear(_ name: String, inFeatures: Int, outFeatures: Int) throws -> PackedLinear? {
        guard checkpoint.contains(name + ".qweight") else { return nil }
        let (bits, groupSize) = config.packing(ofModule: name)
        let expected = [inFeatures * bits / 32, outFeatures]
        let shape = checkpoint.entry(name + ".qweight")?.shape ?? []
        guard inFeatures * bits % 32 == 0, shape == expected else {
            throw GPTQError.badTensor(name: name + ".qweight", path: checkpoint.folder,
                                      reason: "shape \(shape); \(bits)-bit packing of [\(outFeatures), \(inFeatures)] needs \(expected)")
        }
        let layer = try PackedLinear.load(from: checkpoint, prefix: name, bits: bits, groupSize: groupSize,
                                          format: config.checkpointFormat)
        if !config.packsV1LikeGPTQModel {
            let words = layer.autoGPTQOverflowWords()
            if !words.isEmpty {
                let listed = words.prefix(8).map { "[\($0.group), \($0.word)]" }.joined(separator: ", ") + (words.count > 8 ? ", …" : "")
                throw GPTQError.badTensor(name: name + ".qzeros", path: checkpoint.path(of: name + ".qzeros"), reason: """
                    \(words.count) v1 words [group, word] hold AutoGPTQ's packing of a zero point of 0, which overwrote the \
                    zero points above it in the word: \(listed). No reading recovers them (\(configPath) names no \
                    gptqmodel ≥ 0.9.0 quantizer, whose packing would explain them); quantize again, saving as gptq_v2
                    """)
            }
        }
        return layer
    }

    /// Makes a GPTQLinear for every quantized module, nil (float) for the others.
    public var linearFactory: LinearFactory {
        { name, inFeatures, outFeatures in
            try packedLinear(name, inFeatures: inFeatures, outFeatures: outFeatures).map { GPTQLinear($0) }
        }
    }
}
