import Foundation
import GPTQKit
import Logging
import Testing
@testable import GPTQServe

/// The tiny servable model scripts/make-serve-fixture.py builds (the random llama fixture
/// with a tokenizer cut to its 384 ids), and the pieces the server needs of it.
enum ServeFixture {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    static let folder: String = {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("gptq-serve-fixture-\(getpid())").path
        let status = try! runSynchronously(["python3", packageRoot + "/scripts/make-serve-fixture.py", folder])
        precondition(status == 0, "scripts/make-serve-fixture.py failed")
        return folder
    }()

    static func servedModel(folder: String, maxModelLen: Int, name: String = "tiny-llama") throws -> (ServedModel, LanguageModel) {
        let model = try LanguageModel.load(folder: folder)
        let tokenizerConfig = try TokenizerConfig(folder: folder)
        let tokenizer = try Tokenizer(folder: folder)
        let generation = try GenerationConfig(folder: folder)
        let served = ServedModel(
            name: name, tokenizer: tokenizer, tokenizerConfig: tokenizerConfig, chatTemplate: try ChatTemplate(config: tokenizerConfig),
            endOfSequenceIds: GenerationOptions.endOfSequenceIds(generation: generation, model: model.config,
                                                                 eosToken: tokenizerConfig.eosToken.flatMap(tokenizer.id(for:))),
            defaultSampling: generation.sampling, maxModelLen: maxModelLen)
        return (served, model)
    }

    static func runSynchronously(_ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Runs a command without blocking a concurrency thread (the servers in this process
    /// need them: a blocking read of its output would starve them), killed after `timeout`
    /// seconds; returns its status and output (stdout and stderr together).
    static func run(_ arguments: [String], timeout: Int = 300) async throws -> (status: Int32, output: String) {
        let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("gptq-serve-test-\(UUID().uuidString).log").path
        FileManager.default.createFile(atPath: outputPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["timeout", String(timeout)] + arguments
        process.standardOutput = output
        process.standardError = output
        let status = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int32, Error>) in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try process.run() } catch { continuation.resume(throwing: error) }
        }
        try output.close()
        return (status, try String(contentsOfFile: outputPath, encoding: .utf8))
    }

    /// A metric's value in Prometheus' text format.
    static func metric(_ name: String, in text: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last!) }
    }

    /// Starts a server on a free loopback port, runs `body` with its base URL, stops it.
    static func withServer(folder: String = folder, slots: Int = 4, maxModelLen: Int = 128, name: String = "tiny-llama",
                           configure: (inout ServerConfiguration) -> Void = { _ in },
                           _ body: (String) async throws -> Void) async throws {
        let (served, model) = try servedModel(folder: folder, maxModelLen: maxModelLen, name: name)
        var configuration = ServerConfiguration()
        configuration.port = 0
        configuration.idleTimeout = .seconds(2)
        configure(&configuration)
        var logger = Logger(label: "gptq.serve.test")
        logger.logLevel = .warning
        let server = OpenAIServer(model: served, session: model.makeBatchSession(slots: slots, capacity: maxModelLen),
                                  configuration: configuration, logger: logger)
        let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let task = Task { try await server.run { portContinuation.yield($0) } }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw GPTQError.invalidArgument("the server did not start") }
        do {
            try await body("http://127.0.0.1:\(port)")
        } catch {
            task.cancel()
            throw error
        }
        task.cancel()
        try? await task.value
    }

    /// Runs scripts/serve-openai-check.py (the official openai client) against a server.
    static func clientCheck(_ arguments: [String]) async throws {
        let (status, output) = try await run(["python3", packageRoot + "/scripts/serve-openai-check.py"] + arguments)
        #expect(status == 0, "\(output)")
        #expect(output.contains("ok:"), "\(output)")
    }
}

@Suite("Serve")
struct ServeTests {
    @Test("the openai client: chat, completions, streaming, n > 1, stop strings, logprobs, bad input")
    func openAIClient() async throws {
        try await ServeFixture.withServer { base in
            try await ServeFixture.clientCheck([base, "tiny-llama", "api"])
        }
    }

