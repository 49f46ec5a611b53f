/// Where named tensors come from: one safetensors file or a (sharded) checkpoint folder.
public protocol TensorSource {
    var sourcePath: String { get }
    func contains(_ name: String) -> Bool
    func tensor(_ name: String) throws -> Tensor
}
extension SafetensorsFile: TensorSource { public var sourcePath: String { path } }
extension Checkpoint: TensorSource { public var sourcePath: String { folder } }

/// One GPTQ layer's tensors as AutoGPTQ stores them (host memory), with the checks
/// that name the tensor at fault.
public struct GPTQPackedLayer: Sendable {
    public let bits: Int
    /// Inputs per group (inFeatures for per-channel quantization).
    public let groupSize: Int
    public let inFeatures: Int
    public let outFeatures: Int
    /// [inFeatures·bits/32, outFeatures], a bit stream along the input dimension.
    public let qweight: [Int32]
    /// [groups, outFeatures·bits/32], a bit stream along the output dimension.
    public let qzeros: [Int32]
    /// [groups, outFeatures] float16 bits.
    public let scales: [UInt16]
    /// Group of each input; nil means k / groupSize.
    public let gIdx: [Int32]?
    /// float16 bits, [outFeatures].
    public let bias: [UInt16]?
    /// 1 for checkpoint format v1 (zeros stored minus one), 0 for v2.
    public let zeroOffset: Int

    public var groups: Int { scales.count / outFeatures }

    public init(bits: Int, groupSize: Int, inFeatures: Int, outFeatures: Int, qweight: [Int32], qzeros: [Int32],
                scales: [UInt16], gIdx: [Int32]?, bias: [UInt16]?, zeroOffset: Int, name: String = "layer") throws {
        guard [2, 3, 4, 8].contains(bits) else { throw GPTQError.unsupported("\(name): \(bits)-bit GPTQ (supported: 2, 3, 4, 8)") }
        guard (inFeatures * bits) % 32 == 0, (outFeatures * bits) % 32 == 0 else {
            throw GPTQError.badTensor(name: name + ".qweight", path: name, reason: "[\(outFeatures), \(inFeatures)] does not pack into int32 at \(bits) bits")
        }
        let groupSize = groupSize <= 0 ? inFeatures : groupSize
        let groups = (inFeatures + groupSize - 1) / groupSize
        func expect(_ what: String, _ count: Int, _ want: Int, _ shape: String) throws {
            guard count == want else { throw GPTQError.badTensor(name: "\(name).\(what)", path: name, reason: "holds \(count) values, expected \(shape)") }
        }
        try expect("qweight", qweight.count, inFeatures * bits / 32 * outFeatures, "[\(inFeatures * bits / 32), \(outFeatures)]")
        try expect("scales", scales.count, groups * outFeatures, "[\(groups), \(outFeatures)]")
        try expect("qzeros", qzeros.count, groups * outFeatures * bits / 32, "[\(groups), \(outFeatures * bits / 32)]")
        if let gIdx {
            try expect("g_idx", gIdx.count, inFeatures, "[\(inFeatures)]")
            if let bad = gIdx.first(where: { $0 < 0 || Int($0) >= groups }) {
                throw GPTQError.badTensor(name: name + ".g_idx", path: name, reason: "group \(bad) outside 0..<\(groups)")
            }
        }
        if let bias { try expect("bias", bias.count, outFeatures, "[\(outFeatures)]") }
        self.bits = bits
        self.groupSize = groupSize
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.qweight = qweight
        self.qzeros = qzeros
        self.scales = scales
        self.gIdx = gIdx
        self.bias = bias
        self.zeroOffset = zeroOffset
    }

    /// Reads `prefix`.qweight/qzeros/scales[/g_idx/bias] from a checkpoint.
    public init(checkpoint: some TensorSource, prefix: String, bits: Int, groupSize: Int, zeroOffset: Int) throws {
        let qweight = try checkpoint.tensor(prefix + ".qweight")
        let qzeros = try checkpoint.tensor(prefix + ".qzeros")
        let scales = try checkpoint.tensor(prefix + ".scales")
        for (t, n) in [(qweight, "qweight"), (qzeros, "qzeros")] where t.dtype != .i32 || t.rank != 2 {
            throw GPTQError.badTensor(name: "\(prefix).\(n)", path: checkpoint.sourcePath, reason: "\(t.dtype.rawValue) \(t.shape), expected a 2-D I32 tensor")
        }
        guard scales.rank == 2, scales.dtype.isFloatingPoint else {
            throw GPTQError.badTensor(name: prefix + ".scales", path: checkpoint.sourcePath, reason: "\(scales.dtype.rawValue) \(scales.shape), expected a 2-D float tensor")
        }
        let outFeatures = qweight.shape[1]
        let inFeatures = qweight.shape[0] * 32 / bits
        let gIdx = checkpoint.contains(prefix + ".g_idx") ? try checkpoint.tensor(prefix + ".g_idx").ints() : nil
        let bias = checkpoint.contains(prefix + ".bias") ? try checkpoint.tensor(prefix + ".bias").converted(to: .f16) : nil
        try self.init(bits: bits, groupSize: groupSize, inFeatures: inFeatures, outFeatures: outFeatures,
                      qweight: qweight.ints(), qzeros: qzeros.ints(),
                      scales: Self.halfBits(scales.converted(to: .f16)), gIdx: gIdx, bias: bias.map(Self.halfBits),
                      zeroOffset: zeroOffset, name: prefix)
    }

