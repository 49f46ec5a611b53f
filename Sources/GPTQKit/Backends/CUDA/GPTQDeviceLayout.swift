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
        /// The 4-bit tensor-core kernel (mma.sync) on the tiled layout: inputs a multiple of
        /// 64, groups a multiple of 64 inputs, outputs a multiple of 16 (see `tiledWords`).
        case tiled4
        /// The 4-bit GEMV on AutoGPTQ's packing (groups of a multiple of 32 inputs, read in
        /// chunks of 4, 8 or 16 packed rows: see `fastLaunch`), for 4-bit layers the tiled
        /// layout does not fit.
        case fast4
        /// The any-width GEMV reading g_idx.
        case generic
    }

    public let kernel: Kernel
    /// The packed weights as the kernel reads them: the tiled words (tiled4); qweight with
    /// act-order rows sorted by group (fast4); the checkpoint's qweight (generic).
    public let qweight: [Int32]
    /// tiled4: float16 bits of each (tile, group, lane group g) {scale[g], scale[g+8],
    /// 1024+zero[g], 1024+zero[g+8]} (see `tileGroupParameters`); empty otherwise.
    public let groupParameters: [UInt16]
    /// For the 4-bit kernels: input k' of the sorted layout is original input perm[k'] (nil: identity).
    public let permutation: [Int32]?
    /// For the generic kernel: the group of each input.
    public let gIdx: [Int32]

    /// Inputs per group when groups are runs of inputs (in order, or in act order; the last
    /// may be shorter for the tiled kernel).
    public let groupSize: Int

    /// The tiled layout where it applies (the last group may be shorter: SmolLM2's 576 inputs
    /// in groups of 128), else the 4-bit GEMV's (4 bits, equal groups of a multiple of 32
    /// inputs, outputs a multiple of 8), else the generic one.
    public init(_ layer: PackedLinear) {
        let (K, N) = (layer.inFeatures, layer.outFeatures)
        let gIdx = layer.gIdx.ints()
        // Groups of gs inputs (in order or in act order), the last possibly shorter.
        let gs = gIdx.reduce(0) { $0 + ($1 == 0 ? 1 : 0) }
        let runs = gs > 0 && layer.groups == (K + gs - 1) / gs
        guard layer.bits == 4, runs, gs % 32 == 0, N % 8 == 0 else {
            self.init(kernel: .generic, qweight: Self.words(layer.qweight), permutation: nil, gIdx: gIdx, groupSize: gs)
            return
        }
        var perm: [Int32]? = nil
        if !gIdx.enumerated().allSatisfy({ Int($0.element) == $0.offset / gs }) {
            // Act order: sort inputs by group (stable), which must give exactly gs inputs a group.
            let sorted = (0..<K).sorted { (gIdx[$0], $0) < (gIdx[$1], $1) }
            guard sorted.enumerated().allSatisfy({ Int(gIdx[$0.element]) == $0.offset / gs }) else {
                self.init(kernel: .generic, qweight: Self.words(layer.qweight), permutation: nil, gIdx: gIdx, groupSize: gs)
                return
            }
            perm = sorted.map(Int32.init)
        }
        if K % 64 == 0, gs % 64 == 0, N % 16 == 0 {
            let scales = layer.scales.converted(to: .f16)
            let scaleBits = Array(UnsafeBufferPointer(start: scales.pointer(as: UInt16.self), count: scales.count))
            self.init(kernel: .tiled4, qweight: Self.tiledWords(qweight: layer.qweight, inFeatures: K, outFeatures: N, permutation: perm),
                      groupParameters: Self.tileGroupParameters(scales: scaleBits, zeros: layer.unpackedZeros(), groups: layer.groups, outFeatures: N),
                      permutation: perm, gIdx: gIdx, groupSize: gs)
            return
        }
        guard K % gs == 0 else {
            self.init(kernel: .generic, qweight: Self.words(layer.qweight), permutation: nil, gIdx: gIdx, groupSize: gs)
            return
        }
        guard let perm else {
            self.init(kernel: .fast4, qweight: Self.words(layer.qweight), permutation: nil, gIdx: gIdx, groupSize: gs)
            return
        }
        let q = layer.unpackedWeights()
        var sorted = [Int32](repeating: 0, count: layer.qweight.count)
        sorted.withUnsafeMutableBufferPointer { out in
            for (kNew, kOld) in perm.enumerated() {
                let (row, shift) = (kNew >> 3, UInt32((kNew & 7) * 4))
                for n in 0..<N {
                    out[row * N + n] = Int32(bitPattern: UInt32(bitPattern: out[row * N + n]) | (UInt32(q[Int(kOld) * N + n]) << shift))
                }
            }
        }
        self.init(kernel: .fast4, qweight: sorted, permutation: perm, gIdx: gIdx, groupSize: gs)
    }

    /// The tiled layout of the tensor-core kernel from a 4-bit qweight [K/8, N] (AutoGPTQ's
    /// packing: input k of output n in bits 4(k % 8) of word [k / 8, n]; the kernel's input k'
    /// is the checkpoint's input permutation[k']). For output tile T (outputs 16T…16T+15) and
    /// input chunk C (inputs 64C…64C+63), lane L = 4g + t of 32 holds words j = 0…3 at
    /// ((T·chunks + C)·32 + L)·4 + j; word j covers inputs k = 64C + 16t + 4j + i (i = 0…3) of
    /// outputs 16T + g and 16T + g + 8: nibble r (0…3) and r + 4 are inputs i = 2(r/2) and
    /// 2(r/2) + 1 of output g + 8(r%2), the low and high half of the kernel's A register r of
    /// the m16n8k16 product (rows g, g+8; columns 2t, 2t+1, 2t+8, 2t+9 standing for inputs
    /// 16t+4j+{0, 1, 2, 3}). Tiles are packed in parallel (a 7B model has ~200 such layers).
    public static func tiledWords(qweight: Tensor, inFeatures k: Int, outFeatures n: Int, permutation: [Int32]?) -> [Int32] {
        precondition(k % 64 == 0 && n % 16 == 0 && qweight.count == k / 8 * n)
        let chunks = k / 64
        let row = permutation.map { $0.map(Int.init) } ?? Array(0..<k)
        let words = qweight.pointer(as: UInt32.self)
        var out = [Int32](repeating: 0, count: k * n / 8)
        row.withUnsafeBufferPointer { row in
            out.withUnsafeMutableBufferPointer { out in
                let (row, out) = (row.baseAddress!, out.baseAddress!)
                func level(_ input: Int, _ column: Int) -> UInt32 {
                    let kk = row[input]
                    return (words[(kk >> 3) * n + column] >> UInt32((kk & 7) * 4)) & 0xF
                }
                CPUThreads.parallelRanges(n / 16) { t0, t1 in
                    for tile in t0..<t1 {
                        for c in 0..<chunks {
                            for lane in 0..<32 {
                                let (g, t) = (lane >> 2, lane & 3)
                                for j in 0..<4 {
                                    var word: UInt32 = 0
                                    for r in 0..<4 {
                                        let column = tile * 16 + g + 8 * (r & 1)
                                        let input = c * 64 + 16 * t + 4 * j + 2 * (r >> 1)
                                        word |= level(input, column) << (4 * r) | level(input + 1, column) << (4 * r + 16)
                                    }
                                    out[((tile * chunks + c) * 32 + lane) * 4 + j] = Int32(bitPattern: word)
                                }
                            }
                        }
                    }
                }
            }
        }
        return out
    }

    /// The tiled kernel's group parameters from float16 scales bits [G, N] and zeros
    /// [G, N] (as dequantization uses them): for (tile T, group, g = 0…7), at
    /// ((T·G + group)·8 + g)·4, scale[16T+g], scale[16T+g+8], and 1024 + zero for both as
    /// float16 (exact: the spacing of float16 in [1024, 2048) is 1), so that the magic
    /// number's 1024 + q minus it is q − zero.
    public static func tileGroupParameters(scales: [UInt16], zeros: [Int32], groups: Int, outFeatures n: Int) -> [UInt16] {
        precondition(n % 16 == 0 && scales.count == groups * n && zeros.count == groups * n)
        var out = [UInt16](repeating: 0, count: groups * n * 2)
        for tile in 0..<(n / 16) {
            for group in 0..<groups {
                for g in 0..<8 {
                    let (i, o) = (group * n + tile * 16 + g, ((tile * groups + group) * 8 + g) * 4)
                    out[o] = scales[i]
                    out[o + 1] = scales[i + 8]
                    out[o + 2] = 0x6400 + UInt16(zeros[i])
                    out[o + 3] = 0x6400 + UInt16(zeros[i + 8])
                }
            }
        }
        return out
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

    /// A launch of the tiled kernel: output tiles a warp (16 outputs each), row tiles (8 rows
    /// each), warps a block (they split the chunks of 64 inputs), stages of `stageChunks`
    /// chunks a warp keeps in registers, whether x is loaded with each stage's weights, the
    /// resident blocks a multiprocessor the kernel is compiled for (0: the default bounds), and
    /// whether each pair of chunks shares one load of group parameters and one scaling (groups
    /// of an even number of chunks: 128 inputs or more, in steps of 128).
    public struct TiledLaunch: Equatable, Sendable, CustomStringConvertible {
        public var outputTiles: Int, rowTiles: Int, warps: Int, stages: Int, stageChunks: Int
        public var xWithWeights = false
        public var residentBlocks = 0
        public var pairedGroups = false

        public init(outputTiles: Int, rowTiles: Int, warps: Int, stages: Int, stageChunks: Int, xWithWeights: Bool = false, residentBlocks: Int = 0,
                    pairedGroups: Bool = false) {
            (self.outputTiles, self.rowTiles, self.warps, self.stages, self.stageChunks) = (outputTiles, rowTiles, warps, stages, stageChunks)
            (self.xWithWeights, self.residentBlocks, self.pairedGroups) = (xWithWeights, residentBlocks, pairedGroups)
        }

        /// The `__global__` function in `LinearKernels.tiled`.
        public var kernelName: String {
            "mma_q4_n\(outputTiles)_b\(rowTiles)_s\(stages)u\(stageChunks)" + (xWithWeights ? "x" : "")
                + (residentBlocks > 0 ? "_w\(warps)m\(residentBlocks)" : "") + (pairedGroups ? "_p" : "")
        }

        /// NTxW sSuU, x where x comes with the weights, mM for M resident blocks, p for paired groups.
        public var description: String {
            "\(outputTiles)x\(warps)s\(stages)u\(stageChunks)" + (xWithWeights ? "x" : "") + (residentBlocks > 0 ? "m\(residentBlocks)" : "")
                + (pairedGroups ? "p" : "")
        }
    }

    /// Whether the tiled kernel can pair chunks for groups of `groupSize` inputs: each group an
    /// even number of chunks of 64 (a stage starts at an even chunk, so a pair never straddles
    /// two groups; a shorter last group may end on an odd chunk, which the kernel skips).
    public static func pairsChunks(groupSize: Int) -> Bool { groupSize % 128 == 0 }

    /// Launch of the tiled kernel for a [K → N] layer with groups of `groupSize` inputs and
    /// `rows` rows (at most 32), as `gptq gpu-bench --tiled-shapes` measured it on an H200
    /// (BENCHMARKS.md): row tiles of 8 (1, 2 or 4 a launch), one output tile a warp. Up to 8
    /// rows x is loaded with the weights, and:
    /// - where 16 or 8 warps a tile keep the grid within 32 warps a multiprocessor: that many
    ///   warps, stages of 2 chunks;
    /// - else, where 6 blocks a multiprocessor hold the grid: 4 warps and stages of 4 compiled
    ///   for 6 blocks;
    /// - else stages of 2, and 4 or 8 warps, whichever fills the last wave better.
    /// 9–16 rows: 8 warps and two stages of 2 chunks where two such blocks a multiprocessor hold
    /// the grid, else 4 warps and stages of 4. 17–32 rows: 8 warps, stages of 4.
    public static func tiledLaunch(inFeatures k: Int, outFeatures n: Int, rows: Int, groupSize: Int, multiprocessors: Int) -> TiledLaunch {
        precondition(rows >= 1 && rows <= 32 && k % 64 == 0 && n % 16 == 0)
        let chunks = k / 64, tiles = n / 16
        var launch: TiledLaunch
        switch rows {
        case ...8:
            let fitting = [16, 8].first { tiles * $0 <= 32 * multiprocessors }
            var warps = fitting ?? 4
            while warps > 4, chunks < 2 * warps { warps /= 2 }
            if warps > 4 {
                launch = TiledLaunch(outputTiles: 1, rowTiles: 1, warps: warps, stages: 1, stageChunks: 2, xWithWeights: true)
            } else if tiles <= 6 * multiprocessors {
                launch = TiledLaunch(outputTiles: 1, rowTiles: 1, warps: 4, stages: 1, stageChunks: 4, xWithWeights: true, residentBlocks: 6)
            } else {
                // More than one wave: 4 or 8 warps (8 or 4 blocks a multiprocessor at 64
                // registers), whichever leaves the last wave fuller.
                let filled = { (blocks: Int) in Double(tiles) / Double((tiles + blocks - 1) / blocks * blocks) }
                let warps = filled(4 * multiprocessors) > filled(8 * multiprocessors) ? 8 : 4
                launch = TiledLaunch(outputTiles: 1, rowTiles: 1, warps: warps, stages: 1, stageChunks: 2, xWithWeights: true)
            }
        case ...16:
            launch = tiles <= 2 * multiprocessors
                ? TiledLaunch(outputTiles: 1, rowTiles: 2, warps: 8, stages: 2, stageChunks: 2)
                : TiledLaunch(outputTiles: 1, rowTiles: 2, warps: 4, stages: 1, stageChunks: 4)
        default:
            launch = TiledLaunch(outputTiles: 1, rowTiles: 4, warps: 8, stages: 1, stageChunks: 4)
        }
        while launch.residentBlocks == 0, launch.warps > 1, chunks < 2 * launch.warps { launch.warps /= 2 }
        launch.pairedGroups = pairsChunks(groupSize: groupSize)
        return launch
    }

    /// A launch of the warpgroup kernel (`LinearKernels.warpgroup`): rows a launch (wgmma's N),
    /// warpgroups a block (64 outputs each, sharing the staged x), stages of x in flight, chunks
    /// of weights in flight (in registers), the resident blocks a multiprocessor it is compiled
    /// for, and the blocks that split a layer's chunks (partial sums added by `wgmma_q4_finish`
    /// where more than one).
    public struct WarpgroupLaunch: Equatable, Sendable, CustomStringConvertible {
        public var rowTile: Int, warpgroups: Int, stages: Int, weightsInFlight: Int, residentBlocks: Int, splits: Int

        public init(rowTile: Int, warpgroups: Int, stages: Int, weightsInFlight: Int, residentBlocks: Int, splits: Int) {
            (self.rowTile, self.warpgroups, self.stages) = (rowTile, warpgroups, stages)
            (self.weightsInFlight, self.residentBlocks, self.splits) = (weightsInFlight, residentBlocks, splits)
        }

        public var kernelName: String { "wgmma_q4_r\(rowTile)_w\(warpgroups)_p\(stages)_d\(weightsInFlight)" }
        /// Each stage: x's rows of one chunk (128 bytes a row) and an 8-byte mbarrier.
        public var sharedBytes: Int { stages * (rowTile * 128 + 8) }
        public var description: String { "r\(rowTile)w\(warpgroups)p\(stages)d\(weightsInFlight)m\(residentBlocks)/\(splits)" }
    }

    /// The order in which the warpgroup kernel reads a tiled layer's inputs: position p of the x
    /// it stages is input `order[p]` of the layer's x (the act-order permutation included). In
    /// each chunk of 64, the k16 product j reads positions 16j … 16j + 15 as its k = 8h + 2t + b,
    /// which must be the input that the tiled layout's word j gives lane t's A registers there:
    /// 16t + 4j + 2h + b of the chunk. So x is B in shared memory as plain 16-byte pieces.
    public static func warpgroupInputOrder(inFeatures k: Int, permutation: [Int32]?) -> [Int32] {
        precondition(k % 64 == 0)
        return (0..<k).map { p in
            let q = p & 63, (j, h, t, b) = (q >> 4, (q >> 3) & 1, (q >> 1) & 3, q & 1)
            let input = p - q + 16 * t + 4 * j + 2 * h + b
            return permutation.map { $0[input] } ?? Int32(input)
        }
    }

    /// Launch of the warpgroup kernel for a [K → N] layer and `rows` rows: row tiles of 64 up to
    /// 64 rows (two blocks a multiprocessor, 8 stages, 2 chunks of weights in flight), else of 128
    /// (one block: its 64 accumulators a thread leave no room for a second; 5 stages, 4 chunks);
    /// two warpgroups a block; the chunks split so that the grid holds about as many blocks as
    /// fit at once, each split at least 8 chunks.
    public static func warpgroupLaunch(inFeatures k: Int, outFeatures n: Int, rows: Int, multiprocessors: Int) -> WarpgroupLaunch {
        precondition(rows >= 1 && k % 64 == 0 && n % 16 == 0)
        let small = rows <= 64, warpgroups = 2
        let (rowTile, resident) = small ? (64, 2) : (128, 1)
        let strips = (n / 16 + 4 * warpgroups - 1) / (4 * warpgroups), rowTiles = (rows + rowTile - 1) / rowTile
        let splits = max(1, min(k / 64 / 8, resident * multiprocessors / (strips * rowTiles)))
        return WarpgroupLaunch(rowTile: rowTile, warpgroups: warpgroups, stages: small ? 8 : 5, weightsInFlight: small ? 2 : 4,
                               residentBlocks: resident, splits: splits)
    }

    /// Shared memory of a tiled launch: each warp's float accumulators.
    public static func tiledSharedBytes(outputTiles: Int, rowTiles: Int, warps: Int) -> Int { warps * outputTiles * 16 * rowTiles * 8 * 4 }

    init(kernel: Kernel, qweight: [Int32], groupParameters: [UInt16] = [], permutation: [Int32]?, gIdx: [Int32], groupSize: Int) {
        self.kernel = kernel
        self.groupSize = groupSize
        self.qweight = qweight
        self.groupParameters = groupParameters
        self.permutation = permutation
        self.gIdx = gIdx
    }
}
