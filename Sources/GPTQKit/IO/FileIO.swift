#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CKernels
import FoundationEssentials

/// Small POSIX file helpers: whole-file reads, atomic writes, memory maps.
public enum FileIO {
    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public static func fileSize(_ path: String) throws -> Int {
        var st = stat()
        guard stat(path, &st) == 0 else { throw GPTQError.invalidFile(path: path, reason: errnoMessage()) }
        return Int(st.st_size)
    }

    static func errnoMessage() -> String { String(cString: strerror(errno)) }

    /// The most `readAll` reads: far more than any text, JSON or token file we read whole,
    /// and a stop for endless streams such as /dev/zero.
    public static let readLimit = 1 << 30

    /// The whole content of a file, read until end of file: pipes, /dev/stdin and files
    /// under /proc report no size up front, so the size only sizes the first read.
    public static func readAll(path: String, limit: Int = readLimit) throws -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw GPTQError.invalidFile(path: path, reason: "cannot open: \(errnoMessage())") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw GPTQError.invalidFile(path: path, reason: errnoMessage()) }
        guard (st.st_mode & S_IFMT) != S_IFDIR else { throw GPTQError.invalidFile(path: path, reason: "is a folder, expected a file") }
        let tooLarge = GPTQError.invalidFile(path: path, reason: "more than \(limit) bytes to read whole (an endless stream?)")
        guard Int(st.st_size) <= limit else { throw tooLarge }
        var bytes = [UInt8](repeating: 0, count: max(Int(st.st_size), 0) + 1)
        var done = 0
        while true {
            guard done <= limit else { throw tooLarge }
            if done == bytes.count { bytes += [UInt8](repeating: 0, count: min(bytes.count, limit + 1 - done)) }
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
            if n == 0 { break }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw GPTQError.invalidFile(path: path, reason: "read failed: \(errnoMessage())") }
            done += n
        }
        bytes.removeLast(bytes.count - done)
        return bytes
    }

    public static func readText(path: String) throws -> String {
        String(decoding: try readAll(path: path), as: UTF8.self)
    }

    /// Writes `bytes` to `path` through a temporary file in the same folder and a rename,
    /// so that a reader never sees a half-written file.
    public static func writeAtomically(path: String, bytes: some Collection<UInt8>) throws {
        try writeAtomically(path: path) { fd in
            var array = Array(bytes)
            try writeAll(fd: fd, path: path, pointer: &array, count: array.count)
        }
    }

    public static func writeAtomically(path: String, text: String) throws {
        try writeAtomically(path: path, bytes: Array(text.utf8))
    }

    /// Opens a temporary file beside `path`, lets `body` fill it, fsyncs and renames it into place.
    public static func writeAtomically(path: String, _ body: (Int32) throws -> Void) throws {
        let temp = path + ".tmp-\(getpid())"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw GPTQError.invalidFile(path: path, reason: "cannot create: \(errnoMessage())") }
        do {
            try body(fd)
            guard fsync(fd) == 0 else { throw GPTQError.invalidFile(path: path, reason: "fsync failed: \(errnoMessage())") }
            close(fd)
        } catch {
            close(fd)
            unlink(temp)
            throw error
        }
        guard rename(temp, path) == 0 else {
            unlink(temp)
            throw GPTQError.invalidFile(path: path, reason: "rename failed: \(errnoMessage())")
        }
    }

    public static func writeAll(fd: Int32, path: String, pointer: UnsafeRawPointer, count: Int) throws {
        var done = 0
        while done < count {
            let n = write(fd, pointer + done, min(count - done, 1 << 30))
            guard n > 0 else { throw GPTQError.invalidFile(path: path, reason: "write failed: \(errnoMessage())") }
            done += n
        }
    }

    public static func makeDirectory(_ path: String) throws {
        var partial = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            partial += "/" + component
            if !isDirectory(partial) {
                guard mkdir(partial, 0o755) == 0 || errno == EEXIST else {
                    throw GPTQError.invalidFile(path: partial, reason: "cannot create folder: \(errnoMessage())")
                }
            }
        }
    }

    public static func remove(_ path: String) { unlink(path) }

    /// Removes `path` and, for a folder, everything under it (symbolic links are
    /// removed, never followed).
    public static func removeTree(_ path: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in try listDirectory(path) { try removeTree(join(path, name)) }
            guard rmdir(path) == 0 else { throw GPTQError.invalidFile(path: path, reason: "cannot remove folder: \(errnoMessage())") }
        } else {
            guard unlink(path) == 0 else { throw GPTQError.invalidFile(path: path, reason: "cannot remove: \(errnoMessage())") }
        }
    }

    /// Renames `from` to `to` (same file system), replacing a file but not a folder at `to`.
    public static func move(_ from: String, to: String) throws {
        guard rename(from, to) == 0 else {
            throw GPTQError.invalidFile(path: to, reason: "cannot rename \(from) to it: \(errnoMessage())")
        }
    }

    /// Swaps the two paths in one step (renameat2's RENAME_EXCHANGE), so that a reader of
    /// either path sees the old or the new folder, never neither.
    public static func exchange(_ a: String, _ b: String) throws {
        guard ck_rename_exchange(a, b) == 0 else {
            throw GPTQError.invalidFile(path: b, reason: "cannot exchange it with \(a): \(errnoMessage())")
        }
    }

    /// Removes the `<path>.tmp-<pid>` and `<path>.old-<pid>` leftovers of interrupted runs
    /// whose process is gone, and returns them so that the caller can name them.
    @discardableResult
    public static func removeStaleTemporaries(of path: String) throws -> [String] {
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        let parts = trimmed.split(separator: "/", omittingEmptySubsequences: false)
        let name = String(parts.last ?? "")
        let parent = parts.count > 1 ? parts.dropLast().joined(separator: "/") : "."
        guard !name.isEmpty, isDirectory(parent.isEmpty ? "/" : parent) else { return [] }
        var removed: [String] = []
        for entry in try listDirectory(parent.isEmpty ? "/" : parent) {
            guard let pid = staleTemporaryOwner(entry, of: name), pid != getpid(), kill(pid, 0) != 0 && errno == ESRCH else { continue }
            let stale = join(parent.isEmpty ? "/" : parent, entry)
            try removeTree(stale)
            removed.append(stale)
        }
        return removed
    }

    /// The process id in `<name>.tmp-<pid>` or `<name>.old-<pid>`, nil for any other entry.
    static func staleTemporaryOwner(_ entry: String, of name: String) -> pid_t? {
        for marker in [".tmp-", ".old-"] where entry.hasPrefix(name + marker) {
            if let pid = pid_t(entry.dropFirst(name.count + marker.count)), pid > 0 { return pid }
        }
        return nil
    }

    /// The absolute path with symbolic links and `.`/`..` resolved; for a path that does
    /// not exist yet, its deepest existing ancestor is resolved and the rest appended.
    public static func canonicalPath(_ path: String) -> String {
        if let resolved = realpath(path, nil) {
            defer { free(resolved) }
            return String(cString: resolved)
        }
        var parts = path.split(separator: "/").map(String.init)
        guard let last = parts.popLast() else { return path }
        let parent = parts.isEmpty ? (path.hasPrefix("/") ? "/" : ".") : (path.hasPrefix("/") ? "/" : "") + parts.joined(separator: "/")
        return join(canonicalPath(parent), last)
    }

    public static func listDirectory(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw GPTQError.invalidFile(path: path, reason: "cannot list: \(errnoMessage())") }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public static func join(_ parts: String...) -> String {
        parts.dropFirst().reduce(parts[0]) { base, part in
            if part.hasPrefix("/") { return part }
            return base.hasSuffix("/") ? base + part : base + "/" + part
        }
    }
}

/// A read-only memory map of a whole file. The weights of a checkpoint live here,
/// paged in by the kernel as layers touch them, so a model costs no copy to load.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let count: Int
    public let base: UnsafeRawPointer

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw GPTQError.invalidFile(path: path, reason: "cannot open: \(FileIO.errnoMessage())") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw GPTQError.invalidFile(path: path, reason: FileIO.errnoMessage()) }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            let kind = (st.st_mode & S_IFMT) == S_IFDIR ? "a folder" : "not a regular file"
            throw GPTQError.invalidFile(path: path, reason: "is \(kind), expected a file")
        }
        count = Int(st.st_size)
        if count == 0 {
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64))
            return
        }
        let p = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else {
            throw GPTQError.invalidFile(path: path, reason: "mmap failed: \(FileIO.errnoMessage())")
        }
        base = UnsafeRawPointer(p)
    }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    deinit {
        if count == 0 { UnsafeMutableRawPointer(mutating: base).deallocate() } else { munmap(UnsafeMutableRawPointer(mutating: base), count) }
    }
}
