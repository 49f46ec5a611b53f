import CCUDA
import Synchronization

/// A device with its compiled kernels and cuBLAS handle: what the CUDA linear layers,
/// the CUDA session and the benchmarks run on.
public final class CUDABackend: @unchecked Sendable {
    public let device: CUDADevice
    public let library: KernelLibrary
    public let cublas: CUBLAS
    private let kernels = Mutex<[String: CUDAKernel]>([:])
    /// Whether programmatic dependent launch is possible: compute capability 9.0 or later
    /// and a driver with cuLaunchKernelEx.
    public let supportsDependentLaunch: Bool
    private let dependentLaunchEnabled: Atomic<Bool>

    /// `log` hears when kernels compile (see `KernelLibrary`).
    public init(device: CUDADevice, cacheFolder: String? = nil, log: (@Sendable (String) -> Void)? = nil) throws {
        self.device = device
        library = try KernelLibrary(device: device, cacheFolder: cacheFolder, log: log)
        cublas = try CUBLAS(device: device)
        supportsDependentLaunch = device.computeCapability.major >= 9 && device.libraries.api.pointee.cuLaunchKernelEx != nil
        dependentLaunchEnabled = Atomic(supportsDependentLaunch)
    }

    /// Whether the device has Hopper's warpgroup tensor-core instructions (compute capability
    /// 9.0 exactly: sm_90a code runs nowhere else), which the 4-bit layers use for 33–128 rows.
    public var warpgroupMMA: Bool { device.computeCapability == (9, 0) }

    /// Whether the kernels written for it (the 4-bit tiled kernel) may start before the kernel
    /// ahead of them on the stream finishes (see `CUDAKernel.launch`). On wherever supported;
    /// benchmarks and checks turn it off to compare. Set it before capturing a graph: a captured
    /// launch keeps the setting it was queued with.
    public var dependentLaunch: Bool {
        get { dependentLaunchEnabled.load(ordering: .relaxed) }
        set { dependentLaunchEnabled.store(newValue && supportsDependentLaunch, ordering: .relaxed) }
    }

    /// Opens GPU `ordinal` with the libraries found in the standard places. Where they
    /// are missing this throws `GPTQError.cuda` naming the library.
    public convenience init(ordinal: Int = 0, log: (@Sendable (String) -> Void)? = nil) throws {
        try self.init(device: CUDADevice(ordinal: ordinal), log: log)
    }

    public var stream: CUDAStream { device.stream }

    /// Kernel `name` of `source`, compiled (or read from the cubin cache) on first use.
    public func kernel(_ name: String, in source: KernelSource) throws -> CUDAKernel {
        if let k = kernels.withLock({ $0[name] }) { return k }
        let k = try library.kernel(name, in: source)
        kernels.withLock { $0[name] = k }
        return k
    }

    /// Launches `name` of `source` on the device's stream (`overlappingPrevious`: see
    /// `CUDAKernel.launch`).
    public func launch(_ name: String, in source: KernelSource, grid: (Int, Int, Int), block: (Int, Int, Int),
                       sharedBytes: Int = 0, overlappingPrevious: Bool = false, _ args: [KernelArg]) throws {
        try kernel(name, in: source).launch(grid: grid, block: block, sharedBytes: sharedBytes, stream: device.stream,
                                            overlappingPrevious: overlappingPrevious, args)
    }

    /// One line describing the device and libraries.
    public var summary: String {
        let (major, minor) = device.computeCapability
        return "\(device.name), compute capability \(major).\(minor), \(device.multiprocessorCount) SMs, "
            + "\(device.totalMemory >> 20) MiB, L2 \(device.l2CacheBytes >> 20) MiB, driver \(device.driverVersion / 1000).\(device.driverVersion % 1000 / 10), "
            + "NVRTC \(library.nvrtcVersion.major).\(library.nvrtcVersion.minor), cuBLAS \(cublas.version)"
    }

    // MARK: fills (benchmarks, checks)

    /// Pseudo-random 32-bit words (packed weights of a benchmark model).
    public func fillRandomWords(_ buffer: DeviceBuffer, seed: UInt32) throws {
        let count = buffer.byteCount / 4
        try launch("fill_random_u32", in: LinearKernels.common, grid: (min((count + 255) / 256, 65535), 1, 1), block: (256, 1, 1),
                   [.buffer(buffer), .pointer(UInt64(count)), .int32(Int32(bitPattern: seed))])
    }

    /// Pseudo-random float16 values, uniform in [lo, hi).
    public func fillRandomHalves(_ buffer: DeviceBuffer, seed: UInt32, lo: Float, hi: Float) throws {
        let count = buffer.byteCount / 2
        try launch("fill_random_f16", in: LinearKernels.common, grid: (min((count + 255) / 256, 65535), 1, 1), block: (256, 1, 1),
                   [.buffer(buffer), .pointer(UInt64(count)), .int32(Int32(bitPattern: seed)), .float32(lo), .float32(hi)])
    }

    /// Pseudo-random float32 values, uniform in [lo, hi) (benchmark activations and weights).
    public func fillRandomFloats(_ buffer: DeviceBuffer, seed: UInt32, lo: Float, hi: Float) throws {
        let count = buffer.byteCount / 4
        try launch("fill_random_f32", in: LinearKernels.common, grid: (min((count + 255) / 256, 65535), 1, 1), block: (256, 1, 1),
                   [.buffer(buffer), .pointer(UInt64(count)), .int32(Int32(bitPattern: seed)), .float32(lo), .float32(hi)])
    }
}
