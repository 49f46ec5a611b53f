import CCUDA

/// GPTQ.quantize on an NVIDIA GPU, step for step, from a weight and a CUDAHessian on the
/// device; the GPTQResult comes back to the host in the CPU's layout (PackedLinear.pack
/// and the checkpoint writer take it unchanged).
///
/// The host decides what depends on a handful of numbers (dead columns and the act-order
/// permutation from H's diagonal, the damping, g_idx); the GPU does the rest:
/// - the inverse factor: A = J·(PHPᵀ + damp·I)·J in float64 (J reverses the order), its
///   blocked Cholesky factorisation A = LLᵀ (a kernel for each 128×128 diagonal block,
///   cuBLAS dtrsm for the panel below it and dsyrk for the trailing matrix), then L⁻¹
///   (dtrsm on the identity). U = J·L⁻¹·J is upper triangular and UᵀU = (PHPᵀ + damp·I)⁻¹:
///   the upper Cholesky factor of the inverse that fasterquant computes with
///   cholesky → cholesky_inverse → cholesky(upper), for one factorisation and one
///   triangular solve instead of three factorisation-sized steps. Rounded to float32.
/// - blocks of 128 columns: the group parameters of the groups starting in the block
///   (from the weight as earlier blocks left it, as fasterquant reads W), a kernel that
///   quantizes the block's columns one after another (one warp per row), and the lazy
///   update of the later columns with a float32 cuBLAS gemm.
public final class CUDAGPTQ: @unchecked Sendable {
    public let backend: CUDABackend
    private var sharedMemoryRaised = false
    /// When set, `quantize` synchronizes at the end of each phase and records its seconds in
    /// `phaseSeconds` (benchmarks).
    public var recordsPhases = false
    public private(set) var phaseSeconds: [(String, Double)] = []
    private var phaseStart = ContinuousClock.now

    private func endPhase(_ name: String) throws {
        guard recordsPhases else { return }
        try device.synchronize()
        let d = ContinuousClock.now - phaseStart
        phaseSeconds.append((name, Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18))
        phaseStart = ContinuousClock.now
    }

    public init(backend: CUDABackend) {
        self.backend = backend
    }

    private var device: CUDADevice { backend.device }

    private func launch(_ name: String, grid: (Int, Int, Int), block: (Int, Int, Int), sharedBytes: Int = 0, _ args: [KernelArg]) throws {
        try backend.launch(name, in: GPTQKernels.source, grid: grid, block: block, sharedBytes: sharedBytes, args)
    }

    private static let quantizeBlockShared = GPTQKernels.maxBlockSize * GPTQKernels.maxBlockSize * 4 + GPTQKernels.maxBlockSize * 4
    private static let choleskyShared = GPTQKernels.choleskyBlock * GPTQKernels.choleskyBlock * 8

    private func raiseSharedMemoryLimits() throws {
        guard !sharedMemoryRaised else { return }
        try backend.kernel("gptq_quantize_block", in: GPTQKernels.source).setMaxDynamicSharedMemory(Self.quantizeBlockShared)
        try backend.kernel("gptq_cholesky_diagonal", in: GPTQKernels.source).setMaxDynamicSharedMemory(Self.choleskyShared)
        sharedMemoryRaised = true
    }

    /// Uploads `weight` ([rows, hessian.columns] row-major) and quantizes it.
    public func quantize(weight: [Float], hessian: CUDAHessian, config: QuantizeConfig) throws -> GPTQResult {
        _ = try GPTQ.validate(weightCount: weight.count, columns: hessian.columns, blockSize: GPTQKernels.maxBlockSize, config: config)
        let buffer = try device.upload(weight)
        return try quantize(weight: buffer, rows: weight.count / hessian.columns, hessian: hessian, config: config)
    }

