import Testing
import GPTQKit

/// The `gptq` commands on quantized folders: quantize end to end, inspect and bench on
/// AutoGPTQ's checkpoint, and bad arguments reported by name.
@Suite struct QuantizeCommandTests {
    let dir = "/tmp/gptq-quantize-command-tests-\(UInt32.random(in: 0...UInt32.max))"
    static let autogptq = Fixtures.path("autogptq_ckpt/w4_g32_descact_asym")

    @Test func quantizeWritesAFolderThatLoadsAsGPTQ() throws {
        let binary = try #require(CommandLineTool.path("gptq"))
        try FileIO.makeDirectory(dir)
        let ids = dir + "/ids.json"
        try FileIO.writeAtomically(path: ids, text: "[" + (0..<200).map { String($0 * 37 % 384) }.joined(separator: ",") + "]")
        let out = dir + "/q3"
        let run = try CommandLineTool.run(binary, ["quantize", "--model", Fixtures.path("arch/llama"), "--out", out, "--bits", "3",
                                                   "--group-size", "48", "--calib", ids, "--nsamples", "4", "--seqlen", "32"])
        #expect(run.status == 0, "\(run.standardError)")
        #expect(run.standardOutput.hasPrefix("quantized 14 linears (gptq, 3-bit, group 48) in "))
        #expect(run.standardError.hasPrefix("calibration: 4 samples, 128 tokens from \(ids) (200 tokens)\nlayer 1/2 self_attn.k_proj  loss "))
        let (config, _) = try #require(try QuantizedCheckpoint.config(folder: out))
        #expect(config.bits == 3 && config.groupSize == 48 && config.sym && !config.descAct)
        #expect(try LanguageModel.load(folder: out).layerLinear(1, "mlp.down_proj") is GPTQLinear)

        let bad = try CommandLineTool.run(binary, ["quantize", "--model", Fixtures.path("arch/llama"), "--out", dir + "/q5", "--bits", "5",
                                                   "--calib", ids])
        #expect(bad.status != 0 && bad.standardError.contains("bits 5 is not supported (use 2, 3, 4 or 8)"))
        let noCalibration = try CommandLineTool.run(binary, ["quantize", "--model", Fixtures.path("arch/llama"), "--out", dir + "/q4"])
        #expect(noCalibration.status != 0 && noCalibration.standardError.contains("GPTQ needs calibration data: pass --calib FILE"))
        #expect(try FileIO.listDirectory(dir) == ["ids.json", "q3"])
    }

