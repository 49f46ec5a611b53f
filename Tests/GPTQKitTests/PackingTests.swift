import Testing
import GPTQKit

@Suite struct PackingTests {
    /// Given AutoGPTQ's Q, scale, zero and g_idx, our pack writes AutoGPTQ's tensors bit for
    /// bit; where AutoGPTQ's v1 packing overflowed (a zero of 0) we write gptq_v2 instead,
    /// and that layer dequantizes to Q.
    @Test(arguments: GPTQFixture.cases)
    func packMatchesAutoGPTQ(_ c: GPTQCase) throws {
        let result = try GPTQFixture.autogptqResult(c)
        let ours = try PackedLinear.pack(result, bias: GPTQFixture.bias, format: .gptq, name: c.key)
        let theirs = try GPTQFixture.autogptqPacked(c)
        #expect(ours.qweight.ints() == theirs.qweight.ints())
        #expect(bitPattern(ours.scales) == bitPattern(theirs.scales))
        #expect(ours.gIdx.ints() == theirs.gIdx.ints())
        #expect(bitPattern(ours.bias!) == bitPattern(theirs.bias!))
        // A zero of 0 is what overflows v1. (The fixture's flag is also set for b3 per-row
        // asymmetric cases, judged on the zero − 1 it recorded; AutoGPTQ packed those fine.)
        if result.zeros.contains(0) {
            #expect(c.v1ZeroOverflow)
            #expect(ours.format == .gptqV2)
            #expect(ours.qzeros.ints() != theirs.qzeros.ints())
        } else {
            #expect(ours.format == .gptq)
            #expect(ours.qzeros.ints() == theirs.qzeros.ints())
        }
        #expect(ours.unpackedZeros() == transposedZeros(result))
        // scale16 · (q − zero) against Q = scale32 · (q − zero) in float16: the same level.
        let dequantized = ours.dequantized()
        let groups = result.groups
        for r in 0..<GPTQFixture.rows {
            for col in 0..<GPTQFixture.columns {
                let i = r * GPTQFixture.columns + col, g = r * groups + Int(result.gIdx[col])
                let level = (result.q[i] / result.scales[g]).rounded() + result.zeros[g]
                let back = (dequantized[i] / roundedToHalf([result.scales[g]])[0]).rounded() + result.zeros[g]
                #expect(level == back, "\(c.key) [\(r), \(col)]")
            }
        }
        #expect(relativeError(dequantized, result.q) < 1e-3)
    }

    @Test func formatsConvertBothWays() throws {
        let c = GPTQFixture.cases.first { $0.key == "b4_g32_act1_sym0_static0" }!
        let v1 = try GPTQFixture.autogptqPacked(c)
        let v2 = try v1.converted(to: .gptqV2)
        #expect(v2.format == .gptqV2)
        #expect(v2.unpackedZeros() == v1.unpackedZeros())
        #expect(v2.dequantized() == v1.dequantized())
        #expect(try v2.converted(to: .gptq).qzeros.ints() == v1.qzeros.ints())
        // A zero of 0 has no v1 encoding.
        let overflow = GPTQFixture.cases.first { $0.v1ZeroOverflow && $0.groupSize == 32 }!
        let packed = try PackedLinear.pack(try GPTQFixture.autogptqResult(overflow), format: .gptq, name: "layer")
        #expect(packed.format == .gptqV2)
        #expect(throws: GPTQError.self) { try packed.converted(to: .gptq) }
    }

    @Test func shapesAreCheckedAgainstBits() throws {
        let c = GPTQFixture.cases.first { $0.key == "b4_g128_act0_sym1_static0" }!
        let t = { (name: String) in try GPTQFixture.tensor(c, "packed." + name) }
        // A 4-bit qweight declared as 3-bit.
        #expect(throws: GPTQError.badTensor(name: "layer.qweight", path: "ckpt",
                                            reason: "I32 [32, 96]; 3-bit packing of [96, 256] needs I32 [24, 96]")) {
            try PackedLinear(name: "layer", path: "ckpt", bits: 3, format: .gptq, inFeatures: 256, outFeatures: 96,
                             qweight: try t("qweight"), qzeros: try t("qzeros"), scales: try t("scales"), gIdx: try t("g_idx"), bias: nil)
        }
        #expect(throws: GPTQError.invalidArgument("layer: bits 5 is not supported (use 2, 3, 4 or 8)")) {
            try PackedLinear(name: "layer", path: "ckpt", bits: 5, format: .gptq, inFeatures: 256, outFeatures: 96,
                             qweight: try t("qweight"), qzeros: try t("qzeros"), scales: try t("scales"), gIdx: try t("g_idx"), bias: nil)
        }
        let badGroups = Tensor(bitPattern: [Int32](repeating: 7, count: 256), dtype: .i32, shape: [256])
        #expect(throws: GPTQError.badTensor(name: "layer.g_idx", path: "ckpt", reason: "group 7 outside the 2 groups of scales")) {
            try PackedLinear(name: "layer", path: "ckpt", bits: 4, format: .gptq, inFeatures: 256, outFeatures: 96,
                             qweight: try t("qweight"), qzeros: try t("qzeros"), scales: try t("scales"), gIdx: badGroups, bias: nil)
        }
        #expect(throws: GPTQError.self) {
            try PackedLinear(name: "layer", path: "ckpt", bits: 4, format: .gptq, inFeatures: 256, outFeatures: 96,
                             qweight: try t("qweight"), qzeros: try t("qweight"), scales: try t("scales"), gIdx: try t("g_idx"), bias: nil)
        }
    }

    @Test func weightsOffTheGridAreRejected() throws {
        var result = try GPTQFixture.autogptqResult(GPTQFixture.cases.first { $0.key == "b4_g32_act0_sym1_static0" }!)
        result.q[5] = 100
        #expect(throws: GPTQError.self) { try PackedLinear.pack(result, name: "layer") }
    }
}

private func bitPattern(_ t: Tensor) -> [UInt16] {
    (0..<t.count).map { t.pointer(as: UInt16.self)[$0] }
}

/// The result's zeros [rows, groups] as [groups, rows] integers.
private func transposedZeros(_ r: GPTQResult) -> [Int32] {
    let groups = r.groups
    return (0..<(groups * r.rows)).map { i in Int32(r.zeros[(i % r.rows) * groups + i / r.rows]) }
}
