#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import GPTQKit
import Logging
import Synchronization

/// How one sequence (one choice of a request) is generated.
struct SequenceParameters: Sendable {
    var prompt: [Int32]
    /// Most tokens to generate; 0 only scores the prompt (completions' echo).
    var maxTokens: Int
    var sampling: SamplingParameters
    var seed: UInt64
    /// OpenAI's additive penalties on tokens already generated: presence once per distinct
    /// token, frequency once per occurrence.
    var presencePenalty: Float = 0
    var frequencyPenalty: Float = 0
    var stopTokenIds: Set<Int32>
    var stopStrings: [String] = []
    /// Alternatives reported beside each generated token's log-probability; nil reports none.
    var topLogprobs: Int?
    /// Whether the prompt tokens' log-probabilities are reported too (completions' echo).
    var promptLogprobs = false
}

/// A token's log-probability under the model (the log-softmax of its raw logits, before
/// temperature and penalties, as OpenAI reports it) and the most likely alternatives.
struct TokenLogprob: Sendable {
    var token: Int32
    var logprob: Float
    var top: [(token: Int32, logprob: Float)]
}

enum FinishReason: String, Sendable {
    /// An end-of-sequence token or a stop string.
    case stop
    /// max_tokens reached.
    case length
}

/// Why a sequence ended, in more detail than OpenAI's finish_reason gives.
enum SequenceEnd {
    case endOfSequence, stopString, length

    var finishReason: FinishReason { self == .length ? .length : .stop }
}

/// What the scheduler reports about one sequence, in order.
enum SequenceEvent: Sendable {
    /// Every prompt token's log-probability (nil for the first, which nothing predicts),
    /// once the prompt is in the cache, when `promptLogprobs` asked for them.
    case promptLogprobs([TokenLogprob?])
    /// A generated token and the text that became final with it (text that could start a
    /// stop string, or an incomplete character, is held back and comes with a later event).
    case token(id: Int32, text: String, logprob: TokenLogprob?)
    /// The end: text still held back, and the token counts for usage.
    case finished(reason: FinishReason, text: String, promptTokens: Int, completionTokens: Int)
    case failed(String)
}

/// Why the scheduler refused a request.
enum SubmitError: Error {
    /// The waiting queue is full.
    case overloaded
    case shutDown
}

/// Continuous batching over a `BatchInferenceSession`: each step feeds every running sequence
/// that is decoding one token, and the prompts of newly admitted sequences in chunks of at
/// most `prefillChunk` tokens in all, so a long prompt never stalls the streams already
/// running. Sequences join as slots free up and leave as soon as they finish or are
/// cancelled; the waiting queue is bounded. The loop runs on its own thread, since a
/// forward is long, blocking work that must not hold up the server's event loops.
final class Scheduler: Sendable {
    let session: BatchInferenceSessionBox
    let tokenizer: Tokenizer
    let prefillChunk: Int
    let maxWaiting: Int
    let metrics: ServeMetrics
    let logger: Logger

