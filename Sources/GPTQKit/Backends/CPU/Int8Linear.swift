import CKernels

/// The instruction sets of the int8-activation kernels (GPTQLinear's decode GEMV, Int8Linear).
/// All compute the same integer dot products; the best the CPU has is taken unless one is
/// selected (tests run each in turn on the same inputs; `--cpu-kernel` on the commands).
public enum Int8KernelPath: Int32, CaseIterable, Sendable, CustomStringConvertible {
    case scalar = 0, avx2 = 1, avxVNNI = 2, avx512VNNI = 3

    public var description: String {
        switch self {
        case .scalar: "scalar"
        case .avx2: "avx2"
        case .avxVNNI: "avx-vnni"
        case .avx512VNNI: "avx512-vnni"
        }
    }

    public var isSupported: Bool { ck_q8_path_supported(rawValue) != 0 }

    /// The path the kernels take now.
    public static var current: Int8KernelPath { Int8KernelPath(rawValue: ck_q8_current_path())! }

    /// Makes every int8 kernel take `path` (nil: the best this CPU has). Process-wide: call
    /// it before forwards run, not during.
    public static func select(_ path: Int8KernelPath?) throws {
        guard let path else { _ = ck_q8_select_path(-1); return }
        guard ck_q8_select_path(path.rawValue) != 0 else {
            throw GPTQError.invalidArgument("this CPU cannot run the \(path) kernels (it has: \(allCases.filter(\.isSupported).map(\.description).joined(separator: ", ")))")
        }
    }
}

/// A linear layer with int8 weights, one float scale per output row (max |w| / 127), whose
/// input is quantized to int8 per block of 32 channels: integer dot products, a quarter of a
/// float32 weight's bytes and half of a float16's. Made from a float layer, for the LM head
/// of checkpoints that keep it in float (SmolLM2's tied float16 head is half its decode bytes).
/// Any number of rows takes the same kernel (blocks of weight rows in L2 against 4 input rows
/// at a time), so that perplexity measures what decode computes.
public final class Int8Linear: LinearLayer, WeightFootprint, @unchecked Sendable {
    public let inFeatures: Int
    public let outFeatures: Int
    public let bias: [Float]?
    private let weight: UnsafeMutableBufferPointer<Int8>
    private let scales: UnsafeMutableBufferPointer<Float>
    private let matrix: ck_q8_matrix

    /// Quantizes `weight` [out, in] (float16, bfloat16 or float32; in a multiple of 32) row by row.
    public init(quantizing weight: Tensor, bias: [Float]? = nil) throws {
        guard weight.rank == 2, [.f16, .bf16, .f32].contains(weight.dtype) else {
            throw GPTQError.invalidArgument("an int8 layer is made from a 2-D float weight, not \(weight.dtype.rawValue) \(weight.shape)")
        }
        let (out, inFeatures) = (weight.shape[0], weight.shape[1])
        guard inFeatures % 32 == 0 else {
            throw GPTQError.invalidArgument("an int8 layer needs a multiple of 32 input features (its activations are quantized in blocks of 32), not \(inFeatures)")
        }
        guard bias == nil || bias!.count == out else { throw GPTQError.invalidArgument("bias length \(bias!.count) differs from the \(out) output features") }
        self.inFeatures = inFeatures
        outFeatures = out
        self.bias = bias
        self.weight = .allocate(capacity: out * inFeatures)
        scales = .allocate(capacity: out)
        let (q, s) = (self.weight.baseAddress!, scales.baseAddress!)
        // Chunks of rows converted to float32 and quantized, each thread with its own scratch.
        let chunk = 256
        CPUThreads.parallelRanges((out + chunk - 1) / chunk) { first, last in
            let rows = UnsafeMutablePointer<Float>.allocate(capacity: chunk * inFeatures)
            defer { rows.deallocate() }
            for c in first..<last {
                let o0 = c * chunk, count = min(chunk, out - o0)
                weight.readFloats(start: o0 * inFeatures, count: count * inFeatures, into: rows)
                ck_q8_quantize_matrix(rows, Int32(count), Int32(inFeatures), q + o0 * inFeatures, s + o0)
            }
        }
        matrix = ck_q8_matrix(weight: q, scales: s, in_features: Int32(inFeatures), out_features: Int32(out))
    }

    /// The int8 copy of a float layer (its weight and bias).
    public convenience init(_ dense: DenseLinear) throws {
        try self.init(quantizing: dense.weight, bias: dense.bias)
    }

    deinit {
        weight.deallocate()
        scales.deallocate()
    }

    /// Bytes one forward reads: the int8 weight, the scales and the bias.
    public var weightBytes: Int { weight.count + (scales.count + (bias?.count ?? 0)) * 4 }

    public func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>) {
        guard rows > 0 else { return }
        let workspace = UnsafeMutableRawPointer.allocate(byteCount: ck_q8_rows_bytes(Int32(rows), Int32(inFeatures), 0, 0), alignment: 64)
        defer { workspace.deallocate() }
        let quantized = ck_q8_quantize(x, Int32(rows), Int32(inFeatures), workspace)
        // Threads take whole blocks of 16 rows (64-byte lines of y), so none share a line.
        let blocks = (outFeatures + 15) / 16
        withUnsafePointer(to: matrix) { m in
            withUnsafePointer(to: quantized) { q in
                CPUThreads.parallelRanges(blocks) { start, end in
                    ck_q8_matrix_gemv(m, q, Int32(start * 16), Int32(min(end * 16, outFeatures)), y, outFeatures)
                }
            }
        }
        if let bias {
            bias.withUnsafeBufferPointer { b in
                for r in 0..<rows { ck_add(y + r * outFeatures, b.baseAddress!, outFeatures) }
            }
        }
    }
}

extension LanguageModel {
    /// Replaces a float LM head (a tied embedding or a float16/bfloat16/float32 lm_head) by its
    /// Int8Linear copy. Fails, saying why, where the head is not a float layer (e.g. GPTQ).
    public func useInt8Head() throws {
        if lmHead is Int8Linear { return }
        guard let dense = lmHead as? DenseLinear else {
            throw GPTQError.invalidArgument("the LM head is a \(type(of: lmHead)), not a float layer: only a float head becomes int8")
        }
        lmHead = try Int8Linear(dense)
    }
}
