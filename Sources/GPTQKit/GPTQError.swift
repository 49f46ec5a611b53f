/// Every failure the library reports. Each case names the file, tensor, field or
/// argument at fault, so that a user can act on the message alone.
public enum GPTQError: Error, CustomStringConvertible, Equatable {
    /// A file that cannot be read or is not what its name promises.
    case invalidFile(path: String, reason: String)
    /// A tensor the model needs is not in the checkpoint.
    case missingTensor(name: String, path: String)
    /// A tensor is present but its shape or dtype is not the one the model needs.
    case badTensor(name: String, path: String, reason: String)
    /// A configuration field is missing, malformed or has a value we do not support.
    case badConfig(field: String, path: String, reason: String)
    /// An argument of a call or of the command line is out of range.
    case invalidArgument(String)
    /// Something valid that this version does not implement.
    case unsupported(String)
    /// A failure in the CUDA backend, naming the call.
    case cuda(String)
    /// A result that came out NaN or infinite (non-finite weights or config values upstream).
    case nonFinite(String)

    public var description: String {
        switch self {
        case let .invalidFile(path, reason): return "\(path): \(reason)"
        case let .missingTensor(name, path): return "\(path): missing tensor '\(name)'"
        case let .badTensor(name, path, reason): return "\(path): tensor '\(name)': \(reason)"
        case let .badConfig(field, path, reason): return "\(path): field '\(field)': \(reason)"
        case let .invalidArgument(message): return message
        case let .unsupported(message): return "unsupported: \(message)"
        case let .cuda(message): return "CUDA: \(message)"
        case let .nonFinite(message): return "not a finite number: \(message)"
        }
    }
}
