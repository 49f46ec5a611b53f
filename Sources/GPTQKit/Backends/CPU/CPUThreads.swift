#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization
import COpenBLAS

/// How many threads CPU kernels use: our own parallel loops and OpenBLAS alike.
/// Defaults to the number of online cores.
public enum CPUThreads {
    private static let current = Atomic<Int>(max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))))

    public static var count: Int { current.load(ordering: .relaxed) }

    /// Sets the thread count for later work (`--threads`).
    public static func set(_ n: Int) {
        current.store(max(1, n), ordering: .relaxed)
        openblas_set_num_threads(Int32(max(1, n)))
    }

    /// Runs body(start, end) over consecutive chunks of 0..<total, in parallel, and returns
    /// when all are done. There are a few chunks per thread (fewer when the total is small):
    /// on a machine shared with other work, a thread that got less CPU then takes fewer
    /// chunks instead of holding everyone at the barrier.
    public static func parallelRanges(_ total: Int, minimumChunk: Int = 1, _ body: (Int, Int) -> Void) {
        guard total > 0 else { return }
        let threads = count
        let chunks = max(1, min(threads == 1 ? 1 : 4 * threads, total / max(1, minimumChunk)))
        if chunks == 1 { body(0, total); return }
        // The chunks touch disjoint ranges and finish before we return, so sharing the
        // non-Sendable body (it captures raw pointers) across the pool is safe.
        withoutActuallyEscaping(body) { body in
            nonisolated(unsafe) let work = body
            DispatchQueue.concurrentPerform(iterations: chunks) { c in
                work(total * c / chunks, total * (c + 1) / chunks)
            }
        }
    }

    /// Runs body(i) for every i in 0..<total, spread over the threads.
    public static func parallelFor(_ total: Int, _ body: (Int) -> Void) {
        parallelRanges(total) { start, end in for i in start..<end { body(i) } }
    }
}
