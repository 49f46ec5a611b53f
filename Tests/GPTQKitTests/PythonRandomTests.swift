import Testing
import GPTQKit

/// PythonRandom against CPython 3's random module (Tests/Fixtures/python_random/generate.py).
@Suite struct PythonRandomTests {
    struct Case {
        let seed: Int
        let json: JSON
    }

    static func cases() throws -> [Case] {
        let doc = try JSON.read(path: Fixtures.path("python_random/expected.json"))
        return try #require(doc["cases"]?.array).map { c in
            Case(seed: Int(c["seed"]!.string!)!, json: c)
        }
    }

    @Test func getrandbitsMatchesCPython() throws {
        let cases = try Self.cases()
        #expect(cases.count == 6)
        for c in cases {
            var r = PythonRandom(seed: c.seed)
            for k in [1, 7, 31, 32, 33, 63, 64] {
                let expected = try #require(c.json["getrandbits"]?[String(k)]?.array).map { UInt64($0.string!)! }
                let got = (0..<3).map { _ in r.getrandbits(k) }
                #expect(got == expected, "seed \(c.seed), getrandbits(\(k))")
            }
        }
    }

    @Test func gptqCalibrationWindowsMatchCPython() throws {
        let doc = try JSON.read(path: Fixtures.path("python_random/expected.json"))
        let bound = try #require(doc["window_bound"]?.int)
        for c in try Self.cases() {
            var r = PythonRandom(seed: c.seed)
            let expected = try #require(c.json["windows"]?.array).map { $0.int! }
            #expect((0..<128).map { _ in r.randint(0, bound) } == expected, "seed \(c.seed)")
        }
    }

    @Test func smallAndDegenerateRangesMatchCPython() throws {
        for c in try Self.cases() {
            var r = PythonRandom(seed: c.seed)
            let got = (0..<20).map { _ in r.randint(3, 5) } + (0..<2).map { _ in r.randint(0, 0) }
                + (0..<5).map { _ in r.randint(-10, 1 << 40) }
            #expect(got == c.json["small"]!.array!.map { $0.int! }, "seed \(c.seed)")
        }
    }
}
