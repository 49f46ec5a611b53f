/// The bookkeeping of a paged KV cache: the cache is a pool of blocks of `blockSize`
/// positions, and each sequence a table of the blocks that hold its positions 0, B, 2B, ...
/// (the kernels find position p in block `tables[s][p / B]` at offset p % B), so memory goes
/// to the positions sequences hold rather than to slots × capacity.
///
/// Prefix caching: a block whose B positions are written with known tokens is registered
/// under the hash of every token from position 0 to its end, and a new sequence whose prompt
/// starts with the same tokens maps those blocks instead of computing them again. A shared
/// block is never written: sequences only write past their own positions, a prompt reuses
/// whole blocks only, and a sequence that rewinds into a shared block gets a copy of it before
/// it writes again (`reserve` returns the copy for the backend to make). Blocks no sequence
/// holds stay registered until a new block is needed, oldest released first.
public final class KVBlockAllocator {
    public let blockSize: Int
    public let blockCount: Int
    /// Blocks one sequence's table holds: its capacity in blocks.
    public let maxBlocksPerSequence: Int
    /// Each sequence's blocks, in position order.
    public private(set) var tables: [[Int32]]
    /// Sequences holding each block.
    private var references: [Int]
    /// Blocks never used, or released and forgotten.
    private var unused: [Int32]
    /// Registered blocks no sequence holds, in release order (the oldest is reused first),
    /// with their positions in `releasedOrder` for removal when a prompt maps one again.
    private var releasedOrder: [Int32: Int] = [:]
    private var releaseCounter = 0
    /// Prefix registry: hash of the tokens up to a block's end → block, and each registered
    /// block's hash and tokens (compared on lookup: a hash collision must not map a wrong block).
    private var registered: [UInt64: Int32] = [:]
    private var blockKey: [Int32: (hash: UInt64, tokens: [Int32])] = [:]
    /// Each sequence's tokens at its positions while all of them are known (nil after a
    /// position whose token the backend did not report), and the chained hash of its full blocks.
    private var history: [[Int32]?]
    private var chainHashes: [[UInt64]]
    /// Sequences whose last block is shared and partly theirs after a rewind: copied before
    /// they write into it.
    private var sharesLastBlock: Set<Int> = []

    /// A device copy `reserve` asks for: every layer's keys and values of block `source` into `destination`.
    public struct BlockCopy: Equatable, Sendable {
        public let source: Int32, destination: Int32
    }

    public init(blockSize: Int, blockCount: Int, sequences: Int, capacity: Int) throws {
        guard blockSize >= 1, sequences >= 1, capacity >= 1 else {
            throw GPTQError.invalidArgument("KV cache of blocks of \(blockSize) positions for \(sequences) sequences of \(capacity): each must be at least 1")
        }
        let perSequence = (capacity + blockSize - 1) / blockSize
        guard blockCount >= perSequence else {
            throw GPTQError.invalidArgument("a KV cache of \(blockCount) blocks of \(blockSize) positions cannot hold one sequence of \(capacity) positions (\(perSequence) blocks)")
        }
        self.blockSize = blockSize
        self.blockCount = blockCount
        maxBlocksPerSequence = perSequence
        tables = Array(repeating: [], count: sequences)
        references = Array(repeating: 0, count: blockCount)
        unused = (0..<Int32(blockCount)).reversed()
        history = Array(repeating: [], count: sequences)
        chainHashes = Array(repeating: [], count: sequences)
    }

    /// Blocks a new sequence can take: unused ones and registered ones no sequence holds.
    public var availableBlocks: Int { unused.count + releasedOrder.count }
    /// Blocks that sequences hold.
    public var blocksInUse: Int { blockCount - availableBlocks }

    /// Gives `sequence` blocks for positions up to `length`, and a private copy of a shared
    /// block it will write into (returned: the backend copies its contents); throws, taking
    /// nothing, when the pool has too few blocks.
    public func reserve(sequence: Int, upTo length: Int) throws -> [BlockCopy] {
        let table = tables[sequence]
        let writesShared = sharesLastBlock.contains(sequence)
        let needed = max(0, (length + blockSize - 1) / blockSize - table.count) + (writesShared ? 1 : 0)
        guard needed > 0 else { return [] }
        guard (length + blockSize - 1) / blockSize <= maxBlocksPerSequence else {
            throw GPTQError.invalidArgument("sequence \(sequence): \(length) positions exceed its capacity of \(maxBlocksPerSequence * blockSize)")
        }
        guard needed <= availableBlocks else {
            throw GPTQError.invalidArgument("the KV cache is full: sequence \(sequence) needs \(needed) more blocks of \(blockSize) positions, \(availableBlocks) are free")
        }
        var copies: [BlockCopy] = []
        if writesShared {
            let shared = table[table.count - 1], copy = takeBlock()
            references[Int(shared)] -= 1
            tables[sequence][table.count - 1] = copy
            sharesLastBlock.remove(sequence)
            copies.append(BlockCopy(source: shared, destination: copy))
        }
        while tables[sequence].count * blockSize < length { tables[sequence].append(takeBlock()) }
        return copies
    }

