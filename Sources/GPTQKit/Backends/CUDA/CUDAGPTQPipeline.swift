import CCUDA
import CKernels

extension GPTQPipeline {
    /// GPTQPipeline.quantize with everything on the GPU: the calibration activations
    /// (float16), the layer forwards (CUDASession.layerForward of the float model loaded as
    /// a CUDAModel, its weights replaced by each quantized module's float16 Q as the groups
    /// go), the Hessians (float16 activations, float32 products on the tensor cores) and
    /// GPTQ (`gptq`). The CPU model supplies the embeddings, the float32 weights GPTQ starts
    /// from, and becomes the quantized model as with the CPU path.
    public static func quantizeOnGPU(_ model: LanguageModel, config: QuantizeConfig, calibration: [[Int32]], gptq: CUDAGPTQ,
                                     progress: ((QuantizationProgress) -> Void)? = nil) throws -> QuantizedModel {
        try validate(model, config: config, method: .gptq)
        try validate(calibration, vocabSize: model.vocabSize)
        let forward = try CUDACalibrationForward(gptq: gptq, model: model, calibration: calibration)
        return try run(model, config: config, method: .gptq, forward: forward, progress: progress)
    }
}

/// The calibration activations on the GPU, as float16 [tokens, hidden] per sample.
package final class CUDACalibrationForward: CalibrationForward {
    let gptq: CUDAGPTQ
    let model: CUDAModel
    let session: CUDASession
    let hidden: [DeviceBuffer]
    let rows: [Int]
    /// One sample's activations, run through a layer to observe its linears' inputs.
    let scratch: DeviceBuffer

    /// `hidden[s]`: sample s's `rows[s]` embedded tokens, float16 [rows[s], model.hidden].
    package init(gptq: CUDAGPTQ, model: CUDAModel, hidden: [DeviceBuffer], rows: [Int]) throws {
        self.gptq = gptq
        self.model = model
        self.hidden = hidden
        self.rows = rows
        let longest = rows.max() ?? 1
        session = try model.makeSession(capacity: longest, prefillChunk: longest)
        scratch = try gptq.backend.device.allocate(bytes: longest * model.hidden * 2)
    }

    /// The float model of `model`'s folder on the GPU, the samples embedded by `model`.
    convenience init(gptq: CUDAGPTQ, model: LanguageModel, calibration: [[Int32]]) throws {
        let device = gptq.backend.device
        let hidden = try calibration.map { tokens in
            let embedded = Tensor(try model.embed(tokens), shape: [tokens.count * model.hiddenSize]).converted(to: .f16)
            return try device.upload(UnsafeRawBufferPointer(start: embedded.raw, count: embedded.byteCount))
        }
        try self.init(gptq: gptq, model: try CUDAModel.load(folder: model.checkpoint.folder, backend: gptq.backend), hidden: hidden,
                      rows: calibration.map(\.count))
    }

    /// The layer input a module reads, in CUDASession's terms.
    func input(of module: String) throws -> CUDASession.LinearInput {
        let a = model.architecture
        if module == a.attention.output { return .outputProjection }
        if module == a.mlp.down { return .downProjection }
        if module == a.mlp.up || module == a.mlp.gate { return .mlp }
        switch a.attention.projection {
        case let .separate(q, k, v) where [q, k, v].contains(module): return .attention
        case let .fused(name, _) where name == module: return .attention
        default: throw GPTQError.unsupported("GPTQ on the GPU: \(module) is not a linear of a \(a.layerPrefix) layer (\(a.linears.map(\.name)))")
        }
    }

    package func hessians(layer: Int, modules: [String]) throws -> [String: CUDAHessian] {
        var byInput: [CUDASession.LinearInput: CUDAHessian] = [:]
        for module in modules {
            let input = try input(of: module)
            if byInput[input] == nil {
                let columns = input == .downProjection ? model.intermediate : input == .outputProjection ? model.heads * model.headDim : model.hidden
                byInput[input] = try CUDAHessian(backend: gptq.backend, columns: columns)
            }
        }
        let stream = gptq.backend.stream
        for (s, sample) in hidden.enumerated() {
            try scratch.copy(from: sample, bytes: rows[s] * model.hidden * 2, stream: stream)
            try session.layerForward(layer, hidden: scratch, rows: rows[s]) { what, input, stride in
                try byInput[what]?.add(halfRows: input, stride: stride, count: self.rows[s])
            }
        }
        return try Dictionary(uniqueKeysWithValues: modules.map { ($0, byInput[try input(of: $0)]!) })
    }

    func quantize(weight: [Float], hessian: CUDAHessian, config: QuantizeConfig) throws -> GPTQResult {
        try gptq.quantize(weight: weight, hessian: hessian, config: config)
    }

    package func replace(layer: Int, module: String, q: [Float], bias: [Float]?) throws {
        try model.overwriteDenseWeight(layer: layer, module: module, values: q)
    }

    package func advance(layer: Int) throws {
        for (s, sample) in hidden.enumerated() { try session.layerForward(layer, hidden: sample, rows: rows[s]) }
    }

    /// The final layer's float16 outputs come back to the host, where `model` applies its
    /// final norm (and project_out); the GPU accumulates the products.
    func headHessian(of model: LanguageModel) throws -> CUDAHessian {
        let hessian = try CUDAHessian(backend: gptq.backend, columns: model.lmHead.inFeatures)
        for (s, sample) in hidden.enumerated() {
            let count = rows[s] * model.hiddenSize
            let half = try gptq.backend.device.download(sample, as: UInt16.self, count: count)
            let floats = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                ck_f16_to_f32(half, buffer.baseAddress!, count)
                initialized = count
            }
            try hessian.add(model.headInput(floats, rows: rows[s]), count: rows[s])
        }
        return hessian
    }
}

