import Testing
import GPTQKit

/// Only a checkpoint's own weight files are read: the index's shards, the file that
/// model_file_base_name names, or model.safetensors; never another *.safetensors beside them.
@Suite struct WeightFileSelectionTests {
    let dir = "/tmp/gptq-weight-files-tests-\(UInt32.random(in: 0...UInt32.max))"
    let weights: [(String, Tensor)] = [("a.weight", Tensor([1, 2, 3, 4], shape: [2, 2]))]
    let stray: [(String, Tensor)] = [("logits", Tensor([9, 9], shape: [2])), ("a.weight", Tensor([5, 6, 7, 8], shape: [2, 2]))]

    func folder(_ name: String, files: [String: [(String, Tensor)]], quantizeConfig: JSON? = nil) throws -> String {
        let folder = dir + "/" + name
        try FileIO.makeDirectory(folder)
        for (file, tensors) in files { try SafetensorsWriter.write(path: folder + "/" + file, tensors: tensors) }
        if let quantizeConfig { try FileIO.writeAtomically(path: folder + "/quantize_config.json", text: quantizeConfig.serialized()) }
        return folder
    }

    @Test func modelSafetensorsWinsOverStrayFiles() throws {
        let checkpoint = try Checkpoint(folder: try folder("stray", files: ["model.safetensors": weights, "other.safetensors": stray]))
        #expect(checkpoint.tensorNames == ["a.weight"])
        #expect(try checkpoint.tensor("a.weight").floats() == [1, 2, 3, 4])
        #expect(checkpoint.files.map(\.path) == [dir + "/stray/model.safetensors"])
    }

    /// AutoGPTQ-era checkpoints: gptq_model-4bit-128g.safetensors, named by quantize_config.json.
    @Test func modelFileBaseNameNamesTheFile() throws {
        let settings = JSON.object([("bits", .number(4)), ("model_file_base_name", .string("gptq_model-4bit-128g"))])
        let named = try folder("named", files: ["gptq_model-4bit-128g.safetensors": weights, "model.safetensors": stray],
                               quantizeConfig: settings)
        #expect(try Checkpoint(folder: named).tensor("a.weight").floats() == [1, 2, 3, 4])
        #expect(try Checkpoint(folder: named).tensorNames == ["a.weight"])
        // A base name that is a path is refused, naming the field.
        let escaping = try folder("escaping", files: ["model.safetensors": weights],
                                  quantizeConfig: settings.setting("model_file_base_name", .string("../stray/model")))
        #expect(throws: GPTQError.badConfig(field: "model_file_base_name", path: escaping + "/quantize_config.json",
                                            reason: "\"../stray/model\" is not a file name")) {
            try Checkpoint(folder: escaping)
        }
    }

    @Test func theIndexNamesTheShards() throws {
        let sharded = try folder("sharded", files: ["reference.safetensors": stray])
        try SafetensorsWriter.writeSharded(folder: sharded, tensors: weights + [("b.weight", Tensor([1], shape: [1]))], maxShardBytes: 8)
        let checkpoint = try Checkpoint(folder: sharded)
        #expect(checkpoint.tensorNames == ["a.weight", "b.weight"])
        #expect(try checkpoint.tensor("a.weight").floats() == [1, 2, 3, 4])
    }

    @Test func aLoneFileOfAnotherNameIsTheCheckpoint() throws {
        #expect(try Checkpoint(folder: try folder("lone", files: ["weights.safetensors": weights])).tensorNames == ["a.weight"])
    }

    @Test func ambiguousFoldersListTheCandidates() throws {
        let ambiguous = try folder("ambiguous", files: ["weights.safetensors": weights, "other.safetensors": stray])
        #expect(throws: GPTQError.invalidFile(path: ambiguous, reason: "no model.safetensors, model.safetensors.index.json or file named by "
            + "model_file_base_name, and several candidates: other.safetensors, weights.safetensors; keep only the checkpoint's own, "
            + "or name it in quantize_config.json's model_file_base_name")) {
            try Checkpoint(folder: ambiguous)
        }
        let empty = try folder("empty", files: [:])
        #expect(throws: GPTQError.invalidFile(path: empty, reason: "no .safetensors file in the folder")) { try Checkpoint(folder: empty) }
    }

    /// The arch fixture's folder also holds reference.safetensors and float16_emulation.safetensors:
    /// quantized, it gives the same model.safetensors as a copy holding only the model.
    @Test func strayFilesDoNotReachTheQuantizedCheckpoint() throws {
        let source = Fixtures.path("arch/llama")
        #expect(try FileIO.listDirectory(source).filter { $0.hasSuffix(".safetensors") }.count > 1)
        let clean = dir + "/clean-llama"
        try FileIO.makeDirectory(clean)
        for name in ["config.json", "model.safetensors"] {
            try FileIO.writeAtomically(path: clean + "/" + name, bytes: try FileIO.readAll(path: source + "/" + name))
        }
        var outputs: [[UInt8]] = []
        for (name, folder) in [("from-fixture", source), ("from-clean", clean)] {
            var job = QuantizeJob(model: folder, out: dir + "/" + name)
            job.method = .rtn
            job.config = QuantizeConfig(bits: 4, groupSize: 32)
            try job.run()
            outputs.append(try FileIO.readAll(path: dir + "/" + name + "/model.safetensors"))
        }
        #expect(outputs[0] == outputs[1])
        #expect(try !Checkpoint(folder: dir + "/from-fixture").contains("logits"))
    }
}
