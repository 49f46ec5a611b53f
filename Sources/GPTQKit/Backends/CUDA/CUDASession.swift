#if canImport(Glibc)
import Glibc
#endif
import CCUDA

/// A CUDA model with its KV cache: `batch` sequences of up to `capacity` positions each.
/// Its layers run the architecture's block steps (BlockStep), the same dataflow as the CPU's
/// DecoderBlock; sublayer outputs are added to the residual stream by the next norm's kernel.
/// As an InferenceSession it runs sequence 0 of a batch-1 session. One token per sequence
/// runs the decode path, whose launches are captured once into a CUDA graph and replayed:
/// the graph reads each sequence's token and position from device memory and leaves the
/// next ones there (the argmax, the position plus one), so greedy decoding needs no
/// re-capture and no upload between steps. Several tokens run the prefill path (the linears
/// over all rows at once, flash attention per sequence), in chunks of at most `prefillChunk`
/// tokens. The KV cache is paged (KVBlockAllocator): blocks of `kvBlockSize` positions, by
/// default enough for every sequence's capacity, or fewer (`cacheBlocks`) shared as sequences
/// need them, with prompt prefixes reused across sequences.
public final class CUDASession: InferenceSession, @unchecked Sendable {
    public let model: CUDAModel
    public let batch: Int
    public let capacity: Int
    /// Tokens cached for each sequence.
    public private(set) var positions: [Int]
    public var position: Int { positions[0] }
    public var vocabSize: Int { model.vocab }
    /// The most tokens one prefill pass takes (longer inputs run in chunks).
    public let prefillChunk: Int

    let backend: CUDABackend
    /// Scratch of the prefill path. The decode graph has its own: a prefill that grows a
    /// buffer frees the old one, which a captured launch must never point at.
    let prefillScratch: CUDAScratch, decodeScratch: CUDAScratch
    let maxRows: Int
    /// The float32 residual stream, and the float16 inputs the norms write for the sublayers
    /// (`secondNormed` only where a parallel block has two norms).
    let x: DeviceBuffer, normed: DeviceBuffer, secondNormed: DeviceBuffer?
    let qkv: DeviceBuffer, attention: DeviceBuffer
    /// Each sublayer's output, until a norm adds it to x.
    let attentionOutput: DeviceBuffer, mlpOutput: DeviceBuffer
    let gateUp: DeviceBuffer, activated: DeviceBuffer, logits: DeviceBuffer
    /// Rows of the embedding's width: the input of a stem's projection, the output of a head's.
    let narrowRows: DeviceBuffer?
    /// int32 [maxRows]: the tokens to embed; after a decode step, each sequence's argmax.
    package let tokens: DeviceBuffer
    /// int32 [batch]: each sequence's position (the decode graph advances them).
    let positionBuffer: DeviceBuffer
    /// int32 [maxRows] each: a prefill row's position and sequence.
    let rowPositions: DeviceBuffer, rowSequences: DeviceBuffer
    /// Each layer's key and value blocks, [block][kvHeads][kvBlockSize][headDim] float16.
    let keys: [DeviceBuffer], values: [DeviceBuffer]
    /// Which blocks hold which sequence's positions; `blockTables` is the device's copy
    /// (int32 [batch][maxBlocksPerSequence]), uploaded when `uploadedTables` differs.
    package let blocks: KVBlockAllocator
    let blockTables: DeviceBuffer
    private var uploadedTables: [[Int32]] = []
    /// Decode attention's blocks a head and sequence at most (a long context is split over
    /// them), their partial results and per-head arrival counters (zero between launches).
    package let attentionSplits: Int
    let attentionPartials: DeviceBuffer, attentionCounters: DeviceBuffer
    private var decodeGraph: CUDAGraph?
    /// What the token and position buffers are known to hold (nil: unknown), so that a
    /// greedy loop feeding back the device's own argmax uploads nothing.
    private var deviceTokens: [Int32]?, devicePositions: [Int]?
    /// Each sequence's greedy next token after `prefill(sequence:ids:)`.
    private var nextTokens: [Int32]

    /// Positions a KV cache block holds (a power of two: the kernels find a position's block by shifting).
    public static let kvBlockSize = 64
    /// The most sequences one session holds.
    public static let maxBatch = 256

    /// How many KV cache blocks a session allocates.
    public enum CacheSize: Sendable {
        /// Enough for every sequence's capacity at once.
        case everySequenceFull
        /// What is left of this fraction of the device's memory once the session's other
        /// buffers are allocated, less room for the prefill path's scratch (at least one
        /// sequence's capacity): sequences share the blocks as they grow (a server's cache).
        case memoryFraction(Double)
    }

