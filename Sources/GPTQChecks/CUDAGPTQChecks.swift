import GPTQKit
import CCUDA

/// `gptq gpu-check`'s checks of GPTQ on the GPU (CUDAHessian, CUDAGPTQ): AutoGPTQ's layer
/// fixture under the bounds the CPU GPTQ meets (GPTQAgreement), and the CPU GPTQ itself on
/// layers large enough for several blocks and Cholesky panels.
extension CUDAChecks {
    /// The gptq fixture folder (Tests/Fixtures/gptq: base.safetensors with W and X,
    /// cases.json, cases_b{bits}.safetensors with AutoGPTQ's Q, scales and g_idx).
    public static func gptqQuantization(backend: CUDABackend, fixtureFolder folder: String) throws -> [CUDACheckResult] {
        let base = try SafetensorsFile(path: folder + "/base.safetensors")
        let weight = try base.tensor("W").floats(), inputs = try base.tensor("X").floats()
        let columns = 256
        var results: [CUDACheckResult] = []

        // The Hessian as the fixture accumulated it: add_batch on batches of 512 rows.
        var cpuHessian = HessianAccumulator(columns: columns)
        let gpuHessian = try CUDAHessian(backend: backend, columns: columns)
        let inputBuffer = try backend.device.upload(inputs)
        for start in stride(from: 0, to: inputs.count / columns, by: 512) {
            inputs.withUnsafeBufferPointer { cpuHessian.add($0.baseAddress! + start * columns, count: 512) }
            try gpuHessian.add(device: inputBuffer.address + CUdeviceptr(start * columns * 4), count: 512)
        }
        results.append(CUDACheckResult(name: "GPTQ Hessian [\(columns)] of 8 batches against the CPU's",
                                       relativeError: relativeError(try gpuHessian.symmetricMatrix(), cpuHessian.symmetricMatrix()),
                                       bound: 1e-6))

        let gptq = CUDAGPTQ(backend: backend)
        let cases = try JSON.read(path: folder + "/cases.json")["cases"]?.array ?? []
        var files: [Int: SafetensorsFile] = [:]
        for c in cases {
            guard let key = c["key"]?.string, let bits = c["bits"]?.int, let groupSize = c["group_size"]?.int,
                  let descAct = c["desc_act"]?.bool, let sym = c["sym"]?.bool, let staticGroups = c["static_groups"]?.bool,
                  let autogptqError = c["rel_output_error"]?.double else {
                throw GPTQError.invalidArgument("\(folder)/cases.json: a case lacks key, bits, group_size, desc_act, sym, static_groups or rel_output_error")
            }
            if files[bits] == nil { files[bits] = try SafetensorsFile(path: folder + "/cases_b\(bits).safetensors") }
            let file = files[bits]!
            let config = QuantizeConfig(bits: bits, groupSize: groupSize, descAct: descAct, staticGroups: staticGroups, sym: sym)
            let result = try gptq.quantize(weight: weight, hessian: gpuHessian, config: config)
            let reference = GPTQResult(rows: 96, columns: columns, bits: bits, groupSize: groupSize,
                                       q: try file.tensor(key + ".Q").floats(), scales: try file.tensor(key + ".scale").floats(),
                                       zeros: try file.tensor(key + ".zero").floats(), gIdx: try file.tensor(key + ".g_idx").ints())
            let cpu = try GPTQ.quantize(weight: weight, hessian: cpuHessian, config: config)
            let agreement = GPTQAgreement(result.q, reference: reference)
            let sameAsCPU = zip(result.q, cpu.q).filter { $0 == $1 }.count
            let layout = result.gIdx == reference.gIdx && result.groups == reference.groups && result.warnings.isEmpty
            // Passes (≤ bound) only with ≥ 98% identical, none farther than a step and AutoGPTQ's g_idx and groups.
            results.append(CUDACheckResult(
                name: "GPTQ \(key): \(agreement.identical)/\(agreement.total) identical to AutoGPTQ, \(agreement.fartherThanOneStep) farther than a step, "
                    + "\(sameAsCPU) identical to the CPU's; share not identical",
                relativeError: 1 - agreement.identicalFraction + Double(agreement.fartherThanOneStep) + (layout ? 0 : 1),
                bound: 1 - GPTQAgreement.minimumIdentical))
            let rounded = Tensor(result.q, shape: [result.q.count]).converted(to: .f16).floats()
            let error = GPTQAgreement.relativeOutputError(q: rounded, weight: weight, inputs: inputs, columns: columns)
            results.append(CUDACheckResult(name: "GPTQ \(key): output error \(format6(error)) against AutoGPTQ's \(format6(autogptqError))",
                                           relativeError: abs(error / autogptqError - 1), bound: GPTQAgreement.outputErrorTolerance))
        }
        results += try gptqAgainstCPU(backend: backend, gptq: gptq)
        return results
    }

