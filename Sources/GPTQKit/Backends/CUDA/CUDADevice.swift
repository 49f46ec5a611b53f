import CCUDA

/// One GPU: its primary context, its properties, a caching allocator and the stream
/// that swift-gptq's work is queued on. Every driver call's result is checked and a
/// failure names the call.
public final class CUDADevice: @unchecked Sendable {
    public let libraries: CUDALibraries
    public let ordinal: Int
    let device: CUdevice
    let context: CUcontext
    public let name: String
    public let multiprocessorCount: Int
    public let computeCapability: (major: Int, minor: Int)
    /// As cuDriverGetVersion reports it, e.g. 13000 for CUDA 13.0.
    public let driverVersion: Int
    public let totalMemory: Int
    public let l2CacheBytes: Int
    /// The most dynamic shared memory one block may ask for (after cuFuncSetAttribute).
    public let maxSharedMemoryPerBlock: Int
    public private(set) var allocator: DeviceAllocator!
    /// The stream every operation of this device runs on unless told otherwise.
    public private(set) var stream: CUDAStream!

    /// Opens the CUDA libraries (`libraries`, else those found in the standard places),
    /// initialises the driver and makes device `ordinal`'s primary context current.
    public init(ordinal: Int = 0, libraries: CUDALibraries? = nil) throws {
        let libs = try libraries ?? CUDALibraries.shared()
        self.libraries = libs
        self.ordinal = ordinal
        let api = libs.api.pointee
        try libs.check(api.cuInit(0), "cuInit")
        var version: Int32 = 0
        try libs.check(api.cuDriverGetVersion(&version), "cuDriverGetVersion")
        driverVersion = Int(version)
        var count: Int32 = 0
        try libs.check(api.cuDeviceGetCount(&count), "cuDeviceGetCount")
        guard ordinal >= 0, ordinal < Int(count) else {
            throw GPTQError.cuda("no CUDA device \(ordinal): cuDeviceGetCount found \(count)")
        }
        var dev: CUdevice = 0
        try libs.check(api.cuDeviceGet(&dev, Int32(ordinal)), "cuDeviceGet(\(ordinal))")
        device = dev
        var nameBytes = [CChar](repeating: 0, count: 256)
        try libs.check(api.cuDeviceGetName(&nameBytes, 255, dev), "cuDeviceGetName")
        name = String(decoding: nameBytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        func attribute(_ id: Int32, _ what: String) throws -> Int {
            var value: Int32 = 0
            try libs.check(api.cuDeviceGetAttribute(&value, id, dev), "cuDeviceGetAttribute(\(what))")
            return Int(value)
        }
        multiprocessorCount = try attribute(16, "MULTIPROCESSOR_COUNT")
        computeCapability = (try attribute(75, "COMPUTE_CAPABILITY_MAJOR"), try attribute(76, "COMPUTE_CAPABILITY_MINOR"))
        l2CacheBytes = try attribute(38, "L2_CACHE_SIZE")
        maxSharedMemoryPerBlock = try attribute(97, "MAX_SHARED_MEMORY_PER_BLOCK_OPTIN")
        var total = 0
        try libs.check(api.cuDeviceTotalMem(&total, dev), "cuDeviceTotalMem")
        totalMemory = total
        var ctx: CUcontext?
        try libs.check(api.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain")
        guard let ctx else { throw GPTQError.cuda("cuDevicePrimaryCtxRetain returned no context") }
        context = ctx
        try libs.check(api.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        allocator = DeviceAllocator(libraries: libs)
        stream = try CUDAStream(libraries: libs)
    }

    deinit {
        stream = nil
        allocator?.trim()
        _ = libraries.api.pointee.cuDevicePrimaryCtxRelease(device)
    }

    /// The NVRTC target for this device, e.g. "sm_90".
    public var architecture: String { "sm_\(computeCapability.major)\(computeCapability.minor)" }

    /// Binds this device's context to the calling thread (CUDA contexts are per thread).
    public func makeCurrent() throws {
        try libraries.check(libraries.api.pointee.cuCtxSetCurrent(context), "cuCtxSetCurrent")
    }

    public func synchronize() throws { try stream.synchronize() }

    /// Free and total device memory in bytes.
    public func memoryInfo() throws -> (free: Int, total: Int) {
        var free = 0, total = 0
        try libraries.check(libraries.api.pointee.cuMemGetInfo(&free, &total), "cuMemGetInfo")
        return (free, total)
    }

    // MARK: buffers

    public func allocate(bytes: Int) throws -> DeviceBuffer { try allocator.allocate(bytes: bytes) }

    /// A device copy of `values`, uploaded synchronously.
    public func upload<T>(_ values: [T]) throws -> DeviceBuffer {
        let buffer = try allocate(bytes: values.count * MemoryLayout<T>.stride)
        try values.withUnsafeBytes { try buffer.copy(from: $0.baseAddress!, bytes: $0.count, stream: stream) }
        return buffer
    }

    /// A device copy of a tensor's bytes (the tensor kept alive until the copy is done: a
    /// pointer taken from a temporary's storage must not outlive it).
    public func upload(_ tensor: Tensor) throws -> DeviceBuffer {
        try withExtendedLifetime(tensor) { try upload(UnsafeRawBufferPointer(start: tensor.raw, count: tensor.byteCount)) }
    }

    public func upload(_ raw: UnsafeRawBufferPointer) throws -> DeviceBuffer {
        let buffer = try allocate(bytes: raw.count)
        try buffer.copy(from: raw.baseAddress!, bytes: raw.count, stream: stream)
        return buffer
    }

    /// The first `count` elements of `buffer` (after finishing the work queued before).
    public func download<T>(_ buffer: DeviceBuffer, as type: T.Type, count: Int, offset: Int = 0) throws -> [T] {
        precondition((offset + count) * MemoryLayout<T>.stride <= buffer.byteCount, "download past the end of the buffer")
        return try [T](unsafeUninitializedCapacity: count) { out, initialized in
            if count > 0 {
                try buffer.copy(to: out.baseAddress!, bytes: count * MemoryLayout<T>.stride,
                                offset: offset * MemoryLayout<T>.stride, stream: stream)
            }
            initialized = count
        }
    }
}