    /// Quantizes `weight` (float32 [rows, hessian.columns] row-major on the device, left
    /// unchanged) as GPTQ.quantize does; the same errors for the same bad inputs.
    public func quantize(weight: DeviceBuffer, rows: Int, hessian: CUDAHessian, config: QuantizeConfig,
                         blockSize: Int = 128) throws -> GPTQResult {
        let n = hessian.columns
        _ = try GPTQ.validate(weightCount: rows * n, columns: n, blockSize: blockSize, config: config)
        guard weight.byteCount >= rows * n * 4 else {
            throw GPTQError.invalidArgument("weight buffer of \(weight.byteCount) bytes is smaller than [\(rows), \(n)] float32")
        }
        guard blockSize <= GPTQKernels.maxBlockSize else {
            throw GPTQError.invalidArgument("block size \(blockSize) is larger than the GPU kernel's \(GPTQKernels.maxBlockSize)")
        }
        try Self.checkSupported(config)
        let maxq = try Quantizer(config: config).maxq
        try raiseSharedMemoryLimits()
        phaseSeconds = []
        phaseStart = ContinuousClock.now
        let stream = backend.stream
        let groups = GPTQ.groupCount(columns: n, config: config)
        let groupSize = config.groupSize == -1 ? n : config.groupSize
        let scales = try device.allocate(bytes: rows * groups * 4), zeros = try device.allocate(bytes: rows * groups * 4)
        let sym: Int32 = config.sym ? 1 : 0
        func groupParameters(of w: DeviceBuffer, start: Int, count: Int, offset: Int) throws {
            try launch("gptq_group_params", grid: ((rows + 7) / 8, count, 1), block: (256, 1, 1),
                       [.buffer(w), .int(rows), .int(n), .int(start), .int(n), .int(groupSize), .int(offset), .int(groups),
                        .float32(maxq), .int32(sym), .buffer(scales), .buffer(zeros)])
        }
        // fasterquant's first find_params: the whole weight, before dead columns are zeroed.
        if config.groupSize == -1 { try groupParameters(of: weight, start: 0, count: 1, offset: 0) }

        let flags = try device.allocate(bytes: 8)
        try flags.fill(byte: 0, stream: stream)
        try checkFinite(weight.address, count: rows * n, flag: flags.address)
        try checkFinite(hessian.matrix.address, count: n * n, flag: flags.address + 4)
        let finite = try device.download(flags, as: Int32.self, count: 2)
        guard finite[0] == 0 else { throw GPTQError.invalidArgument("the weight holds NaN or Inf") }
        guard finite[1] == 0 else {
            throw GPTQError.invalidArgument("the Hessian holds NaN or Inf (check the calibration inputs of this layer)")
        }

        try endPhase("checks")
        let diagonalBuffer = try device.allocate(bytes: n * 4)
        try launch("gptq_diagonal", grid: ((n + 255) / 256, 1, 1), block: (256, 1, 1), [.buffer(hessian.matrix), .int(n), .buffer(diagonalBuffer)])
        let rawDiagonal = try device.download(diagonalBuffer, as: Float.self, count: n)
        let dead = rawDiagonal.map { $0 == 0 }
        let diagonal = rawDiagonal.map { $0 == 0 ? 1 : Double($0) }
        let perm = GPTQ.quantizationOrder(diagonal: diagonal, config: config)
        let permBuffer = try device.upload(perm.map { Int32($0) })
        let deadBuffer = try device.upload(dead.map { Int32($0 ? 1 : 0) })

        // The working weight in quantization order, dead columns zeroed.
        let work = try device.allocate(bytes: rows * n * 4)
        func permute(_ source: DeviceBuffer, into destination: DeviceBuffer, order: DeviceBuffer) throws {
            try launch("gptq_permute_columns", grid: ((n + 255) / 256, rows, 1), block: (256, 1, 1),
                       [.buffer(source), .buffer(destination), .int(n), .buffer(order), .buffer(deadBuffer)])
        }
        if config.staticGroups && config.groupSize != -1 {
            // Static groups: parameters of the original column groups, after dead columns are zeroed.
            let zeroed = try device.allocate(bytes: rows * n * 4)
            try permute(weight, into: zeroed, order: try device.upload((0..<n).map { Int32($0) }))
            try groupParameters(of: zeroed, start: 0, count: groups, offset: 0)
            try permute(zeroed, into: work, order: permBuffer)
        } else {
            try permute(weight, into: work, order: permBuffer)
        }

        try endPhase("order")
        // The damping's mean diagonal, summed in quantization order as the CPU sums it.
        let mean = perm.reduce(0.0) { $0 + diagonal[$1] }
        let (u, dampPercent, warnings) = try GPTQ.withDampingRetries(dampPercent: config.dampPercent) { percent in
            try inverseFactor(hessian, order: permBuffer, damp: percent * mean / Double(n))
        }

        try endPhase("inverse factor")
        let q = try device.allocate(bytes: rows * n * 4)
        let errors = try device.allocate(bytes: rows * GPTQKernels.maxBlockSize * 4)
        let loss = try device.allocate(bytes: 8)
        try loss.fill(byte: 0, stream: stream)
        let mode: Int32 = config.groupSize == -1 ? 0 : config.staticGroups ? 2 : 1
        for i1 in stride(from: 0, to: n, by: blockSize) {
            let i2 = min(i1 + blockSize, n), count = i2 - i1
            if mode == 1 {
                // The groups that start in this block, from the weight as the earlier blocks left it.
                let first = (i1 + groupSize - 1) / groupSize, last = (i2 - 1) / groupSize
                if first <= last { try groupParameters(of: work, start: first * groupSize, count: last - first + 1, offset: first) }
            }
            try launch("gptq_quantize_block", grid: ((rows + GPTQKernels.rowsPerBlock - 1) / GPTQKernels.rowsPerBlock, 1, 1),
                       block: (32 * GPTQKernels.rowsPerBlock, 1, 1), sharedBytes: Self.quantizeBlockShared,
                       [.buffer(work), .int(rows), .int(n), .int(i1), .int(count), .buffer(u), .buffer(scales), .buffer(zeros),
                        .int(groups), .int32(mode), .int(groupSize), .buffer(permBuffer), .float32(maxq), .buffer(q),
                        .buffer(errors), .buffer(loss)])
            if i2 < n {
                // W[:, i2:] −= Err · U[i1:i2, i2:]; column-major: Wᵀ[i2:, :] −= U[i1:i2, i2:]ᵀ-as-stored · Errᵀ.
                try backend.cublas.gemm(transA: false, transB: false, m: n - i2, n: rows, k: count,
                                        a: u.address + CUdeviceptr((i1 * n + i2) * 4), aType: .f32, lda: n,
                                        b: errors.address, bType: .f32, ldb: GPTQKernels.maxBlockSize,
                                        c: work.address + CUdeviceptr(i2 * 4), cType: .f32, ldc: n, alpha: -1, beta: 1)
            }
        }
        try endPhase("blocks")
        let result = GPTQResult(rows: rows, columns: n, bits: config.bits, groupSize: config.groupSize,
                                q: try device.download(q, as: Float.self, count: rows * n),
                                scales: try device.download(scales, as: Float.self, count: rows * groups),
                                zeros: try device.download(zeros, as: Float.self, count: rows * groups),
                                gIdx: GPTQ.groupIndex(order: perm, config: config),
                                loss: try device.download(loss, as: Double.self, count: 1)[0], dampPercent: dampPercent, warnings: warnings)
        try endPhase("download")
        return result
    }

