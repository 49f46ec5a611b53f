import GPTQKit
import CCUDA
/// Timings of the CUDA kernels (`gptq gpu-bench`): device events around many launches
/// over rotating weight copies (so that the 50 MB L2 does not hold the weights), the
/// median of several samples.
public enum CUDABenchmarks {
    /// Milliseconds per call of `body(i)` (i counts calls), median of `samples` samples of
    /// `callsPerSample` calls each, after one warm-up sample.
    public static func medianMilliseconds(backend: CUDABackend, callsPerSample: Int, samples: Int,
                                          _ body: (Int) throws -> Void) throws -> Double {
        let start = try CUDAEvent(device: backend.device), end = try CUDAEvent(device: backend.device)
        var times: [Double] = []
        var call = 0
        for s in 0...samples {
            try start.record(on: backend.stream)
            for _ in 0..<callsPerSample {
                try body(call)
                call += 1
            }
            try end.record(on: backend.stream)
            let ms = try end.milliseconds(since: start)
            if s > 0 { times.append(ms / Double(callsPerSample)) }
        }
        return times.sorted()[times.count / 2]
    }

    /// Milliseconds per call of `body(i)` replayed from a CUDA graph of `calls` calls, median of
    /// `samples` replays after one run outside the graph (kernels loaded, scratch sized): the
    /// device's time without the host's cost of queuing each launch, as a decode step's graph
    /// runs them.
    public static func graphMedianMilliseconds(backend: CUDABackend, calls: Int, samples: Int, _ body: (Int) throws -> Void) throws -> Double {
        for i in 0..<calls { try body(i) }
        let graph = try backend.stream.capture { for i in 0..<calls { try body(i) } }
        return try medianMilliseconds(backend: backend, callsPerSample: 1, samples: samples) { _ in try graph.launch(on: backend.stream) } / Double(calls)
    }

    /// Device-to-device copy bandwidth in GB/s, counting bytes read and written.
    public static func copyBandwidth(backend: CUDABackend, bytes: Int = 1 << 30) throws -> Double {
        let a = try backend.device.allocate(bytes: bytes), b = try backend.device.allocate(bytes: bytes)
        try backend.fillRandomWords(a, seed: 1)
        let ms = try medianMilliseconds(backend: backend, callsPerSample: 4, samples: 9) { i in
            if i % 2 == 0 { try b.copy(from: a, bytes: bytes, stream: backend.stream) } else { try a.copy(from: b, bytes: bytes, stream: backend.stream) }
        }
        return 2 * Double(bytes) / (ms * 1e-3) / 1e9
    }

    public struct LinearTiming: Sendable {
        public let inFeatures: Int, outFeatures: Int, batch: Int
        public let quantizedMs: Double, quantizedGBs: Double
        /// The 4-bit layer launched plainly, where `quantizedMs` used dependent launch (so each
        /// call overlapped the one before; cuBLAS's calls do not).
        public let plainMs: Double?
        public let halfMs: Double, halfGBs: Double
        /// Both replayed from CUDA graphs (no host launch cost; the 4-bit layer with dependent
        /// launch where the backend uses it); nil where cuBLAS could not be captured.
        public let graphMs: Double, halfGraphMs: Double?
        /// The 4-bit layer dequantized for cuBLAS (timed from 16 rows on).
        public let dequantizedMs: Double?
        /// The tiled kernel's 32-row launches, where the warpgroup kernel took 33–64 rows.
        public let tiledMs: Double?
        /// The 4-bit layer's weight bytes only read, as fast as `readFloor` found (per shape).
        public let readFloorMs: Double
        public var speedup: Double { halfMs / quantizedMs }
        public var line: String {
            func us(_ ms: Double) -> String { pad(String(format1(ms * 1000)), 8) }
            func gbs(_ v: Double) -> String { pad(String(Int(v.rounded())), 5) }
            let bytes = quantizedGBs * quantizedMs
            return "\(pad("\(inFeatures)x\(outFeatures)", 11)) b\(pad(String(batch), 3))  4-bit \(us(quantizedMs)) us \(gbs(quantizedGBs)) GB/s"
                + (plainMs.map { "  plain launch \(us($0)) us" } ?? "")
                + "   fp16 cuBLAS \(us(halfMs)) us \(gbs(halfGBs)) GB/s   x\(format1(speedup))"
                + (plainMs.map { " (plain x\(format1(halfMs / $0)))" } ?? "")
                + "   graphs: 4-bit \(us(graphMs)) us \(gbs(bytes / graphMs)) GB/s"
                + (halfGraphMs.map { ", fp16 cuBLAS \(us($0)) us   x\(format1($0 / graphMs))" } ?? ", fp16 cuBLAS not capturable")
                + (dequantizedMs.map { "   dequant+cuBLAS \(us($0)) us" } ?? "")
                + (tiledMs.map { "   tiled \(us($0)) us" } ?? "")
                + "   read floor \(us(readFloorMs)) us"
        }
    }

