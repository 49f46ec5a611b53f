/// A decoder-only transformer as one config.json makes it: what a family's declaration
/// resolves to, and all that the block engine and the GPTQ pipeline read. Tensor names are
/// full names as transformers writes them (`transformer.h.3.attn.c_attn`); layer modules are
/// named inside the layer (`attn.c_attn`).
public struct Architecture: Sendable {
    public var hidden: Int
    public var layers: Int
    public var vocab: Int
    /// Layer `i`'s modules are `\(layerPrefix).\(i).<module>`.
    public var layerPrefix: String
    /// The prefix transformers' base model adds (`transformer`, `model`, `gpt_neox`): some
    /// checkpoints store the names without it (GPT-2's own files: `h.0.attn.c_attn.weight`).
    public var basePrefix: String
    public var weightLayout: WeightLayout
    /// Names older transformers versions wrote, by the name transformers 5 writes
    /// (GPT-NeoX's head: `lm_head` was `embed_out`); a checkpoint may use either.
    public var legacyNames: [String: String]
    public var stem: Stem
    public var attention: AttentionSpec
    public var positions: PositionSpec
    public var mlp: MLPSpec
    public var block: BlockSpec
    public var head: Head
    /// GPTQ's true-sequential groups (AutoGPTQ's `inside_layer_modules`): each group is
    /// quantized after the previous group's outputs were recomputed with quantized weights.
    public var quantizationGroups: [[String]]
    /// The longest sequence the model was made for: its learned position table's rows, else
    /// config.json's max_position_embeddings (n_positions, n_ctx, seq_length), else 2048.
    public internal(set) var maxPositions = 2048

    public init(hidden: Int, layers: Int, vocab: Int, layerPrefix: String, basePrefix: String, weightLayout: WeightLayout = .linear,
                legacyNames: [String: String] = [:], stem: Stem, attention: AttentionSpec, positions: PositionSpec, mlp: MLPSpec, block: BlockSpec, head: Head,
                quantizationGroups: [[String]]) {
        self.hidden = hidden
        self.layers = layers
        self.vocab = vocab
        self.layerPrefix = layerPrefix
        self.basePrefix = basePrefix
        self.weightLayout = weightLayout
        self.legacyNames = legacyNames
        self.stem = stem
        self.attention = attention
        self.positions = positions
        self.mlp = mlp
        self.block = block
        self.head = head
        self.quantizationGroups = quantizationGroups
    }

    /// Full name of module `module` of layer `layer`.
    public func layerModule(_ layer: Int, _ module: String) -> String { "\(layerPrefix).\(layer).\(module)" }

    /// Every linear module of a layer, in execution order.
    public var linears: [LinearModule] {
        let a = attention, h = hidden
        var list: [LinearModule]
        switch a.projection {
        case let .separate(q, k, v):
            list = [LinearModule(q, in: h, out: a.queryWidth, bias: a.qkvBias), LinearModule(k, in: h, out: a.kvWidth, bias: a.qkvBias),
                    LinearModule(v, in: h, out: a.kvWidth, bias: a.qkvBias)]
        case let .fused(name, _):
            list = [LinearModule(name, in: h, out: a.queryWidth + 2 * a.kvWidth, bias: a.qkvBias)]
        }
        list.append(LinearModule(a.output, in: a.queryWidth, out: h, bias: a.outputBias))
        if let gate = mlp.gate { list.append(LinearModule(gate, in: h, out: mlp.inner, bias: mlp.bias)) }
        list.append(LinearModule(mlp.up, in: h, out: mlp.inner, bias: mlp.bias))
        list.append(LinearModule(mlp.down, in: mlp.inner, out: h, bias: mlp.bias))
        return list
    }

    public func linear(_ name: String) -> LinearModule? { linears.first { $0.name == name } }

    /// The norms of a layer, in execution order.
    public var layerNorms: [NormSpec] {
        [block.attentionNorm] + (block.mlpNorm.map { [$0] } ?? []) + (attention.qkNorm.map { [$0.query, $0.key] } ?? [])
    }

    /// Parameters as transformers counts them (a tied head once).
    public func parameterCount(tiedHead: Bool) -> Int {
        let layer = layerNorms.reduce(0) { $0 + $1.parameters } + linears.reduce(0) { $0 + $1.parameters }
        var total = vocab * stem.embeddingWidth + layers * layer
        if let positions = stem.learnedPositions { total += positions.count * hidden }
        total += (stem.norm?.parameters ?? 0) + (stem.projectIn != nil ? stem.embeddingWidth * hidden : 0)
        total += (head.finalNorm?.parameters ?? 0) + (head.projectOut != nil ? hidden * stem.embeddingWidth : 0)
        if !tiedHead { total += vocab * stem.embeddingWidth }
        if head.bias { total += vocab }
        return total
    }

