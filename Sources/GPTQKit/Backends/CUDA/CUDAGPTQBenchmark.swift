/// `gptq gpu-bench --quantize`: GPTQ's GPU work for one decoder layer of a Llama-shaped
/// model with random weights and random calibration activations. Per layer: the Hessians
/// of the four distinct linear inputs (attention input for q/k/v, o_proj's input, MLP
/// input for gate/up, down_proj's input), each over `samples` sequences of `tokens`
/// tokens added one sequence at a time as add_batch does, then the seven linears
/// quantized, each result downloaded to the host. Not included: the layer forwards that
/// produce the activations (random here), loading the weights.
public enum CUDAGPTQBenchmark {
    public struct LayerTiming: Sendable {
        public let layer: Int
        public let hessianSeconds: Double
        /// (module, seconds) in quantization order.
        public let modules: [(String, Double)]
        public var gptqSeconds: Double { modules.reduce(0) { $0 + $1.1 } }
        public var totalSeconds: Double { hessianSeconds + gptqSeconds }
        public var line: String {
            "layer \(layer): Hessians \(format3(hessianSeconds)) s, GPTQ \(format3(gptqSeconds)) s ("
                + modules.map { "\($0.0) \(format3($0.1))" }.joined(separator: ", ") + "), total \(format3(totalSeconds)) s"
        }
    }

    public static func layers(backend: CUDABackend, hidden: Int = 4096, intermediate: Int = 11008, samples: Int = 128, tokens: Int = 2048,
                              layers: Int = 2, config: QuantizeConfig, log: (String) -> Void = { _ in }) throws -> [LayerTiming] {
        let device = backend.device
        let gptq = CUDAGPTQ(backend: backend)
        let clock = ContinuousClock()
        func seconds(_ body: () throws -> Void) rethrows -> Double {
            let start = clock.now
            try body()
            let d = clock.now - start
            return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        }
        // Warm-up: kernel compilation, cuBLAS's first calls.
        let warmHessian = try CUDAHessian(backend: backend, columns: 256)
        let warmInputs = try device.allocate(bytes: 512 * 256 * 4)
        try backend.fillRandomFloats(warmInputs, seed: 1, lo: -1, hi: 1)
        try warmHessian.add(device: warmInputs.address, count: 512)
        _ = try gptq.quantize(weight: (0..<(64 * 256)).map { Float($0 % 17) * 0.01 - 0.08 }, hessian: warmHessian, config: config)

        let activations = try device.allocate(bytes: tokens * max(hidden, intermediate) * 4)
        var timings: [LayerTiming] = []
        for layer in 0..<layers {
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
                let hessian = hessians[input]!
                let weight = try device.allocate(bytes: rows * hessian.columns * 4)
                try backend.fillRandomFloats(weight, seed: UInt32(layer * 100 + m + 7), lo: -0.05, hi: 0.05)
                try device.synchronize()
                var result: GPTQResult?
                let t = try seconds { result = try gptq.quantize(weight: weight, rows: rows, hessian: hessian, config: config) }
                guard let result, result.q.count == rows * hessian.columns, result.loss.isFinite else {
                    throw GPTQError.cuda("GPTQ of the benchmark's \(name) gave no finite result")
                }
                moduleTimes.append((name, t))
            }
            let timing = LayerTiming(layer: layer, hessianSeconds: hessianSeconds, modules: moduleTimes)
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
