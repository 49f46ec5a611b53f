import ArgumentParser
import GPTQKit
import GPTQServe
import Logging

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a model over an OpenAI-compatible HTTP API, with continuous batching.",
        discussion: """
            Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, POST /tokenize, \
            POST /detokenize, GET /health, GET /metrics (Prometheus). Sampling fields a request leaves \
            out take generation_config.json's values, as in `gptq generate`.
            """
    )

    @Option(help: "The model folder (config.json, safetensors, tokenizer.json).")
    var model: String

    @OptionGroup var device: DeviceFlags

    @Option(help: "The address to listen on (loopback unless you ask otherwise).")
    var host = "127.0.0.1"

    @Option(help: "The port to listen on (0 picks a free one).")
    var port = 8000

    @Option(help: "Most sequences decoded together (on the CPU each holds a KV cache of --max-model-len positions; on the GPU they share a paged cache).")
    var maxBatch = 8

    @Option(help: "--device cuda: the share of the GPU's memory the server may fill; the paged KV cache takes what the model and buffers leave of it.")
    var gpuMemoryFraction = 0.9

    @Option(help: "Most tokens, prompt and completion, per sequence (default: the model's context, at most 4096).")
    var maxModelLen: Int?

    @Option(help: "Require 'Authorization: Bearer KEY' on every route but /health.")
    var apiKey: String?

    @Option(help: "The model name clients pass (default: the folder's name).")
    var servedModelName: String?

    @Option(help: "Most sequences waiting for a batch slot; beyond them requests get HTTP 503.")
    var maxWaiting = 256

    @Option(help: "Prompt tokens prefilled per scheduler step, so new prompts do not stall running streams.")
    var prefillChunk = 128

    @Option(help: "CPU threads (default: all cores).")
    var threads: Int?

    func validate() throws {
        if maxBatch < 1 { throw ValidationError("--max-batch must be at least 1") }
        if !(gpuMemoryFraction > 0 && gpuMemoryFraction <= 1) { throw ValidationError("--gpu-memory-fraction must be in (0, 1]") }
        if let maxModelLen, maxModelLen < 2 { throw ValidationError("--max-model-len must be at least 2") }
        if maxWaiting < 1 { throw ValidationError("--max-waiting must be at least 1") }
        if prefillChunk < 1 { throw ValidationError("--prefill-chunk must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if !(0...65535).contains(port) { throw ValidationError("--port must be in 0...65535") }
    }

    func run() async throws {
        CPUThreads.set(threads ?? CPUThreads.count)
        var logger = Logger(label: "gptq.serve")
        logger.logLevel = .info
        let loaded = try GenerationModel(folder: model, device: device.device)
        let contextLength = maxModelLen ?? min(loaded.model.architecture.maxPositions, 4096)
        // The batch goes through one pass a step (the weights stream once).
        let session = try loaded.model.makeBatchSession(slots: maxBatch, capacity: contextLength, cache: .memoryFraction(gpuMemoryFraction))
        let name = servedModelName ?? String(model.split(separator: "/").last ?? Substring(model))
        let served = ServedModel(
            name: name, tokenizer: loaded.tokenizer, tokenizerConfig: loaded.tokenizerConfig,
            chatTemplate: loaded.tokenizerConfig.chatTemplate == nil ? nil : try ChatTemplate(config: loaded.tokenizerConfig),
            endOfSequenceIds: loaded.endOfSequenceIds, defaultSampling: loaded.generationConfig.sampling, maxModelLen: contextLength)
        var configuration = ServerConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.apiKey = apiKey
        configuration.maxWaiting = maxWaiting
        configuration.prefillChunk = prefillChunk
        let server = OpenAIServer(model: served, session: session, configuration: configuration, logger: logger)
        try await server.run { [logger] port in
            logger.info("serving", metadata: ["model": "\(name)", "address": "http://\(host):\(port)", "device": "\(device.device.rawValue)",
                                              "max_batch": "\(maxBatch)", "max_model_len": "\(contextLength)"])
        }
    }
}
