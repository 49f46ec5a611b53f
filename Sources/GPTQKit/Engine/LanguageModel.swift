import CKernels

/// Makes the linear layer of the module with full stored name `name` (e.g.
/// `model.layers.0.self_attn.q_proj`, or the LM head's), e.g. a GPTQ-quantized one; nil
/// loads the float weight from the checkpoint as usual.
public typealias LinearFactory = (_ name: String, _ inFeatures: Int, _ outFeatures: Int) throws -> LinearLayer?

/// A decoder-only language model of any registered family, loaded from a Hugging Face
/// folder for the CPU: its weights memory-mapped from the safetensors in their stored
/// dtype, its layers run by the block engine (DecoderBlock).
public final class LanguageModel: @unchecked Sendable {
    public let config: ModelConfig
    public let family: ModelFamily
    public let architecture: Architecture
    public let checkpoint: Checkpoint
    /// Token embedding [vocab, embeddingWidth], stored dtype.
    public let embedding: Tensor
    let names: TensorNames
    let learnedPositions: Tensor?
    let stemNorm: NormWeights?
    let projectIn: LinearLayer?
    let finalNorm: NormWeights?
    let projectOut: LinearLayer?
    public var lmHead: LinearLayer
    let layers: [DecoderBlock]
    let context: BlockContext

    private init(config: ModelConfig, family: ModelFamily, architecture: Architecture, checkpoint: Checkpoint, names: TensorNames,
                 embedding: Tensor, learnedPositions: Tensor?, stemNorm: NormWeights?, projectIn: LinearLayer?,
                 finalNorm: NormWeights?, projectOut: LinearLayer?, lmHead: LinearLayer, layers: [DecoderBlock]) {
        self.config = config
        self.family = family
        self.architecture = architecture
        self.checkpoint = checkpoint
        self.names = names
        self.embedding = embedding
        self.learnedPositions = learnedPositions
        self.stemNorm = stemNorm
        self.projectIn = projectIn
        self.finalNorm = finalNorm
        self.projectOut = projectOut
        self.lmHead = lmHead
        self.layers = layers
        context = BlockContext(architecture)
    }

