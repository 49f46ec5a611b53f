import Testing
import GPTQKit

/// The int8-activation kernels against the float ones, on every instruction set this CPU
/// has (forced in turn: the path is process-wide, so the suite runs serialized and puts the
/// best path back).
///
/// The bound. The int8 kernels quantize each block b of 32 channels of a row (in the kernel's
/// channel order: act-order layers sort channels by group first) as
/// x̂_c = d_b · round(x_c / d_b), d_b = max_{c∈b} |x_c| / 127, so |x_c − x̂_c| ≤ d_b / 2 (round
/// to nearest; |x_c / d_b| ≤ 127 needs no clamping). The integer sums are exact and the zero
/// points multiply Σ x̂ (not Σ x), so the kernel computes Σ_c x̂_c · W[o, c] with W the
/// dequantized weight, up to float32 rounding. Hence
///   |y_int8[o] − y_float[o]| = |Σ_c (x_c − x̂_c) · W[o, c]| ≤ Σ_c (d_{b(c)} / 2) · |W[o, c]|,
/// plus float32 accumulation error on both sides, bounded here by 1e-5 · Σ_c |x_c| · |W[o, c]|.
/// For an int8 weight (Int8Linear) with w = ŵ + δ, |δ[o, c]| ≤ s_o / 2 (s_o = max |w[o, ·]| / 127),
/// w·x − ŵ·x̂ = δ·x + ŵ·(x − x̂) adds Σ_c (s_o / 2) · |x_c|.
@Suite(.serialized) struct Int8KernelTests {
    static let paths = Int8KernelPath.allCases.filter(\.isSupported)

    /// x̂ exactly as the kernels quantize it (the same float32 operations), and each channel's
    /// step d: blocks of 32 in the kernel's channel order, i.e. sorted by group (stable) as
    /// GPTQLinear sorts act-order layers; returned in x's own order.
    static func quantized(_ x: [Float], gIdx: [Int32]? = nil) -> (values: [Float], steps: [Float]) {
        let order = gIdx.map { g in x.indices.sorted { (g[$0], $0) < (g[$1], $1) } } ?? Array(x.indices)
        var values = x, steps = [Float](repeating: 0, count: x.count)
        for start in stride(from: 0, to: x.count, by: 32) {
            let block = order[start..<(start + 32)]
            let max = block.map { abs(x[$0]) }.max()!
            let d = max / 127, inverse: Float = max > 0 ? 127 / max : 0
            for c in block {
                values[c] = d * (x[c] * inverse).rounded(.toNearestOrEven)
                steps[c] = d
            }
        }
        return (values, steps)
    }

    /// A random GPTQ layer of `bits` bits (levels, zeros and scales drawn at random) with
    /// `groupSize`-channel groups, act-order (a shuffled g_idx, as desc_act makes) or not.
    static func randomLayer(bits: Int, actOrder: Bool, rows: Int, columns: Int, groupSize: Int, seed: UInt64) throws -> PackedLinear {
        var random = Xoshiro256StarStar(seed: seed)
        let groups = (columns + groupSize - 1) / groupSize, maxq = (1 << bits) - 1
        var order = Array(0..<columns)
        if actOrder { order.shuffle(using: &random) }
        var gIdx = [Int32](repeating: 0, count: columns)
        for (rank, channel) in order.enumerated() { gIdx[channel] = Int32(rank / groupSize) }
        let scales = (0..<(rows * groups)).map { _ in Float.random(in: 0.002...0.02, using: &random) }
        let zeros = (0..<(rows * groups)).map { _ in Float(Int.random(in: 0...maxq, using: &random)) }
        var q = [Float](repeating: 0, count: rows * columns)
        for o in 0..<rows {
            for c in 0..<columns {
                let g = o * groups + Int(gIdx[c])
                q[o * columns + c] = scales[g] * (Float(Int.random(in: 0...maxq, using: &random)) - zeros[g])
            }
        }
        let result = GPTQResult(rows: rows, columns: columns, bits: bits, groupSize: groupSize, q: q, scales: scales, zeros: zeros, gIdx: gIdx)
        return try PackedLinear.pack(result, format: .gptqV2)
    }

