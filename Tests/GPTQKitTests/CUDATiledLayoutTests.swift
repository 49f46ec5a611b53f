import Testing
@testable import GPTQKit
@testable import GPTQChecks

/// The tiled 4-bit layout of the CUDA tensor-core kernel, checked on the CPU: an emulation
/// of what the kernel does with it (each lane's words split into A registers of
/// m16n8k16 products as PTX defines their fragments, each lane's x reads as B registers)
/// must compute the layer that PackedLinear dequantizes.
@Suite struct CUDATiledLayoutTests {
    /// The A operand of k16 product j of output tile `tile` and chunk c (16 outputs × 16 k
    /// positions), from the lanes' words as PTX defines an m16n8k16 A fragment (a wgmma
    /// warpgroup's warps hold theirs the same way): register r of lane (g, t) is row g (+8 for odd
    /// r), columns 2t, 2t+1 (+8 for r ≥ 2), low half first.
    static func aOperand(_ layout: CUDAGPTQLayout, parameters: [Float], tile: Int, chunk c: Int, product j: Int, inFeatures k: Int) -> [[Double]] {
        let (chunks, groups) = (k / 64, (k + layout.groupSize - 1) / layout.groupSize)
        let group = c * 64 / layout.groupSize
        var a = [[Double]](repeating: [Double](repeating: .nan, count: 16), count: 16)
        for lane in 0..<32 {
            let (g, t) = (lane >> 2, lane & 3)
            let word = UInt32(bitPattern: layout.qweight[((tile * chunks + c) * 32 + lane) * 4 + j])
            let p = ((tile * groups + group) * 8 + g) * 4
            for r in 0..<4 {
                let (scale, magicZero) = (Double(parameters[p + (r & 1)]), Double(parameters[p + 2 + (r & 1)]))
                for e in 0..<2 {
                    let q = Double((word >> UInt32(4 * r + 16 * e)) & 0xF)
                    a[g + 8 * (r & 1)][2 * t + 8 * (r >> 1) + e] = scale * (1024 + q - magicZero)
                }
            }
        }
        return a
    }

    /// y [rows, N] from the layout alone, in double: for every tile, chunk and k16 product,
    /// A · B where `bOperand(c, j)` gives B (16 k positions × rows) as a kernel assembles it.
    static func emulate(_ layout: CUDAGPTQLayout, rows: Int, inFeatures k: Int, outFeatures n: Int,
                        bOperand: (_ chunk: Int, _ product: Int) -> [[Double]]) -> [Double] {
        let parameters = Tensor(bitPattern: layout.groupParameters, dtype: .f16, shape: [layout.groupParameters.count]).floats()
        var y = [Double](repeating: 0, count: rows * n)
        for tile in 0..<(n / 16) {
            for c in 0..<(k / 64) {
                for j in 0..<4 {
                    let a = aOperand(layout, parameters: parameters, tile: tile, chunk: c, product: j, inFeatures: k)
                    let b = bOperand(c, j)
                    for o in 0..<16 {
                        for row in 0..<rows {
                            var s = 0.0
                            for kp in 0..<16 { s += a[o][kp] * b[kp][row] }
                            y[row * n + tile * 16 + o] += s
                        }
                    }
                }
            }
        }
        return y
    }

    /// The tiled kernel: B registers 0, 1 of product j are words 2j, 2j+1 of lane (g, t)'s 16
    /// halves of row g at inputs 64c + 16t …, k positions 2t, 2t+1 (+8 for register 1).
    static func emulateTiledKernel(_ layout: CUDAGPTQLayout, x: [Float], rows: Int, inFeatures k: Int, outFeatures n: Int) -> [Double] {
        let perm = layout.permutation.map { $0.map(Int.init) } ?? Array(0..<k)
        return emulate(layout, rows: rows, inFeatures: k, outFeatures: n) { c, j in
            var b = [[Double]](repeating: [Double](repeating: .nan, count: rows), count: 16)
            for t in 0..<4 {
                for h in 0..<2 {
                    for e in 0..<2 {
                        let input = c * 64 + 16 * t + 4 * j + 2 * h + e
                        for row in 0..<rows { b[2 * t + 8 * h + e][row] = Double(x[row * k + perm[input]]) }
                    }
                }
            }
            return b
        }
    }