extension CUDAModel {
    /// Overwrites module `module`'s float16 weight in layer `layer` with `values` ([out, in]
    /// float32, rounded to float16), wherever q/k/v and gate/up were fused or placed (a fused
    /// q/k/v's rows in the order the GPU keeps them).
    func overwriteDenseWeight(layer: Int, module: String, values: [Float]) throws {
        let l = layers[layer], a = architecture
        var values = values
        let (placed, offset): ([PlacedLinear], Int)
        switch module {
        case a.attention.output: (placed, offset) = ([PlacedLinear(linear: l.output, column: 0)], 0)
        case a.mlp.down: (placed, offset) = ([PlacedLinear(linear: l.down, column: 0)], 0)
        case a.mlp.up: (placed, offset) = (l.gateUp, a.mlp.gate == nil ? 0 : intermediate)
        case a.mlp.gate: (placed, offset) = (l.gateUp, 0)
        default:
            switch a.attention.projection {
            case let .separate(q, k, v) where [q, k, v].contains(module):
                (placed, offset) = (l.qkv, module == q ? 0 : module == k ? heads * headDim : (heads + kvHeads) * headDim)
            case let .fused(name, _) where name == module:
                let inFeatures = hidden
                values = a.attention.fusedOutputOrder!.flatMap { values[($0 * inFeatures)..<(($0 + 1) * inFeatures)] }
                (placed, offset) = (l.qkv, 0)
            default:
                throw GPTQError.unsupported("GPTQ on the GPU: \(module) is not a linear of a \(a.layerPrefix) layer (\(a.linears.map(\.name)))")
            }
        }
        guard let part = placed.first(where: { offset >= $0.column && offset < $0.column + $0.linear.outFeatures }),
              case let .dense(buffer) = part.linear.weights else {
            throw GPTQError.unsupported("layer \(layer) \(module) is not a float16 weight on the GPU (GPTQ on the GPU starts from a float model)")
        }
        let inFeatures = part.linear.inFeatures, row = offset - part.column
        guard values.count % inFeatures == 0, row + values.count / inFeatures <= part.linear.outFeatures else {
            throw GPTQError.invalidArgument("layer \(layer) \(module): \(values.count) values do not fit rows \(row)... of [\(part.linear.outFeatures), \(inFeatures)]")
        }
        let half = Tensor(values, shape: [values.count]).converted(to: .f16)
        try buffer.copy(from: half.raw, bytes: half.byteCount, offset: row * inFeatures * 2, stream: backend.stream)
    }
}
