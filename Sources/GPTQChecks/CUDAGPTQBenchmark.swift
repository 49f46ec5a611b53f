import GPTQKit
/// `gptq gpu-bench --quantize`: GPTQ on the GPU for decoder layers of a Llama shape with
/// random weights, per layer, each result downloaded to the host.
/// - `layers`: GPTQ's own work from random float32 activations: the Hessians of the four
///   distinct linear inputs (attention input for q/k/v, o_proj's input, MLP input for
///   gate/up, down_proj's input), each over `samples` sequences of `tokens` tokens added one
///   sequence at a time with cuBLAS ssyrk, then the seven linears quantized. No forwards.
/// - `pipelineLayers`: `gptq quantize --device cuda`'s loop (CUDACalibrationForward) on a
///   random float16 model: per true-sequential group, every sample through the layer with
///   its linears' float16 inputs added to the group's Hessian, the group's linears quantized
///   and their float16 weights replaced, then the layer's outputs recomputed. Not included:
///   loading the weights and embedding the samples.
public enum CUDAGPTQBenchmark {
    public struct LayerTiming: Sendable {
        public let layer: Int
        /// (what, seconds) of the work besides GPTQ, e.g. the Hessians.
        public let phases: [(String, Double)]
        /// (module, seconds) in quantization order.
        public let modules: [(String, Double)]
        public var gptqSeconds: Double { modules.reduce(0) { $0 + $1.1 } }
        public var totalSeconds: Double { phases.reduce(gptqSeconds) { $0 + $1.1 } }
        public var line: String {
            "layer \(layer): " + phases.map { "\($0.0) \(format3($0.1)) s, " }.joined() + "GPTQ \(format3(gptqSeconds)) s ("
                + modules.map { "\($0.0) \(format3($0.1))" }.joined(separator: ", ") + "), total \(format3(totalSeconds)) s"
        }
    }

    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        try body()
        let d = clock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    /// Kernel compilation and cuBLAS's first calls, kept out of the timings.
    static func warmUp(_ gptq: CUDAGPTQ, config: QuantizeConfig) throws {
        let backend = gptq.backend
        let hessian = try CUDAHessian(backend: backend, columns: 256)
        let inputs = try backend.device.allocate(bytes: 512 * 256 * 4), halfInputs = try backend.device.allocate(bytes: 512 * 256 * 2)
        try backend.fillRandomFloats(inputs, seed: 1, lo: -1, hi: 1)
        try backend.fillRandomHalves(halfInputs, seed: 2, lo: -1, hi: 1)
        try hessian.add(device: inputs.address, count: 512)
        try hessian.add(halfRows: halfInputs.address, stride: 256, count: 512)
        _ = try gptq.quantize(weight: (0..<(64 * 256)).map { Float($0 % 17) * 0.01 - 0.08 }, hessian: hessian, config: config)
    }

    /// Quantizes a random [rows, hessian.columns] weight; checks that the result is whole.
    static func quantizeRandom(_ gptq: CUDAGPTQ, name: String, rows: Int, hessian: CUDAHessian, config: QuantizeConfig, seed: UInt32,
                               log: (String) -> Void) throws -> GPTQResult {
        let weight = try gptq.backend.device.allocate(bytes: rows * hessian.columns * 4)
        try gptq.backend.fillRandomFloats(weight, seed: seed, lo: -0.05, hi: 0.05)
        let result = try gptq.quantize(weight: weight, rows: rows, hessian: hessian, config: config)
        guard result.q.count == rows * hessian.columns, result.loss.isFinite else {
            throw GPTQError.cuda("GPTQ of the benchmark's \(name) gave no finite result")
        }
        if gptq.recordsPhases {
            log("  \(name) [\(rows)x\(hessian.columns)]: " + gptq.phaseSeconds.map { "\($0.0) \(format3($0.1))" }.joined(separator: ", ")
                + (result.warnings.isEmpty ? "" : "; " + result.warnings.joined(separator: "; ")))
        }
        return result
    }