    /// Loads float and GPTQ-quantized folders alike (see QuantizedCheckpoint).
    /// `weightsAsFloat16`: the embedding and the float linears' weights and biases are
    /// rounded to float16 (copies, for float32 and bfloat16 checkpoints), as the CUDA backend
    /// holds them; norm weights stay float32, as there.
    public static func load(folder: String, linearFactory: LinearFactory? = nil, weightsAsFloat16: Bool = false) throws -> LanguageModel {
        let config = try ModelConfig(folder: folder)
        let family = try ModelFamily.forConfig(config)
        let architecture = try family.architecture(config)
        let checkpoint = try Checkpoint(folder: folder)
        // A GPTQ folder's quantized linears load as GPTQLinear unless the caller chose a factory.
        let linearFactory = try linearFactory ?? QuantizedCheckpoint(folder: folder, checkpoint: checkpoint)?.linearFactory
        let weights = WeightReader(checkpoint: checkpoint, names: try TensorNames(architecture, checkpoint: checkpoint),
                                   layout: architecture.weightLayout, asFloat16: weightsAsFloat16)
        let a = architecture

        func linear(_ name: String, in inFeatures: Int, out outFeatures: Int, bias: Bool, layout: WeightLayout? = nil) throws -> LinearLayer {
            let stored = weights.names.stored(name)
            if let made = try linearFactory?(stored, inFeatures, outFeatures) {
                guard made.inFeatures == inFeatures, made.outFeatures == outFeatures else {
                    throw GPTQError.badTensor(name: stored, path: folder,
                        reason: "the linear factory made a [\(made.outFeatures), \(made.inFeatures)] layer, expected [\(outFeatures), \(inFeatures)]")
                }
                return made
            }
            return try weights.denseLinear(name, in: inFeatures, out: outFeatures, bias: bias, layout: layout)
        }

        let storedEmbedding = try weights.floatTensor(a.stem.embedding + ".weight", shape: [a.vocab, a.stem.embeddingWidth])
        let embedding = weightsAsFloat16 ? storedEmbedding.converted(to: .f16) : storedEmbedding
        let headBias = a.head.bias ? try weights.vector(a.head.lmHead + ".bias", count: a.vocab) : nil
        let tied = try a.tiesHead(checkpoint: checkpoint)
        let lmHead: LinearLayer
        if let made = try linearFactory?(weights.names.stored(a.head.lmHead), a.stem.embeddingWidth, a.vocab) {
            lmHead = made
        } else if tied {
            lmHead = DenseLinear(weight: embedding, bias: headBias)
        } else {
            // The head is a Linear in every family, GPT-2's Conv1D ones included.
            lmHead = try linear(a.head.lmHead, in: a.stem.embeddingWidth, out: a.vocab, bias: a.head.bias, layout: .linear)
        }

        var layers: [DecoderBlock] = []
        for i in 0..<a.layers {
            var linears: [String: LinearLayer] = [:]
            for module in a.linears {
                linears[module.name] = try linear(a.layerModule(i, module.name), in: module.inFeatures, out: module.outFeatures, bias: module.hasBias)
            }
            func norm(_ spec: NormSpec) throws -> NormWeights { try weights.norm(spec, prefix: a.layerModule(i, "")) }
            layers.append(DecoderBlock(
                index: i, attentionNorm: try norm(a.block.attentionNorm), mlpNorm: try a.block.mlpNorm.map(norm),
                queryNorm: try a.attention.qkNorm.map { try norm($0.query) }, keyNorm: try a.attention.qkNorm.map { try norm($0.key) },
                linears: linears))
        }
        let positions = try a.stem.learnedPositions.map { try weights.floatTensor($0.name + ".weight", shape: [$0.count, a.hidden]) }
        return LanguageModel(
            config: config, family: family, architecture: a, checkpoint: checkpoint, names: weights.names, embedding: embedding,
            learnedPositions: positions, stemNorm: try a.stem.norm.map { try weights.norm($0, prefix: "") },
            projectIn: try a.stem.projectIn.map { try linear($0, in: a.stem.embeddingWidth, out: a.hidden, bias: false, layout: .linear) },
            finalNorm: try a.head.finalNorm.map { try weights.norm($0, prefix: "") },
            projectOut: try a.head.projectOut.map { try linear($0, in: a.hidden, out: a.stem.embeddingWidth, bias: false, layout: .linear) },
            lmHead: lmHead, layers: layers)
    }

    public var numLayers: Int { layers.count }
    public var vocabSize: Int { architecture.vocab }
    public var hiddenSize: Int { architecture.hidden }

    /// The name the checkpoint stores module `module` of layer `layer` under, e.g. `model.layers.3.self_attn.q_proj`.
    public func tensorName(layer: Int, module: String) -> String { names.stored(architecture.layerModule(layer, module)) }

    /// Module `module` of layer `layer` as the checkpoint stores it: its weight [out, in] (a
    /// Conv1D's transposed, so that GPTQ always sees output rows) and its bias.
    public func storedWeights(layer: Int, module: String) throws -> (weight: Tensor, bias: [Float]?) {
        guard let spec = architecture.linear(module) else {
            throw GPTQError.invalidArgument("family \(family.name) has no linear '\(module)' (it has \(architecture.linears.map(\.name)))")
        }
        let reader = WeightReader(checkpoint: checkpoint, names: names, layout: architecture.weightLayout, asFloat16: false)
        let name = architecture.layerModule(layer, module)
        return (try reader.linearWeight(name, in: spec.inFeatures, out: spec.outFeatures),
                spec.hasBias ? try reader.vector(name + ".bias", count: spec.outFeatures) : nil)
    }

    /// The LM head as the checkpoint stores it: its weight [vocab, width] (the embedding
    /// where the head is tied), its bias, and the module name it is stored under.
    public func storedHeadWeights() throws -> (weight: Tensor, bias: [Float]?, name: String) {
        let a = architecture
        let reader = WeightReader(checkpoint: checkpoint, names: names, layout: a.weightLayout, asFloat16: false)
        let weight = try a.tiesHead(checkpoint: checkpoint)
            ? try reader.floatTensor(a.stem.embedding + ".weight", shape: [a.vocab, a.stem.embeddingWidth])
            : try reader.linearWeight(a.head.lmHead, in: a.stem.embeddingWidth, out: a.vocab, layout: .linear)
        return (weight, a.head.bias ? try reader.vector(a.head.lmHead + ".bias", count: a.vocab) : nil, names.stored(a.head.lmHead))
    }