    /// A layer shape as `gpu-bench --shape` takes it, INPUTSxOUTPUTS (e.g. 4096x11008): inputs a
    /// multiple of 64 and outputs of 16, the tiled layout's units.
    public static func layerShape(_ text: String) throws -> (inFeatures: Int, outFeatures: Int) {
        let parts = text.split(separator: "x", omittingEmptySubsequences: false).map { Int($0) }
        guard parts.count == 2, let k = parts[0], let n = parts[1], k > 0, n > 0, k % 64 == 0, n % 16 == 0 else {
            throw GPTQError.invalidArgument("--shape must be INPUTSxOUTPUTS with inputs a multiple of 64 and outputs of 16 (got \(text))")
        }
        return (k, n)
    }

    /// Float16 input rows (random in ±1) and output rows of a [inFeatures → outFeatures] layer.
    private static func halfRows(backend: CUDABackend, inFeatures k: Int, outFeatures n: Int, rows: Int) throws -> (x: DeviceBuffer, y: DeviceBuffer) {
        let x = try backend.device.allocate(bytes: rows * k * 2)
        let y = try backend.device.allocate(bytes: rows * n * 2)
        try backend.fillRandomHalves(x, seed: 11, lo: -1, hi: 1)
        return (x, y)
    }

    /// How many weight copies of `bytesEach` to rotate through so that together they are four
    /// times the L2: every call then reads its weights from device memory.
    private static func copiesOutrunningL2(backend: CUDABackend, bytesEach: Int) -> Int {
        let l2 = max(backend.device.l2CacheBytes, 1 << 20)
        return max(2, (4 * l2 + bytesEach - 1) / bytesEach)
    }

    /// The U of the `read_stream_uU` kernels `readFloor` sweeps (instantiated in `LinearKernels.tiled`).
    public static let readFloorReadsInFlight = [1, 2, 4, 8]

    /// The read floor of `bytes`: the fastest of `read_stream`'s launches (U 16-byte reads in
    /// flight a thread; 128–1024 threads; a grid covering the bytes at once, or the blocks one
    /// wave holds, striding), replayed from graphs with dependent launch over copies outrunning
    /// the L2, as the 4-bit layers are timed. Milliseconds a call and the launch, "uU tT gG".
    public static func readFloor(backend: CUDABackend, bytes: Int) throws -> (ms: Double, launch: String) {
        let words = (bytes + 15) / 16
        let copies = copiesOutrunningL2(backend: backend, bytesEach: words * 16)
        let sources = try (0..<copies).map { _ in try backend.device.allocate(bytes: words * 16) }
        for (i, source) in sources.enumerated() { try backend.fillRandomWords(source, seed: UInt32(400 + i)) }
        let out = try backend.device.allocate(bytes: 16)
        var best: (ms: Double, launch: String) = (.infinity, "")
        for u in readFloorReadsInFlight {
            let name = "read_stream_u\(u)"
            let kernel = try backend.kernel(name, in: LinearKernels.tiled)
            for threads in [128, 256, 512, 1024] {
                let covering = (words + threads * u - 1) / (threads * u)
                let wave = try kernel.residentBlocks(blockThreads: threads, sharedBytes: 0) * backend.device.multiprocessorCount
                for grid in Set([covering, min(covering, wave)]) {
                    let ms = try graphMedianMilliseconds(backend: backend, calls: max(copies, 24), samples: 9) { i in
                        try backend.launch(name, in: LinearKernels.tiled, grid: (grid, 1, 1), block: (threads, 1, 1),
                                           overlappingPrevious: backend.dependentLaunch,
                                           [.buffer(sources[i % copies]), .pointer(UInt64(words)), .buffer(out)])
                    }
                    if ms < best.ms { best = (ms, "u\(u) t\(threads) g\(grid)") }
                }
            }
        }
        return best
    }

