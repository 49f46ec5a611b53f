import Testing
import GPTQKit

/// The pipeline's GPTQEngine seam (CPU by default, CUDAGPTQ with --device cuda).
@Suite struct GPTQEngineTests {
    /// Delegates to the CPU and counts what the pipeline asks of it.
    final class CountingEngine: GPTQEngine {
        var hessians = 0, rowsAdded = 0, quantized: [Int] = []
        var description: String { "a counting CPU engine" }
        func makeHessian(columns: Int) -> HessianAccumulator {
            hessians += 1
            return HessianAccumulator(columns: columns)
        }
        func add(_ rows: UnsafePointer<Float>, count: Int, to hessian: inout HessianAccumulator) {
            rowsAdded += count
            hessian.add(rows, count: count)
        }
        func quantize(weight: [Float], hessian: HessianAccumulator, config: QuantizeConfig) throws -> GPTQResult {
            quantized.append(hessian.columns)
            return try GPTQ.quantize(weight: weight, hessian: hessian, config: config)
        }
    }

    /// Every Hessian and every quantization goes through the engine: per layer 4 distinct
    /// inputs (q/k/v and gate/up share theirs), 7 linears; the result equals the default's.
    @Test func pipelineRunsGPTQThroughTheEngine() throws {
        let config = QuantizeConfig(bits: 4, groupSize: 32)
        let samples = PipelineTests.samples()
        let engine = CountingEngine()
        let viaEngine = try GPTQPipeline.quantize(try LanguageModel.load(folder: Fixtures.path("arch/llama")), config: config,
                                                  calibration: samples, engine: engine)
        let byDefault = try GPTQPipeline.quantize(try LanguageModel.load(folder: Fixtures.path("arch/llama")), config: config,
                                                  calibration: samples)
        #expect(engine.hessians == 2 * 4)
        #expect(engine.rowsAdded == 2 * 4 * samples.reduce(0) { $0 + $1.count })
        #expect(engine.quantized == Array(repeating: [64, 64, 64, 64, 64, 64, 160], count: 2).flatMap { $0 })
        #expect(viaEngine.losses == byDefault.losses)
        for (name, packed) in byDefault.packed {
            #expect(viaEngine.packed[name]?.qweight.ints() == packed.qweight.ints(), "\(name)")
        }
    }

    /// Settings the GPU does not implement are refused before the GPU is opened or anything loaded.
    @Test func cudaJobRefusesMSEBeforeAnyWork() {
        var job = QuantizeJob(model: "/nonexistent/model", out: "/tmp/gptq-engine-tests-out-\(UInt32.random(in: 0...UInt32.max))")
        job.device = .cuda
        job.config.mse = MSESearch()
        #expect(throws: GPTQError.invalidArgument("mse: the MSE grid search of the quantization parameters is not implemented on the GPU (quantize on the CPU)")) {
            try job.run()
        }
    }

    /// Without the CUDA libraries, --device cuda fails before loading anything, naming the library.
    @Test func cudaJobWithoutAGPUNamesTheMissingLibrary() throws {
        guard (try? CUDALibraries.shared()) == nil else { return }  // a machine with CUDA: nothing to check here
        var job = QuantizeJob(model: "/nonexistent/model", out: "/tmp/gptq-engine-tests-out-\(UInt32.random(in: 0...UInt32.max))")
        job.device = .cuda
        job.calibration = "/nonexistent/calib.txt"
        do {
            _ = try job.run()
            Issue.record("a CUDA job ran without the CUDA libraries")
        } catch let GPTQError.cuda(message) {
            #expect(message.contains("libcuda.so.1"))
        }
    }
}
