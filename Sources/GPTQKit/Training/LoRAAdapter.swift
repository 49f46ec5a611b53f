import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// LoRA's hyperparameters, as PEFT's LoraConfig names them.
public struct LoRAConfig: Sendable, Equatable {
    /// PEFT's `r`.
    public var rank: Int
    /// PEFT's `lora_alpha`.
    public var alpha: Double
    /// PEFT's `lora_dropout`: the probability an input element of the adapter is dropped in training.
    public var dropout: Double
    /// PEFT's `use_rslora`: scale by alpha/√r instead of alpha/r.
    public var useRSLoRA: Bool
    /// PEFT's `target_modules`: a module is adapted when its full name equals an entry or ends
    /// with "." + the entry (`q_proj` adapts `model.layers.3.self_attn.q_proj`).
    public var targetModules: [String]

    public init(rank: Int, alpha: Double, dropout: Double = 0, useRSLoRA: Bool = false, targetModules: [String]) {
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.useRSLoRA = useRSLoRA
        self.targetModules = targetModules
    }

    /// The factor of B·A: PEFT's `scaling`.
    public var scaling: Float { Float(useRSLoRA ? alpha / Double(rank).squareRoot() : alpha / Double(rank)) }

    func validate() throws {
        guard rank > 0 else { throw GPTQError.invalidArgument("LoRA rank (r, --lora-r) must be positive, got \(rank)") }
        guard alpha.isFinite, alpha > 0 else { throw GPTQError.invalidArgument("LoRA alpha (lora_alpha, --lora-alpha) must be positive, got \(alpha)") }
        guard dropout >= 0, dropout < 1 else { throw GPTQError.invalidArgument("LoRA dropout (lora_dropout, --lora-dropout) must be in [0, 1), got \(dropout)") }
        guard !targetModules.isEmpty else { throw GPTQError.invalidArgument("LoRA needs at least one target module (target_modules, --target-modules)") }
    }

    /// Whether module `name` (a full name) is one of the targets, by PEFT's rule.
    func targets(_ name: String) -> Bool { targetModules.contains { name == $0 || name.hasSuffix("." + $0) } }
}

/// A LoRA adapter installed on a model's decoder-layer linears: each target module's linear
/// is replaced by a LoRALinear around it (unmerged: the base stays as stored, float or GPTQ).
/// Saved and loaded in PEFT's format (adapter_config.json, adapter_model.safetensors with
/// `base_model.model.<module>.lora_A.weight` / `lora_B.weight`).
public final class LoRAAdapter: @unchecked Sendable {
    public let config: LoRAConfig
    /// The adapted modules in layer order: full (transformers) name, layer, module inside the layer.
    public let modules: [(name: String, layer: Int, module: String, linear: LoRALinear)]

    private init(config: LoRAConfig, modules: [(name: String, layer: Int, module: String, linear: LoRALinear)]) {
        self.config = config
        self.modules = modules
    }

    /// The decoder-layer linears `config` targets, with an error naming what does not exist.
    static func targetedModules(_ model: LanguageModel, _ config: LoRAConfig) throws -> [(name: String, layer: Int, module: String)] {
        let a = model.architecture
        var found: [(name: String, layer: Int, module: String)] = []
        for layer in 0..<a.layers {
            for module in a.linears where config.targets(a.layerModule(layer, module.name)) {
                found.append((a.layerModule(layer, module.name), layer, module.name))
            }
        }
        let available = a.linears.map { String($0.name.split(separator: ".").last!) }
        for target in config.targetModules where !found.contains(where: { $0.name == target || $0.name.hasSuffix("." + target) }) {
            throw GPTQError.invalidArgument("target module '\(target)' matches no linear of the \(model.family.name) model's layers (its linears: \(available.joined(separator: ", ")))")
        }
        return found
    }

