import ArgumentParser
import GPTQKit

/// Where a command runs the model.
enum ComputeDevice: String, ExpressibleByArgument, CaseIterable {
    case cpu, cuda
}

/// The `--device` option of the commands that run a model.
struct DeviceFlags: ParsableArguments {
    @Option(parsing: .unconditional, help: "Where the model runs: cpu, or cuda (an NVIDIA GPU; the CUDA driver, NVRTC and cuBLAS are opened at run time).")
    var device: ComputeDevice = .cpu
}

/// A model folder loaded on the device a command asked for; it makes the sessions that
/// generation, chat, perplexity and bench talk to.
struct DeviceModel {
    let config: ModelConfig
    let architecture: Architecture
    let device: ComputeDevice
    let cpu: LanguageModel?
    let cuda: CUDAModel?

    init(folder: String, device: ComputeDevice) throws {
        self.device = device
        switch device {
        case .cpu:
            let model = try LanguageModel.load(folder: folder)
            (config, architecture, cpu, cuda) = (model.config, model.architecture, model, nil)
        case .cuda:
            // The libraries first: where they are missing this fails at once, naming the library.
            let backend = try CUDABackend(log: printToStandardError)
            let config = try ModelConfig(folder: folder)
            (self.config, architecture, cpu, cuda) = (config, try ModelFamily.forConfig(config).architecture(config), nil,
                                                      try CUDAModel.load(folder: folder, backend: backend))
        }
        for warning in try (cpu?.checkpoint ?? Checkpoint(folder: folder)).nonFiniteWeightWarnings() {
            printToStandardError("warning: \(warning)")
        }
    }

    func makeSession(capacity: Int) throws -> InferenceSession {
        if let cuda { return try cuda.makeSession(capacity: capacity) }
        return cpu!.makeSession(capacity: capacity)
    }
}

extension DeviceModel {
    /// `slots` sequences run together, for batched scoring, generation and serving: one pass
    /// for all slots, on the CPU or the GPU (up to CUDASession.maxBatch slots; more run as one
    /// session each, fed in turn). On the GPU the paged KV cache takes `cache`'s size.
    func makeBatchSession(slots: Int, capacity: Int, cache: CUDASession.CacheSize = .everySequenceFull) throws -> BatchInferenceSession {
        if let cpu { return cpu.makeBatchSession(slots: slots, capacity: capacity) }
        if let cuda, slots <= CUDASession.maxBatch { return try CUDABatchSession(model: cuda, slots: slots, capacity: capacity, cache: cache) }
        return SequentialBatchSession(sessions: try (0..<slots).map { _ in try makeSession(capacity: capacity) })
    }
}
