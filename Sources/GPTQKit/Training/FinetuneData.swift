/// Fine-tuning data from a JSONL file: one sample a line, either {"text": "..."} (every
/// token after the first is a target, and the end-of-sequence token is appended so that the
/// model learns to stop) or {"messages": [{"role": ..., "content": ...}, ...]} rendered through
/// the model's chat template, with only the assistant turns' tokens as targets.
public struct FinetuneData {
    public let tokenizer: Tokenizer
    public let tokenizerConfig: TokenizerConfig
    /// Samples are cut to their first maxLength tokens.
    public let maxLength: Int

    public init(tokenizer: Tokenizer, tokenizerConfig: TokenizerConfig, maxLength: Int) throws {
        guard maxLength >= 2 else { throw GPTQError.invalidArgument("--max-length must be at least 2, got \(maxLength)") }
        self.tokenizer = tokenizer
        self.tokenizerConfig = tokenizerConfig
        self.maxLength = maxLength
    }

    /// Every sample of the file, in order. Errors name the file and line.
    public func load(path: String) throws -> [TrainingSequence] {
        guard FileIO.exists(path) else { throw GPTQError.invalidFile(path: path, reason: "data file not found") }
        let text = try FileIO.readText(path: path)
        var samples: [TrainingSequence] = []
        var template: ChatTemplate?
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            guard !line.allSatisfy(\.isWhitespace) else { continue }
            func failure(_ reason: String) -> GPTQError { .invalidFile(path: path, reason: "line \(index + 1): \(reason)") }
            let record: JSON
            do { record = try JSON.parse(String(line)) } catch { throw failure("not JSON (\(error))") }
            if let sampleText = record["text"]?.string {
                var tokens = tokenizer.encode(sampleText, addSpecialTokens: true)
                if let eos = tokenizerConfig.eosToken.flatMap(tokenizer.id(for:)), tokens.last != eos { tokens.append(eos) }
                samples.append(TrainingSequence(tokens: Array(tokens.prefix(maxLength))))
            } else if let messages = record["messages"]?.array {
                if template == nil { template = try ChatTemplate(config: tokenizerConfig) }
                samples.append(try chatSample(messages, template: template!, failure: failure))
            } else {
                throw failure("a sample needs a \"text\" string or a \"messages\" list")
            }
        }
        guard !samples.isEmpty else { throw GPTQError.invalidFile(path: path, reason: "no samples (an empty dataset)") }
        return samples
    }

    /// A conversation's tokens with its assistant turns as targets: turn i spans from the end of
    /// the rendering of the messages before it with the generation prompt, to the end of the
    /// rendering through it (its content and end-of-turn tokens, as the template writes them).
    private func chatSample(_ messages: [JSON], template: ChatTemplate, failure: (String) -> GPTQError) throws -> TrainingSequence {
        for (i, message) in messages.enumerated() where message["role"]?.string == nil || message["content"]?.string == nil {
            throw failure("message \(i) needs \"role\" and \"content\" strings")
        }
        let assistantTurns = messages.indices.filter { messages[$0]["role"]?.string == "assistant" }
        guard !assistantTurns.isEmpty else { throw failure("a conversation without an assistant turn has nothing to train on") }
        func encode(_ count: Int, prompt: Bool) throws -> [Int32] {
            tokenizer.encode(try template.render(messages: Array(messages.prefix(count)), addGenerationPrompt: prompt, specialTokens: tokenizerConfig),
                             addSpecialTokens: false)
        }
        let tokens = try encode(messages.count, prompt: false)
        var targets = [Bool](repeating: false, count: tokens.count)
        for turn in assistantTurns {
            let start = try encode(turn, prompt: true).count, end = min(tokens.count, try encode(turn + 1, prompt: false).count)
            for t in start..<max(start, end) { targets[t] = true }
        }
        let kept = min(maxLength, tokens.count)
        return TrainingSequence(tokens: Array(tokens.prefix(kept)), targets: Array(targets.prefix(kept)))
    }

    /// Splits off a held-out share (at least one sample when there are two or more and the share
    /// is positive), chosen by a seeded shuffle.
    public static func split(_ samples: [TrainingSequence], heldOutFraction: Double, seed: UInt64) throws
        -> (train: [TrainingSequence], heldOut: [TrainingSequence]) {
        guard (0..<1).contains(heldOutFraction) else { throw GPTQError.invalidArgument("--eval-fraction must be in [0, 1), got \(heldOutFraction)") }
        guard heldOutFraction > 0, samples.count >= 2 else { return (samples, []) }
        var random = Xoshiro256StarStar(seed: seed)
        var order = Array(samples.indices)
        order.shuffle(using: &random)
        let count = min(samples.count - 1, max(1, Int((Double(samples.count) * heldOutFraction).rounded())))
        return (order.dropLast(count).map { samples[$0] }, order.suffix(count).map { samples[$0] })
    }
}