    init(model: CUDAModel, capacity: Int, batch: Int, prefillChunk: Int, cache: CacheSize = .everySequenceFull) throws {
        guard batch >= 1, batch <= Self.maxBatch else {
            throw GPTQError.invalidArgument("CUDA session batch \(batch) must be in 1...\(Self.maxBatch)")
        }
        guard capacity >= 1, prefillChunk >= 2 else {
            throw GPTQError.invalidArgument("CUDA session capacity \(capacity) and prefill chunk \(prefillChunk) must be at least 1 and 2")
        }
        self.model = model
        self.batch = batch
        self.capacity = capacity
        self.prefillChunk = prefillChunk
        positions = [Int](repeating: 0, count: batch)
        backend = model.backend
        prefillScratch = CUDAScratch(backend: backend)
        decodeScratch = CUDAScratch(backend: backend)
        let device = backend.device
        // A pass holds up to prefillChunk rows, from one sequence or (CUDABatchSession) several.
        maxRows = max(batch, min(prefillChunk, capacity * batch))
        x = try device.allocate(bytes: maxRows * model.hidden * 4)
        normed = try device.allocate(bytes: maxRows * model.hidden * 2)
        secondNormed = model.architecture.block.steps.contains(.mlp(.second)) ? try device.allocate(bytes: maxRows * model.hidden * 2) : nil
        qkv = try device.allocate(bytes: maxRows * model.qkvWidth * 2)
        attention = try device.allocate(bytes: maxRows * model.heads * model.headDim * 2)
        attentionOutput = try device.allocate(bytes: maxRows * model.hidden * 2)
        mlpOutput = try device.allocate(bytes: maxRows * model.hidden * 2)
        gateUp = try device.allocate(bytes: maxRows * model.gateUpWidth * 2)
        activated = try device.allocate(bytes: maxRows * model.intermediate * 2)
        logits = try device.allocate(bytes: maxRows * model.vocab * 4)
        let projects = model.stem.projectIn != nil || model.head.projectOut != nil
        narrowRows = projects ? try device.allocate(bytes: maxRows * model.embeddingWidth * 2) : nil
        tokens = try device.allocate(bytes: maxRows * 4)
        positionBuffer = try device.allocate(bytes: batch * 4)
        rowPositions = try device.allocate(bytes: maxRows * 4)
        rowSequences = try device.allocate(bytes: maxRows * 4)
        let blocksPerSequence = (capacity + Self.kvBlockSize - 1) / Self.kvBlockSize
        let blockCount: Int
        switch cache {
        case .everySequenceFull:
            blockCount = batch * blocksPerSequence
        case let .memoryFraction(fraction):
            let (free, total) = try device.memoryInfo()
            // The prefill path dequantizes the largest GPTQ layer into scratch, beside cuBLAS's own needs.
            var largest = 0
            for layer in model.layers {
                let linears: [CUDALinear] = layer.qkv.map(\.linear) + layer.gateUp.map(\.linear) + [layer.output, layer.down]
                for linear in linears { largest = max(largest, linear.inFeatures * linear.outFeatures * 2) }
            }
            let budget = Int(fraction * Double(total)) - (total - free) - largest - (256 << 20)
            blockCount = min(max(budget / (2 * model.layers.count * Self.kvBlockBytes(model: model)), 0), batch * blocksPerSequence)
            guard blockCount >= blocksPerSequence else {
                throw GPTQError.invalidArgument("a \(Int(fraction * 100))% share of the GPU's \(total >> 20) MiB leaves room for \(blockCount) KV cache blocks "
                                                + "of \(Self.kvBlockSize) positions, less than one sequence of \(capacity) needs (\(blocksPerSequence)): "
                                                + "raise --gpu-memory-fraction or lower --max-model-len")
            }
        }
        blocks = try KVBlockAllocator(blockSize: Self.kvBlockSize, blockCount: blockCount, sequences: batch, capacity: capacity)
        let cacheBytes = blocks.blockCount * Self.kvBlockBytes(model: model)
        keys = try model.layers.map { _ in try device.allocate(bytes: cacheBytes) }
        values = try model.layers.map { _ in try device.allocate(bytes: cacheBytes) }
        blockTables = try device.allocate(bytes: batch * blocks.maxBlocksPerSequence * 4)
        attentionSplits = Self.decodeAttentionSplits(capacity: capacity, blocksWithoutSplitting: model.heads * batch,
                                                     multiprocessors: device.multiprocessorCount)
        attentionPartials = try device.allocate(bytes: batch * model.heads * attentionSplits * (2 + model.headDim) * 4)
        attentionCounters = try device.allocate(bytes: batch * model.heads * 4)
        nextTokens = [Int32](repeating: 0, count: batch)
        try attentionCounters.fill(byte: 0, stream: backend.stream)
    }

    /// One layer's keys (or values) of one KV cache block, in bytes.
    public static func kvBlockBytes(model: CUDAModel) -> Int { model.kvHeads * kvBlockSize * model.headDim * 2 }

    public func rewind(to position: Int) { rewind(sequence: 0, to: position) }

    /// Forgets sequence `sequence`'s positions from `position` on.
    public func rewind(sequence: Int, to position: Int) {
        positions[sequence] = min(max(0, position), positions[sequence])
        blocks.rewind(sequence: sequence, to: positions[sequence])
    }

    /// Maps the cached blocks that hold the first tokens of `prompt` onto empty sequence
    /// `sequence` (prefix caching); returns the positions it now holds.
    func mapPrefix(sequence: Int, prompt: [Int32]) -> Int {
        precondition(positions[sequence] == 0, "mapPrefix on a sequence that holds positions")
        positions[sequence] = blocks.mapPrefix(sequence: sequence, prompt: prompt)
        return positions[sequence]
    }

