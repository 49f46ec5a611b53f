import ArgumentParser
import GPTQKit
import GPTQChecks

/// The subcommands that need an NVIDIA GPU.
enum GPUCommands {
    static let subcommands: [ParsableCommand.Type] = [GPUCheckCommand.self, GPUBenchCommand.self]
}

/// Prints as it goes (the device tool returns the tail of the output) and keeps a log.
final class ReportLog {
    private var lines: [String] = []
    let path: String?
    init(path: String?) { self.path = path }
    func callAsFunction(_ line: String) {
        print(line)
        lines.append(line)
    }
    func save() throws {
        if let path { try FileIO.writeAtomically(path: path, text: lines.joined(separator: "\n") + "\n") }
    }
}

struct GPUCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpu-check",
        abstract: "Check the CUDA kernels against CPU references and AutoGPTQ's outputs (needs an NVIDIA GPU).",
        discussion: "Exits with status 1 when any check fails. Prints one PASS/FAIL line per check."
    )

    @Option(parsing: .unconditional, help: "The gptq fixture (layer_reference.safetensors with AutoGPTQ's packed layers and outputs).")
    var gptqFixture: String?

    @Option(parsing: .unconditional, help: "The test fixtures folder (arch/ and autogptq_ckpt/ models with their references).")
    var fixtures = "Tests/Fixtures"

    @Option(parsing: .unconditional, help: "The GPTQ cases fixture folder (AutoGPTQ's quantizations of one layer), for GPTQ on the GPU; skipped where missing.")
    var gptqCases = "Tests/Fixtures/gptq"

    @Flag(help: "Run only the checks of GPTQ quantization on the GPU.")
    var gptqOnly = false

    @Option(parsing: .unconditional, help: "A real model folder (e.g. SmolLM2-135M-Instruct) to compare with the CPU backend: logits of a 64-token prompt from --text and its perplexity.")
    var model: String?

    @Option(parsing: .unconditional, help: "The text for --model (e.g. wikitext-2 test).")
    var text: String?

    @Option(parsing: .unconditional, help: "Write the GPU's logits of the arch fixtures (prefill and decode graph) to this safetensors file, for scripts/fixtures/fp16_emulation_check.py.")
    var dumpLogits: String?

    func validate() throws {
        if (model == nil) != (text == nil) { throw ValidationError("--model and --text go together") }
        if gptqOnly, dumpLogits != nil { throw ValidationError("--dump-logits writes the fixture models' logits, which --gptq-only skips") }
    }

    @Option(parsing: .unconditional, help: "Write the report to this file too.")
    var log: String?

    func run() throws {
        let report = ReportLog(path: log)
        let backend = try CUDABackend(log: printToStandardError)
        report("device: \(backend.summary)")
        var results: [CUDACheckResult] = []
        if !gptqOnly {
            results += try CUDAChecks.linearKernels(backend: backend)
            results += try CUDAChecks.dependentLaunchChain(backend: backend)
            results += try CUDAChecks.norms(backend: backend)
            if let gptqFixture { results += try CUDAChecks.gptqFixture(backend: backend, path: gptqFixture) }
            var logits: [(String, Tensor)] = []
            results += try CUDAChecks.models(backend: backend, fixtures: fixtures) { name, values, shape in
                if dumpLogits != nil { logits.append((name, Tensor(values, shape: shape))) }
            }
            if let dumpLogits { try SafetensorsWriter.write(path: dumpLogits, tensors: logits) }
            if let model, let text { results += try CUDAChecks.folder(backend: backend, folder: model, text: text) }
        }
        if FileIO.exists(gptqCases + "/cases.json") { results += try CUDAChecks.gptqQuantization(backend: backend, fixtureFolder: gptqCases) }
        results += try CUDAChecks.gptqPipeline(backend: backend, fixtures: fixtures)
        for r in results { report(r.line) }
        let failed = results.filter { !$0.passed }
        report("gpu-check: \(results.count - failed.count)/\(results.count) passed")
        try report.save()
        if !failed.isEmpty { throw ExitCode(1) }
    }
}