    /// The linear `module` (e.g. `self_attn.q_proj`) of layer `layer`.
    public func layerLinear(_ layer: Int, _ module: String) -> LinearLayer {
        guard let linear = layers[layer].linears[module] else {
            preconditionFailure("layer \(layer) has no linear '\(module)' (family \(family.name) has \(architecture.linears.map(\.name)))")
        }
        return linear
    }

    /// Replaces a linear (e.g. by its quantized version); it must keep the feature counts.
    public func setLayerLinear(_ layer: Int, _ module: String, _ linear: LinearLayer) {
        let old = layerLinear(layer, module)
        precondition(old.inFeatures == linear.inFeatures && old.outFeatures == linear.outFeatures,
                     "layer \(layer) \(module): replacement is [\(linear.outFeatures), \(linear.inFeatures)], expected [\(old.outFeatures), \(old.inFeatures)]")
        layers[layer].linears[module] = linear
    }

    /// Layer 0's input for `tokens` at positions position..<position+tokens.count, [tokens, hidden]
    /// float32: the embedding rows, then the family's stem (project_in, learned positions, norm).
    /// `.cudaFloat16` rounds project_in's output, which the GPU keeps in float16.
    public func embed(_ tokens: [Int32], position: Int = 0, arithmetic: CPUArithmetic = .float32) throws -> [Float] {
        let (width, h, n) = (architecture.stem.embeddingWidth, hiddenSize, tokens.count)
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= vocabSize }) {
            throw GPTQError.invalidArgument("token id \(bad) outside the vocabulary 0..<\(vocabSize)")
        }
        if let table = architecture.stem.learnedPositions, position + n + table.offset > table.count {
            throw GPTQError.invalidArgument("positions up to \(position + n) exceed the \(table.count - table.offset) learned positions of \(table.name)")
        }
        var rows = [Float](unsafeUninitializedCapacity: n * width) { buffer, initialized in
            for (t, token) in tokens.enumerated() {
                embedding.readFloats(start: Int(token) * width, count: width, into: buffer.baseAddress! + t * width)
            }
            initialized = n * width
        }
        if let projectIn {
            rows = [Float](unsafeUninitializedCapacity: n * h) { buffer, initialized in
                projectIn.forward(rows, rows: n, into: buffer.baseAddress!)
                if arithmetic == .cudaFloat16 { ck_round_f16(buffer.baseAddress!, n * h) }
                initialized = n * h
            }
        }
        if let learnedPositions, let table = architecture.stem.learnedPositions {
            let positions = learnedPositions.floats(start: (position + table.offset) * h, count: n * h)
            for i in 0..<n * h { rows[i] += positions[i] }
        }
        if let stemNorm { rows.withUnsafeMutableBufferPointer { stemNorm.apply($0.baseAddress!, into: $0.baseAddress!, rows: n) } }
        return rows
    }

    /// Runs every layer in place on x, the rows of several sequences one after another:
    /// sequence i's `tokens` rows at positions from `position`, its caches `caches` (one per layer).
    func forwardLayers(_ x: UnsafeMutablePointer<Float>, sequences: [(tokens: Int, position: Int, caches: [KVCacheLayer])],
                       arithmetic: CPUArithmetic) {
        let frames = sequences.map { context.frame(position: $0.position, tokens: $0.tokens) }
        let rows = sequences.reduce(0) { $0 + $1.tokens }
        let firstRows = sequences.reduce(into: [0]) { $0.append($0.last! + $1.tokens) }
        let workspace = DecoderWorkspace(architecture: architecture, tokens: rows)
        for (index, layer) in layers.enumerated() {
            let segments = sequences.indices.map { i in
                Segment(row: firstRows[i], tokens: sequences[i].tokens, position: sequences[i].position, cache: sequences[i].caches[index],
                        frame: frames[i])
            }
            layer.forward(x, tokens: rows, segments: segments, context: context, workspace: workspace, observe: nil, arithmetic: arithmetic)
        }
    }

    /// Runs decoder layer `layer` on hidden states [tokens, hidden] of one sequence at positions
    /// 0..<tokens (causal, no cache), in place, calling observe(module, input rows, rows)
    /// before each linear in execution order. With `stopAfter`, the layer stops once that
    /// module's input has been observed (GPTQ needs nothing further; `hidden` is then left
    /// partly updated).
    public func layerForward(_ layer: Int, hidden: UnsafeMutablePointer<Float>, tokens: Int, stopAfter: String? = nil,
                             observe: LinearObserver?) {
        let cache = KVCacheLayer(attention: architecture.attention, capacity: tokens)
        defer { cache.deallocate() }
        let segment = Segment(row: 0, tokens: tokens, position: 0, cache: cache, frame: context.frame(position: 0, tokens: tokens))
        layers[layer].forward(hidden, tokens: tokens, segments: [segment], context: context,
                              workspace: DecoderWorkspace(architecture: architecture, tokens: tokens), observe: observe,
                              stopAfter: stopAfter)
    }

    /// Every linear layer, the stem's and head's projections and the LM head last.
    public var allLinears: [LinearLayer] {
        layers.flatMap { layer in architecture.linears.map { layer.linears[$0.name]! } }
            + [projectIn, projectOut].compactMap { $0 } + [lmHead]
    }

    /// A CPU session holding up to `capacity` positions in its KV cache.
    public func makeSession(capacity: Int, arithmetic: CPUArithmetic = .float32) -> InferenceSession {
        CPUSession(model: self, capacity: capacity, arithmetic: arithmetic)
    }

    /// A CPU session of `slots` sequences of up to `capacity` positions each, fed together.
    public func makeBatchSession(slots: Int, capacity: Int) -> BatchInferenceSession {
        CPUBatchSession(model: self, slots: slots, capacity: capacity)
    }

    /// Final norm, project_out and LM head on `rows` hidden rows: [rows, vocab] logits
    /// (float32 under either arithmetic; `.cudaFloat16` rounds the inputs of project_out and
    /// the LM head, as the GPU stores them).
    func logits(_ hidden: UnsafePointer<Float>, rows: Int, arithmetic: CPUArithmetic) -> [Float] {
        var headInput = self.headInput(hidden, rows: rows, arithmetic: arithmetic)
        return headInput.withUnsafeMutableBufferPointer { input in
            if arithmetic == .cudaFloat16 { ck_round_f16(input.baseAddress!, input.count) }
            return [Float](unsafeUninitializedCapacity: rows * vocabSize) { buffer, initialized in
                lmHead.forward(input.baseAddress!, rows: rows, into: buffer.baseAddress!)
                initialized = rows * vocabSize
            }
        }
    }

    /// What the LM head reads for `rows` hidden rows: the final norm's outputs, through
    /// project_out where the family has one; [rows, lmHead.inFeatures]. (GPTQ of the head
    /// accumulates its Hessian from these.)
    public func headInput(_ hidden: UnsafePointer<Float>, rows: Int, arithmetic: CPUArithmetic = .float32) -> [Float] {
        let h = hiddenSize
        var normed = [Float](unsafeUninitializedCapacity: rows * h) { buffer, initialized in
            if let finalNorm { finalNorm.apply(hidden, into: buffer.baseAddress!, rows: rows) } else { buffer.baseAddress!.update(from: hidden, count: rows * h) }
            initialized = rows * h
        }
        guard let projectOut else { return normed }
        if arithmetic == .cudaFloat16 { normed.withUnsafeMutableBufferPointer { ck_round_f16($0.baseAddress!, $0.count) } }
        return [Float](unsafeUninitializedCapacity: rows * projectOut.outFeatures) { buffer, initialized in
            projectOut.forward(normed, rows: rows, into: buffer.baseAddress!)
            initialized = rows * projectOut.outFeatures
        }
    }
}

