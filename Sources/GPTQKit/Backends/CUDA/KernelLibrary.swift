#if canImport(Glibc)
import Glibc
#endif
import CCUDA
import Synchronization

/// CUDA C source kept in the package (Backends/CUDA/Kernels), compiled at run time.
public struct KernelSource: Sendable {
    public let name: String
    public let code: String
    /// Compiled for the architecture's own features (sm_90a for compute capability 9.0, which
    /// wgmma needs): such a cubin runs only on that exact architecture.
    public let architectureSpecific: Bool
    public init(name: String, code: String, architectureSpecific: Bool = false) {
        self.name = name
        self.code = code
        self.architectureSpecific = architectureSpecific
    }
}

/// An argument of a kernel launch, as the kernel's parameter list declares it.
public enum KernelArg {
    case pointer(CUdeviceptr)
    case int32(Int32)
    case float32(Float)
    case float64(Double)

    public static func buffer(_ b: DeviceBuffer, offset bytes: Int = 0) -> KernelArg { .pointer(b.address + CUdeviceptr(bytes)) }
    public static func int(_ v: Int) -> KernelArg { .int32(Int32(v)) }
}

/// A compiled `__global__` function.
public final class CUDAKernel: @unchecked Sendable {
    let libraries: CUDALibraries
    let function: CUfunction
    public let name: String

    init(libraries: CUDALibraries, function: CUfunction, name: String) {
        self.libraries = libraries
        self.function = function
        self.name = name
    }

    /// Allows more than 48 KB of dynamic shared memory.
    public func setMaxDynamicSharedMemory(_ bytes: Int) throws {
        try libraries.check(libraries.api.pointee.cuFuncSetAttribute(function, 8 /* MAX_DYNAMIC_SHARED_SIZE_BYTES */, Int32(bytes)),
                            "cuFuncSetAttribute(\(name), MAX_DYNAMIC_SHARED_SIZE_BYTES, \(bytes))")
    }

    /// Registers a thread (the compiler's choice under the kernel's launch bounds).
    public func registers() throws -> Int {
        var value: Int32 = 0
        try libraries.check(libraries.api.pointee.cuFuncGetAttribute(&value, 4 /* NUM_REGS */, function), "cuFuncGetAttribute(\(name), NUM_REGS)")
        return Int(value)
    }

    /// Blocks of `blockThreads` threads and `sharedBytes` of dynamic shared memory that fit on one
    /// multiprocessor at once.
    public func residentBlocks(blockThreads: Int, sharedBytes: Int) throws -> Int {
        var blocks: Int32 = 0
        try libraries.check(libraries.api.pointee.cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, function, Int32(blockThreads), sharedBytes),
                            "cuOccupancyMaxActiveBlocksPerMultiprocessor(\(name), \(blockThreads) threads)")
        return Int(blocks)
    }

    /// Queues the kernel on `stream`. Each argument travels in its own 8-byte slot, which
    /// is what the driver reads for 4- and 8-byte parameters alike. `overlappingPrevious`
    /// launches it with programmatic stream serialization (Hopper's programmatic dependent
    /// launch, through cuLaunchKernelEx): its blocks may start while the kernel before it on
    /// the stream still runs, so the kernel must execute `griddepcontrol.wait` before it reads
    /// what earlier work wrote or writes anything; `CUDABackend.dependentLaunch` says where
    /// the driver and device support it.
    public func launch(grid: (Int, Int, Int), block: (Int, Int, Int), sharedBytes: Int = 0,
                       stream: CUDAStream, overlappingPrevious: Bool = false, _ args: [KernelArg]) throws {
        var slots = [UInt64](repeating: 0, count: args.count)
        for (i, arg) in args.enumerated() {
            switch arg {
            case let .pointer(p): slots[i] = p
            case let .int32(v): slots[i] = UInt64(UInt32(bitPattern: v))
            case let .float32(v): slots[i] = UInt64(v.bitPattern)
            case let .float64(v): slots[i] = v.bitPattern
            }
        }
        let api = libraries.api.pointee
        let launchEx = overlappingPrevious ? api.cuLaunchKernelEx : nil
        let result = slots.withUnsafeMutableBytes { raw -> CUresult in
            var params: [UnsafeMutableRawPointer?] = (0..<args.count).map { raw.baseAddress! + 8 * $0 }
            return params.withUnsafeMutableBufferPointer { p in
                guard let launchEx else {
                    return api.cuLaunchKernel(function, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2),
                                              UInt32(block.0), UInt32(block.1), UInt32(block.2),
                                              UInt32(sharedBytes), stream.handle, p.baseAddress, nil)
                }
                var attribute = CUlaunchAttribute()
                attribute.id = Int32(CCUDA_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION)
                attribute.value.programmaticStreamSerializationAllowed = 1
                return withUnsafeMutablePointer(to: &attribute) { attributes in
                    var config = CUlaunchConfig(gridDimX: UInt32(grid.0), gridDimY: UInt32(grid.1), gridDimZ: UInt32(grid.2),
                                                blockDimX: UInt32(block.0), blockDimY: UInt32(block.1), blockDimZ: UInt32(block.2),
                                                sharedMemBytes: UInt32(sharedBytes), hStream: stream.handle, attrs: attributes, numAttrs: 1)
                    return launchEx(&config, function, p.baseAddress, nil)
                }
            }
        }
        try libraries.check(result, "\(launchEx == nil ? "cuLaunchKernel" : "cuLaunchKernelEx")(\(name), grid \(grid), block \(block))")
    }
}