    static func halfBits(_ t: Tensor) -> [UInt16] { Array(UnsafeBufferPointer(start: t.pointer(as: UInt16.self), count: t.count)) }

    /// The group of input k.
    public func group(_ k: Int) -> Int { gIdx.map { Int($0[k]) } ?? k / groupSize }

    /// The quantized value of input k, output n.
    public func q(_ k: Int, _ n: Int) -> UInt32 { Self.extract(qweight, row: n, stride: outFeatures, bit: k * bits, bits: bits, transposed: true) }

    /// The zero of group g, output n, as AutoGPTQ's kernels read it: stored + 1 for format
    /// v1, without wrapping (a v1 field of all ones, written for a zero of 0, reads 2^bits).
    public func zero(_ g: Int, _ n: Int) -> UInt32 {
        Self.extract(qzeros, row: g, stride: outFeatures * bits / 32, bit: n * bits, bits: bits, transposed: false) + UInt32(zeroOffset)
    }

    /// `bits` bits at bit position `bit` of a stream: along rows of column `row` (qweight,
    /// transposed) or along row `row` (qzeros).
    static func extract(_ words: [Int32], row: Int, stride: Int, bit: Int, bits: Int, transposed: Bool) -> UInt32 {
        func word(_ w: Int) -> UInt32 { UInt32(bitPattern: transposed ? words[w * stride + row] : words[row * stride + w]) }
        let (w, off) = (bit >> 5, bit & 31)
        var v = word(w) >> UInt32(off)
        if off + bits > 32 { v |= word(w + 1) << UInt32(32 - off) }
        return v & ((1 << UInt32(bits)) - 1)
    }

    /// W [inFeatures, outFeatures] in float32: scale · (q − zero), the scale rounded from fp16.
    public func dequantized() -> [Float] {
        let scaleValues = Tensor(bitPattern: scales, dtype: .f16, shape: [scales.count]).floats()
        var w = [Float](repeating: 0, count: inFeatures * outFeatures)
        for k in 0..<inFeatures {
            let g = group(k)
            for n in 0..<outFeatures {
                w[k * outFeatures + n] = scaleValues[g * outFeatures + n] * (Float(q(k, n)) - Float(zero(g, n)))
            }
        }
        return w
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

    /// The fast layout where it applies (4 bits, groups of a multiple of 32 inputs, outputs a
    /// multiple of 8, each group's inputs able to sit together), else the generic one.
    public init(_ layer: GPTQPackedLayer) {
        let (K, N, gs) = (layer.inFeatures, layer.outFeatures, layer.groupSize)
        let gIdx = layer.gIdx ?? (0..<K).map { Int32($0 / gs) }
        guard layer.bits == 4, gs % 32 == 0, K % gs == 0, N % 8 == 0 else {
            self.init(kernel: .generic, qweight: layer.qweight, permutation: nil, gIdx: gIdx)
            return
        }
        if gIdx.enumerated().allSatisfy({ Int($0.element) == $0.offset / gs }) {
            self.init(kernel: .fast4, qweight: layer.qweight, permutation: nil, gIdx: gIdx)
            return
        }
        // Act order: sort inputs by group (stable), which must give exactly gs inputs a group.
        let perm = (0..<K).sorted { (gIdx[$0], $0) < (gIdx[$1], $1) }
        guard perm.enumerated().allSatisfy({ Int(gIdx[$0.element]) == $0.offset / gs }) else {
            self.init(kernel: .generic, qweight: layer.qweight, permutation: nil, gIdx: gIdx)
            return
        }
        var sorted = [Int32](repeating: 0, count: layer.qweight.count)
        sorted.withUnsafeMutableBufferPointer { out in
            for (kNew, kOld) in perm.enumerated() {
                let (row, shift) = (kNew >> 3, UInt32((kNew & 7) * 4))
                for n in 0..<N {
                    let v = layer.q(kOld, n)
                    out[row * N + n] = Int32(bitPattern: UInt32(bitPattern: out[row * N + n]) | (v << shift))
                }
            }
        }
        self.init(kernel: .fast4, qweight: sorted, permutation: perm.map(Int32.init), gIdx: gIdx)
    }

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

    init(kernel: Kernel, qweight: [Int32], permutation: [Int32]?, gIdx: [Int32]) {
        self.kernel = kernel
        self.qweight = qweight
        self.permutation = permutation
        self.gIdx = gIdx
    }
}
