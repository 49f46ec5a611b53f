import Testing
import GPTQKit

/// RoundToNearest against AutoGPTQ's quantizer formulas in numpy (Tests/Fixtures/rtn/generate.py).
@Suite struct RoundToNearestTests {
    @Test(arguments: [(4, 32, true), (3, -1, false), (2, 32, false), (8, 160, true), (4, 48, false)])
    func matchesNumpyReference(bits: Int, groupSize: Int, sym: Bool) throws {
        let reference = try SafetensorsFile(path: Fixtures.path("rtn/rtn_reference.safetensors"))
        let key = "b\(bits)_g\(groupSize)_sym\(sym ? 1 : 0)"
        let w = try reference.tensor("W")
        let config = QuantizeConfig(bits: bits, groupSize: groupSize, sym: sym)
        let result = try RoundToNearest.quantize(weight: w.floats(), columns: w.shape[1], config: config)
        #expect(result.q == (try reference.tensor(key + ".Q").floats()))
        #expect(result.scales == (try reference.tensor(key + ".scales").floats()))
        #expect(result.zeros == (try reference.tensor(key + ".zeros").floats()))
        let size = groupSize == -1 ? w.shape[1] : groupSize
        #expect(result.gIdx == (0..<w.shape[1]).map { Int32($0 / size) })
        #expect(result.groups == (w.shape[1] + size - 1) / size)
        // The result packs (every value lies on its group's grid).
        let packed = try PackedLinear.pack(result, name: key)
        #expect(packed.dequantized().count == w.count)
    }
}
