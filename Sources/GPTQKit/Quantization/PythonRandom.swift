/// CPython's `random.Random`, bit for bit, for the calls that calibration sampling
/// makes: seeding with an integer, `getrandbits`, `_randbelow` and `randint`.
///
/// GPTQ's reference calibration is "random.seed(0); randint(0, n - seqlen - 1)" per
/// sample; reproducing CPython's Mersenne Twister exactly lets us draw the very same
/// windows and compare our perplexities with AutoGPTQ's like for like.
public struct PythonRandom: Sendable {
    private static let n = 624
    private static let m = 397
    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 625

    /// `random.seed(seed)` for an integer seed: the key is the 32-bit words of |seed|,
    /// least significant first (`[0]` for 0), fed to MT19937's init_by_array.
    public init(seed: Int) {
        var magnitude = seed.magnitude
        var key: [UInt32] = []
        while magnitude != 0 {
            key.append(UInt32(truncatingIfNeeded: magnitude))
            magnitude >>= 32
        }
        if key.isEmpty { key = [0] }
        initByArray(key)
    }

    private mutating func initGenrand(_ seed: UInt32) {
        state[0] = seed
        for i in 1..<Self.n {
            state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i)
        }
        index = Self.n
    }

    private mutating func initByArray(_ key: [UInt32]) {
        initGenrand(19_650_218)
        var i = 1, j = 0
        for _ in 0..<max(Self.n, key.count) {
            state[i] = (state[i] ^ ((state[i - 1] ^ (state[i - 1] >> 30)) &* 1_664_525)) &+ key[j] &+ UInt32(j)
            i += 1
            j += 1
            if i >= Self.n { state[0] = state[Self.n - 1]; i = 1 }
            if j >= key.count { j = 0 }
        }
        for _ in 0..<(Self.n - 1) {
            state[i] = (state[i] ^ ((state[i - 1] ^ (state[i - 1] >> 30)) &* 1_566_083_941)) &- UInt32(i)
            i += 1
            if i >= Self.n { state[0] = state[Self.n - 1]; i = 1 }
        }
        state[0] = 0x8000_0000
    }

    /// MT19937's next 32-bit output (CPython's genrand_uint32).
    public mutating func nextUInt32() -> UInt32 {
        if index >= Self.n {
            for k in 0..<Self.n {
                let y = (state[k] & 0x8000_0000) | (state[(k + 1) % Self.n] & 0x7fff_ffff)
                state[k] = state[(k + Self.m) % Self.n] ^ (y >> 1) ^ ((y & 1) == 0 ? 0 : 0x9908_b0df)
            }
            index = 0
        }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9d2c_5680
        y ^= (y << 15) & 0xefc6_0000
        y ^= y >> 18
        return y
    }

    /// `random.getrandbits(k)` for 0 ≤ k ≤ 64: 32-bit words least significant first,
    /// the last one keeping its top bits.
    public mutating func getrandbits(_ k: Int) -> UInt64 {
        precondition((0...64).contains(k), "getrandbits supports 0...64 bits, got \(k)")
        var result: UInt64 = 0
        var remaining = k
        var shift: UInt64 = 0
        while remaining > 0 {
            var word = nextUInt32()
            if remaining < 32 { word >>= UInt32(32 - remaining) }
            result |= UInt64(word) << shift
            shift += 32
            remaining -= 32
        }
        return result
    }

    /// `random._randbelow(n)`: rejection sampling on bit_length(n) random bits.
    public mutating func randbelow(_ n: Int) -> Int {
        precondition(n > 0, "randbelow needs a positive bound, got \(n)")
        let bits = Int.bitWidth - n.leadingZeroBitCount
        while true {
            let r = getrandbits(bits)
            if r < UInt64(n) { return Int(r) }
        }
    }

    /// `random.randint(a, b)`: a uniform integer in a...b, both ends included.
    public mutating func randint(_ a: Int, _ b: Int) -> Int {
        precondition(a <= b, "randint needs a <= b, got \(a) > \(b)")
        return a + randbelow(b - a + 1)
    }
}