    /// --format: v1 by default where symmetric, gptq_v2 where asymmetric; v1 asked for with a
    /// zero point of 0 fails naming the module. The model: the llama fixture with
    /// layer 0's gate_proj made non-negative, so that its asymmetric groups have zeros of 0.
    @Test func formatFollowsSymmetryAndRefusesZerosOfZeroInV1() throws {
        let binary = try #require(CommandLineTool.path("gptq"))
        let model = dir + "/nonnegative"
        try FileIO.makeDirectory(model)
        let source = Fixtures.path("arch/llama")
        try FileIO.writeAtomically(path: model + "/config.json", bytes: try FileIO.readAll(path: source + "/config.json"))
        let file = try SafetensorsFile(path: source + "/model.safetensors")
        try SafetensorsWriter.write(path: model + "/model.safetensors", tensors: try file.names.map { name in
            let t = try file.tensor(name)
            return (name, name == "model.layers.0.mlp.gate_proj.weight" ? Tensor(t.floats().map(abs), shape: t.shape) : t)
        })
        func quantize(_ out: String, _ flags: [String]) throws -> CommandLineTool.Run {
            try CommandLineTool.run(binary, ["quantize", "--model", model, "--out", dir + "/" + out, "--method", "rtn", "--group-size", "32"] + flags)
        }
        for (out, flags, format) in [("sym", [], "gptq"), ("asym", ["--asym"], "gptq_v2"), ("sym-v2", ["--format", "gptq_v2"], "gptq_v2")] {
            let run = try quantize(out, flags)
            #expect(run.status == 0, "\(run.standardError)")
            #expect(try QuantizedCheckpoint.config(folder: dir + "/" + out)?.config.checkpointFormat.rawValue == format, "\(flags)")
        }
        let v1 = try quantize("asym-v1", ["--asym", "--format", "gptq"])
        #expect(v1.status != 0 && v1.standardError.contains("model.layers.0.mlp.gate_proj: zero point 0 (group ")
                && v1.standardError.contains("cannot be stored in checkpoint format gptq (v1 holds zero − 1); save as gptq_v2"), "\(v1.standardError)")
        let unknown = try quantize("marlin", ["--format", "marlin"])
        #expect(unknown.status != 0 && unknown.standardError.contains("--format marlin is not one of gptq, gptq_v2"))
        #expect(!FileIO.exists(dir + "/asym-v1") && !FileIO.exists(dir + "/marlin"))
    }

    @Test func inspectDescribesTheQuantization() throws {
        let binary = try #require(CommandLineTool.path("gptq"))
        let run = try CommandLineTool.run(binary, ["inspect", Self.autogptq])
        #expect(run.status == 0)
        let lines = run.standardOutput.split(separator: "\n").map(String.init)
        #expect(lines.contains("quantization: bits=4, group_size=32, damp_percent=0.01, desc_act=true, static_groups=false, sym=false, "
                               + "true_sequential=true, model_name_or_path=null, model_file_base_name=\"model\", quant_method=\"gptq\", checkpoint_format=\"gptq\""))
        #expect(lines.contains("quantized linears: 14 (qweight/qzeros/scales/g_idx)"))
        #expect(lines.contains("parameters: 135488"))
    }

    /// inspect names each family's architecture and counts its parameters as transformers does.
    @Test(arguments: ["gpt2", "gpt_neox", "opt-350m-layout", "bloom", "falcon-7b-layout", "codegen"])
    func inspectDescribesEveryFamily(arch: String) throws {
        let binary = try #require(CommandLineTool.path("gptq"))
        let run = try CommandLineTool.run(binary, ["inspect", Fixtures.path("arch/\(arch)")])
        #expect(run.status == 0, "\(run.standardError)")
        let lines = run.standardOutput.split(separator: "\n").map(String.init)
        let count = try #require(try JSON.read(path: Fixtures.path("arch/parameter_counts.json"))[arch]?.int)
        #expect(lines.contains("parameters: \(count)"), "\(lines)")
        let family = try ModelFamily.forConfig(try ModelConfig(folder: Fixtures.path("arch/\(arch)"))).name
        #expect(lines.contains("family: \(family)"))
        #expect(lines.contains { $0.hasPrefix("block: ") } && lines.contains { $0.hasPrefix("positions: ") })
    }

    /// bench runs the quantized folder, then its float baseline, in one process.
    @Test func benchMeasuresAQuantizedFolderAgainstItsBaseline() throws {
        let binary = try #require(CommandLineTool.path("gptq"))
        let run = try CommandLineTool.run(binary, ["bench", "--model", Self.autogptq, "--baseline", Fixtures.path("arch/llama"),
                                                   "--prompt-tokens", "16", "--decode-tokens", "8"])
        #expect(run.status == 0, "\(run.standardError)")
        let lines = run.standardOutput.split(separator: "\n").map(String.init)
        #expect(lines.contains("quantization: 4-bit, group 32, desc_act on, asym, format gptq, 14 of 15 linears"))
        #expect(lines.filter { $0.hasPrefix("decode: 8 tokens in ") }.count == 2)
        // Every layer reports its bytes: the quantized model streams fewer of them.
        let streamed = lines.filter { $0.hasPrefix("weights streamed per decode token: ") }
        #expect(streamed.count == 2 && !streamed.contains { $0.contains("do not report") })
        let megabytes = streamed.map { Double($0.split(separator: " ")[5])! }
        #expect(megabytes.count == 2 && megabytes[0] < megabytes[1])
        #expect(lines.contains { $0.hasPrefix("speed vs baseline: prefill ") })
    }
}
