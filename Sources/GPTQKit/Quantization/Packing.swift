import CKernels

/// Fields of `bits` bits laid end to end in a little-endian stream of 32-bit words: field k
/// occupies stream bits [k·bits, (k+1)·bits). This is AutoGPTQ's layout for every width:
/// 2/4/8 bits fill whole words, and its 3-bit scheme (10 fields, one split across words,
/// 10 fields, one split, 10 fields per 3 words) is exactly this stream for 32 fields.
enum BitStream {
    @inline(__always)
    static func field(_ k: Int, bits: Int, _ word: (Int) -> UInt32) -> UInt32 {
        let position = k * bits, index = position >> 5, shift = position & 31
        var value = word(index) >> UInt32(shift)
        if shift + bits > 32 { value |= word(index + 1) << UInt32(32 - shift) }
        return value & ((1 << UInt32(bits)) - 1)
    }

    /// ORs field k = `value` (already < 2^bits) into the stream.
    @inline(__always)
    static func set(_ k: Int, _ value: UInt32, bits: Int, _ orInto: (Int, UInt32) -> Void) {
        let position = k * bits, index = position >> 5, shift = position & 31
        orInto(index, value << UInt32(shift))
        if shift + bits > 32 { orInto(index + 1, value >> UInt32(32 - shift)) }
    }
}

/// One GPTQ-quantized linear layer in AutoGPTQ's tensors (see docs/FORMAT.md):
/// qweight int32 [in·bits/32, out] (input channels packed down each output column),
/// qzeros int32 [groups, out·bits/32] (zeros packed along the row; v1 stores zero − 1),
/// scales float16 [groups, out], g_idx int32 [in], optional bias float16 [out].
public struct PackedLinear: Sendable {
    public let name: String
    public let path: String
    public let bits: Int
    public let format: CheckpointFormat
    public let inFeatures: Int
    public let outFeatures: Int
    public let qweight: Tensor
    public let qzeros: Tensor
    public let scales: Tensor
    public let gIdx: Tensor
    public let bias: Tensor?

    /// Checks every shape and dtype against bits, in_features and out_features; errors name
    /// `name.<tensor>` and `path` (the checkpoint file, or a description of the source).
    public init(name: String, path: String, bits: Int, format: CheckpointFormat, inFeatures: Int, outFeatures: Int,
                qweight: Tensor, qzeros: Tensor, scales: Tensor, gIdx: Tensor, bias: Tensor?) throws {
        guard QuantizeConfig.supportedBits.contains(bits) else {
            throw GPTQError.invalidArgument("\(name): bits \(bits) is not supported (use 2, 3, 4 or 8)")
        }
        func bad(_ tensor: String, _ reason: String) -> GPTQError { .badTensor(name: "\(name).\(tensor)", path: path, reason: reason) }
        guard inFeatures > 0, outFeatures > 0, inFeatures * bits % 32 == 0 else {
            throw bad("qweight", "in_features \(inFeatures) × \(bits) bits is not a whole number of int32 words")
        }
        guard outFeatures * bits % 32 == 0 else {
            throw bad("qzeros", "out_features \(outFeatures) × \(bits) bits is not a whole number of int32 words")
        }
        guard qweight.dtype == .i32, qweight.shape == [inFeatures * bits / 32, outFeatures] else {
            throw bad("qweight", "\(qweight.dtype.rawValue) \(qweight.shape); \(bits)-bit packing of [\(outFeatures), \(inFeatures)] needs I32 [\(inFeatures * bits / 32), \(outFeatures)]")
        }
        guard scales.dtype.isFloatingPoint, scales.rank == 2, scales.shape[1] == outFeatures, scales.shape[0] > 0 else {
            throw bad("scales", "\(scales.dtype.rawValue) \(scales.shape); expected floats [groups, \(outFeatures)]")
        }
        let groups = scales.shape[0]
        guard qzeros.dtype == .i32, qzeros.shape == [groups, outFeatures * bits / 32] else {
            throw bad("qzeros", "\(qzeros.dtype.rawValue) \(qzeros.shape); expected I32 [\(groups), \(outFeatures * bits / 32)]")
        }
        guard gIdx.dtype == .i32 || gIdx.dtype == .i64, gIdx.shape == [inFeatures] else {
            throw bad("g_idx", "\(gIdx.dtype.rawValue) \(gIdx.shape); expected I32 [\(inFeatures)]")
        }
        if let g = gIdx.ints().first(where: { $0 < 0 || Int($0) >= groups }) {
            throw bad("g_idx", "group \(g) outside the \(groups) groups of scales")
        }
        if let bias, !(bias.dtype.isFloatingPoint && bias.shape == [outFeatures]) {
            throw bad("bias", "\(bias.dtype.rawValue) \(bias.shape); expected floats [\(outFeatures)]")
        }
        self.name = name
        self.path = path
        self.bits = bits
        self.format = format
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.qweight = qweight
        self.qzeros = qzeros
        self.scales = scales
        self.gIdx = gIdx
        self.bias = bias
    }

