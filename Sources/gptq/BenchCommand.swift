#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import GPTQKit
import GPTQChecks

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure prefill and decode speed, the memory bandwidth decode reaches, and peak memory.",
        discussion: """
            Prefill runs --prompt-tokens tokens in one forward; decode then generates --decode-tokens \
            tokens one at a time (greedy, batch 1) with the KV cache. The weight bytes one decode token \
            streams, times the decode rate, is compared with a memcpy measured in the same process. \
            --baseline measures a second folder (e.g. the float model a quantized one came from) the \
            same way in the same process, right after the first, and prints the speed ratios (CPU).
            """
    )

    @Option(parsing: .unconditional, help: "The model folder.")
    var model: String

    @Option(parsing: .unconditional, help: "A second model folder to measure after --model, for speed ratios (e.g. the float model; CPU).")
    var baseline: String?

    @Option(parsing: .unconditional, help: "Prompt length for the prefill measurement.")
    var promptTokens = 512

    @Option(parsing: .unconditional, help: "Tokens generated for the decode measurement.")
    var decodeTokens = 128

    @Option(parsing: .unconditional, help: "Positions kept in the KV cache when decode starts (default: the whole prompt; 0 decodes from an empty cache, as llama-bench's tg test does).")
    var decodeContext: Int?

    @Option(parsing: .unconditional, help: "CPU threads (default: all cores).")
    var threads: Int?

    @OptionGroup var device: DeviceFlags

    @OptionGroup var cpuKernels: CPUKernelFlags

    @Flag(help: "After the decode measurement, decode the same tokens again with every linear layer timed, and print where a step goes (CPU).")
    var profile = false

    func validate() throws {
        guard promptTokens >= 1, decodeTokens >= 1 else { throw ValidationError("--prompt-tokens and --decode-tokens must be at least 1") }
        // Each is bounded by the model's positions in measure(); this keeps their sum from overflowing first.
        guard promptTokens <= 1 << 24, decodeTokens <= 1 << 24 else { throw ValidationError("--prompt-tokens and --decode-tokens must be at most \(1 << 24)") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if let decodeContext, !(0...promptTokens).contains(decodeContext) {
            throw ValidationError("--decode-context must be between 0 and --prompt-tokens (\(promptTokens))")
        }
    }

    struct Speed {
        let prefill: Double
        let decode: Double
    }

    func run() throws {
        useThreads(threads)
        if device.device == .cuda {
            guard baseline == nil else { throw ValidationError("--baseline is measured on the CPU only; drop --device cuda or --baseline") }
            try cpuKernels.apply(to: nil)
            return try runCUDA()
        }
        print("backend: cpu, \(CPUThreads.count) threads")
        let speed = try measure(folder: model)
        // Peak RSS is a high-water mark: read it before the baseline model is loaded.
        let peak = Self.peakResidentBytes()
        print("peak RSS: \(fixed(Double(peak) / 1e6, 1)) MB" + (baseline == nil ? " (before the memcpy test)" : " (before the baseline)"))
        if let baseline {
            let base = try measure(folder: baseline)
            print("speed vs baseline: prefill \(fixed(speed.prefill / base.prefill, 2))x, decode \(fixed(speed.decode / base.decode, 2))x")
        }
        let copy = MemoryBandwidth.measure(bytes: 256 << 20)
        print("memcpy: \(fixed(copy.oneThread / 1e9, 2)) GB/s one thread, \(fixed(copy.allThreads / 1e9, 2)) GB/s \(CPUThreads.count) threads (bytes read + written, 256 MB buffers)")
    }

    /// Loads `folder` on the CPU, prints its description and its prefill and decode figures.
    func measure(folder: String) throws -> Speed {
        let loaded = try LanguageModel.load(folder: folder)
        try cpuKernels.apply(to: loaded)
        let positions = loaded.architecture.maxPositions
        guard promptTokens + decodeTokens < positions else {
            throw ValidationError("--prompt-tokens \(promptTokens) plus --decode-tokens \(decodeTokens) pass the model's \(positions) positions")
        }
        let session = loaded.makeSession(capacity: promptTokens + decodeTokens + 1)
        let linears = loaded.allLinears
        let footprints = linears.compactMap { ($0 as? WeightFootprint)?.weightBytes }
        let streamed = footprints.reduce(0, +)
        let dtypes = Set(loaded.checkpoint.tensorNames.compactMap { loaded.checkpoint.entry($0)?.dtype.rawValue }).sorted()
        print("model: \(folder) (\(loaded.family.name), \(loaded.numLayers) layers, hidden \(loaded.hiddenSize), \(dtypes.joined(separator: "/")))")
        if let (config, _) = try QuantizedCheckpoint.config(folder: folder) {
            print("quantization: \(config.summary), \(linears.filter { $0 is GPTQLinear }.count) of \(linears.count) linears")
        }
        print("kernels: \(cpuKernels.summary(loaded))")

        // One warm-up token pages the mapped weights in.
        let prompt = Self.prompt(tokens: promptTokens, vocabulary: loaded.vocabSize)
        _ = try session.forward([prompt[0]], allLogits: false)
        session.rewind(to: 0)

        let clock = ContinuousClock()
        var logits: [Float] = []
        let prefill = try clock.measure { logits = try session.forward(prompt, allLogits: false) }.seconds
        print("prefill: \(promptTokens) tokens in \(fixed(prefill, 3)) s = \(fixed(Double(promptTokens) / prefill, 1)) tokens/s")
        let context = decodeContext ?? promptTokens
        if context < promptTokens { session.rewind(to: context) }

        let decode = try clock.measure { logits = try decodeGreedily(session, after: logits) }.seconds
        let rate = Double(decodeTokens) / decode
        print("decode: \(decodeTokens) tokens in \(fixed(decode, 3)) s = \(fixed(rate, 1)) tokens/s (\(fixed(1000 / rate, 2)) ms/token), from \(context) cached positions")
        if profile { try profileDecode(loaded, session: session, prompt: Array(prompt.prefix(max(context, 1)))) }
        let unknown = linears.count - footprints.count
        print("weights streamed per decode token: \(fixed(Double(streamed) / 1e6, 1)) MB"
              + (unknown > 0 ? " (\(unknown) layers do not report theirs)" : "")
              + " -> \(fixed(Double(streamed) * rate / 1e9, 2)) GB/s")
        return Speed(prefill: Double(promptTokens) / prefill, decode: rate)
    }

    /// decodeTokens greedy steps from `logits`, the last token's; returns the last step's logits.
    func decodeGreedily(_ session: InferenceSession, after logits: [Float]) throws -> [Float] {
        var logits = logits
        for _ in 0..<decodeTokens {
            var best = 0
            for i in logits.indices where logits[i] > logits[best] { best = i }
            logits = try session.forward([Int32(best)], allLogits: false)
        }
        return logits
    }

    /// Decodes decodeTokens tokens again after the same context with every linear wrapped in
    /// a timer and prints the step's time by module, the LM head and the rest (embedding,
    /// norms, rotary, attention over the KV cache, residuals, the argmax). The wrappers stay.
    func profileDecode(_ model: LanguageModel, session: InferenceSession, prompt: [Int32]) throws {
        let tally = LinearTimes()
        for layer in 0..<model.numLayers {
            for module in model.architecture.linears.map(\.name) {
                model.setLayerLinear(layer, module, TimedLinear(model.layerLinear(layer, module), name: module, tally: tally))
            }
        }
        model.lmHead = TimedLinear(model.lmHead, name: "lm_head", tally: tally)
        session.rewind(to: 0)
        let logits = try session.forward(prompt, allLogits: false)
        tally.seconds.removeAll()
        let clock = ContinuousClock()
        let total = try clock.measure { _ = try decodeGreedily(session, after: logits) }.seconds
        func line(_ name: String, _ seconds: Double) -> String {
            "  \(name): \(fixed(seconds / Double(decodeTokens) * 1000, 3)) ms (\(fixed(100 * seconds / total, 1))%)"
        }
        print("decode profile, per token: \(fixed(total / Double(decodeTokens) * 1000, 3)) ms")
        for (name, seconds) in tally.seconds.sorted(by: { $0.value > $1.value }) { print(line(name, seconds)) }
        print(line("rest (embedding, norms, rotary, attention, residuals, argmax)", total - tally.seconds.values.reduce(0, +)))
    }

    /// The same on the GPU: prefill and greedy decode as `gptq generate --device cuda` runs
    /// them (the decode graph replayed each token, the argmax found on the GPU, one id
    /// copied back), after a warm-up pass that compiles the kernels and captures the graph.
    func runCUDA() throws {
        let backend = try CUDABackend(log: printToStandardError)
        let loaded = try CUDAModel.load(folder: model, backend: backend)
        let config = try ModelConfig(folder: model)
        print("model: \(model) (\(config.modelType), \(loaded.numLayers) layers, hidden \(loaded.hidden), \(loaded.weightsDescription))")
        print("backend: cuda, \(backend.summary)")
        let session = try loaded.makeSession(capacity: promptTokens + decodeTokens + 1)
        let prompt = Self.prompt(tokens: promptTokens, vocabulary: loaded.vocab)
        var token = try session.forwardGreedy(prompt)
        for _ in 0..<2 { token = try session.forwardGreedy([token]) }
        session.rewind(to: 0)

        let clock = ContinuousClock()
        let prefill = try clock.measure { token = try session.forwardGreedy(prompt) }.seconds
        print("prefill: \(promptTokens) tokens in \(fixed(prefill, 4)) s = \(fixed(Double(promptTokens) / prefill, 1)) tokens/s")
        let decode = try clock.measure {
            for _ in 0..<decodeTokens { token = try session.forwardGreedy([token]) }
        }.seconds
        let rate = Double(decodeTokens) / decode
        print("decode: \(decodeTokens) tokens in \(fixed(decode, 4)) s = \(fixed(rate, 1)) tokens/s (\(fixed(1000 / rate, 3)) ms/token)")
        let copy = try CUDABenchmarks.copyBandwidth(backend: backend)
        print("weights streamed per decode token: \(fixed(Double(loaded.weightBytes) / 1e6, 1)) MB -> \(fixed(Double(loaded.weightBytes) * rate / 1e9, 1)) GB/s "
              + "(device-to-device copy: \(fixed(copy, 0)) GB/s read + written)")
    }

    /// A fixed pseudo-random prompt.
    static func prompt(tokens: Int, vocabulary: Int) -> [Int32] {
        var state: UInt64 = 0x9E3779B97F4A7C15
        return (0..<tokens).map { _ -> Int32 in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int32((state >> 33) % UInt64(vocabulary))
        }
    }

    static func peakResidentBytes() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024
    }
}

