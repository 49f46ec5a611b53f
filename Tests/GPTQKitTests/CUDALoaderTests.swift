#if canImport(Glibc)
import Glibc
#endif
import Testing
import CCUDA
import GPTQKit

/// What the CUDA backend does on a machine without a GPU (CI): clean failures that
/// name the missing library, and the pure parts (cache keys, allocator buckets).
@Suite struct CUDALoaderTests {
    func cudaMessage(_ body: () throws -> Void) -> String? {
        do { try body() } catch let GPTQError.cuda(message) { return message } catch { return "unexpected \(error)" }
        return nil
    }

    @Test func missingDriverIsNamedWithEveryPathTried() {
        let message = cudaMessage {
            _ = try CUDALibraries(candidates: .init(driver: ["/nonexistent/libcuda.so.1", "/also/missing/libcuda.so"],
                                                    nvrtc: ["libnvrtc.so"], cublas: ["libcublas.so"]))
        }
        #expect(message?.contains("libcuda.so.1") == true)
        #expect(message?.contains("/nonexistent/libcuda.so.1:/also/missing/libcuda.so") == true)
    }

    @Test func missingNVRTCIsNamedOnceTheDriverOpens() {
        // libc stands in for a driver that opens: the next library is the one reported.
        let message = cudaMessage {
            _ = try CUDALibraries(candidates: .init(driver: ["libc.so.6"], nvrtc: ["/nonexistent/libnvrtc.so.13"], cublas: ["libcublas.so"]))
        }
        #expect(message?.contains("NVRTC") == true)
        #expect(message?.contains("/nonexistent/libnvrtc.so.13") == true)
    }

    @Test func libraryWithoutTheEntryPointsNamesTheSymbol() {
        let message = cudaMessage {
            _ = try CUDALibraries(candidates: .init(driver: ["libc.so.6"], nvrtc: ["libc.so.6"], cublas: ["libc.so.6"]))
        }
        #expect(message == "libcuda: symbol cuInit is missing")
    }

    @Test func launchConfigurationHasCUDAsLayout() {
        // cuda.h (CUDA 12/13, x86-64): CUlaunchAttribute is an int id padded to 8 bytes and a
        // 64-byte value union; CUlaunchConfig is 7 unsigned ints, then the stream, the attribute
        // pointer and their count.
        #expect(MemoryLayout<CUlaunchAttribute>.size == 72)
        #expect(MemoryLayout<CUlaunchAttribute>.offset(of: \.value) == 8)
        #expect(MemoryLayout<CUlaunchConfig>.offset(of: \.sharedMemBytes) == 24)
        #expect(MemoryLayout<CUlaunchConfig>.offset(of: \.hStream) == 32)
        #expect(MemoryLayout<CUlaunchConfig>.offset(of: \.attrs) == 40)
        #expect(MemoryLayout<CUlaunchConfig>.offset(of: \.numAttrs) == 48)
        #expect(MemoryLayout<CUlaunchConfig>.size == 56)
        #expect(CCUDA_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION == 6)
    }

    @Test func environmentOverridesTheLibraryCandidates() {
        let c = CUDALibraries.Candidates.standard(environment: ["GPTQ_CUDA_DRIVER": "/a/libcuda.so.1:/b/libcuda.so.1", "CUDA_HOME": "/opt/cuda"])
        #expect(c.driver == ["/a/libcuda.so.1", "/b/libcuda.so.1"])
        #expect(c.nvrtc.first == "libnvrtc.so.13")
        #expect(c.nvrtc.contains("/opt/cuda/lib64/libnvrtc.so.12"))
        #expect(c.cublas.contains("/usr/local/cuda/lib64/libcublas.so.13"))
    }

    @Test func fnvHashMatchesPublishedVectors() {
        // Test vectors of the FNV-1a 64-bit reference (Fowler/Noll/Vo).
        #expect(KernelLibrary.fnv1a64([]) == 0xcbf2_9ce4_8422_2325)
        #expect(KernelLibrary.fnv1a64(Array("a".utf8)) == 0xaf63_dc4c_8601_ec8c)
        #expect(KernelLibrary.fnv1a64(Array("foobar".utf8)) == 0x8594_4171_f739_67e8)
    }

