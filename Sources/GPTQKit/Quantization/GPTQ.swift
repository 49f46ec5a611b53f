import COpenBLAS

/// What GPTQ makes of one linear layer: the fake-quantized weight and the parameters
/// that PackedLinear.pack turns into AutoGPTQ's tensors.
public struct GPTQResult: Sendable {
    public var rows: Int
    public var columns: Int
    public var bits: Int
    /// -1 when each row has one group.
    public var groupSize: Int
    /// [rows, columns] row-major: scale · (q − zero), in the original column order.
    public var q: [Float]
    /// [rows, groups] row-major, as fasterquant returns them (groups in g_idx numbering).
    public var scales: [Float]
    /// [rows, groups], integral values in [0, 2^bits − 1].
    public var zeros: [Float]
    /// [columns]: the group of each input column.
    public var gIdx: [Int32]
    /// AutoGPTQ's loss: Σ (w − q)² / d² / 2 over the weight, d the diagonal of the inverse Hessian's Cholesky factor.
    public var loss: Double
    /// The damping actually used (more than asked when the Cholesky factorisation failed).
    public var dampPercent: Double
    /// What went differently from the plan (raised damping), for the pipeline's log.
    public var warnings: [String]

    public init(rows: Int, columns: Int, bits: Int, groupSize: Int, q: [Float], scales: [Float], zeros: [Float],
                gIdx: [Int32], loss: Double = 0, dampPercent: Double = 0, warnings: [String] = []) {
        self.rows = rows
        self.columns = columns
        self.bits = bits
        self.groupSize = groupSize
        self.q = q
        self.scales = scales
        self.zeros = zeros
        self.gIdx = gIdx
        self.loss = loss
        self.dampPercent = dampPercent
        self.warnings = warnings
    }

    public var groups: Int { rows == 0 ? 0 : scales.count / rows }
}

/// GPTQ (Frantar et al.) as AutoGPTQ's GPTQ.fasterquant implements it.
public enum GPTQ {
    /// Damping is multiplied by this factor after each failed Cholesky factorisation, at most `dampRetries` times.
    static let dampGrowth = 10.0
    static let dampRetries = 3

