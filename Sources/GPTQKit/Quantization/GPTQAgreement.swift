import COpenBLAS

/// How a GPTQ result agrees with a reference quantization of the same layer (AutoGPTQ's Q,
/// kept as float16): the bounds the CPU GPTQ meets against AutoGPTQ's fixture, which the
/// tests and `gptq gpu-check` hold every implementation to. Differences come from float32
/// summation order (a value then lands one quantization step away).
public struct GPTQAgreement: Sendable {
    /// The least share of float16 values identical to the reference's.
    public static let minimumIdentical = 0.98
    /// The largest relative difference between the two output errors.
    public static let outputErrorTolerance = 0.01

    public let identical: Int
    public let total: Int
    /// Values more than one quantization step (of the reference's grid) from the reference.
    public let fartherThanOneStep: Int

    public var identicalFraction: Double { total == 0 ? 1 : Double(identical) / Double(total) }
    public var withinTolerance: Bool { identicalFraction >= Self.minimumIdentical && fartherThanOneStep == 0 }

    /// Compares `q` ([rows, columns], rounded to float16 first as torch's .half()) with the
    /// reference's float16 values, measuring steps with the reference's scales and g_idx.
    public init(_ q: [Float], reference: GPTQResult) {
        precondition(q.count == reference.q.count, "\(q.count) values against a reference of \(reference.q.count)")
        let ours = Tensor(q, shape: [q.count]).converted(to: .f16).floats()
        let (rows, columns, groups) = (reference.rows, reference.columns, reference.groups)
        var identical = 0, farther = 0
        for r in 0..<rows {
            for c in 0..<columns {
                let i = r * columns + c, theirs = reference.q[i]
                if ours[i] == theirs { identical += 1; continue }
                let step = reference.scales[r * groups + Int(reference.gIdx[c])]
                if abs(ours[i] - theirs) > step * 1.01 + 1e-3 * abs(theirs) { farther += 1 }
            }
        }
        self.identical = identical
        total = q.count
        fartherThanOneStep = farther
    }

    /// ‖(Q − W)Xᵀ‖² / ‖WXᵀ‖²: the layer's relative output error on inputs X ([samples, columns]).
    public static func relativeOutputError(q: [Float], weight: [Float], inputs: [Float], columns: Int) -> Double {
        let rows = weight.count / columns, n = inputs.count / columns
        func squaredNorm(_ w: [Float]) -> Double {
            var out = [Float](repeating: 0, count: rows * n)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(n), Int32(columns), 1, w, Int32(columns),
                        inputs, Int32(columns), 0, &out, Int32(n))
            return out.reduce(0) { $0 + Double($1) * Double($1) }
        }
        return squaredNorm(zip(q, weight).map { $0 - $1 }) / squaredNorm(weight)
    }
}
