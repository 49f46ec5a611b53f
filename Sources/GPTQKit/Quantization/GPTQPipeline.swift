/// How each linear weight is quantized.
public enum QuantizationMethod: String, Sendable, CaseIterable {
    /// GPTQ with Hessians from calibration activations, layer by layer.
    case gptq
    /// Round to nearest on the same grid (per-group min/max), no calibration: the baseline GPTQ improves on.
    case rtn
}

/// One linear module quantized, as the pipeline reports it.
public struct QuantizationProgress: Sendable {
    /// 0-based layer index.
    public let layer: Int
    public let layers: Int
    /// Module inside the layer, e.g. `self_attn.q_proj`.
    public let module: String
    public let method: QuantizationMethod
    /// The module's quantization: the fake-quantized weight the rest of the layer saw, its grid, GPTQ's loss.
    public let result: GPTQResult
    /// Seconds spent quantizing this module.
    public let seconds: Double
    /// Estimated seconds left, from the average time per layer so far.
    public let remaining: Double

    /// GPTQ's loss (nil for RTN, which has none).
    public var loss: Double? { method == .gptq ? result.loss : nil }
    /// What went differently from the plan (raised damping after a failed Cholesky factorisation).
    public var warnings: [String] { result.warnings }

    /// `layer 3/30 self_attn.q_proj  loss 12.345  0.8 s  ETA 4m12s`
    public var line: String {
        var text = "layer \(layer + 1)/\(layers) \(module)"
        if let loss { text += "  loss \(Self.decimal(loss, places: 3))" }
        text += "  \(Self.decimal(seconds, places: 1)) s"
        text += "  ETA \(Self.duration(remaining))"
        return text
    }

    static func decimal(_ value: Double, places: Int) -> String {
        guard value.isFinite else { return String(value) }
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        let whole = Int(scaled / scale), fraction = Int(scaled) - whole * Int(scale)
        let digits = String(fraction)
        return (value < 0 && scaled > 0 ? "-" : "") + "\(whole)" + (places > 0 ? "." + String(repeating: "0", count: places - digits.count) + digits : "")
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(s % 3600 / 60)m" : s >= 60 ? "\(s / 60)m\(s % 60)s" : "\(s)s"
    }
}

/// AutoGPTQ's quantize() flow for a decoder-only model.
///
/// Every calibration sample is embedded and becomes one causal sequence (positions
/// 0..<count, no padding). Then layer by layer: for each true-sequential group of the
/// family, the layer runs on every sample while observers accumulate the Hessians of the
/// group's linears; each linear is quantized with GPTQ and replaced by its fake-quantized
/// weight, so that the next group sees quantized inputs. Finally the layer's outputs are
/// recomputed with the quantized layer and become the next layer's inputs, and the layer's
/// linears become GPTQLinear layers. Memory: the activations of the samples, one layer's
/// float weights and the Hessians of one group.
public enum GPTQPipeline {
    /// Quantizes `model` in place (afterwards it runs the quantized network) and returns
    /// the packed tensors, ready to save. `calibration` is ignored by RTN.
    /// `engine` accumulates the Hessians and runs GPTQ (the CPU by default); the layer
    /// forwards run on the CPU (quantizeOnGPU runs them on the GPU too).
    public static func quantize<Engine: GPTQEngine>(_ model: LanguageModel, config: QuantizeConfig, calibration: [[Int32]],
                                                    method: QuantizationMethod = .gptq, engine: Engine = CPUGPTQEngine(),
                                                    progress: ((QuantizationProgress) -> Void)? = nil) throws -> QuantizedModel {
        try validate(model, config: config, method: method)
        if method == .gptq { try validate(calibration, vocabSize: model.vocabSize) }
        let forward = method == .gptq ? CPUCalibrationForward(model: model, hidden: try calibration.map { try model.embed($0) }, engine: engine) : nil
        return try run(model, config: config, method: method, forward: forward, progress: progress)
    }