    /// Quantizes `weight` ([rows, hessian.columns] row-major float32) column by column,
    /// spreading each column's rounding error over the columns not yet quantized.
    ///
    /// Follows fasterquant step by step: initial parameters from the whole weight; dead
    /// columns (zero Hessian diagonal) zeroed; static groups from the unquantized weight;
    /// act-order by decreasing Hessian diagonal (a stable sort: ties keep column order);
    /// damping; the upper Cholesky factor of H⁻¹; blocks of `blockSize` columns with lazy
    /// updates; group parameters recomputed at each group's first column from the weight
    /// as updated by earlier blocks only (AutoGPTQ reads W, not the block copy W1).
    /// H, its factorisation and inverse are float64; the weight updates are float32, as in AutoGPTQ.
    public static func quantize(weight: [Float], hessian: HessianAccumulator, config: QuantizeConfig,
                                blockSize: Int = 128) throws -> GPTQResult {
        let columns = hessian.columns
        let rows = try validate(weightCount: weight.count, columns: columns, blockSize: blockSize, config: config)
        let quantizer = try Quantizer(config: config)
        let groupSize = config.groupSize == -1 ? columns : config.groupSize

        // The weight column by column: wt[c * rows + r] = W[r, c].
        var wt = [Float](repeating: 0, count: weight.count)
        for r in 0..<rows { for c in 0..<columns { wt[c * rows + r] = weight[r * columns + c] } }

        let params = wt.withUnsafeBufferPointer { quantizer.parameters(columns: $0.baseAddress!, count: columns, rows: rows) }
        guard weight.allSatisfy(\.isFinite) else { throw GPTQError.invalidArgument("the weight holds NaN or Inf") }
        var h = hessian.symmetricMatrix()
        // LAPACK may factor a matrix holding NaN without complaint.
        guard h.allSatisfy(\.isFinite) else {
            throw GPTQError.invalidArgument("the Hessian holds NaN or Inf (check the calibration inputs of this layer)")
        }
        for i in 0..<columns where h[i * columns + i] == 0 {
            h[i * columns + i] = 1
            for r in 0..<rows { wt[i * rows + r] = 0 }
        }
        let staticParams: [QuantParams] = config.staticGroups && config.groupSize != -1
            ? wt.withUnsafeBufferPointer { w in
                stride(from: 0, to: columns, by: groupSize).map {
                    quantizer.parameters(columns: w.baseAddress! + $0 * rows, count: min(groupSize, columns - $0), rows: rows)
                }
            }
            : []

        let perm = quantizationOrder(diagonal: (0..<columns).map { h[$0 * columns + $0] }, config: config)
        if config.descAct {
            var permuted = [Float](repeating: 0, count: wt.count)
            var hp = [Double](repeating: 0, count: h.count)
            for (j, c) in perm.enumerated() {
                for r in 0..<rows { permuted[j * rows + r] = wt[c * rows + r] }
                for (k, d) in perm.enumerated() { hp[j * columns + k] = h[c * columns + d] }
            }
            wt = permuted
            h = hp
        }

        let (hinv, dampPercent, warnings) = try dampedInverseFactor(h, columns: columns, dampPercent: config.dampPercent)

        var qt = [Float](repeating: 0, count: wt.count)
        var scaleGroups: [QuantParams] = []
        var loss = 0.0
        let maxq = quantizer.maxq
        var current = params
        wt.withUnsafeMutableBufferPointer { wBuffer in
            qt.withUnsafeMutableBufferPointer { qBuffer in
                hinv.withUnsafeBufferPointer { hBuffer in
                    let w = wBuffer.baseAddress!, q = qBuffer.baseAddress!, hi = hBuffer.baseAddress!
                    var block = [Float](repeating: 0, count: min(blockSize, columns) * rows)
                    var errors = [Float](repeating: 0, count: block.count)
                    for i1 in stride(from: 0, to: columns, by: blockSize) {
                        let i2 = min(i1 + blockSize, columns), count = i2 - i1
                        block.withUnsafeMutableBufferPointer { b in
                            b.baseAddress!.update(from: w + i1 * rows, count: count * rows)
                        }
                        for i in 0..<count {
                            let j = i1 + i
                            if config.groupSize != -1 {
                                if config.staticGroups {
                                    current = staticParams[(config.descAct ? perm[j] : j) / groupSize]
                                } else if j % groupSize == 0 {
                                    current = quantizer.parameters(columns: w + j * rows, count: min(groupSize, columns - j), rows: rows)
                                    scaleGroups.append(current)
                                }
                            }
                            let d = hi[j * columns + j]
                            for r in 0..<rows {
                                let x = block[i * rows + r]
                                let quantized = Quantizer.quantize(x, scale: current.scale[r], zero: current.zero[r], maxq: maxq)
                                q[j * rows + r] = quantized
                                let e = (x - quantized) / d
                                loss += Double(e) * Double(e) / 2
                                errors[i * rows + r] = e
                            }
                            // W1[:, i+1:] -= err ⊗ Hinv[j, j+1:i2]
                            if i + 1 < count {
                                block.withUnsafeMutableBufferPointer { b in
                                    errors.withUnsafeBufferPointer { e in
                                        cblas_sger(CblasRowMajor, Int32(count - i - 1), Int32(rows), -1, hi + j * columns + j + 1, 1,
                                                   e.baseAddress! + i * rows, 1, b.baseAddress! + (i + 1) * rows, Int32(rows))
                                    }
                                }
                            }
                        }
                        // Lazy batch update of the columns after the block: W[:, i2:] -= Err1 · Hinv[i1:i2, i2:].
                        if i2 < columns {
                            errors.withUnsafeBufferPointer { e in
                                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(columns - i2), Int32(rows), Int32(count), -1,
                                            hi + i1 * columns + i2, Int32(columns), e.baseAddress!, Int32(rows), 1, w + i2 * rows, Int32(rows))
                            }
                        }
                    }
                }
            }
        }
        if config.groupSize == -1 || config.staticGroups {
            scaleGroups = config.groupSize == -1 ? [params] : staticParams
        }

