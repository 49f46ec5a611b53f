/// The outcome of GPTQPipeline.quantize: the model (now running its quantized linears)
/// and the packed tensors of every quantized module, ready to be saved.
public final class QuantizedModel: @unchecked Sendable {
    /// The quantized network: its decoder linears are GPTQLinear layers.
    public let model: LanguageModel
    /// The settings as saved.
    public let config: QuantizeConfig
    public let method: QuantizationMethod
    /// Packed layers by full module name (`model.layers.0.self_attn.q_proj`).
    public let packed: [String: PackedLinear]
    /// GPTQ's loss per module (0 for RTN).
    public let losses: [String: Double]
    /// Wall time of the quantization.
    public let seconds: Double

    init(model: LanguageModel, config: QuantizeConfig, method: QuantizationMethod, packed: [String: PackedLinear],
         losses: [String: Double], seconds: Double) {
        self.model = model
        self.config = config
        self.method = method
        self.packed = packed
        self.losses = losses
        self.seconds = seconds
    }

    /// What the checkpoint holds: for each quantized module its qweight/qzeros/scales/g_idx
    /// (and bias), in place of its weight; every other tensor of the source checkpoint in
    /// float16, as AutoGPTQ saves the unquantized modules in the model's dtype. Tensors
    /// stored under a legacy name are saved under the current one (TensorNames.current).
    public func tensors() throws -> [(String, Tensor)] {
        var list: [(String, Tensor)] = []
        for name in model.checkpoint.tensorNames {
            let module = [".weight", ".bias"].first(where: name.hasSuffix).map { String(name.dropLast($0.count)) }
            if let module, let layer = packed[module] {
                if name.hasSuffix(".weight") { list += layer.tensors(prefix: model.names.current(module)) }
                continue
            }
            let tensor = try model.checkpoint.tensor(name)
            list.append((model.names.current(name), tensor.dtype.isFloatingPoint ? tensor.converted(to: .f16) : tensor))
        }
        // A head quantized from the tied embedding, which stays float: the head has no weight of its own in the source.
        for module in packed.keys.sorted() where !model.checkpoint.contains(module + ".weight") {
            list += packed[module]!.tensors(prefix: model.names.current(module))
        }
        return list
    }

    /// quantize_config.json as AutoGPTQ's save_quantized writes it (model_name_or_path: the folder).
    public func quantizeConfigJSON(folder: String) -> JSON {
        config.json.setting("model_name_or_path", .string(folder))
    }

    /// Saves an AutoGPTQ-format folder atomically (see CheckpointWriter): model.safetensors
    /// (sharded past `maxShardBytes`), quantize_config.json, config.json with
    /// `quantization_config`, and the source's tokenizer and generation files.
    public func save(to folder: String, maxShardBytes: Int? = nil, overwrite: Bool = false) throws {
        try CheckpointWriter.write(to: folder, source: model.checkpoint.folder, tensors: try tensors(),
                                   quantizationConfig: quantizeConfigJSON(folder: folder),
                                   untiesHead: config.lmHead && (try model.architecture.tiesHead(checkpoint: model.checkpoint)),
                                   maxShardBytes: maxShardBytes, overwrite: overwrite)
    }
}