    /// Blocks for each sequence's positions up to `lengths[sequence]` (copies of shared
    /// blocks it will write made on the device), and the device's block tables brought up to date.
    private func reserveBlocks(_ lengths: [(sequence: Int, length: Int)]) throws {
        for (sequence, length) in lengths {
            for copy in try blocks.reserve(sequence: sequence, upTo: length) {
                let bytes = Self.kvBlockBytes(model: model)
                for cache in keys + values {
                    try cache.copy(from: cache, bytes: bytes, sourceOffset: Int(copy.source) * bytes, offset: Int(copy.destination) * bytes,
                                   stream: backend.stream)
                }
            }
        }
        guard blocks.tables != uploadedTables else { return }
        var flat = [Int32](repeating: 0, count: batch * blocks.maxBlocksPerSequence)
        for (s, table) in blocks.tables.enumerated() {
            for (i, block) in table.enumerated() { flat[s * blocks.maxBlocksPerSequence + i] = block }
        }
        try upload(flat, to: blockTables)
        uploadedTables = blocks.tables
    }

    /// The block tables' kernel arguments: tables, blocks a table, log2 of the block size.
    private var blockArgs: [KernelArg] {
        [.buffer(blockTables), .int(blocks.maxBlocksPerSequence), .int(Self.kvBlockSize.trailingZeroBitCount)]
    }

    // MARK: InferenceSession (sequence 0 of a batch-1 session)

    public func forward(_ tokenIDs: [Int32], allLogits: Bool) throws -> [Float] {
        var result: [Float] = []
        try feed(tokenIDs) { rows, last in
            if allLogits {
                result += try backend.device.download(logits, as: Float.self, count: rows * model.vocab)
            } else if last {
                result = try backend.device.download(logits, as: Float.self, count: model.vocab)
            }
        }
        return result
    }

    /// The argmax of the last token's logits (the lowest id among equal maxima), found on the
    /// GPU: 4 bytes come back instead of the logits.
    public func forwardGreedy(_ tokenIDs: [Int32]) throws -> Int32 {
        let decoded = try feed(tokenIDs, logitsForAllRows: false) { _, _ in }
        // A decode step leaves its argmax in the token buffer; a prefill leaves logits only.
        if !decoded { try launch("argmax_rows", grid: (1, 1, 1), block: (1024, 1, 1), [.buffer(logits), .int(model.vocab), .buffer(tokens)]) }
        let token = try backend.device.download(tokens, as: Int32.self, count: 1)[0]
        deviceTokens = [token]
        return token
    }

    /// Feeds `tokenIDs` and draws the next token on the GPU from the last token's logits
    /// (temperature, top-k and top-p as the CPU `Sampler` applies them; see SamplingKernels),
    /// at `uniform` in [0, 1) of the kept probability mass: one id comes back, not the logits.
    /// The repetition penalty is not applied here.
    public func forwardSample(_ tokenIDs: [Int32], parameters: SamplingParameters, uniform: Float) throws -> Int32 {
        guard !parameters.isGreedy else { return try forwardGreedy(tokenIDs) }
        try parameters.validate()
        guard parameters.repetitionPenalty == 1 else {
            throw GPTQError.invalidArgument("forwardSample applies no repetition penalty (got \(parameters.repetitionPenalty)): sample the logits of forward")
        }
        try feed(tokenIDs, logitsForAllRows: false) { _, _ in }
        try sample(logits: logits.address, parameters: parameters, uniform: uniform)
        let token = try backend.device.download(tokens, as: Int32.self, count: 1)[0]
        deviceTokens = [token]
        return token
    }

    /// Queues the draw from float32 logits [vocab] at `logits` into the token buffer's row 0.
    /// `weightsOnChip` nil: in shared memory when the vocabulary fits (checks force either way).
    package func sample(logits row: CUdeviceptr, parameters: SamplingParameters, uniform: Float, weightsOnChip: Bool? = nil) throws {
        let kernel = try backend.kernel("sample_row", in: SamplingKernels.source)
        // The weights stay on chip when the vocabulary fits beside the kernel's own 4 KB.
        let sharedBytes = model.vocab * 4
        let onChip = weightsOnChip ?? (sharedBytes + 8192 <= backend.device.maxSharedMemoryPerBlock)
        if onChip && sharedBytes > 48 * 1024 { try kernel.setMaxDynamicSharedMemory(sharedBytes) }
        let weights = try prefillScratch.buffer("sampling weights", bytes: onChip ? 4 : sharedBytes)
        try kernel.launch(grid: (1, 1, 1), block: (1024, 1, 1), sharedBytes: onChip ? sharedBytes : 0, stream: backend.stream,
                          [.pointer(row), .int(model.vocab), .float32(parameters.temperature), .int(parameters.topK), .float32(parameters.topP),
                           .float32(min(max(uniform, 0), 0x1.fffffep-1)), .buffer(weights), .int(onChip ? 1 : 0), .buffer(tokens)])
    }

