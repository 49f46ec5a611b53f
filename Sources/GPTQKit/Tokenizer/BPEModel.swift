/// tokenizer.json's BPE `model`: splits a word into characters and applies merges by rank,
/// as the HF library does (lowest rank first, leftmost first among equal ranks).
final class BPEModel: Sendable {
    let vocab: [String: Int32]
    /// The vocabulary string of each id (nil where an id has none).
    let tokens: [String?]
    /// Single-scalar vocabulary entries, the hot lookup of byte-level models.
    private let scalarIds: [Unicode.Scalar: Int32]
    /// (left id, right id) packed in 64 bits → (rank, merged id).
    private let merges: [UInt64: Merge]
    private let unknownId: Int32?
    private let fuseUnknown: Bool
    private let byteFallbackIds: [Int32]?
    private let ignoreMerges: Bool
    private let continuingSubwordPrefix: String?
    private let endOfWordSuffix: String?

    struct Merge {
        var rank: Int32
        var id: Int32
    }

    /// How far past twice the vocabulary's size an id may lie (room for reserved gaps).
    static let idGapAllowance = 65_536

    /// Words longer than this skip the cache (HF likewise caches only short words).
    static let longestCachedWord = 256

    init(json: JSON, path: String) throws {
        let type = json["type"]?.string ?? (json["merges"] != nil ? "BPE" : "")
        guard type == "BPE" else { throw GPTQError.unsupported("\(path): model type '\(type)' (only BPE is implemented)") }
        guard let vocabPairs = json["vocab"]?.object else {
            throw GPTQError.badConfig(field: "model.vocab", path: path, reason: "missing object")
        }
        var vocab: [String: Int32] = [:]
        vocab.reserveCapacity(vocabPairs.count)
        var maxId = -1
        for (token, value) in vocabPairs {
            guard let id = value.int, id >= 0, id < Int(Int32.max) else {
                throw GPTQError.badConfig(field: "model.vocab[\(token)]", path: path, reason: "expected a non-negative integer id")
            }
            vocab[token] = Int32(id)
            maxId = max(maxId, id)
        }
        // `tokens` is indexed by id: a few stray huge ids must not size it (2^31 ids are 34 GB).
        guard maxId < 2 * vocabPairs.count + Self.idGapAllowance else {
            throw GPTQError.badConfig(field: "model.vocab", path: path,
                                      reason: "id \(maxId) is far past the \(vocabPairs.count) entries of the vocabulary; ids must be nearly contiguous")
        }
        var tokens = [String?](repeating: nil, count: maxId + 1)
        var scalarIds: [Unicode.Scalar: Int32] = [:]
        for (token, id) in vocab {
            tokens[Int(id)] = token
            if token.unicodeScalars.count == 1 { scalarIds[token.unicodeScalars.first!] = id }
        }
        self.vocab = vocab
        self.tokens = tokens
        self.scalarIds = scalarIds

        continuingSubwordPrefix = json["continuing_subword_prefix"]?.string
        endOfWordSuffix = json["end_of_word_suffix"]?.string
        let prefixLength = continuingSubwordPrefix?.count ?? 0
        var merges: [UInt64: Merge] = [:]
        let mergeList = json["merges"]?.array ?? []
        merges.reserveCapacity(mergeList.count)
        for (rank, entry) in mergeList.enumerated() {
            let pair: (String, String)
            if let text = entry.string {
                // "a b": split at the first space; tokens themselves never contain a space in this form.
                let parts = text.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2 else {
                    throw GPTQError.badConfig(field: "model.merges[\(rank)]", path: path, reason: "expected \"left right\", got '\(text)'")
                }
                pair = (String(parts[0]), String(parts[1]))
            } else if let parts = entry.array, parts.count == 2, let left = parts[0].string, let right = parts[1].string {
                pair = (left, right)
            } else {
                throw GPTQError.badConfig(field: "model.merges[\(rank)]", path: path, reason: "expected a pair of strings")
            }
            let merged = pair.0 + String(pair.1.dropFirst(prefixLength))
            guard let left = vocab[pair.0], let right = vocab[pair.1] else {
                throw GPTQError.badConfig(field: "model.merges[\(rank)]", path: path,
                                          reason: "merge '\(pair.0) \(pair.1)' uses a token missing from the vocabulary")
            }
            guard let id = vocab[merged] else {
                throw GPTQError.badConfig(field: "model.merges[\(rank)]", path: path,
                                          reason: "merged token '\(merged)' is missing from the vocabulary")
            }
            merges[UInt64(UInt32(left)) << 32 | UInt64(UInt32(right))] = Merge(rank: Int32(rank), id: id)
        }
        self.merges = merges

        if let unknown = json["unk_token"]?.string {
            guard let id = vocab[unknown] else {
                throw GPTQError.badConfig(field: "model.unk_token", path: path, reason: "'\(unknown)' is not in the vocabulary")
            }
            unknownId = id
        } else {
            unknownId = nil
        }
        fuseUnknown = json["fuse_unk"]?.bool ?? false
        ignoreMerges = json["ignore_merges"]?.bool ?? false
        if json["byte_fallback"]?.bool ?? false {
            byteFallbackIds = (0..<256).map { byte in vocab[ByteFallback.tokenName(UInt8(byte))] ?? -1 }
        } else {
            byteFallbackIds = nil
        }
        if let dropout = json["dropout"]?.double, dropout > 0 {
            throw GPTQError.unsupported("\(path): model.dropout \(dropout) (BPE dropout is for training)")
        }
    }

