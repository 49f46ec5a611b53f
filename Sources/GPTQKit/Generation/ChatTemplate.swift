/// One turn of a conversation. Messages with more than a role and text (tool calls,
/// reasoning) go to `ChatTemplate.render(messages:...)` as JSON objects.
public struct ChatMessage: Equatable, Sendable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }

    public var json: JSON { .object([("role", .string(role)), ("content", .string(content))]) }
}

/// A Hugging Face chat template: the Jinja program in tokenizer_config.json that turns a
/// conversation into the prompt text the model was trained on. It runs in an interpreter
/// of the Jinja subset these templates use, configured as transformers configures Jinja
/// (trim_blocks, lstrip_blocks, loop controls, `raise_exception`, a `tojson` that keeps
/// non-ASCII text), so the prompt matches `apply_chat_template` exactly.
public struct ChatTemplate: Sendable {
    public let source: String
    /// Where the template came from, for error messages.
    public let path: String
    private let nodes: [JinjaNode]

    /// Parses `source`; a syntax error throws `badConfig` naming `path`, the field and the line.
    public init(_ source: String, path: String = "chat_template") throws {
        self.source = source
        self.path = path
        do throws(JinjaError) {
            nodes = try JinjaParser.parse(source)
        } catch {
            throw Self.describe(error, path: path)
        }
    }

    /// The model folder's template (tokenizer_config.json or chat_template.jinja).
    public init(config: TokenizerConfig) throws {
        guard let source = config.chatTemplate else {
            throw GPTQError.badConfig(field: "chat_template", path: config.path, reason: "the tokenizer has no chat template")
        }
        try self.init(source, path: config.path)
    }

    /// `apply_chat_template(messages, add_generation_prompt=..., tools=...)`: the variables
    /// transformers passes (messages, tools and documents (None when not given),
    /// add_generation_prompt, the special tokens named in `config`), plus `extra` (e.g.
    /// `enable_thinking`, `date_string`), which override them.
    public func render(messages: [JSON], addGenerationPrompt: Bool, specialTokens config: TokenizerConfig? = nil,
                       tools: [JSON]? = nil, documents: [JSON]? = nil, extra: [(String, JSON)] = []) throws -> String {
        var context: [(String, JSON)] = [
            ("messages", .array(messages)),
            ("tools", tools.map { .array($0) } ?? .null),
            ("documents", documents.map { .array($0) } ?? .null),
            ("add_generation_prompt", .bool(addGenerationPrompt)),
        ]
        if let config {
            for (name, token) in [("bos_token", config.bosToken), ("eos_token", config.eosToken),
                                  ("unk_token", config.unkToken), ("pad_token", config.padToken)] {
                if let token { context.append((name, .string(token))) }
            }
        }
        return try render(context: context + extra)
    }

    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, specialTokens config: TokenizerConfig? = nil) throws -> String {
        try render(messages: messages.map(\.json), addGenerationPrompt: addGenerationPrompt, specialTokens: config)
    }

    /// Renders with exactly these variables (later entries win); any other name is undefined.
    public func render(context: [(String, JSON)]) throws -> String {
        let globals = JinjaScope(JinjaBuiltins.globals())
        for (name, value) in context { globals.set(name, JinjaValue(value)) }
        do throws(JinjaError) {
            return try JinjaInterpreter.render(nodes, globals: globals)
        } catch {
            throw Self.describe(error, path: path)
        }
    }

    private static func describe(_ error: JinjaError, path: String) -> GPTQError {
        switch error {
        case let .syntax(message, line): return .badConfig(field: "chat_template", path: path, reason: "line \(line): \(message)")
        case let .runtime(message): return .badConfig(field: "chat_template", path: path, reason: message)
        case let .raised(message): return .invalidArgument("the chat template (\(path)) rejects this conversation: \(message)")
        }
    }
}
