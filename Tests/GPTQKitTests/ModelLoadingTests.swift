import Testing
import GPTQKit

/// Broken model folders: each error names the culprit.
@Suite struct ModelLoadingTests {
    let dir = "/tmp/gptq-model-loading-tests-\(UInt32.random(in: 0...UInt32.max))"

    /// A copy of the llama fixture with its tensors edited by `edit` and its config by `config`.
    func brokenCopy(_ name: String, config: (JSON) -> JSON = { $0 },
                    edit: ([(String, Tensor)]) -> [(String, Tensor)] = { $0 }) throws -> String {
        let folder = dir + "/" + name
        try FileIO.makeDirectory(folder)
        let source = Fixtures.path("arch/llama")
        let json = try JSON.read(path: source + "/config.json")
        try FileIO.writeAtomically(path: folder + "/config.json", text: config(json).serialized())
        let file = try SafetensorsFile(path: source + "/model.safetensors")
        let tensors = try file.names.map { ($0, try file.tensor($0)) }
        try SafetensorsWriter.write(path: folder + "/model.safetensors", tensors: edit(tensors))
        return folder
    }

    /// A copy of fixture `arch` with its config edited by `config` and its tensors by `edit`.
    func brokenFamilyCopy(_ arch: String, _ name: String, config: (JSON) -> JSON = { $0 },
                          edit: ([(String, Tensor)]) -> [(String, Tensor)] = { $0 }) throws -> String {
        let folder = dir + "/" + name
        try FileIO.makeDirectory(folder)
        let source = Fixtures.path("arch/\(arch)")
        try FileIO.writeAtomically(path: folder + "/config.json", text: config(try JSON.read(path: source + "/config.json")).serialized())
        let file = try SafetensorsFile(path: source + "/model.safetensors")
        try SafetensorsWriter.write(path: folder + "/model.safetensors", tensors: edit(try file.names.map { ($0, try file.tensor($0)) }))
        return folder
    }

