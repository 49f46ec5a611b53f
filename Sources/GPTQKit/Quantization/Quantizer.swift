#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Per-output-row quantization parameters of a group of columns.
public struct QuantParams: Sendable, Equatable {
    /// [rows]
    public var scale: [Float]
    /// [rows], integral values in [0, maxq]
    public var zero: [Float]
}

/// AutoGPTQ's Quantizer (quantizer.py, per channel, for weights): a uniform grid of
/// 2^bits levels per output row, from the row's min/max (widened to include 0), and
/// quantize(x) = scale · (clamp(round(x / scale) + zero, 0, maxq) − zero).
/// All arithmetic is float32 in torch's order, rounding half to even as torch.round does,
/// so that the parameters and the fake-quantized values match AutoGPTQ's bit for bit.
public struct Quantizer: Sendable {
    public let bits: Int
    public let sym: Bool
    public let mse: MSESearch?
    public let maxq: Float

    public init(bits: Int, sym: Bool, mse: MSESearch? = nil) throws {
        guard QuantizeConfig.supportedBits.contains(bits) else {
            throw GPTQError.invalidArgument("bits \(bits) is not supported (use 2, 3, 4 or 8)")
        }
        self.bits = bits
        self.sym = sym
        self.mse = mse
        maxq = Float((1 << bits) - 1)
    }

    public init(config: QuantizeConfig) throws {
        try self.init(bits: config.bits, sym: config.sym, mse: config.mse)
    }

    @inline(__always)
    public static func quantize(_ x: Float, scale: Float, zero: Float, maxq: Float) -> Float {
        let q = min(max((x / scale).rounded(.toNearestOrEven) + zero, 0), maxq)
        return scale * (q - zero)
    }

    /// find_params over `count` columns of a weight stored column by column:
    /// element (row r, column c) is `columns[c * rows + r]`.
    public func parameters(columns: UnsafePointer<Float>, count: Int, rows: Int) -> QuantParams {
        var xmin = [Float](repeating: 0, count: rows)
        var xmax = [Float](repeating: 0, count: rows)
        for c in 0..<count {
            let column = columns + c * rows
            for r in 0..<rows {
                xmin[r] = min(xmin[r], column[r])
                xmax[r] = max(xmax[r], column[r])
            }
        }
        if sym {
            for r in 0..<rows {
                xmax[r] = max(abs(xmin[r]), xmax[r])
                // Only a row with a negative value becomes symmetric: AutoGPTQ keeps xmin = 0 otherwise.
                if xmin[r] < 0 { xmin[r] = -xmax[r] }
            }
        }
        for r in 0..<rows where xmin[r] == 0 && xmax[r] == 0 {
            xmin[r] = -1
            xmax[r] = 1
        }
        var params = QuantParams(scale: [Float](repeating: 0, count: rows), zero: [Float](repeating: 0, count: rows))
        let symZero = (maxq + 1) / 2
        for r in 0..<rows {
            params.scale[r] = (xmax[r] - xmin[r]) / maxq
            params.zero[r] = sym ? symZero : (-xmin[r] / params.scale[r]).rounded(.toNearestOrEven)
        }
        if let mse { search(mse, columns: columns, count: count, rows: rows, xmin: xmin, xmax: xmax, params: &params) }
        return params
    }

    /// AutoGPTQ's MSE grid: shrink [xmin, xmax] by p = 1 − i/grid for i < maxshrink·grid and keep,
    /// per row, the candidate with the smallest Σ|q(x) − x|^norm (first one on ties).
    private func search(_ mse: MSESearch, columns: UnsafePointer<Float>, count: Int, rows: Int,
                        xmin: [Float], xmax: [Float], params: inout QuantParams) {
        var best = [Float](repeating: .infinity, count: rows)
        var scale1 = [Float](repeating: 0, count: rows)
        var zero1 = params.zero
        var err = [Float](repeating: 0, count: rows)
        let norm = Float(mse.norm)
        for i in 0..<Int(mse.maxShrink * Double(mse.grid)) {
            let p = Float(1 - Double(i) / Double(mse.grid))
            for r in 0..<rows {
                let lo = p * xmin[r], hi = p * xmax[r]
                scale1[r] = (hi - lo) / maxq
                if !sym { zero1[r] = (-lo / scale1[r]).rounded(.toNearestOrEven) }
                err[r] = 0
            }
            for c in 0..<count {
                let column = columns + c * rows
                for r in 0..<rows {
                    let q = Self.quantize(column[r], scale: scale1[r], zero: zero1[r], maxq: maxq)
                    err[r] += powf(abs(q - column[r]), norm)
                }
            }
            for r in 0..<rows where err[r] < best[r] {
                best[r] = err[r]
                params.scale[r] = scale1[r]
                params.zero[r] = zero1[r]
            }
        }
    }
}