    /// Runs `tokenIDs` after sequence 0's cached tokens, in chunks; `afterChunk(rows, last)`
    /// sees each chunk's logits in `logits` (every row's when `logitsForAllRows`, else the last
    /// chunk's last row). Returns whether the last chunk ran the decode graph.
    @discardableResult
    private func feed(_ tokenIDs: [Int32], logitsForAllRows: Bool = true, afterChunk: (Int, Bool) throws -> Void) throws -> Bool {
        guard batch == 1 else { throw GPTQError.invalidArgument("forward runs batch-1 sessions (this one holds \(batch) sequences)") }
        guard !tokenIDs.isEmpty else { throw GPTQError.invalidArgument("forward needs at least one token") }
        guard position + tokenIDs.count <= capacity else {
            throw GPTQError.invalidArgument("\(tokenIDs.count) tokens after \(position) exceed the session's capacity of \(capacity)")
        }
        try checkLearnedPositions(upTo: position + tokenIDs.count)
        if let bad = tokenIDs.first(where: { $0 < 0 || Int($0) >= model.vocab }) {
            throw GPTQError.invalidArgument("token \(bad) outside the vocabulary of \(model.vocab)")
        }
        try backend.device.makeCurrent()
        var start = 0, decoded = false
        while start < tokenIDs.count {
            let chunk = Array(tokenIDs[start..<min(tokenIDs.count, start + maxRows)])
            let last = start + chunk.count == tokenIDs.count
            decoded = chunk.count == 1
            if decoded {
                try decode(chunk)
            } else {
                try prefill([(0, chunk)], logitRows: logitsForAllRows ? chunk.count : (last ? 1 : 0))
            }
            try afterChunk(chunk.count, last)
            start += chunk.count
        }
        return decoded
    }

    // MARK: decode (one token for each of the `batch` sequences)

    /// One decode step: `ids[s]` at position `positions[s]` for every sequence s. Leaves the
    /// float32 logits [batch, vocab], each row's argmax in the token buffer and the device's
    /// positions advanced. The first step captures the graph.
    func decode(_ ids: [Int32]) throws {
        precondition(ids.count == batch)
        if let full = positions.firstIndex(where: { $0 >= capacity }) {
            throw GPTQError.invalidArgument("sequence \(full) is full: the session holds \(capacity) positions")
        }
        try checkLearnedPositions(upTo: positions.max()! + 1)
        try reserveBlocks(positions.indices.map { ($0, positions[$0] + 1) })
        if decodeGraph == nil {
            // An uncaptured step first sizes the scratch buffers and loads every kernel; the
            // captured one then writes the same cache entries again.
            try upload(ids, positions)
            try queueDecode()
            try upload(ids, positions)
            decodeGraph = try backend.stream.capture { try queueDecode() }
        } else {
            if deviceTokens != ids { try uploadTokens(ids) }
            if devicePositions != positions { try uploadPositions(positions) }
        }
        try decodeGraph!.launch(on: backend.stream)
        for s in positions.indices {
            blocks.wrote(sequence: s, start: positions[s], tokens: [ids[s]])
            positions[s] += 1
        }
        devicePositions = positions
        deviceTokens = nil
    }

    /// `steps` greedy decode steps for every sequence after `prefill(sequence:ids:)`: graph
    /// replays back to back, each step's argmax feeding the next with no host round trip.
    /// Returns the seconds per `steps` steps (device events around all replays but the first,
    /// which may capture the graph).
    public func decodeGreedy(steps: Int) throws -> Double {
        guard steps >= 2, positions.allSatisfy({ $0 + steps <= capacity }) else {
            throw GPTQError.invalidArgument("\(steps) decode steps after positions \(positions) (at least 2, within the capacity \(capacity))")
        }
        try checkLearnedPositions(upTo: positions.max()! + steps)
        try backend.device.makeCurrent()
        let start = try CUDAEvent(device: backend.device), end = try CUDAEvent(device: backend.device)
        try reserveBlocks(positions.indices.map { ($0, positions[$0] + steps) })
        try decode(nextTokens)
        try start.record(on: backend.stream)
        for _ in 1..<steps { try decodeGraph!.launch(on: backend.stream) }
        try end.record(on: backend.stream)
        for s in positions.indices {
            // The replays' tokens stay on the device.
            blocks.wrote(sequence: s, start: positions[s], tokens: nil)
            positions[s] += steps - 1
        }
        devicePositions = positions
        return try end.milliseconds(since: start) / 1000 * Double(steps) / Double(steps - 1)
    }

    /// `steps` greedy tokens for every sequence after `prefill(sequence:ids:)`, one step at a
    /// time ([step][sequence]).
    public func greedyTokens(steps: Int) throws -> [[Int32]] {
        try backend.device.makeCurrent()
        var step = nextTokens, out: [[Int32]] = []
        for _ in 0..<steps {
            try decode(step)
            step = try backend.device.download(tokens, as: Int32.self, count: batch)
            deviceTokens = step
            out.append(step)
        }
        return out
    }

    /// Prefills sequence `sequence` with `ids` from position 0 (one sequence at a time; the
    /// prompts may differ in length) and keeps its greedy next token for `decodeGreedy` and
    /// `greedyTokens`. Returns the seconds the prefill took on the GPU.
    @discardableResult
    public func prefill(sequence: Int, ids: [Int32]) throws -> Double {
        guard sequence >= 0, sequence < batch, !ids.isEmpty, ids.count <= maxRows, ids.count <= capacity else {
            throw GPTQError.invalidArgument("prefill of \(ids.count) tokens into sequence \(sequence) (batch \(batch), at most \(min(maxRows, capacity)) tokens)")
        }
        if let bad = ids.first(where: { $0 < 0 || Int($0) >= model.vocab }) {
            throw GPTQError.invalidArgument("token \(bad) outside the vocabulary of \(model.vocab)")
        }
        try checkLearnedPositions(upTo: ids.count)
        try backend.device.makeCurrent()
        rewind(sequence: sequence, to: 0)
        let start = try CUDAEvent(device: backend.device), end = try CUDAEvent(device: backend.device)
        try start.record(on: backend.stream)
        try prefill([(sequence, ids)], logitRows: 1)
        try end.record(on: backend.stream)
        let seconds = try end.milliseconds(since: start) / 1000
        try launch("argmax_rows", grid: (1, 1, 1), block: (1024, 1, 1), [.buffer(logits), .int(model.vocab), .buffer(tokens)])
        nextTokens[sequence] = try backend.device.download(tokens, as: Int32.self, count: 1)[0]
        deviceTokens = nil
        return seconds
    }

