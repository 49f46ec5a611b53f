#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A whole quantization run as `gptq quantize` performs it: checks every argument before
/// the long work starts, loads the model and the calibration samples, quantizes layer by
/// layer and saves the folder atomically.
public struct QuantizeJob: Sendable {
    /// The float model folder (Hugging Face layout).
    public var model: String
    /// The quantized folder to write.
    public var out: String
    public var config = QuantizeConfig()
    public var method = QuantizationMethod.gptq
    /// Calibration file (required by GPTQ).
    public var calibration: String?
    /// nil: inferred from the file's extension.
    public var calibrationFormat: CalibrationFormat?
    public var calibrationMode = CalibrationMode.randomWindows(count: 128, length: 2048, seed: 0)
    /// Shard the weights past this many bytes (nil: one file).
    public var maxShardBytes: Int?
    public var overwrite = false
    /// Where the Hessians are accumulated and GPTQ runs (the layer forwards run on the CPU).
    public var device = Device.cpu

    public enum Device: String, Sendable, CaseIterable { case cpu, cuda }

    public init(model: String, out: String) {
        self.model = model
        self.out = out
    }

    /// Runs the job; `log` receives one line per event (calibration summary, each module quantized, warnings).
    @discardableResult
    public func run(log: @escaping (String) -> Void = { _ in }) throws -> QuantizedModel {
        try config.validate()
        try CheckpointWriter.checkDestination(out, source: model, overwrite: overwrite)
        for stale in try FileIO.removeStaleTemporaries(of: out) {
            log("removed \(stale), left by an interrupted run")
        }
        typealias Quantize = (LanguageModel, [[Int32]], @escaping (QuantizationProgress) -> Void) throws -> QuantizedModel
        let quantize: Quantize
        // Round to nearest has no forwards or Hessians: nothing for a GPU to do.
        if device == .cuda && method == .gptq {
            try CUDAGPTQ.checkSupported(config)
            // The GPU first: where the CUDA libraries are missing this fails before any work, naming the library.
            let gptq = CUDAGPTQ(backend: try CUDABackend())
            log("GPTQ on \(gptq.description): layer forwards (float16), Hessians and quantization on the GPU")
            quantize = { try GPTQPipeline.quantizeOnGPU($0, config: config, calibration: $1, gptq: gptq, progress: $2) }
        } else {
            quantize = { try GPTQPipeline.quantize($0, config: config, calibration: $1, method: method, progress: $2) }
        }
        let languageModel = try LanguageModel.load(folder: model)
        for warning in try languageModel.checkpoint.nonFiniteWeightWarnings() { log("warning: \(warning)") }
        try GPTQPipeline.validate(languageModel, config: config, method: method)
        var samples: [[Int32]] = []
        if method == .gptq {
            guard let calibration else { throw GPTQError.invalidArgument("GPTQ needs calibration data: pass --calib FILE") }
            let format = calibrationFormat ?? CalibrationFormat.infer(path: calibration)
            // Loaded on first use, so that a bad calibration file is reported before a missing tokenizer.
            var tokenizer: Tokenizer?
            let corpus = try CalibrationCorpus.load(path: calibration, format: format) { text in
                if tokenizer == nil { tokenizer = try Tokenizer(folder: model) }
                return tokenizer!.encode(text)
            }
            try corpus.checkIds(below: languageModel.config.vocabSize)
            try Self.checkCalibrationSize(calibrationMode, hiddenSize: languageModel.hiddenSize)
            samples = try corpus.samples(calibrationMode)
            log("calibration: \(samples.count) samples, \(samples.reduce(0) { $0 + $1.count }) tokens from \(calibration) (\(corpus.tokenCount) tokens)")
        }
        let quantized = try quantize(languageModel, samples) { event in
            log(event.line)
            for warning in event.warnings { log("  warning: \(warning)") }
        }
        try quantized.save(to: out, maxShardBytes: maxShardBytes, overwrite: overwrite)
        return quantized
    }

    /// Refuses sample counts and lengths whose layer inputs (kept in float32 between layers)
    /// would not fit in this machine's memory, before any of it is allocated.
    static func checkCalibrationSize(_ mode: CalibrationMode, hiddenSize: Int) throws {
        let (count, length): (Int, Int)
        switch mode {
        case let .randomWindows(c, l, _): (count, length) = (c, l)
        case let .documents(c, l): (count, length) = (c, l)
        }
        let memory = sysconf(Int32(_SC_PHYS_PAGES)) * sysconf(Int32(_SC_PAGESIZE))
        let (tokens, tokensOverflow) = count.multipliedReportingOverflow(by: length)
        let (bytes, bytesOverflow) = tokens.multipliedReportingOverflow(by: hiddenSize * MemoryLayout<Float>.size)
        guard !tokensOverflow, !bytesOverflow, bytes <= memory else {
            throw GPTQError.invalidArgument("\(count) calibration samples of \(length) tokens need \(tokensOverflow || bytesOverflow ? "more than \(Int.max)" : String(bytes)) bytes of layer inputs; this machine has \(memory) (lower --nsamples or --seqlen)")
        }
    }

    /// Parses a size such as `2GB`, `500MB`, `1.5GiB` or `1000000` (bytes). KB/MB/GB are
    /// powers of 1000 as in transformers' max_shard_size; KiB/MiB/GiB powers of 1024.
    public static func parseByteSize(_ text: String) throws -> Int {
        let units: [(String, Double)] = [("KIB", 1024), ("MIB", 1_048_576), ("GIB", 1_073_741_824), ("TIB", 1_099_511_627_776),
                                         ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12), ("B", 1)]
        let upper = text.uppercased().filter { $0 != " " }
        let (number, factor) = units.first { upper.hasSuffix($0.0) }.map { (String(upper.dropLast($0.0.count)), $0.1) } ?? (upper, 1)
        guard let value = Double(number), value > 0, (value * factor).isFinite, value * factor >= 1 else {
            throw GPTQError.invalidArgument("size '\(text)' is not a positive number of bytes with an optional unit (KB, MB, GB, KiB, MiB, GiB)")
        }
        // Past a petabyte no shard limit means anything, and Int(value) would trap past 2^63.
        guard value * factor <= 1e15 else {
            throw GPTQError.invalidArgument("size '\(text)' is larger than 1 PB; leave the option out for no limit")
        }
        return Int(value * factor)
    }
}
