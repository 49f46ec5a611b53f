import Testing
import GPTQKit

/// A session whose next-token logits come from a script: one-hot on `next(history)`.
final class ScriptedSession: InferenceSession {
    let vocabSize: Int
    let capacity: Int
    private(set) var tokens: [Int32] = []
    /// Every batch fed to `forward`, to check what the KV cache saved.
    private(set) var forwards: [[Int32]] = []
    let next: ([Int32]) -> [Float]

    init(vocabSize: Int, capacity: Int, next: @escaping ([Int32]) -> [Float]) {
        self.vocabSize = vocabSize
        self.capacity = capacity
        self.next = next
    }

    /// Logits that make `token` the argmax.
    static func oneHot(_ token: Int32, vocabSize: Int) -> [Float] {
        var logits = [Float](repeating: 0, count: vocabSize)
        logits[Int(token)] = 10
        return logits
    }

    var position: Int { tokens.count }

    func forward(_ batch: [Int32], allLogits: Bool) throws -> [Float] {
        precondition(tokens.count + batch.count <= capacity, "KV cache overflow")
        forwards.append(batch)
        tokens += batch
        return next(tokens)
    }

    func rewind(to position: Int) { tokens.removeLast(tokens.count - position) }
}

/// Text pieces by id, standing in for the tokenizer's stream decoder.
struct PieceDecoder: GeneratedTextDecoder {
    let pieces: [Int32: String]
    mutating func push(_ id: Int32) -> String { pieces[id] ?? "" }
    mutating func finish() -> String { "" }
}

@Suite struct GeneratorTests {
    /// Counts up: after token t comes t + 1 (mod the vocabulary).
    func countingSession(capacity: Int = 64, vocabSize: Int = 16) -> ScriptedSession {
        ScriptedSession(vocabSize: vocabSize, capacity: capacity) { ScriptedSession.oneHot(($0.last! + 1) % Int32(vocabSize), vocabSize: vocabSize) }
    }

    @Test func greedyPrefillsOnceThenDecodesOneTokenAtATime() throws {
        let session = countingSession()
        let generator = Generator(session: session)
        let result = try generator.generate(prompt: [3, 4, 5], options: GenerationOptions(maxNewTokens: 4))
        #expect(result.tokens == [6, 7, 8, 9] && result.stopReason == .maxNewTokens)
        #expect(session.forwards == [[3, 4, 5], [6], [7], [8]])
        #expect(result.prefillTokens == 3 && result.decodeSteps == 3)
        #expect(generator.cachedTokens == [3, 4, 5, 6, 7, 8])
    }

    @Test func anEndOfSequenceIdStopsAndIsNotText() throws {
        let generator = Generator(session: countingSession())
        var streamed = ""
        let decoder = PieceDecoder(pieces: [1: "a", 2: "b", 3: "<eos>"])
        let result = try generator.generate(prompt: [0], options: GenerationOptions(maxNewTokens: 10, stopTokenIds: [3, 9]),
                                            textDecoder: decoder) { streamed += $0 }
        #expect(result.tokens == [1, 2, 3] && result.stopReason == .endOfSequence(3))
        #expect(result.text == "ab" && streamed == "ab")
    }

    @Test func stopStringsCutTheTextAndAreNeverStreamed() throws {
        let decoder = PieceDecoder(pieces: [1: "Hel", 2: "lo", 3: " wor", 4: "ld", 5: "!"])
        // " wo" spans tokens 3's start; "lo w" spans two tokens; "xyz" never appears.
        for (stops, text, stop, count) in [([" wo", "xyz"], "Hello", " wo", 3), (["lo w"], "Hel", "lo w", 3), (["ld!"], "Hello wor", "ld!", 5)] {
            var pieces: [String] = []
            let result = try Generator(session: countingSession()).generate(
                prompt: [0], options: GenerationOptions(maxNewTokens: 10, stopStrings: stops), textDecoder: decoder) { pieces.append($0) }
            #expect(result.text == text && result.stopReason == .stopString(stop) && result.tokens.count == count)
            #expect(pieces.joined() == text, "\(pieces)")
        }
        // A partial match that does not complete ("l", then "lo") is held back, then released.
        var pieces: [String] = []
        let result = try Generator(session: countingSession()).generate(
            prompt: [0], options: GenerationOptions(maxNewTokens: 4, stopStrings: ["lo!"]), textDecoder: decoder) { pieces.append($0) }
        #expect(result.text == "Hello world" && result.stopReason == .maxNewTokens)
        #expect(pieces == ["He", "l", "lo wor", "ld"])
    }

