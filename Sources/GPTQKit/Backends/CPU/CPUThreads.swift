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
    ///
    /// The chunks go to a pool of workers that spin briefly between calls (WorkerPool): a
    /// decode step makes hundreds of small parallel calls, and waking sleeping threads for
    /// each (DispatchQueue.concurrentPerform) cost more than a small layer's work. Calls made
    /// while the pool is busy (from another thread, or from inside a chunk) take
    /// concurrentPerform as before.
    public static func parallelRanges(_ total: Int, minimumChunk: Int = 1, _ body: (Int, Int) -> Void) {
        guard total > 0 else { return }
        let threads = count
        let chunks = max(1, min(threads == 1 ? 1 : 4 * threads, total / max(1, minimumChunk)))
        if chunks == 1 { body(0, total); return }
        // The chunks touch disjoint ranges and finish before we return, so sharing the
        // non-Sendable body (it captures raw pointers) across threads is safe.
        withoutActuallyEscaping(body) { body in
            nonisolated(unsafe) let work = body
            let chunk: @Sendable (Int) -> Void = { c in work(total * c / chunks, total * (c + 1) / chunks) }
            if !WorkerPool.shared.run(chunks: chunks, workers: threads - 1, chunk) {
                DispatchQueue.concurrentPerform(iterations: chunks, execute: chunk)
            }
        }
    }

    /// Runs body(i) for every i in 0..<total, spread over the threads.
    public static func parallelFor(_ total: Int, _ body: (Int) -> Void) {
        parallelRanges(total) { start, end in for i in start..<end { body(i) } }
    }
}

/// Worker threads that take the chunks of one job at a time, with the calling thread.
/// Between jobs a worker spins on the job counter for a while (about 100 µs), then sleeps on
/// its semaphore until the next job wakes it.
///
/// Claims: `ticket` holds the job's generation (high 32 bits) and the next chunk (low 32);
/// a worker claims by compare-and-swap only while the generation is its job's, so a worker
/// that wakes late can never take, or use up, a chunk of a later job. The caller returns when
/// `finished` reaches the job's chunk count, so the job's closure outlives every use of it.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()

    private final class Worker: @unchecked Sendable {
        let index: Int
        let asleep = Atomic<Bool>(false)
        let wake = DispatchSemaphore(value: 0)
        init(index: Int) { self.index = index }
    }

    private let busy = Atomic<Bool>(false)
    private let generation = Atomic<Int>(0)
    private let ticket = Atomic<Int>(0)
    private let finished = Atomic<Int>(0)
    // Written by the caller before the generation is published (releasing), read by workers after (acquiring).
    private nonisolated(unsafe) var job: (@Sendable (Int) -> Void)?
    private nonisolated(unsafe) var chunks = 0
    private nonisolated(unsafe) var participants = 0
    private let workersLock = Mutex<[Worker]>([])
    private static let spinsBeforeSleep = 100_000

    /// Runs chunk(c) for c in 0..<chunks on the caller and up to `workers` pool threads;
    /// false (nothing run) when the pool is busy with another job.
    func run(chunks: Int, workers: Int, _ chunk: @escaping @Sendable (Int) -> Void) -> Bool {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        defer { busy.store(false, ordering: .releasing) }
        let pool = workersLock.withLock { pool in
            while pool.count < workers {
                let worker = Worker(index: pool.count)
                pool.append(worker)
                start(worker)
            }
            return pool
        }
        let next = generation.load(ordering: .relaxed) + 1
        job = chunk
        self.chunks = chunks
        participants = workers
        finished.store(0, ordering: .relaxed)
        ticket.store(next << 32, ordering: .relaxed)
        generation.store(next, ordering: .sequentiallyConsistent)
        for worker in pool.prefix(workers) where worker.asleep.exchange(false, ordering: .sequentiallyConsistent) {
            worker.wake.signal()
        }
        claimChunks(of: next)
        while finished.load(ordering: .acquiring) < chunks {}
        job = nil
        return true
    }

    /// Claims and runs chunks of job `generation` until none is left.
    private func claimChunks(of generation: Int) {
        while true {
            let current = ticket.load(ordering: .acquiring)
            guard current >> 32 == generation, current & 0xFFFF_FFFF < chunks else { return }
            guard ticket.compareExchange(expected: current, desired: current + 1, ordering: .acquiringAndReleasing).exchanged else { continue }
            job!(current & 0xFFFF_FFFF)
            finished.add(1, ordering: .releasing)
        }
    }

    private func start(_ worker: Worker) {
        let context = Unmanaged.passRetained(Box(pool: self, worker: worker)).toOpaque()
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { context in
            let box = Unmanaged<Box>.fromOpaque(context!).takeRetainedValue()
            box.pool.serve(box.worker)
        }, context)
        precondition(created == 0, "pthread_create failed (\(created))")
        pthread_detach(thread)
    }

    private final class Box {
        let pool: WorkerPool
        let worker: Worker
        init(pool: WorkerPool, worker: Worker) { (self.pool, self.worker) = (pool, worker) }
    }

    private func serve(_ worker: Worker) -> Never {
        var seen = generation.load(ordering: .acquiring)
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                guard spins >= Self.spinsBeforeSleep else { continue }
                worker.asleep.store(true, ordering: .sequentiallyConsistent)
                if generation.load(ordering: .sequentiallyConsistent) != seen {
                    // A job came meanwhile: take the flag back, or consume the wake-up already sent.
                    if !worker.asleep.exchange(false, ordering: .sequentiallyConsistent) { worker.wake.wait() }
                } else {
                    worker.wake.wait()
                }
                spins = 0
            }
            seen = generation.load(ordering: .acquiring)
            if worker.index < participants { claimChunks(of: seen) }
        }
    }
}
