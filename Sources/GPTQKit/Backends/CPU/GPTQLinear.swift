import CKernels
import COpenBLAS

/// A GPTQ-quantized linear layer on the CPU: y = x · dequant(W)ᵀ + b, dequant(W)[o, c] =
/// scale[g(c), o] · (q[c, o] − zero[g(c), o]), computed without materialising W.
///
/// At load the packed weight is copied into the kernels' layout (ck_gptq_weight): columns
/// padded to a multiple of 32 and stored tile by tile, zeros unpacked to floats (v1's +1 applied), and, for
/// act-order checkpoints, input channels sorted by g_idx (stable), so that each group is a
/// contiguous run of channels; x is permuted the same way at run time (ExLlama's approach).
/// Few rows (decode): by default x is quantized to int8 per block of 32 channels and the packed
/// fields meet it in integer dot products (ck_gptq_q8_gemv: AVX2, AVX-VNNI or AVX-512 VNNI,
/// chosen at run time), threads over output columns; layers whose groups do not start at
/// multiples of 32 channels, or `int8Activations` `.off`, take the float kernel instead
/// (fused dequantize-and-multiply after one pass over x for what every column tile shares).
/// Many rows (prefill): weight tiles dequantized to float32 and multiplied by cblas_sgemm.
public final class GPTQLinear: DifferentiableLinear, WeightFootprint, @unchecked Sendable {
    public let inFeatures: Int
    public let outFeatures: Int
    public let bits: Int
    /// Up to this many rows take the fused GEMV; more take dequantize + sgemm.
    public static let maxGEMVRows = 4

    /// Where GPTQ layers quantize their input to int8 (integer dot products) rather than
    /// multiplying it in float32.
    public enum Int8Activations: String, Sendable, CaseIterable {
        /// Never: the float kernels everywhere.
        case off
        /// The GEMV (up to maxGEMVRows rows, i.e. decode); prefill keeps dequantize + sgemm.
        case decode
        /// Every row count, 4 rows at a time through the GEMV: slow at prefill, but perplexity
        /// then measures what int8 activations cost.
        case all
    }

    /// This layer's choice (`--int8-activations`); set it before forwards run, not during.
    public var int8Activations = Int8Activations.decode

    /// Whether the int8 kernel can run this layer (groups start at multiples of 32 channels).
    public let supportsInt8Activations: Bool

    /// channelOrder[p]: the checkpoint's input channel at kernel position p; nil when g_idx is already sorted.
    private let channelOrder: [Int]?
    private let bias: [Float]?
    private let qweight: UnsafeMutableBufferPointer<UInt32>
    private let scales: UnsafeMutableBufferPointer<Float>
    private let zeros: UnsafeMutableBufferPointer<Float>
    private let groupStart: UnsafeMutableBufferPointer<Int32>
    private let weight: ck_gptq_weight

    public init(_ packed: PackedLinear) {
        inFeatures = packed.inFeatures
        outFeatures = packed.outFeatures
        bits = packed.bits
        let out = outFeatures, stride = (out + 31) / 32 * 32, groups = packed.groups
        let gIdx = packed.gIdx.ints().map(Int.init)
        let sorted = zip(gIdx, gIdx.dropFirst()).allSatisfy { $0 <= $1 }
        let order: [Int]? = sorted ? nil : (0..<inFeatures).sorted { (gIdx[$0], $0) < (gIdx[$1], $1) }
        channelOrder = order

        // Tile-major: the words of each 32-column tile are contiguous ([tile][word][32]), so that a
        // thread streams its tiles sequentially (a row-major [word][column] layout makes every
        // 128-byte read a separate DRAM access, at a quarter of the bandwidth).
        let words = inFeatures * bits / 32
        func tiled(_ row: Int, _ column: Int, rows: Int) -> Int { (column / 32 * rows + row) * 32 + column % 32 }
        qweight = .allocate(capacity: words * stride)
        qweight.initialize(repeating: 0)
        if let order {
            let q = packed.unpackedWeights(), base = qweight.baseAddress!
            for (position, channel) in order.enumerated() {
                for o in 0..<out {
                    BitStream.set(position, UInt32(q[channel * out + o]), bits: bits) { base[tiled($0, o, rows: words)] |= $1 }
                }
            }
        } else {
            let source = packed.qweight.pointer(as: UInt32.self)
            for w in 0..<words {
                for o in 0..<out { qweight[tiled(w, o, rows: words)] = source[w * out + o] }
            }
        }

        scales = .allocate(capacity: groups * stride)
        scales.initialize(repeating: 0)
        zeros = .allocate(capacity: groups * stride)
        zeros.initialize(repeating: 0)
        let s = packed.scales.floats(), z = packed.unpackedZeros()
        for g in 0..<groups {
            for o in 0..<out {
                scales[tiled(g, o, rows: groups)] = s[g * out + o]
                zeros[tiled(g, o, rows: groups)] = Float(z[g * out + o])
            }
        }
        groupStart = .allocate(capacity: groups + 1)
        groupStart.initialize(repeating: 0)
        for g in gIdx { groupStart[g + 1] += 1 }
        for g in 0..<groups { groupStart[g + 1] += groupStart[g] }
        bias = packed.bias?.floats()
        weight = ck_gptq_weight(qweight: qweight.baseAddress, scales: scales.baseAddress, zeros: zeros.baseAddress,
                                group_start: groupStart.baseAddress, bits: Int32(bits), in_features: Int32(inFeatures),
                                out_features: Int32(out), out_stride: Int32(stride), groups: Int32(groups))
        supportsInt8Activations = withUnsafePointer(to: weight) { ck_gptq_q8_supported($0) != 0 }
    }