    /// Installs a new adapter on `model` as PEFT initialises one: A ~ U(−1/√in, 1/√in)
    /// (kaiming_uniform with a = √5), B = 0, so that the model's function is unchanged.
    public static func create(on model: LanguageModel, config: LoRAConfig, seed: UInt64) throws -> LoRAAdapter {
        try config.validate()
        var random = Xoshiro256StarStar(seed: seed)
        let targets = try targetedModules(model, config)
        let modules = try targets.map { target in
            let base = try frozenBase(model, target.layer, target.module)
            let bound = 1 / Float(base.inFeatures).squareRoot()
            let a = (0..<config.rank * base.inFeatures).map { _ in Float(random.nextUnit() * 2 - 1) * bound }
            let linear = LoRALinear(base: base, rank: config.rank, scaling: config.scaling, dropout: Float(config.dropout), a: a,
                                    b: [Float](repeating: 0, count: base.outFeatures * config.rank))
            return (target.name, target.layer, target.module, linear)
        }
        let adapter = LoRAAdapter(config: config, modules: modules)
        adapter.install(on: model)
        return adapter
    }

    private static func frozenBase(_ model: LanguageModel, _ layer: Int, _ module: String) throws -> LinearLayer {
        let base = model.layerLinear(layer, module)
        guard !(base is LoRALinear) else {
            throw GPTQError.invalidArgument("layer \(layer) \(module) already carries a LoRA adapter; remove it first")
        }
        guard base is DifferentiableLinear else {
            throw GPTQError.unsupported("layer \(layer) \(module): LoRA needs a float or GPTQ base linear, not \(type(of: base))")
        }
        return base
    }

    private func install(on model: LanguageModel) {
        for module in modules { model.setLayerLinear(module.layer, module.module, module.linear) }
    }

    /// Puts the base linears back (the model runs without the adapter).
    public func remove(from model: LanguageModel) {
        for module in modules where model.layerLinear(module.layer, module.module) === module.linear {
            model.setLayerLinear(module.layer, module.module, module.linear.base)
        }
    }

    // MARK: PEFT's format

    static let configFile = "adapter_config.json", weightsFile = "adapter_model.safetensors"
    /// AdamW's step and moments beside the adapter, to resume training.
    static let trainingStateFile = "training_state.safetensors"
    static let prefix = "base_model.model."

    /// The tensors as PEFT saves them: `base_model.model.<module>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r].
    public var tensors: [(String, Tensor)] {
        modules.flatMap { module in
            [(Self.prefix + module.name + ".lora_A.weight", Tensor(module.linear.a, shape: [config.rank, module.linear.inFeatures])),
             (Self.prefix + module.name + ".lora_B.weight", Tensor(module.linear.b, shape: [module.linear.outFeatures, config.rank]))]
        }
    }

    /// adapter_config.json as PEFT's LoraConfig writes it (the fields PEFT needs to rebuild the adapter).
    func peftConfig(baseModel: String, fanInFanOut: Bool) -> JSON {
        let targets = config.targetModules.map { JSON.string($0) }
        return .object([
            ("alpha_pattern", .object([])), ("base_model_name_or_path", .string(baseModel)), ("bias", .string("none")),
            ("fan_in_fan_out", .bool(fanInFanOut)), ("inference_mode", .bool(true)), ("init_lora_weights", .bool(true)),
            ("layers_pattern", .null), ("layers_to_transform", .null), ("lora_alpha", .number(config.alpha)),
            ("lora_dropout", .number(config.dropout)), ("modules_to_save", .null), ("peft_type", .string("LORA")),
            ("r", .number(Double(config.rank))), ("rank_pattern", .object([])), ("target_modules", .array(targets)),
            ("task_type", .string("CAUSAL_LM")), ("use_dora", .bool(false)), ("use_rslora", .bool(config.useRSLoRA)),
        ])
    }