    /// A config without a key its family needs names the key (GPT-2's n_embd has no default).
    @Test func familyConfigMissingAKeyNamesIt() throws {
        let object = try JSON.read(path: Fixtures.path("arch/gpt2/config.json")).object!
        let folder = try brokenFamilyCopy("gpt2", "no-n_embd", config: { _ in .object(object.filter { $0.0 != "n_embd" }) })
        #expect(throws: GPTQError.badConfig(field: "n_embd", path: folder + "/config.json", reason: "missing")) {
            try LanguageModel.load(folder: folder)
        }
        let heads = try brokenFamilyCopy("falcon", "kv-heads", config: { $0.setting("num_kv_heads", .number(3)) })
        #expect(throws: GPTQError.badConfig(field: "num_key_value_heads", path: heads + "/config.json",
                                            reason: "3 does not divide the 4 attention heads")) {
            try LanguageModel.load(folder: heads)
        }
    }

    /// A fused q/k/v whose rows disagree with the heads the config declares names the tensor:
    /// GPT-NeoX's query_key_value needs 3 · hidden = 192 rows; one of 96 is refused.
    @Test func fusedQKVOfTheWrongSizeNamesTheTensor() throws {
        let folder = try brokenFamilyCopy("gpt_neox", "qkv", edit: { tensors in
            tensors.map { $0.0 == "gpt_neox.layers.0.attention.query_key_value.weight" ? ($0.0, Tensor(zeros: [96, 64])) : $0 }
        })
        #expect(throws: GPTQError.badTensor(name: "gpt_neox.layers.0.attention.query_key_value.weight", path: folder + "/model.safetensors",
                                            reason: "shape [96, 64], expected [192, 64]")) {
            try LanguageModel.load(folder: folder)
        }
    }

    /// GPT-2 stores Conv1D weights [in, out]: one saved as a Linear [out, in] is refused by name.
    @Test func conv1DWeightOfTheWrongOrientationNamesTheTensor() throws {
        let folder = try brokenFamilyCopy("gpt2", "conv1d", edit: { tensors in
            tensors.map { $0.0 == "transformer.h.1.mlp.c_fc.weight" ? ($0.0, $0.1.transposed()) : $0 }
        })
        #expect(throws: GPTQError.badTensor(name: "transformer.h.1.mlp.c_fc.weight", path: folder + "/model.safetensors",
                                            reason: "shape [256, 64], expected [64, 256]")) {
            try LanguageModel.load(folder: folder)
        }
    }

    @Test func missingTensorIsNamed() throws {
        let folder = try brokenCopy("missing", edit: { $0.filter { $0.0 != "model.layers.1.mlp.up_proj.weight" } })
        #expect(throws: GPTQError.missingTensor(name: "model.layers.1.mlp.up_proj.weight", path: folder)) {
            try LanguageModel.load(folder: folder)
        }
    }

    @Test func wrongShapeIsNamed() throws {
        let folder = try brokenCopy("shape", edit: { tensors in
            tensors.map { $0.0 == "model.layers.0.self_attn.k_proj.weight" ? ($0.0, $0.1.reshaped([64, 32])) : $0 }
        })
        #expect(throws: GPTQError.badTensor(name: "model.layers.0.self_attn.k_proj.weight", path: folder + "/model.safetensors",
                                            reason: "shape [64, 32], expected [32, 64]")) {
            try LanguageModel.load(folder: folder)
        }
    }

    @Test func unknownModelTypeListsTheSupportedOnes() throws {
        let folder = try brokenCopy("type", config: { $0.setting("model_type", .string("t5")) })
        do {
            _ = try LanguageModel.load(folder: folder)
            Issue.record("t5 accepted")
        } catch let error as GPTQError {
            guard case let .badConfig(field, path, reason) = error else { Issue.record("\(error)"); return }
            #expect(field == "model_type" && path == folder + "/config.json")
            #expect(reason.contains("'t5'") && reason.contains("llama, mistral, qwen2, qwen3, gpt2, gpt_bigcode, gpt_neox, gptj, codegen, moss, opt, bloom, falcon"))
        }
    }

    @Test func absentHeadReusesTheEmbedding() throws {
        let tied = try brokenCopy("tied", edit: { $0.filter { $0.0 != "lm_head.weight" } })
        // The same model with the embedding written out as an explicit head.
        let explicit = try brokenCopy("explicit", edit: { tensors in
            let embedding = tensors.first { $0.0 == "model.embed_tokens.weight" }!.1
            return tensors.map { $0.0 == "lm_head.weight" ? ($0.0, embedding) : $0 }
        })
        let ids: [Int32] = [5, 17, 300, 2]
        let a = try LanguageModel.load(folder: tied).makeSession(capacity: 8).forward(ids, allLogits: true)
        let b = try LanguageModel.load(folder: explicit).makeSession(capacity: 8).forward(ids, allLogits: true)
        let untied = try LanguageModel.load(folder: Fixtures.path("arch/llama")).makeSession(capacity: 8).forward(ids, allLogits: true)
        #expect(a == b)
        #expect(a != untied)
    }

    @Test func sessionRejectsTokensOutsideTheVocabularyAndPastCapacity() throws {
        let model = try LanguageModel.load(folder: Fixtures.path("arch/llama"))
        let session = model.makeSession(capacity: 3)
        #expect(throws: GPTQError.invalidArgument("token id 384 outside the vocabulary 0..<384")) {
            try session.forward([1, 384], allLogits: false)
        }
        #expect(throws: GPTQError.invalidArgument("forward: 4 tokens after 0 cached exceed the session capacity 3")) {
            try session.forward([1, 2, 3, 4], allLogits: false)
        }
    }
}