    public static func layers(backend: CUDABackend, hidden: Int = 4096, intermediate: Int = 11008, samples: Int = 128, tokens: Int = 2048,
                              layers: Int = 2, config: QuantizeConfig, log: (String) -> Void = { _ in }) throws -> [LayerTiming] {
        let device = backend.device
        let gptq = CUDAGPTQ(backend: backend)
        try warmUp(gptq, config: config)
        let activations = try device.allocate(bytes: tokens * max(hidden, intermediate) * 4)
        var timings: [LayerTiming] = []
        for layer in 0..<layers {
            // The last layer also reports each linear's phases (synchronizing between them).
            gptq.recordsPhases = layer == layers - 1
            var hessians: [String: CUDAHessian] = [:]
            let inputs = [("qkv", hidden), ("o", hidden), ("gate_up", hidden), ("down", intermediate)]
            let hessianSeconds = try seconds {
                for (i, (name, columns)) in inputs.enumerated() {
                    let h = try CUDAHessian(backend: backend, columns: columns)
                    for s in 0..<samples {
                        try backend.fillRandomFloats(activations, seed: UInt32(layer * 100_000 + i * 10_000 + s), lo: -1, hi: 1)
                        try h.add(device: activations.address, count: tokens)
                    }
                    hessians[name] = h
                }
                try device.synchronize()
            }
            let modules: [(String, String, Int)] = [
                ("q_proj", "qkv", hidden), ("k_proj", "qkv", hidden), ("v_proj", "qkv", hidden), ("o_proj", "o", hidden),
                ("gate_proj", "gate_up", intermediate), ("up_proj", "gate_up", intermediate), ("down_proj", "down", hidden),
            ]
            var moduleTimes: [(String, Double)] = []
            for (m, (name, input, rows)) in modules.enumerated() {
                let t = try seconds {
                    _ = try quantizeRandom(gptq, name: name, rows: rows, hessian: hessians[input]!, config: config, seed: UInt32(layer * 100 + m + 7), log: log)
                }
                moduleTimes.append((name, t))
            }
            let timing = LayerTiming(layer: layer, phases: [("Hessians", hessianSeconds)], modules: moduleTimes)
            log(timing.line)
            timings.append(timing)
        }
        return timings
    }

    public static func pipelineLayers(backend: CUDABackend, hidden: Int = 4096, heads: Int = 32, intermediate: Int = 11008, samples: Int = 128,
                                      tokens: Int = 2048, layers: Int = 2, config: QuantizeConfig,
                                      log: (String) -> Void = { _ in }) throws -> [LayerTiming] {
        let device = backend.device
        let gptq = CUDAGPTQ(backend: backend)
        try warmUp(gptq, config: config)
        let model = try CUDAModel.random4Bit(backend: backend, hidden: hidden, layers: layers, heads: heads, kvHeads: heads,
                                             intermediate: intermediate, vocab: 256, halfWeights: true)
        let inputs = try (0..<samples).map { s in
            let buffer = try device.allocate(bytes: tokens * hidden * 2)
            try backend.fillRandomHalves(buffer, seed: UInt32(1000 + s), lo: -1, hi: 1)
            return buffer
        }
        let forward = try CUDACalibrationForward(gptq: gptq, model: model, hidden: inputs, rows: Array(repeating: tokens, count: samples))
        let groups = ModelFamily.llamaQuantizationGroups
        var timings: [LayerTiming] = []
        for layer in 0..<layers {
            var forwardSeconds = 0.0
            var moduleTimes: [(String, Double)] = []
            for group in groups {
                var hessians: [String: CUDAHessian] = [:]
                forwardSeconds += try seconds {
                    hessians = try forward.hessians(layer: layer, modules: group)
                    try device.synchronize()
                }
                for module in group {
                    let rows = module == "mlp.gate_proj" || module == "mlp.up_proj" ? intermediate : hidden
                    let t = try seconds {
                        let result = try quantizeRandom(gptq, name: module, rows: rows, hessian: hessians[module]!, config: config,
                                                        seed: UInt32(layer * 100 + moduleTimes.count + 7), log: log)
                        try forward.replace(layer: layer, module: module, q: result.q, bias: nil)
                        try device.synchronize()
                    }
                    moduleTimes.append((String(module.split(separator: ".").last!), t))
                }
            }
            let recompute = try seconds {
                try forward.advance(layer: layer)
                try device.synchronize()
            }
            let timing = LayerTiming(layer: layer, phases: [("forwards + Hessians", forwardSeconds), ("outputs", recompute)], modules: moduleTimes)
            log(timing.line)
            timings.append(timing)
        }
        return timings
    }
}

func format3(_ v: Double) -> String {
    guard v.isFinite else { return "\(v)" }
    let scaled = Int((v * 1000).rounded())
    let fraction = String(abs(scaled) % 1000)
    return "\(scaled / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)"
}