    private func queueDecode() throws {
        let m = model
        try embed(rows: batch, positions: positionBuffer, scratch: decodeScratch)
        var pending: [DeviceBuffer] = []
        for i in m.layers.indices { pending = try runLayer(i, rows: batch, pending: pending, attention: .decode, scratch: decodeScratch) }
        try finalLogits(rows: batch, firstRow: 0, pending: pending, scratch: decodeScratch)
        try launch("argmax_rows", grid: (batch, 1, 1), block: (1024, 1, 1), [.buffer(logits), .int(m.vocab), .buffer(tokens)])
        try launch("advance_positions", grid: (1, 1, 1), block: (256, 1, 1), [.buffer(positionBuffer), .int(batch)])
    }

    /// Each of logits rows 0..<targets.count scored against its target on the GPU (log-softmax and argmax).
    func scoreTargets(_ targets: [Int32]) throws -> [TokenScore] {
        let targetBuffer = try prefillScratch.buffer("score targets", bytes: targets.count * 4)
        let scores = try prefillScratch.buffer("scores", bytes: targets.count * 8)
        try upload(targets, to: targetBuffer)
        try launch("score_targets", grid: (targets.count, 1, 1), block: (1024, 1, 1),
                   [.buffer(logits), .int(model.vocab), .buffer(targetBuffer), .buffer(scores)])
        let values = try backend.device.download(scores, as: Float.self, count: targets.count * 2)
        return targets.indices.map { TokenScore(logProbability: values[2 * $0], isArgmax: values[2 * $0 + 1] == 1) }
    }

    /// The learned position table (GPT-2, OPT, ...) holds positions up to its size only.
    func checkLearnedPositions(upTo end: Int) throws {
        if let limit = model.stem.positionLimit, end > limit {
            throw GPTQError.invalidArgument("positions up to \(end) exceed the model's \(limit) learned positions")
        }
    }

    // MARK: prefill (the tokens of one or several sequences)

    /// One sequence's rows in a prefill pass: rows firstRow..<firstRow+rows, its tokens from
    /// position `startPosition` on. Linears run over every segment's rows at once; attention runs
    /// per segment over its sequence's cache.
    private struct Segment {
        let sequence: Int, startPosition: Int, firstRow: Int, rows: Int
    }

    /// Each entry's `ids` after its sequence's cached positions, all in one pass (at most
    /// `maxRows` rows, each sequence once); float32 logits of the pass's last `logitRows` rows
    /// in logits rows 0..<logitRows.
    func prefill(_ entries: [(sequence: Int, ids: [Int32])], logitRows: Int) throws {
        var segments: [Segment] = [], rowPosition: [Int32] = [], rowSequence: [Int32] = []
        for (sequence, ids) in entries {
            segments.append(Segment(sequence: sequence, startPosition: positions[sequence], firstRow: rowPosition.count, rows: ids.count))
            rowPosition += (0..<ids.count).map { Int32(positions[sequence] + $0) }
            rowSequence += [Int32](repeating: Int32(sequence), count: ids.count)
        }
        let rows = rowPosition.count
        precondition(rows <= maxRows && Set(entries.map(\.sequence)).count == entries.count)
        try reserveBlocks(entries.map { ($0.sequence, positions[$0.sequence] + $0.ids.count) })
        try uploadTokens(entries.flatMap(\.ids))
        try upload(rowPosition, to: rowPositions)
        try upload(rowSequence, to: rowSequences)
        try embed(rows: rows, positions: rowPositions, scratch: prefillScratch)
        var pending: [DeviceBuffer] = []
        for i in model.layers.indices {
            pending = try runLayer(i, rows: rows, pending: pending, attention: .prefill(segments), scratch: prefillScratch)
        }
        if logitRows > 0 { try finalLogits(rows: logitRows, firstRow: rows - logitRows, pending: pending, scratch: prefillScratch) }
        for (sequence, ids) in entries {
            blocks.wrote(sequence: sequence, start: positions[sequence], tokens: ids)
            positions[sequence] += ids.count
        }
        deviceTokens = nil
    }

    private func upload(_ values: [Int32], to buffer: DeviceBuffer) throws {
        try values.withUnsafeBytes { try buffer.copy(from: $0.baseAddress!, bytes: $0.count, stream: backend.stream) }
    }

    /// The inputs of a decoder layer's linears, for `layerForward`'s observer.
    public enum LinearInput: Sendable {
        /// The attention sublayer's input, read by the q, k and v projections.
        case attention
        /// The attention output, input of the output projection.
        case outputProjection
        /// The MLP's input, read by its gate and up projections.
        case mlp
        /// The activated MLP row, input of the down projection.
        case downProjection
    }