/// Compiles kernel sources with NVRTC for the device's architecture and keeps the
/// cubins on disk, so that only the first run on a machine pays for compilation.
public final class KernelLibrary: @unchecked Sendable {
    public let device: CUDADevice
    public let cacheFolder: String
    public let nvrtcVersion: (major: Int, minor: Int)
    /// Loaded modules by source name, held as addresses (handles are not Sendable).
    private let modules = Mutex<[String: Int]>([:])
    /// Told when a source compiles and how long it took (seconds a source on an H100).
    let log: (@Sendable (String) -> Void)?

    /// Options every kernel is compiled with (besides the architecture).
    public static let options = ["--std=c++17", "-default-device", "-lineinfo"]

    public init(device: CUDADevice, cacheFolder: String? = nil, log: (@Sendable (String) -> Void)? = nil) throws {
        self.device = device
        self.cacheFolder = cacheFolder ?? Self.defaultCacheFolder()
        self.log = log
        var major: Int32 = 0, minor: Int32 = 0
        try device.libraries.checkNVRTC(device.libraries.api.pointee.nvrtcVersion(&major, &minor), "nvrtcVersion")
        nvrtcVersion = (Int(major), Int(minor))
    }

    /// ${GPTQ_CACHE:-~/.cache/swift-gptq}/cuda
    public static func defaultCacheFolder(environment: [String: String] = CUDALibraries.environment()) -> String {
        let root = environment["GPTQ_CACHE"] ?? ((environment["HOME"] ?? "/tmp") + "/.cache/swift-gptq")
        return root + "/cuda"
    }

    /// The file name of a cubin: the source's name and a hash of everything the
    /// compiled code depends on, so a change to any of them compiles afresh.
    public static func cacheFileName(source: KernelSource, architecture: String, driverVersion: Int,
                                     nvrtcVersion: (major: Int, minor: Int), options: [String] = options) -> String {
        let key = [source.code, architecture, "driver \(driverVersion)", "nvrtc \(nvrtcVersion.major).\(nvrtcVersion.minor)"] + options
        let bytes = Array(key.joined(separator: "\u{0}").utf8)
        let hash = fnv1a64(bytes, seed: 0xcbf2_9ce4_8422_2325), hash2 = fnv1a64(bytes, seed: 0x84222325_cbf29ce4)
        return "\(source.name)-\(hex(hash))\(hex(hash2)).cubin"
    }

    /// FNV-1a, 64-bit.
    public static func fnv1a64(_ bytes: [UInt8], seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
        var h = seed
        for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        return h
    }

