#if canImport(Glibc)
import Glibc
#endif
#if FUZZING
import CLibFuzzer
#endif
import GPTQKit

/// `gptq-fuzz TARGET [libFuzzer flags and corpus folders]`, built with
/// `-sanitize=fuzzer -DFUZZING` (scripts/fuzz.sh), fuzzes one parser. Built plainly,
/// `gptq-fuzz TARGET FILE...` replays inputs (a crash file, a corpus) through the same
/// code and prints what each gives, so that a crash is reproduced without libFuzzer.
@main
struct FuzzMain {
    nonisolated(unsafe) static var target: FuzzTarget!
    /// The scratch file inputs are written to, one per process.
    nonisolated(unsafe) static var scratch = ""

    static func main() {
        let arguments = CommandLine.arguments
        guard arguments.count >= 2, let target = FuzzTarget.all.first(where: { $0.name == arguments[1] }) else {
            printError("usage: gptq-fuzz TARGET [libFuzzer flags | FILE...]; targets: \(FuzzTarget.all.map(\.name).joined(separator: " "))")
            exit(2)
        }
        Self.target = target
        let folder = FileIO.isDirectory("/dev/shm") ? "/dev/shm" : "/tmp"
        scratch = "\(folder)/gptq-fuzz-\(getpid()).\(target.fileExtension)"
        defer { FileIO.remove(scratch) }
        #if FUZZING
        // libFuzzer sees the program name and its own flags, not the target name.
        var argv: [UnsafeMutablePointer<CChar>?] = ([arguments[0]] + arguments.dropFirst(2)).map { strdup($0) } + [nil]
        var argc = Int32(argv.count - 1)
        let status = argv.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var base: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = buffer.baseAddress
            return LLVMFuzzerRunDriver(&argc, &base) { data, size in
                FuzzMain.runOne(Array(UnsafeBufferPointer(start: data, count: size)))
                return 0
            }
        }
        exit(status)
        #else
        for path in arguments.dropFirst(2) {
            do {
                let outcome = runOne(try FileIO.readAll(path: path))
                print("\(path): \(outcome)")
            } catch {
                print("\(path): cannot read: \(error)")
            }
        }
        #endif
    }

    /// Runs the target on one input; returns "ok" or the error it reported.
    @discardableResult
    static func runOne(_ bytes: [UInt8]) -> String {
        do {
            try FileIO.writeAtomically(path: scratch, bytes: bytes)
            try target.run(bytes, scratch)
            return "ok"
        } catch {
            return "error: \(error)"
        }
    }

    static func printError(_ line: String) {
        var text = line + "\n"
        text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}