    /// Decoder layer `layer`'s prefill forward over `rows` positions 0..<rows of sequence 0,
    /// in place on `hidden` (float16 [rows, model.hidden], e.g. calibration activations: the
    /// layer's input before, its output with the residual after). `observe` sees each
    /// linear's float16 input before the linear reads it: [rows, width] at `input`, rows
    /// `stride` elements apart. Runs on the device's stream; the KV cache of sequence 0 is
    /// overwritten. For layer-by-layer work such as GPTQ on the GPU.
    public func layerForward(_ layer: Int, hidden: DeviceBuffer, rows: Int,
                             observe: ((_ what: LinearInput, _ input: CUdeviceptr, _ stride: Int) throws -> Void)? = nil) throws {
        guard model.layers.indices.contains(layer), rows >= 1, rows <= maxRows, rows <= capacity, hidden.byteCount >= rows * model.hidden * 2 else {
            throw GPTQError.invalidArgument("layerForward of layer \(layer) over \(rows) rows (the model has \(model.numLayers) layers; "
                                            + "the session takes at most \(min(maxRows, capacity)) rows; hidden holds \(hidden.byteCount) bytes)")
        }
        try backend.device.makeCurrent()
        rewind(sequence: 0, to: 0)
        try reserveBlocks([(0, rows)])
        try upload((0..<rows).map { Int32($0) }, to: rowPositions)
        try upload([Int32](repeating: 0, count: rows), to: rowSequences)
        try launch("half_to_float", grid: (rows, 1, 1), block: (256, 1, 1), [.buffer(hidden), .buffer(x), .int(model.hidden)])
        let pending = try runLayer(layer, rows: rows, pending: [], attention: .prefill([Segment(sequence: 0, startPosition: 0, firstRow: 0, rows: rows)]),
                                   scratch: prefillScratch, observe: observe)
        try normalize(nil, rows: rows, adding: pending, into: hidden, replacesResidual: false)
    }

    /// How a layer's attention runs: one new token a sequence over the cache (the decode
    /// kernel), or segments of several tokens (the flash prefill kernel).
    private enum AttentionPass {
        case decode
        case prefill([Segment])
    }

    /// Layer i's block steps over `rows` rows: `pending`, the sublayer outputs the previous layer
    /// left unadded, go into the first norm; returns those this layer leaves.
    private func runLayer(_ i: Int, rows: Int, pending: [DeviceBuffer], attention pass: AttentionPass, scratch: CUDAScratch,
                          observe: ((LinearInput, CUdeviceptr, Int) throws -> Void)? = nil) throws -> [DeviceBuffer] {
        let m = model, layer = m.layers[i]
        var pending = pending
        func input(_ which: SublayerInput) -> DeviceBuffer { which == .first ? normed : secondNormed! }
        for step in m.architecture.block.steps {
            switch step {
            case let .normalize(role, into, replacesResidual):
                let norm = role.map { $0 == .attention ? layer.attentionNorm : layer.mlpNorm! }
                try normalize(norm, rows: rows, adding: pending, into: into.map(input), replacesResidual: replacesResidual)
                pending = []
            case let .attention(from):
                try observe?(.attention, input(from).address, m.hidden)
                for part in layer.qkv {
                    try part.linear.forward(x: input(from).address, ldx: m.hidden, rows: rows, y: qkv.address + CUdeviceptr(part.column * 2),
                                            ldy: m.qkvWidth, scratch: scratch)
                }
                switch pass {
                case .decode: try decodeAttention(i)
                case let .prefill(segments): try prefillAttention(i, rows: rows, segments: segments)
                }
                try observe?(.outputProjection, attention.address, m.heads * m.headDim)
                try layer.output.forward(x: attention.address, ldx: m.heads * m.headDim, rows: rows, y: attentionOutput.address, ldy: m.hidden,
                                         scratch: scratch)
            case let .mlp(from):
                try observe?(.mlp, input(from).address, m.hidden)
                for part in layer.gateUp {
                    try part.linear.forward(x: input(from).address, ldx: m.hidden, rows: rows, y: gateUp.address + CUdeviceptr(part.column * 2),
                                            ldy: m.gateUpWidth, scratch: scratch)
                }
                let mlp = m.architecture.mlp
                try launch("mlp_activation", grid: (min((m.intermediate + 255) / 256, 64), rows, 1), block: (256, 1, 1), overlapping: true,
                           [.buffer(gateUp), .int(m.gateUpWidth), .int(m.intermediate), .int(mlp.gate == nil ? 0 : 1),
                            .int(Int(mlp.activation.kernelCode)), .buffer(activated)])
                try observe?(.downProjection, activated.address, m.intermediate)
                try layer.down.forward(x: activated.address, ldx: m.intermediate, rows: rows, y: mlpOutput.address, ldy: m.hidden, scratch: scratch)
            case let .addToResidual(outputs):
                pending += outputs.map { $0 == .attention ? attentionOutput : mlpOutput }
            }
        }
        return pending
    }

    /// Decode attention of layer i: each sequence's new token (its q, k, v in the qkv row) over its cache.
    private func decodeAttention(_ i: Int) throws {
        let m = model, layer = m.layers[i], p = m.positions
        try launch("attention_decode", grid: (m.heads, batch, attentionSplits), block: (32 * Self.decodeAttentionWarps, 1, 1),
                   sharedBytes: Self.decodeAttentionSharedBytes(headDim: m.headDim), overlapping: true,
                   [.buffer(qkv), .int(m.qkvWidth), .buffer(p.inverseFrequencies), .int(p.rotaryDimensions), .int(p.interleaved ? 1 : 0),
                    .buffer(positionBuffer), .int(m.heads), .int(m.kvHeads), .int(m.headDim), .buffer(keys[i]), .buffer(values[i])] + blockArgs + [
                    .pointer(layer.queryNorm?.address ?? 0), .pointer(layer.keyNorm?.address ?? 0), .float32(qkNormEps),
                    .float32(layer.attentionScale), .int(layer.window ?? 0), .buffer(attention), .int(m.heads * m.headDim),
                    .buffer(attentionPartials), .buffer(attentionCounters)] + alibiArgs)
    }