    /// What request handlers hand the loop; the loop takes it at the start of each step.
    private struct Inbox {
        var submitted: [RequestGroup] = []
        var cancelled: Set<UInt64> = []
        /// Sequences submitted but not yet in a slot, counted here so submission can refuse
        /// beyond the bound without asking the loop.
        var waitingSequences = 0
        var shutDown = false
        var nextGroupID: UInt64 = 0
    }
    private let inbox = Mutex(Inbox())
    private let wake = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)

    init(session: BatchInferenceSession, tokenizer: Tokenizer, prefillChunk: Int, maxWaiting: Int, metrics: ServeMetrics, logger: Logger) {
        self.session = BatchInferenceSessionBox(session)
        self.tokenizer = tokenizer
        self.prefillChunk = prefillChunk
        self.maxWaiting = maxWaiting
        self.metrics = metrics
        self.logger = logger
        metrics.kvSlotsTotal.set(Int64(session.slots))
        DispatchQueue(label: "gptq.serve.scheduler").async { [self] in
            var loop = SchedulerLoop(scheduler: self)
            loop.run()
            stopped.signal()
        }
    }

    /// Queues the sequences of one request; their events come on the stream, tagged with
    /// each sequence's index. Ending the stream's iteration (a handler cancelled, a client
    /// gone) cancels them.
    func submit(_ sequences: [SequenceParameters]) throws(SubmitError) -> (id: UInt64, events: AsyncStream<(Int, SequenceEvent)>) {
        let (events, continuation) = AsyncStream.makeStream(of: (Int, SequenceEvent).self)
        let id = try inbox.withLock { (inbox: inout Inbox) throws(SubmitError) -> UInt64 in
            guard !inbox.shutDown else { throw .shutDown }
            guard inbox.waitingSequences + sequences.count <= maxWaiting else { throw .overloaded }
            inbox.nextGroupID += 1
            inbox.waitingSequences += sequences.count
            inbox.submitted.append(RequestGroup(id: inbox.nextGroupID, sequences: sequences, continuation: continuation))
            return inbox.nextGroupID
        }
        continuation.onTermination = { [weak self] _ in self?.cancel(id) }
        wake.signal()
        return (id, events)
    }

    /// Stops the request's sequences and frees their slots at the next step; nothing when it
    /// has finished already.
    func cancel(_ id: UInt64) {
        inbox.withLock { _ = $0.cancelled.insert(id) }
        wake.signal()
    }

    /// Ends the loop, failing what is still queued or running, and waits for it.
    func shutDown() {
        let first = inbox.withLock { inbox -> Bool in
            defer { inbox.shutDown = true }
            return !inbox.shutDown
        }
        guard first else { return }
        wake.signal()
        stopped.wait()
    }

    fileprivate func takeInbox() -> (submitted: [RequestGroup], cancelled: Set<UInt64>, shutDown: Bool) {
        inbox.withLock { inbox in
            defer { inbox.submitted = []; inbox.cancelled = [] }
            return (inbox.submitted, inbox.cancelled, inbox.shutDown)
        }
    }

    fileprivate func admitted(_ count: Int) { inbox.withLock { $0.waitingSequences -= count } }

    fileprivate func waitForWork() { wake.wait() }
}

/// The session, touched only by the scheduler's loop thread.
final class BatchInferenceSessionBox: @unchecked Sendable {
    let session: BatchInferenceSession
    init(_ session: BatchInferenceSession) { self.session = session }
}

/// One request's sequences and where their events go.
final class RequestGroup: @unchecked Sendable {
    let id: UInt64
    let sequences: [SequenceParameters]
    let continuation: AsyncStream<(Int, SequenceEvent)>.Continuation
    /// Sequences not yet finished; the stream ends when none is left. Loop thread only.
    var unfinished: Int

    init(id: UInt64, sequences: [SequenceParameters], continuation: AsyncStream<(Int, SequenceEvent)>.Continuation) {
        self.id = id
        self.sequences = sequences
        self.continuation = continuation
        unfinished = sequences.count
    }

    func send(_ index: Int, _ event: SequenceEvent) {
        continuation.yield((index, event))
        switch event {
        case .finished, .failed:
            unfinished -= 1
            if unfinished == 0 { continuation.finish() }
        default: break
        }
    }
}

/// A sequence from admission to its end: its slot, how much of its prompt the cache holds,
/// its sampler and its text so far.
final class RunningSequence {
    let group: RequestGroup
    let index: Int
    let parameters: SequenceParameters
    let submittedAt: ContinuousClock.Instant
    var slot = -1
    /// Prompt tokens in the cache.
    var prefilled = 0
    var generated: [Int32] = []
    var sampler: Sampler
    var decoder: TokenStreamDecoder
    var stopFilter: StopStringFilter
    /// Occurrences of each generated token, for the presence and frequency penalties.
    var occurrences: [Int32: Int] = [:]
    var promptLogprobs: [TokenLogprob?] = []
    var lastTokenAt: ContinuousClock.Instant?