    /// The checks a config can fail that the families share, each naming its field.
    func validate(_ config: ModelConfig) throws {
        // Far past any real model, so that sizes from a hostile config cannot overflow the
        // arithmetic that follows (parameter counts, buffer sizes).
        for (field, value, limit) in [("hidden_size", hidden, 1 << 20), ("num_hidden_layers", layers, 1 << 12), ("vocab_size", vocab, 1 << 24),
                                      ("intermediate_size", mlp.inner, 1 << 22), ("num_attention_heads", attention.heads, 1 << 14),
                                      ("head_dim", attention.headDim, 1 << 14), ("word_embed_proj_dim", stem.embeddingWidth, 1 << 20),
                                      ("max_position_embeddings", stem.learnedPositions?.count ?? 0, 1 << 24)] where value > limit {
            throw config.error(field, "\(value) is more than \(limit), beyond any model this engine runs")
        }
        let a = attention
        guard a.heads > 0, a.kvHeads > 0, a.headDim > 0 else {
            throw config.error("num_attention_heads", "\(a.heads) heads of \(a.headDim) dimensions over \(a.kvHeads) key/value heads")
        }
        guard a.heads % a.kvHeads == 0 else {
            throw config.error("num_key_value_heads", "\(a.kvHeads) does not divide the \(a.heads) attention heads")
        }
        if case let .fused(_, layout) = a.projection {
            switch layout {
            case .perHead where a.kvHeads != a.heads:
                throw config.error("num_key_value_heads", "a per-head fused q/k/v needs as many key/value heads as heads (\(a.kvHeads) vs \(a.heads))")
            case let .codegen(blocks) where a.heads % blocks != 0 || a.kvHeads != a.heads:
                throw config.error("n_head", "CodeGen's fused q/k/v splits the \(a.heads) heads into \(blocks) blocks")
            default: break
            }
        }
        if case let .rotary(rotary) = positions {
            guard rotary.dimensions >= 2, rotary.dimensions % 2 == 0, rotary.dimensions <= a.headDim else {
                throw config.error("rotary_dim", "rotary over \(rotary.dimensions) of the head's \(a.headDim) dimensions (an even number, at most the head size)")
            }
        }
    }
}

/// How linear weights are stored: PyTorch's Linear [out, in], or GPT-2's Conv1D [in, out].
public enum WeightLayout: Sendable, Equatable {
    case linear
    case conv1D
}

/// A linear module of a decoder layer.
public struct LinearModule: Sendable, Equatable {
    /// Name inside the layer, e.g. `self_attn.q_proj`.
    public let name: String
    public let inFeatures: Int
    public let outFeatures: Int
    public let hasBias: Bool

    public init(_ name: String, in inFeatures: Int, out outFeatures: Int, bias: Bool) {
        self.name = name
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.hasBias = bias
    }

    var parameters: Int { inFeatures * outFeatures + (hasBias ? outFeatures : 0) }
}

public enum NormKind: Sendable, Equatable {
    /// x / sqrt(mean(x²) + eps) · weight.
    case rms
    /// (x − mean) / sqrt(var + eps) · weight + bias.
    case layer
}

/// A norm module: its name, kind and what it stores.
public struct NormSpec: Sendable, Equatable {
    public let name: String
    public let kind: NormKind
    public let width: Int
    public let eps: Float
    /// OPT's `layer_norm_elementwise_affine: false` stores neither weight nor bias.
    public let hasWeight: Bool
    public let hasBias: Bool

    public static func rms(_ name: String, width: Int, eps: Double) -> NormSpec {
        NormSpec(name: name, kind: .rms, width: width, eps: Float(eps), hasWeight: true, hasBias: false)
    }

    public static func layer(_ name: String, width: Int, eps: Double, affine: Bool = true) -> NormSpec {
        NormSpec(name: name, kind: .layer, width: width, eps: Float(eps), hasWeight: affine, hasBias: affine)
    }

    var parameters: Int { (hasWeight ? width : 0) + (hasBias ? width : 0) }
}

public enum Activation: String, Sendable, Equatable {
    case silu
    /// The exact, erf-based GELU.
    case gelu
    /// GELU's tanh approximation (gelu_new, gelu_pytorch_tanh, BLOOM's bloom_gelu).
    case geluTanh
    case relu

