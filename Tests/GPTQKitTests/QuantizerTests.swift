#if canImport(Glibc)
import Glibc
#endif
import Testing
import GPTQKit

@Suite struct QuantizerTests {
    /// With group_size -1 (no act-order), AutoGPTQ's scale and zero are find_params of the
    /// whole original weight; with static groups, of each group of the original weight.
    @Test func parametersMatchAutoGPTQFindParams() throws {
        let w = GPTQFixture.weight, rows = GPTQFixture.rows, columns = GPTQFixture.columns
        var wt = [Float](repeating: 0, count: w.count)
        for r in 0..<rows { for c in 0..<columns { wt[c * rows + r] = w[r * columns + c] } }
        var checked = 0
        for c in GPTQFixture.cases where c.groupSize == -1 || c.staticGroups {
            let reference = try GPTQFixture.autogptqResult(c)
            let quantizer = try Quantizer(bits: c.bits, sym: c.sym)
            let size = c.groupSize == -1 ? columns : c.groupSize
            for g in 0..<(columns / size) {
                let p = wt.withUnsafeBufferPointer { quantizer.parameters(columns: $0.baseAddress! + g * size * rows, count: size, rows: rows) }
                let groups = columns / size
                #expect(p.scale == (0..<rows).map { reference.scales[$0 * groups + g] }, "\(c.key) group \(g)")
                #expect(p.zero == (0..<rows).map { reference.zeros[$0 * groups + g] }, "\(c.key) group \(g)")
            }
            checked += 1
        }
        #expect(checked == 32)
    }

    @Test func quantizeRoundsHalfToEvenAndClamps() {
        // 2.5 → 2 and 3.5 → 4 (torch.round), then clamped to [0, maxq] around the zero.
        #expect(Quantizer.quantize(2.5, scale: 1, zero: 0, maxq: 15) == 2)
        #expect(Quantizer.quantize(3.5, scale: 1, zero: 0, maxq: 15) == 4)
        #expect(Quantizer.quantize(-0.5, scale: 1, zero: 8, maxq: 15) == 0)
        #expect(Quantizer.quantize(100, scale: 0.5, zero: 8, maxq: 15) == 3.5)
        #expect(Quantizer.quantize(-100, scale: 0.5, zero: 8, maxq: 15) == -4)
    }

    @Test func rangeRules() throws {
        // Row 0 all zero (range becomes [-1, 1]); row 1 all positive; row 2 mixed.
        let rows = 3
        let columns: [Float] = [0, 1, -1, 0, 3, 2]  // column-major: column 0 = (0, 1, -1), column 1 = (0, 3, 2)
        let asym = try Quantizer(bits: 4, sym: false)
        let a = columns.withUnsafeBufferPointer { asym.parameters(columns: $0.baseAddress!, count: 2, rows: rows) }
        #expect(a.scale == [Float(2) / 15, Float(3) / 15, Float(3) / 15])
        // float32: 1 / (2/15) = 7.4999996 rounds to 7; 1 / (3/15) = 5.
        #expect(a.zero == [7, 0, 5])
        let sym = try Quantizer(bits: 4, sym: true)
        let s = columns.withUnsafeBufferPointer { sym.parameters(columns: $0.baseAddress!, count: 2, rows: rows) }
        // sym: xmax = max(|xmin|, xmax); xmin = -xmax only where xmin < 0 (row 1 keeps [0, 3]).
        #expect(s.scale == [Float(2) / 15, Float(3) / 15, Float(4) / 15])
        #expect(s.zero == [8, 8, 8])
    }

    @Test func mseSearchShrinksTheRangeForOutliers() throws {
        // One outlier among small values: a shrunk grid fits the small values better.
        var values = (0..<64).map { Float($0 % 7) * 0.01 - 0.03 }
        values[5] = 1
        let plain = try Quantizer(bits: 3, sym: false)
        let mse = try Quantizer(bits: 3, sym: false, mse: MSESearch())
        let p = values.withUnsafeBufferPointer { plain.parameters(columns: $0.baseAddress!, count: 64, rows: 1) }
        let m = values.withUnsafeBufferPointer { mse.parameters(columns: $0.baseAddress!, count: 64, rows: 1) }
        func error(_ q: QuantParams) -> Float {
            values.reduce(0) { $0 + powf(abs(Quantizer.quantize($1, scale: q.scale[0], zero: q.zero[0], maxq: 7) - $1), 2.4) }
        }
        #expect(m.scale[0] < p.scale[0])
        #expect(error(m) < error(p))
        // The first candidate (p = 1) is the plain range, so the search can only improve on it.
        let grid = (0..<80).map { i -> Float in
            let f = Float(1 - Double(i) / 100)
            let lo = f * -0.03, hi = f * 1.0
            let scale = (hi - lo) / 7, zero = (-lo / scale).rounded(.toNearestOrEven)
            return values.reduce(0) { $0 + powf(abs(Quantizer.quantize($1, scale: scale, zero: zero, maxq: 7) - $1), 2.4) }
        }
        #expect(error(m) == grid.min())
    }

    @Test func unsupportedBitsAreRejected() {
        #expect(throws: GPTQError.invalidArgument("bits 5 is not supported (use 2, 3, 4 or 8)")) { try Quantizer(bits: 5, sym: true) }
    }
}
