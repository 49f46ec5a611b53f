import GPTQKit
#if canImport(Glibc)
import Glibc
#endif

/// GPU-against-reference checks, run by `gptq gpu-check` on a machine with a GPU (CI has
/// none). Each check reports the relative error ‖gpu − ref‖ / ‖ref‖ and its bound.
public struct CUDACheckResult: Sendable {
    public let name: String
    public let relativeError: Double
    public let bound: Double
    public var passed: Bool { relativeError.isFinite && relativeError <= bound }
    public var line: String {
        return "\(passed ? "PASS" : "FAIL")  \(name)  rel.err \(format6(relativeError))  (bound \(format6(bound)))"
    }
}

func format6(_ v: Double) -> String {
    guard v.isFinite else { return "\(v)" }
    if v == 0 { return "0" }
    let exponent = Int((log10(abs(v))).rounded(.down))
    let mantissa = v / pow(10, Double(exponent))
    return "\(Double(Int((mantissa * 100).rounded())) / 100)e\(exponent)"
}

public enum CUDAChecks {
    /// ‖a − b‖ / ‖b‖ in double; NaN anywhere gives NaN.
    public static func relativeError(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count)
        var num = 0.0, den = 0.0
        for i in 0..<a.count {
            let d = Double(a[i]) - Double(b[i])
            num += d * d
            den += Double(b[i]) * Double(b[i])
        }
        return (num / max(den, 1e-300)).squareRoot()
    }

    /// A random GPTQ layer: random packed values and zeros, scales in [0.001, 0.01),
    /// act order as a random permutation of the groups' members.
    public static func randomLayer(bits: Int, groupSize: Int, inFeatures k: Int, outFeatures n: Int, actOrder: Bool,
                                   bias: Bool, seed: UInt64) throws -> PackedLinear {
        var rng = Xoshiro256StarStar(seed: seed)
        let gs = groupSize <= 0 ? k : groupSize
        let groups = (k + gs - 1) / gs
        let qweight = (0..<(k * bits / 32 * n)).map { _ in Int32(truncatingIfNeeded: rng.next()) }
        let qzeros = (0..<(groups * n * bits / 32)).map { _ in Int32(truncatingIfNeeded: rng.next()) }
        let scales = Tensor((0..<(groups * n)).map { _ in Float(0.001 + 0.009 * rng.nextUnit()) }, shape: [groups, n]).converted(to: .f16)
        var gIdx = (0..<k).map { Int32($0 / gs) }
        if actOrder {
            var order = Array(0..<k)
            order.shuffle(using: &rng)
            for (position, input) in order.enumerated() { gIdx[input] = Int32(position / gs) }
        }
        let biasValues = bias ? Tensor((0..<n).map { _ in Float(rng.nextUnit() - 0.5) }, shape: [n]).converted(to: .f16) : nil
        return try PackedLinear(name: "random", path: "random \(bits)-bit layer", bits: bits, format: .gptq, inFeatures: k, outFeatures: n,
                                qweight: Tensor(bitPattern: qweight, dtype: .i32, shape: [k * bits / 32, n]),
                                qzeros: Tensor(bitPattern: qzeros, dtype: .i32, shape: [groups, n * bits / 32]),
                                scales: scales, gIdx: Tensor(bitPattern: gIdx, dtype: .i32, shape: [k]), bias: biasValues)
    }

    /// PackedLinear's own dequantization (W [out, in]) as [in, out].
    static func dequantizedKN(_ layer: PackedLinear) -> [Float] {
        let w = layer.dequantized(), (k, n) = (layer.inFeatures, layer.outFeatures)
        var t = [Float](repeating: 0, count: k * n)
        for j in 0..<n { for i in 0..<k { t[i * n + j] = w[j * k + i] } }
        return t
    }

    /// y = x · W (+ bias) in double, W [k, n] row-major, x [rows, k].
    static func referenceProduct(x: [Float], w: [Float], bias: [Float]?, rows: Int, k: Int, n: Int) -> [Float] {
        var y = [Float](repeating: 0, count: rows * n)
        var acc = [Double](repeating: 0, count: n)
        for r in 0..<rows {
            for j in 0..<n { acc[j] = Double(bias?[j] ?? 0) }
            for i in 0..<k {
                let xv = Double(x[r * k + i])
                if xv == 0 { continue }
                let base = i * n
                for j in 0..<n { acc[j] += xv * Double(w[base + j]) }
            }
            for j in 0..<n { y[r * n + j] = Float(acc[j]) }
        }
        return y
    }

    /// Runs `linear` on float16 x [rows, k] and returns float32 y [rows, n] (padded row
    /// strides, poisoned output, to catch unwritten elements and stride bugs).
    static func runLinear(_ linear: CUDALinear, backend: CUDABackend, x: [Float], rows: Int, scratch: CUDAScratch) throws -> [Float] {
        let (k, n) = (linear.inFeatures, linear.outFeatures)
        let ldx = k + 8, ldy = n + 8
        var xPadded = [Float](repeating: 0, count: rows * ldx)
        for r in 0..<rows { for i in 0..<k { xPadded[r * ldx + i] = x[r * k + i] } }
        let xHalf = Tensor(xPadded, shape: [rows * ldx]).converted(to: .f16)
        let xBuffer = try backend.device.upload(xHalf)
        let yBuffer = try backend.device.allocate(bytes: rows * ldy * 2)
        try yBuffer.fill(byte: 0xFF, stream: backend.stream)  // NaN
        try linear.forward(x: xBuffer.address, ldx: ldx, rows: rows, y: yBuffer.address, ldy: ldy, scratch: scratch)
        let bits = try backend.device.download(yBuffer, as: UInt16.self, count: rows * ldy)
        let all = Tensor(bitPattern: bits, dtype: .f16, shape: [rows * ldy]).floats()
        return (0..<rows).flatMap { r in all[(r * ldy)..<(r * ldy + n)] }
    }

    static func randomInput(rows: Int, k: Int, seed: UInt64) -> [Float] {
        var rng = Xoshiro256StarStar(seed: seed)
        // float16-representable inputs, so the reference sees what the GPU sees.
        let values = (0..<(rows * k)).map { _ in Float(rng.nextUnit() * 2 - 1) }
        return Tensor(values, shape: [values.count]).converted(to: .f16).floats()
    }

    /// Every linear kernel (4-bit tiled, warpgroup and GEMV with and without act order, the
    /// generic 2/3/4/8-bit GEMV, dequantize + cuBLAS, float16 GEMV and cuBLAS) against a double
    /// reference.
    public static func linearKernels(backend: CUDABackend) throws -> [CUDACheckResult] {
        let scratch = CUDAScratch(backend: backend)
        var results: [CUDACheckResult] = []
        let configs: [(bits: Int, group: Int, k: Int, n: Int, act: Bool, bias: Bool)] = [
            (4, 128, 1024, 2048, false, false), (4, 128, 1024, 1024, true, true), (4, 32, 256, 512, false, true),
            (4, 64, 512, 256, true, false), (4, -1, 512, 256, false, false), (4, 128, 384, 264, false, false),
            (2, 32, 256, 512, false, false), (3, 128, 512, 256, true, false), (3, -1, 256, 128, false, true),
            (8, 64, 512, 256, false, false), (2, -1, 256, 64, true, false),
            // Groups of 64 (chunks read one by one): 272 tiles of 16 outputs and 8 chunks, 4 warps
            // with stages of 4 up to 8 rows on 132 multiprocessors.
            (4, 64, 512, 4352, false, true),
            // SmolLM2's 576 inputs in groups of 128: the last group has 64, so the last pair of
            // chunks has one.
            (4, 128, 576, 576, false, false), (4, 128, 576, 192, true, true),
            // Up to 8 rows: 32 chunks of 64 inputs take 16 warps a block; 272 tiles, 8 warps.
            (4, 128, 2048, 512, false, true), (4, 128, 1024, 4352, true, true),
        ]
        for (i, c) in configs.enumerated() {
            let layer = try randomLayer(bits: c.bits, groupSize: c.group, inFeatures: c.k, outFeatures: c.n, actOrder: c.act, bias: c.bias, seed: UInt64(100 + i))
            let linear = try CUDALinear(backend: backend, gptq: layer)
            let w = dequantizedKN(layer)
            let bias = layer.bias?.floats()
            // Row counts across the GEMV's launches of 8, the tiled kernel's row tiles (8, 16, 32
            // a launch, 32 rows twice), the warpgroup kernel's (tiles of 64 and 128 rows, on compute
            // capability 9.0) and the dequantize + cuBLAS path.
            let tiled = { if case .tiled4 = linear.weights { return true } else { return false } }()
            for rows in [1, 2, 5, 8, 13, 16, 24, 32, 40, 70] + (tiled ? [64, 128, 129] : []) {
                let x = randomInput(rows: rows, k: c.k, seed: UInt64(1000 * i + rows))
                let ref = referenceProduct(x: x, w: w, bias: bias, rows: rows, k: c.k, n: c.n)
                let got = try runLinear(linear, backend: backend, x: x, rows: rows, scratch: scratch)
                results.append(CUDACheckResult(name: "gptq \(linear.kernelDescription) [\(c.k)→\(c.n)]\(c.bias ? " bias" : "") rows \(rows)",
                                               relativeError: relativeError(got, ref), bound: 2e-3))
            }
        }
        // float16 weights: the warp GEMV (≤ 8 rows) and cuBLAS (more).
        var rng = Xoshiro256StarStar(seed: 7)
        let (k, n) = (768, 1000)
        let wValues = Tensor((0..<(k * n)).map { _ in Float(rng.nextUnit() * 0.2 - 0.1) }, shape: [n, k]).converted(to: .f16)
        let dense = try CUDALinear(backend: backend, weight: wValues)
        let wf = wValues.floats()
        var wkn = [Float](repeating: 0, count: k * n)
        for j in 0..<n { for i in 0..<k { wkn[i * n + j] = wf[j * k + i] } }
        for rows in [1, 4, 8, 33] {
            let x = randomInput(rows: rows, k: k, seed: UInt64(77 + rows))
            let ref = referenceProduct(x: x, w: wkn, bias: nil, rows: rows, k: k, n: n)
            let got = try runLinear(dense, backend: backend, x: x, rows: rows, scratch: scratch)
            results.append(CUDACheckResult(name: "fp16 [\(k)→\(n)] rows \(rows)", relativeError: relativeError(got, ref), bound: 2e-3))
        }
        return results
    }

    /// The norm kernel (`CUDASession.normLaunch`) at hidden sizes across both of its
    /// variants, against a double reference: RMSNorm alone and after one residual add,
    /// LayerNorm with bias after two adds replacing the float32 rows (a post-norm block), and
    /// LayerNorm without weights (OPT's non-affine norm).
    public static func norms(backend: CUDABackend) throws -> [CUDACheckResult] {
        var results: [CUDACheckResult] = []
        let rows = 3, eps: Float = 1e-5
        let cases: [(name: String, layer: Bool, adds: Int, replace: Bool, affine: Bool)] = [
            ("RMSNorm", false, 0, false, true), ("RMSNorm after the residual add", false, 1, false, true),
            ("LayerNorm after two adds, replacing the rows", true, 2, true, true), ("LayerNorm without weights", true, 0, false, false),
        ]
        for hidden in [576, 8192, 8200, 12288, 16384] {
            guard let launch = CUDASession.normLaunch(hidden: hidden) else { throw GPTQError.cuda("no norm launch for hidden \(hidden)") }
            var rng = Xoshiro256StarStar(seed: UInt64(hidden))
            let x = (0..<(rows * hidden)).map { _ in Float(rng.nextUnit() * 4 - 2) }
            let ys = [randomInput(rows: rows, k: hidden, seed: UInt64(hidden + 1)), randomInput(rows: rows, k: hidden, seed: UInt64(hidden + 2))]
            let w = (0..<hidden).map { _ in Float(rng.nextUnit() + 0.5) }, b = (0..<hidden).map { _ in Float(rng.nextUnit() - 0.5) }
            for c in cases {
                let xBuffer = try backend.device.upload(x), wBuffer = try backend.device.upload(w), bBuffer = try backend.device.upload(b)
                let yBuffers = try ys.map { try backend.device.upload(Tensor($0, shape: [$0.count]).converted(to: .f16)) }
                let out = try backend.device.allocate(bytes: rows * hidden * 2)
                try backend.launch(launch.kernel, in: DecoderKernels.source, grid: (rows, 1, 1), block: (launch.threads, 1, 1),
                                   [.buffer(xBuffer), .pointer(c.adds > 0 ? yBuffers[0].address : 0), .pointer(c.adds > 1 ? yBuffers[1].address : 0),
                                    .int(hidden), .int(c.layer ? 2 : 1), .pointer(c.affine ? wBuffer.address : 0),
                                    .pointer(c.affine && c.layer ? bBuffer.address : 0), .buffer(out), .int(hidden), .float32(eps),
                                    .int(c.replace ? 1 : 0)])
                let got = Tensor(bitPattern: try backend.device.download(out, as: UInt16.self, count: rows * hidden), dtype: .f16,
                                 shape: [rows * hidden]).floats()
                let gotX = try backend.device.download(xBuffer, as: Float.self, count: rows * hidden)
                var expected = [Float](repeating: 0, count: rows * hidden), expectedX = x
                for r in 0..<rows {
                    let row = (0..<hidden).map { i in (0..<c.adds).reduce(Double(x[r * hidden + i])) { $0 + Double(ys[$1][r * hidden + i]) } }
                    let mean = c.layer ? row.reduce(0, +) / Double(hidden) : 0
                    let inv = 1 / (row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(hidden) + Double(eps)).squareRoot()
                    for i in 0..<hidden {
                        var normed = (row[i] - mean) * inv
                        if c.affine { normed = normed * Double(w[i]) + (c.layer ? Double(b[i]) : 0) }
                        expected[r * hidden + i] = Float(normed)
                        expectedX[r * hidden + i] = Float(c.replace ? normed : row[i])
                    }
                }
                let name = "\(c.name), \(launch.kernel) (\(launch.threads) threads) hidden \(hidden)"
                results.append(CUDACheckResult(name: name, relativeError: relativeError(got, expected), bound: 1e-3))
                results.append(CUDACheckResult(name: name + ": float32 rows", relativeError: relativeError(gotX, expectedX), bound: c.replace ? 1e-5 : 1e-6))
            }
        }
        return results
    }

    /// Dependent launch: a chain of 4-bit tiled layers, each reading what the one before wrote
    /// (one act-order layer, whose input a plainly launched gather writes in between; 40 rows
    /// take two launches a layer), launched to overlap, directly and replayed from a captured
    /// graph, against the same chain launched plainly. The kernels are the same and
    /// deterministic, and every intermediate buffer starts as NaN: a read of an input before its
    /// writer finished shows as a difference. Then a random 4-bit model's logits, the same way.
    /// Empty where dependent launch is unsupported.
    public static func dependentLaunchChain(backend: CUDABackend) throws -> [CUDACheckResult] {
        guard backend.supportsDependentLaunch else { return [] }
        let scratch = CUDAScratch(backend: backend)
        let shapes: [(group: Int, k: Int, n: Int, act: Bool, bias: Bool)] = [
            (128, 1024, 1024, false, false), (128, 1024, 2048, true, false), (64, 2048, 512, false, true), (128, 512, 1024, false, false),
        ]
        let chain = try shapes.enumerated().map { i, c in
            try CUDALinear(backend: backend, gptq: randomLayer(bits: 4, groupSize: c.group, inFeatures: c.k, outFeatures: c.n, actOrder: c.act,
                                                                bias: c.bias, seed: UInt64(500 + i)))
        }
        guard chain.allSatisfy({ $0.kernelDescription.contains("tiled") }) else {
            throw GPTQError.cuda("dependent launch check: a chain layer did not take the tiled kernel (\(chain.map(\.kernelDescription)))")
        }
        let restoring = backend.dependentLaunch
        defer { backend.dependentLaunch = restoring }
        var results: [CUDACheckResult] = []
        for rows in [1, 8, 40] {
            let input = try backend.device.upload(Tensor(randomInput(rows: rows, k: chain[0].inFeatures, seed: UInt64(600 + rows)), shape: [rows * chain[0].inFeatures]).converted(to: .f16))
            let outputs = try chain.map { try backend.device.allocate(bytes: rows * $0.outFeatures * 2) }
            func queue() throws {
                for (i, layer) in chain.enumerated() {
                    try layer.forward(x: i == 0 ? input.address : outputs[i - 1].address, ldx: layer.inFeatures, rows: rows,
                                      y: outputs[i].address, ldy: layer.outFeatures, scratch: scratch)
                }
            }
            func result(_ run: () throws -> Void) throws -> [Float] {
                for o in outputs { try o.fill(byte: 0xFF, stream: backend.stream) }  // NaN
                try run()
                let bits = try backend.device.download(outputs.last!, as: UInt16.self, count: rows * chain.last!.outFeatures)
                return Tensor(bitPattern: bits, dtype: .f16, shape: [bits.count]).floats()
            }
            backend.dependentLaunch = false
            let plain = try result(queue)
            backend.dependentLaunch = true
            let overlapping = try result(queue)
            let graph = try backend.stream.capture { try queue() }
            let replayed = try result { try graph.launch(on: backend.stream) }
            let name = "dependent launch, 4 chained tiled layers (one act-order) rows \(rows)"
            results.append(CUDACheckResult(name: name + " vs plain launches", relativeError: relativeError(overlapping, plain), bound: 0))
            results.append(CUDACheckResult(name: name + ", graph replay vs plain launches", relativeError: relativeError(replayed, plain), bound: 0))
        }
        // A random 4-bit g128 model: a 12-token prefill (tiled linears after RMSNorm and SwiGLU)
        // and 4 decode steps (the captured graph, where the tiled kernels overlap the norm,
        // attention and SwiGLU kernels ahead of them).
        let model = try CUDAModel.random4Bit(backend: backend, hidden: 512, layers: 2, heads: 8, kvHeads: 4, intermediate: 1024, vocab: 640)
        func logits() throws -> [Float] {
            let session = try model.makeSession(capacity: 32)
            var out = try session.forward((0..<12).map { Int32($0 * 37 % 640) }, allLogits: true)
            for step in 0..<4 { out += try session.forward([Int32(100 + step)], allLogits: false) }
            return out
        }
        backend.dependentLaunch = false
        let plain = try logits()
        backend.dependentLaunch = true
        results.append(CUDACheckResult(name: "dependent launch, random 4-bit g128 model: prefill and decode-graph logits vs plain launches",
                                       relativeError: relativeError(try logits(), plain), bound: 0))
        return results
    }

    /// AutoGPTQ's packed layers of the gptq fixture (layer_reference.safetensors: every
    /// KEY.packed.* applied to x_forward), against AutoGPTQ's own float16 output KEY.y.
    public static func gptqFixture(backend: CUDABackend, path: String) throws -> [CUDACheckResult] {
        let file = try SafetensorsFile(path: path)
        let x = try file.tensor("x_forward")
        let rows = x.shape[0]
        let scratch = CUDAScratch(backend: backend)
        var results: [CUDACheckResult] = []
        let keys = file.names.filter { $0.hasSuffix(".packed.qweight") }.map { String($0.dropLast(".packed.qweight".count)) }.sorted()
        for key in keys {
            // KEY is b{bits}_g{group}_act{0|1}_sym{0|1}_static{0|1}
            let parts = key.split(separator: "_")
            guard let bits = Int(parts[0].dropFirst()), let group = Int(parts[1].dropFirst()) else { continue }
            let layer = try PackedLinear.load(from: file, prefix: key + ".packed", bits: bits, groupSize: group, format: .gptq)
            // Where a zero of 0 made AutoGPTQ's v1 packing lossy, the loader refuses the layer
            // (QuantizedCheckpoint); AutoGPTQ's own output read the corrupted fields.
            guard layer.autoGPTQOverflowWords().isEmpty else { continue }
            let linear = try CUDALinear(backend: backend, gptq: layer)
            let expected = try file.tensor(key + ".y").floats()
            for r in [rows, 1] {
                let got = try runLinear(linear, backend: backend, x: Array(x.floats().prefix(r * layer.inFeatures)), rows: r, scratch: scratch)
                // KEY.y is AutoGPTQ's float16 output: itself up to ~2e-3 from the exact product.
                results.append(CUDACheckResult(name: "AutoGPTQ \(key) (\(linear.kernelDescription)) rows \(r)",
                                               relativeError: relativeError(got, Array(expected.prefix(r * layer.outFeatures))), bound: 5e-3))
            }
        }
        return results
    }
}