    /// Activations with a few large channels in some blocks, as real ones have.
    static func activations(_ count: Int, seed: UInt64) -> [Float] {
        var random = Xoshiro256StarStar(seed: seed)
        return (0..<count).map { c in Float.random(in: -1...1, using: &random) * (c % 37 == 5 ? 20 : 1) }
    }

    @Test(arguments: [2, 3, 4, 8], [false, true])
    func gptqInt8AgreesWithFloatWithinActivationRounding(bits: Int, actOrder: Bool) throws {
        // 208 outputs, a partial last tile of 32 (3 bits pack 32 outputs a word: 224). 384 inputs in groups of 64.
        let out = bits == 3 ? 224 : 208, columns = 384
        let packed = try Self.randomLayer(bits: bits, actOrder: actOrder, rows: out, columns: columns, groupSize: 64, seed: UInt64(bits * 2 + (actOrder ? 1 : 0)))
        let w = packed.dequantized(), gIdx = packed.gIdx.ints()
        let floatLayer = GPTQLinear(packed), int8Layer = GPTQLinear(packed)
        floatLayer.int8Activations = .off
        int8Layer.int8Activations = .all
        #expect(int8Layer.supportsInt8Activations)
        defer { try? Int8KernelPath.select(nil) }
        for rows in [1, 2, 3, 4, 5] {
            let x = Self.activations(rows * columns, seed: UInt64(100 + rows))
            var reference = [Float](repeating: 0, count: rows * out)
            floatLayer.forward(x, rows: rows, into: &reference)
            var byPath: [[Float]] = []
            for path in Self.paths {
                try Int8KernelPath.select(path)
                var y = [Float](repeating: .nan, count: rows * out)
                int8Layer.forward(x, rows: rows, into: &y)
                byPath.append(y)
                for r in 0..<rows {
                    let xr = Array(x[(r * columns)..<((r + 1) * columns)])
                    let (xq, steps) = Self.quantized(xr, gIdx: gIdx)
                    for o in 0..<out {
                        var bound = 0.0, magnitude = 0.0, exact = 0.0
                        for c in 0..<columns {
                            let weight = Double(w[o * columns + c])
                            bound += Double(steps[c]) / 2 * abs(weight)
                            magnitude += abs(Double(xr[c]) * weight)
                            exact += Double(xq[c]) * weight
                        }
                        let got = Double(y[r * out + o]), float = Double(reference[r * out + o])
                        #expect(abs(got - float) <= bound + 1e-5 * magnitude, "\(path) bits \(bits) act-order \(actOrder) row \(r) out \(o): \(got) vs float \(float), bound \(bound)")
                        // The sharper statement behind the bound: the float product with x̂ itself.
                        #expect(abs(got - exact) <= 1e-5 * magnitude, "\(path) bits \(bits) row \(r) out \(o): \(got) vs Σ x̂·W \(exact)")
                    }
                }
            }
            // The bound is no formality: well below the outputs themselves.
            let scale = reference.map { abs(Double($0)) }.max()!
            #expect(scale > 0)
            for y in byPath.dropFirst() { #expect(relativeError(y, byPath[0]) < 1e-5, "paths disagree, \(bits) bits, \(rows) rows") }
        }
    }

    /// The bound of the test above catches a kernel that reads the wrong channel: with each
    /// pair of neighbouring channels swapped (as a wrong nibble order would), the outputs move
    /// beyond the bound almost everywhere.
    @Test func activationBoundCatchesSwappedChannels() throws {
        let packed = try Self.randomLayer(bits: 4, actOrder: true, rows: 64, columns: 256, groupSize: 64, seed: 7)
        let w = packed.dequantized(), x = Self.activations(256, seed: 8)
        let (_, steps) = Self.quantized(x, gIdx: packed.gIdx.ints())
        let layer = GPTQLinear(packed)
        layer.int8Activations = .off
        var swapped = x
        for c in stride(from: 0, to: 256, by: 2) { swapped.swapAt(c, c + 1) }
        var y = [Float](repeating: 0, count: 64), wrong = y
        layer.forward(x, rows: 1, into: &y)
        layer.forward(swapped, rows: 1, into: &wrong)
        let caught = (0..<64).filter { o in
            let bound = (0..<256).reduce(0.0) { $0 + Double(steps[$1]) / 2 * abs(Double(w[o * 256 + $1])) }
            return abs(Double(wrong[o] - y[o])) > bound
        }.count
        #expect(caught >= 56, "a swapped-channel kernel stays within the bound on \(64 - caught) of 64 outputs")
    }

    /// Groups that do not start at multiples of 32 channels keep the float kernel.
    @Test func unalignedGroupsTakeTheFloatKernel() throws {
        let packed = try Self.randomLayer(bits: 4, actOrder: false, rows: 32, columns: 96, groupSize: 48, seed: 3)
        let layer = GPTQLinear(packed), reference = GPTQLinear(packed)
        reference.int8Activations = .off
        #expect(!layer.supportsInt8Activations)
        let x = Self.activations(96, seed: 4)
        var y = [Float](repeating: 0, count: 32), expected = y
        layer.forward(x, rows: 1, into: &y)
        reference.forward(x, rows: 1, into: &expected)
        #expect(y == expected)
    }

    @Test(arguments: [1, 2, 3, 4, 5, 9])
    func int8MatrixAgreesWithFloatWithinRounding(rows: Int) throws {
        let out = 300, columns = 160
        var random = Xoshiro256StarStar(seed: UInt64(rows))
        let weight = (0..<(out * columns)).map { _ in Float.random(in: -0.1...0.1, using: &random) }
        let bias = (0..<out).map { _ in Float.random(in: -1...1, using: &random) }
        let dense = DenseLinear(weight: Tensor(weight, shape: [out, columns]).converted(to: .f16), bias: bias)
        let w = dense.weight.floats()
        let layer = try Int8Linear(dense)
        let x = Self.activations(rows * columns, seed: UInt64(50 + rows))
        var reference = [Float](repeating: 0, count: rows * out)
        dense.forward(x, rows: rows, into: &reference)
        defer { try? Int8KernelPath.select(nil) }
        for path in Self.paths {
            try Int8KernelPath.select(path)
            var y = [Float](repeating: .nan, count: rows * out)
            layer.forward(x, rows: rows, into: &y)
            for r in 0..<rows {
                let xr = Array(x[(r * columns)..<((r + 1) * columns)])
                let (_, steps) = Self.quantized(xr)
                for o in 0..<out {
                    let row = w[(o * columns)..<((o + 1) * columns)]
                    let s = Double(row.map(abs).max()!) / 127
                    var bound = 0.0, magnitude = 0.0
                    for c in 0..<columns {
                        let wc = Double(w[o * columns + c])
                        bound += s / 2 * abs(Double(xr[c])) + Double(steps[c]) / 2 * (abs(wc) + s / 2)
                        magnitude += abs(Double(xr[c]) * wc)
                    }
                    let got = Double(y[r * out + o]), float = Double(reference[r * out + o])
                    #expect(abs(got - float) <= bound + 1e-5 * magnitude, "\(path) row \(r) out \(o): \(got) vs \(float), bound \(bound)")
                }
            }
        }
    }

    @Test func int8LayerRefusesWhatItCannotRun() throws {
        #expect(throws: GPTQError.self) { try Int8Linear(quantizing: Tensor([Float](repeating: 1, count: 40), shape: [2, 20])) }
        if let missing = Int8KernelPath.allCases.first(where: { !$0.isSupported }) {
            #expect(throws: GPTQError.self) { try Int8KernelPath.select(missing) }
        }
    }
}
