#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The real test model, SmolLM2-135M-Instruct, as scripts/fetch-model.sh converts it into
/// ${GPTQ_CACHE:-~/.cache/swift-gptq}/SmolLM2-135M-Instruct. Tests that need it use
/// `.enabled(if: RealModel.folder != nil)`.
enum RealModel {
    /// The converted Hugging Face folder (float16), or nil when the model has not been fetched.
    static let folder: String? = {
        let cache: String
        if let env = getenv("GPTQ_CACHE") { cache = String(cString: env) }
        else if let home = getenv("HOME") { cache = String(cString: home) + "/.cache/swift-gptq" }
        else { return nil }
        let folder = cache + "/SmolLM2-135M-Instruct"
        // fetch-model.sh writes this marker last, after the folder is complete.
        return access(folder + "/.fetch-complete", F_OK) == 0 ? folder : nil
    }()

    /// The Q4_1 GGUF file the folder was converted from.
    static var gguf: String? { folder.map { $0 + "/SmolLM2-135M-Instruct.Q4_1.gguf" } }
}
