#if canImport(Glibc)
import Glibc
#endif
import GPTQKit

/// Paths of the test fixtures committed under Tests/Fixtures (copied from ../shared).
enum Fixtures {
    static let root: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        parts.removeLast(2)  // GPTQKitTests/Fixtures.swift
        return parts.joined(separator: "/") + "/Fixtures"
    }()

    static func path(_ relative: String) -> String { root + "/" + relative }

    /// A fresh folder /tmp/gptq-<name>-XXXXXX.
    static func temporaryFolder(_ name: String) -> String {
        var template = Array("/tmp/gptq-\(name)-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }
}