extension Architecture {
    /// Whether the LM head is the embedding: config.tie_word_embeddings (the family's
    /// default), or no head weight stored (neither float nor GPTQ-packed). A GPTQ-packed head
    /// is its own, whatever the config says (GPTQModel's `lm_head`).
    public func tiesHead(checkpoint: Checkpoint) throws -> Bool {
        let stored = try TensorNames(self, checkpoint: checkpoint).stored(head.lmHead)
        guard !checkpoint.contains(stored + ".qweight") else { return false }
        return head.tied || !checkpoint.contains(stored + ".weight")
    }
}

/// Where a checkpoint stores the architecture's tensors: under transformers' full names, or
/// without the base model's prefix (GPT-2's and OPT's original files), or under a name older
/// transformers versions wrote.
struct TensorNames: Sendable {
    let strippedPrefix: String?
    let legacy: [String: String]

    init(_ architecture: Architecture, checkpoint: Checkpoint) throws {
        func stores(_ module: String) -> Bool { checkpoint.contains(module + ".weight") || checkpoint.contains(module + ".qweight") }
        legacy = architecture.legacyNames.filter { current, old in !stores(current) && stores(old) }
        let embedding = architecture.stem.embedding + ".weight", prefix = architecture.basePrefix + "."
        if checkpoint.contains(embedding) || !embedding.hasPrefix(prefix) || !checkpoint.contains(String(embedding.dropFirst(prefix.count))) {
            strippedPrefix = nil
        } else {
            strippedPrefix = prefix
        }
    }

    /// The name under which a quantized checkpoint saves stored tensor `name`: a legacy name
    /// becomes the current one (GPT-NeoX's `embed_out` → `lm_head`), the name GPTQModel 7.7
    /// loads and writes (it reads the file without transformers' renaming) and transformers 5
    /// loads natively.
    func current(_ name: String) -> String {
        if let (current, old) = legacy.first(where: { name == $0.value || name.hasPrefix($0.value + ".") }) {
            return current + name.dropFirst(old.count)
        }
        return name
    }

    func stored(_ name: String) -> String {
        if let (current, old) = legacy.first(where: { name == $0.key || name.hasPrefix($0.key + ".") }) {
            return old + name.dropFirst(current.count)
        }
        guard let strippedPrefix, name.hasPrefix(strippedPrefix) else { return name }
        return String(name.dropFirst(strippedPrefix.count))
    }
}

/// Reads model tensors with the checks loading needs: present, the expected shape, a float dtype.
struct WeightReader {
    let checkpoint: Checkpoint
    let names: TensorNames
    let layout: WeightLayout
    let asFloat16: Bool

    func floatTensor(_ name: String, shape: [Int]) throws -> Tensor {
        let stored = names.stored(name)
        let t = try checkpoint.tensor(stored, shape: shape)
        guard [.f16, .bf16, .f32].contains(t.dtype) else {
            throw GPTQError.badTensor(name: stored, path: checkpoint.folder, reason: "dtype \(t.dtype.rawValue), expected F16, BF16 or F32")
        }
        return t
    }

    func vector(_ name: String, count: Int) throws -> [Float] {
        var values = try floatTensor(name, shape: [count]).floats()
        if asFloat16 { values.withUnsafeMutableBufferPointer { ck_round_f16($0.baseAddress!, $0.count) } }
        return values
    }

    /// The weight [out, in] of linear `name`: a Conv1D's stored [in, out] transposed.
    func linearWeight(_ name: String, in inFeatures: Int, out outFeatures: Int, layout: WeightLayout? = nil) throws -> Tensor {
        switch layout ?? self.layout {
        case .linear: return try floatTensor(name + ".weight", shape: [outFeatures, inFeatures])
        case .conv1D: return try floatTensor(name + ".weight", shape: [inFeatures, outFeatures]).transposed()
        }
    }

    func denseLinear(_ name: String, in inFeatures: Int, out outFeatures: Int, bias: Bool, layout: WeightLayout? = nil) throws -> DenseLinear {
        let weight = try linearWeight(name, in: inFeatures, out: outFeatures, layout: layout)
        let bias = bias ? try vector(name + ".bias", count: outFeatures) : nil
        return DenseLinear(weight: asFloat16 ? weight.converted(to: .f16) : weight, bias: bias)
    }

    /// Norm `spec` (named inside a layer: `prefix` is the layer's, else empty); float32 always.
    func norm(_ spec: NormSpec, prefix: String) throws -> NormWeights {
        let name = prefix + spec.name
        return NormWeights(spec: spec,
                           weight: spec.hasWeight ? try floatTensor(name + ".weight", shape: [spec.width]).floats() : nil,
                           bias: spec.hasBias ? try floatTensor(name + ".bias", shape: [spec.width]).floats() : nil)
    }
}
