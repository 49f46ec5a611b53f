import COpenBLAS

/// A frozen linear with a LoRA adapter, unmerged: y = base(x) + s · B·A·dropout(x), A [r, in],
/// B [out, r], s = alpha / r (or alpha / √r with rsLoRA), as PEFT's lora.Linear computes it.
/// The base stays as it is stored (float or GPTQ); only A and B train.
public final class LoRALinear: DifferentiableLinear, @unchecked Sendable {
    public let base: LinearLayer
    public let rank: Int
    public let scaling: Float
    public let dropout: Float
    /// lora_A [rank, inFeatures] and lora_B [outFeatures, rank], row-major float32.
    public var a: [Float], b: [Float]
    /// d loss / d A and d B, accumulated by backward until the optimizer zeroes them.
    public var gradientA: [Float], gradientB: [Float]
    /// Dropout's mask stream for the current training step; nil: no dropout (evaluation).
    /// The mask of an element is a hash of (seed, row, column), so the recomputed forward of
    /// activation checkpointing and the backward see the mask the first forward drew.
    public var dropoutSeed: UInt64?

    public var inFeatures: Int { base.inFeatures }
    public var outFeatures: Int { base.outFeatures }

    public init(base: LinearLayer, rank: Int, scaling: Float, dropout: Float, a: [Float], b: [Float]) {
        precondition(a.count == rank * base.inFeatures && b.count == base.outFeatures * rank, "LoRA factors do not fit the base layer")
        self.base = base
        self.rank = rank
        self.scaling = scaling
        self.dropout = dropout
        self.a = a
        self.b = b
        gradientA = [Float](repeating: 0, count: a.count)
        gradientB = [Float](repeating: 0, count: b.count)
    }

    /// x with dropout applied (scaled by 1/(1 − p)), or nil where no dropout applies.
    private func dropped(_ x: UnsafePointer<Float>, rows: Int) -> [Float]? {
        guard let seed = dropoutSeed, dropout > 0 else { return nil }
        let keep = 1 - dropout, count = rows * inFeatures
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            for i in 0..<count { buffer[i] = Self.keeps(seed: seed, index: UInt64(i), probability: keep) ? x[i] / keep : 0 }
            initialized = count
        }
    }

    /// Whether element `index` survives dropout: splitmix64 of (seed, index) against the keep probability.
    static func keeps(seed: UInt64, index: UInt64, probability: Float) -> Bool {
        var z = seed &+ (index &+ 1) &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) * 0x1.0p-53 < Double(probability)
    }

    /// u = x·Aᵀ [rows, rank].
    private func project(_ x: UnsafePointer<Float>, rows: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: rows * rank) { u, initialized in
            a.withUnsafeBufferPointer { a in
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(rank), Int32(inFeatures), 1, x, Int32(inFeatures),
                            a.baseAddress!, Int32(inFeatures), 0, u.baseAddress!, Int32(rank))
            }
            initialized = rows * rank
        }
    }

    public func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>) {
        base.forward(x, rows: rows, into: y)
        guard rows > 0 else { return }
        let u = dropped(x, rows: rows).map { $0.withUnsafeBufferPointer { project($0.baseAddress!, rows: rows) } } ?? project(x, rows: rows)
        u.withUnsafeBufferPointer { u in
            b.withUnsafeBufferPointer { b in
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(outFeatures), Int32(rank), scaling, u.baseAddress!,
                            Int32(rank), b.baseAddress!, Int32(rank), 1, y, Int32(outFeatures))
            }
        }
    }

    /// dB += s · dyᵀ·u, dA += (s · dy·B)ᵀ · dropout(x), dx = base's dx + dropout'(s · dy·B·A).
    public func backward(input x: UnsafePointer<Float>, outputGradient dy: UnsafePointer<Float>, rows: Int,
                         inputGradient dx: UnsafeMutablePointer<Float>) {
        guard let frozen = base as? DifferentiableLinear else {
            preconditionFailure("LoRALinear's base \(type(of: base)) has no backward pass")  // LoRAAdapter checks this when it installs
        }
        frozen.backward(input: x, outputGradient: dy, rows: rows, inputGradient: dx)
        guard rows > 0 else { return }
        let droppedInput = dropped(x, rows: rows)
        let (r, n, k) = (Int32(rank), Int32(outFeatures), Int32(inFeatures))
        droppedInput.withOptionalPointer { dropped in
            let xd = dropped ?? x
            let u = project(xd, rows: rows)
            var du = [Float](repeating: 0, count: rows * rank)
            u.withUnsafeBufferPointer { u in
                gradientB.withUnsafeMutableBufferPointer { gB in
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, r, Int32(rows), scaling, dy, n, u.baseAddress!, r, 1, gB.baseAddress!, r)
                }
            }
            b.withUnsafeBufferPointer { b in
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), r, n, scaling, dy, n, b.baseAddress!, r, 0, &du, r)
            }
            gradientA.withUnsafeMutableBufferPointer { gA in
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, k, Int32(rows), 1, du, r, xd, k, 1, gA.baseAddress!, k)
            }
            var dxLoRA = [Float](repeating: 0, count: rows * inFeatures)
            a.withUnsafeBufferPointer { a in
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), k, r, 1, du, r, a.baseAddress!, k, 0, &dxLoRA, k)
            }
            if let seed = dropoutSeed, dropout > 0 {
                let keep = 1 - dropout
                for i in 0..<dxLoRA.count { dxLoRA[i] = Self.keeps(seed: seed, index: UInt64(i), probability: keep) ? dxLoRA[i] / keep : 0 }
            }
            for i in 0..<dxLoRA.count { dx[i] += dxLoRA[i] }
        }
    }

    public func zeroGradients() {
        gradientA.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        gradientB.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
    }
}