    /// The warpgroup kernel: x gathered by `warpgroupInputOrder`, product j's B is positions
    /// 16j … 16j + 15 of the chunk (two core matrices of 8 k a row in shared memory).
    static func emulateWarpgroupKernel(_ layout: CUDAGPTQLayout, x: [Float], rows: Int, inFeatures k: Int, outFeatures n: Int) -> [Double] {
        let order = CUDAGPTQLayout.warpgroupInputOrder(inFeatures: k, permutation: layout.permutation).map(Int.init)
        return emulate(layout, rows: rows, inFeatures: k, outFeatures: n) { c, j in
            (0..<16).map { kp in (0..<rows).map { row in Double(x[row * k + order[c * 64 + 16 * j + kp]]) } }
        }
    }

    static func denseProduct(_ layer: PackedLinear, x: [Float], rows: Int) -> [Double] {
        let w = layer.dequantized(), (k, n) = (layer.inFeatures, layer.outFeatures)
        var y = [Double](repeating: 0, count: rows * n)
        for row in 0..<rows {
            for o in 0..<n {
                var s = 0.0
                for i in 0..<k { s += Double(w[o * k + i]) * Double(x[row * k + i]) }
                y[row * n + o] = s
            }
        }
        return y
    }

    static func relativeError(_ a: [Double], _ b: [Double]) -> Double {
        var num = 0.0, den = 0.0
        for (u, v) in zip(a, b) { num += (u - v) * (u - v); den += v * v }
        return (num / den).squareRoot()
    }

    // The last two: a shorter last group (SmolLM2's 576 inputs in groups of 128 end with 64).
    @Test(arguments: [(128, false, 256), (64, true, 256), (-1, false, 256), (128, false, 320), (128, true, 576)])
    func emulatedKernelComputesTheLayer(group: Int, actOrder: Bool, inFeatures k: Int) throws {
        let layer = try CUDAChecks.randomLayer(bits: 4, groupSize: group, inFeatures: k, outFeatures: 48, actOrder: actOrder,
                                               bias: false, seed: UInt64(7 + group + k))
        let layout = CUDAGPTQLayout(layer)
        #expect(layout.kernel == .tiled4)
        #expect((layout.permutation != nil) == actOrder)
        var rng = Xoshiro256StarStar(seed: 3)
        let rows = 11  // two row tiles of the mma's N side
        let x = (0..<(rows * k)).map { _ in Float(rng.nextUnit() * 2 - 1) }
        let dense = Self.denseProduct(layer, x: x, rows: rows)
        for emulated in [Self.emulateTiledKernel(layout, x: x, rows: rows, inFeatures: k, outFeatures: 48),
                         Self.emulateWarpgroupKernel(layout, x: x, rows: rows, inFeatures: k, outFeatures: 48)] {
            #expect(!emulated.contains { $0.isNaN })
            // Exact products summed in another order: only double rounding apart.
            #expect(Self.relativeError(emulated, dense) < 1e-12)
        }
    }

