import Testing
import GPTQKit
#if canImport(Glibc)
import Glibc
#endif

@Suite struct SamplerTests {
    /// Probabilities by token, for comparing a distribution with a hand-computed one.
    func probabilities(_ d: [(token: Int32, probability: Float)]) -> [Int32: Float] {
        Dictionary(uniqueKeysWithValues: d.map { ($0.token, $0.probability) })
    }

    func softmax(_ x: [Double]) -> [Double] {
        let m = x.max()!
        let e = x.map { exp($0 - m) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }

    func expectClose(_ got: [Int32: Float], _ want: [Int32: Double], tolerance: Double = 1e-5) {
        #expect(Set(got.keys) == Set(want.keys))
        for (token, p) in want { #expect(abs(Double(got[token] ?? -1) - p) < tolerance, "token \(token)") }
    }

    @Test func xoshiroMatchesTheReferenceAlgorithm() {
        // First outputs of the C reference (xoshiro256starstar.c) seeded by splitmix64(0),
        // computed by an independent Python transcription.
        var rng = Xoshiro256StarStar(seed: 0)
        #expect(rng.next() == 11091344671253066420)
        #expect(rng.next() == 13793997310169335082)
        #expect(rng.next() == 1900383378846508768)
    }

    @Test func greedyTakesTheArgmaxAndIgnoresTheSeed() throws {
        for seed: UInt64 in [1, 2, 3] {
            var sampler = try Sampler(SamplingParameters(), seed: seed)
            #expect(sampler.next(logits: [0.1, 2.5, -1, 2.4], history: []) == 1)
        }
    }

    @Test func topKKeepsTheKLargestAndTiesWithTheKth() throws {
        let logits: [Float] = [1, 3, 2, 3, 0.5]
        let k2 = try Sampler(SamplingParameters(temperature: 1, topK: 2))
        expectClose(probabilities(k2.distribution(logits: logits, history: [])), [1: 0.5, 3: 0.5])
        let k3 = try Sampler(SamplingParameters(temperature: 1, topK: 3))
        let p = softmax([3, 3, 2])
        expectClose(probabilities(k3.distribution(logits: logits, history: [])), [1: p[0], 3: p[1], 2: p[2]])
        // Tie at the k-th: k = 1 keeps both 3s, as transformers' `scores < topk[-1]` does.
        let k1 = try Sampler(SamplingParameters(temperature: 1, topK: 1))
        expectClose(probabilities(k1.distribution(logits: logits, history: [])), [1: 0.5, 3: 0.5])
    }

    @Test func topPKeepsTheSmallestSetReachingP() throws {
        let probs: [Double] = [0.5, 0.3, 0.15, 0.05]
        let logits = probs.map { Float(log($0)) }
        // Ascending cumulative sums: 0.05, 0.2, 0.5, 1.0; a token goes while its sum <= 1 - top_p.
        let cases: [(Float, [Int32: Double])] = [
            (0.75, [0: 0.5 / 0.8, 1: 0.3 / 0.8]),
            (0.9, [0: 0.5 / 0.95, 1: 0.3 / 0.95, 2: 0.15 / 0.95]),
            (0.99, [0: 0.5, 1: 0.3, 2: 0.15, 3: 0.05]),
            (0.1, [0: 1]),  // always at least one token
        ]
        for (topP, expected) in cases {
            let s = try Sampler(SamplingParameters(temperature: 1, topP: topP))
            expectClose(probabilities(s.distribution(logits: logits, history: [])), expected)
        }
    }

    @Test func topPOverAWideVocabularyMatchesTheFullSort() throws {
        // Many small tokens exercise the pre-filter below (1 - top_p) / n.
        var rng = Xoshiro256StarStar(seed: 7)
        let logits = (0..<5000).map { _ in Float(rng.nextUnit() * 8 - 4) }
        let topP: Float = 0.6
        let s = try Sampler(SamplingParameters(temperature: 0.7, topP: topP))
        let got = s.distribution(logits: logits, history: [])
        // Reference: transformers' TopPLogitsWarper step by step in double precision.
        let p = softmax(logits.map { Double($0) / Double(Float(0.7)) })
        let ascending = p.indices.sorted { p[$0] < p[$1] }
        var cumulative = 0.0
        var removed = Set<Int>()
        for i in ascending.dropLast() {
            cumulative += p[i]
            if cumulative <= 1 - Double(topP) { removed.insert(i) } else { break }
        }
        let keptMass = p.indices.filter { !removed.contains($0) }.reduce(0) { $0 + p[$1] }
        var want: [Int32: Double] = [:]
        for i in p.indices where !removed.contains(i) { want[Int32(i)] = p[i] / keptMass }
        expectClose(probabilities(got), want, tolerance: 1e-5)
        #expect(zip(got, got.dropFirst()).allSatisfy { $0.probability >= $1.probability })
    }

    @Test func temperatureScalesTheLogits() throws {
        let s = try Sampler(SamplingParameters(temperature: 0.5))
        let p = softmax([4, 2, 0])
        expectClose(probabilities(s.distribution(logits: [2, 1, 0], history: [])), [0: p[0], 1: p[1], 2: p[2]])
    }

    @Test func repetitionPenaltyDividesPositiveAndMultipliesNegativeLogits() throws {
        // Token 0 (2 → 1) and token 1 (-2 → -4, penalised once though seen twice) are in the history.
        let s = try Sampler(SamplingParameters(temperature: 1, repetitionPenalty: 2))
        let p = softmax([1, -4, 1, 0.5])
        expectClose(probabilities(s.distribution(logits: [2, -2, 1, 0.5], history: [0, 1, 1])),
                    [0: p[0], 1: p[1], 2: p[2], 3: p[3]])
        // Greedy decoding applies the penalty too: token 0 falls from 3 to 1.5, below token 2.
        var greedy = try Sampler(SamplingParameters(repetitionPenalty: 2))
        #expect(greedy.next(logits: [3, -2, 2, 0.5], history: [0]) == 2)
    }

    @Test func samplingIsReproducibleBySeedAndFollowsTheDistribution() throws {
        let logits = [0.5, 0.3, 0.2].map { Float(log($0)) }
        let parameters = SamplingParameters(temperature: 1)
        func draws(seed: UInt64, count: Int) throws -> [Int32] {
            var s = try Sampler(parameters, seed: seed)
            return (0..<count).map { _ in s.next(logits: logits, history: []) }
        }
        #expect(try draws(seed: 42, count: 64) == draws(seed: 42, count: 64))
        #expect(try draws(seed: 42, count: 64) != draws(seed: 43, count: 64))
        let many = try draws(seed: 5, count: 20000)
        for (token, p) in [(Int32(0), 0.5), (1, 0.3), (2, 0.2)] {
            let frequency = Double(many.filter { $0 == token }.count) / Double(many.count)
            #expect(abs(frequency - p) < 0.015, "token \(token): \(frequency)")
        }
    }

    @Test func outOfRangeParametersAreRejectedByName() {
        #expect(throws: GPTQError.invalidArgument("top-p must be in (0, 1], got 0.0")) { try Sampler(SamplingParameters(topP: 0)) }
        #expect(throws: GPTQError.invalidArgument("temperature must be >= 0, got -1.0")) { try Sampler(SamplingParameters(temperature: -1)) }
        #expect(throws: GPTQError.invalidArgument("top-k must be >= 0, got -2")) { try Sampler(SamplingParameters(topK: -2)) }
        #expect(throws: GPTQError.invalidArgument("repetition penalty must be > 0, got 0.0")) {
            try Sampler(SamplingParameters(repetitionPenalty: 0))
        }
    }
}
