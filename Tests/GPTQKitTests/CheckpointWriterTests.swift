import Testing
import GPTQKit

@Suite struct CheckpointWriterTests {
    let dir = "/tmp/gptq-writer-tests-\(UInt32.random(in: 0...UInt32.max))"
    let quantizationConfig = JSON.object([("bits", .number(4)), ("group_size", .number(128)), ("quant_method", .string("gptq"))])

    /// A model folder with the llama fixture's config.json and a tokenizer file.
    func makeSource() throws -> String {
        let source = dir + "/model"
        try FileIO.makeDirectory(source)
        try FileIO.writeAtomically(path: source + "/config.json", bytes: try FileIO.readAll(path: Fixtures.path("arch/llama/config.json")))
        try FileIO.writeAtomically(path: source + "/tokenizer.json", text: "{\"model\": {}}")
        return source
    }

    let tensors: [(String, Tensor)] = [
        ("a.qweight", Tensor(bitPattern: [Int32](0..<64), dtype: .i32, shape: [8, 8])),
        ("a.scales", Tensor([Float](repeating: 0.5, count: 16), shape: [2, 8]).converted(to: .f16)),
        ("norm.weight", Tensor([Float](repeating: 1, count: 64), shape: [64]).converted(to: .f16)),
    ]

    @Test func writesTensorsConfigsAndTokenizerWithoutLeftovers() throws {
        let source = try makeSource()
        let out = dir + "/out"
        try CheckpointWriter.write(to: out, source: source, tensors: tensors, quantizationConfig: quantizationConfig)
        #expect(try FileIO.listDirectory(dir) == ["model", "out"])
        #expect(try FileIO.listDirectory(out) == ["config.json", "model.safetensors", "quantize_config.json", "tokenizer.json"])
        let checkpoint = try Checkpoint(folder: out)
        #expect(try checkpoint.tensor("a.qweight").ints() == (0..<64).map { Int32($0) })
        #expect(try checkpoint.tensor("a.scales").dtype == .f16)
        #expect(try JSON.read(path: out + "/quantize_config.json") == quantizationConfig)
        let config = try JSON.read(path: out + "/config.json")
        #expect(config["quantization_config"] == quantizationConfig)
        // transformers 5 names the field `dtype` (older configs: `torch_dtype`); it keeps its place.
        #expect(config["dtype"]?.string == "float16" && config["torch_dtype"] == nil)
        #expect(config.keys.firstIndex(of: "dtype") == 4)
        #expect(config["hidden_size"]?.int == 64)
        #expect(try FileIO.readText(path: out + "/tokenizer.json") == "{\"model\": {}}")
    }

    @Test func shardsPastTheLimitAndLoadsBack() throws {
        let source = try makeSource()
        let out = dir + "/sharded"
        try CheckpointWriter.write(to: out, source: source, tensors: tensors, quantizationConfig: quantizationConfig, maxShardBytes: 200)
        let files = try FileIO.listDirectory(out)
        #expect(files.contains("model.safetensors.index.json") && files.contains("model-00002-of-00002.safetensors"))
        let checkpoint = try Checkpoint(folder: out)
        #expect(checkpoint.tensorNames == ["a.qweight", "a.scales", "norm.weight"])
        #expect(try checkpoint.tensor("norm.weight").floats() == [Float](repeating: 1, count: 64))
    }

    @Test func existingOutputNeedsOverwriteAndIsReplacedWhole() throws {
        let source = try makeSource()
        let out = dir + "/existing"
        try FileIO.makeDirectory(out)
        try FileIO.writeAtomically(path: out + "/stale.txt", text: "old")
        #expect(throws: GPTQError.invalidArgument("output folder \(out) already exists; pass --overwrite (overwrite: true) to replace it")) {
            try CheckpointWriter.write(to: out, source: source, tensors: tensors, quantizationConfig: quantizationConfig)
        }
        try CheckpointWriter.write(to: out, source: source, tensors: tensors, quantizationConfig: quantizationConfig, overwrite: true)
        #expect(!FileIO.exists(out + "/stale.txt"))
        #expect(FileIO.exists(out + "/model.safetensors"))
        #expect(try FileIO.listDirectory(dir) == ["existing", "model"])
    }

    @Test func outputInsideOrAroundTheModelIsRefused() throws {
        let source = try makeSource()
        #expect(throws: GPTQError.invalidArgument("output folder \(source)/q4 is inside the model folder \(source); choose a folder outside it")) {
            try CheckpointWriter.checkDestination(source + "/q4", source: source, overwrite: false)
        }
        #expect(throws: GPTQError.invalidArgument("output folder \(source)/. is inside the model folder \(source); choose a folder outside it")) {
            try CheckpointWriter.checkDestination(source + "/.", source: source, overwrite: true)
        }
        #expect(throws: GPTQError.invalidArgument("output folder \(dir) contains the model folder \(source); replacing it would delete the model")) {
            try CheckpointWriter.checkDestination(dir, source: source, overwrite: true)
        }
    }

    @Test func failedWriteLeavesNoOutputFolder() throws {
        let source = try makeSource()
        // A folder where a tokenizer file should be: copying it fails after the weights were written.
        try FileIO.makeDirectory(source + "/generation_config.json")
        let out = dir + "/interrupted"
        #expect(throws: GPTQError.self) {
            try CheckpointWriter.write(to: out, source: source, tensors: tensors, quantizationConfig: quantizationConfig)
        }
        #expect(try FileIO.listDirectory(dir) == ["model"])

        // With an existing output, a failed overwrite keeps the old folder untouched.
        try FileIO.makeDirectory(out)
        try FileIO.writeAtomically(path: out + "/keep.txt", text: "previous run")
        #expect(throws: GPTQError.self) {
            try CheckpointWriter.write(to: out, source: source, tensors: tensors, quantizationConfig: quantizationConfig, overwrite: true)
        }
        #expect(try FileIO.listDirectory(out) == ["keep.txt"])
        #expect(try FileIO.listDirectory(dir) == ["interrupted", "model"])
    }
}