    public var groups: Int { scales.shape[0] }
    public var maxq: Int { (1 << bits) - 1 }

    /// The tensors as a checkpoint names them, under `prefix` (e.g. "model.layers.0.mlp.up_proj").
    public func tensors(prefix: String) -> [(String, Tensor)] {
        var list = [("\(prefix).qweight", qweight), ("\(prefix).qzeros", qzeros), ("\(prefix).scales", scales), ("\(prefix).g_idx", gIdx)]
        if let bias { list.append(("\(prefix).bias", bias)) }
        return list
    }

    // MARK: unpacking

    /// The quantized values q, [inFeatures, outFeatures] row-major.
    public func unpackedWeights() -> [UInt8] {
        let words = qweight.pointer(as: UInt32.self), out = outFeatures
        var q = [UInt8](repeating: 0, count: inFeatures * out)
        for o in 0..<out {
            for i in 0..<inFeatures { q[i * out + o] = UInt8(BitStream.field(i, bits: bits) { words[$0 * out + o] }) }
        }
        return q
    }

    /// The zero points as dequantization uses them, [groups, outFeatures], from `v2ZeroWords()`.
    public func unpackedZeros() -> [Int32] {
        let words = v2ZeroWords(), out = outFeatures, wordsPerRow = out * bits / 32
        var z = [Int32](repeating: 0, count: groups * out)
        for g in 0..<groups {
            for o in 0..<out { z[g * out + o] = Int32(BitStream.field(o, bits: bits) { words[g * wordsPerRow + $0] }) }
        }
        return z
    }

    /// qzeros as gptq_v2 words (the zeros themselves). v1 (zero − 1) is converted as GPTQModel
    /// converts it on loading, which is also how it writes v1: for 2, 4 and 8 bits each
    /// 32-bit word plus the constant holding 1 in every field, carries included (GPTQModel
    /// stores v1 as the v2 word minus that constant, so a zero of 0 borrows from the next
    /// field); for 3 bits, whose fields straddle words, each field + 1 modulo 8. Where every
    /// zero is ≥ 1 nothing carries and this is AutoGPTQ's (field & maxq) + 1.
    func v2ZeroWords() -> [UInt32] {
        let count = qzeros.count, words = qzeros.pointer(as: UInt32.self)
        guard format == .gptq else { return (0..<count).map { words[$0] } }
        if bits == 3 {
            let fields = count * 32 / 3
            var converted = [UInt32](repeating: 0, count: count)
            for k in 0..<fields {
                let value = (BitStream.field(k, bits: 3) { words[$0] } + 1) & 7
                BitStream.set(k, value, bits: 3) { converted[$0] |= $1 }
            }
            return converted
        }
        let ones = (0..<(32 / bits)).reduce(UInt32(0)) { $0 | (1 << UInt32($1 * bits)) }
        return (0..<count).map { words[$0] &+ ones }
    }

