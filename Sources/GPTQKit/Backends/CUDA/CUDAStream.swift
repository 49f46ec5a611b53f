import CCUDA

/// A CUDA stream: work queued on it runs in order.
public final class CUDAStream: @unchecked Sendable {
    let libraries: CUDALibraries
    let handle: CUstream

    init(libraries: CUDALibraries) throws {
        self.libraries = libraries
        var s: CUstream?
        try libraries.check(libraries.api.pointee.cuStreamCreate(&s, 1 /* CU_STREAM_NON_BLOCKING */), "cuStreamCreate")
        handle = s!
    }

    deinit { _ = libraries.api.pointee.cuStreamDestroy(handle) }

    public func synchronize() throws {
        try libraries.check(libraries.api.pointee.cuStreamSynchronize(handle), "cuStreamSynchronize")
    }

    /// Records everything `body` queues on this stream into a graph, instead of running it.
    public func capture(_ body: () throws -> Void) throws -> CUDAGraph {
        let api = libraries.api.pointee
        try libraries.check(api.cuStreamBeginCapture(handle, 2 /* CU_STREAM_CAPTURE_MODE_RELAXED */), "cuStreamBeginCapture")
        var graph: CUgraph?
        do {
            try body()
        } catch {
            _ = api.cuStreamEndCapture(handle, &graph)
            if let graph { _ = api.cuGraphDestroy(graph) }
            throw error
        }
        try libraries.check(api.cuStreamEndCapture(handle, &graph), "cuStreamEndCapture")
        guard let graph else { throw GPTQError.cuda("cuStreamEndCapture returned no graph") }
        return try CUDAGraph(libraries: libraries, graph: graph)
    }
}

/// A captured sequence of launches, replayed with a single launch.
public final class CUDAGraph: @unchecked Sendable {
    let libraries: CUDALibraries
    let graph: CUgraph
    let exec: CUgraphExec

    init(libraries: CUDALibraries, graph: CUgraph) throws {
        self.libraries = libraries
        self.graph = graph
        var e: CUgraphExec?
        let result = libraries.api.pointee.cuGraphInstantiateWithFlags(&e, graph, 0)
        if result != 0 { _ = libraries.api.pointee.cuGraphDestroy(graph) }
        try libraries.check(result, "cuGraphInstantiateWithFlags")
        exec = e!
    }

    deinit {
        _ = libraries.api.pointee.cuGraphExecDestroy(exec)
        _ = libraries.api.pointee.cuGraphDestroy(graph)
    }

    public func launch(on stream: CUDAStream) throws {
        try libraries.check(libraries.api.pointee.cuGraphLaunch(exec, stream.handle), "cuGraphLaunch")
    }
}

/// A CUDA event, for timing work on a stream.
public final class CUDAEvent: @unchecked Sendable {
    let libraries: CUDALibraries
    let handle: CUevent

    public init(device: CUDADevice) throws {
        libraries = device.libraries
        var e: CUevent?
        try libraries.check(libraries.api.pointee.cuEventCreate(&e, 0), "cuEventCreate")
        handle = e!
    }

    deinit { _ = libraries.api.pointee.cuEventDestroy(handle) }

    public func record(on stream: CUDAStream) throws {
        try libraries.check(libraries.api.pointee.cuEventRecord(handle, stream.handle), "cuEventRecord")
    }

    /// Milliseconds from `start` to this event, waiting for this event first.
    public func milliseconds(since start: CUDAEvent) throws -> Double {
        try libraries.check(libraries.api.pointee.cuEventSynchronize(handle), "cuEventSynchronize")
        var ms: Float = 0
        try libraries.check(libraries.api.pointee.cuEventElapsedTime(&ms, start.handle, handle), "cuEventElapsedTime")
        return Double(ms)
    }
}