        // Back to the original column order, rows first.
        var q = [Float](repeating: 0, count: weight.count)
        for (j, c) in perm.enumerated() { for r in 0..<rows { q[r * columns + c] = qt[j * rows + r] } }
        let groups = scaleGroups.count
        var scales = [Float](repeating: 0, count: rows * groups)
        var zeros = scales
        for (g, p) in scaleGroups.enumerated() {
            for r in 0..<rows {
                scales[r * groups + g] = p.scale[r]
                zeros[r * groups + g] = p.zero[r]
            }
        }
        return GPTQResult(rows: rows, columns: columns, bits: config.bits, groupSize: config.groupSize, q: q, scales: scales,
                          zeros: zeros, gIdx: groupIndex(order: perm, config: config), loss: loss, dampPercent: dampPercent,
                          warnings: warnings)
    }

    /// The number of rows of a [rows, columns] weight, after checking the arguments of a quantization.
    static func validate(weightCount: Int, columns: Int, blockSize: Int, config: QuantizeConfig) throws -> Int {
        guard weightCount % columns == 0, weightCount > 0 else {
            throw GPTQError.invalidArgument("weight of \(weightCount) values is not [rows, \(columns)] for a Hessian of \(columns) columns")
        }
        guard blockSize > 0 else { throw GPTQError.invalidArgument("block size \(blockSize) must be positive") }
        try config.validate()
        return weightCount / columns
    }

    /// perm[j]: the original column quantized j-th. Act-order sorts by decreasing Hessian
    /// diagonal (stable: ties keep column order); otherwise the columns' own order.
    public static func quantizationOrder(diagonal: [Double], config: QuantizeConfig) -> [Int] {
        var perm = Array(diagonal.indices)
        if config.descAct { perm.sort { diagonal[$0] > diagonal[$1] || (diagonal[$0] == diagonal[$1] && $0 < $1) } }
        return perm
    }

    /// g_idx numbers groups in quantization order: for act-order without static groups a
    /// column's group is its position in `order`; otherwise its own index.
    public static func groupIndex(order perm: [Int], config: QuantizeConfig) -> [Int32] {
        let groupSize = config.groupSize == -1 ? perm.count : config.groupSize
        var gIdx = [Int32](repeating: 0, count: perm.count)
        for (j, c) in perm.enumerated() {
            gIdx[c] = Int32((config.descAct && !config.staticGroups ? j : c) / groupSize)
        }
        return gIdx
    }

    /// How many groups of scales and zeros a layer of `columns` inputs has.
    public static func groupCount(columns: Int, config: QuantizeConfig) -> Int {
        config.groupSize == -1 ? 1 : (columns + config.groupSize - 1) / config.groupSize
    }

    /// The upper Cholesky factor of (H + damp·I)⁻¹, raising the damping `dampGrowth`-fold
    /// (at most `dampRetries` times) while the factorisation fails; the warnings say so.
    package static func dampedInverseFactor(_ h: [Double], columns: Int, dampPercent: Double) throws
        -> (factor: [Float], dampPercent: Double, warnings: [String]) {
        try withDampingRetries(dampPercent: dampPercent) { inverseCholeskyUpper(h, columns: columns, dampPercent: $0) }
    }

    /// Runs `factor` with `dampPercent`, then with damping `dampGrowth` times larger (at most
    /// `dampRetries` times) while it returns nil (a failed factorisation); the warnings say so.
    static func withDampingRetries<Factor>(dampPercent: Double, _ factor: (Double) throws -> Factor?) throws
        -> (factor: Factor, dampPercent: Double, warnings: [String]) {
        var damp = dampPercent
        var warnings: [String] = []
        for attempt in 0...dampRetries {
            if let result = try factor(damp) { return (result, damp, warnings) }
            if attempt < dampRetries {
                warnings.append("Cholesky factorisation failed with damp_percent \(damp); retrying with \(damp * dampGrowth)")
                damp *= dampGrowth
            }
        }
        throw GPTQError.invalidArgument("the Hessian is not positive definite even with damp_percent \(damp)")
    }

    /// torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H + damp·I)), upper=True)
    /// in float64, returned as float32 [n, n] row-major with zeros below the diagonal;
    /// nil when a factorisation fails (H not positive definite).
    static func inverseCholeskyUpper(_ h: [Double], columns n: Int, dampPercent: Double) -> [Float]? {
        var a = h
        var mean = 0.0
        for i in 0..<n { mean += h[i * n + i] }
        let damp = dampPercent * mean / Double(n)
        for i in 0..<n { a[i * n + i] += damp }
        // A symmetric row-major matrix is its own column-major transpose: LAPACK's lower
        // triangle (column-major) is our upper triangle, and L (column-major) reads as Lᵀ = U here.
        var size = Int32(n), info: Int32 = 0
        var lower = Int8(UInt8(ascii: "L"))
        a.withUnsafeMutableBufferPointer { m in
            dpotrf_(&lower, &size, m.baseAddress, &size, &info)
            if info == 0 { dpotri_(&lower, &size, m.baseAddress, &size, &info) }
            if info == 0 { dpotrf_(&lower, &size, m.baseAddress, &size, &info) }
        }
        guard info == 0 else { return nil }
        var u = [Float](repeating: 0, count: n * n)
        for i in 0..<n { for j in i..<n { u[i * n + j] = Float(a[i * n + j]) } }
        return u
    }
}