    /// A 4-bit layer of pseudo-random AutoGPTQ tensors (no act order): words, zeros, scales in
    /// [0.001, 0.004).
    static func randomPacked4Bit(inFeatures k: Int, outFeatures n: Int, groupSize: Int, seed: UInt64) throws -> PackedLinear {
        var rng = Xoshiro256StarStar(seed: seed)
        let groups = k / groupSize
        func words(_ count: Int) -> [Int32] { (0..<count).map { _ in Int32(truncatingIfNeeded: rng.next()) } }
        return try PackedLinear(name: "random", path: "gpu-bench", bits: 4, format: .gptq, inFeatures: k, outFeatures: n,
                                qweight: Tensor(bitPattern: words(k / 8 * n), dtype: .i32, shape: [k / 8, n]),
                                qzeros: Tensor(bitPattern: words(groups * n / 8), dtype: .i32, shape: [groups, n / 8]),
                                scales: Tensor((0..<groups * n).map { _ in Float(0.001 + 0.003 * rng.nextUnit()) }, shape: [groups, n]).converted(to: .f16),
                                gIdx: Tensor(bitPattern: (0..<k).map { Int32($0 / groupSize) }, dtype: .i32, shape: [k]), bias: nil)
    }

    /// 4-bit group-`groupSize` layers against float16 cuBLAS GemmEx, both with the bytes a
    /// single pass must move (weights + scales + zeros + x + y) over the median time. Where the
    /// backend uses dependent launch, the 4-bit layers are timed without it too. Groups of a
    /// multiple of 64 take the tiled layout; others (e.g. 32) AutoGPTQ's, as such checkpoints
    /// load (the 4-bit GEMV, then dequantize + cuBLAS).
    public static func linears(backend: CUDABackend, shapes: [(Int, Int)], batches: [Int], groupSize: Int = 128,
                               log: (String) -> Void = { _ in }) throws -> [LinearTiming] {
        let scratch = CUDAScratch(backend: backend)
        var rows: [LinearTiming] = []
        for (k, n) in shapes {
            let (x, y) = try halfRows(backend: backend, inFeatures: k, outFeatures: n, rows: batches.max() ?? 1)
            let qCopies = copiesOutrunningL2(backend: backend, bytesEach: k * n / 2)
            let hCopies = copiesOutrunningL2(backend: backend, bytesEach: k * n * 2)
            let tiled = groupSize % 64 == 0
            let quantized = try (0..<qCopies).map {
                tiled ? try CUDALinear(backend: backend, random4BitInFeatures: k, outFeatures: n, groupSize: groupSize, seed: UInt32(100 + $0))
                    : try CUDALinear(backend: backend, gptq: try randomPacked4Bit(inFeatures: k, outFeatures: n, groupSize: groupSize, seed: UInt64(100 + $0)))
            }
            var half = try (0..<hCopies).map { try CUDALinear(backend: backend, randomHalfInFeatures: k, outFeatures: n, scale: 0.05, seed: UInt32(200 + $0)) }
            let floor = try readFloor(backend: backend, bytes: quantized[0].weightBytes)
            log("\(k)x\(n): read floor of the 4-bit weights (\(quantized[0].weightBytes) bytes) \(format1(floor.ms * 1000)) us, "
                + "\(Int((Double(quantized[0].weightBytes) / (floor.ms * 1e-3) / 1e9).rounded())) GB/s (read_stream \(floor.launch))")
            for b in batches {
                let io = b * (k + n) * 2
                let calls = max(qCopies, 24)
                func quantizedMs() throws -> Double {
                    try medianMilliseconds(backend: backend, callsPerSample: calls, samples: 15) { i in
                        try quantized[i % qCopies].forward(x: x.address, ldx: k, rows: b, y: y.address, ldy: n, scratch: scratch)
                    }
                }
                let qMs = try quantizedMs()
                var plainMs: Double?
                if backend.dependentLaunch {
                    backend.dependentLaunch = false
                    defer { backend.dependentLaunch = true }
                    plainMs = try quantizedMs()
                }
                func halfCall(_ i: Int) throws {
                    guard case let .dense(buffer) = half[i % hCopies].weights else { return }
                    try backend.cublas.linear(x: x.address, weight: buffer.address, y: y.address, rows: b, inFeatures: k, outFeatures: n)
                }
                let hMs = try medianMilliseconds(backend: backend, callsPerSample: max(hCopies, 24), samples: 15, halfCall)
                let graphMs = try graphMedianMilliseconds(backend: backend, calls: calls, samples: 15) { i in
                    try quantized[i % qCopies].forward(x: x.address, ldx: k, rows: b, y: y.address, ldy: n, scratch: scratch)
                }
                var hGraphMs: Double?
                do {
                    hGraphMs = try graphMedianMilliseconds(backend: backend, calls: max(hCopies, 24), samples: 15, halfCall)
                } catch {
                    log("fp16 cuBLAS \(k)x\(n) b\(b) not captured in a graph: \(error)")
                }
                let dMs = b < 16 || !tiled ? nil : try medianMilliseconds(backend: backend, callsPerSample: calls, samples: 15) { i in
                    try quantized[i % qCopies].dequantizedProduct(x: x.address, ldx: k, rows: b, y: y.address, ldy: n, scratch: scratch)
                }
                // Where the warpgroup kernel took 33–64 rows: the tiled kernel's two launches.
                let tMs = !(tiled && backend.warpgroupMMA && b > 32 && b <= CUDALinear.maxTiledKernelRows) ? nil
                    : try medianMilliseconds(backend: backend, callsPerSample: calls, samples: 15) { i in
                        for start in stride(from: 0, to: b, by: 32) {
                            try quantized[i % qCopies].tiledProduct(x: x.address + CUdeviceptr(start * k * 2), ldx: k, rows: min(32, b - start),
                                                                    y: y.address + CUdeviceptr(start * n * 2), ldy: n, scratch: scratch)
                        }
                    }
                let row = LinearTiming(inFeatures: k, outFeatures: n, batch: b,
                                       quantizedMs: qMs, quantizedGBs: Double(quantized[0].weightBytes + io) / (qMs * 1e-3) / 1e9, plainMs: plainMs,
                                       halfMs: hMs, halfGBs: Double(half[0].weightBytes + io) / (hMs * 1e-3) / 1e9,
                                       graphMs: graphMs, halfGraphMs: hGraphMs, dequantizedMs: dMs, tiledMs: tMs, readFloorMs: floor.ms)
                log(row.line)
                rows.append(row)
            }
            half = []
        }
        return rows
    }
}