    /// Appends the ids of one pre-tokenized word. `cache` maps words already seen in this call to their ids.
    func encode(word: [Unicode.Scalar], cache: inout [[Unicode.Scalar]: [Int32]], into ids: inout [Int32]) {
        if word.isEmpty { return }
        if ignoreMerges, let id = vocab[String(String.UnicodeScalarView(word))] {
            ids.append(id)
            return
        }
        if word.count <= Self.longestCachedWord {
            if let hit = cache[word] {
                ids += hit
                return
            }
            let result = merge(symbols(of: word))
            cache[word] = result
            ids += result
        } else {
            ids += merge(symbols(of: word))
        }
    }

    /// The initial symbols of a word: one per scalar, or byte-fallback / unknown ids.
    private func symbols(of word: [Unicode.Scalar]) -> [Int32] {
        var symbols: [Int32] = []
        symbols.reserveCapacity(word.count)
        var pendingUnknown = false
        let simple = continuingSubwordPrefix == nil && endOfWordSuffix == nil
        for (i, scalar) in word.enumerated() {
            let id: Int32?
            var text: String? = nil
            if simple {
                id = scalarIds[scalar]
            } else {
                var s = String(scalar)
                if i > 0, let prefix = continuingSubwordPrefix { s = prefix + s }
                if i == word.count - 1, let suffix = endOfWordSuffix { s += suffix }
                id = vocab[s]
                text = s
            }
            if let id {
                if pendingUnknown, let unknownId { symbols.append(unknownId) }
                pendingUnknown = false
                symbols.append(id)
                continue
            }
            if let byteFallbackIds {
                let bytes = text.map { Array($0.utf8) } ?? Array(String(scalar).utf8)
                let fallback = bytes.map { byteFallbackIds[Int($0)] }
                if !fallback.contains(-1) {
                    symbols += fallback
                    continue
                }
            }
            guard let unknownId else { continue }  // no unk token: the character is dropped, as in HF
            if pendingUnknown && !fuseUnknown { symbols.append(unknownId) }
            pendingUnknown = true
        }
        if pendingUnknown, let unknownId { symbols.append(unknownId) }
        return symbols
    }

    /// Applies merges, lowest rank first and leftmost first among equals, with a heap of
    /// candidate pairs over a linked list of symbols (long words stay O(n log n)).
    private func merge(_ initial: [Int32]) -> [Int32] {
        if initial.count < 2 { return initial }
        var ids = initial
        var previous = Array(-1..<(ids.count - 1))
        var next = Array(1...ids.count)
        next[ids.count - 1] = -1
        var alive = [Bool](repeating: true, count: ids.count)
        var heap = MergeHeap()
        for i in 0..<(ids.count - 1) {
            if let merge = merges[Self.key(ids[i], ids[i + 1])] { heap.push(.init(rank: merge.rank, position: Int32(i), id: merge.id)) }
        }
        while let top = heap.pop() {
            let position = Int(top.position)
            guard alive[position], next[position] >= 0 else { continue }
            let right = next[position]
            // A stale entry: the pair at this position has changed since it was queued.
            guard let merge = merges[Self.key(ids[position], ids[right])], merge.id == top.id else { continue }
            ids[position] = merge.id
            alive[right] = false
            next[position] = next[right]
            if next[right] >= 0 { previous[next[right]] = position }
            if previous[position] >= 0, let left = merges[Self.key(ids[previous[position]], ids[position])] {
                heap.push(.init(rank: left.rank, position: Int32(previous[position]), id: left.id))
            }
            if next[position] >= 0, let after = merges[Self.key(ids[position], ids[next[position]])] {
                heap.push(.init(rank: after.rank, position: top.position, id: after.id))
            }
        }
        var result: [Int32] = []
        var i = 0
        while i >= 0 {
            result.append(ids[i])
            i = next[i]
        }
        return result
    }

    @inline(__always) private static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }
}

/// A binary min-heap of merge candidates ordered by (rank, position).
private struct MergeHeap {
    struct Entry {
        var rank: Int32
        var position: Int32
        var id: Int32
        @inline(__always) static func < (a: Entry, b: Entry) -> Bool {
            a.rank != b.rank ? a.rank < b.rank : a.position < b.position
        }
    }

    private var items: [Entry] = []

    mutating func push(_ entry: Entry) {
        items.append(entry)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Entry? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var smallest = parent
                if left < items.count && items[left] < items[smallest] { smallest = left }
                if right < items.count && items[right] < items[smallest] { smallest = right }
                if smallest == parent { break }
                items.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return top
    }
}
