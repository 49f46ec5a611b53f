import CCUDA
import Synchronization

/// Device memory from plain cuMemAlloc (never managed memory), kept on size-bucketed
/// free lists when released so that the model's many same-sized buffers are reused
/// without driver calls. Buckets are a quarter of a power of two apart, so a buffer
/// wastes at most a fifth of its size.
public final class DeviceAllocator: @unchecked Sendable {
    let libraries: CUDALibraries
    private let freeLists = Mutex<[Int: [CUdeviceptr]]>([:])

    init(libraries: CUDALibraries) { self.libraries = libraries }

    /// The size actually reserved for a request of `bytes`.
    public static func bucketSize(_ bytes: Int) -> Int {
        let n = max(bytes, 1)
        if n <= 4096 { return (n + 255) / 256 * 256 }
        let top = Int.bitWidth - 1 - n.leadingZeroBitCount  // floor(log2 n)
        let step = 1 << (top - 2)
        return (n + step - 1) / step * step
    }

    public func allocate(bytes: Int) throws -> DeviceBuffer {
        let size = Self.bucketSize(bytes)
        if let cached = freeLists.withLock({ lists -> CUdeviceptr? in lists[size]?.popLast() }) {
            return DeviceBuffer(address: cached, byteCount: bytes, bucket: size, allocator: self)
        }
        var address: CUdeviceptr = 0
        var result = libraries.api.pointee.cuMemAlloc(&address, size)
        if result == 2 /* CUDA_ERROR_OUT_OF_MEMORY */ {
            trim()
            result = libraries.api.pointee.cuMemAlloc(&address, size)
        }
        try libraries.check(result, "cuMemAlloc(\(size) bytes)")
        return DeviceBuffer(address: address, byteCount: bytes, bucket: size, allocator: self)
    }

    func release(_ address: CUdeviceptr, bucket: Int) {
        freeLists.withLock { $0[bucket, default: []].append(address) }
    }

    /// Returns every cached block to the driver.
    public func trim() {
        let blocks = freeLists.withLock { lists -> [CUdeviceptr] in
            defer { lists = [:] }
            return lists.values.flatMap { $0 }
        }
        for block in blocks { _ = libraries.api.pointee.cuMemFree(block) }
    }

    /// Bytes held on the free lists.
    public var cachedBytes: Int { freeLists.withLock { $0.reduce(0) { $0 + $1.key * $1.value.count } } }
}

/// A device allocation; it goes back to its allocator's free list when released.
public final class DeviceBuffer: @unchecked Sendable {
    public let address: CUdeviceptr
    public let byteCount: Int
    let bucket: Int
    let allocator: DeviceAllocator

    init(address: CUdeviceptr, byteCount: Int, bucket: Int, allocator: DeviceAllocator) {
        self.address = address
        self.byteCount = byteCount
        self.bucket = bucket
        self.allocator = allocator
    }

    deinit { allocator.release(address, bucket: bucket) }

    private var api: ccuda_api { allocator.libraries.api.pointee }

    /// Host to device, ordered on `stream` and finished when this returns.
    public func copy(from host: UnsafeRawPointer, bytes: Int, offset: Int = 0, stream: CUDAStream) throws {
        precondition(offset + bytes <= byteCount, "upload past the end of the buffer")
        try allocator.libraries.check(api.cuMemcpyHtoDAsync(address + CUdeviceptr(offset), host, bytes, stream.handle), "cuMemcpyHtoDAsync(\(bytes) bytes)")
        try stream.synchronize()
    }

    /// Device to host, after the work queued on `stream` before it.
    public func copy(to host: UnsafeMutableRawPointer, bytes: Int, offset: Int = 0, stream: CUDAStream) throws {
        precondition(offset + bytes <= byteCount, "download past the end of the buffer")
        try allocator.libraries.check(api.cuMemcpyDtoHAsync(host, address + CUdeviceptr(offset), bytes, stream.handle), "cuMemcpyDtoHAsync(\(bytes) bytes)")
        try stream.synchronize()
    }

    /// Device to device, queued on `stream`.
    public func copy(from source: DeviceBuffer, bytes: Int, sourceOffset: Int = 0, offset: Int = 0, stream: CUDAStream) throws {
        precondition(offset + bytes <= byteCount && sourceOffset + bytes <= source.byteCount, "device copy out of bounds")
        try allocator.libraries.check(api.cuMemcpyDtoDAsync(address + CUdeviceptr(offset), source.address + CUdeviceptr(sourceOffset), bytes, stream.handle), "cuMemcpyDtoDAsync(\(bytes) bytes)")
    }

    /// Sets every byte to `value`, queued on `stream`.
    public func fill(byte value: UInt8, stream: CUDAStream) throws {
        try allocator.libraries.check(api.cuMemsetD8Async(address, value, byteCount, stream.handle), "cuMemsetD8Async(\(byteCount) bytes)")
    }
}
