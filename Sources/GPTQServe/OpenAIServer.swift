#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GPTQKit
import Hummingbird
import Logging
import NIOCore

/// How `OpenAIServer` listens and what it accepts.
public struct ServerConfiguration: Sendable {
    /// Loopback unless asked otherwise.
    public var host = "127.0.0.1"
    /// 0 picks a free port (the tests); `run`'s `onListening` tells which.
    public var port = 8000
    /// When set, every route but /health needs `Authorization: Bearer <key>`.
    public var apiKey: String?
    /// Sequences that may wait for a batch slot; beyond them requests get 503.
    public var maxWaiting = 256
    /// Prompt tokens prefilled per scheduler step, over all new sequences.
    public var prefillChunk = 128
    public var maxBodyBytes = 1 << 20
    /// A connection silent this long is closed, so a client that sends headers and never
    /// the body holds nothing for long.
    public var idleTimeout: Duration = .seconds(30)

    public init() {}
}

/// The request context: Hummingbird's, plus the connection, whose closing cancels the
/// request's sequences at once (Hummingbird does not cancel a handler when its client goes).
struct ServeRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// An OpenAI-compatible HTTP server over one model: /v1/chat/completions, /v1/completions,
/// /v1/models, /tokenize, /detokenize, /health and /metrics, generating through a `Scheduler`.
public final class OpenAIServer: Sendable {
    let model: ServedModel
    let configuration: ServerConfiguration
    let scheduler: Scheduler
    let metrics = ServeMetrics()
    let logger: Logger
    let vocabSize: Int

    public init(model: ServedModel, session: BatchInferenceSession, configuration: ServerConfiguration, logger: Logger) {
        precondition(model.maxModelLen <= session.capacity, "max model length \(model.maxModelLen) exceeds the session's capacity \(session.capacity)")
        self.model = model
        self.configuration = configuration
        self.logger = logger
        vocabSize = session.vocabSize
        scheduler = Scheduler(session: session, tokenizer: model.tokenizer, prefillChunk: configuration.prefillChunk,
                              maxWaiting: configuration.maxWaiting, metrics: metrics, logger: logger)
    }

    /// Serves until the task is cancelled; `onListening` gets the bound port.
    public func run(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let router = Router(context: ServeRequestContext.self)
        router.add(middleware: OpenAIErrorMiddleware(metrics: metrics, logger: logger))
        if let apiKey = configuration.apiKey { router.add(middleware: APIKeyMiddleware(key: apiKey)) }
        router.get("/health") { _, _ in HTTPResponse.Status.ok }
        router.get("/metrics") { [metrics] _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                     body: ResponseBody(byteBuffer: ByteBuffer(bytes: metrics.registry.emitToBuffer())))
        }
        router.get("/v1/models") { [self] _, _ in jsonResponse(modelList) }
        router.post("/v1/chat/completions") { [self] request, context in try await chatCompletions(request, context: context) }
        router.post("/v1/completions") { [self] request, context in try await completions(request, context: context) }
        router.post("/tokenize") { [self] request, _ in try await tokenize(request) }
        router.post("/detokenize") { [self] request, _ in try await detokenize(request) }