/// Seconds spent in each kind of linear layer, summed over calls (one thread calls forward).
final class LinearTimes {
    var seconds: [String: Double] = [:]
}

/// A linear layer that adds the time of each forward to its name's total.
final class TimedLinear: LinearLayer, WeightFootprint, @unchecked Sendable {
    let inner: LinearLayer
    let name: String
    let tally: LinearTimes
    var inFeatures: Int { inner.inFeatures }
    var outFeatures: Int { inner.outFeatures }
    var weightBytes: Int { (inner as? WeightFootprint)?.weightBytes ?? 0 }

    init(_ inner: LinearLayer, name: String, tally: LinearTimes) {
        self.inner = inner
        self.name = name
        self.tally = tally
    }

    func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>) {
        let start = ContinuousClock.now
        inner.forward(x, rows: rows, into: y)
        tally.seconds[name, default: 0] += (ContinuousClock.now - start).seconds
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}

/// memcpy throughput, counting bytes read plus bytes written, best of a few copies.
enum MemoryBandwidth {
    static func measure(bytes: Int) -> (oneThread: Double, allThreads: Double) {
        let source = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        let target = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        defer { source.deallocate(); target.deallocate() }
        memset(source, 1, bytes)
        memset(target, 2, bytes)
        let clock = ContinuousClock()
        func best(_ copy: () -> Void) -> Double {
            var fastest = Double.infinity
            for _ in 0..<5 { fastest = min(fastest, clock.measure(copy).seconds) }
            return Double(2 * bytes) / fastest
        }
        let one = best { memcpy(target, source, bytes) }
        nonisolated(unsafe) let (s, t) = (source, target)
        let all = best {
            CPUThreads.parallelRanges(bytes, minimumChunk: 1 << 20) { a, b in memcpy(t + a, s + a, b - a) }
        }
        return (one, all)
    }
}