    init(group: RequestGroup, index: Int, tokenizer: Tokenizer, submittedAt: ContinuousClock.Instant) throws {
        self.group = group
        self.index = index
        parameters = group.sequences[index]
        self.submittedAt = submittedAt
        sampler = try Sampler(parameters.sampling, seed: parameters.seed)
        decoder = TokenStreamDecoder(tokenizer: tokenizer)
        stopFilter = StopStringFilter(stopStrings: parameters.stopStrings)
        if parameters.promptLogprobs { promptLogprobs = [nil] }
    }

    var isPrefilling: Bool { prefilled < parameters.prompt.count }
}

/// The loop's state, owned by its thread.
struct SchedulerLoop {
    let scheduler: Scheduler
    var session: BatchInferenceSession { scheduler.session.session }
    var waiting: [RunningSequence] = []
    /// Running sequences, in admission order (prefill goes first come, first served).
    var running: [RunningSequence] = []
    var freeSlots: [Int]
    let clock = ContinuousClock()
    /// Generated tokens since `windowStart`, for the tokens-per-second gauge.
    var windowTokens = 0
    var windowStart: ContinuousClock.Instant

    init(scheduler: Scheduler) {
        self.scheduler = scheduler
        freeSlots = Array((0..<scheduler.session.session.slots).reversed())
        windowStart = ContinuousClock.now
    }

    mutating func run() {
        while true {
            let (submitted, cancelled, shutDown) = scheduler.takeInbox()
            for group in submitted { enqueue(group) }
            if !cancelled.isEmpty { cancel(cancelled) }
            if shutDown {
                for sequence in waiting + running { sequence.group.send(sequence.index, .failed("the server is shutting down")) }
                for sequence in running { release(sequence) }
                waiting = []
                running = []
                publishGauges()
                return
            }
            admit()
            publishGauges()
            if running.isEmpty {
                scheduler.waitForWork()
                continue
            }
            step()
            publishGauges()
        }
    }

    mutating func enqueue(_ group: RequestGroup) {
        let now = clock.now
        for index in group.sequences.indices {
            do {
                waiting.append(try RunningSequence(group: group, index: index, tokenizer: scheduler.tokenizer, submittedAt: now))
            } catch {
                // Parameters are validated before submission; this is a last guard.
                scheduler.admitted(1)
                group.send(index, .failed("\(error)"))
            }
        }
    }

    mutating func cancel(_ ids: Set<UInt64>) {
        let waitingBefore = waiting.count, runningBefore = running.count
        var groups: [RequestGroup] = []
        for sequence in waiting + running where ids.contains(sequence.group.id) && !groups.contains(where: { $0 === sequence.group }) {
            groups.append(sequence.group)
        }
        waiting.removeAll { ids.contains($0.group.id) }
        scheduler.admitted(waitingBefore - waiting.count)
        for sequence in running where ids.contains(sequence.group.id) { release(sequence) }
        running.removeAll { ids.contains($0.group.id) }
        // A handler still waiting on the stream (its client gone) returns at once.
        for group in groups { group.continuation.finish() }
        scheduler.metrics.cancelledSequences.increment(by: Int64(waitingBefore - waiting.count + runningBefore - running.count))
    }

    mutating func admit() {
        var count = 0
        while let sequence = waiting.first, let slot = freeSlots.last {
            let parameters = sequence.parameters
            // Prompt logprobs need every prompt position computed, so such a prompt maps no cached prefix.
            let prompt = parameters.promptLogprobs ? [] : parameters.prompt
            guard let cached = session.admit(slot: slot, prompt: prompt, length: parameters.prompt.count + parameters.maxTokens) else { break }
            waiting.removeFirst()
            freeSlots.removeLast()
            sequence.slot = slot
            sequence.prefilled = cached
            running.append(sequence)
            count += 1
        }
        if count > 0 { scheduler.admitted(count) }
    }

    /// Frees the sequence's slot: its cache positions go at once.
    mutating func release(_ sequence: RunningSequence) {
        session.rewind(slot: sequence.slot, to: 0)
        freeSlots.append(sequence.slot)
    }

