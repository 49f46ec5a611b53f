import CCUDA
import Synchronization

/// Device buffers reused across launches (dequantized weights, gathered inputs), grown
/// on demand. Sized by a first, uncaptured run before a graph is captured.
public final class CUDAScratch: @unchecked Sendable {
    let backend: CUDABackend
    private let buffers = Mutex<[String: DeviceBuffer]>([:])

    public init(backend: CUDABackend) { self.backend = backend }

    /// A buffer of at least `bytes` for `purpose` (its contents are not kept across calls).
    public func buffer(_ purpose: String, bytes: Int) throws -> DeviceBuffer {
        if let b = buffers.withLock({ $0[purpose] }), b.byteCount >= bytes { return b }
        let b = try backend.device.allocate(bytes: bytes)
        buffers.withLock { $0[purpose] = b }
        return b
    }
}

/// A linear layer on the GPU, y = x·Wᵀ (+ b) on float16 rows: float16 weights, or GPTQ
/// weights: 4-bit layers in the tiled layout go through the tensor-core kernel (32 rows a
/// launch) for up to `maxTiledKernelRows` rows, other GPTQ layers through the GEMV kernels
/// (8 rows a launch) for up to `maxGEMVRows` rows; above that the weights are dequantized
/// for cuBLAS.
public final class CUDALinear: @unchecked Sendable {
    public static let maxGEMVRows = 16
    /// Rows up to which the tiled kernel beats dequantizing for cuBLAS (measured: BENCHMARKS.md).
    public static let maxTiledKernelRows = 64
    /// Rows that the warpgroup kernel takes where the device has it (`CUDABackend.warpgroupMMA`):
    /// on an H200 it beat the tiled kernel's two launches at 33–64 rows (but for 4096x4096 at 33)
    /// and dequantizing for cuBLAS at 65–128 on the Llama-2-7B layers; at 256 rows it lost that
    /// to dequantizing on 4096x11008 (BENCHMARKS.md).
    public static let warpgroupRows = 33...128

    package enum Weights {
        /// float16 [outFeatures, inFeatures] (the Hugging Face layout).
        case dense(DeviceBuffer)
        case gptq(bits: Int, groupSize: Int, zeroOffset: Int, kernel: CUDAGPTQLayout.Kernel,
                  qweight: DeviceBuffer, qzeros: DeviceBuffer, scales: DeviceBuffer, gIdx: DeviceBuffer, permutation: DeviceBuffer?)
        /// 4 bits in CUDAGPTQLayout's tiled layout (words and group parameters).
        case tiled4(groupSize: Int, tiles: DeviceBuffer, parameters: DeviceBuffer, permutation: DeviceBuffer?)
    }

    let backend: CUDABackend
    public let inFeatures: Int
    public let outFeatures: Int
    package let weights: Weights
    let bias: DeviceBuffer?
    /// Tiled layers on a device with the warpgroup kernel: the gather of x it reads
    /// (`CUDAGPTQLayout.warpgroupInputOrder`, int32 [inFeatures]).
    let warpgroupOrder: DeviceBuffer?

    /// From a float tensor [outFeatures, inFeatures] (any float dtype; stored as float16).
    public init(backend: CUDABackend, weight: Tensor, bias: Tensor? = nil) throws {
        precondition(weight.rank == 2)
        self.backend = backend
        outFeatures = weight.shape[0]
        inFeatures = weight.shape[1]
        guard inFeatures % 8 == 0 else { throw GPTQError.unsupported("CUDA linear with \(inFeatures) inputs (a multiple of 8 is needed)") }
        let half = weight.converted(to: .f16)
        weights = .dense(try backend.device.upload(half))
        warpgroupOrder = nil
        self.bias = try bias.map { b in
            let h = b.converted(to: .f16)
            return try backend.device.upload(h)
        }
    }

