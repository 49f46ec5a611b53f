import Testing
@testable import GPTQKit

/// The paged KV cache's bookkeeping (the CUDA session's kernels read its tables; gpu-check runs them).
@Suite struct KVBlockAllocatorTests {
    /// Tokens 0..<count offset by `seed`, as a sequence's prompt.
    func tokens(_ count: Int, seed: Int32 = 0) -> [Int32] { (0..<Int32(count)).map { $0 + seed } }

    @Test func reservingGivesEachSequenceDistinctBlocksAndRefusesBeyondThePool() throws {
        let kv = try KVBlockAllocator(blockSize: 4, blockCount: 6, sequences: 3, capacity: 16)
        #expect(try kv.reserve(sequence: 0, upTo: 9).isEmpty)
        #expect(kv.tables[0].count == 3)
        try _ = kv.reserve(sequence: 1, upTo: 4)
        #expect(Set(kv.tables[0] + kv.tables[1]).count == 4 && kv.availableBlocks == 2)
        #expect(throws: GPTQError.self) { try kv.reserve(sequence: 2, upTo: 12) }
        #expect(kv.tables[2].isEmpty && kv.availableBlocks == 2, "a refused reservation takes nothing")
        #expect(throws: GPTQError.self) { try kv.reserve(sequence: 1, upTo: 17) }
        kv.rewind(sequence: 0, to: 0)
        #expect(kv.tables[0].isEmpty && kv.availableBlocks == 5)
        #expect(throws: GPTQError.self) { try KVBlockAllocator(blockSize: 4, blockCount: 3, sequences: 1, capacity: 16) }
    }

    /// Writes `prompt` into `sequence` as a backend does: reserve, then record the tokens.
    func write(_ kv: KVBlockAllocator, _ sequence: Int, _ prompt: [Int32], from start: Int = 0) throws {
        _ = try kv.reserve(sequence: sequence, upTo: start + prompt.count)
        kv.wrote(sequence: sequence, start: start, tokens: prompt)
    }

    @Test func aPromptMapsTheWholeBlocksAnotherSequenceWroteBeforeItsLastToken() throws {
        let kv = try KVBlockAllocator(blockSize: 4, blockCount: 12, sequences: 3, capacity: 16)
        try write(kv, 0, tokens(10))
        // 9 tokens of the same prefix: blocks 0 and 1 (8 positions), the 9th token left to compute.
        #expect(kv.mapPrefix(sequence: 1, prompt: tokens(9)) == 8)
        #expect(kv.tables[1] == Array(kv.tables[0][0..<2]))
        kv.rewind(sequence: 1, to: 0)
        // Exactly 8 tokens: only block 0, so the last token still runs.
        #expect(kv.mapPrefix(sequence: 1, prompt: tokens(8)) == 4)
        kv.rewind(sequence: 1, to: 0)
        // A different token in the second block stops the match there.
        var other = tokens(12)
        other[5] = 99
        #expect(kv.mapPrefix(sequence: 2, prompt: other) == 4)
        // The partial third block of sequence 0 (positions 8, 9) was never registered.
        #expect(kv.mapPrefix(sequence: 1, prompt: tokens(16)) == 8)
    }

    @Test func releasedBlocksStayMappableUntilTheSpaceIsNeeded() throws {
        let kv = try KVBlockAllocator(blockSize: 4, blockCount: 4, sequences: 2, capacity: 16)
        try write(kv, 0, tokens(8))
        kv.rewind(sequence: 0, to: 0)
        #expect(kv.availableBlocks == 4)
        #expect(kv.mapPrefix(sequence: 1, prompt: tokens(9)) == 8)
        kv.rewind(sequence: 1, to: 0)
        // Sequence 0 needs every block: the registered ones go, the older first.
        try write(kv, 0, tokens(16, seed: 100))
        #expect(kv.mapPrefix(sequence: 1, prompt: tokens(9)) == 0)
    }

    @Test func aRewindIntoASharedBlockWritesIntoACopy() throws {
        let kv = try KVBlockAllocator(blockSize: 4, blockCount: 8, sequences: 2, capacity: 16)
        try write(kv, 0, tokens(8))
        #expect(kv.mapPrefix(sequence: 1, prompt: tokens(9)) == 8)
        let shared = kv.tables[1][1]
        kv.rewind(sequence: 1, to: 6)
        let copies = try kv.reserve(sequence: 1, upTo: 7)
        #expect(copies.count == 1 && copies[0].source == shared && copies[0].destination == kv.tables[1][1])
        #expect(kv.tables[1][1] != shared && kv.tables[0][1] == shared && kv.tables[1][0] == kv.tables[0][0])
        // Sequence 0 still holds the shared block, registered: a new prompt maps it.
        kv.wrote(sequence: 1, start: 6, tokens: [55])
        kv.rewind(sequence: 1, to: 0)
        #expect(kv.mapPrefix(sequence: 1, prompt: tokens(9)) == 8)
        #expect(kv.tables[1] == kv.tables[0])
    }

    @Test func aBlockRewrittenOrOfUnknownTokensIsNotMapped() throws {
        let kv = try KVBlockAllocator(blockSize: 4, blockCount: 8, sequences: 2, capacity: 16)
        try write(kv, 0, tokens(8))
        // Sequence 0 alone holds block 1 and will write its positions 5...: it is forgotten.
        kv.rewind(sequence: 0, to: 5)
        #expect(kv.mapPrefix(sequence: 1, prompt: tokens(9)) == 4)
        kv.rewind(sequence: 1, to: 0)
        try write(kv, 0, tokens(3, seed: 5), from: 5)
        #expect(kv.mapPrefix(sequence: 1, prompt: tokens(9)) == 8, "rewritten with the same tokens, block 1 is registered again")
        kv.rewind(sequence: 1, to: 0)
        // Tokens the backend did not see (drawn on the device) register nothing after them.
        _ = try kv.reserve(sequence: 0, upTo: 12)
        kv.wrote(sequence: 0, start: 8, tokens: nil)
        #expect(kv.mapPrefix(sequence: 1, prompt: tokens(13)) == 8)
    }
}
