import Testing
@testable import GPTQKit

@Suite struct GPTQTests {
    /// From the same W and X, our fasterquant gives AutoGPTQ's Q: the float16 values agree
    /// but for a few one quantization step away (float32 summation order differs from the
    /// GPU's), and the layer's output error is the same within 1%.
    @Test(arguments: GPTQFixture.cases)
    func quantizedWeightMatchesAutoGPTQ(_ c: GPTQCase) throws {
        let result = try GPTQ.quantize(weight: GPTQFixture.weight, hessian: GPTQFixture.hessian, config: c.config)
        let reference = try GPTQFixture.autogptqResult(c)
        #expect(result.gIdx == reference.gIdx)
        #expect(result.groups == reference.groups)
        #expect(result.warnings.isEmpty)

        let agreement = GPTQAgreement(result.q, reference: reference)
        #expect(agreement.identicalFraction >= GPTQAgreement.minimumIdentical, "\(c.key): \(agreement.identical) of \(agreement.total) identical")
        #expect(agreement.fartherThanOneStep == 0, "\(c.key): \(agreement.fartherThanOneStep) values more than one step from AutoGPTQ's")

        let error = GPTQFixture.relativeOutputError(roundedToHalf(result.q))
        #expect(abs(error / c.relOutputError - 1) <= GPTQAgreement.outputErrorTolerance, "\(c.key): output error \(error) vs AutoGPTQ's \(c.relOutputError)")
    }

    /// Our metric agrees with the fixture's own figure for AutoGPTQ's Q.
    @Test func outputErrorMetricMatchesTheFixture() throws {
        for c in GPTQFixture.cases.prefix(8) {
            let error = GPTQFixture.relativeOutputError(try GPTQFixture.autogptqResult(c).q)
            #expect(abs(error / c.relOutputError - 1) < 1e-4, "\(c.key): \(error) vs \(c.relOutputError)")
        }
    }

    @Test func hessianIsTheRunningAverageOfAddBatch() {
        // 8 batches of one sample each: H = 2/8 · XᵀX.
        let h = GPTQFixture.hessian.symmetricMatrix(), x = GPTQFixture.calibration, n = GPTQFixture.columns
        #expect(GPTQFixture.hessian.samples == 8)
        var worst = 0.0
        for (i, j) in [(0, 0), (3, 7), (100, 255), (255, 1), (128, 128)] {
            var dot = 0.0
            for row in 0..<(x.count / n) { dot += Double(x[row * n + i]) * Double(x[row * n + j]) }
            worst = max(worst, abs(h[i * n + j] - dot * 2 / 8) / abs(dot * 2 / 8))
        }
        #expect(worst < 1e-5)
    }

    @Test func inverseFactorIsTheUpperCholeskyOfTheDampedInverse() throws {
        let h: [Double] = [4, 1, 0.5, 1, 3, 0.2, 0.5, 0.2, 2]
        let (u, damp, warnings) = try GPTQ.dampedInverseFactor(h, columns: 3, dampPercent: 0.01)
        #expect(damp == 0.01 && warnings.isEmpty)
        let d = 0.01 * 3
        // (UᵀU)(H + dI) = I
        for i in 0..<3 {
            for j in 0..<3 {
                var v = 0.0
                for k in 0..<3 {
                    var inv = 0.0
                    for m in 0..<3 { inv += Double(u[m * 3 + i]) * Double(u[m * 3 + k]) }
                    v += inv * (h[k * 3 + j] + (k == j ? d : 0))
                }
                #expect(abs(v - (i == j ? 1 : 0)) < 1e-5)
            }
        }
        #expect(u[3] == 0 && u[6] == 0 && u[7] == 0)
    }

    @Test func failedCholeskyRaisesTheDampingAndSaysSo() throws {
        // Eigenvalues −2 and 4: positive definite only once the damping exceeds 2 (mean diagonal 1).
        let (_, damp, warnings) = try GPTQ.dampedInverseFactor([1, 3, 3, 1], columns: 2, dampPercent: 0.01)
        #expect(damp == 10)
        #expect(warnings.count == 3)
        #expect(throws: GPTQError.self) { try GPTQ.dampedInverseFactor([1, 3, 3, 1], columns: 2, dampPercent: 0.001) }
    }

    @Test func nonFiniteInputsAreRejected() {
        var h = HessianAccumulator(columns: 4)
        h.add([1, 2, 3, .nan, 0, 1, 0, 1])
        #expect(throws: GPTQError.invalidArgument("the Hessian holds NaN or Inf (check the calibration inputs of this layer)")) {
            try GPTQ.quantize(weight: [Float](repeating: 0.5, count: 8), hessian: h, config: QuantizeConfig(groupSize: -1))
        }
        #expect(throws: GPTQError.invalidArgument("the weight holds NaN or Inf")) {
            try GPTQ.quantize(weight: [0.5, .infinity] + [Float](repeating: 0.5, count: 96 * 256 - 2), hessian: GPTQFixture.hessian, config: QuantizeConfig())
        }
    }

    @Test func deadColumnsAreZeroed() throws {
        // Column 1 never sees input: AutoGPTQ zeroes its weight.
        var h = HessianAccumulator(columns: 4)
        h.add([1, 0, 2, 3, -1, 0, 0.5, 1, 2, 0, 1, -2, 0.3, 0, -1, 1])
        let w: [Float] = [0.1, 0.9, -0.3, 0.2, 0.5, -0.7, 0.25, -0.1]
        let result = try GPTQ.quantize(weight: w, hessian: h, config: QuantizeConfig(bits: 4, groupSize: -1, descAct: true))
        #expect(result.q[1] == 0 && result.q[5] == 0)
        #expect(result.q[0] != 0)
    }

    /// As in AutoGPTQ, a group wider than the row is one partial group: its grid comes from
    /// the whole unquantized row, exactly what group size -1 computes.
    @Test func groupSizeBeyondTheRowIsOneGroup() throws {
        let wide = try GPTQ.quantize(weight: GPTQFixture.weight, hessian: GPTQFixture.hessian, config: QuantizeConfig(bits: 3, groupSize: 1000))
        let row = try GPTQ.quantize(weight: GPTQFixture.weight, hessian: GPTQFixture.hessian, config: QuantizeConfig(bits: 3, groupSize: -1))
        #expect(wide.groups == 1 && wide.gIdx.allSatisfy { $0 == 0 })
        #expect(wide.q == row.q && wide.scales == row.scales && wide.zeros == row.zeros)
    }

    @Test func badArgumentsAreNamed() {
        #expect(throws: GPTQError.invalidArgument("bits 5 is not supported (use 2, 3, 4 or 8)")) {
            try GPTQ.quantize(weight: GPTQFixture.weight, hessian: GPTQFixture.hessian, config: QuantizeConfig(bits: 5))
        }
        #expect(throws: GPTQError.invalidArgument("group size 0 must be positive or -1 (one group per row)")) {
            try GPTQ.quantize(weight: GPTQFixture.weight, hessian: GPTQFixture.hessian, config: QuantizeConfig(groupSize: 0))
        }
        #expect(throws: GPTQError.self) {
            try GPTQ.quantize(weight: [1, 2, 3], hessian: GPTQFixture.hessian, config: QuantizeConfig())
        }
    }
}