    @Test func generationEndsWhenTheCacheIsFull() throws {
        let session = countingSession(capacity: 5)
        let result = try Generator(session: session).generate(prompt: [1, 2, 3], options: GenerationOptions(maxNewTokens: 10))
        #expect(result.tokens == [4, 5, 6] && result.stopReason == .capacity && session.position == 5)
    }

    @Test func aPromptExtendingTheCachedTokensRunsOnlyItsNewTokens() throws {
        let session = countingSession()
        let generator = Generator(session: session)
        let first = try generator.generate(prompt: [1, 2], options: GenerationOptions(maxNewTokens: 3))
        #expect(first.tokens == [3, 4, 5])
        // The next chat turn: the old prompt, the reply, then new text.
        let second = try generator.generate(prompt: [1, 2, 3, 4, 5, 9], options: GenerationOptions(maxNewTokens: 1))
        #expect(second.prefillTokens == 2 && session.forwards.last == [5, 9] && second.tokens == [10])
        // A prompt that diverges keeps only the common prefix; one fully cached reruns its last token.
        _ = try generator.generate(prompt: [1, 7], options: GenerationOptions(maxNewTokens: 1))
        #expect(session.forwards.last == [7])
        _ = try generator.generate(prompt: [1, 7], options: GenerationOptions(maxNewTokens: 1))
        #expect(session.forwards.last == [7] && session.position == 2)
    }

    @Test func seededSamplingIsReproducible() throws {
        let uniform = { (_: [Int32]) in [Float](repeating: 0, count: 50) }
        func run(seed: UInt64) throws -> [Int32] {
            try Generator(session: ScriptedSession(vocabSize: 50, capacity: 64, next: uniform))
                .generate(prompt: [0], options: GenerationOptions(maxNewTokens: 20, sampling: SamplingParameters(temperature: 1), seed: seed)).tokens
        }
        #expect(try run(seed: 9) == run(seed: 9))
        #expect(try run(seed: 9) != run(seed: 10))
    }

    @Test func sampledGenerationDrawsWhatTheSamplerDrawsFromTheLogits() throws {
        // The Generator hands sampling without a penalty to the session (forwardSample, which a
        // GPU session runs on the device): with the default implementation the tokens must be
        // exactly those of the Sampler on each step's logits.
        let logits = { (seen: [Int32]) in (0..<50).map { Float(($0 * 7 + seen.count * 3 + Int(seen.last ?? 0)) % 11) / 3 } }
        let sampling = SamplingParameters(temperature: 0.9, topK: 20, topP: 0.8)
        let generated = try Generator(session: ScriptedSession(vocabSize: 50, capacity: 64, next: logits))
            .generate(prompt: [0], options: GenerationOptions(maxNewTokens: 20, sampling: sampling, seed: 4)).tokens
        let session = ScriptedSession(vocabSize: 50, capacity: 64, next: logits)
        var sampler = try Sampler(sampling, seed: 4)
        var history: [Int32] = [0], expected: [Int32] = []
        var scores = try session.forward([0], allLogits: false)
        for _ in 0..<20 {
            let token = sampler.next(logits: scores, history: history)
            expected.append(token)
            history.append(token)
            scores = try session.forward([token], allLogits: false)
        }
        #expect(generated == expected)
        #expect(Set(generated).count > 3)
    }