    /// The qzeros words [group, word] of a v1 layer that hold AutoGPTQ's packing of a zero of
    /// 0. AutoGPTQ ORs −1 shifted to the field into the 32-bit word, which sets every bit from
    /// that field to the top of the word: the field reads as maxq, and the fields above it in
    /// the word are overwritten with ones, their zeros lost. A field of maxq that ends below
    /// the top of its word therefore marks a word that neither AutoGPTQ's reading (maxq + 1)
    /// nor GPTQModel's (which reads the overwritten fields as 1) makes right, unless the file
    /// was written by GPTQModel, whose borrows leave maxq fields in the same places
    /// (`QuantizeConfig.packsV1LikeGPTQModel`). A zero of 0 in the top field of a word loses
    /// nothing and is not reported. Empty for gptq_v2 layers.
    public func autoGPTQOverflowWords() -> [(group: Int, word: Int)] {
        guard format == .gptq else { return [] }
        let words = qzeros.pointer(as: UInt32.self), wordsPerRow = outFeatures * bits / 32
        var overflowing: [(group: Int, word: Int)] = []
        for g in 0..<groups {
            let row = words + g * wordsPerRow
            var last = -1
            for o in 0..<outFeatures where BitStream.field(o, bits: bits, { row[$0] }) == UInt32(maxq) {
                let start = o * bits, word = start >> 5
                if start + bits < (word + 1) * 32, word != last {
                    overflowing.append((g, word))
                    last = word
                }
            }
        }
        return overflowing
    }

    /// The weight W [outFeatures, inFeatures] = scale · (q − zero) in float32.
    public func dequantized() -> [Float] {
        let q = unpackedWeights(), z = unpackedZeros(), s = scales.floats(), g = gIdx.ints()
        let out = outFeatures
        var w = [Float](repeating: 0, count: out * inFeatures)
        for i in 0..<inFeatures {
            let group = Int(g[i]) * out
            for o in 0..<out { w[o * inFeatures + i] = s[group + o] * Float(Int32(q[i * out + o]) - z[group + o]) }
        }
        return w
    }

    // MARK: packing

    /// AutoGPTQ's QuantLinear.pack (qlinear_cuda) of a GPTQ result, with its arithmetic:
    /// W = float16(Q); scales16 = float16(scales); q = round((float32(W) + zero · scale) / float32(scales16))
    /// in float32, half to even. `bias` is stored in float16.
    ///
    /// `format` `.gptq` (v1) fails when a zero is 0 (see `converted(to:)`).
    public static func pack(_ result: GPTQResult, bias: [Float]? = nil, format: CheckpointFormat = .gptq,
                            name: String = "linear") throws -> PackedLinear {
        let rows = result.rows, columns = result.columns, bits = result.bits, groups = result.groups
        let maxq = (1 << bits) - 1
        guard result.q.count == rows * columns, result.zeros.count == rows * groups, groups > 0,
              result.gIdx.count == columns, result.gIdx.allSatisfy({ $0 >= 0 && Int($0) < groups }) else {
            throw GPTQError.invalidArgument("\(name): GPTQ result arrays do not match [\(rows), \(columns)] with \(groups) groups")
        }
        guard result.zeros.allSatisfy({ $0 >= 0 && $0 <= Float(maxq) && $0.rounded() == $0 }) else {
            throw GPTQError.invalidArgument("\(name): zeros must be integers in [0, \(maxq)]")
        }

        var w16 = [UInt16](repeating: 0, count: result.q.count)
        ck_f32_to_f16(result.q, &w16, w16.count)
        var s16 = [UInt16](repeating: 0, count: result.scales.count)
        ck_f32_to_f16(result.scales, &s16, s16.count)
        var w = [Float](repeating: 0, count: w16.count), s = [Float](repeating: 0, count: s16.count)
        ck_f16_to_f32(w16, &w, w.count)
        ck_f16_to_f32(s16, &s, s.count)

        let qweight = Tensor(zeros: [columns * bits / 32, rows], dtype: .i32)
        let qw = qweight.mutablePointer(as: UInt32.self)
        for o in 0..<rows {
            for i in 0..<columns {
                let g = o * groups + Int(result.gIdx[i])
                let value = ((w[o * columns + i] + result.zeros[g] * result.scales[g]) / s[g]).rounded(.toNearestOrEven)
                guard value >= 0, value <= Float(maxq) else {
                    throw GPTQError.invalidArgument("\(name): weight [\(o), \(i)] = \(result.q[o * columns + i]) is not on the grid of its scale and zero (level \(value))")
                }
                BitStream.set(i, UInt32(value), bits: bits) { qw[$0 * rows + o] |= $1 }
            }
        }
        let qzeros = Tensor(zeros: [groups, rows * bits / 32], dtype: .i32)
        let qz = qzeros.mutablePointer(as: UInt32.self)
        for g in 0..<groups {
            let row = qz + g * (rows * bits / 32)
            for o in 0..<rows { BitStream.set(o, UInt32(result.zeros[o * groups + g]), bits: bits) { row[$0] |= $1 } }
        }
        // scales [groups, out]: the transpose of the result's [rows, groups].
        var scalesT = [UInt16](repeating: 0, count: s16.count)
        for o in 0..<rows { for g in 0..<groups { scalesT[g * rows + o] = s16[o * groups + g] } }
        let biasTensor = bias.map { Tensor($0, shape: [rows]).converted(to: .f16) }
        let packed = try PackedLinear(name: name, path: "(packed in memory)", bits: bits, format: .gptqV2, inFeatures: columns, outFeatures: rows,
                                      qweight: qweight, qzeros: qzeros, scales: Tensor(bitPattern: scalesT, dtype: .f16, shape: [groups, rows]),
                                      gIdx: Tensor(bitPattern: result.gIdx, dtype: .i32, shape: [columns]), bias: biasTensor)
        return try packed.converted(to: format)
    }

