import ArgumentParser
import GPTQKit

extension GPTQLinear.Int8Activations: ExpressibleByArgument {}

extension Int8KernelPath: ExpressibleByArgument {
    public init?(argument: String) {
        guard let path = Self.allCases.first(where: { $0.description == argument }) else { return nil }
        self = path
    }

    public static var allValueStrings: [String] { allCases.map(\.description) }
}

/// The CPU kernels' choices that bench, generate, chat and perplexity share.
struct CPUKernelFlags: ParsableArguments {
    @Flag(help: "Run a float LM head in int8 (per-row weight scales, activations per block of 32): half of a float16 head's bytes (CPU).")
    var int8Head = false

    @Option(parsing: .unconditional, help: "Where GPTQ layers quantize their input to int8: off, decode (the GEMV of up to 4 rows) or all (every row count, for perplexity; slow prefill) (CPU).")
    var int8Activations: GPTQLinear.Int8Activations = .decode

    @Option(parsing: .unconditional, help: "The int8 kernels' instruction set: scalar, avx2, avx-vnni or avx512-vnni (default: the best this CPU has) (CPU).")
    var cpuKernel: Int8KernelPath?

    /// Whether any flag asks for something other than the defaults (the GPU has none of these).
    var isSet: Bool { int8Head || int8Activations != .decode || cpuKernel != nil }

    /// Applies the flags to a CPU model; with a GPU model (nil) they must be left at their defaults.
    func apply(to model: LanguageModel?) throws {
        guard let model else {
            if isSet { throw ValidationError("--int8-head, --int8-activations and --cpu-kernel are for the CPU; drop them or --device cuda") }
            return
        }
        try Int8KernelPath.select(cpuKernel)
        for case let layer as GPTQLinear in model.allLinears { layer.int8Activations = int8Activations }
        if int8Head { try model.useInt8Head() }
    }

    /// What the flags chose, for a command's report.
    func summary(_ model: LanguageModel) -> String {
        let head = model.lmHead is Int8Linear ? "int8" : String(describing: type(of: model.lmHead))
        return "int8 activations \(int8Activations.rawValue) (\(Int8KernelPath.current) kernels), LM head \(head)"
    }
}
