#if canImport(Glibc)
import Glibc
#endif

/// Rotary position embedding angles as transformers computes them: inverse frequencies
/// `1 / base^(2i/dim)` in float32 (then scaled per `rope_scaling`), and the angle of
/// position p as the float32 product p * inv_freq.
struct RotaryEmbedding: Sendable {
    /// headDim/2 inverse frequencies.
    let inverseFrequencies: [Float]

    init(config: ModelConfig) {
        let dim = config.headDim
        // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all float32 tensors.
        var inv = stride(from: 0, to: dim, by: 2).map { i -> Float in
            let exponent = Float(i) / Float(dim)
            return 1 / Float(pow(config.ropeTheta, Double(exponent)))
        }
        switch config.ropeScaling {
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

    /// cos and sin of the angles of positions start..<start+count, each [count, headDim/2].
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