    /// The same layer with its outputs reordered (output i is this layer's output order[i]), in
    /// gptq_v2: a fused q/k/v's rows put in [q | k | v] order once, for the GPU.
    func reorderingOutputs(_ order: [Int]) throws -> PackedLinear {
        precondition(order.count == outFeatures)
        let zeros = unpackedZeros(), wordsPerRow = outFeatures * bits / 32
        let reordered = Tensor(zeros: qzeros.shape, dtype: .i32)
        let words = reordered.mutablePointer(as: UInt32.self)
        for g in 0..<groups {
            for (o, source) in order.enumerated() {
                BitStream.set(o, UInt32(zeros[g * outFeatures + source]), bits: bits) { words[g * wordsPerRow + $0] |= $1 }
            }
        }
        return try PackedLinear(name: name, path: path, bits: bits, format: .gptqV2, inFeatures: inFeatures, outFeatures: outFeatures,
                                qweight: qweight.gatheringColumns(order), qzeros: reordered, scales: scales.gatheringColumns(order), gIdx: gIdx,
                                bias: bias.map { $0.reshaped([1, outFeatures]).gatheringColumns(order).reshaped([outFeatures]) })
    }

    /// The same layer with qzeros rewritten for `target`. v1 is written only where every zero
    /// is ≥ 1, so that each field holds zero − 1 and every v1 reader agrees: AutoGPTQ's
    /// packing corrupts the word where a zero is 0, and GPTQModel's borrows from the next
    /// field, which loaders that add 1 field by field (AutoGPTQ, ExLlama) misread.
    public func converted(to target: CheckpointFormat) throws -> PackedLinear {
        if target == format { return self }
        let zeros = unpackedZeros(), out = outFeatures, wordsPerRow = out * bits / 32
        let offset: Int32 = target == .gptq ? 1 : 0
        if target == .gptq, let i = zeros.firstIndex(of: 0) {
            throw GPTQError.invalidArgument("\(name): zero point 0 (group \(i / out), output \(i % out)) cannot be stored in checkpoint format gptq (v1 holds zero − 1); save as gptq_v2")
        }
        let qzeros = Tensor(zeros: qzeros.shape, dtype: .i32)
        let qz = qzeros.mutablePointer(as: UInt32.self)
        for g in 0..<groups {
            for o in 0..<out { BitStream.set(o, UInt32(zeros[g * out + o] - offset), bits: bits) { qz[g * wordsPerRow + $0] |= $1 } }
        }
        return try PackedLinear(name: name, path: path, bits: bits, format: target, inFeatures: inFeatures, outFeatures: outFeatures,
                                qweight: qweight, qzeros: qzeros, scales: scales, gIdx: gIdx, bias: bias)
    }
}
