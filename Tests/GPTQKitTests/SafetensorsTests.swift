import Testing
import GPTQKit

@Suite struct SafetensorsTests {
    let dir = "/tmp/gptq-safetensors-tests-\(UInt32.random(in: 0...UInt32.max))"

    @Test func roundTripKeepsValuesShapesAndMetadata() throws {
        try FileIO.makeDirectory(dir)
        let a = Tensor([1, -2.5, 3, 65504], shape: [2, 2]).converted(to: .f16)
        let b = Tensor(bitPattern: [Int32(7), -9, 123456], dtype: .i32, shape: [3])
        let path = dir + "/x.safetensors"
        try SafetensorsWriter.write(path: path, tensors: [("a", a), ("b", b)], metadata: ["format": "pt"])
        let f = try SafetensorsFile(path: path)
        #expect(f.metadata == ["format": "pt"])
        #expect(try f.tensor("a").floats() == [1, -2.5, 3, 65504])
        #expect(try f.tensor("b").ints() == [7, -9, 123456])
        #expect(try f.tensor("a").shape == [2, 2])
        #expect(throws: GPTQError.missingTensor(name: "c", path: path)) { try f.tensor("c") }
    }

    @Test func truncatedFileNamesTheFile() throws {
        try FileIO.makeDirectory(dir)
        let path = dir + "/t.safetensors"
        try SafetensorsWriter.write(path: path, tensors: [("w", Tensor([Float](repeating: 1, count: 64), shape: [8, 8]))])
        let bytes = try FileIO.readAll(path: path)
        try FileIO.writeAtomically(path: path, bytes: bytes.prefix(bytes.count - 10))
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("truncated file accepted")
        } catch let error as GPTQError {
            #expect(error.description.contains(path) && error.description.contains("'w'"))
        }
    }

    @Test func headerWhoseSizesLieIsRejected() throws {
        try FileIO.makeDirectory(dir)
        let path = dir + "/lie.safetensors"
        var header = Array(#"{"w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,32]}}"#.utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        var bytes = withUnsafeBytes(of: UInt64(header.count).littleEndian, Array.init)
        bytes += header + [UInt8](repeating: 0, count: 32)
        try FileIO.writeAtomically(path: path, bytes: bytes)
        #expect(throws: GPTQError.badTensor(name: "w", path: path, reason: "holds 32 bytes but shape [4, 4] of F32 needs 64")) {
            try SafetensorsFile(path: path)
        }
    }

    @Test func shardedCheckpointResolvesEveryTensor() throws {
        let folder = dir + "/sharded"
        try FileIO.makeDirectory(folder)
        let tensors = (0..<5).map { i in ("t\(i)", Tensor([Float](repeating: Float(i), count: 100), shape: [10, 10])) }
        let written = try SafetensorsWriter.writeSharded(folder: folder, tensors: tensors, maxShardBytes: 900)
        #expect(written.count == 4)  // 3 shards + index
        let ckpt = try Checkpoint(folder: folder)
        for i in 0..<5 { #expect(try ckpt.tensor("t\(i)").floats().allSatisfy { $0 == Float(i) }) }
    }
}