struct GPUBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpu-bench",
        abstract: "Time the CUDA kernels (needs an NVIDIA GPU).",
        discussion: """
            --kernels: 4-bit group-128 (--group-size) GEMV/GEMM against float16 cuBLAS for the Llama-2-7B \
            linear shapes at batch 1, 2, 4, 8, 16, 32, 64, 128 (from 16 on also dequantized \
            for cuBLAS), and the device-to-device copy bandwidth.
            """
    )

    @Flag(help: "Time the linear kernels and the copy bandwidth.")
    var kernels = false

    @Flag(help: "Time decode (batch 1 and 8, after --prompt-tokens) and a 2048-token prefill of a Llama-2-7B-shaped 4-bit model with random weights.")
    var model = false

    @Option(parsing: .unconditional, help: "--model: the prompt each sequence has before the timed decode steps, in tokens.")
    var promptTokens = 32

    @Flag(help: "Time GPTQ on the GPU for Llama-2-7B-shaped layers (random weights and activations): Hessians and the 7 linears.")
    var quantize = false

    @Option(parsing: .unconditional, help: "--quantize: calibration sequences per Hessian.")
    var samples = 128

    @Option(parsing: .unconditional, help: "--quantize: tokens per calibration sequence.")
    var tokens = 2048

    @Option(parsing: .unconditional, help: "--quantize: layers to time.")
    var layers = 2

    @Flag(help: "--quantize: act-order (desc_act).")
    var actOrder = false

    @Flag(help: "--quantize: the whole `gptq quantize --device cuda` loop on a random float16 model, layer forwards included.")
    var pipeline = false

    @Flag(help: "Time every launch shape of the 4-bit tiled kernel (output tiles a warp x warps a block, s stages of u chunks, x: x loaded with the weights, mM: compiled for M blocks a multiprocessor; microseconds, registers, resident blocks).")
    var tiledShapes = false

    @Option(parsing: .singleValue, help: "--kernels, --tiled-shapes: a layer shape to time, inputs x outputs (e.g. 4096x11008; repeatable; default the four Llama-2-7B shapes).")
    var shape: [String] = []

    @Option(parsing: .singleValue, help: "--kernels, --tiled-shapes: a batch to time (repeatable; default 1, 2, 4, 8, 16, 32, 64, 128 and 1, 8, 16, 32).")
    var batch: [Int] = []

    @Option(parsing: .unconditional, help: "--kernels: the 4-bit layers' group size; one that is no multiple of 64 (e.g. 32) times AutoGPTQ's layout on the 4-bit GEMV.")
    var groupSize = 128

    @Option(parsing: .unconditional, help: "Write the report to this file too.")
    var log: String?

    func validate() throws {
        guard promptTokens >= 1 else { throw ValidationError("--prompt-tokens must be at least 1 (got \(promptTokens))") }
        if let (k, _) = try layerShapes().first(where: { groupSize < 8 || $0.0 % groupSize != 0 || groupSize % 8 != 0 }) {
            throw ValidationError("--group-size \(groupSize) must be a multiple of 8 that divides the inputs (\(k))")
        }
        if let bad = batch.first(where: { !(1...512).contains($0) }) { throw ValidationError("--batch must be 1 to 512 (got \(bad))") }
        if tiledShapes, let bad = batch.first(where: { $0 > 32 }) { throw ValidationError("--tiled-shapes times at most 32 rows (got --batch \(bad))") }
    }

    /// --shape as (inputs, outputs), or the four Llama-2-7B shapes.
    private func layerShapes() throws -> [(Int, Int)] {
        if shape.isEmpty { return [(4096, 4096), (4096, 11008), (11008, 4096), (8192, 28672)] }
        return try shape.map { text in
            do { return try CUDABenchmarks.layerShape(text) } catch { throw ValidationError("\(error)") }
        }
    }

    func run() throws {
        let report = ReportLog(path: log)
        let backend = try CUDABackend(log: printToStandardError)
        report("device: \(backend.summary)")
        if kernels {
            let copy = try CUDABenchmarks.copyBandwidth(backend: backend)
            report("device-to-device copy: \(Int(copy.rounded())) GB/s (read + written)")
            let rows = try CUDABenchmarks.linears(backend: backend, shapes: try layerShapes(),
                                                  batches: batch.isEmpty ? [1, 2, 4, 8, 16, 32, 64, 128] : batch, groupSize: groupSize, log: { report($0) })
            report("4-bit GB/s as a fraction of the copy: " + rows.filter { $0.batch == 1 }.map {
                "\($0.inFeatures)x\($0.outFeatures) \(Int(($0.quantizedGBs / copy * 100).rounded()))%"
            }.joined(separator: ", "))
            // The most any kernel reading the 4-bit weights once could gain on fp16 cuBLAS.
            report("fp16 cuBLAS (graphs) over the 4-bit read floor, batch 1 / 8: " + rows.filter { $0.batch == 1 }.map { one in
                let ratios = rows.filter { $0.inFeatures == one.inFeatures && $0.outFeatures == one.outFeatures && [1, 8].contains($0.batch) }
                    .compactMap { $0.halfGraphMs.map { fixed($0 / one.readFloorMs, 1) } }
                return "\(one.inFeatures)x\(one.outFeatures) \(ratios.joined(separator: " / "))x (4-bit at \(Int((one.readFloorMs / one.graphMs * 100).rounded()))% of the floor)"
            }.joined(separator: ", "))
        }
        if model {
            let m = try CUDAModel.random4Bit(backend: backend, hidden: 4096, layers: 32, heads: 32, kvHeads: 32, intermediate: 11008, vocab: 32000)
            report("Llama-2-7B shape, \(m.weightsDescription): \(m.weightBytes / 1_000_000) MB of weights read per decode step")
            // With dependent launch (the default where supported) and without, to compare.
            let chosen = backend.dependentLaunch
            for dependent in chosen ? [true, false] : [false] {
                backend.dependentLaunch = dependent
                let launches = dependent ? "dependent launch" : "plain launch"
                for batch in [1, 8] {
                    let t = try CUDABenchmarks.decode(model: m, batch: batch, promptTokens: promptTokens)
                    let perStep = t.seconds / Double(t.steps)
                    report("decode batch \(batch), \(launches): \(Int(t.tokensPerSecond.rounded())) tokens/s (\(Int((Double(t.steps) / t.seconds).rounded())) steps/s, "
                           + "\(Int((Double(m.weightBytes) / perStep / 1e9).rounded())) GB/s of weights) after a \(t.promptTokens)-token prompt")
                }
                let linears = try CUDABenchmarks.decodeLinearsOnly(model: m, batch: 1)
                report("decode batch 1, \(launches), the linears alone: \(fixed(linears * 1000, 3)) ms a step (\(Int((Double(m.weightBytes) / linears / 1e9).rounded())) GB/s)")
            }
            backend.dependentLaunch = chosen
            // 64 streams, as a server runs them: 64 × 642 positions of paged cache (21 GB).
            let streams = try CUDABenchmarks.decode(model: m, batch: 64, promptTokens: 512)
            report("decode batch 64: \(Int(streams.tokensPerSecond.rounded())) tokens/s after a \(streams.promptTokens)-token prompt each")
            let host = try CUDABenchmarks.hostLoopDecode(model: m)
            report("decode batch 1 from the host loop: greedy \(Int(host.greedy.rounded())) tokens/s (forwardGreedy), "
                   + "sampled (T 0.8, top-k 50, top-p 0.9) \(Int(host.sampled.rounded())) tokens/s with the logits copied back to the CPU sampler, "
                   + "\(Int(host.sampledOnGPU.rounded())) tokens/s drawn on the GPU (forwardSample)")
            let prefill = try CUDABenchmarks.prefill(model: m, tokens: 2048)
            report("prefill 2048 tokens: \(Int(prefill.rounded())) tokens/s")
            for tokens in [16, 32, 128] {
                let scoring = try CUDABenchmarks.scoring(model: m, sequences: 8, tokens: tokens)
                report("scoring 8 sequences of \(tokens) tokens (log-probabilities on the GPU): batch session \(Int(scoring.batched.rounded())) tokens/s, "
                       + "one sequence at a time \(Int(scoring.oneAtATime.rounded())) tokens/s (\(fixed(scoring.batched / scoring.oneAtATime, 2))x)")
            }
        }
        if quantize {
            let config = QuantizeConfig(bits: 4, groupSize: 128, descAct: actOrder)
            report("GPTQ, Llama-2-7B layer shape (hidden 4096, intermediate 11008), 4-bit group 128\(actOrder ? " act-order" : ""), "
                   + "\(samples) x \(tokens) calibration tokens; random weights and "
                   + (pipeline ? "embeddings, layer forwards on the GPU" : "activations (no layer forward)"))
            let timings = pipeline
                ? try CUDAGPTQBenchmark.pipelineLayers(backend: backend, samples: samples, tokens: tokens, layers: layers, config: config,
                                                       log: { report($0) })
                : try CUDAGPTQBenchmark.layers(backend: backend, samples: samples, tokens: tokens, layers: layers, config: config,
                                               log: { report($0) })
            let perLayer = timings.map(\.totalSeconds).sorted()[timings.count / 2]
            report("GPTQ per layer (median of \(timings.count)): \((perLayer * 1000).rounded() / 1000) s; 32 layers: \((perLayer * 32 / 60 * 100).rounded() / 100) min "
                   + "(AutoGPTQ on an H100: 16.8 s per layer, about 9.0 min, layer forwards included)")
        }
        if tiledShapes {
            try CUDABenchmarks.tiledShapes(backend: backend, shapes: try layerShapes(), batches: batch.isEmpty ? [1, 8, 16, 32] : batch,
                                           log: { report($0) })
        }
        try report.save()
    }
}