    private static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    /// `name` from the module compiled from `source` (compiled or loaded on first use).
    public func kernel(_ name: String, in source: KernelSource) throws -> CUDAKernel {
        let module = try self.module(source)
        var function: CUfunction?
        try device.libraries.check(device.libraries.api.pointee.cuModuleGetFunction(&function, module, name),
                                   "cuModuleGetFunction(\(source.name).\(name))")
        return CUDAKernel(libraries: device.libraries, function: function!, name: name)
    }

    func module(_ source: KernelSource) throws -> CUmodule {
        if let m = modules.withLock({ $0[source.name] }) { return OpaquePointer(bitPattern: m)! }
        let file = Self.cacheFileName(source: source, architecture: architecture(of: source), driverVersion: device.driverVersion,
                                      nvrtcVersion: nvrtcVersion)
        let path = FileIO.join(cacheFolder, file)
        var cubin: [UInt8]
        if FileIO.exists(path), let cached = try? FileIO.readAll(path: path), !cached.isEmpty {
            cubin = cached
        } else {
            log?("compiling the '\(source.name)' CUDA kernels for \(architecture(of: source)) with NVRTC (once: cached in \(cacheFolder))")
            let start = ContinuousClock.now
            cubin = try compile(source)
            let elapsed = (ContinuousClock.now - start).components
            log?("compiled '\(source.name)' in \(format1(Double(elapsed.seconds) + Double(elapsed.attoseconds) * 1e-18)) s")
            // The cache is an optimisation: a read-only home must not stop the GPU path.
            if (try? FileIO.makeDirectory(cacheFolder)) != nil { try? FileIO.writeAtomically(path: path, bytes: cubin) }
        }
        var module: CUmodule?
        try cubin.withUnsafeBytes { raw in
            try device.libraries.check(device.libraries.api.pointee.cuModuleLoadData(&module, raw.baseAddress!),
                                       "cuModuleLoadData(\(source.name))")
        }
        let address = Int(bitPattern: module!)
        modules.withLock { $0[source.name] = address }
        return module!
    }

    /// The architecture `source` compiles for on this device.
    func architecture(of source: KernelSource) -> String { device.architecture + (source.architectureSpecific ? "a" : "") }

    /// NVRTC → cubin for this device; a compile error throws with NVRTC's log.
    func compile(_ source: KernelSource) throws -> [UInt8] {
        let libs = device.libraries
        let api = libs.api.pointee
        var program: nvrtcProgram?
        try libs.checkNVRTC(api.nvrtcCreateProgram(&program, source.code, source.name + ".cu", 0, nil, nil), "nvrtcCreateProgram(\(source.name))")
        defer { _ = api.nvrtcDestroyProgram(&program) }
        let options = ["--gpu-architecture=\(architecture(of: source))"] + Self.options
        var cStrings = options.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        let status = cStrings.withUnsafeMutableBufferPointer { p in
            p.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: p.count) {
                api.nvrtcCompileProgram(program, Int32(options.count), $0)
            }
        }
        if status != 0 {
            var logSize = 0
            _ = api.nvrtcGetProgramLogSize(program, &logSize)
            var log = [CChar](repeating: 0, count: max(logSize, 1))
            _ = api.nvrtcGetProgramLog(program, &log)
            let text = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw GPTQError.cuda("nvrtcCompileProgram(\(source.name), \(options.joined(separator: " "))): \(api.nvrtcGetErrorString(status).map { String(cString: $0) } ?? "error \(status)")\n\(text)")
        }
        var size = 0
        try libs.checkNVRTC(api.nvrtcGetCUBINSize(program, &size), "nvrtcGetCUBINSize(\(source.name))")
        var cubin = [UInt8](repeating: 0, count: size)
        try cubin.withUnsafeMutableBytes { raw in
            try libs.checkNVRTC(api.nvrtcGetCUBIN(program, raw.baseAddress!.assumingMemoryBound(to: CChar.self)), "nvrtcGetCUBIN(\(source.name))")
        }
        return cubin
    }
}

/// `v` with one decimal (compile times here; the GPU checks' tables).
package func format1(_ v: Double) -> String {
    guard v.isFinite else { return "\(v)" }
    let scaled = (v * 10).rounded()
    return "\(Int(scaled) / 10).\(abs(Int(scaled)) % 10)"
}

package func pad(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }
