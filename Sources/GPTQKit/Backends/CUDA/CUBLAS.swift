import CCUDA

/// A cuBLAS handle bound to a device's stream, for the matrix products that are
/// arithmetic-bound (prefill, batches above the GEMV kernels' limit, attention scores).
public final class CUBLAS: @unchecked Sendable {
    let device: CUDADevice
    let handle: cublasHandle_t
    /// The handle's workspace, where the cuBLAS found has cublasSetWorkspace: room for the
    /// algorithms that need one (split-K on large layers), and no allocation inside captured graphs.
    let workspace: DeviceBuffer?
    /// 32 MiB, what cuBLAS recommends on Hopper.
    public static let workspaceBytes = 32 << 20

    /// cuBLAS's element type codes (cudaDataType).
    public enum ElementType: Int32 { case f32 = 0, f16 = 2 }

    public init(device: CUDADevice) throws {
        self.device = device
        let libs = device.libraries
        var h: cublasHandle_t?
        try libs.checkCUBLAS(libs.api.pointee.cublasCreate(&h), "cublasCreate")
        handle = h!
        try libs.checkCUBLAS(libs.api.pointee.cublasSetStream(handle, device.stream.handle), "cublasSetStream")
        if let setWorkspace = libs.api.pointee.cublasSetWorkspace {
            let buffer = try device.allocate(bytes: Self.workspaceBytes)
            try libs.checkCUBLAS(setWorkspace(handle, UnsafeMutableRawPointer(bitPattern: UInt(buffer.address)), Self.workspaceBytes),
                                 "cublasSetWorkspace(\(Self.workspaceBytes) bytes)")
            workspace = buffer
        } else {
            workspace = nil
        }
    }

    deinit { _ = device.libraries.api.pointee.cublasDestroy(handle) }

    public var version: Int {
        var v: Int32 = 0
        _ = device.libraries.api.pointee.cublasGetVersion(handle, &v)
        return Int(v)
    }

    /// C = alpha·op(A)·op(B) + beta·C in cuBLAS's column-major terms, with float32
    /// accumulation (CUBLAS_COMPUTE_32F). `count` > 1 runs a strided batch.
    public func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                     a: CUdeviceptr, aType: ElementType, lda: Int, strideA: Int = 0,
                     b: CUdeviceptr, bType: ElementType, ldb: Int, strideB: Int = 0,
                     c: CUdeviceptr, cType: ElementType, ldc: Int, strideC: Int = 0,
                     alpha: Float = 1, beta: Float = 0, count: Int = 1) throws {
        var alpha = alpha, beta = beta
        let api = device.libraries.api.pointee
        let status: cublasStatus_t
        if count == 1 {
            status = api.cublasGemmEx(handle, transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k),
                                      &alpha, UnsafeRawPointer(bitPattern: UInt(a)), aType.rawValue, Int32(lda),
                                      UnsafeRawPointer(bitPattern: UInt(b)), bType.rawValue, Int32(ldb), &beta,
                                      UnsafeMutableRawPointer(bitPattern: UInt(c)), cType.rawValue, Int32(ldc),
                                      68 /* CUBLAS_COMPUTE_32F */, -1 /* CUBLAS_GEMM_DEFAULT */)
        } else {
            status = api.cublasGemmStridedBatchedEx(handle, transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k),
                                                    &alpha, UnsafeRawPointer(bitPattern: UInt(a)), aType.rawValue, Int32(lda), Int64(strideA),
                                                    UnsafeRawPointer(bitPattern: UInt(b)), bType.rawValue, Int32(ldb), Int64(strideB), &beta,
                                                    UnsafeMutableRawPointer(bitPattern: UInt(c)), cType.rawValue, Int32(ldc), Int64(strideC),
                                                    Int32(count), 68, -1)
        }
        try device.libraries.checkCUBLAS(status, "cublasGemmEx(m \(m), n \(n), k \(k)\(count > 1 ? ", batch \(count)" : ""))")
    }

    /// y[rows, n] = x[rows, k] · Wᵀ for row-major float16 x and W [n, k] (the Hugging Face
    /// layout), y in `yType`.
    public func linear(x: CUdeviceptr, ldx: Int? = nil, weight: CUdeviceptr, y: CUdeviceptr, ldy: Int? = nil,
                       yType: ElementType = .f16, rows: Int, inFeatures k: Int, outFeatures n: Int) throws {
        // Column-major: yᵀ (n × rows) = Wᵀ-as-stored (k × n)ᵀ · xᵀ (k × rows).
        try gemm(transA: true, transB: false, m: n, n: rows, k: k, a: weight, aType: .f16, lda: k,
                 b: x, bType: .f16, ldb: ldx ?? k, c: y, cType: yType, ldc: ldy ?? n)
    }

    /// y[rows, n] = x[rows, k] · W for row-major float16 x and W [k, n] (the layout the
    /// GPTQ dequantizer writes).
    public func linearKN(x: CUdeviceptr, ldx: Int? = nil, weight: CUdeviceptr, y: CUdeviceptr, ldy: Int? = nil,
                         yType: ElementType = .f16, rows: Int, inFeatures k: Int, outFeatures n: Int) throws {
        try gemm(transA: false, transB: false, m: n, n: rows, k: k, a: weight, aType: .f16, lda: n,
                 b: x, bType: .f16, ldb: ldx ?? k, c: y, cType: yType, ldc: ldy ?? n)
    }
}
