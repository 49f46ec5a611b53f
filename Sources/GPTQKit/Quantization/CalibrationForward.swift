/// Where GPTQPipeline's calibration activations live and the layer forwards run: the CPU's
/// LanguageModel (CPUCalibrationForward, GPTQ through any GPTQEngine) or the GPU's
/// CUDASession (CUDACalibrationForward). The pipeline's loop, its order of groups and
/// modules, packing and progress are the same for both.
protocol CalibrationForward {
    associatedtype Hessian
    /// Runs layer `layer` on every sample and returns the Hessian of each of `modules`
    /// (modules reading the same input share one).
    func hessians(layer: Int, modules: [String]) throws -> [String: Hessian]
    func quantize(weight: [Float], hessian: Hessian, config: QuantizeConfig) throws -> GPTQResult
    /// GPTQ quantized `module`: the layer's later forwards use `q` ([out, in] row-major).
    func replace(layer: Int, module: String, q: [Float], bias: [Float]?) throws
    /// The layer's outputs, recomputed with its quantized weights, become the next layer's inputs.
    func advance(layer: Int) throws
    /// After the last layer: the Hessian of the LM head's inputs (`model.headInput` of every
    /// sample's outputs of the quantized layers: the final norm's, through project_out).
    func headHessian(of model: LanguageModel) throws -> Hessian
}

/// The activations in host memory, the forwards on the CPU, the Hessians and GPTQ on `engine`.
final class CPUCalibrationForward<Engine: GPTQEngine>: CalibrationForward {
    let model: LanguageModel
    var hidden: [[Float]]
    let engine: Engine

    init(model: LanguageModel, hidden: [[Float]], engine: Engine) {
        self.model = model
        self.hidden = hidden
        self.engine = engine
    }

    func hessians(layer: Int, modules: [String]) throws -> [String: Engine.Hessian] {
        try GPTQPipeline.collectHessians(model, layer: layer, modules: modules, hidden: hidden, engine: engine)
    }

    func quantize(weight: [Float], hessian: Engine.Hessian, config: QuantizeConfig) throws -> GPTQResult {
        try engine.quantize(weight: weight, hessian: hessian, config: config)
    }

    func replace(layer: Int, module: String, q: [Float], bias: [Float]?) {
        let linear = model.layerLinear(layer, module)
        model.setLayerLinear(layer, module, DenseLinear(weight: Tensor(q, shape: [linear.outFeatures, linear.inFeatures]), bias: bias))
    }

    func advance(layer: Int) {
        GPTQPipeline.recomputeOutputs(model, layer: layer, hidden: &hidden)
    }

    func headHessian(of model: LanguageModel) throws -> Engine.Hessian {
        var hessian = try engine.makeHessian(columns: model.lmHead.inFeatures)
        for sample in hidden {
            let input = model.headInput(sample, rows: sample.count / model.hiddenSize)
            try engine.add(input, count: sample.count / model.hiddenSize, to: &hessian)
        }
        return hessian
    }
}
