import GPTQKit

/// The JSON of one endpoint's responses: whole, and as server-sent event chunks.
protocol StreamFormat: Sendable {
    /// The chunk a choice's stream opens with, if any.
    func opening(index: Int) -> JSON?
    /// The chunk for one event, if it has anything to say.
    func chunk(index: Int, event: SequenceEvent) -> JSON?
    /// stream_options.include_usage's last chunk: no choices, the usage.
    func usageChunk(_ outputs: [ChoiceOutput]) -> JSON
}

func usage(_ outputs: [ChoiceOutput]) -> JSON {
    let prompt = outputs.first?.promptTokens ?? 0
    let completion = outputs.reduce(0) { $0 + $1.completionTokens }
    return .object([("prompt_tokens", .number(Double(prompt))), ("completion_tokens", .number(Double(completion))),
                    ("total_tokens", .number(Double(prompt + completion)))])
}

func number(_ value: some BinaryInteger) -> JSON { .number(Double(value)) }

/// /v1/chat/completions: chat.completion and chat.completion.chunk objects.
struct ChatFormat: StreamFormat {
    let id: String
    let created: Int
    let model: String
    let tokenizer: Tokenizer

    func envelope(_ object: String, _ rest: [(String, JSON)]) -> JSON {
        .object([("id", .string(id)), ("object", .string(object)), ("created", number(created)), ("model", .string(model))] + rest)
    }

    func completion(_ outputs: [ChoiceOutput]) -> JSON {
        envelope("chat.completion", [
            ("choices", .array(outputs.enumerated().map { index, output in
                .object([
                    ("index", number(index)),
                    ("message", .object([("role", .string("assistant")), ("content", .string(output.text))])),
                    ("logprobs", logprobs(output.tokens.compactMap(\.logprob))),
                    ("finish_reason", .string(output.finishReason?.rawValue ?? "stop")),
                ])
            })),
            ("usage", usage(outputs)),
        ])
    }

    func opening(index: Int) -> JSON? {
        chunk(index: index, delta: [("role", .string("assistant")), ("content", .string(""))], logprobs: .null, finishReason: nil)
    }

    func chunk(index: Int, event: SequenceEvent) -> JSON? {
        switch event {
        case let .token(_, text, logprob):
            // Text held back (a possible stop string) comes later; a chunk is still due for the token's log-probability.
            guard !text.isEmpty || logprob != nil else { return nil }
            return chunk(index: index, delta: [("content", .string(text))], logprobs: logprobs(logprob.map { [$0] } ?? []), finishReason: nil)
        case let .finished(reason, text, _, _):
            return chunk(index: index, delta: text.isEmpty ? [] : [("content", .string(text))], logprobs: .null, finishReason: reason)
        case .promptLogprobs, .failed: return nil
        }
    }

    func usageChunk(_ outputs: [ChoiceOutput]) -> JSON {
        envelope("chat.completion.chunk", [("choices", .array([])), ("usage", usage(outputs))])
    }

    func chunk(index: Int, delta: [(String, JSON)], logprobs: JSON, finishReason: FinishReason?) -> JSON {
        envelope("chat.completion.chunk", [("choices", .array([.object([
            ("index", number(index)), ("delta", .object(delta)), ("logprobs", logprobs),
            ("finish_reason", finishReason.map { .string($0.rawValue) } ?? .null),
        ])]))])
    }

    /// Chat's logprobs object: {"content": [{token, logprob, bytes, top_logprobs}]}; null when none were asked for.
    func logprobs(_ entries: [TokenLogprob]) -> JSON {
        guard !entries.isEmpty else { return .null }
        func item(_ token: Int32, _ logprob: Float) -> [(String, JSON)] {
            let text = tokenizer.decode([token])
            return [("token", .string(text)), ("logprob", .number(Double(logprob))), ("bytes", .array(text.utf8.map { number($0) }))]
        }
        return .object([("content", .array(entries.map { entry in
            .object(item(entry.token, entry.logprob) + [("top_logprobs", .array(entry.top.map { .object(item($0.token, $0.logprob)) }))])
        }))])
    }
}

