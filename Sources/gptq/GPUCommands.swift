import ArgumentParser
import GPTQKit

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

    @Option(help: "The gptq fixture (layer_reference.safetensors with AutoGPTQ's packed layers and outputs).")
    var gptqFixture: String?

    @Option(help: "Write the report to this file too.")
    var log: String?

    func run() throws {
        let report = ReportLog(path: log)
        let backend = try CUDABackend()
        report("device: \(backend.summary)")
        var results = try CUDAChecks.linearKernels(backend: backend)
        if let gptqFixture { results += try CUDAChecks.gptqFixture(backend: backend, path: gptqFixture) }
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
            --kernels: 4-bit group-128 GEMV/GEMM against float16 cuBLAS for the Llama-2-7B \
            linear shapes at batch 1, 2, 4, 8, 16, and the device-to-device copy bandwidth.
            """
    )

    @Flag(help: "Time the linear kernels and the copy bandwidth.")
    var kernels = false

    @Option(help: "Write the report to this file too.")
    var log: String?

    func run() throws {
        let report = ReportLog(path: log)
        let backend = try CUDABackend()
        report("device: \(backend.summary)")
        if kernels {
            let copy = try CUDABenchmarks.copyBandwidth(backend: backend)
            report("device-to-device copy: \(Int(copy.rounded())) GB/s (read + written)")
            let shapes = [(4096, 4096), (4096, 11008), (11008, 4096), (8192, 28672)]
            let rows = try CUDABenchmarks.linears(backend: backend, shapes: shapes, batches: [1, 2, 4, 8, 16], log: { report($0) })
            report("4-bit GB/s as a fraction of the copy: " + rows.filter { $0.batch == 1 }.map {
                "\($0.inFeatures)x\($0.outFeatures) \(Int(($0.quantizedGBs / copy * 100).rounded()))%"
            }.joined(separator: ", "))
        }
        try report.save()
    }
}
