#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs the `gptq` executable built beside the test bundle, for end-to-end tests of commands.
enum CommandLineTool {
    struct Run {
        let status: Int32
        let standardOutput: String
        let standardError: String
    }

    /// The executable named `name` in the build folder of the running tests, if built.
    static func path(_ name: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        var folder = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        while let last = folder.last, last != "/" { folder.removeLast() }
        let candidate = folder + name
        return access(candidate, X_OK) == 0 ? candidate : nil
    }

    /// Runs to completion with `input` (small: it must fit a pipe's buffer) on stdin,
    /// collecting stdout and stderr.
    static func run(_ executable: String, _ arguments: [String], input: String = "") throws -> Run {
        var inPipe: [Int32] = [0, 0], outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
        guard pipe(&inPipe) == 0, pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { throw CommandLineToolError.spawn(errno) }
        var bytes = Array(input.utf8)
        precondition(bytes.count < 60_000, "stdin input larger than a pipe buffer")
        if !bytes.isEmpty { _ = write(inPipe[1], &bytes, bytes.count) }
        close(inPipe[1])
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        close(inPipe[0])
        close(outPipe[1])
        close(errPipe[1])
        guard spawned == 0 else { throw CommandLineToolError.spawn(spawned) }
        // Outputs are small; reading stdout to the end first cannot block on a full stderr pipe
        // for the commands tested, which write stderr only at the end or on failure.
        let out = readAll(outPipe[0]), err = readAll(errPipe[0])
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return Run(status: (status >> 8) & 0xFF, standardOutput: out, standardError: err)
    }

    private static func readAll(_ fd: Int32) -> String {
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

enum CommandLineToolError: Error { case spawn(Int32) }
