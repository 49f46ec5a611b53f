#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import GPTQKit

struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Quantize a Hugging Face causal LM with GPTQ (or round-to-nearest) into an AutoGPTQ-format folder.",
        discussion: """
            Layer by layer as AutoGPTQ does: calibration samples run through each layer, the Hessians of its \
            linears are accumulated group by group (true-sequential), each linear is quantized and the layer's \
            outputs are recomputed with the quantized weights. The folder is written atomically.
            """
    )

    @Option(parsing: .unconditional, help: "The float model folder.") var model: String
    @Option(parsing: .unconditional, help: "The quantized folder to write (not inside --model).") var out: String
    @Option(parsing: .unconditional, help: "Bits per weight: 2, 3, 4 or 8.") var bits = 4
    @Option(parsing: .unconditional, help: "Input columns per group of scales and zeros; -1 for one group per row.") var groupSize = 128
    @Flag(help: "Act-order: quantize columns by decreasing Hessian diagonal.") var descAct = false
    @Flag(help: "Group parameters from the unquantized weight (with --desc-act, keeps groups contiguous).") var staticGroups = false
    @Flag(help: "Symmetric quantization (the default).") var sym = false
    @Flag(help: "Asymmetric quantization: a zero point per group and row.") var asym = false
    @Option(parsing: .unconditional, help: "Damping added to the Hessian diagonal, as a fraction of its mean.") var damp = 0.01
    @Option(parsing: .unconditional, help: "Checkpoint format: gptq (v1, zero − 1: every loader) or gptq_v2 (GPTQModel, transformers). Default: gptq if symmetric, gptq_v2 if asymmetric.")
    var format: String?
    @Option(parsing: .unconditional, help: "Calibration file: text, JSONL with a \"text\" field, or token ids (.json, .safetensors, .bin).") var calib: String?
    @Option(parsing: .unconditional, help: "Calibration format: text, jsonl or tokens (default: from the extension).") var calibFormat: String?
    @Option(parsing: .unconditional, help: "Calibration samples: windows (random windows, GPTQ's protocol) or documents (each truncated to --seqlen).")
    var calibMode = "windows"
    @Option(parsing: .unconditional, help: "Number of calibration samples.") var nsamples = 128
    @Option(parsing: .unconditional, help: "Tokens per calibration sample.") var seqlen = 2048
    @Option(parsing: .unconditional, help: "Seed of Python's random, as GPTQ's datautils use it.") var seed = 0
    @Option(parsing: .unconditional, help: "gptq or rtn (round to nearest, no calibration).") var method = "gptq"
    @Flag(inversion: .prefixedNo, help: "Quantize a layer's linears in groups (q/k/v, o, up/gate, down), each seeing the previous ones quantized.")
    var trueSequential = true
    @Flag(help: "Quantize the LM head too, with the same settings, from the final norm's outputs (GPTQModel's lm_head; a tied embedding stays float).")
    var quantizeLmHead = false
    @Option(parsing: .unconditional, help: "Shard model.safetensors past this size, e.g. 2GB or 500MB.") var maxShardSize: String?
    @Option(parsing: .unconditional, help: "After saving, report the quantized model's perplexity on this text (GPTQ protocol, windows of 2048 tokens).")
    var evalText: String?
    @Option(parsing: .unconditional, help: "Use only the first N windows of --eval-text.") var evalWindows: Int?
    @Flag(help: "Replace --out if it exists.") var overwrite = false
    @Option(parsing: .unconditional, help: "Where GPTQ runs: cpu, or cuda (layer forwards in float16, Hessians and GPTQ on an NVIDIA GPU).")
    var device = QuantizeJob.Device.cpu

    func job() throws -> QuantizeJob {
        guard let method = QuantizationMethod(rawValue: method) else {
            throw ValidationError("--method \(method) is not one of gptq, rtn")
        }
        guard !(sym && asym) else { throw ValidationError("--sym and --asym exclude each other") }
        let checkpointFormat = try format.map { name in
            guard let format = CheckpointFormat(rawValue: name) else { throw ValidationError("--format \(name) is not one of gptq, gptq_v2") }
            return format
        }
        var job = QuantizeJob(model: model, out: out)
        job.method = method
        job.config = QuantizeConfig(bits: bits, groupSize: groupSize, descAct: descAct, staticGroups: staticGroups,
                                    sym: !asym, dampPercent: damp, trueSequential: trueSequential, checkpointFormat: checkpointFormat,
                                    lmHead: quantizeLmHead)
        job.calibration = calib
        if let calibFormat {
            guard let format = CalibrationFormat(rawValue: calibFormat) else {
                throw ValidationError("--calib-format \(calibFormat) is not one of text, jsonl, tokens")
            }
            job.calibrationFormat = format
        }
        switch calibMode {
        case "windows": job.calibrationMode = .randomWindows(count: nsamples, length: seqlen, seed: seed)
        case "documents": job.calibrationMode = .documents(count: nsamples, maxLength: seqlen)
        default: throw ValidationError("--calib-mode \(calibMode) is not one of windows, documents")
        }
        job.maxShardBytes = try maxShardSize.map(QuantizeJob.parseByteSize)
        job.overwrite = overwrite
        job.device = device
        return job
    }

    func run() throws {
        let job = try job()
        if let evalText, !FileIO.exists(evalText) { throw GPTQError.invalidFile(path: evalText, reason: "evaluation text not found") }
        let quantized = try job.run(log: printToStandardError)
        print("quantized \(quantized.packed.count) linears (\(job.method.rawValue), \(bits)-bit, group \(groupSize)) in \(fixed(quantized.seconds, 1)) s, peak RSS \(fixed(Double(BenchCommand.peakResidentBytes()) / 1e6, 1)) MB")
        print("saved \(out) (checkpoint format \(quantized.config.checkpointFormat.rawValue))")
        guard let evalText else { return }
        let model = try LanguageModel.load(folder: out)
        let tokens = try Tokenizer(folder: out).encode(try FileIO.readText(path: evalText))
        let result = try Perplexity.evaluate(tokens: tokens, session: model.makeSession(capacity: 2048), seqlen: 2048, windows: evalWindows) { done, all, ppl in
            printToStandardError("eval window \(done)/\(all)  ppl \(fixed(ppl, 3))")
        }
        print("perplexity \(evalText): \(result.perplexity) (\(result.windowLosses.count) windows of 2048 tokens)")
    }
}

/// Progress lines go to stderr, results to stdout.
func printToStandardError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

extension QuantizeJob.Device: ExpressibleByArgument {}