    public init(backend: CUDABackend, gptq packed: PackedLinear) throws {
        // The kernels read plain zero points: v1's zero − 1, packed whole-word as GPTQModel
        // writes it (and as the CPU reads it), is unpacked once here.
        let layer = try packed.converted(to: .gptqV2)
        self.backend = backend
        inFeatures = layer.inFeatures
        outFeatures = layer.outFeatures
        guard inFeatures % 8 == 0 else { throw GPTQError.unsupported("\(layer.name): CUDA linear with \(inFeatures) inputs (a multiple of 8 is needed)") }
        let layout = CUDAGPTQLayout(layer)
        let device = backend.device
        let scales = layer.scales.converted(to: .f16)
        if layout.kernel == .tiled4 {
            weights = .tiled4(groupSize: layout.groupSize, tiles: try device.upload(layout.qweight),
                              parameters: try device.upload(layout.groupParameters), permutation: try layout.permutation.map { try device.upload($0) })
            warpgroupOrder = try Self.warpgroupOrder(backend: backend, inFeatures: inFeatures, permutation: layout.permutation)
        } else {
            warpgroupOrder = nil
            weights = .gptq(bits: layer.bits, groupSize: layout.groupSize, zeroOffset: 0, kernel: layout.kernel,
                            qweight: try device.upload(layout.qweight),
                            qzeros: try device.upload(layer.qzeros),
                            scales: try device.upload(scales),
                            gIdx: try device.upload(layout.gIdx), permutation: try layout.permutation.map { try device.upload($0) })
        }
        bias = try layer.bias.map { b in
            let h = b.converted(to: .f16)
            return try device.upload(h)
        }
    }

    /// A 4-bit layer with pseudo-random packed weights, zeros and scales (benchmarks): the
    /// tiled layout, no act order.
    public init(backend: CUDABackend, random4BitInFeatures k: Int, outFeatures n: Int, groupSize: Int, seed: UInt32) throws {
        precondition(k % groupSize == 0 && groupSize % 64 == 0 && k % 64 == 0 && n % 16 == 0)
        self.backend = backend
        inFeatures = k
        outFeatures = n
        let device = backend.device
        let tiles = try device.allocate(bytes: k / 8 * n * 4)
        let parameters = try device.allocate(bytes: k / groupSize * n * 4)
        try backend.fillRandomWords(tiles, seed: seed)
        let count = parameters.byteCount / 8
        try backend.launch("fill_random_q4_params", in: LinearKernels.common, grid: (min((count + 255) / 256, 65535), 1, 1), block: (256, 1, 1),
                           [.buffer(parameters), .pointer(UInt64(count)), .int32(Int32(bitPattern: seed &+ 1)), .float32(0.001), .float32(0.004)])
        weights = .tiled4(groupSize: groupSize, tiles: tiles, parameters: parameters, permutation: nil)
        warpgroupOrder = try Self.warpgroupOrder(backend: backend, inFeatures: k, permutation: nil)
        bias = nil
    }

    private static func warpgroupOrder(backend: CUDABackend, inFeatures k: Int, permutation: [Int32]?) throws -> DeviceBuffer? {
        guard backend.warpgroupMMA else { return nil }
        return try backend.device.upload(CUDAGPTQLayout.warpgroupInputOrder(inFeatures: k, permutation: permutation))
    }

    /// A float16 layer over weights already on the device ([outFeatures, inFeatures]; e.g. a
    /// tied embedding), with its own bias (GPT-J's LM head).
    init(backend: CUDABackend, halfWeight: DeviceBuffer, inFeatures: Int, outFeatures: Int, bias: Tensor? = nil) throws {
        self.backend = backend
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        weights = .dense(halfWeight)
        warpgroupOrder = nil
        self.bias = try bias.map { try backend.device.upload($0.converted(to: .f16)) }
    }

    /// Whether `forward` can write float32 outputs (float16 weights; GPTQ layers write float16).
    package var writesFloat32: Bool {
        if case .dense = weights { return true }
        return false
    }

    /// A float16 layer with pseudo-random weights uniform in ±`scale` (benchmarks).
    public init(backend: CUDABackend, randomHalfInFeatures k: Int, outFeatures n: Int, scale: Float, seed: UInt32) throws {
        self.backend = backend
        inFeatures = k
        outFeatures = n
        let w = try backend.device.allocate(bytes: k * n * 2)
        try backend.fillRandomHalves(w, seed: seed, lo: -scale, hi: scale)
        weights = .dense(w)
        warpgroupOrder = nil
        bias = nil
    }