    /// The layer-by-layer loop, with the forwards and GPTQ wherever `forward` runs them (nil for RTN).
    static func run<Forward: CalibrationForward>(_ model: LanguageModel, config: QuantizeConfig, method: QuantizationMethod,
                                                 forward: Forward?, progress: ((QuantizationProgress) -> Void)?) throws -> QuantizedModel {
        let architecture = model.architecture
        let groups = config.trueSequential ? architecture.quantizationGroups : [architecture.quantizationGroups.flatMap { $0 }]
        let modulesPerLayer = groups.reduce(0) { $0 + $1.count }
        let clock = ContinuousClock()
        let start = clock.now
        var packed: [String: PackedLinear] = [:]
        var losses: [String: Double] = [:]

        for layer in 0..<model.numLayers {
            var modulesDone = 0
            let layerStart = clock.now
            let beforeLayer = elapsedSeconds(since: start, clock)
            func report(_ module: String, _ result: GPTQResult, seconds: Double) {
                modulesDone += 1
                // From the average time of the finished layers; within the first, from the share of modules done.
                let inLayer = elapsedSeconds(since: layerStart, clock)
                let perLayer = layer > 0 ? beforeLayer / Double(layer) : inLayer * Double(modulesPerLayer) / Double(modulesDone)
                let leftInLayer = modulesDone == modulesPerLayer ? 0 : max(0, perLayer - inLayer)
                let remaining = perLayer * Double(model.numLayers - layer - 1) + leftInLayer
                progress?(QuantizationProgress(layer: layer, layers: model.numLayers, module: module, method: method, result: result,
                                               seconds: seconds, remaining: remaining))
            }
            for group in groups {
                let hessians = try forward?.hessians(layer: layer, modules: group) ?? [:]
                for module in group {
                    let moduleStart = clock.now
                    let name = model.tensorName(layer: layer, module: module)
                    let (weight, bias) = try floatWeights(model, layer: layer, module: module)
                    let result = try forward.map { try $0.quantize(weight: weight, hessian: hessians[module]!, config: config) }
                        ?? RoundToNearest.quantize(weight: weight, columns: model.layerLinear(layer, module).inFeatures, config: config)
                    packed[name] = try PackedLinear.pack(result, bias: bias, format: config.checkpointFormat, name: name)
                    losses[name] = result.loss
                    try forward?.replace(layer: layer, module: module, q: result.q, bias: bias)
                    report(module, result, seconds: elapsedSeconds(since: moduleStart, clock))
                }
            }
            try forward?.advance(layer: layer)
            for module in architecture.linears.map(\.name) {
                if let layerPacked = packed[model.tensorName(layer: layer, module: module)] { model.setLayerLinear(layer, module, GPTQLinear(layerPacked)) }
            }
        }
        if config.lmHead {
            // GPTQModel's lm_head: quantized last, from what the quantized layers feed it.
            let headStart = clock.now
            let (weight, bias, name) = try model.storedHeadWeights()
            let result = try forward.map { try $0.quantize(weight: weight.floats(), hessian: try $0.headHessian(of: model), config: config) }
                ?? RoundToNearest.quantize(weight: weight.floats(), columns: model.lmHead.inFeatures, config: config)
            let head = try PackedLinear.pack(result, bias: bias, format: config.checkpointFormat, name: name)
            packed[name] = head
            losses[name] = result.loss
            model.lmHead = GPTQLinear(head)
            progress?(QuantizationProgress(layer: model.numLayers - 1, layers: model.numLayers, module: name, method: method, result: result,
                                           seconds: elapsedSeconds(since: headStart, clock), remaining: 0))
        }
        return QuantizedModel(model: model, config: config, method: method, packed: packed, losses: losses,
                              seconds: elapsedSeconds(since: start, clock))
    }

    /// Every configuration problem found before any work starts, naming the module at fault.
    static func validate(_ model: LanguageModel, config: QuantizeConfig, method: QuantizationMethod) throws {
        try config.validate()
        if method == .rtn, config.descAct {
            throw GPTQError.invalidArgument("desc_act orders columns by GPTQ's Hessian; round-to-nearest has none")
        }
        for module in model.architecture.linears {
            let linear = model.layerLinear(0, module.name)
            let (inFeatures, outFeatures) = (linear.inFeatures, linear.outFeatures)
            guard inFeatures * config.bits % 32 == 0, outFeatures * config.bits % 32 == 0 else {
                throw GPTQError.invalidArgument("\(module.name) is [\(outFeatures), \(inFeatures)]: \(config.bits)-bit packing needs in_features and out_features × \(config.bits) to be multiples of 32")
            }
            let name = model.tensorName(layer: 0, module: module.name) + ".weight"
            guard model.checkpoint.contains(name) else {
                throw GPTQError.missingTensor(name: name, path: model.checkpoint.folder)
            }
        }
        if config.lmHead {
            let head = model.lmHead
            guard head is DenseLinear else {
                throw GPTQError.invalidArgument("the LM head is already a \(type(of: head)); only a float head can be quantized")
            }
            guard head.inFeatures * config.bits % 32 == 0, head.outFeatures * config.bits % 32 == 0 else {
                throw GPTQError.invalidArgument("the LM head is [\(head.outFeatures), \(head.inFeatures)]: \(config.bits)-bit packing needs in_features and out_features × \(config.bits) to be multiples of 32")
            }
        }
    }

