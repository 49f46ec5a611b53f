import CCUDA

/// cuBLAS's enum values (cublasFillMode_t, cublasOperation_t, cublasSideMode_t, cublasDiagType_t).
enum CUBLASFill: Int32 { case lower = 0, upper = 1 }
enum CUBLASSide: Int32 { case left = 0, right = 1 }

extension CUBLAS {
    /// C = alpha·A·Aᵀ + beta·C (A n×k column-major, no transpose), the lower triangle of C
    /// only, float32 arithmetic.
    func syrkLower(n: Int, k: Int, alpha: Float, a: CUdeviceptr, lda: Int, beta: Float, c: CUdeviceptr, ldc: Int) throws {
        var alpha = alpha, beta = beta
        try device.libraries.checkCUBLAS(
            device.libraries.api.pointee.cublasSsyrk(handle, CUBLASFill.lower.rawValue, 0, Int32(n), Int32(k), &alpha,
                                                     UnsafePointer(bitPattern: UInt(a)), Int32(lda), &beta,
                                                     UnsafeMutablePointer(bitPattern: UInt(c)), Int32(ldc)),
            "cublasSsyrk(n \(n), k \(k))")
    }

    /// The float64 version of `syrkLower`.
    func dsyrkLower(n: Int, k: Int, alpha: Double, a: CUdeviceptr, lda: Int, beta: Double, c: CUdeviceptr, ldc: Int) throws {
        var alpha = alpha, beta = beta
        try device.libraries.checkCUBLAS(
            device.libraries.api.pointee.cublasDsyrk(handle, CUBLASFill.lower.rawValue, 0, Int32(n), Int32(k), &alpha,
                                                     UnsafePointer(bitPattern: UInt(a)), Int32(lda), &beta,
                                                     UnsafeMutablePointer(bitPattern: UInt(c)), Int32(ldc)),
            "cublasDsyrk(n \(n), k \(k))")
    }

    /// Solves op(A)·X = B (side left) or X·op(A) = B (side right) for X in place of B, A lower
    /// triangular with its diagonal, float64, column-major; op(A) = Aᵀ when `transposed`.
    func dtrsmLower(side: CUBLASSide, transposed: Bool, m: Int, n: Int, a: CUdeviceptr, lda: Int, b: CUdeviceptr, ldb: Int) throws {
        var one = 1.0
        try device.libraries.checkCUBLAS(
            device.libraries.api.pointee.cublasDtrsm(handle, side.rawValue, CUBLASFill.lower.rawValue, transposed ? 1 : 0, 0,
                                                     Int32(m), Int32(n), &one, UnsafePointer(bitPattern: UInt(a)), Int32(lda),
                                                     UnsafeMutablePointer(bitPattern: UInt(b)), Int32(ldb)),
            "cublasDtrsm(m \(m), n \(n))")
    }
}

/// The GPTQ Hessian H = 2/n · Σ xxᵀ accumulated on the GPU exactly as HessianAccumulator
/// does it on the CPU (AutoGPTQ's add_batch running average, float32, one triangle with
/// cuBLAS ssyrk): [columns, columns], the upper triangle in row-major terms (the lower
/// one in cuBLAS's column-major terms).
public final class CUDAHessian: @unchecked Sendable {
    public let columns: Int
    public private(set) var samples = 0
    let backend: CUDABackend
    let matrix: DeviceBuffer
    /// Host rows go through this buffer (grown as needed).
    private var staging: DeviceBuffer?

    public init(backend: CUDABackend, columns: Int) throws {
        guard columns > 0 else { throw GPTQError.invalidArgument("a Hessian needs at least one column, not \(columns)") }
        self.backend = backend
        self.columns = columns
        matrix = try backend.device.allocate(bytes: columns * columns * 4)
        try matrix.fill(byte: 0, stream: backend.stream)
    }

    /// Adds `count` input rows of `columns` float32 values (row-major, on the device) coming
    /// from `samples` calibration samples.
    public func add(device rows: CUdeviceptr, count: Int, samples batch: Int = 1) throws {
        guard batch > 0, count >= 0 else { throw GPTQError.invalidArgument("a Hessian batch of \(count) rows from \(batch) samples") }
        let (beta, alpha) = HessianAccumulator.batchFactors(samples: samples, batch: batch)
        samples += batch
        // Row-major X [count, columns] is column-major Xᵀ [columns, count]: XᵀX = A·Aᵀ with A = Xᵀ.
        try backend.cublas.syrkLower(n: columns, k: count, alpha: alpha, a: rows, lda: columns, beta: beta,
                                     c: matrix.address, ldc: columns)
    }

    /// Adds `count` float16 input rows on the device, `stride` elements apart (a layer's
    /// activations as CUDASession.layerForward shows them). A float32 product of the float16
    /// values on the tensor cores: their products are exact in float32, as in AutoGPTQ's
    /// `inp.float()` matmul; both triangles are written, the upper one (row-major) is read.
    public func add(halfRows rows: CUdeviceptr, stride: Int, count: Int, samples batch: Int = 1) throws {
        guard batch > 0, count >= 0, stride >= columns else {
            throw GPTQError.invalidArgument("a Hessian batch of \(count) rows \(stride) apart from \(batch) samples, for \(columns) columns")
        }
        let (beta, alpha) = HessianAccumulator.batchFactors(samples: samples, batch: batch)
        samples += batch
        try backend.cublas.gemm(transA: false, transB: true, m: columns, n: columns, k: count, a: rows, aType: .f16, lda: stride,
                                b: rows, bType: .f16, ldb: stride, c: matrix.address, cType: .f32, ldc: columns, alpha: alpha, beta: beta)
    }

    /// Adds `count` input rows from host memory.
    public func add(_ rows: UnsafePointer<Float>, count: Int, samples batch: Int = 1) throws {
        let bytes = count * columns * 4
        if staging == nil || staging!.byteCount < bytes { staging = try backend.device.allocate(bytes: max(bytes, 4)) }
        if bytes > 0 { try staging!.copy(from: rows, bytes: bytes, stream: backend.stream) }
        try add(device: staging!.address, count: count, samples: batch)
    }

    /// The full symmetric matrix in float64, [columns, columns] row-major (as HessianAccumulator's).
    public func symmetricMatrix() throws -> [Double] {
        let n = columns
        let upper = try backend.device.download(matrix, as: Float.self, count: n * n)
        var h = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in i..<n {
                h[i * n + j] = Double(upper[i * n + j])
                h[j * n + i] = h[i * n + j]
            }
        }
        return h
    }
}