    @Test("--api-key guards every route but /health")
    func apiKey() async throws {
        try await ServeFixture.withServer(configure: { $0.apiKey = "secret-key" }) { base in
            try await ServeFixture.clientCheck([base, "tiny-llama", "auth", "secret-key"])
        }
    }

    @Test("greedy outputs of 32 concurrent requests of different lengths equal each run alone")
    func batchedEqualsAlone() async throws {
        let (served, model) = try ServeFixture.servedModel(folder: ServeFixture.folder, maxModelLen: 128)
        let metrics = ServeMetrics()
        // 6 slots of the CPU's batched session for 32 requests: sequences join and leave the
        // batch, and share each step's pass; 16-token prefill chunks.
        let scheduler = Scheduler(session: model.makeBatchSession(slots: 6, capacity: 128),
                                  tokenizer: served.tokenizer, prefillChunk: 16, maxWaiting: 64, metrics: metrics, logger: Logger(label: "test"))
        defer { scheduler.shutDown() }
        var random = Xoshiro256StarStar(seed: 24)
        let requests = (0..<32).map { i in
            SequenceParameters(prompt: (0..<(2 + (i * 7) % 45)).map { _ in Int32(4 + random.next() % 380) }, maxTokens: 3 + (i * 5) % 17,
                               sampling: SamplingParameters(), seed: 0, stopTokenIds: [])
        }
        let batched = try await withThrowingTaskGroup(of: (Int, [Int32]).self) { group in
            for (i, request) in requests.enumerated() {
                let events = try scheduler.submit([request]).events
                group.addTask {
                    var tokens: [Int32] = []
                    for await (_, event) in events {
                        if case let .token(id, _, _) = event { tokens.append(id) }
                        if case let .failed(message) = event { throw GPTQError.invalidArgument(message) }
                    }
                    return (i, tokens)
                }
            }
            var results = Array(repeating: [Int32](), count: requests.count)
            for try await (i, tokens) in group { results[i] = tokens }
            return results
        }
        for (i, request) in requests.enumerated() {
            let alone = try Generator(session: model.makeSession(capacity: 128))
                .generate(prompt: request.prompt, options: GenerationOptions(maxNewTokens: request.maxTokens))
            #expect(batched[i] == alone.tokens, "request \(i) (prompt \(request.prompt.count) tokens)")
        }
        let text = metrics.registry.emitToString()
        #expect(ServeFixture.metric("gptq_kv_slots_in_use", in: text) == 0, "\(text)")
        #expect(ServeFixture.metric("gptq_kv_tokens_in_use", in: text) == 0, "\(text)")
    }

