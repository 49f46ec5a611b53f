import COpenBLAS

/// The GPTQ Hessian H = 2/n · Σ xxᵀ of a linear layer's inputs, accumulated as AutoGPTQ's
/// GPTQ.add_batch does: for a batch of m samples, H ← H · n/(n+m), n ← n+m, H ← H + 2/n · XᵀX.
/// Like AutoGPTQ it counts samples (calibration sequences), not rows: give one call per
/// sequence (or per batch of sequences, with `samples`). Kept in float32 as AutoGPTQ keeps it;
/// only the upper triangle is accumulated (BLAS ssyrk).
public struct HessianAccumulator: Sendable {
    public let columns: Int
    public private(set) var samples = 0
    /// [columns, columns] row-major; only the upper triangle is meaningful.
    private var upper: [Float]

    public init(columns: Int) {
        precondition(columns > 0, "a Hessian needs at least one column")
        self.columns = columns
        upper = [Float](repeating: 0, count: columns * columns)
    }

    /// Adds `count` input rows of `columns` floats each (row-major) coming from `samples` samples.
    public mutating func add(_ rows: UnsafePointer<Float>, count: Int, samples batch: Int = 1) {
        precondition(batch > 0 && count >= 0)
        let (beta, alpha) = Self.batchFactors(samples: samples, batch: batch)
        samples += batch
        let n = Int32(columns)
        upper.withUnsafeMutableBufferPointer { h in
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, n, Int32(count), alpha, rows, n, beta, h.baseAddress, n)
        }
    }

    /// add_batch's factors for `batch` more samples after `samples`: H ← beta·H + alpha·XᵀX.
    static func batchFactors(samples: Int, batch: Int) -> (beta: Float, alpha: Float) {
        (Float(Double(samples) / Double(samples + batch)), Float(2 / Double(samples + batch)))
    }

    public mutating func add(_ rows: [Float], samples batch: Int = 1) {
        precondition(rows.count % columns == 0, "\(rows.count) values are not whole rows of \(columns)")
        rows.withUnsafeBufferPointer { add($0.baseAddress!, count: rows.count / columns, samples: batch) }
    }

    /// The full symmetric matrix in float64, [columns, columns] row-major.
    public func symmetricMatrix() -> [Double] {
        let n = columns
        var h = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in i..<n {
                let v = Double(upper[i * n + j])
                h[i * n + j] = v
                h[j * n + i] = v
            }
        }
        return h
    }
}