    /// Bytes one forward reads: the packed weight, float32 scales and zeros, the bias.
    public var weightBytes: Int {
        (qweight.count + scales.count + zeros.count + groupStart.count + (bias?.count ?? 0)) * 4
    }

    deinit {
        qweight.deallocate()
        scales.deallocate()
        zeros.deallocate()
        groupStart.deallocate()
    }

    public func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>) {
        guard rows > 0 else { return }
        if let order = channelOrder {
            let permuted = UnsafeMutablePointer<Float>.allocate(capacity: rows * inFeatures)
            defer { permuted.deallocate() }
            for r in 0..<rows {
                let source = x + r * inFeatures, target = permuted + r * inFeatures
                for (position, channel) in order.enumerated() { target[position] = source[channel] }
            }
            multiply(permuted, rows: rows, into: y)
        } else {
            multiply(x, rows: rows, into: y)
        }
        if let bias {
            for r in 0..<rows { cblas_saxpy(Int32(outFeatures), 1, bias, 1, y + r * outFeatures, 1) }
        }
    }

    /// x in kernel channel order. Threads split the output columns in whole tiles of 32.
    private func multiply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>) {
        let stride = Int(weight.out_stride), tiles = stride / 32
        if supportsInt8Activations, int8Activations == .all || (int8Activations == .decode && rows <= Self.maxGEMVRows) {
            withUnsafePointer(to: weight) { w in
                let bytes = ck_q8_rows_bytes(Int32(rows), Int32(inFeatures), Int32(bits), w.pointee.groups)
                let workspace = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
                defer { workspace.deallocate() }
                let quantized = ck_gptq_q8_prepare(w, x, Int32(rows), workspace)
                withUnsafePointer(to: quantized) { q in
                    CPUThreads.parallelRanges(tiles) { start, end in
                        ck_gptq_q8_gemv(w, q, Int32(start * 32), Int32(end * 32), y, outFeatures)
                    }
                }
            }
            return
        }
        if rows <= Self.maxGEMVRows {
            withUnsafePointer(to: weight) { w in
                let workspace = UnsafeMutablePointer<Float>.allocate(capacity: ck_gptq_gemv_workspace(w, Int32(rows)))
                defer { workspace.deallocate() }
                ck_gptq_gemv_prepare(w, x, Int32(rows), workspace)
                CPUThreads.parallelRanges(tiles) { start, end in
                    ck_gptq_gemv(w, x, workspace, Int32(rows), Int32(start * 32), Int32(end * 32), y, outFeatures)
                }
            }
            return
        }
        forEachDequantizedTile { c0, c1, tile in
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(outFeatures), Int32(c1 - c0), 1,
                        x + c0, Int32(inFeatures), tile, Int32(stride), c0 == 0 ? 0 : 1, y, Int32(outFeatures))
        }
    }

    /// Dequantizes the weight in tiles of channels c0..<c1 (kernel order) × all columns,
    /// [c1 − c0][out_stride] float32, about 4 MiB each (a multiple of 32 channels).
    private func forEachDequantizedTile(_ body: (_ c0: Int, _ c1: Int, _ tile: UnsafePointer<Float>) -> Void) {
        let stride = Int(weight.out_stride), tiles = stride / 32
        let tileChannels = min(inFeatures, max(32, (1 << 20) / stride / 32 * 32))
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: tileChannels * stride)
        defer { scratch.deallocate() }
        for c0 in Swift.stride(from: 0, to: inFeatures, by: tileChannels) {
            let c1 = min(c0 + tileChannels, inFeatures)
            CPUThreads.parallelRanges(tiles) { start, end in
                withUnsafePointer(to: weight) {
                    ck_gptq_dequantize($0, Int32(c0), Int32(c1), Int32(start * 32), Int32(end * 32), scratch + start * 32, stride)
                }
            }
            body(c0, c1, scratch)
        }
    }

    /// dx = dy · dequant(W): the forward's dequantized tiles, multiplied the other way, and
    /// the channels put back in the checkpoint's order.
    public func backward(input x: UnsafePointer<Float>, outputGradient dy: UnsafePointer<Float>, rows: Int,
                         inputGradient dx: UnsafeMutablePointer<Float>) {
        guard rows > 0 else { return }
        let stride = Int(weight.out_stride)
        let kernelOrder = channelOrder == nil ? dx : UnsafeMutablePointer<Float>.allocate(capacity: rows * inFeatures)
        defer { if channelOrder != nil { kernelOrder.deallocate() } }
        forEachDequantizedTile { c0, c1, tile in
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(c1 - c0), Int32(outFeatures), 1,
                        dy, Int32(outFeatures), tile, Int32(stride), 0, kernelOrder + c0, Int32(inFeatures))
        }
        if let order = channelOrder {
            for r in 0..<rows {
                let source = kernelOrder + r * inFeatures, target = dx + r * inFeatures
                for (position, channel) in order.enumerated() { target[channel] = source[position] }
            }
        }
    }
}
