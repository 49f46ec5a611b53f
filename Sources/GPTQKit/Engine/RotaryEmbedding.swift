#if canImport(Glibc)
import Glibc
#endif

/// Rotary position embedding angles as transformers computes them: inverse frequencies
/// `1 / base^(2i/dim)` in float32 over the rotated dimensions (then scaled per
/// `rope_scaling`), and the angle of position p as the float32 product p * inv_freq.
struct RotaryEmbedding: Sendable {
    /// rotaryDimensions/2 inverse frequencies.
    let inverseFrequencies: [Float]
    let spec: RotarySpec

    init(_ spec: RotarySpec) {
        self.spec = spec
        let dim = spec.dimensions
        // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all float32 tensors.
        var inv = stride(from: 0, to: dim, by: 2).map { i -> Float in
            let exponent = Float(i) / Float(dim)
            return 1 / Float(pow(spec.theta, Double(exponent)))
        }
        switch spec.scaling {
        case .none: break
        case let .linear(factor):
            inv = inv.map { $0 / Float(factor) }
        case let .llama3(factor, lowFreqFactor, highFreqFactor, originalMaxPositions):
            // transformers' _compute_llama3_parameters: low frequencies are divided by the
            // factor, high ones kept, and the band between interpolated smoothly.
            let (f, lo, hi, old) = (Float(factor), Float(lowFreqFactor), Float(highFreqFactor), Float(originalMaxPositions))
            let lowFreqWavelength = old / lo, highFreqWavelength = old / hi
            inv = inv.map { freq in
                let wavelength = 2 * Float.pi / freq
                let scaled = wavelength > lowFreqWavelength ? freq / f : freq
                guard !(wavelength < highFreqWavelength) && !(wavelength > lowFreqWavelength) else { return scaled }
                let smooth = (old / wavelength - lo) / (hi - lo)
                return (1 - smooth) * scaled / f + smooth * scaled
            }
        }
        inverseFrequencies = inv
    }

    /// cos and sin of the angles of positions start..<start+count, each [count, rotaryDimensions/2].
    func tables(start: Int, count: Int) -> (cos: [Float], sin: [Float]) {
        let half = inverseFrequencies.count
        var c = [Float](repeating: 0, count: count * half), s = c
        for t in 0..<count {
            let position = Float(start + t)
            for i in 0..<half {
                let angle = position * inverseFrequencies[i]
                c[t * half + i] = cosf(angle)
                s[t * half + i] = sinf(angle)
            }
        }
        return (c, s)
    }
}

/// ALiBi's per-head biases as transformers' build_alibi_tensor computes them.
struct ALiBi: Sendable {
    let slopes: [Float]
    let spec: ALiBiSpec

    /// Slopes 2^(-8i/n) for the closest power of two n ≤ heads, then the odd steps of the
    /// next power of two for the remaining heads.
    init(heads: Int, spec: ALiBiSpec) {
        self.spec = spec
        var closest = 1
        while closest * 2 <= heads { closest *= 2 }
        let base = Float(pow(2, -pow(2, -(log2(Double(closest)) - 3))))
        var slopes = (1...closest).map { powf(base, Float($0)) }
        if closest != heads {
            let extraBase = Float(pow(2, -pow(2, -(log2(Double(2 * closest)) - 3))))
            let remaining = min(closest, heads - closest)
            slopes += stride(from: 1, to: 1 + 2 * remaining, by: 2).map { powf(extraBase, Float($0)) }
        }
        self.slopes = slopes
    }

    /// The bias of each head for keys at positions 0..<keys, [heads][keys].
    func table(keys: Int) -> [Float] {
        var table = [Float](repeating: 0, count: slopes.count * keys)
        for (h, slope) in slopes.enumerated() {
            let s = spec.bfloat16 ? Self.bfloat16(slope) : slope
            for k in 0..<keys {
                let bias = spec.bfloat16 ? Self.bfloat16(s * Float(k)) : s * Float(k)
                table[h * keys + k] = bias * spec.scale
            }
        }
        return table
    }

    /// x rounded to bfloat16 (nearest even), as float.
    static func bfloat16(_ x: Float) -> Float {
        let bits = x.bitPattern
        let rounded = (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000
        return Float(bitPattern: rounded)
    }
}