    /// Prefill attention of layer i over `rows` rows (the row position and sequence buffers
    /// hold each row's): positions and the cache writes for every row at once, then each
    /// segment's queries against its sequence's cached keys and values.
    private func prefillAttention(_ i: Int, rows: Int, segments: [Segment]) throws {
        let m = model, layer = m.layers[i], p = m.positions
        try launch("rope_qkv", grid: (rows, m.heads + m.kvHeads, 1), block: (64, 1, 1),
                   [.buffer(qkv), .int(m.qkvWidth), .buffer(p.inverseFrequencies), .int(p.rotaryDimensions), .int(p.interleaved ? 1 : 0),
                    .buffer(rowPositions), .buffer(rowSequences), .int(m.heads), .int(m.kvHeads), .int(m.headDim), .buffer(keys[i]),
                    .buffer(values[i])] + blockArgs + [.pointer(layer.queryNorm?.address ?? 0), .pointer(layer.keyNorm?.address ?? 0),
                    .float32(qkNormEps)])
        let (name, sharedBytes) = Self.prefillAttentionKernel(headDim: m.headDim)!
        let kernel = try backend.kernel(name, in: DecoderKernels.source)
        if sharedBytes > 48 * 1024 { try kernel.setMaxDynamicSharedMemory(sharedBytes) }
        for segment in segments {
            try kernel.launch(grid: ((segment.rows + 63) / 64, m.heads, 1), block: (128, 1, 1), sharedBytes: sharedBytes, stream: backend.stream,
                              [.buffer(qkv), .int(m.qkvWidth), .int(segment.firstRow), .int(segment.rows), .int(segment.startPosition),
                               .int(segment.sequence), .int(m.heads), .int(m.kvHeads), .int(m.headDim), .buffer(keys[i]), .buffer(values[i])]
                              + blockArgs + [.float32(layer.attentionScale), .int(layer.window ?? 0), .buffer(attention),
                                             .int(m.heads * m.headDim)] + alibiArgs)
        }
    }

    /// The flash prefill kernel for a head dimension, and its shared memory (q, k and v tiles of
    /// 64 rows of the padded width + 8 halves): the kernels take head dimensions that are
    /// multiples of 8 up to 256 (nil otherwise), padded to the next width they are compiled for.
    package static func prefillAttentionKernel(headDim: Int) -> (name: String, sharedBytes: Int)? {
        guard headDim % 8 == 0, let width = [16, 32, 48, 64, 80, 96, 128, 256].first(where: { $0 >= headDim }) else { return nil }
        return ("attention_prefill_d\(width)", 3 * 64 * (width + 8) * 2)
    }

    /// ALiBi's slopes, bfloat16 flag and scale, as the attention kernels take them (no slopes: no bias).
    private var alibiArgs: [KernelArg] {
        let p = model.positions
        return [.pointer(p.alibiSlopes?.address ?? 0), .int(p.alibiBFloat16 ? 1 : 0), .float32(p.alibiScale)]
    }

    /// Qwen3's per-head norms' epsilon (the attention kernels read it only with those norms).
    private var qkNormEps: Float { model.architecture.attention.qkNorm?.query.eps ?? 0 }

    // MARK: pieces every path shares

    /// The stem: `rows` tokens embedded into x (through a projection where the family has
    /// one), their learned positions (row r's at `positions[r]`) added and the stem's norm applied.
    private func embed(rows: Int, positions rowPositions: DeviceBuffer, scratch: CUDAScratch) throws {
        let m = model
        var table = m.embedding, tokenRows = tokens.address
        if let projectIn = m.stem.projectIn, let narrowRows {
            try launch("gather_rows", grid: (rows, 1, 1), block: (256, 1, 1),
                       [.buffer(tokens), .buffer(m.embedding), .buffer(narrowRows), .int(m.embeddingWidth)])
            try projectIn.forward(x: narrowRows.address, ldx: m.embeddingWidth, rows: rows, y: attentionOutput.address, ldy: m.hidden, scratch: scratch)
            (table, tokenRows) = (attentionOutput, 0)
        }
        try launch("embed", grid: (rows, 1, 1), block: (256, 1, 1),
                   [.pointer(tokenRows), .buffer(table), .buffer(x), .int(m.hidden), .pointer(m.stem.positions?.address ?? 0),
                    .int(m.stem.positionOffset), .buffer(rowPositions)])
        if let norm = m.stem.norm { try normalize(norm, rows: rows, adding: [], into: nil, replacesResidual: true) }
    }