extension CUDABenchmarks {
    public struct DecodeTiming: Sendable {
        public let batch: Int, promptTokens: Int, steps: Int
        public let seconds: Double
        /// Tokens of all sequences per second.
        public var tokensPerSecond: Double { Double(batch * steps) / seconds }
    }

    /// Greedy decode of `steps` tokens after a `promptTokens`-token prompt for each of
    /// `batch` sequences (graph replays, timed by device events).
    public static func decode(model: CUDAModel, batch: Int, promptTokens: Int = 32, steps: Int = 128) throws -> DecodeTiming {
        let session = try model.makeSession(capacity: promptTokens + steps + 2, batch: batch)
        var rng = Xoshiro256StarStar(seed: 3)
        for s in 0..<batch {
            try session.prefill(sequence: s, ids: (0..<promptTokens).map { _ in Int32(rng.next() % UInt64(model.vocab)) })
        }
        _ = try session.decodeGreedy(steps: 2)  // graph capture and warm-up
        for s in 0..<batch {
            try session.prefill(sequence: s, ids: (0..<promptTokens).map { _ in Int32(rng.next() % UInt64(model.vocab)) })
        }
        let seconds = try session.decodeGreedy(steps: steps)
        return DecodeTiming(batch: batch, promptTokens: promptTokens, steps: steps, seconds: seconds)
    }

    /// Seconds per decode step spent in the linears alone: a graph of one step's linears
    /// (every layer's, then the LM head) at `batch` rows, replayed `steps` times. The rest of a
    /// step (norms, attention with its RoPE, SwiGLU, argmax, launch gaps) is the full step minus this.
    public static func decodeLinearsOnly(model: CUDAModel, batch: Int, steps: Int = 128) throws -> Double {
        let backend = model.backend, scratch = CUDAScratch(backend: backend)
        let widest = max(model.qkvWidth, model.gateUpWidth, model.hidden, model.heads * model.headDim)
        let x = try backend.device.allocate(bytes: batch * widest * 2), y = try backend.device.allocate(bytes: batch * max(widest, model.vocab) * 4)
        try backend.fillRandomHalves(x, seed: 9, lo: -1, hi: 1)
        func queue() throws {
            func run(_ linear: CUDALinear, column: Int = 0, ldy: Int) throws {
                try linear.forward(x: x.address, ldx: linear.inFeatures, rows: batch, y: y.address + CUdeviceptr(column * 2), ldy: ldy, scratch: scratch)
            }
            for layer in model.layers {
                for part in layer.qkv { try run(part.linear, column: part.column, ldy: model.qkvWidth) }
                try run(layer.output, ldy: model.hidden)
                for part in layer.gateUp { try run(part.linear, column: part.column, ldy: model.gateUpWidth) }
                try run(layer.down, ldy: model.hidden)
            }
            try model.lmHead.forward(x: x.address, ldx: model.hidden, rows: batch, y: y.address, ldy: model.vocab, scratch: scratch, f32Output: true)
        }
        try queue()
        let graph = try backend.stream.capture { try queue() }
        let ms = try medianMilliseconds(backend: backend, callsPerSample: steps, samples: 3) { _ in try graph.launch(on: backend.stream) }
        return ms / 1000
    }

