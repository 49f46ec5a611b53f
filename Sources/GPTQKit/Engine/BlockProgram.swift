/// The block engine's one dataflow: the steps of a decoder layer, in order, as every backend
/// runs them. The residual stream x is float32 [tokens, hidden]; a norm writes what a
/// sublayer reads into one of two inputs; each sublayer leaves its output in its own buffer
/// until a step adds it to x. A backend may defer an add into the next norm (the CUDA one
/// fuses them into one kernel, across layers too), since nothing reads x in between.
public enum BlockStep: Sendable, Equatable {
    /// input = norm(x), or a copy of x without a norm (`role` nil). `replacesResidual`: x = norm(x)
    /// as well (post-norm blocks). `into` nil: only x changes.
    case normalize(NormRole?, into: SublayerInput?, replacesResidual: Bool)
    /// The attention sublayer (projections, positions, cache, output projection) on an input.
    case attention(SublayerInput)
    /// The MLP sublayer on an input.
    case mlp(SublayerInput)
    /// x += each output, in order.
    case addToResidual([Sublayer])
}

/// Which of the block's norms a step applies.
public enum NormRole: Sendable, Equatable {
    case attention
    case mlp
}

/// The two buffers a norm writes for the sublayers to read (a parallel block with two norms needs both).
public enum SublayerInput: Sendable, Equatable {
    case first
    case second
}

public enum Sublayer: Sendable, Equatable {
    case attention
    case mlp
}

extension BlockSpec {
    /// The layer's steps for its residual style (see ResidualStyle).
    public var steps: [BlockStep] {
        switch residual {
        case .sequential:
            return [.normalize(.attention, into: .first, replacesResidual: false), .attention(.first), .addToResidual([.attention]),
                    .normalize(.mlp, into: .first, replacesResidual: false), .mlp(.first), .addToResidual([.mlp])]
        case .parallel where mlpNorm == nil:
            return [.normalize(.attention, into: .first, replacesResidual: false), .attention(.first), .mlp(.first),
                    .addToResidual([.attention, .mlp])]
        case .parallel:
            return [.normalize(.attention, into: .first, replacesResidual: false), .normalize(.mlp, into: .second, replacesResidual: false),
                    .attention(.first), .mlp(.second), .addToResidual([.attention, .mlp])]
        case .postNorm:
            return [.normalize(nil, into: .first, replacesResidual: false), .attention(.first), .addToResidual([.attention]),
                    .normalize(.attention, into: .first, replacesResidual: true), .mlp(.first), .addToResidual([.mlp]),
                    .normalize(.mlp, into: nil, replacesResidual: true)]
        case .normedResidual:
            return [.normalize(.attention, into: .first, replacesResidual: true), .attention(.first), .addToResidual([.attention]),
                    .normalize(.mlp, into: .first, replacesResidual: true), .mlp(.first), .addToResidual([.mlp])]
        }
    }

    /// The norm a step's role names.
    public func norm(_ role: NormRole) -> NormSpec? {
        switch role {
        case .attention: return attentionNorm
        case .mlp: return mlpNorm
        }
    }
}
