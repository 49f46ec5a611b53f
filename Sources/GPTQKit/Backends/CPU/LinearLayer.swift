/// A linear layer y = x·Wᵀ (+ b) on the CPU, whatever its weights are stored as
/// (float16/bfloat16/float32 memory-mapped, or GPTQ-quantized).
/// This is the boundary between the model code and the weight formats.
public protocol LinearLayer: AnyObject, Sendable {
    var inFeatures: Int { get }
    var outFeatures: Int { get }
    /// x: [rows, inFeatures] float32, row-major; y: [rows, outFeatures] float32.
    func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>)
}

/// Bytes one forward streams from memory (weights, scales, zeros, bias): `gptq bench`
/// turns this into the bandwidth a decode step achieves. nil where a layer does not say.
public protocol WeightFootprint {
    var weightBytes: Int { get }
}

/// A linear layer the training backward pass runs through (Backends/CPU/BlockBackward.swift).
/// The base weights stay frozen: a plain layer only passes the gradient on to its input; a
/// layer with trainable parameters (LoRALinear) also accumulates their gradients.
public protocol DifferentiableLinear: LinearLayer {
    /// dx [rows, inFeatures] = dy [rows, outFeatures] · W (+ the trainable part's term),
    /// overwriting dx. `x` is the input the forward saw (the trainable parts' gradients need it).
    func backward(input x: UnsafePointer<Float>, outputGradient dy: UnsafePointer<Float>, rows: Int,
                  inputGradient dx: UnsafeMutablePointer<Float>)
}