    /// Records the tokens written at `sequence`'s positions from `start` on (nil: tokens the
    /// backend did not see, e.g. drawn on the device) and registers every block they complete.
    public func wrote(sequence: Int, start: Int, tokens: [Int32]?) {
        // Appended in place: a copy of the history would make every decoded token cost its length.
        guard history[sequence]?.count == start, let tokens else {
            history[sequence] = nil
            return
        }
        history[sequence]!.append(contentsOf: tokens)
        let known = history[sequence]!.count
        while (chainHashes[sequence].count + 1) * blockSize <= known {
            let index = chainHashes[sequence].count, end = (index + 1) * blockSize
            let hash = Self.chain(chainHashes[sequence].last ?? 0, history[sequence]![(end - blockSize)..<end])
            chainHashes[sequence].append(hash)
            let block = tables[sequence][index]
            if registered[hash] == nil && blockKey[block] == nil {
                registered[hash] = block
                blockKey[block] = (hash, Array(history[sequence]![0..<end]))
            }
        }
    }

    /// Maps onto empty `sequence` the registered blocks that hold the first tokens of `prompt`,
    /// whole blocks only and at least the prompt's last token left to compute (its logits are
    /// needed); returns the positions mapped.
    public func mapPrefix(sequence: Int, prompt: [Int32]) -> Int {
        precondition(tables[sequence].isEmpty, "mapPrefix on a sequence that holds positions")
        var hashes: [UInt64] = [], blocks: [Int32] = []
        while (blocks.count + 1) * blockSize <= prompt.count - 1 {
            let end = (blocks.count + 1) * blockSize
            let hash = Self.chain(hashes.last ?? 0, prompt[(end - blockSize)..<end])
            guard let block = registered[hash], let key = blockKey[block], key.tokens.elementsEqual(prompt[0..<end]) else { break }
            hashes.append(hash)
            blocks.append(block)
        }
        for block in blocks {
            releasedOrder.removeValue(forKey: block)
            references[Int(block)] += 1
        }
        tables[sequence] = blocks
        let mapped = blocks.count * blockSize
        history[sequence] = Array(prompt[0..<mapped])
        chainHashes[sequence] = hashes
        return mapped
    }

    /// Forgets `sequence`'s positions from `position` on, releasing the blocks past it.
    public func rewind(sequence: Int, to position: Int) {
        let keep = (position + blockSize - 1) / blockSize
        while tables[sequence].count > keep { release(tables[sequence].removeLast()) }
        if let known = history[sequence], known.count > position { history[sequence] = Array(known[0..<position]) }
        let fullBlocks = position / blockSize
        if chainHashes[sequence].count > fullBlocks { chainHashes[sequence].removeLast(chainHashes[sequence].count - fullBlocks) }
        sharesLastBlock.remove(sequence)
        if position == 0 { history[sequence] = [] }
        guard position % blockSize != 0, let last = tables[sequence].last else { return }
        // The block's positions from `position` on will be written again.
        if references[Int(last)] > 1 { sharesLastBlock.insert(sequence) } else { forget(last) }
    }

    /// A block for a sequence: an unused one, else the registered block released longest ago.
    private func takeBlock() -> Int32 {
        let block: Int32
        if let free = unused.popLast() {
            block = free
        } else {
            let oldest = releasedOrder.min { $0.value < $1.value }!.key
            releasedOrder.removeValue(forKey: oldest)
            forget(oldest)
            block = oldest
        }
        references[Int(block)] = 1
        return block
    }

    private func release(_ block: Int32) {
        references[Int(block)] -= 1
        guard references[Int(block)] == 0 else { return }
        if blockKey[block] != nil {
            releaseCounter += 1
            releasedOrder[block] = releaseCounter
        } else {
            unused.append(block)
        }
    }

    /// Unregisters a block whose positions will change.
    private func forget(_ block: Int32) {
        if let key = blockKey.removeValue(forKey: block) { registered.removeValue(forKey: key.hash) }
    }

    /// FNV-1a over the previous block's hash and this block's tokens.
    private static func chain(_ previous: UInt64, _ tokens: ArraySlice<Int32>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ byte: UInt8) { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        for shift in stride(from: 0, to: 64, by: 8) { mix(UInt8(truncatingIfNeeded: previous >> UInt64(shift))) }
        for token in tokens { for shift in stride(from: 0, to: 32, by: 8) { mix(UInt8(truncatingIfNeeded: UInt32(bitPattern: token) >> UInt32(shift))) } }
        return h
    }
}
