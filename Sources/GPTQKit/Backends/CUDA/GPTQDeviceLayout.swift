/// Where named tensors come from: one safetensors file or a (sharded) checkpoint folder.
public protocol TensorSource {
    var sourcePath: String { get }
    func contains(_ name: String) -> Bool
    func tensor(_ name: String) throws -> Tensor
}
extension SafetensorsFile: TensorSource { public var sourcePath: String { path } }
extension Checkpoint: TensorSource { public var sourcePath: String { folder } }

extension PackedLinear {
    /// Reads `prefix`.qweight/qzeros/scales/g_idx[/bias] from a checkpoint (a missing g_idx
    /// means groups of `groupSize` inputs in order; -1: one group).
    public static func load(from source: some TensorSource, prefix: String, bits: Int, groupSize: Int,
                            format: CheckpointFormat) throws -> PackedLinear {
        let qweight = try source.tensor(prefix + ".qweight")
        guard qweight.rank == 2 else {
            throw GPTQError.badTensor(name: prefix + ".qweight", path: source.sourcePath, reason: "shape \(qweight.shape), expected 2-D")
        }
        let (inFeatures, outFeatures) = (qweight.shape[0] * 32 / bits, qweight.shape[1])
        let group = groupSize <= 0 ? inFeatures : groupSize
        let gIdx = source.contains(prefix + ".g_idx") ? try source.tensor(prefix + ".g_idx")
            : Tensor(bitPattern: (0..<inFeatures).map { Int32($0 / group) }, dtype: .i32, shape: [inFeatures])
        return try PackedLinear(name: prefix, path: source.sourcePath, bits: bits, format: format, inFeatures: inFeatures,
                                outFeatures: outFeatures, qweight: qweight, qzeros: try source.tensor(prefix + ".qzeros"),
                                scales: try source.tensor(prefix + ".scales"), gIdx: gIdx,
                                bias: source.contains(prefix + ".bias") ? try source.tensor(prefix + ".bias") : nil)
    }
}

/// How a GPTQ layer is laid out for the CUDA kernels.
public struct CUDAGPTQLayout: Sendable {
    public enum Kernel: Sendable, Equatable {
        /// The 4-bit fast GEMV (groups of a multiple of 32 inputs, read in chunks of 4, 8 or
        /// 16 packed rows: see `fastLaunch`).
        case fast4
        /// The any-width GEMV reading g_idx.
        case generic
    }

    public let kernel: Kernel
    /// qweight as the kernel reads it: for act-order 4-bit layers, rows sorted by group.
    public let qweight: [Int32]
    /// For the fast kernel: input k' of the sorted layout is original input perm[k'] (nil: identity).
    public let permutation: [Int32]?
    /// For the generic kernel: the group of each input.
    public let gIdx: [Int32]

    /// Inputs per group when groups are equal runs of inputs (in order, or in act order).
    public let groupSize: Int

    /// The fast layout where it applies (4 bits, equal groups of a multiple of 32 inputs,
    /// outputs a multiple of 8), else the generic one.
    public init(_ layer: PackedLinear) {
        let (K, N) = (layer.inFeatures, layer.outFeatures)
        let gIdx = layer.gIdx.ints()
        let gs = K / layer.groups
        let equalGroups = K % layer.groups == 0
        guard layer.bits == 4, equalGroups, gs % 32 == 0, N % 8 == 0 else {
            self.init(kernel: .generic, qweight: Self.words(layer.qweight), permutation: nil, gIdx: gIdx, groupSize: gs)
            return
        }
        if gIdx.enumerated().allSatisfy({ Int($0.element) == $0.offset / gs }) {
            self.init(kernel: .fast4, qweight: Self.words(layer.qweight), permutation: nil, gIdx: gIdx, groupSize: gs)
            return
        }
        // Act order: sort inputs by group (stable), which must give exactly gs inputs a group.
        let perm = (0..<K).sorted { (gIdx[$0], $0) < (gIdx[$1], $1) }
        guard perm.enumerated().allSatisfy({ Int(gIdx[$0.element]) == $0.offset / gs }) else {
            self.init(kernel: .generic, qweight: Self.words(layer.qweight), permutation: nil, gIdx: gIdx, groupSize: gs)
            return
        }
        let q = layer.unpackedWeights()
        var sorted = [Int32](repeating: 0, count: layer.qweight.count)
        sorted.withUnsafeMutableBufferPointer { out in
            for (kNew, kOld) in perm.enumerated() {
                let (row, shift) = (kNew >> 3, UInt32((kNew & 7) * 4))
                for n in 0..<N {
                    out[row * N + n] = Int32(bitPattern: UInt32(bitPattern: out[row * N + n]) | (UInt32(q[kOld * N + n]) << shift))
                }
            }
        }
        self.init(kernel: .fast4, qweight: sorted, permutation: perm.map(Int32.init), gIdx: gIdx, groupSize: gs)
    }

    static func words(_ t: Tensor) -> [Int32] { Array(UnsafeBufferPointer(start: t.pointer(as: Int32.self), count: t.count)) }

    /// Block width (TX threads of 4 columns) and chunk (R packed rows) of the fast GEMV for
    /// a [K → N] layer: the widest block that still gives two blocks per multiprocessor, and
    /// the longest chunk that still gives every thread of a column at least one chunk.
    public static func fastLaunch(inFeatures k: Int, outFeatures n: Int, groupSize: Int, multiprocessors: Int) -> (tx: Int, r: Int) {
        let chunks = [16, 8, 4].filter { (groupSize / 8) % $0 == 0 }
        let enoughBlocks: (Int) -> Bool = { tx in (n + 4 * tx - 1) / (4 * tx) >= 2 * multiprocessors }
        let tx: Int = enoughBlocks(8) ? 8 : enoughBlocks(4) ? 4 : 2
        let everyThreadBusy: (Int) -> Bool = { r in k / (8 * r) >= 256 / tx }
        let r: Int = chunks.first(where: everyThreadBusy) ?? chunks[chunks.count - 1]
        return (tx, r)
    }

    init(kernel: Kernel, qweight: [Int32], permutation: [Int32]?, gIdx: [Int32], groupSize: Int) {
        self.kernel = kernel
        self.groupSize = groupSize
        self.qweight = qweight
        self.permutation = permutation
        self.gIdx = gIdx
    }
}