    @Test("a cancelled request frees its slot at once; a full queue refuses")
    func cancellationAndBackpressure() async throws {
        let (served, model) = try ServeFixture.servedModel(folder: ServeFixture.folder, maxModelLen: 128)
        let metrics = ServeMetrics()
        // The session holds its second pass until the test has cancelled, so the cancellation
        // lands while the sequence has 119 steps to go however slowly the test's thread runs.
        let gated = GatedBatchSession(SequentialBatchSession(sessions: [model.makeSession(capacity: 128)]), passesBeforeGate: 1)
        let scheduler = Scheduler(session: gated, tokenizer: served.tokenizer, prefillChunk: 16, maxWaiting: 2, metrics: metrics,
                                  logger: Logger(label: "test"))
        defer { scheduler.shutDown() }
        let long = SequenceParameters(prompt: [5, 6, 7], maxTokens: 120, sampling: SamplingParameters(), seed: 0, stopTokenIds: [])
        let running = try scheduler.submit([long])
        var iterator = running.events.makeAsyncIterator()
        _ = await iterator.next()
        let waiting = try scheduler.submit([long, long])
        #expect(throws: SubmitError.overloaded) { try scheduler.submit([long]) }
        scheduler.cancel(running.id)
        scheduler.cancel(waiting.id)
        gated.open()
        var after = 0
        while await iterator.next() != nil { after += 1 }
        #expect(after <= 2, "the cancelled sequence stopped at the pass it was in, not after its 120 tokens")
        var waitingEvents = 0
        for await _ in waiting.events { waitingEvents += 1 }
        #expect(waitingEvents == 0, "the cancelled waiting sequences never ran")
        // The loop publishes its gauges before it waits for work.
        var text = ""
        for _ in 0..<100 {
            text = metrics.registry.emitToString()
            if ServeFixture.metric("gptq_kv_slots_in_use", in: text) == 0 && ServeFixture.metric("gptq_sequences_waiting", in: text) == 0 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(ServeFixture.metric("gptq_kv_slots_in_use", in: text) == 0, "\(text)")
        #expect(ServeFixture.metric("gptq_sequences_waiting", in: text) == 0, "\(text)")
        #expect(ServeFixture.metric("gptq_sequences_cancelled_total", in: text) == 3, "\(text)")
        _ = try scheduler.submit([long])
    }

    @Test("load: 120 streaming requests from 16 clients, some hanging up; every slot comes back",
          .enabled(if: FileManager.default.fileExists(atPath: gptqBinary)))
    func load() async throws {
        let (status, output) = try await ServeFixture.run(
            ["python3", ServeFixture.packageRoot + "/scripts/serve-load.py", "--gptq", Self.gptqBinary,
             "--requests", "120", "--concurrency", "16", "--max-batch", "8", "--disconnect", "0.2", "--timeout", "240"], timeout: 300)
        #expect(status == 0, "\(output)")
        #expect(output.contains("failed 0"), "\(output)")
    }

    static let smolLM2: String? = {
        let cache = ProcessInfo.processInfo.environment["GPTQ_CACHE"] ?? (NSHomeDirectory() + "/.cache/swift-gptq")
        let folder = cache + "/SmolLM2-135M-Instruct"
        return FileManager.default.fileExists(atPath: folder + "/.fetch-complete") ? folder : nil
    }()
    static let gptqBinary = ServeFixture.packageRoot + "/.build/release/gptq"

    @Test("a greedy chat reply through the server equals gptq generate's (SmolLM2)",
          .enabled(if: smolLM2 != nil && FileManager.default.fileExists(atPath: gptqBinary)))
    func greedyEqualsGenerate() async throws {
        let folder = Self.smolLM2!
        let prompt = "What is the capital of France? Answer in one sentence."
        let (status, output) = try await ServeFixture.run([Self.gptqBinary, "generate", "--model", folder, "--prompt", prompt, "--chat",
                                                           "--temperature", "0", "--max-new-tokens", "32"])
        try #require(status == 0, "\(output)")
        // stdout is the text and a newline; the statistics line went to stderr, which the pipe shares.
        let expected = String(output.split(separator: "\nprefill:", maxSplits: 1)[0])
        try await ServeFixture.withServer(folder: folder, slots: 2, maxModelLen: 512, name: "smollm2") { base in
            try await ServeFixture.clientCheck([base, "smollm2", "greedy", prompt, expected, "32"])
        }
    }
}

/// Runs the first `passesBeforeGate` passes, then holds every later one until `open()`.
final class GatedBatchSession: BatchInferenceSession {
    let inner: BatchInferenceSession
    let passesBeforeGate: Int
    private var passes = 0
    private let gate = DispatchSemaphore(value: 0)

    init(_ inner: BatchInferenceSession, passesBeforeGate: Int) {
        self.inner = inner
        self.passesBeforeGate = passesBeforeGate
    }

    func open() { gate.signal() }

    var vocabSize: Int { inner.vocabSize }
    var slots: Int { inner.slots }
    var capacity: Int { inner.capacity }
    func position(of slot: Int) -> Int { inner.position(of: slot) }

    func forward(_ batch: [(slot: Int, tokens: [Int32])], allLogits: Bool) throws -> [[Float]] {
        // Only the scheduler's thread calls forward, so the count needs no lock.
        passes += 1
        if passes > passesBeforeGate {
            gate.wait()
            gate.signal()  // stays open for every later pass
        }
        return try inner.forward(batch, allLogits: allLogits)
    }

    func rewind(slot: Int, to position: Int) { inner.rewind(slot: slot, to: position) }
}