    /// Throws for settings GPTQ on the GPU does not implement (before any work starts).
    public static func checkSupported(_ config: QuantizeConfig) throws {
        guard config.mse == nil else {
            throw GPTQError.invalidArgument("mse: the MSE grid search of the quantization parameters is not implemented on the GPU (quantize on the CPU)")
        }
    }

    private func checkFinite(_ address: CUdeviceptr, count: Int, flag: CUdeviceptr) throws {
        try launch("gptq_nonfinite", grid: (min((count + 255) / 256, 4096), 1, 1), block: (256, 1, 1),
                   [.pointer(address), .pointer(UInt64(count)), .pointer(flag)])
    }

    /// U, the upper Cholesky factor of (PHPᵀ + damp·I)⁻¹ as float32 [n, n] row-major (zeros
    /// below the diagonal), or nil when the matrix is not positive definite.
    package func inverseFactor(_ hessian: CUDAHessian, order: DeviceBuffer, damp: Double) throws -> DeviceBuffer? {
        let n = hessian.columns
        let a = try device.allocate(bytes: n * n * 8)
        try launch("gptq_damped_reversed", grid: ((n + 255) / 256, n, 1), block: (256, 1, 1),
                   [.buffer(hessian.matrix), .int(n), .buffer(order), .float64(damp), .buffer(a)])
        guard try choleskyLower(a, n: n) else { return nil }
        let inverse = try device.allocate(bytes: n * n * 8)
        try launch("gptq_identity", grid: ((n + 255) / 256, n, 1), block: (256, 1, 1), [.buffer(inverse), .int(n)])
        try backend.cublas.dtrsmLower(side: .left, transposed: false, m: n, n: n, a: a.address, lda: n, b: inverse.address, ldb: n)
        let u = try device.allocate(bytes: n * n * 4)
        try launch("gptq_inverse_factor", grid: ((n + 31) / 32, (n + 31) / 32, 1), block: (32, 8, 1),
                   [.buffer(inverse), .int(n), .buffer(u)])
        return u
    }

    /// Factors the symmetric positive definite `a` (float64 [n, n]) in place: its lower
    /// triangle (column-major) becomes L with A = LLᵀ. False when a pivot is not positive.
    func choleskyLower(_ a: DeviceBuffer, n: Int) throws -> Bool {
        let info = try device.allocate(bytes: 4)
        try info.fill(byte: 0, stream: backend.stream)
        let nb = GPTQKernels.choleskyBlock
        func at(_ row: Int, _ column: Int) -> CUdeviceptr { a.address + CUdeviceptr((column * n + row) * 8) }
        for k in stride(from: 0, to: n, by: nb) {
            let b = min(nb, n - k)
            try launch("gptq_cholesky_diagonal", grid: (1, 1, 1), block: (1024, 1, 1), sharedBytes: b * b * 8,
                       [.buffer(a), .int(n), .int(k), .int(b), .buffer(info)])
            let m = n - k - b
            guard m > 0 else { break }
            // Panel: L21 = A21 · L11⁻ᵀ; trailing matrix: A22 −= L21 · L21ᵀ.
            try backend.cublas.dtrsmLower(side: .right, transposed: true, m: m, n: b, a: at(k, k), lda: n, b: at(k + b, k), ldb: n)
            try backend.cublas.dsyrkLower(n: m, k: b, alpha: -1, a: at(k + b, k), lda: n, beta: 1, c: at(k + b, k + b), ldc: n)
        }
        return try device.download(info, as: Int32.self, count: 1)[0] == 0
    }
}
