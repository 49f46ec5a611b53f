import CKernels
import COpenBLAS

/// A float linear layer over a float16, bfloat16 or float32 weight [out, in] that
/// usually stays memory-mapped from the checkpoint.
///
/// A few rows (decode) stream the weight once through a SIMD matrix-vector kernel that
/// reads the stored type directly. More rows (prefill) convert tiles of the weight to
/// float32 into a small scratch buffer and multiply them with sgemm, so the model is
/// never held in float32 as a whole.
public final class DenseLinear: DifferentiableLinear, WeightFootprint, @unchecked Sendable {
    public let weight: Tensor
    public let bias: [Float]?
    public var inFeatures: Int { weight.shape[1] }
    public var outFeatures: Int { weight.shape[0] }
    public var weightBytes: Int { weight.byteCount + (bias?.count ?? 0) * 4 }

    /// Row counts up to this go through the matrix-vector kernel.
    static let gemvRows = 4
    /// Bytes of float32 weight converted per sgemm tile: large enough for sgemm to be
    /// efficient, small enough to stay in the last-level cache.
    static let tileBytes = 1 << 21

    public init(weight: Tensor, bias: [Float]? = nil) {
        precondition(weight.rank == 2 && [.f16, .bf16, .f32].contains(weight.dtype), "DenseLinear needs a 2-D float weight")
        precondition(bias == nil || bias!.count == weight.shape[0], "bias length differs from the output features")
        self.weight = weight
        self.bias = bias
    }

    public func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>) {
        let (n, k) = (outFeatures, inFeatures)
        if rows <= Self.gemvRows {
            CPUThreads.parallelRanges(n, minimumChunk: 16) { o0, o1 in
                switch weight.dtype {
                case .f16: ck_gemv_f16(weight.pointer(as: UInt16.self), k, x, Int32(rows), o0, o1, y, n)
                case .bf16: ck_gemv_bf16(weight.pointer(as: UInt16.self), k, x, Int32(rows), o0, o1, y, n)
                default: ck_gemv_f32(weight.pointer(as: Float.self), k, x, Int32(rows), o0, o1, y, n)
                }
            }
        } else if weight.dtype == .f32 {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(n), Int32(k),
                        1, x, Int32(k), weight.pointer(as: Float.self), Int32(k), 0, y, Int32(n))
        } else {
            forEachFloatTile { o0, count, tile in
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(count), Int32(k),
                            1, x, Int32(k), tile, Int32(k), 0, y + o0, Int32(n))
            }
        }
        if let bias {
            bias.withUnsafeBufferPointer { b in
                for r in 0..<rows { ck_add(y + r * n, b.baseAddress!, n) }
            }
        }
    }

    /// dx = dy · W, through the same float32 tiles of the weight as the forward's sgemm.
    public func backward(input x: UnsafePointer<Float>, outputGradient dy: UnsafePointer<Float>, rows: Int,
                         inputGradient dx: UnsafeMutablePointer<Float>) {
        let (n, k) = (outFeatures, inFeatures)
        guard rows > 0 else { return }
        if weight.dtype == .f32 {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(k), Int32(n),
                        1, dy, Int32(n), weight.pointer(as: Float.self), Int32(k), 0, dx, Int32(k))
            return
        }
        forEachFloatTile { o0, count, tile in
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(k), Int32(count),
                        1, dy + o0, Int32(n), tile, Int32(k), o0 == 0 ? 0 : 1, dx, Int32(k))
        }
    }

    /// The half-precision weight in float32 tiles of whole output rows (at most `tileBytes`,
    /// at least 16 rows): `body(firstRow, rows, tile)` for each, in order.
    private func forEachFloatTile(_ body: (_ firstRow: Int, _ rows: Int, _ tile: UnsafePointer<Float>) -> Void) {
        let (n, k) = (outFeatures, inFeatures)
        let tileRows = max(16, min(n, Self.tileBytes / (4 * k)))
        let tile = UnsafeMutablePointer<Float>.allocate(capacity: tileRows * k)
        defer { tile.deallocate() }
        var o0 = 0
        while o0 < n {
            let count = min(tileRows, n - o0)
            CPUThreads.parallelRanges(count * k, minimumChunk: 1 << 14) { start, end in
                weight.readFloats(start: o0 * k + start, count: end - start, into: tile + start)
            }
            body(o0, count, tile)
            o0 += count
        }
    }
}