    /// Writes adapter_config.json and adapter_model.safetensors into `folder`, atomically
    /// (a temporary folder renamed into place; an existing adapter folder is replaced).
    /// `baseModel`: what adapter_config.json names as the base (PEFT's base_model_name_or_path).
    /// With `optimizer`, training_state.safetensors too (see restoreTrainingState).
    public func save(to folder: String, baseModel: String, model: LanguageModel, optimizer: AdamW? = nil) throws {
        let folder = folder.count > 1 && folder.hasSuffix("/") ? String(folder.dropLast()) : folder
        if FileIO.exists(folder), !FileIO.isDirectory(folder) {
            throw GPTQError.invalidArgument("adapter output \(folder) exists and is not a folder")
        }
        let temp = folder + ".tmp-\(getpid())"
        try FileIO.removeTree(temp)
        try FileIO.makeDirectory(temp)
        do {
            try SafetensorsWriter.write(path: FileIO.join(temp, Self.weightsFile), tensors: tensors)
            let config = peftConfig(baseModel: baseModel, fanInFanOut: model.architecture.weightLayout == .conv1D)
            try FileIO.writeAtomically(path: FileIO.join(temp, Self.configFile), text: config.serialized() + "\n")
            if let optimizer {
                let moments = optimizer.state.flatMap { [("adam_m:\($0.index)", Tensor($0.m, shape: [$0.m.count])), ("adam_v:\($0.index)", Tensor($0.v, shape: [$0.v.count]))] }
                try SafetensorsWriter.write(path: FileIO.join(temp, Self.trainingStateFile), tensors: moments,
                                            metadata: ["format": "pt", "step": String(optimizer.step)])
            }
        } catch {
            try? FileIO.removeTree(temp)
            throw error
        }
        try CheckpointWriter.publish(temp, as: folder)
    }

    /// Loads a LoRA adapter PEFT saved (or `save` wrote) and installs it on `model`.
    /// Errors name the file and the field or tensor: another PEFT method, DoRA or per-module
    /// ranks, a module the model lacks, a shape that does not fit (an adapter of another base).
    public static func load(folder: String, into model: LanguageModel) throws -> LoRAAdapter {
        let configPath = FileIO.join(folder, configFile), weightsPath = FileIO.join(folder, weightsFile)
        guard FileIO.exists(configPath) else { throw GPTQError.invalidFile(path: configPath, reason: "no adapter_config.json: not a PEFT adapter folder") }
        let json = try JSON.read(path: configPath)
        func field(_ name: String, _ reason: String) -> GPTQError { .badConfig(field: name, path: configPath, reason: reason) }
        guard json["peft_type"]?.string == "LORA" else { throw field("peft_type", "'\(json["peft_type"]?.string ?? "missing")' is not LORA, the one PEFT method loaded here") }
        guard let rank = json["r"]?.int else { throw field("r", "missing or not an integer") }
        guard let alpha = json["lora_alpha"]?.double else { throw field("lora_alpha", "missing or not a number") }
        if json["use_dora"]?.bool == true { throw field("use_dora", "DoRA adapters are not supported") }
        for name in ["rank_pattern", "alpha_pattern"] where !(json[name]?.object?.isEmpty ?? true) {
            throw field(name, "per-module ranks and alphas are not supported")
        }
        if let layers = json["layers_to_transform"], !layers.isNull { throw field("layers_to_transform", "not supported") }
        let targets: [String]
        if let list = json["target_modules"]?.array {
            targets = list.compactMap(\.string)
        } else if let single = json["target_modules"]?.string {
            throw field("target_modules", "a regular expression ('\(single)') is not supported; give a list of module names")
        } else {
            throw field("target_modules", "missing")
        }
        let config = LoRAConfig(rank: rank, alpha: alpha, dropout: json["lora_dropout"]?.double ?? 0,
                                useRSLoRA: json["use_rslora"]?.bool ?? false, targetModules: targets)
        do { try config.validate() } catch { throw field("r", "\(error)") }

        guard FileIO.exists(weightsPath) else { throw GPTQError.invalidFile(path: weightsPath, reason: "missing: the adapter's weights") }
        let file = try SafetensorsFile(path: weightsPath)
        let a = model.architecture
        var byName: [String: (layer: Int, module: String)] = [:]
        for layer in 0..<a.layers { for module in a.linears { byName[a.layerModule(layer, module.name)] = (layer, module.name) } }
        var factors: [String: (a: Tensor?, b: Tensor?)] = [:]
        for name in file.names {
            guard name.hasPrefix(prefix), name.hasSuffix(".lora_A.weight") || name.hasSuffix(".lora_B.weight") else {
                throw GPTQError.badTensor(name: name, path: weightsPath, reason: "not a LoRA factor (base_model.model.<module>.lora_A.weight or .lora_B.weight)")
            }
            let module = String(name.dropFirst(prefix.count).dropLast(".lora_A.weight".count))
            guard byName[module] != nil else {
                throw GPTQError.badTensor(name: name, path: weightsPath, reason: "the \(model.family.name) model has no linear '\(module)' in its layers: an adapter of another base?")
            }
            if name.hasSuffix(".lora_A.weight") { factors[module, default: (nil, nil)].a = try file.tensor(name) } else { factors[module, default: (nil, nil)].b = try file.tensor(name) }
        }
        guard !factors.isEmpty else { throw GPTQError.invalidFile(path: weightsPath, reason: "holds no LoRA factors") }
        var modules: [(name: String, layer: Int, module: String, linear: LoRALinear)] = []
        for (layer, spec) in (0..<a.layers).flatMap({ layer in a.linears.map { (layer, $0) } }) {
            let name = a.layerModule(layer, spec.name), place = (layer: layer, module: spec.name)
            guard let pair = factors[name] else { continue }
            guard let tensorA = pair.a, let tensorB = pair.b else {
                throw GPTQError.missingTensor(name: prefix + name + (pair.a == nil ? ".lora_A.weight" : ".lora_B.weight"), path: weightsPath)
            }
            let base = try frozenBase(model, place.layer, place.module)
            for (tensor, suffix, shape) in [(tensorA, ".lora_A.weight", [rank, base.inFeatures]), (tensorB, ".lora_B.weight", [base.outFeatures, rank])] {
                guard tensor.shape == shape, [.f16, .bf16, .f32].contains(tensor.dtype) else {
                    throw GPTQError.badTensor(name: prefix + name + suffix, path: weightsPath,
                                              reason: "shape \(tensor.shape) \(tensor.dtype.rawValue), expected \(shape) float for r = \(rank) on this model: an adapter of another base?")
                }
            }
            let linear = LoRALinear(base: base, rank: rank, scaling: config.scaling, dropout: Float(config.dropout),
                                    a: tensorA.floats(), b: tensorB.floats())
            modules.append((name, place.layer, place.module, linear))
        }
        let adapter = LoRAAdapter(config: config, modules: modules)
        adapter.install(on: model)
        return adapter
    }