/// /v1/completions: text_completion objects, with the legacy logprobs shape.
struct CompletionFormat: StreamFormat {
    let id: String
    let created: Int
    let model: String
    let tokenizer: Tokenizer
    /// The prompt, when `echo` puts it before the completion: its tokens, and its text as sent.
    let echoPrompt: [Int32]?
    let echoText: String

    func envelope(_ rest: [(String, JSON)]) -> JSON {
        .object([("id", .string(id)), ("object", .string("text_completion")), ("created", number(created)), ("model", .string(model))] + rest)
    }

    func completion(_ outputs: [ChoiceOutput]) -> JSON {
        let promptText = echoPrompt == nil ? "" : echoText
        return envelope([
            ("choices", .array(outputs.enumerated().map { index, output in
                var entries: [(token: Int32, logprob: TokenLogprob?)] = []
                if let echoPrompt {
                    // Prompt log-probabilities come only with `logprobs`; the first prompt token has none.
                    let scores = output.promptLogprobs.isEmpty ? Array(repeating: nil, count: echoPrompt.count) : output.promptLogprobs
                    entries += zip(echoPrompt, scores).map { (token: $0, logprob: $1) }
                }
                entries += output.tokens.map { (token: $0.id, logprob: $0.logprob) }
                let asked = output.tokens.contains { $0.logprob != nil } || !output.promptLogprobs.isEmpty
                return .object([
                    ("index", number(index)), ("text", .string(promptText + output.text)),
                    ("logprobs", asked ? logprobs(entries) : .null),
                    ("finish_reason", .string(output.finishReason?.rawValue ?? "stop")),
                ])
            })),
            ("usage", usage(outputs)),
        ])
    }

    func opening(index: Int) -> JSON? { nil }

    func chunk(index: Int, event: SequenceEvent) -> JSON? {
        switch event {
        case let .token(id, text, logprob):
            guard !text.isEmpty || logprob != nil else { return nil }
            return chunk(index: index, text: text, logprobs: logprob == nil ? .null : logprobs([(token: id, logprob: logprob)]), finishReason: nil)
        case let .finished(reason, text, _, _):
            return chunk(index: index, text: text, logprobs: .null, finishReason: reason)
        case .promptLogprobs, .failed: return nil
        }
    }

    func usageChunk(_ outputs: [ChoiceOutput]) -> JSON {
        envelope([("choices", .array([])), ("usage", usage(outputs))])
    }

    func chunk(index: Int, text: String, logprobs: JSON, finishReason: FinishReason?) -> JSON {
        envelope([("choices", .array([.object([
            ("index", number(index)), ("text", .string(text)), ("logprobs", logprobs),
            ("finish_reason", finishReason.map { .string($0.rawValue) } ?? .null),
        ])]))])
    }

    /// The legacy shape: parallel lists of tokens, their log-probabilities, the top
    /// alternatives ({token: logprob}) and each token's offset in the text.
    func logprobs(_ entries: [(token: Int32, logprob: TokenLogprob?)]) -> JSON {
        var tokens: [JSON] = [], values: [JSON] = [], tops: [JSON] = [], offsets: [JSON] = []
        var offset = 0
        for entry in entries {
            let text = tokenizer.decode([entry.token])
            tokens.append(.string(text))
            values.append(entry.logprob.map { .number(Double($0.logprob)) } ?? .null)
            tops.append(entry.logprob.map { logprob in
                .object(logprob.top.map { (tokenizer.decode([$0.token]), JSON.number(Double($0.logprob))) })
            } ?? .null)
            offsets.append(number(offset))
            offset += text.count
        }
        return .object([("tokens", .array(tokens)), ("token_logprobs", .array(values)), ("top_logprobs", .array(tops)),
                        ("text_offset", .array(offsets))])
    }
}