    /// Batch-1 decode driven from the host, as `gptq generate --device cuda` runs it: greedy
    /// through `forwardGreedy` (one id copied back a step), sampled (temperature 0.8, top-k 50,
    /// top-p 0.9) through `forward` and the CPU `Sampler` (the logits copied back), and sampled
    /// on the GPU through `forwardSample`. Each loop starts right after the same prompt (decode
    /// attention grows with the context, so loops at other positions would not compare).
    /// Tokens per second of each, by the host clock.
    public static func hostLoopDecode(model: CUDAModel, promptTokens: Int = 32, steps: Int = 128) throws -> (greedy: Double, sampled: Double, sampledOnGPU: Double) {
        let session = try model.makeSession(capacity: promptTokens + steps + 2)
        var rng = Xoshiro256StarStar(seed: 6)
        let prompt = (0..<promptTokens).map { _ in Int32(rng.next() % UInt64(model.vocab)) }
        let clock = ContinuousClock()
        var sampler = try Sampler(SamplingParameters(temperature: 0.8, topK: 50, topP: 0.9), seed: 1)
        func loop(_ next: (Int32) throws -> Int32) throws -> Double {
            session.rewind(to: 0)
            var token = try session.forwardGreedy(prompt)
            token = try next(token)  // the graph captured, the kernels loaded
            let elapsed = try clock.measure { for _ in 0..<steps - 1 { token = try next(token) } }
            return Double(steps - 1) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
        }
        let greedy = try loop { try session.forwardGreedy([$0]) }
        let sampled = try loop { sampler.next(logits: try session.forward([$0], allLogits: false), history: []) }
        let onGPU = try loop { try session.forwardSample([$0], parameters: sampler.parameters, uniform: sampler.nextUniform()) }
        return (greedy, sampled, onGPU)
    }

    /// Prefill tokens per second for a `tokens`-token prompt (median of `runs`).
    public static func prefill(model: CUDAModel, tokens: Int, runs: Int = 3) throws -> Double {
        let session = try model.makeSession(capacity: tokens + 1, batch: 1)
        var rng = Xoshiro256StarStar(seed: 4)
        let ids = (0..<tokens).map { _ in Int32(rng.next() % UInt64(model.vocab)) }
        _ = try session.prefill(sequence: 0, ids: ids)  // warm-up: kernels, cuBLAS, scratch
        var times: [Double] = []
        for _ in 0..<runs { times.append(try session.prefill(sequence: 0, ids: ids)) }
        return Double(tokens) / times.sorted()[runs / 2]
    }

    /// Scoring throughput (tokens/s): `sequences` random sequences of `tokens` tokens, every
    /// token's log-probability and argmax flag computed on the GPU (forwardScoring, as the
    /// evaluation's log-likelihoods run), through one batch session of `sequences` slots and
    /// through a one-slot session a sequence at a time.
    public static func scoring(model: CUDAModel, sequences: Int, tokens: Int, runs: Int = 3) throws -> (batched: Double, oneAtATime: Double) {
        var rng = Xoshiro256StarStar(seed: 8)
        let prompts = (0..<sequences).map { _ in (0..<(tokens + 1)).map { _ in Int32(rng.next() % UInt64(model.vocab)) } }
        let batch = try CUDABatchSession(model: model, slots: sequences, capacity: tokens)
        let alone = try CUDABatchSession(model: model, slots: 1, capacity: tokens)
        func timed(_ body: () throws -> Void) throws -> Double {
            var times: [Double] = []
            // The first run warms up (kernels, cuBLAS, scratch).
            for _ in 0...runs { times.append(try CUDAGPTQBenchmark.seconds(body)) }
            return Double(sequences * tokens) / times.dropFirst().sorted()[runs / 2]
        }
        let batched = try timed {
            for s in 0..<sequences { batch.rewind(slot: s, to: 0) }
            _ = try batch.forwardScoring(prompts.enumerated().map { ($0.offset, Array($0.element.dropLast()), Array($0.element.dropFirst())) })
        }
        let oneAtATime = try timed {
            for prompt in prompts {
                alone.rewind(slot: 0, to: 0)
                _ = try alone.forwardScoring([(0, Array(prompt.dropLast()), Array(prompt.dropFirst()))])
            }
        }
        return (batched, oneAtATime)
    }