        let app = Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: TimeAmount.nanoseconds(Int64(configuration.idleTimeout.seconds * 1e9)))),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "gptq"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) },
            logger: logger
        )
        defer { scheduler.shutDown() }
        try await app.run()
    }

    var modelList: JSON {
        .object([("object", .string("list")), ("data", .array([.object([
            ("id", .string(model.name)), ("object", .string("model")), ("created", .number(Double(time(nil)))),
            ("owned_by", .string("swift-gptq")), ("max_model_len", .number(Double(model.maxModelLen))),
        ])]))])
    }

    // MARK: Request bodies

    func fields(of request: Request) async throws -> RequestFields {
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: configuration.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw APIError(status: .contentTooLarge, message: "the request body is larger than \(configuration.maxBodyBytes) bytes", code: "body_too_large")
        }
        return try RequestFields(body: Array(buffer: body))
    }

    func checkModel(_ fields: RequestFields) throws {
        guard let name = try fields.string("model") else { throw APIError.missing("model") }
        guard name == model.name else { throw APIError.unknownModel(name) }
    }

    /// The completion length: as asked, else what the context leaves (chat) or `default`;
    /// past the context it is OpenAI's context_length_exceeded.
    func maxTokens(_ fields: RequestFields, prompt: Int, minimum: Int, default fallback: Int?) throws -> Int {
        let asked = try fields.int("max_completion_tokens") ?? fields.int("max_tokens")
        let param = fields["max_completion_tokens"] != nil ? "max_completion_tokens" : "max_tokens"
        if let asked, asked < minimum { throw APIError.badParameter(param, "'\(param)' must be at least \(minimum), got \(asked)") }
        guard prompt > 0 else { throw APIError.badParameter("prompt", "the prompt has no tokens") }
        let tokens = asked ?? min(fallback ?? .max, model.maxModelLen - prompt)
        guard prompt + max(tokens, minimum) <= model.maxModelLen else {
            throw APIError.contextOverflow(maxModelLen: model.maxModelLen, prompt: prompt, completion: max(tokens, minimum))
        }
        return tokens
    }

    // MARK: /v1/chat/completions

    func chatCompletions(_ request: Request, context: ServeRequestContext) async throws -> Response {
        let fields = try await fields(of: request)
        try checkModel(fields)
        guard let messages = fields["messages"] else { throw APIError.missing("messages") }
        guard let list = messages.array, !list.isEmpty else { throw APIError.wrongType("messages", expected: "a non-empty array of messages") }
        let prompt = try model.chatPrompt(try list.map(Self.templateMessage))
        let generation = try GenerationFields(fields, defaults: model.defaultSampling)
        let logprobs = try fields.bool("logprobs") ?? false
        let top = try fields.int("top_logprobs", in: 0...20)
        if top != nil && !logprobs { throw APIError.badParameter("top_logprobs", "'top_logprobs' needs 'logprobs': true") }
        let maxTokens = try maxTokens(fields, prompt: prompt.count, minimum: 1, default: nil)
        let sequences = generation.sequences(prompt: prompt, maxTokens: maxTokens, stopTokenIds: model.endOfSequenceIds,
                                             topLogprobs: logprobs ? (top ?? 0) : nil, promptLogprobs: false)
        let job = try submit(sequences, context: context)
        let format = ChatFormat(id: "chatcmpl-\(Self.randomID())", created: time(nil), model: model.name, tokenizer: model.tokenizer)
        if generation.stream {
            return streamResponse(job: job, includeUsage: generation.includeUsage, choices: generation.choices, format: format)
        }
        let outputs = try await collect(job, choices: generation.choices)
        return jsonResponse(format.completion(outputs))
    }

    /// A message as the template sees it: OpenAI's content parts joined into one string.
    static func templateMessage(_ message: JSON) throws -> JSON {
        guard message.object != nil else { throw APIError.wrongType("messages", expected: "an array of message objects") }
        guard message["role"]?.string != nil else { throw APIError.wrongType("messages.role", expected: "a string") }
        switch message["content"] {
        case nil, .null?, .string?: return message
        case let .array(parts)?:
            var text = ""
            for part in parts {
                guard let partText = part["text"]?.string, part["type"]?.string == "text" else {
                    throw APIError.badParameter("messages.content", "only text content parts are supported")
                }
                text += partText
            }
            return message.setting("content", .string(text))
        default: throw APIError.wrongType("messages.content", expected: "a string or an array of content parts")
        }
    }

    // MARK: /v1/completions

    func completions(_ request: Request, context: ServeRequestContext) async throws -> Response {
        let fields = try await fields(of: request)
        try checkModel(fields)
        let (prompt, promptText) = try completionPrompt(fields)
        let generation = try GenerationFields(fields, defaults: model.defaultSampling)
        let echo = try fields.bool("echo") ?? false
        let top = try fields.int("logprobs", in: 0...20)
        if echo && generation.stream { throw APIError.badParameter("echo", "'echo' is not supported with 'stream'") }
        // OpenAI's default completion length; 0 with echo scores the prompt alone.
        let maxTokens = try maxTokens(fields, prompt: prompt.count, minimum: echo ? 0 : 1, default: 16)
        let sequences = generation.sequences(prompt: prompt, maxTokens: maxTokens, stopTokenIds: model.endOfSequenceIds,
                                             topLogprobs: top, promptLogprobs: echo && top != nil)
        let job = try submit(sequences, context: context)
        let format = CompletionFormat(id: "cmpl-\(Self.randomID())", created: time(nil), model: model.name, tokenizer: model.tokenizer,
                                      echoPrompt: echo ? prompt : nil, echoText: promptText ?? model.tokenizer.decode(prompt))
        if generation.stream {
            return streamResponse(job: job, includeUsage: generation.includeUsage, choices: generation.choices, format: format)
        }
        let outputs = try await collect(job, choices: generation.choices)
        return jsonResponse(format.completion(outputs))
    }

    /// `prompt`: text (tokenized with the model's special tokens, as `gptq generate` does),
    /// token ids, or a one-element list of either; the text too when it came as text.
    func completionPrompt(_ fields: RequestFields) throws -> ([Int32], String?) {
        guard var prompt = fields["prompt"] else { throw APIError.missing("prompt") }
        if let items = prompt.array, let first = items.first, first.array != nil || first.string != nil {
            guard items.count == 1 else { throw APIError.badParameter("prompt", "one prompt per request is supported; send several requests") }
            prompt = first
        }
        if let text = prompt.string { return (model.tokenizer.encode(text, addSpecialTokens: true), text) }
        return (try RequestFields.tokenIds(prompt, param: "prompt", vocabSize: vocabSize), nil)
    }

    // MARK: Generation

    struct Job {
        let id: UInt64
        let events: AsyncStream<(Int, SequenceEvent)>
        let started: ContinuousClock.Instant
    }

    func submit(_ sequences: [SequenceParameters], context: ServeRequestContext) throws -> Job {
        let job: (id: UInt64, events: AsyncStream<(Int, SequenceEvent)>)
        do {
            job = try scheduler.submit(sequences)
        } catch SubmitError.overloaded {
            throw APIError.overloaded
        } catch {
            throw APIError(status: .serviceUnavailable, message: "the server is shutting down", type: "server_error")
        }
        // The client gone, its sequences stop and free their slots at the next step.
        context.channel.closeFuture.whenComplete { [scheduler] _ in scheduler.cancel(job.id) }
        return Job(id: job.id, events: job.events, started: ContinuousClock.now)
    }

    func collect(_ job: Job, choices: Int) async throws -> [ChoiceOutput] {
        var outputs = Array(repeating: ChoiceOutput(), count: choices)
        for await (index, event) in job.events {
            if case let .failed(message) = event { throw APIError(status: .internalServerError, message: message, type: "server_error") }
            outputs[index].add(event)
        }
        guard outputs.allSatisfy({ $0.finishReason != nil }) else {
            throw APIError(status: .internalServerError, message: "generation was cancelled", type: "server_error")
        }
        log(job, outputs)
        return outputs
    }

    func streamResponse(job: Job, includeUsage: Bool, choices: Int, format: some StreamFormat) -> Response {
        let body = ResponseBody { [self] writer in
            func send(_ json: JSON) async throws { try await writer.write(ByteBuffer(string: "data: \(json.serialized(indent: 0))\n\n")) }
            var outputs = Array(repeating: ChoiceOutput(), count: choices)
            for index in 0..<choices {
                if let opening = format.opening(index: index) { try await send(opening) }
            }
            for await (index, event) in job.events {
                if case let .failed(message) = event {
                    try await send(APIError(status: .internalServerError, message: message, type: "server_error").json)
                    break
                }
                outputs[index].add(event)
                if let chunk = format.chunk(index: index, event: event) { try await send(chunk) }
            }
            if outputs.allSatisfy({ $0.finishReason != nil }) {
                if includeUsage { try await send(format.usageChunk(outputs)) }
                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                log(job, outputs)
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }

    func log(_ job: Job, _ outputs: [ChoiceOutput]) {
        logger.info("request finished", metadata: [
            "request": "\(job.id)",
            "prompt_tokens": "\(outputs.first?.promptTokens ?? 0)",
            "completion_tokens": "\(outputs.reduce(0) { $0 + $1.completionTokens })",
            "finish_reasons": "\(outputs.compactMap { $0.finishReason?.rawValue })",
            "seconds": "\((ContinuousClock.now - job.started).seconds)",
        ])
    }

    static func randomID() -> String {
        String(UInt64.random(in: .min ... .max), radix: 16)
    }

    // MARK: /tokenize, /detokenize (vLLM's shapes)

    func tokenize(_ request: Request) async throws -> Response {
        let fields = try await fields(of: request)
        if fields["model"] != nil { try checkModel(fields) }
        let tokens: [Int32]
        if let messages = fields["messages"] {
            guard let list = messages.array else { throw APIError.wrongType("messages", expected: "an array of messages") }
            tokens = try model.chatPrompt(try list.map(Self.templateMessage), addGenerationPrompt: try fields.bool("add_generation_prompt") ?? true)
        } else if let prompt = try fields.string("prompt") {
            tokens = model.tokenizer.encode(prompt, addSpecialTokens: try fields.bool("add_special_tokens") ?? true)
        } else {
            throw APIError.missing("prompt")
        }
        return jsonResponse(.object([
            ("count", .number(Double(tokens.count))), ("max_model_len", .number(Double(model.maxModelLen))),
            ("tokens", .array(tokens.map { .number(Double($0)) })),
        ]))
    }

    func detokenize(_ request: Request) async throws -> Response {
        let fields = try await fields(of: request)
        if fields["model"] != nil { try checkModel(fields) }
        guard let tokens = try fields.tokenIds("tokens", vocabSize: vocabSize) else { throw APIError.missing("tokens") }
        return jsonResponse(.object([("prompt", .string(model.tokenizer.decode(tokens)))]))
    }
}

/// What one choice produced, gathered from its events.
struct ChoiceOutput {
    var text = ""
    var tokens: [(id: Int32, text: String, logprob: TokenLogprob?)] = []
    var promptLogprobs: [TokenLogprob?] = []
    var finishReason: FinishReason?
    var promptTokens = 0
    var completionTokens = 0

    mutating func add(_ event: SequenceEvent) {
        switch event {
        case let .promptLogprobs(logprobs): promptLogprobs = logprobs
        case let .token(id, piece, logprob):
            text += piece
            tokens.append((id, piece, logprob))
        case let .finished(reason, piece, prompt, completion):
            text += piece
            finishReason = reason
            promptTokens = prompt
            completionTokens = completion
        case .failed: break
        }
    }
}

/// Asks every route but /health for the API key.
struct APIKeyMiddleware: RouterMiddleware {
    typealias Context = ServeRequestContext
    let key: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.uri.path == "/health" || request.headers[.authorization] == "Bearer \(key)" else { throw APIError.badAPIKey }
        return try await next(request, context)
    }
}

/// Turns every error into OpenAI's error shape (Hummingbird's own 404s and 413s included)
/// and counts each answer by route and status.
struct OpenAIErrorMiddleware: RouterMiddleware {
    typealias Context = ServeRequestContext
    let metrics: ServeMetrics
    let logger: Logger
    static let routes: Set<String> = ["/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let route = Self.routes.contains(request.uri.path) ? request.uri.path : "other"
        let response: Response
        do {
            response = try await next(request, context)
        } catch let error as APIError {
            response = error.httpResponse
        } catch let error as HTTPError {
            response = APIError(error).httpResponse
        } catch {
            logger.error("request failed", metadata: ["route": "\(route)", "error": "\(error)"])
            response = APIError(status: .internalServerError, message: "\(error)", type: "server_error").httpResponse
        }
        metrics.countRequest(route: route, status: response.status.code)
        return response
    }
}

extension APIError {
    var httpResponse: Response { jsonResponse(json, status: status) }
}