    /// Bytes a GEMV reads from the weights (packed values, zeros, scales, or float16 W).
    public var weightBytes: Int {
        switch weights {
        case let .dense(w): return w.byteCount
        case let .gptq(_, _, _, _, qweight, qzeros, scales, _, _): return qweight.byteCount + qzeros.byteCount + scales.byteCount
        case let .tiled4(_, tiles, parameters, _): return tiles.byteCount + parameters.byteCount
        }
    }

    public var kernelDescription: String {
        switch weights {
        case .dense: return "fp16"
        case let .gptq(bits, groupSize, _, kernel, _, _, _, _, permutation):
            let k: String
            switch kernel {
            case .fast4: k = "fast4"
            case .generic: k = "generic"
            case .tiled4: k = "tiled"
            }
            return "\(bits)-bit g\(groupSize) \(k)\(permutation != nil ? " act-order" : "")"
        case let .tiled4(groupSize, _, _, permutation):
            return "4-bit g\(groupSize) tiled\(permutation != nil ? " act-order" : "")"
        }
    }

    /// How a product of some number of rows runs.
    package enum Path {
        /// The warpgroup kernel (tiled layers, compute capability 9.0).
        case warpgroup
        /// The tiled tensor-core kernel, 32 rows a launch.
        case tiled
        /// The GEMV kernels, 8 rows a launch.
        case gemv
        /// cuBLAS on the float16 weight, or on the GPTQ weight dequantized to float16.
        case cuBLAS
    }

    func path(rows: Int) -> Path {
        if case .tiled4 = weights {
            if backend.warpgroupMMA, warpgroupOrder != nil, Self.warpgroupRows.contains(rows) { return .warpgroup }
            return rows <= Self.maxTiledKernelRows ? .tiled : .cuBLAS
        }
        return rows <= Self.maxGEMVRows ? .gemv : .cuBLAS
    }

    /// Whether a product of `rows` rows multiplies weights rounded to float16: float layers,
    /// and GPTQ layers where they dequantize (scale · (q − zero) rounded once: the warpgroup
    /// kernel, the 4-bit GEMV's half2 scaling, dequantize + cuBLAS). The tiled kernel and the
    /// any-width GEMV multiply exact levels and scale in float32. A reference of the GPU's
    /// float16 arithmetic (gpu-check) rounds the dequantized weights where this is true.
    package func multipliesFloat16Weights(rows: Int) -> Bool {
        switch (weights, path(rows: rows)) {
        case (.dense, _), (_, .warpgroup), (_, .cuBLAS): return true
        case let (.gptq(_, _, _, kernel, _, _, _, _, _), .gemv): return kernel == .fast4
        default: return false
        }
    }