    mutating func step() {
        var batch: [(slot: Int, tokens: [Int32])] = []
        var fed: [RunningSequence] = []
        var needsAllLogits = false
        // Decoding sequences first: one token each, every step.
        for sequence in running where !sequence.isPrefilling {
            batch.append((sequence.slot, [sequence.generated[sequence.generated.count - 1]]))
            fed.append(sequence)
        }
        var budget = scheduler.prefillChunk
        for sequence in running where sequence.isPrefilling && budget > 0 {
            let take = min(budget, sequence.parameters.prompt.count - sequence.prefilled)
            batch.append((sequence.slot, Array(sequence.parameters.prompt[sequence.prefilled..<(sequence.prefilled + take)])))
            fed.append(sequence)
            needsAllLogits = needsAllLogits || sequence.parameters.promptLogprobs
            budget -= take
        }
        let started = clock.now
        let logits: [[Float]]
        do {
            logits = try session.forward(batch, allLogits: needsAllLogits)
        } catch {
            scheduler.logger.error("forward failed", metadata: ["error": "\(error)", "sequences": "\(fed.count)"])
            for sequence in fed { finish(sequence, with: .failed("the model failed: \(error)")) }
            return
        }
        let vocab = session.vocabSize
        var finished: [RunningSequence] = []
        var generatedThisStep = 0
        for (entry, sequence) in zip(batch.indices, fed) {
            let rows = logits[entry]
            let count = batch[entry].tokens.count
            // With every token's logits, the last row is the one that predicts what comes next.
            let last = needsAllLogits ? Array(rows[((count - 1) * vocab)...]) : rows
            if sequence.isPrefilling {
                let start = sequence.prefilled
                if sequence.parameters.promptLogprobs {
                    recordPromptLogprobs(sequence, rows: rows, from: start, count: count, vocab: vocab)
                }
                sequence.prefilled += count
                scheduler.metrics.promptTokens.increment(by: Int64(count))
                if sequence.isPrefilling { continue }
                if sequence.parameters.promptLogprobs { sequence.group.send(sequence.index, .promptLogprobs(sequence.promptLogprobs)) }
                if sequence.parameters.maxTokens == 0 {
                    finished.append(sequence)
                    sequence.group.send(sequence.index, endEvent(sequence, end: .length))
                    continue
                }
            }
            generatedThisStep += 1
            let choice = next(for: sequence, logits: last)
            guard choice.token != Sampler.noToken else {
                finished.append(sequence)
                sequence.group.send(sequence.index, .failed("every logit is NaN: the model's weights or config values are not finite"))
                continue
            }
            if let end = accept(choice, into: sequence) {
                finished.append(sequence)
                sequence.group.send(sequence.index, endEvent(sequence, end: end))
            }
        }
        for sequence in finished { release(sequence) }
        running.removeAll { sequence in finished.contains { $0 === sequence } }
        let now = clock.now
        scheduler.metrics.generationTokens.increment(by: Int64(generatedThisStep))
        scheduler.metrics.stepDuration.record(now - started)
        windowTokens += generatedThisStep
        if now - windowStart >= .seconds(1) {
            scheduler.metrics.generationTokensPerSecond.set(Double(windowTokens) / (now - windowStart).seconds)
            windowTokens = 0
            windowStart = now
        }
    }

    mutating func finish(_ sequence: RunningSequence, with event: SequenceEvent) {
        sequence.group.send(sequence.index, event)
        release(sequence)
        running.removeAll { $0 === sequence }
    }

    /// The next token: the penalties on the logits, then the sampler.
    func next(for sequence: RunningSequence, logits: [Float]) -> (token: Int32, logprob: TokenLogprob?) {
        var scores = logits
        let parameters = sequence.parameters
        if parameters.presencePenalty != 0 || parameters.frequencyPenalty != 0 {
            for (token, count) in sequence.occurrences {
                scores[Int(token)] -= parameters.presencePenalty + parameters.frequencyPenalty * Float(count)
            }
        }
        let history = parameters.sampling.repetitionPenalty == 1 ? [] : parameters.prompt + sequence.generated
        let token = sequence.sampler.next(logits: scores, history: history)
        let logprob = token == Sampler.noToken ? nil : parameters.topLogprobs.map { Logprobs.of(token, logits: logits, top: $0) }
        return (token, logprob)
    }

