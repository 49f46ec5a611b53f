/// A linear as the checkpoint stores it, before it goes to the GPU.
enum HostLinear {
    case dense(Tensor, Tensor?)
    case packed(PackedLinear)

    var inFeatures: Int {
        switch self {
        case let .dense(w, _): return w.shape[1]
        case let .packed(p): return p.inFeatures
        }
    }

    var outFeatures: Int {
        switch self {
        case let .dense(w, _): return w.shape[0]
        case let .packed(p): return p.outFeatures
        }
    }

    /// The same linear with output i taken from output order[i] (a fused q/k/v in [q | k | v] order).
    func reorderingOutputs(_ order: [Int]) throws -> HostLinear {
        switch self {
        case let .dense(w, b):
            return .dense(w.gatheringRows(order), b.map { $0.reshaped([$0.count, 1]).gatheringRows(order).reshaped([order.count]) })
        case let .packed(p):
            return .packed(try p.reorderingOutputs(order))
        }
    }

    /// The linears as one CUDA linear when they can share one (all float, or all GPTQ with the
    /// same bits, format, groups and g_idx), else one each, placed side by side.
    static func fused(_ parts: [HostLinear], backend: CUDABackend) throws -> [PlacedLinear] {
        if parts.count == 1 || !canFuse(parts) {
            var column = 0
            return try parts.map { part in
                defer { column += part.outFeatures }
                return PlacedLinear(linear: try part.upload(backend), column: column)
            }
        }
        return [PlacedLinear(linear: try concatenated(parts).upload(backend), column: 0)]
    }

    func upload(_ backend: CUDABackend) throws -> CUDALinear {
        switch self {
        case let .dense(w, b): return try CUDALinear(backend: backend, weight: w, bias: b)
        case let .packed(p): return try CUDALinear(backend: backend, gptq: p)
        }
    }

    static func canFuse(_ parts: [HostLinear]) -> Bool {
        let dense = parts.compactMap { if case let .dense(w, b) = $0 { return (w, b) } else { return nil } }
        if dense.count == parts.count { return Set(dense.map { $0.1 == nil }).count == 1 }
        let packed = parts.compactMap { if case let .packed(p) = $0 { return p } else { return nil } }
        guard packed.count == parts.count, let first = packed.first else { return false }
        let gIdx = first.gIdx.ints()
        return packed.allSatisfy {
            $0.bits == first.bits && $0.format == first.format && $0.groups == first.groups && ($0.bias == nil) == (first.bias == nil)
                && $0.outFeatures * $0.bits % 32 == 0 && $0.gIdx.ints() == gIdx
        }
    }

    /// Outputs stacked: rows of W (float), columns of qweight/qzeros/scales (GPTQ).
    static func concatenated(_ parts: [HostLinear]) throws -> HostLinear {
        switch parts[0] {
        case .dense:
            let pairs = parts.map { part -> (Tensor, Tensor?) in
                guard case let .dense(w, b) = part else { preconditionFailure() }
                return (w.converted(to: .f16), b?.converted(to: .f16))
            }
            // Biases are rows of one element each side by side: [1, n_i] stacked as columns.
            let bias = pairs[0].1 == nil ? nil : stackColumns(pairs.map { $0.1!.reshaped([1, $0.1!.count]) }).reshaped([pairs.reduce(0) { $0 + $1.0.shape[0] }])
            return .dense(stackRows(pairs.map(\.0)), bias)
        case let .packed(first):
            let packed = parts.map { part -> PackedLinear in
                guard case let .packed(p) = part else { preconditionFailure() }
                return p
            }
            let out = packed.reduce(0) { $0 + $1.outFeatures }
            let bias = first.bias == nil ? nil : stackColumns(packed.map { $0.bias!.converted(to: .f16).reshaped([1, $0.outFeatures]) }).reshaped([out])
            return .packed(try PackedLinear(name: packed.map(\.name).joined(separator: "+"), path: first.path, bits: first.bits,
                                            format: first.format, inFeatures: first.inFeatures, outFeatures: out,
                                            qweight: stackColumns(packed.map(\.qweight)), qzeros: stackColumns(packed.map(\.qzeros)),
                                            scales: stackColumns(packed.map { $0.scales.converted(to: .f16) }), gIdx: first.gIdx, bias: bias))
        }
    }

    /// 2-D tensors of one dtype and equal column counts, one under the other.
    static func stackRows(_ parts: [Tensor]) -> Tensor {
        let rows = parts.reduce(0) { $0 + $1.shape[0] }
        let out = Tensor(zeros: [rows, parts[0].shape[1]], dtype: parts[0].dtype)
        var offset = 0
        for p in parts {
            (out.mutableRaw + offset).copyMemory(from: p.raw, byteCount: p.byteCount)
            offset += p.byteCount
        }
        return out
    }

    /// 2-D tensors of one dtype and equal row counts, side by side.
    static func stackColumns(_ parts: [Tensor]) -> Tensor {
        let rows = parts[0].shape[0], element = parts[0].dtype.byteSize
        let columns = parts.reduce(0) { $0 + $1.shape[1] }
        let out = Tensor(zeros: [rows, columns], dtype: parts[0].dtype)
        for r in 0..<rows {
            var offset = r * columns * element
            for p in parts {
                let width = p.shape[1] * element
                (out.mutableRaw + offset).copyMemory(from: p.raw + r * width, byteCount: width)
                offset += width
            }
        }
        return out
    }
}
