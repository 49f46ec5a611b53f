import GPTQKit

/// What the server needs of a model besides its batch session: its name, how text becomes
/// tokens and back, and the generation defaults of its folder.
public struct ServedModel: Sendable {
    /// The name clients pass as `model`.
    public let name: String
    public let tokenizer: Tokenizer
    public let tokenizerConfig: TokenizerConfig
    /// Nil for a model without one: /v1/chat/completions then answers 400.
    public let chatTemplate: ChatTemplate?
    public let endOfSequenceIds: Set<Int32>
    /// generation_config.json's sampling, used for fields a request leaves out.
    public let defaultSampling: SamplingParameters
    /// The most tokens (prompt and completion) one sequence may hold.
    public let maxModelLen: Int

    public init(name: String, tokenizer: Tokenizer, tokenizerConfig: TokenizerConfig, chatTemplate: ChatTemplate?,
                endOfSequenceIds: Set<Int32>, defaultSampling: SamplingParameters, maxModelLen: Int) {
        self.name = name
        self.tokenizer = tokenizer
        self.tokenizerConfig = tokenizerConfig
        self.chatTemplate = chatTemplate
        self.endOfSequenceIds = endOfSequenceIds
        self.defaultSampling = defaultSampling
        self.maxModelLen = maxModelLen
    }

    /// The prompt of a conversation: the chat template's text, tokenized without adding
    /// special tokens (the template writes them), as `gptq generate --chat` builds it.
    func chatPrompt(_ messages: [JSON], addGenerationPrompt: Bool = true) throws -> [Int32] {
        guard let chatTemplate else {
            throw APIError(status: .badRequest, message: "the model '\(name)' has no chat template; use /v1/completions", param: "messages")
        }
        let text: String
        do {
            text = try chatTemplate.render(messages: messages, addGenerationPrompt: addGenerationPrompt, specialTokens: tokenizerConfig)
        } catch {
            throw APIError.badParameter("messages", "the chat template rejected the messages: \(error)")
        }
        return tokenizer.encode(text, addSpecialTokens: false)
    }
}