    /// Adds a generated token to the sequence and reports it; returns why the sequence ends, if it does.
    func accept(_ choice: (token: Int32, logprob: TokenLogprob?), into sequence: RunningSequence) -> SequenceEnd? {
        let now = clock.now
        if let last = sequence.lastTokenAt {
            scheduler.metrics.interTokenLatency.record(now - last)
        } else {
            scheduler.metrics.timeToFirstToken.record(now - sequence.submittedAt)
        }
        sequence.lastTokenAt = now
        let token = choice.token
        sequence.generated.append(token)
        sequence.occurrences[token, default: 0] += 1
        // An end-of-sequence token ends the text without being part of it.
        if sequence.parameters.stopTokenIds.contains(token) { return .endOfSequence }
        var text = ""
        let stop = sequence.stopFilter.append(sequence.decoder.push(token)) { text += $0 }
        sequence.group.send(sequence.index, .token(id: token, text: text, logprob: choice.logprob))
        if stop != nil { return .stopString }
        return sequence.generated.count >= sequence.parameters.maxTokens ? .length : nil
    }

    /// The finished event, with the text still held back: an incomplete character, or text
    /// that might have begun a stop string (which, at the end, may turn out to complete one),
    /// as `Generator` ends its text.
    func endEvent(_ sequence: RunningSequence, end: SequenceEnd) -> SequenceEvent {
        var text = ""
        var reason = end.finishReason
        if end != .stopString {
            if sequence.stopFilter.append(sequence.decoder.finish(), onText: { text += $0 }) != nil {
                reason = .stop
            } else {
                sequence.stopFilter.flush { text += $0 }
            }
        }
        return .finished(reason: reason, text: text, promptTokens: sequence.parameters.prompt.count, completionTokens: sequence.generated.count)
    }

    func recordPromptLogprobs(_ sequence: RunningSequence, rows: [Float], from start: Int, count: Int, vocab: Int) {
        let prompt = sequence.parameters.prompt
        let top = sequence.parameters.topLogprobs ?? 0
        // Row i predicts the token after prompt[start + i]; the last prompt row predicts the first generated token.
        for i in 0..<count where start + i + 1 < prompt.count {
            let row = Array(rows[(i * vocab)..<((i + 1) * vocab)])
            sequence.promptLogprobs.append(Logprobs.of(prompt[start + i + 1], logits: row, top: top))
        }
    }

    func publishGauges() {
        let metrics = scheduler.metrics
        metrics.runningSequences.set(Int64(running.count))
        metrics.waitingSequences.set(Int64(waiting.count))
        metrics.kvSlotsInUse.set(Int64(session.slots - freeSlots.count))
        metrics.kvTokensInUse.set(Int64(running.reduce(0) { $0 + session.position(of: $1.slot) }))
        if let blocks = session.cacheBlocks { metrics.kvBlocksInUse.set(Int64(blocks.inUse)) }
    }
}

enum Logprobs {
    /// `token`'s log-softmax under `logits`, and the `top` most likely tokens' (ties by id).
    static func of(_ token: Int32, logits: [Float], top: Int) -> TokenLogprob {
        let maxLogit = logits.max() ?? 0
        var sum: Double = 0
        for l in logits { sum += Double(expf(l - maxLogit)) }
        let logNormalizer = maxLogit + Float(log(sum))
        var best: [(token: Int32, logprob: Float)] = []
        if top > 0 {
            // A small sorted list: top is at most 20.
            for (i, l) in logits.enumerated() where best.count < top || l > best[best.count - 1].logprob {
                let entry = (token: Int32(i), logprob: l)
                let at = best.firstIndex { $0.logprob < l } ?? best.count
                best.insert(entry, at: at)
                if best.count > top { best.removeLast() }
            }
            best = best.map { ($0.token, $0.logprob - logNormalizer) }
        }
        return TokenLogprob(token: token, logprob: logits[Int(token)] - logNormalizer, top: best)
    }
}

extension Duration {
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) * 1e-18
    }
}
