/// Round-to-nearest quantization: each group of columns gets AutoGPTQ's quantizer grid
/// (per-row min/max of the group) and every weight its nearest level, with no error
/// feedback. The baseline that GPTQ's Hessian-aware rounding improves on.
public enum RoundToNearest {
    /// Quantizes `weight` ([rows, columns] row-major) with `config`'s bits, group size and
    /// symmetry; a group size that does not divide `columns` leaves a partial last group.
    public static func quantize(weight: [Float], columns: Int, config: QuantizeConfig) throws -> GPTQResult {
        try config.validate()
        guard columns > 0, weight.count % columns == 0, !weight.isEmpty else {
            throw GPTQError.invalidArgument("weight of \(weight.count) values is not [rows, \(columns)]")
        }
        let rows = weight.count / columns
        let quantizer = try Quantizer(config: config)
        let groupSize = config.groupSize == -1 ? columns : config.groupSize
        let groups = (columns + groupSize - 1) / groupSize
        // Column-major copy: the quantizer reads a group's columns contiguously.
        var wt = [Float](repeating: 0, count: weight.count)
        for r in 0..<rows { for c in 0..<columns { wt[c * rows + r] = weight[r * columns + c] } }
        var q = [Float](repeating: 0, count: weight.count)
        var scales = [Float](repeating: 0, count: rows * groups)
        var zeros = scales
        wt.withUnsafeBufferPointer { w in
            for g in 0..<groups {
                let first = g * groupSize, end = min(first + groupSize, columns)
                let params = quantizer.parameters(columns: w.baseAddress! + first * rows, count: end - first, rows: rows)
                for r in 0..<rows {
                    scales[r * groups + g] = params.scale[r]
                    zeros[r * groups + g] = params.zero[r]
                    for c in first..<end {
                        q[r * columns + c] = Quantizer.quantize(weight[r * columns + c], scale: params.scale[r], zero: params.zero[r], maxq: quantizer.maxq)
                    }
                }
            }
        }
        return GPTQResult(rows: rows, columns: columns, bits: config.bits, groupSize: config.groupSize, q: q, scales: scales,
                          zeros: zeros, gIdx: (0..<columns).map { Int32($0 / groupSize) })
    }
}