    /// Random layers with several blocks (a partial last one), several Cholesky panels and
    /// dead columns, GPU against CPU: the inverse factor, then the quantized weights' output
    /// error (within 1% of the CPU's) and the share of identical values.
    static func gptqAgainstCPU(backend: CUDABackend, gptq: CUDAGPTQ) throws -> [CUDACheckResult] {
        var results: [CUDACheckResult] = []
        var rng = Xoshiro256StarStar(seed: 42)
        for (rows, columns, samples) in [(200, 1000, 1200), (64, 300, 100)] {
            // Correlated inputs (a shared component), so that the factor is not diagonal; column 7 dead.
            var x = [Float](repeating: 0, count: samples * columns)
            for s in 0..<samples {
                let shared = Float(rng.nextUnit() * 2 - 1)
                for c in 0..<columns where c != 7 { x[s * columns + c] = Float(rng.nextUnit() * 2 - 1) + 0.5 * shared * Float(c % 5) }
            }
            let weight = (0..<(rows * columns)).map { _ in Float(rng.nextUnit() * 0.2 - 0.1) }
            var cpuHessian = HessianAccumulator(columns: columns)
            let gpuHessian = try CUDAHessian(backend: backend, columns: columns)
            x.withUnsafeBufferPointer { cpuHessian.add($0.baseAddress!, count: samples, samples: 4) }
            try x.withUnsafeBufferPointer { try gpuHessian.add($0.baseAddress!, count: samples, samples: 4) }

            // LAPACK on the GPU's own H: the two Hessians differ in float32 summation order, which
            // the factor amplifies by H's condition number.
            var h = try gpuHessian.symmetricMatrix()
            for i in 0..<columns where h[i * columns + i] == 0 { h[i * columns + i] = 1 }
            let expected = try GPTQ.dampedInverseFactor(h, columns: columns, dampPercent: 0.01).factor
            let order = try backend.device.upload((0..<columns).map { Int32($0) })
            let mean = (0..<columns).reduce(0.0) { $0 + h[$1 * columns + $1] } / Double(columns)
            if let u = try gptq.inverseFactor(gpuHessian, order: order, damp: 0.01 * mean) {
                results.append(CUDACheckResult(name: "GPTQ inverse factor [\(columns)] against LAPACK's",
                                               relativeError: relativeError(try backend.device.download(u, as: Float.self, count: columns * columns), expected),
                                               bound: 1e-5))
            } else {
                results.append(CUDACheckResult(name: "GPTQ inverse factor [\(columns)]: the Cholesky factorisation failed", relativeError: .nan, bound: 0))
            }
            for config in [QuantizeConfig(bits: 4, groupSize: 128, descAct: true), QuantizeConfig(bits: 3, groupSize: 32, sym: false),
                           QuantizeConfig(bits: 4, groupSize: 64, descAct: true, staticGroups: true), QuantizeConfig(bits: 8, groupSize: -1)] {
                let cpu = try GPTQ.quantize(weight: weight, hessian: cpuHessian, config: config)
                let gpu = try gptq.quantize(weight: weight, hessian: gpuHessian, config: config)
                let cpuError = GPTQAgreement.relativeOutputError(q: cpu.q, weight: weight, inputs: x, columns: columns)
                let gpuError = GPTQAgreement.relativeOutputError(q: gpu.q, weight: weight, inputs: x, columns: columns)
                let same = zip(cpu.q, gpu.q).filter { $0 == $1 }.count
                let describe = "b\(config.bits) g\(config.groupSize) act\(config.descAct ? 1 : 0) static\(config.staticGroups ? 1 : 0) sym\(config.sym ? 1 : 0)"
                results.append(CUDACheckResult(
                    name: "GPTQ [\(rows)x\(columns)] \(describe): \(same)/\(gpu.q.count) identical to the CPU's, loss \(format6(gpu.loss)) vs \(format6(cpu.loss)), "
                        + "output error \(format6(gpuError)) vs \(format6(cpuError)); relative difference",
                    relativeError: gpu.gIdx == cpu.gIdx && gpu.groups == cpu.groups ? abs(gpuError / cpuError - 1) : .nan,
                    bound: GPTQAgreement.outputErrorTolerance))
            }
        }
        // Bad input gets the CPU's message.
        var nanInputs = [Float](repeating: 1, count: 64 * 32)
        nanInputs[5] = .nan
        let badHessian = try CUDAHessian(backend: backend, columns: 32)
        try nanInputs.withUnsafeBufferPointer { try badHessian.add($0.baseAddress!, count: 64) }
        var message = ""
        do { _ = try gptq.quantize(weight: [Float](repeating: 0.5, count: 32 * 32), hessian: badHessian, config: QuantizeConfig(groupSize: -1)) }
        catch let GPTQError.invalidArgument(text) { message = text }
        results.append(CUDACheckResult(name: "GPTQ with a NaN input says \"\(message)\"", relativeError: message.contains("Hessian holds NaN") ? 0 : .nan, bound: 0))
        return results
    }