    @Test func warpgroupInputOrderIsAPermutationWithinChunks() {
        let perm = (0..<128).map { Int32((37 * $0 + 11) % 128) }
        for permutation in [nil, perm] {
            let order = CUDAGPTQLayout.warpgroupInputOrder(inFeatures: 128, permutation: permutation)
            #expect(Set(order).count == 128 && order.allSatisfy { (0..<128).contains($0) })
            if permutation == nil { #expect((0..<128).allSatisfy { order[$0] / 64 == Int32($0 / 64) }) }
        }
        // Product 1 of a chunk starts at position 16 with inputs 4, 5 (lane 0's word 1), then lane 1's 20, 21.
        #expect(Array(CUDAGPTQLayout.warpgroupInputOrder(inFeatures: 64, permutation: nil)[16..<20]) == [4, 5, 20, 21])
    }

    @Test func warpgroupLaunchSplitsTheChunksToFillAnH200() {
        for (k, n, rows, splits, rowTile) in [(4096, 11008, 64, 3, 64), (4096, 4096, 64, 8, 64), (11008, 4096, 128, 4, 128),
                                              (8192, 28672, 64, 1, 64), (4096, 11008, 128, 1, 128), (576, 576, 100, 1, 128)] {
            let l = CUDAGPTQLayout.warpgroupLaunch(inFeatures: k, outFeatures: n, rows: rows, multiprocessors: 132)
            #expect(l.splits == splits && l.rowTile == rowTile, "\(k)x\(n) rows \(rows): \(l)")
            // The launch names a kernel its source instantiates, compiled for the blocks it counts on.
            #expect(LinearKernels.warpgroup.code.contains(
                "WGMMA_Q4(\(l.rowTile), \(l.warpgroups), \(l.stages), \(l.weightsInFlight), \(l.residentBlocks))"), "\(l)")
            // Each split takes whole chunks, at least 8 of them where split.
            #expect(l.splits == 1 || k / 64 / l.splits >= 8)
            #expect(l.sharedBytes * l.residentBlocks <= 227 * 1024)
        }
    }

    /// AutoGPTQ's v1 layer whose packed zeros overflowed (a zero field of all ones reads as
    /// 2^bits, as AutoGPTQ's kernels read it): the tiled layout keeps that reading.
    @Test func autoGPTQAsymmetricActOrderLayer() throws {
        let c = GPTQFixture.cases.first { $0.key == "b4_g128_act1_sym0_static0" }!
        let layer = try GPTQFixture.autogptqPacked(c)
        let layout = CUDAGPTQLayout(layer)
        #expect(layout.kernel == .tiled4)
        let x = roundedToHalf(try GPTQFixture.base.tensor("x_forward").floats())
        let rows = x.count / layer.inFeatures
        let emulated = Self.emulateTiledKernel(layout, x: x, rows: rows, inFeatures: layer.inFeatures, outFeatures: layer.outFeatures)
        let bias = layer.bias!.floats()
        let withBias = emulated.enumerated().map { $0.element + Double(bias[$0.offset % layer.outFeatures]) }
        let expected = try GPTQFixture.tensor(c, "y").floats().map(Double.init)
        // y is AutoGPTQ's float16 output.
        #expect(Self.relativeError(withBias, expected) < 1e-3)
    }

    @Test func kernelChoice() throws {
        let tiled = try CUDAChecks.randomLayer(bits: 4, groupSize: 128, inFeatures: 256, outFeatures: 32, actOrder: false, bias: false, seed: 1)
        #expect(CUDAGPTQLayout(tiled).kernel == .tiled4)
        #expect(CUDAGPTQLayout(tiled).groupParameters.count == 2 * 32 * 2)
        // Groups of 32 inputs, or outputs not a multiple of 16: the GEMV on AutoGPTQ's packing.
        let g32 = try CUDAChecks.randomLayer(bits: 4, groupSize: 32, inFeatures: 256, outFeatures: 32, actOrder: true, bias: false, seed: 2)
        #expect(CUDAGPTQLayout(g32).kernel == .fast4)
        let n24 = try CUDAChecks.randomLayer(bits: 4, groupSize: 128, inFeatures: 256, outFeatures: 24, actOrder: false, bias: false, seed: 3)
        #expect(CUDAGPTQLayout(n24).kernel == .fast4)
        // A shorter last group: tiled where inputs and groups are multiples of 64, else generic
        // (the GEMV reads whole groups).
        let short64 = try CUDAChecks.randomLayer(bits: 4, groupSize: 128, inFeatures: 576, outFeatures: 32, actOrder: false, bias: false, seed: 4)
        #expect(CUDAGPTQLayout(short64).kernel == .tiled4)
        #expect(CUDAGPTQLayout(short64).groupSize == 128)
        let short32 = try CUDAChecks.randomLayer(bits: 4, groupSize: 128, inFeatures: 544, outFeatures: 32, actOrder: false, bias: false, seed: 5)
        #expect(CUDAGPTQLayout(short32).kernel == .generic)
    }

    @Test func tiledLaunchFillsAnH200ForTheLlamaShapes() {
        // 132 multiprocessors, as `gpu-bench --tiled-shapes` measured them (BENCHMARKS.md).
        let launch = { (k: Int, n: Int, rows: Int) -> String in
            CUDAGPTQLayout.tiledLaunch(inFeatures: k, outFeatures: n, rows: rows, groupSize: 128, multiprocessors: 132).description
        }
        // Up to 8 rows, x loaded with the weights: 16 warps where 256 tiles fit 32 warps a
        // multiprocessor; 4 warps in one wave of 6 blocks a multiprocessor (688 to 768 tiles);
        // stages of 2 chunks for more than one wave (1792 tiles). Groups of 128: pairs of chunks.
        #expect(launch(4096, 4096, 1) == "1x16s1u2xp")
        #expect(launch(11008, 4096, 8) == "1x16s1u2xp")
        #expect(launch(4096, 11008, 1) == "1x4s1u4xm6p")
        #expect(launch(4096, 12288, 8) == "1x4s1u4xm6p")
        #expect(launch(4096, 11024, 1) == "1x4s1u4xm6p")
        #expect(launch(8192, 28672, 5) == "1x4s1u2xp")
        // Beyond one wave, 8 warps where the last of their waves is fuller: 1376 tiles take 3
        // waves of 528 blocks (87%) rather than 2 of 1056 (65%); 2000 and 1792 tiles fill both alike.
        #expect(launch(4096, 22016, 1) == "1x8s1u2xp")
        #expect(launch(4096, 32000, 8) == "1x4s1u2xp")
        // 9–16 rows: 8 warps, two stages, where two blocks a multiprocessor hold the grid (256
        // tiles), else 4 warps (688); 17–32 rows: 8 warps, stages of 4.
        #expect(launch(4096, 4096, 16) == "1x8s2u2p")
        #expect(launch(4096, 11008, 16) == "1x4s1u4p")
        #expect(launch(4096, 4096, 32) == "1x8s1u4p")
        #expect(launch(8192, 28672, 17) == "1x8s1u4p")
        #expect(launch(4096, 4112, 32) == "1x8s1u4p")
        // A small layer: no more warps than half its chunks of 64 inputs (36 tiles: one wave).
        #expect(launch(576, 576, 3) == "1x4s1u4xm6p")
        #expect(launch(576, 576, 17) == "1x4s1u4p")
        #expect(launch(1536, 576, 1) == "1x8s1u2xp")
        // Groups of an odd number of chunks read their parameters chunk by chunk.
        #expect(CUDAGPTQLayout.tiledLaunch(inFeatures: 4096, outFeatures: 4096, rows: 1, groupSize: 64, multiprocessors: 132).description == "1x16s1u2x")
        #expect(CUDAGPTQLayout.tiledLaunch(inFeatures: 4096, outFeatures: 4096, rows: 1, groupSize: 4096, multiprocessors: 132).pairedGroups)
        #expect([64, 128, 192, 256, 576, 640].map(CUDAGPTQLayout.pairsChunks) == [false, true, false, true, false, true])
        #expect(CUDAGPTQLayout.tiledSharedBytes(outputTiles: 2, rowTiles: 4, warps: 8) <= 48 * 1024)
    }

    @Test func gpuBenchShapeArgumentTakesTheTiledUnits() throws {
        #expect(try CUDABenchmarks.layerShape("4096x11008") == (4096, 11008))
        #expect(try CUDABenchmarks.layerShape("576x48") == (576, 48))
        for bad in ["4096x11000", "4100x4096", "4096", "4096x", "x4096", "4096x4096x2", "0x16", "-64x16", "4096X4096", "a x b"] {
            #expect(throws: GPTQError.self, "\(bad)") { try CUDABenchmarks.layerShape(bad) }
        }
        do {
            _ = try CUDABenchmarks.layerShape("4096x11000")
        } catch {
            #expect("\(error)".contains("(got 4096x11000)") && "\(error)".contains("multiple of 64"))
        }
    }

    @Test func everyLaunchNamesACompiledKernel() {
        // The tiled launches for any width and row count are instantiated in their source, those
        // compiled for resident blocks with the block size they launch with.
        let code = LinearKernels.tiled.code
        for (k, n) in [(576, 576), (1536, 576), (4096, 4096), (4096, 11008), (4096, 11024), (4096, 22016), (11008, 4096), (8192, 28672), (4096, 4112)] {
            for groupSize in [64, 128] {
                for rows in 1...32 {
                    let l = CUDAGPTQLayout.tiledLaunch(inFeatures: k, outFeatures: n, rows: rows, groupSize: groupSize, multiprocessors: 132)
                    // Each macro instantiates a kernel and its _p twin.
                    #expect(l.pairedGroups == (groupSize == 128) && l.kernelName.hasSuffix("_p") == l.pairedGroups)
                    let unpairedName = l.pairedGroups ? String(l.kernelName.dropLast(2)) : l.kernelName
                    if l.xWithWeights {
                        let (threads, blocks) = l.residentBlocks > 0 ? (32 * l.warps, l.residentBlocks) : (512, 2)
                        #expect(code.contains("MMA_Q4_X(\(l.outputTiles), \(l.stages), \(l.stageChunks), \(threads), \(blocks), \(unpairedName))"),
                                "\(k)x\(n) rows \(rows): \(l)")
                    } else {
                        #expect(unpairedName == "mma_q4_n\(l.outputTiles)_b\(l.rowTiles)_s\(l.stages)u\(l.stageChunks)")
                        #expect(code.contains("MMA_Q4_SU(\(l.stages), \(l.stageChunks))"), "\(k)x\(n) rows \(rows): \(l)")
                    }
                    #expect(l.outputTiles == 1 ? l.warps <= 16 : l.warps <= 8)
                    #expect(l.rowTiles * 8 >= rows && (l.rowTiles == 1) == (rows <= 8))
                }
            }
        }
        // The read floor's kernels, one for each count of reads in flight its sweep launches.
        for u in CUDABenchmarks.readFloorReadsInFlight { #expect(code.contains("READ_STREAM(\(u))"), "read_stream_u\(u)") }
        #expect(code.contains("MMA_Q4_X_P(NT, S, U, THREADS, MINB, NAME##_p, true)")
                && code.contains("MMA_Q4_P(NT, BT, S, U, THREADS, true, _p)"))
        // A GEMV variant is its own source, instantiating exactly the kernel the layer launches.
        let (tx, r) = CUDAGPTQLayout.fastLaunch(inFeatures: 4096, outFeatures: 4104, groupSize: 32, multiprocessors: 132)
        let source = LinearKernels.fastGEMV(rows: 3, chunk: r, width: tx)
        #expect(source.name == "linear-gemv4-b3-r\(r)-t\(tx)")
        #expect(source.code.hasSuffix("GEMV_Q4(3, \(r), \(tx))\n"))
        #expect(source.code.contains("gemv_q4_b##B##_r##R##_t##TX"))
        #expect(LinearKernels.fastGEMV(rows: 3, chunk: r, width: tx).code == source.code)
    }
}
