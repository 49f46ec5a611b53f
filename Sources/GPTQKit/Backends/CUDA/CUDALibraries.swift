#if canImport(Glibc)
import Glibc
#endif
import CCUDA

/// The CUDA driver, NVRTC and cuBLAS, opened at run time. A machine without them
/// builds and runs everything else; asking for the GPU there fails with a message
/// naming the library that is missing.
public final class CUDALibraries: @unchecked Sendable {
    /// The resolved entry points (immutable after loading, alive for the process).
    let api: UnsafePointer<ccuda_api>

    /// Where each library is looked for: the environment overrides (a ':'-separated list
    /// of names or paths in GPTQ_CUDA_DRIVER, GPTQ_NVRTC, GPTQ_CUBLAS), else the sonames
    /// of CUDA 13 and 12, then the toolkit's lib64 folders (the toolkit's libraries are
    /// often not on the loader's path).
    public struct Candidates: Sendable, Equatable {
        public var driver: [String]
        public var nvrtc: [String]
        public var cublas: [String]

        public init(driver: [String], nvrtc: [String], cublas: [String]) {
            self.driver = driver
            self.nvrtc = nvrtc
            self.cublas = cublas
        }

        public static func standard(environment: [String: String] = CUDALibraries.environment()) -> Candidates {
            var dirs: [String] = []
            if let home = environment["CUDA_HOME"] ?? environment["CUDA_PATH"] { dirs.append(home + "/lib64") }
            dirs += ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"]
            func names(_ sonames: [String]) -> [String] { sonames + dirs.flatMap { dir in sonames.map { dir + "/" + $0 } } }
            func list(_ key: String, _ fallback: [String]) -> [String] {
                environment[key].map { $0.split(separator: ":").map(String.init) } ?? fallback
            }
            return Candidates(
                driver: list("GPTQ_CUDA_DRIVER", ["libcuda.so.1", "libcuda.so"]),
                nvrtc: list("GPTQ_NVRTC", names(["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"])),
                cublas: list("GPTQ_CUBLAS", names(["libcublas.so.13", "libcublas.so.12", "libcublas.so"])))
        }
    }

    /// Opens the libraries from `candidates`. Throws `GPTQError.cuda` naming the first
    /// library (with every path tried) or symbol that could not be found.
    public init(candidates: Candidates) throws {
        var message = [CChar](repeating: 0, count: 4096)
        guard let table = ccuda_open(candidates.driver.joined(separator: ":"), candidates.nvrtc.joined(separator: ":"),
                                     candidates.cublas.joined(separator: ":"), &message, message.count) else {
            throw GPTQError.cuda(String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        api = table
    }

    private static let standardLoad: Result<CUDALibraries, GPTQError> = {
        do { return .success(try CUDALibraries(candidates: .standard())) }
        catch let error as GPTQError { return .failure(error) }
        catch { return .failure(.cuda("\(error)")) }
    }()

    /// The libraries found in the standard places, opened once per process.
    public static func shared() throws -> CUDALibraries { try standardLoad.get() }

    public static func environment() -> [String: String] {
        var result: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { result[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return result
    }

    // MARK: result checking

    /// Throws unless `result` is CUDA_SUCCESS, naming `call` and the driver's error name.
    func check(_ result: CUresult, _ call: @autoclosure () -> String) throws {
        guard result != 0 else { return }
        var name: UnsafePointer<CChar>?
        var text: UnsafePointer<CChar>?
        _ = api.pointee.cuGetErrorName(result, &name)
        _ = api.pointee.cuGetErrorString(result, &text)
        let n = name.map { String(cString: $0) } ?? "CUDA error \(result)"
        let t = text.map { " (\(String(cString: $0)))" } ?? ""
        throw GPTQError.cuda("\(call()): \(n)\(t)")
    }

    func checkNVRTC(_ result: nvrtcResult, _ call: @autoclosure () -> String) throws {
        guard result != 0 else { return }
        let text = api.pointee.nvrtcGetErrorString(result).map { String(cString: $0) } ?? "NVRTC error \(result)"
        throw GPTQError.cuda("\(call()): \(text)")
    }

    func checkCUBLAS(_ status: cublasStatus_t, _ call: @autoclosure () -> String) throws {
        guard status != 0 else { return }
        throw GPTQError.cuda("\(call()): \(Self.cublasStatusName(status))")
    }

    static func cublasStatusName(_ status: cublasStatus_t) -> String {
        switch status {
        case 1: return "CUBLAS_STATUS_NOT_INITIALIZED"
        case 3: return "CUBLAS_STATUS_ALLOC_FAILED"
        case 7: return "CUBLAS_STATUS_INVALID_VALUE"
        case 8: return "CUBLAS_STATUS_ARCH_MISMATCH"
        case 11: return "CUBLAS_STATUS_MAPPING_ERROR"
        case 13: return "CUBLAS_STATUS_EXECUTION_FAILED"
        case 14: return "CUBLAS_STATUS_INTERNAL_ERROR"
        case 15: return "CUBLAS_STATUS_NOT_SUPPORTED"
        case 16: return "CUBLAS_STATUS_LICENSE_ERROR"
        default: return "cuBLAS status \(status)"
        }
    }
}
