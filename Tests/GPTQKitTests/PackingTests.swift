import Testing
import GPTQKit

@Suite struct PackingTests {
    /// Given AutoGPTQ's Q, scale, zero and g_idx, our pack writes AutoGPTQ's tensors bit for
    /// bit; where AutoGPTQ's v1 packing overflowed (a zero of 0) v1 is refused and gptq_v2
    /// holds the zeros, and that layer dequantizes to Q.
    @Test(arguments: GPTQFixture.cases)
    func packMatchesAutoGPTQ(_ c: GPTQCase) throws {
        let result = try GPTQFixture.autogptqResult(c)
        let zeroOfZero = result.zeros.contains(0)
        let ours = try PackedLinear.pack(result, bias: GPTQFixture.bias, format: zeroOfZero ? .gptqV2 : .gptq, name: c.key)
        let theirs = try GPTQFixture.autogptqPacked(c)
        #expect(ours.qweight.ints() == theirs.qweight.ints())
        #expect(bitPattern(ours.scales) == bitPattern(theirs.scales))
        #expect(ours.gIdx.ints() == theirs.gIdx.ints())
        #expect(bitPattern(ours.bias!) == bitPattern(theirs.bias!))
        // A zero of 0 is what overflows v1. (The fixture's flag is also set for b3 per-row
        // asymmetric cases, judged on the zero − 1 it recorded; AutoGPTQ packed those fine.)
        if zeroOfZero {
            #expect(c.v1ZeroOverflow)
            #expect(throws: GPTQError.self) { try PackedLinear.pack(result, format: .gptq, name: c.key) }
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
        // A zero of 0 is not written as v1: readers that add 1 field by field would misread it.
        let overflow = GPTQFixture.cases.first { $0.v1ZeroOverflow && $0.groupSize == 32 }!
        let packed = try PackedLinear.pack(try GPTQFixture.autogptqResult(overflow), format: .gptqV2, name: "layer")
        let zeros = packed.unpackedZeros(), first = zeros.firstIndex(of: 0)!
        #expect(throws: GPTQError.invalidArgument("layer: zero point 0 (group \(first / 96), output \(first % 96)) cannot be stored in checkpoint format gptq (v1 holds zero − 1); save as gptq_v2")) {
            try packed.converted(to: .gptq)
        }
    }

    /// GPTQModel's v1 of zeros with 0s (Tests/Fixtures/gptqmodel has its own files): the v2
    /// word minus the constant with 1 in every field, wrapping, so a 0 borrows from the field
    /// above. Read back whole-word, every zero is right.
    @Test func gptqModelV1WordsReadBackWholeWord() throws {
        for c in GPTQFixture.cases where c.bits != 3 && c.v1ZeroOverflow {
            let v2 = try PackedLinear.pack(try GPTQFixture.autogptqResult(c), bias: GPTQFixture.bias, format: .gptqV2, name: c.key)
            var ones: UInt32 = 0
            for k in stride(from: 0, to: 32, by: c.bits) { ones |= 1 << UInt32(k) }
            let v1Words = v2.qzeros.ints().map { Int32(bitPattern: UInt32(bitPattern: $0) &- ones) }
            let v1 = try PackedLinear(name: c.key, path: "gptqmodel", bits: c.bits, format: .gptq, inFeatures: v2.inFeatures,
                                      outFeatures: v2.outFeatures, qweight: v2.qweight,
                                      qzeros: Tensor(bitPattern: v1Words, dtype: .i32, shape: v2.qzeros.shape),
                                      scales: v2.scales, gIdx: v2.gIdx, bias: v2.bias)
            #expect(v1.unpackedZeros() == v2.unpackedZeros(), "\(c.key)")
            #expect(try v1.converted(to: .gptqV2).qzeros.ints() == v2.qzeros.ints(), "\(c.key)")
        }
    }

    /// AutoGPTQ's packing of a zero of 0 overwrote the fields above it: exactly the cases with
    /// a zero of 0 have such words, and none of the others. Zero points of 0 in the top field
    /// of a word lose nothing and are not reported.
    @Test(arguments: GPTQFixture.cases)
    func autoGPTQOverflowIsDetected(_ c: GPTQCase) throws {
        let theirs = try GPTQFixture.autogptqPacked(c)
        let words = theirs.autoGPTQOverflowWords()
        #expect(words.isEmpty == !(try GPTQFixture.autogptqResult(c).zeros.contains(0)), "\(c.key)")
        // Each reported word has a field of maxq below its top.
        for (group, word) in words {
            let value = UInt32(bitPattern: theirs.qzeros.ints()[group * theirs.qzeros.shape[1] + word])
            let fields = (0..<(32 / c.bits)).map { (value >> UInt32($0 * c.bits)) & UInt32(theirs.maxq) }
            #expect(fields.dropLast().contains(UInt32(theirs.maxq)), "\(c.key) [\(group), \(word)]")
        }
        #expect(try theirs.converted(to: .gptqV2).autoGPTQOverflowWords().isEmpty)
        var top = [Int32](repeating: 0, count: theirs.qzeros.count)
        top[0] = Int32(bitPattern: UInt32(theirs.maxq) << UInt32(32 - c.bits))
        if c.bits != 3 {
            let topOnly = try PackedLinear(name: c.key, path: "x", bits: c.bits, format: .gptq, inFeatures: 256, outFeatures: 96,
                                           qweight: theirs.qweight, qzeros: Tensor(bitPattern: top, dtype: .i32, shape: theirs.qzeros.shape),
                                           scales: theirs.scales, gIdx: theirs.gIdx, bias: nil)
            #expect(topOnly.autoGPTQOverflowWords().isEmpty)
            #expect(topOnly.unpackedZeros()[32 / c.bits - 1] == 0)
        }
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
