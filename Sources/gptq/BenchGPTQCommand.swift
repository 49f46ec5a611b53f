import ArgumentParser
import GPTQKit

struct BenchGPTQCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-gptq",
        abstract: "Measure GPTQ on one random linear layer: Hessian, quantization, packing, and the CPU kernels.",
        discussion: """
            Builds a random [rows, cols] weight and --samples calibration rows, accumulates the Hessian \
            (batches of 512 rows), runs GPTQ.quantize and PackedLinear.pack, then times GPTQLinear \
            against the float16 DenseLinear: decode (1 row, the fused GEMV) and prefill (--tokens rows).
            """
    )

    @Option(parsing: .unconditional, help: "Output features of the layer.")
    var rows = 4096
    @Option(parsing: .unconditional, help: "Input features of the layer.")
    var cols = 4096
    @Option(parsing: .unconditional, help: "Bits: 2, 3, 4 or 8.")
    var bits = 4
    @Option(parsing: .unconditional, help: "Group size (-1: one group per row).")
    var groupSize = 128
    @Flag(help: "Act-order.")
    var descAct = false
    @Option(parsing: .unconditional, help: "Calibration rows for the Hessian.")
    var samples = 4096
    @Option(parsing: .unconditional, help: "Rows of the prefill measurement.")
    var tokens = 512
    @Option(parsing: .unconditional, help: "CPU threads (default: all cores).")
    var threads: Int?

    func validate() throws {
        guard rows > 0, cols > 0, samples > 0, tokens > GPTQLinear.maxGEMVRows else {
            throw ValidationError("--rows, --cols, --samples must be positive and --tokens above \(GPTQLinear.maxGEMVRows)")
        }
        // The layer, its calibration rows and its prefill input are allocated whole.
        guard rows <= 1 << 16, cols <= 1 << 16, samples <= 1 << 20, tokens <= 1 << 16 else {
            throw ValidationError("--rows and --cols must be at most \(1 << 16), --samples at most \(1 << 20), --tokens at most \(1 << 16)")
        }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        useThreads(threads)
        let config = QuantizeConfig(bits: bits, groupSize: groupSize, descAct: descAct)
        try config.validate()
        print("layer [\(rows), \(cols)], \(bits) bits, group \(groupSize), desc_act \(descAct), \(CPUThreads.count) threads")
        var random = Xoshiro256StarStar(seed: 1)
        func values(_ n: Int, scale: Double) -> [Float] { (0..<n).map { _ in Float((random.nextUnit() * 2 - 1) * scale) } }
        let weight = values(rows * cols, scale: 0.05)
        // Channels of unequal strength, as real activations have.
        let strength = values(cols, scale: 1).map { 0.1 + abs($0) * 2 }
        let calibration = values(samples * cols, scale: 1).enumerated().map { $0.element * strength[$0.offset % cols] }

        let clock = ContinuousClock()
        var hessian = HessianAccumulator(columns: cols)
        let hessianTime = clock.measure {
            calibration.withUnsafeBufferPointer { x in
                for start in stride(from: 0, to: samples, by: 512) {
                    hessian.add(x.baseAddress! + start * cols, count: min(512, samples - start))
                }
            }
        }.seconds
        print("hessian: \(samples) rows in \(fixed(hessianTime, 3)) s")
        var result: GPTQResult?
        let quantizeTime = try clock.measure { result = try GPTQ.quantize(weight: weight, hessian: hessian, config: config) }.seconds
        print("GPTQ.quantize: \(fixed(quantizeTime, 3)) s (loss \(fixed(result!.loss, 3)))")
        var packed: PackedLinear?
        let packTime = try clock.measure { packed = try PackedLinear.pack(result!, format: .gptqV2) }.seconds
        print("pack: \(fixed(packTime, 3)) s")

        let quantized = GPTQLinear(packed!), floatActivations = GPTQLinear(packed!)
        floatActivations.int8Activations = .off
        let dense = DenseLinear(weight: Tensor(weight, shape: [rows, cols]).converted(to: .f16))
        let x = values(tokens * cols, scale: 1)
        var y = [Float](repeating: 0, count: tokens * rows)
        let kernels = quantized.supportsInt8Activations ? "int8 activations, \(Int8KernelPath.current)" : "float activations: groups not at multiples of 32"
        var layers: [(String, LinearLayer, Int)] = [("GPTQLinear (\(kernels))", quantized, quantized.weightBytes),
                                                    ("GPTQLinear (float activations)", floatActivations, floatActivations.weightBytes),
                                                    ("DenseLinear f16", dense, dense.weightBytes)]
        // Int8Linear quantizes its input in blocks of 32 channels.
        if cols % 32 == 0 {
            let int8 = try Int8Linear(dense)
            layers.append(("Int8Linear of the f16 weight (\(Int8KernelPath.current))", int8, int8.weightBytes))
        }
        for (name, layer, bytes) in layers {
            layer.forward(x, rows: 1, into: &y)
            // At least 20 calls and a quarter of a second, so the figure is not one call's noise.
            var calls = 0
            let start = clock.now
            repeat {
                layer.forward(x, rows: 1, into: &y)
                calls += 1
            } while calls < 20 || clock.now - start < .milliseconds(250)
            let decode = (clock.now - start).seconds / Double(calls)
            let prefill = clock.measure { layer.forward(x, rows: tokens, into: &y) }.seconds
            print("\(name): decode \(fixed(decode * 1e6, 1)) µs/row (\(fixed(Double(bytes) / decode / 1e9, 2)) GB/s of \(fixed(Double(bytes) / 1e6, 2)) MB), "
                  + "prefill \(tokens) rows \(fixed(prefill * 1e3, 1)) ms (\(fixed(2 * Double(rows * cols * tokens) / prefill / 1e9, 1)) GFLOP/s)")
        }
    }
}