    /// Restores the optimizer state `save(…, optimizer:)` wrote into `folder` (this adapter's
    /// factors being the ones loaded from there): the step count and each factor's moments.
    public func restoreTrainingState(from folder: String, into optimizer: AdamW) throws {
        let path = FileIO.join(folder, Self.trainingStateFile)
        guard FileIO.exists(path) else { throw GPTQError.invalidFile(path: path, reason: "missing: \(folder) is not a checkpoint of gptq finetune (nothing to resume)") }
        let file = try SafetensorsFile(path: path)
        guard let step = file.metadata["step"].flatMap({ Int($0) }), step >= 0 else {
            throw GPTQError.invalidFile(path: path, reason: "metadata 'step' missing or not a count")
        }
        var state: [(index: Int, m: [Float], v: [Float])] = []
        for index in 0..<2 * modules.count {
            let module = modules[index / 2].linear, count = index % 2 == 0 ? module.a.count : module.b.count
            guard file.contains("adam_m:\(index)") else { continue }  // a factor not yet updated has no moments
            let m = try file.tensor("adam_m:\(index)"), v = try file.tensor("adam_v:\(index)")
            guard m.shape == [count], v.shape == [count] else {
                throw GPTQError.badTensor(name: "adam_m:\(index)", path: path, reason: "\(m.shape[0]) moments for a factor of \(count) values: the state of another adapter")
            }
            state.append((index, m.floats(), v.floats()))
        }
        optimizer.restore(step: step, state: state)
    }
}