    static func validate(_ calibration: [[Int32]], vocabSize: Int) throws {
        guard !calibration.isEmpty else { throw GPTQError.invalidArgument("GPTQ needs calibration samples; none were given") }
        for (i, sample) in calibration.enumerated() {
            guard !sample.isEmpty else { throw GPTQError.invalidArgument("calibration sample \(i) is empty") }
            if let bad = sample.first(where: { $0 < 0 || Int($0) >= vocabSize }) {
                throw GPTQError.invalidArgument("calibration sample \(i) has token id \(bad), outside the vocabulary of \(vocabSize)")
            }
        }
    }

    /// The module's weight [out, in] as float32 from the checkpoint (a Conv1D's transposed), and its bias.
    static func floatWeights(_ model: LanguageModel, layer: Int, module: String) throws -> ([Float], [Float]?) {
        let (weight, bias) = try model.storedWeights(layer: layer, module: module)
        return (weight.floats(), bias)
    }

    /// Runs layer `layer` on every sample and accumulates the Hessian of each of `modules`.
    /// The forward stops at the input of the group's last module in execution order (for
    /// q/k/v that is before attention). Modules that read the very same input (q/k/v,
    /// gate/up) share one accumulator: their Hessians would be identical. Sharing is decided
    /// on the first sample by comparing the inputs themselves.
    static func collectHessians<Engine: GPTQEngine>(_ model: LanguageModel, layer: Int, modules: [String], hidden: [[Float]],
                                                    engine: Engine) throws -> [String: Engine.Hessian] {
        let wanted = Set(modules)
        let last = model.architecture.linears.last { wanted.contains($0.name) }?.name
        let hiddenSize = model.hiddenSize
        var owner: [String: String] = [:]
        var accumulators: [String: Engine.Hessian] = [:]
        // The observer cannot throw: the first error stops the accumulation and is thrown after the forward.
        var failure: Error?
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: hidden.map(\.count).max() ?? 0)
        defer { scratch.deallocate() }
        for (s, sample) in hidden.enumerated() {
            sample.withUnsafeBufferPointer { scratch.update(from: $0.baseAddress!, count: $0.count) }
            // (module, input, a copy of it) seen so far in this sample's forward.
            var seen: [(module: String, input: UnsafePointer<Float>, copy: [Float])] = []
            model.layerForward(layer, hidden: scratch, tokens: sample.count / hiddenSize, stopAfter: last) { module, input, rows in
                guard wanted.contains(module), failure == nil else { return }
                let columns = model.layerLinear(layer, module).inFeatures
                let count = rows * columns
                if s == 0 {
                    let twin = seen.first { earlier in
                        earlier.input == input && earlier.copy.count == count
                            && earlier.copy.withUnsafeBufferPointer { $0.elementsEqual(UnsafeBufferPointer(start: input, count: count)) }
                    }
                    owner[module] = twin.map { owner[$0.module]! } ?? module
                    if twin == nil {
                        do { accumulators[module] = try engine.makeHessian(columns: columns) } catch { failure = error; return }
                    }
                    seen.append((module, input, Array(UnsafeBufferPointer(start: input, count: count))))
                }
                if owner[module] == module {
                    do { try engine.add(input, count: rows, to: &accumulators[module]!) } catch { failure = error }
                }
            }
            if let failure { throw failure }
        }
        return owner.mapValues { accumulators[$0]! }
    }

    /// The layer's outputs with its quantized weights: the next layer's inputs.
    static func recomputeOutputs(_ model: LanguageModel, layer: Int, hidden: inout [[Float]]) {
        for s in hidden.indices {
            let tokens = hidden[s].count / model.hiddenSize
            hidden[s].withUnsafeMutableBufferPointer { model.layerForward(layer, hidden: $0.baseAddress!, tokens: tokens, observe: nil) }
        }
    }

    static func elapsedSeconds(since start: ContinuousClock.Instant, _ clock: ContinuousClock) -> Double {
        let d = clock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }
}