    @Test func cubinCacheKeyChangesWithEverythingTheCodeDependsOn() {
        let source = KernelSource(name: "gemv", code: "extern \"C\" __global__ void k() {}")
        let base = KernelLibrary.cacheFileName(source: source, architecture: "sm_90", driverVersion: 13000, nvrtcVersion: (13, 0))
        #expect(base.hasPrefix("gemv-") && base.hasSuffix(".cubin") && base.count == "gemv-".count + 32 + ".cubin".count)
        #expect(base == KernelLibrary.cacheFileName(source: source, architecture: "sm_90", driverVersion: 13000, nvrtcVersion: (13, 0)))
        let variants = [
            KernelLibrary.cacheFileName(source: KernelSource(name: "gemv", code: source.code + " "), architecture: "sm_90", driverVersion: 13000, nvrtcVersion: (13, 0)),
            KernelLibrary.cacheFileName(source: source, architecture: "sm_80", driverVersion: 13000, nvrtcVersion: (13, 0)),
            KernelLibrary.cacheFileName(source: source, architecture: "sm_90", driverVersion: 12080, nvrtcVersion: (13, 0)),
            KernelLibrary.cacheFileName(source: source, architecture: "sm_90", driverVersion: 13000, nvrtcVersion: (12, 8)),
            KernelLibrary.cacheFileName(source: source, architecture: "sm_90", driverVersion: 13000, nvrtcVersion: (13, 0), options: ["-G"]),
        ]
        #expect(Set(variants + [base]).count == variants.count + 1)
    }

    @Test func cacheFolderFollowsGPTQCacheThenHome() {
        #expect(KernelLibrary.defaultCacheFolder(environment: ["GPTQ_CACHE": "/x", "HOME": "/h"]) == "/x/cuda")
        #expect(KernelLibrary.defaultCacheFolder(environment: ["HOME": "/h"]) == "/h/.cache/swift-gptq/cuda")
    }

    @Test func allocatorBucketsBoundTheWaste() {
        var previous = 0
        for bytes in [1, 255, 256, 257, 4096, 4097, 5000, 65536, 65537, 1 << 20, 3 << 20, (1 << 30) + 1, 7_000_000_001] {
            let size = DeviceAllocator.bucketSize(bytes)
            #expect(size >= bytes && size % 256 == 0)
            #expect(bytes <= 4096 || Double(size) <= Double(bytes) * 1.25)
            #expect(size >= previous)
            previous = size
        }
        #expect(DeviceAllocator.bucketSize(5000) == 5120)
        #expect(DeviceAllocator.bucketSize(1 << 20) == 1 << 20)
    }

    @Test(arguments: [
        ["generate", "--prompt", "Hello"], ["chat"], ["perplexity", "--text", "/dev/null"], ["bench", "--prompt-tokens", "4"],
    ])
    func deviceCudaWithoutTheDriverNamesIt(command: [String]) throws {
        let binary = try #require(CommandLineTool.path("gptq"))
        // The override makes the driver missing on GPU machines too.
        setenv("GPTQ_CUDA_DRIVER", "/nonexistent/libcuda.so.1", 1)
        let run = try CommandLineTool.run(binary, [command[0], "--model", Fixtures.path("arch/llama"), "--device", "cuda"] + command.dropFirst())
        #expect(run.status != 0)
        #expect(run.standardError.contains("libcuda"))
        #expect(run.standardError.contains("/nonexistent/libcuda.so.1"))
        #expect(run.standardOutput.isEmpty)
    }

    /// gpu-bench checks its arguments before it looks for a GPU.
    @Test(arguments: [(["--group-size", "48"], "--group-size 48 must be a multiple of 8 that divides the inputs (4096)"),
                      (["--group-size", "4"], "--group-size 4 must be a multiple of 8"),
                      (["--batch", "600"], "--batch must be 1 to 512 (got 600)")])
    func gpuBenchNamesABadArgument(arguments: [String], message: String) throws {
        let binary = try #require(CommandLineTool.path("gptq"))
        let run = try CommandLineTool.run(binary, ["gpu-bench", "--kernels"] + arguments)
        #expect(run.status != 0)
        #expect(run.standardError.contains(message), "\(run.standardError)")
    }
}