    /// y[rows, outFeatures] (row stride ldy) from x[rows, inFeatures] (row stride ldx),
    /// float16, queued on the device's stream. `f32Output` writes float32 y (dense only).
    public func forward(x: CUdeviceptr, ldx: Int, rows: Int, y: CUdeviceptr, ldy: Int, scratch: CUDAScratch, f32Output: Bool = false) throws {
        precondition(rows > 0)
        if case .tiled4 = weights {
            precondition(!f32Output, "GPTQ layers write float16")
            switch path(rows: rows) {
            case .warpgroup:
                try warpgroupProduct(x: x, ldx: ldx, rows: rows, y: y, ldy: ldy, scratch: scratch)
            case .tiled:
                for start in stride(from: 0, to: rows, by: 32) {
                    try tiledProduct(x: x + CUdeviceptr(start * ldx * 2), ldx: ldx, rows: min(32, rows - start),
                                     y: y + CUdeviceptr(start * ldy * 2), ldy: ldy, scratch: scratch)
                }
            default:
                try dequantizedProduct(x: x, ldx: ldx, rows: rows, y: y, ldy: ldy, scratch: scratch)
            }
            return
        }
        if path(rows: rows) == .gemv {
            let yElement = f32Output ? 4 : 2
            for start in stride(from: 0, to: rows, by: 8) {
                try gemv(x: x + CUdeviceptr(start * ldx * 2), ldx: ldx, rows: min(8, rows - start),
                         y: y + CUdeviceptr(start * ldy * yElement), ldy: ldy, scratch: scratch, f32Output: f32Output)
            }
            return
        }
        let (K, N) = (inFeatures, outFeatures)
        switch weights {
        case let .dense(w):
            try cuBLASProduct(y: y, ldy: ldy, rows: rows, scratch: scratch, f32Output: f32Output) { out, ldOut, type in
                try backend.cublas.linear(x: x, ldx: ldx, weight: w.address, y: out, ldy: ldOut, yType: type, rows: rows, inFeatures: K, outFeatures: N)
            }
        case let .gptq(bits, groupSize, zeroOffset, kernel, qweight, qzeros, scales, gIdx, permutation):
            precondition(!f32Output, "GPTQ layers write float16")
            // Larger batches are arithmetic-bound: dequantize once into float16 [K, N] (inputs in
            // their original order) and let cuBLAS run the product on the tensor cores.
            let w = try scratch.buffer("dequantized", bytes: K * N * 2)
            let sortedGroups = kernel == .fast4
            try backend.launch("dequantize_gptq", in: LinearKernels.generic, grid: ((N + 127) / 128, (K + 7) / 8, 1), block: (128, 1, 1),
                               [.buffer(qweight), .buffer(qzeros), .buffer(scales), .pointer(sortedGroups ? 0 : gIdx.address),
                                .pointer(permutation?.address ?? 0), .buffer(w), .int(K), .int(N), .int(bits), .int(groupSize), .int(zeroOffset)])
            try cuBLASProduct(y: y, ldy: ldy, rows: rows, scratch: scratch) { out, ldOut, type in
                try backend.cublas.linearKN(x: x, ldx: ldx, weight: w.address, y: out, ldy: ldOut, yType: type, rows: rows, inFeatures: K, outFeatures: N)
            }
        case .tiled4:
            preconditionFailure("tiled layers take tiledProduct or dequantizedProduct")
        }
    }

    /// A cuBLAS product `multiply(out, ldOut, type)` into y, with the bias: the product in
    /// float32 first, then bias added and rounded to float16 once, as the kernels add it. A
    /// bias added to the float16 product rounds twice (an add after cuBLAS, or cuBLAS's own
    /// beta·C, which measured the same): that moved the qwen2 fixture's 100-token logits by
    /// 1.6e-3 from the same float16 arithmetic on the CPU.
    private func cuBLASProduct(y: CUdeviceptr, ldy: Int, rows: Int, scratch: CUDAScratch, f32Output: Bool = false,
                               _ multiply: (_ out: CUdeviceptr, _ ldOut: Int, _ type: CUBLAS.ElementType) throws -> Void) throws {
        guard let bias else { return try multiply(y, ldy, f32Output ? .f32 : .f16) }
        if f32Output {
            try multiply(y, ldy, .f32)
            return try backend.launch("add_bias_to_float", in: LinearKernels.common, grid: ((outFeatures + 255) / 256, rows, 1), block: (256, 1, 1),
                                      [.buffer(bias), .pointer(y), .int(ldy), .int(outFeatures)])
        }
        let product = try scratch.buffer("float32 product", bytes: rows * outFeatures * 4)
        try multiply(product.address, outFeatures, .f32)
        try backend.launch("add_bias_to_half", in: LinearKernels.common, grid: ((outFeatures + 255) / 256, rows, 1), block: (256, 1, 1),
                           [.buffer(product), .buffer(bias), .pointer(y), .int(ldy), .int(outFeatures)])
    }

    /// x[:, perm] into scratch for act-order layers (rows of K), else x itself.
    private func gatheredInput(x: CUdeviceptr, ldx: Int, rows: Int, permutation: DeviceBuffer?, scratch: CUDAScratch) throws -> (CUdeviceptr, Int) {
        guard let permutation else { return (x, ldx) }
        let K = inFeatures
        let gathered = try scratch.buffer("gather", bytes: rows * K * 2)
        try backend.launch("gather_columns", in: LinearKernels.common, grid: (min((K + 255) / 256, 1024), rows, 1), block: (256, 1, 1),
                           [.pointer(x), .int(ldx), .buffer(permutation), .buffer(gathered), .int(K)])
        return (gathered.address, K)
    }

