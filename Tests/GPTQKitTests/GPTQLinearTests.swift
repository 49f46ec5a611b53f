import Testing
import GPTQKit

@Suite struct GPTQLinearTests {
    /// The CPU kernels on AutoGPTQ's packed layer reproduce AutoGPTQ's own output (float16
    /// arithmetic on its side): one row at a time (the fused GEMV) and all five rows at
    /// once (dequantized tiles and sgemm). Not where a zero of 0 overflowed AutoGPTQ's v1
    /// packing: no reading recovers those zeros (PackingTests.autoGPTQOverflowIsDetected).
    @Test(arguments: GPTQFixture.cases.filter { !(try! GPTQFixture.autogptqResult($0).zeros.contains(0)) })
    func kernelReproducesAutoGPTQOutput(_ c: GPTQCase) throws {
        let layer = GPTQLinear(try GPTQFixture.autogptqPacked(c))
        layer.int8Activations = .off
        // AutoGPTQ ran the layer on x_forward cast to float16.
        let x = roundedToHalf(try GPTQFixture.base.tensor("x_forward").floats())
        let expected = try GPTQFixture.tensor(c, "y").floats()
        let rows = 5, out = GPTQFixture.rows, n = GPTQFixture.columns
        #expect(rows > GPTQLinear.maxGEMVRows)
        var batched = [Float](repeating: 0, count: rows * out)
        layer.forward(x, rows: rows, into: &batched)
        for r in 0..<rows {
            var single = [Float](repeating: 0, count: out)
            x.withUnsafeBufferPointer { layer.forward($0.baseAddress! + r * n, rows: 1, into: &single) }
            let reference = Array(expected[(r * out)..<((r + 1) * out)])
            #expect(relativeError(single, reference) < 1e-3, "\(c.key) row \(r), GEMV")
            #expect(relativeError(Array(batched[(r * out)..<((r + 1) * out)]), reference) < 1e-3, "\(c.key) row \(r), prefill")
        }
    }

    /// Every row count of the GEMV (1…4) and the prefill path against a dense float32
    /// product with the dequantized weight, on our own v2 packing of an act-order layer (float kernels).
    @Test(arguments: ["b3_g32_act1_sym0_static0", "b2_g32_act1_sym0_static0", "b8_g128_act1_sym1_static1", "b4_g-1_act1_sym0_static0"])
    func allPathsAgreeWithDenseProduct(_ key: String) throws {
        let c = GPTQFixture.cases.first { $0.key == key }!
        let packed = try PackedLinear.pack(try GPTQFixture.autogptqResult(c), bias: GPTQFixture.bias, format: .gptqV2)
        let layer = GPTQLinear(packed)
        layer.int8Activations = .off
        let w = packed.dequantized(), out = GPTQFixture.rows, n = GPTQFixture.columns
        let x = (0..<(9 * n)).map { Float(($0 * 7919) % 201) / 100 - 1 }
        for rows in 1...9 {
            var y = [Float](repeating: 0, count: rows * out)
            layer.forward(x, rows: rows, into: &y)
            var dense = [Float](repeating: 0, count: rows * out)
            for r in 0..<rows {
                for o in 0..<out {
                    var sum: Double = Double(GPTQFixture.bias[o])
                    for i in 0..<n { sum += Double(x[r * n + i]) * Double(w[o * n + i]) }
                    dense[r * out + o] = Float(sum)
                }
            }
            #expect(relativeError(y, dense) < 1e-5, "\(key), \(rows) rows")
        }
    }
}
