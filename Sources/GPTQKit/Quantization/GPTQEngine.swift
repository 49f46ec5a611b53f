/// Where the pipeline accumulates GPTQ's Hessians and quantizes the weights: the CPU
/// (HessianAccumulator, GPTQ.quantize) or an NVIDIA GPU (CUDAHessian, CUDAGPTQ). Either
/// gives the same GPTQResult layout, so packing and saving do not care which ran.
public protocol GPTQEngine {
    associatedtype Hessian
    /// Where the work runs, for the log.
    var description: String { get }
    func makeHessian(columns: Int) throws -> Hessian
    /// Adds `count` input rows ([count, columns] row-major, host memory) from one sample.
    func add(_ rows: UnsafePointer<Float>, count: Int, to hessian: inout Hessian) throws
    func quantize(weight: [Float], hessian: Hessian, config: QuantizeConfig) throws -> GPTQResult
}

/// GPTQ on the CPU (LAPACK and OpenBLAS).
public struct CPUGPTQEngine: GPTQEngine {
    public init() {}
    public var description: String { "the CPU" }
    public func makeHessian(columns: Int) -> HessianAccumulator { HessianAccumulator(columns: columns) }
    public func add(_ rows: UnsafePointer<Float>, count: Int, to hessian: inout HessianAccumulator) {
        hessian.add(rows, count: count)
    }
    public func quantize(weight: [Float], hessian: HessianAccumulator, config: QuantizeConfig) throws -> GPTQResult {
        try GPTQ.quantize(weight: weight, hessian: hessian, config: config)
    }
}

extension CUDAGPTQ: GPTQEngine {
    public var description: String { "the GPU (\(backend.device.name))" }
    public func makeHessian(columns: Int) throws -> CUDAHessian { try CUDAHessian(backend: backend, columns: columns) }
    public func add(_ rows: UnsafePointer<Float>, count: Int, to hessian: inout CUDAHessian) throws {
        try hessian.add(rows, count: count)
    }
}