    /// transformers' ACT2FN names this engine runs; an error names `field` otherwise.
    public static func named(_ name: String, field: String, config: ModelConfig) throws -> Activation {
        switch name {
        case "silu", "swish": return .silu
        case "gelu": return .gelu
        case "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "bloom_gelu": return .geluTanh
        case "relu": return .relu
        default: throw config.error(field, "unsupported activation '\(name)' (supported: silu, gelu, gelu_new, gelu_pytorch_tanh, relu)")
        }
    }
}

/// How the q, k and v rows of a fused projection's output are ordered.
public enum FusedQKVLayout: Sendable, Equatable {
    /// [q heads | k heads | v heads] (GPT-2, GPTBigCode's multi-query, Falcon-7B's multi-query).
    case contiguous
    /// [head: q, k, v] (GPT-NeoX, BLOOM, GPTBigCode's multi-head, Falcon-RW).
    case perHead
    /// [kv group: its query heads…, k, v] (Falcon's new decoder architecture).
    case grouped
    /// `blocks` equal blocks, each [q, v, k] of heads/blocks heads (CodeGen's mp_num = 4).
    case codegen(blocks: Int)

    /// The fused output row of dimension `d` of head `head` of q (role 0), k (1) or v (2).
    func row(role: Int, head: Int, dimension d: Int, heads: Int, kvHeads: Int, headDim: Int) -> Int {
        switch self {
        case .contiguous:
            return role == 0 ? head * headDim + d : (heads + (role - 1) * kvHeads + head) * headDim + d
        case .perHead:
            return (head * 3 + role) * headDim + d
        case .grouped:
            let perGroup = heads / kvHeads + 2
            if role == 0 { return ((head / (heads / kvHeads)) * perGroup + head % (heads / kvHeads)) * headDim + d }
            return (head * perGroup + perGroup - 3 + role) * headDim + d
        case let .codegen(blocks):
            let local = heads / blocks, block = head / local
            let slot = role == 0 ? 0 : (role == 1 ? 2 : 1)
            return ((block * 3 + slot) * local + head % local) * headDim + d
        }
    }
}

public enum QKVProjection: Sendable, Equatable {
    case separate(q: String, k: String, v: String)
    case fused(String, FusedQKVLayout)
}

public struct AttentionSpec: Sendable {
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var projection: QKVProjection
    public var output: String
    public var qkvBias: Bool
    public var outputBias: Bool
    /// Per-head RMSNorms of queries and keys before the rotation (Qwen3).
    public var qkNorm: (query: NormSpec, key: NormSpec)?
    /// The scores' factor: 1/sqrt(headDim) unless the family says otherwise (GPT-2's scale_attn_weights false: 1).
    public var scale: Float
    /// GPT-2's scale_attn_by_inverse_layer_idx: layer i's scores are also divided by i + 1.
    public var scalesByInverseLayer: Bool
    /// Each layer's sliding window (nil: full causal attention).
    public var windows: [Int?]

    public init(heads: Int, kvHeads: Int, headDim: Int, projection: QKVProjection, output: String, qkvBias: Bool, outputBias: Bool,
                qkNorm: (query: NormSpec, key: NormSpec)? = nil, scale: Float? = nil, scalesByInverseLayer: Bool = false,
                windows: [Int?] = []) {
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.projection = projection
        self.output = output
        self.qkvBias = qkvBias
        self.outputBias = outputBias
        self.qkNorm = qkNorm
        self.scale = scale ?? 1 / Float(headDim).squareRoot()
        self.scalesByInverseLayer = scalesByInverseLayer
        self.windows = windows
    }

    public var queryWidth: Int { heads * headDim }
    public var kvWidth: Int { kvHeads * headDim }

    /// For a fused q/k/v projection: the fused output row of each element of [q | k | v] (the
    /// CPU gathers them after the product; the GPU reorders the weight's rows once).
    public var fusedOutputOrder: [Int]? {
        guard case let .fused(_, layout) = projection else { return nil }
        var rows: [Int] = []
        rows.reserveCapacity(queryWidth + 2 * kvWidth)
        for (role, count) in [(0, heads), (1, kvHeads), (2, kvHeads)] {
            for head in 0..<count {
                for d in 0..<headDim { rows.append(layout.row(role: role, head: head, dimension: d, heads: heads, kvHeads: kvHeads, headDim: headDim)) }
            }
        }
        return rows
    }

    /// The scores' factor in layer `layer`.
    func scale(layer: Int) -> Float { scalesByInverseLayer ? scale / Float(layer + 1) : scale }

    func window(layer: Int) -> Int? { layer < windows.count ? windows[layer] : nil }
}

/// Positions inside attention (learned absolute positions belong to the stem).
public enum PositionSpec: Sendable {
    case rotary(RotarySpec)
    case alibi(ALiBiSpec)
    /// Only the stem's learned positions (or none at all).
    case none
}