    /// The tiled tensor-core kernel, one launch for up to 32 rows; `launch` overrides
    /// `CUDAGPTQLayout.tiledLaunch` (benchmarks).
    package func tiledProduct(x: CUdeviceptr, ldx: Int, rows: Int, y: CUdeviceptr, ldy: Int, scratch: CUDAScratch,
                      launch override: CUDAGPTQLayout.TiledLaunch? = nil) throws {
        guard case let .tiled4(groupSize, tiles, parameters, permutation) = weights else { preconditionFailure("not a tiled layer") }
        let (K, N) = (inFeatures, outFeatures)
        let (input, inputStride) = try gatheredInput(x: x, ldx: ldx, rows: rows, permutation: permutation, scratch: scratch)
        let launch = override ?? CUDAGPTQLayout.tiledLaunch(inFeatures: K, outFeatures: N, rows: rows, groupSize: groupSize,
                                                                        multiprocessors: backend.device.multiprocessorCount)
        precondition(N % (16 * launch.outputTiles) == 0 && launch.rowTiles * 8 >= rows)
        // With dependent launch its blocks start and set up while the kernel ahead of it (which
        // may write x or the gathered input) finishes.
        try backend.launch(launch.kernelName, in: LinearKernels.tiled, grid: (N / (16 * launch.outputTiles), 1, 1), block: (32, launch.warps, 1),
                           sharedBytes: CUDAGPTQLayout.tiledSharedBytes(outputTiles: launch.outputTiles, rowTiles: launch.rowTiles, warps: launch.warps),
                           overlappingPrevious: backend.dependentLaunch,
                           [.buffer(tiles), .buffer(parameters), .pointer(input), .int(inputStride), .int(rows),
                            .pointer(y), .int(ldy), .pointer(bias?.address ?? 0), .int(K), .int(groupSize)])
    }

    /// The warpgroup kernel (Hopper): x gathered in the order it reads (act order included) and
    /// laid out as its stages take it, then one launch over all rows, and the partial sums added
    /// where the chunks are split.
    private func warpgroupProduct(x: CUdeviceptr, ldx: Int, rows: Int, y: CUdeviceptr, ldy: Int, scratch: CUDAScratch) throws {
        guard case let .tiled4(groupSize, tiles, parameters, _) = weights, let warpgroupOrder else { preconditionFailure("not a tiled layer") }
        let (K, N) = (inFeatures, outFeatures)
        let launch = CUDAGPTQLayout.warpgroupLaunch(inFeatures: K, outFeatures: N, rows: rows, multiprocessors: backend.device.multiprocessorCount)
        let rowTiles = (rows + launch.rowTile - 1) / launch.rowTile
        let staged = try scratch.buffer("warpgroup-staged x", bytes: rowTiles * launch.rowTile * K * 2)
        try backend.launch("stage_x_wgmma", in: LinearKernels.warpgroup, grid: (K / 64, rowTiles, 1), block: (256, 1, 1),
                           overlappingPrevious: backend.dependentLaunch,
                           [.pointer(x), .int(ldx), .int(rows), .buffer(warpgroupOrder), .buffer(staged), .int(K), .int(launch.rowTile)])
        let partial = launch.splits > 1 ? try scratch.buffer("warpgroup partial sums", bytes: launch.splits * rows * N * 4).address : 0
        let kernel = try backend.kernel(launch.kernelName, in: LinearKernels.warpgroup)
        if launch.sharedBytes > 48 * 1024 { try kernel.setMaxDynamicSharedMemory(launch.sharedBytes) }
        let strips = (N / 16 + 4 * launch.warpgroups - 1) / (4 * launch.warpgroups)
        try kernel.launch(grid: (strips, launch.splits, rowTiles), block: (128 * launch.warpgroups, 1, 1),
                          sharedBytes: launch.sharedBytes, stream: backend.stream, overlappingPrevious: backend.dependentLaunch,
                          [.buffer(tiles), .buffer(parameters), .buffer(staged), .int(rows), .pointer(y), .int(ldy),
                           .pointer(bias?.address ?? 0), .pointer(partial), .int(K), .int(N), .int(groupSize)])
        if launch.splits > 1 {
            try backend.launch("wgmma_q4_finish", in: LinearKernels.warpgroup, grid: ((rows * N / 4 + 255) / 256, 1, 1), block: (256, 1, 1),
                               overlappingPrevious: backend.dependentLaunch,
                               [.pointer(partial), .int(launch.splits), .int(rows), .int(N), .pointer(bias?.address ?? 0), .pointer(y), .int(ldy)])
        }
    }