/// Sliding-window attention, checked through RoPE's relative positions: with window w and
/// 2 layers, the last token sees exactly the last 2w − 1 inputs, so running only those
/// gives its logits, and running one fewer does not.
@Suite struct SlidingWindowTests {
    @Test func lastTokenSeesExactlyItsWindowedReceptiveField() throws {
        let window = 4
        let folder = "/tmp/gptq-sliding-window-\(UInt32.random(in: 0...UInt32.max))"
        try FileIO.makeDirectory(folder)
        let source = Fixtures.path("arch/mistral")
        let json = try JSON.read(path: source + "/config.json")
        try FileIO.writeAtomically(path: folder + "/config.json", text: json.setting("sliding_window", .number(Double(window))).serialized())
        let file = try SafetensorsFile(path: source + "/model.safetensors")
        try SafetensorsWriter.write(path: folder + "/model.safetensors", tensors: try file.names.map { ($0, try file.tensor($0)) })
        let model = try LanguageModel.load(folder: folder)
        #expect(model.numLayers == 2 && model.architecture.attention.windows == [window, window])

        let tokens = try ArchTests.Reference("mistral").inputIds[0]
        func lastLogits(_ ids: ArraySlice<Int32>, chunk: Int) throws -> [Float] {
            let session = model.makeSession(capacity: 16)
            var logits: [Float] = []
            for start in stride(from: ids.startIndex, to: ids.endIndex, by: chunk) {
                logits = try session.forward(Array(ids[start..<min(start + chunk, ids.endIndex)]), allLogits: false)
            }
            return logits
        }
        let full = try lastLogits(tokens[...], chunk: 12)       // sgemm attention
        let stepped = try lastLogits(tokens[...], chunk: 1)     // decode attention
        let field = try lastLogits(tokens.suffix(2 * window - 1), chunk: 12)
        let short = try lastLogits(tokens.suffix(2 * window - 2), chunk: 12)
        #expect(relativeError(stepped, full) < 1e-5)
        #expect(relativeError(field, full) < 1e-5)
        #expect(relativeError(short, full) > 1e-3)
        let unwindowed = try LanguageModel.load(folder: source).makeSession(capacity: 16).forward(tokens, allLogits: false)
        #expect(relativeError(unwindowed, full) > 1e-3)
    }
}

/// Half-precision checkpoints run straight from their stored bits: a float16 or bfloat16
/// copy of the llama fixture gives the logits of a float32 copy holding the same rounded
/// values, through both the matrix-vector (decode) and the tiled sgemm (prefill) paths.
@Suite struct StoredDTypeTests {
    @Test(arguments: [DType.f16, .bf16])
    func halfPrecisionWeightsMatchTheirFloat32Values(dtype: DType) throws {
        let dir = "/tmp/gptq-stored-dtype-\(UInt32.random(in: 0...UInt32.max))"
        let source = Fixtures.path("arch/llama")
        let file = try SafetensorsFile(path: source + "/model.safetensors")
        let rounded = try file.names.map { ($0, try file.tensor($0).converted(to: dtype)) }
        var outputs: [[Float]] = []
        for (name, tensors) in [("half", rounded), ("widened", rounded.map { ($0.0, $0.1.converted(to: .f32)) })] {
            let folder = dir + "/" + name
            try FileIO.makeDirectory(folder)
            try FileIO.writeAtomically(path: folder + "/config.json", bytes: try FileIO.readAll(path: source + "/config.json"))
            try SafetensorsWriter.write(path: folder + "/model.safetensors", tensors: tensors)
            let model = try LanguageModel.load(folder: folder)
            #expect(model.embedding.dtype == (name == "half" ? dtype : .f32))
            let session = model.makeSession(capacity: 16)
            let ids: [Int32] = [3, 141, 59, 26, 5, 35, 89, 79, 323, 84]
            outputs.append(try session.forward(ids, allLogits: true) + session.forward([46], allLogits: false))
        }
        #expect(relativeError(outputs[0], outputs[1]) < 1e-6)
    }
}