public struct RotarySpec: Sendable, Equatable {
    /// Leading dimensions of each head that rotate (the rest pass through).
    public var dimensions: Int
    /// Pairs (2i, 2i+1) as GPT-J and CodeGen rotate (rotate_every_two); else halves (i, i + d/2).
    public var interleaved: Bool
    public var theta: Double
    public var scaling: RopeScaling

    public init(dimensions: Int, interleaved: Bool = false, theta: Double, scaling: RopeScaling = .none) {
        self.dimensions = dimensions
        self.interleaved = interleaved
        self.theta = theta
        self.scaling = scaling
    }
}

/// ALiBi: head h adds bias(h, key position) to its scores.
public struct ALiBiSpec: Sendable, Equatable {
    /// The bias is multiplied by this (Falcon divides it by sqrt(headDim); BLOOM adds it as is).
    public var scale: Float
    /// Falcon computes slope · position in bfloat16.
    public var bfloat16: Bool

    public init(scale: Float = 1, bfloat16: Bool = false) {
        self.scale = scale
        self.bfloat16 = bfloat16
    }
}

public struct MLPSpec: Sendable {
    /// The gate of a gated MLP (act(gate(x)) · up(x)); nil for act(up(x)).
    public var gate: String?
    public var up: String
    public var down: String
    public var activation: Activation
    public var inner: Int
    public var bias: Bool

    public init(gate: String? = nil, up: String, down: String, activation: Activation, inner: Int, bias: Bool) {
        self.gate = gate
        self.up = up
        self.down = down
        self.activation = activation
        self.inner = inner
        self.bias = bias
    }
}

/// How a layer's attention and MLP meet the residual stream.
public enum ResidualStyle: Sendable, Equatable {
    /// x += attn(n1(x)); x += mlp(n2(x)).
    case sequential
    /// x += attn(n1(x)) + mlp(n2(x)), n2 being n1 when the block has one norm (GPT-J, Falcon-7B, NeoX).
    case parallel
    /// x = n1(x + attn(x)); x = n2(x + mlp(x)) (OPT's do_layer_norm_before false).
    case postNorm
    /// h = n1(x); x = h + attn(h); h = n2(x); x = h + mlp(h) (BLOOM's apply_residual_connection_post_layernorm).
    case normedResidual
}

public struct BlockSpec: Sendable {
    public var attentionNorm: NormSpec
    /// nil: the MLP reads the attention norm's output (a parallel block with one norm).
    public var mlpNorm: NormSpec?
    public var residual: ResidualStyle

    public init(attentionNorm: NormSpec, mlpNorm: NormSpec?, residual: ResidualStyle) {
        self.attentionNorm = attentionNorm
        self.mlpNorm = mlpNorm
        self.residual = residual
    }
}

/// From token ids to layer 0's input.
public struct Stem: Sendable {
    /// The token embedding [vocab, embeddingWidth].
    public var embedding: String
    /// The embedding's width: the hidden size, or OPT's word_embed_proj_dim.
    public var embeddingWidth: Int
    /// Learned absolute positions: row position + offset of the table (OPT's offset is 2).
    public var learnedPositions: LearnedPositions?
    /// BLOOM's word_embeddings_layernorm.
    public var norm: NormSpec?
    /// OPT's project_in [hidden, word_embed_proj_dim], no bias.
    public var projectIn: String?

    public init(embedding: String, embeddingWidth: Int, learnedPositions: LearnedPositions? = nil, norm: NormSpec? = nil,
                projectIn: String? = nil) {
        self.embedding = embedding
        self.embeddingWidth = embeddingWidth
        self.learnedPositions = learnedPositions
        self.norm = norm
        self.projectIn = projectIn
    }
}

public struct LearnedPositions: Sendable, Equatable {
    public var name: String
    /// Rows of the table.
    public var count: Int
    public var offset: Int

    public init(name: String, count: Int, offset: Int = 0) {
        self.name = name
        self.count = count
        self.offset = offset
    }
}

/// From the last layer's output to logits.
public struct Head: Sendable {
    public var finalNorm: NormSpec?
    /// OPT's project_out [word_embed_proj_dim, hidden], no bias.
    public var projectOut: String?
    public var lmHead: String
    /// GPT-J and CodeGen's LM head has a bias.
    public var bias: Bool
    /// config.tie_word_embeddings with the family's default.
    public var tied: Bool

    public init(finalNorm: NormSpec?, projectOut: String? = nil, lmHead: String = "lm_head", bias: Bool = false, tied: Bool) {
        self.finalNorm = finalNorm
        self.projectOut = projectOut
        self.lmHead = lmHead
        self.bias = bias
        self.tied = tied
    }
}
