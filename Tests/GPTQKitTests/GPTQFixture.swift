import GPTQKit

/// AutoGPTQ's results on one float16 linear layer (Tests/Fixtures/gptq, split from
/// shared/fixtures/gptq by scripts/fixtures/split_gptq_fixture.py).
struct GPTQCase: Sendable, CustomStringConvertible {
    let key: String
    let bits: Int
    let groupSize: Int
    let descAct: Bool
    let sym: Bool
    let staticGroups: Bool
    /// ‖(Q − W)Xᵀ‖² / ‖WXᵀ‖² of AutoGPTQ's Q.
    let relOutputError: Double
    /// A zero of 0 made AutoGPTQ's v1 packing lossy.
    let v1ZeroOverflow: Bool

    var description: String { key }
    var config: QuantizeConfig { QuantizeConfig(bits: bits, groupSize: groupSize, descAct: descAct, staticGroups: staticGroups, sym: sym) }
}

enum GPTQFixture {
    static let folder = Fixtures.path("gptq")
    static let base = try! SafetensorsFile(path: folder + "/base.safetensors")
    static let rows = 96, columns = 256

    static let cases: [GPTQCase] = {
        let json = try! JSON.read(path: folder + "/cases.json")
        return json["cases"]!.array!.map { c in
            GPTQCase(key: c["key"]!.string!, bits: c["bits"]!.int!, groupSize: c["group_size"]!.int!, descAct: c["desc_act"]!.bool!,
                     sym: c["sym"]!.bool!, staticGroups: c["static_groups"]!.bool!, relOutputError: c["rel_output_error"]!.double!,
                     v1ZeroOverflow: c["v1_zero_overflow"]!.bool!)
        }
    }()

    static let files: [Int: SafetensorsFile] = Dictionary(uniqueKeysWithValues: [2, 3, 4, 8].map {
        ($0, try! SafetensorsFile(path: folder + "/cases_b\($0).safetensors"))
    })

    static func tensor(_ c: GPTQCase, _ name: String) throws -> Tensor { try files[c.bits]!.tensor("\(c.key).\(name)") }

    static let weight = try! base.tensor("W").floats()
    static let bias = try! base.tensor("bias").floats()
    static let calibration = try! base.tensor("X").floats()

    /// H accumulated as the fixture's was: AutoGPTQ's add_batch on batches of 512 rows of X.
    static let hessian: HessianAccumulator = {
        var h = HessianAccumulator(columns: columns)
        for start in stride(from: 0, to: calibration.count / columns, by: 512) {
            calibration.withUnsafeBufferPointer { h.add($0.baseAddress! + start * columns, count: 512) }
        }
        return h
    }()

    /// AutoGPTQ's GPTQResult for the case. Quirk of the fixture: for group_size -1 the
    /// recorded zero is zero − 1, because AutoGPTQ's pack decrements `zeros.t().contiguous()`
    /// in place, and for a single group that tensor shares the caller's storage.
    static func autogptqResult(_ c: GPTQCase) throws -> GPTQResult {
        let zeroOffset: Float = c.groupSize == -1 ? 1 : 0
        let scale = try tensor(c, "scale")
        return GPTQResult(rows: rows, columns: columns, bits: c.bits, groupSize: c.groupSize, q: try tensor(c, "Q").floats(),
                          scales: scale.floats(), zeros: try tensor(c, "zero").floats().map { $0 + zeroOffset },
                          gIdx: try tensor(c, "g_idx").ints())
    }

    /// AutoGPTQ's packed layer for the case.
    static func autogptqPacked(_ c: GPTQCase) throws -> PackedLinear {
        try PackedLinear(name: c.key, path: folder, bits: c.bits, format: .gptq, inFeatures: columns, outFeatures: rows,
                         qweight: try tensor(c, "packed.qweight"), qzeros: try tensor(c, "packed.qzeros"),
                         scales: try tensor(c, "packed.scales"), gIdx: try tensor(c, "packed.g_idx"), bias: try tensor(c, "packed.bias"))
    }

    /// ‖(Q − W)Xᵀ‖² / ‖WXᵀ‖² over the calibration inputs.
    static func relativeOutputError(_ q: [Float]) -> Double {
        GPTQAgreement.relativeOutputError(q: q, weight: weight, inputs: calibration, columns: columns)
    }
}

/// float32 values rounded to float16 and back, as torch's .half().float().
func roundedToHalf(_ values: [Float]) -> [Float] {
    Tensor(values, shape: [values.count]).converted(to: .f16).floats()
}