    /// One norm launch over `rows` rows: x += each of `pending` (at most two), then `into` =
    /// float16(norm(x)) (a copy without a norm), and x = norm(x) too when `replacesResidual`.
    private func normalize(_ norm: CUDANorm?, rows: Int, adding pending: [DeviceBuffer], into out: DeviceBuffer?, replacesResidual: Bool) throws {
        precondition(pending.count <= 2, "a block adds at most two sublayer outputs at once")
        let m = model, shape = Self.normLaunch(hidden: m.hidden)!
        let kind: Int
        switch norm?.kind {
        case nil: kind = 0
        case .rms: kind = 1
        case .layer: kind = 2
        }
        try launch(shape.kernel, grid: (rows, 1, 1), block: (shape.threads, 1, 1), overlapping: true,
                   [.buffer(x), .pointer(pending.first?.address ?? 0), .pointer(pending.count > 1 ? pending[1].address : 0), .int(m.hidden),
                    .int(kind), .pointer(norm?.weight?.address ?? 0), .pointer(norm?.bias?.address ?? 0), .pointer(out?.address ?? 0),
                    .int(m.hidden), .float32(norm?.eps ?? 0), .int(replacesResidual ? 1 : 0)])
    }

    /// The head on rows firstRow..<firstRow+rows: final norm (after the last sublayer outputs
    /// are added; rows before firstRow are added too, to keep x whole), the head's projection,
    /// the LM head into float32 logits rows 0..<rows.
    private func finalLogits(rows: Int, firstRow: Int, pending: [DeviceBuffer], scratch: CUDAScratch) throws {
        let m = model
        try normalize(m.head.finalNorm, rows: firstRow + rows, adding: pending, into: normed, replacesResidual: false)
        var input = normed.address + CUdeviceptr(firstRow * m.hidden * 2), width = m.hidden
        if let projectOut = m.head.projectOut, let narrowRows {
            try projectOut.forward(x: input, ldx: width, rows: rows, y: narrowRows.address, ldy: m.embeddingWidth, scratch: scratch)
            (input, width) = (narrowRows.address, m.embeddingWidth)
        }
        if m.lmHead.writesFloat32 {
            try m.lmHead.forward(x: input, ldx: width, rows: rows, y: logits.address, ldy: m.vocab, scratch: scratch, f32Output: true)
        } else {
            // A GPTQ LM head writes float16 logits.
            let halves = try scratch.buffer("float16 logits", bytes: rows * m.vocab * 2)
            try m.lmHead.forward(x: input, ldx: width, rows: rows, y: halves.address, ldy: m.vocab, scratch: scratch)
            try launch("half_to_float", grid: (rows, 1, 1), block: (256, 1, 1), [.buffer(halves), .buffer(logits), .int(m.vocab)])
        }
    }

    /// Decode attention's warps, and its shared memory (at most 12 KB, whatever the context):
    /// the query (float32), the new key and value (float16), and each warp's running max, sum
    /// and partial output per slot lane (lanes: a key's head dimension over 8, rounded up to a
    /// power of two).
    static let decodeAttentionWarps = 8
    static func decodeAttentionSharedBytes(headDim: Int) -> Int {
        var lanes = 1
        while lanes * 8 < headDim { lanes *= 2 }
        return (2 * headDim + decodeAttentionWarps * lanes * 10) * 4
    }

    /// Decode attention's blocks a head and sequence: enough for about two blocks a
    /// multiprocessor over all heads and sequences, at most one for every 256 positions of
    /// capacity (the kernel's least keys a split) and 32. Measured on the 7B shape after a
    /// 2000-token prompt (BENCHMARKS.md): batch 1 gains most from 9 (the capacity's limit),
    /// batch 8 is flat from 1 to 3 and loses at 9.
    static func decodeAttentionSplits(capacity: Int, blocksWithoutSplitting: Int, multiprocessors: Int) -> Int {
        let wanted = (2 * multiprocessors + blocksWithoutSplitting - 1) / blocksWithoutSplitting
        return max(1, min(32, (capacity + 255) / 256, wanted))
    }

    /// The norm kernel and block for rows of `hidden` elements: a quarter as many threads
    /// (a multiple of 32, 32 to 1024) keeping up to 8 elements each, else 1024 keeping up to
    /// 16; nil above 16384.
    package static func normLaunch(hidden: Int) -> (kernel: String, threads: Int)? {
        let threads = min(1024, max(32, (hidden / 4 + 31) / 32 * 32))
        if hidden <= 8 * threads { return ("add_norm", threads) }
        return hidden <= 16 * 1024 ? ("add_norm16", 1024) : nil
    }

    private func upload(_ ids: [Int32], _ positions: [Int]) throws {
        try uploadTokens(ids)
        try uploadPositions(positions)
    }

    private func uploadTokens(_ ids: [Int32]) throws {
        try ids.withUnsafeBytes { try tokens.copy(from: $0.baseAddress!, bytes: $0.count, stream: backend.stream) }
        deviceTokens = ids
    }

    private func uploadPositions(_ values: [Int]) throws {
        try values.map { Int32($0) }.withUnsafeBytes { try positionBuffer.copy(from: $0.baseAddress!, bytes: $0.count, stream: backend.stream) }
        devicePositions = values
    }

    /// `overlapping`: a kernel that waits for the one ahead before it reads or writes (the norm,
    /// decode attention, the MLP's activation) is launched to overlap it when the backend uses dependent launch.
    private func launch(_ name: String, grid: (Int, Int, Int), block: (Int, Int, Int), sharedBytes: Int = 0, overlapping: Bool = false,
                        _ args: [KernelArg]) throws {
        let kernel = try backend.kernel(name, in: DecoderKernels.source)
        try kernel.launch(grid: grid, block: block, sharedBytes: sharedBytes, stream: backend.stream,
                          overlappingPrevious: overlapping && backend.dependentLaunch, args)
    }
}