    @Test func badPromptsAreRejected() throws {
        let generator = Generator(session: countingSession(capacity: 4))
        #expect(throws: GPTQError.invalidArgument("the prompt has no tokens")) { try generator.generate(prompt: [], options: GenerationOptions()) }
        #expect(throws: GPTQError.invalidArgument("the prompt has 5 tokens, more than the session's capacity of 4")) {
            try generator.generate(prompt: [1, 2, 3, 4, 5], options: GenerationOptions())
        }
        #expect(throws: GPTQError.invalidArgument("prompt token id 16 is outside the vocabulary (size 16)")) {
            try generator.generate(prompt: [16], options: GenerationOptions())
        }
    }

    @Test func endOfSequenceIdsGatherEveryConfig() throws {
        let generation = try GenerationConfig(json: try JSON.parse(#"{"eos_token_id": [128001, 128009]}"#), path: "g.json")
        let model = try ModelConfig(folder: Fixtures.path("arch/llama"))
        #expect(GenerationOptions.endOfSequenceIds(generation: generation, model: model, eosToken: 7) == [128001, 128009, 2, 7])
    }

    @Test func greedyGenerationOnTheLlamaFixtureMatchesTransformers() throws {
        let model = try LanguageModel.load(folder: Fixtures.path("arch/llama"))
        let reference = try ArchTests.Reference("llama")
        let prompt = reference.inputIds[0]
        let generator = Generator(session: model.makeSession(capacity: 32))
        let result = try generator.generate(prompt: prompt, options: GenerationOptions(maxNewTokens: 8))
        #expect(prompt + result.tokens == reference.greedyIds)
        #expect(result.stopReason == .maxNewTokens && result.decodeSteps == 7)
    }
}

/// SmolLM2-135M-Instruct, when scripts/fetch-model.sh has fetched it.
@Suite(.enabled(if: RealModel.folder != nil)) struct RealModelGenerationTests {
    @Test func theCommittedSmolLM2TemplateIsTheModelsOwn() throws {
        let config = try TokenizerConfig(folder: RealModel.folder!)
        #expect(config.chatTemplate == (try FileIO.readText(path: Fixtures.path("chat_templates/smollm2.jinja"))))
    }

    @Test func streamedChatReplyIsTheDecodedTokensAndEndsAtTheTurnEnd() throws {
        let folder = RealModel.folder!
        let model = try LanguageModel.load(folder: folder)
        let tokenizer = try Tokenizer(folder: folder)
        let config = try TokenizerConfig(folder: folder)
        let text = try ChatTemplate(config: config).render(
            messages: [ChatMessage(role: "user", content: "What is the capital of France?")], addGenerationPrompt: true, specialTokens: config)
        let endOfTurn = try #require(tokenizer.id(for: "<|im_end|>"))
        var streamed = ""
        let result = try Generator(session: model.makeSession(capacity: 256)).generate(
            prompt: tokenizer.encode(text), options: GenerationOptions(maxNewTokens: 64, stopTokenIds: [endOfTurn]),
            textDecoder: TokenStreamDecoder(tokenizer: tokenizer)) { streamed += $0 }
        #expect(result.stopReason == .endOfSequence(endOfTurn))
        #expect(streamed == result.text && result.text == tokenizer.decode(Array(result.tokens.dropLast())))
        #expect(result.text.contains("Paris"))
    }

    @Test func aTurnReusingTheCacheRepliesAsAFreshSessionDoes() throws {
        let folder = RealModel.folder!
        let model = try LanguageModel.load(folder: folder)
        let tokenizer = try Tokenizer(folder: folder)
        let config = try TokenizerConfig(folder: folder)
        let template = try ChatTemplate(config: config)
        let options = GenerationOptions(maxNewTokens: 24, stopTokenIds: [tokenizer.id(for: "<|im_end|>")!])
        func prompt(_ messages: [ChatMessage]) throws -> [Int32] {
            tokenizer.encode(try template.render(messages: messages, addGenerationPrompt: true, specialTokens: config))
        }
        var messages = [ChatMessage(role: "user", content: "Name a color.")]
        let chat = Generator(session: model.makeSession(capacity: 256))
        let first = try chat.generate(prompt: try prompt(messages), options: options, textDecoder: TokenStreamDecoder(tokenizer: tokenizer))
        messages += [ChatMessage(role: "assistant", content: first.text), ChatMessage(role: "user", content: "Another one.")]
        let secondPrompt = try prompt(messages)
        let second = try chat.generate(prompt: secondPrompt, options: options)
        #expect(second.prefillTokens < secondPrompt.count - 10)
        let fresh = try Generator(session: model.makeSession(capacity: 256)).generate(prompt: secondPrompt, options: options)
        #expect(second.tokens == fresh.tokens)
    }

    @Test func theGenerateCommandPrintsWhatTheGeneratorGenerates() throws {
        let folder = RealModel.folder!
        let binary = try #require(CommandLineTool.path("gptq"))
        let run = try CommandLineTool.run(binary, ["generate", "--model", folder, "--prompt", "What is 2+2?", "--chat",
                                                   "--max-new-tokens", "12", "--temperature", "0", "--stop", "4"])
        #expect(run.status == 0)
        let tokenizer = try Tokenizer(folder: folder)
        let config = try TokenizerConfig(folder: folder)
        let text = try ChatTemplate(config: config).render(
            messages: [ChatMessage(role: "user", content: "What is 2+2?")], addGenerationPrompt: true, specialTokens: config)
        let model = try LanguageModel.load(folder: folder)
        let result = try Generator(session: model.makeSession(capacity: 64)).generate(
            prompt: tokenizer.encode(text), options: GenerationOptions(maxNewTokens: 12, stopTokenIds: [2], stopStrings: ["4"]),
            textDecoder: TokenStreamDecoder(tokenizer: tokenizer))
        #expect(run.standardOutput == result.text + "\n")
        #expect(run.standardError.hasPrefix("prefill: \(tokenizer.encode(text).count) tokens"))
        let bad = try CommandLineTool.run(binary, ["generate", "--model", folder, "--prompt", "x", "--top-p", "0"])
        #expect(bad.status != 0 && bad.standardError.contains("top-p must be in (0, 1], got 0.0"))
    }

    @Test func theChatCommandKeepsTheConversationAndReusesTheCache() throws {
        let folder = RealModel.folder!
        let binary = try #require(CommandLineTool.path("gptq"))
        let turns = ["What is the capital of Italy?", "", "And of Spain?"]
        let run = try CommandLineTool.run(binary, ["chat", "--model", folder, "--system", "Answer in one sentence.", "--max-new-tokens", "16"],
                                          input: turns.joined(separator: "\n") + "\n")
        #expect(run.status == 0)
        // The same conversation through the library (greedy: generation_config.json has no do_sample).
        let tokenizer = try Tokenizer(folder: folder)
        let config = try TokenizerConfig(folder: folder)
        let template = try ChatTemplate(config: config)
        let generator = Generator(session: try LanguageModel.load(folder: folder).makeSession(capacity: 512))
        var messages = [ChatMessage(role: "system", content: "Answer in one sentence.")]
        var expected = ""
        var prefills: [Int] = []
        for turn in turns where !turn.isEmpty {
            messages.append(ChatMessage(role: "user", content: turn))
            let prompt = tokenizer.encode(try template.render(messages: messages, addGenerationPrompt: true, specialTokens: config))
            let reply = try generator.generate(prompt: prompt, options: GenerationOptions(maxNewTokens: 16, stopTokenIds: [2]),
                                               textDecoder: TokenStreamDecoder(tokenizer: tokenizer))
            expected += reply.text + "\n"
            prefills.append(reply.prefillTokens)
            messages.append(ChatMessage(role: "assistant", content: reply.text))
        }
        #expect(run.standardOutput == expected)
        let statistics = run.standardError.split(separator: "\n").filter { $0.hasPrefix("prefill: ") }
        #expect(statistics.map { $0.split(separator: " ")[1] } == prefills.map { "\($0)"[...] })
        #expect(prefills.count == 2 && prefills[1] < prefills[0])
    }
}