    /// `gptq quantize --device cuda`'s pipeline (float16 forwards on the GPU) against the CPU
    /// pipeline on fixture models of several block shapes (q/k/v biases in qwen2, q/k norms in
    /// qwen3, grouped query heads, fused q/k/v, parallel and post-norm blocks): the quantized model's logit error against the float model must
    /// be within 10% of the CPU-quantized model's (the two see slightly different
    /// activations: float16 on the GPU, float32 on the CPU).
    public static func gptqPipeline(backend: CUDABackend, fixtures: String) throws -> [CUDACheckResult] {
        var results: [CUDACheckResult] = []
        var random = PythonRandom(seed: 1)
        let calibration = (0..<8).map { _ in (0..<32).map { _ in Int32(random.randbelow(384)) } }
        let gptq = CUDAGPTQ(backend: backend)
        // Llama-style families, and others through each block shape: GPT-2's Conv1D and fused
        // q/k/v, NeoX's parallel block, BLOOM's ALiBi and normed residual, OPT's projected stem
        // and post-norm-free layout, Falcon-7B's multi-query fused q/k/v.
        for arch in ["llama", "qwen2", "qwen3", "gpt2", "gpt_neox", "bloom", "opt-350m-layout", "falcon-7b-layout"] {
            let folder = fixtures + "/arch/" + arch
            guard FileIO.exists(folder + "/config.json") else { continue }
            let tokens = Array(try SafetensorsFile(path: folder + "/reference.safetensors").tensor("input_ids").ints().prefix(12))
            func logits(_ model: LanguageModel) throws -> [Float] {
                try model.makeSession(capacity: tokens.count).forward(tokens, allLogits: true)
            }
            let reference = try logits(try LanguageModel.load(folder: folder))
            let config = QuantizeConfig(bits: 4, groupSize: 32, descAct: arch == "llama")
            let cpu = try GPTQPipeline.quantize(try LanguageModel.load(folder: folder), config: config, calibration: calibration)
            let gpu = try GPTQPipeline.quantizeOnGPU(try LanguageModel.load(folder: folder), config: config, calibration: calibration, gptq: gptq)
            let cpuError = relativeError(try logits(cpu.model), reference), gpuError = relativeError(try logits(gpu.model), reference)
            var same = 0, total = 0
            for (name, packed) in cpu.packed {
                let a = packed.qweight.ints(), b = gpu.packed[name]?.qweight.ints() ?? []
                same += zip(a, b).filter { $0 == $1 }.count
                total += a.count
            }
            results.append(CUDACheckResult(
                name: "GPTQ pipeline on the GPU, \(arch) \(config.descAct ? "act-order " : "")g32: logit error \(format6(gpuError)) vs the CPU pipeline's "
                    + "\(format6(cpuError)), \(same)/\(total) qweight words identical; excess over the CPU's",
                relativeError: max(0, gpuError / cpuError - 1), bound: 0.1))
        }
        return results
    }

    /// ‖a − b‖ / ‖b‖ for float64 values.
    static func relativeError(_ a: [Double], _ b: [Double]) -> Double {
        relativeError(a.map { Float($0) }, b.map { Float($0) })
    }
}