    /// Tiled weights dequantized to float16 W [N, K] (in the tiled k order, so act-order
    /// layers gather x first), then cuBLAS: larger batches are arithmetic-bound.
    package func dequantizedProduct(x: CUdeviceptr, ldx: Int, rows: Int, y: CUdeviceptr, ldy: Int, scratch: CUDAScratch) throws {
        guard case let .tiled4(groupSize, tiles, parameters, permutation) = weights else { preconditionFailure("not a tiled layer") }
        let (K, N) = (inFeatures, outFeatures)
        let w = try scratch.buffer("dequantized", bytes: K * N * 2)
        try backend.launch("dequantize_q4_tiled", in: LinearKernels.tiled, grid: ((K / 64 + 7) / 8, N / 16, 1), block: (32, 8, 1),
                           [.buffer(tiles), .buffer(parameters), .buffer(w), .int(K), .int(groupSize)])
        let (input, inputStride) = try gatheredInput(x: x, ldx: ldx, rows: rows, permutation: permutation, scratch: scratch)
        try cuBLASProduct(y: y, ldy: ldy, rows: rows, scratch: scratch) { out, ldOut, type in
            try backend.cublas.linear(x: input, ldx: inputStride, weight: w.address, y: out, ldy: ldOut, yType: type, rows: rows, inFeatures: K, outFeatures: N)
        }
    }

    /// One GEMV launch for up to 8 rows.
    private func gemv(x: CUdeviceptr, ldx: Int, rows: Int, y: CUdeviceptr, ldy: Int, scratch: CUDAScratch, f32Output: Bool) throws {
        let (K, N) = (inFeatures, outFeatures)
        let biasArg = KernelArg.pointer(bias?.address ?? 0)
        switch weights {
        case let .dense(w):
            try backend.launch(f32Output ? "gemv_f16_f32out_b\(rows)" : "gemv_f16_b\(rows)", in: LinearKernels.common,
                               grid: ((N + 7) / 8, 1, 1), block: (256, 1, 1),
                               [.buffer(w), .pointer(x), .int(ldx), .pointer(y), .int(ldy), biasArg, .int(K), .int(N)])
        case let .gptq(bits, groupSize, zeroOffset, kernel, qweight, qzeros, scales, gIdx, permutation):
            precondition(!f32Output, "GPTQ layers write float16")
            switch kernel {
            case .fast4:
                let (input, inputStride) = try gatheredInput(x: x, ldx: ldx, rows: rows, permutation: permutation, scratch: scratch)
                let (tx, r) = CUDAGPTQLayout.fastLaunch(inFeatures: K, outFeatures: N, groupSize: groupSize,
                                                        multiprocessors: backend.device.multiprocessorCount)
                try backend.launch("gemv_q4_b\(rows)_r\(r)_t\(tx)", in: LinearKernels.fastGEMV(rows: rows, chunk: r, width: tx),
                                   grid: ((N + 4 * tx - 1) / (4 * tx), 1, 1), block: (tx, 256 / tx, 1),
                                   [.buffer(qweight), .buffer(qzeros), .buffer(scales), .pointer(input), .int(inputStride),
                                    .pointer(y), .int(ldy), biasArg, .int(K), .int(N), .int(groupSize), .int(zeroOffset)])
            case .generic:
                try backend.launch("gemv_qn_b\(rows)", in: LinearKernels.generic, grid: ((N + 31) / 32, 1, 1), block: (32, 8, 1),
                                   [.buffer(qweight), .buffer(qzeros), .buffer(scales), .buffer(gIdx), .pointer(x), .int(ldx),
                                    .pointer(y), .int(ldy), biasArg, .int(K), .int(N), .int(bits), .int(zeroOffset)])
            case .tiled4:
                preconditionFailure("tiled layers take tiledProduct")
            }
        case .tiled4:
            preconditionFailure("tiled layers take tiledProduct")
        }
    }
}