    /// The tiled kernel's launches (`CUDAGPTQLayout.TiledLaunch.description`: output tiles a
    /// warp x warps a block, s stages of u chunks, x where x is loaded with the weights, mM
    /// compiled for M resident blocks, p where pairs of chunks share group parameters) for each
    /// shape and batch: microseconds a call replayed from a graph (as a decode step runs them),
    /// registers a thread and blocks a multiprocessor, the chosen launch marked with *: the data
    /// behind `CUDAGPTQLayout.tiledLaunch`.
    public static func tiledShapes(backend: CUDABackend, shapes: [(Int, Int)], batches: [Int], groupSize: Int = 128,
                                   log: (String) -> Void = { _ in }) throws {
        let scratch = CUDAScratch(backend: backend)
        for (k, n) in shapes {
            let (x, y) = try halfRows(backend: backend, inFeatures: k, outFeatures: n, rows: batches.max() ?? 1)
            let copies = copiesOutrunningL2(backend: backend, bytesEach: k * n / 2)
            let layers = try (0..<copies).map { try CUDALinear(backend: backend, random4BitInFeatures: k, outFeatures: n, groupSize: groupSize, seed: UInt32(300 + $0)) }
            for b in batches {
                let chosen = CUDAGPTQLayout.tiledLaunch(inFeatures: k, outFeatures: n, rows: b, groupSize: groupSize,
                                                        multiprocessors: backend.device.multiprocessorCount)
                let rowTiles = chosen.rowTiles
                var launches: [CUDAGPTQLayout.TiledLaunch] = []
                for nt in [1, 2] where n % (16 * nt) == 0 {
                    for (stages, u) in [(1, 4), (2, 2)] {
                        for warps in nt == 1 ? [4, 8, 16] : [4, 8] {
                            launches.append(.init(outputTiles: nt, rowTiles: rowTiles, warps: warps, stages: stages, stageChunks: u))
                        }
                    }
                }
                if rowTiles == 1 {
                    for warps in [4, 8, 16] {
                        launches.append(.init(outputTiles: 1, rowTiles: 1, warps: warps, stages: 1, stageChunks: 2, xWithWeights: true))
                    }
                    launches.append(.init(outputTiles: 1, rowTiles: 1, warps: 4, stages: 1, stageChunks: 4, xWithWeights: true, residentBlocks: 6))
                }
                // Pairing follows the group size, not the launch; the chosen launch is also timed
                // unpaired, to show what pairing gains.
                for i in launches.indices { launches[i].pairedGroups = chosen.pairedGroups }
                if chosen.pairedGroups {
                    var unpaired = chosen
                    unpaired.pairedGroups = false
                    launches.append(unpaired)
                }
                if !launches.contains(chosen) { launches.append(chosen) }
                log("\(pad("\(k)x\(n)", 11)) b\(pad(String(b), 3))")
                var line = ""
                for (i, launch) in launches.enumerated() {
                    let ms = try graphMedianMilliseconds(backend: backend, calls: max(copies, 24), samples: 9) { i in
                        try layers[i % copies].tiledProduct(x: x.address, ldx: k, rows: b, y: y.address, ldy: n, scratch: scratch, launch: launch)
                    }
                    let kernel = try backend.kernel(launch.kernelName, in: LinearKernels.tiled)
                    let resident = try kernel.residentBlocks(blockThreads: 32 * launch.warps,
                                                             sharedBytes: CUDAGPTQLayout.tiledSharedBytes(outputTiles: launch.outputTiles, rowTiles: rowTiles, warps: launch.warps))
                    line += "  \(pad("\(launch)" + (launch == chosen ? "*" : ""), 11)) \(pad(format1(ms * 1000), 5)) us r\(try kernel.registers()) \(resident)/SM"
                    if i % 4 == 3 || i == launches.count - 1 { log(line); line = "" }
                }
            }
        }
    }
}
