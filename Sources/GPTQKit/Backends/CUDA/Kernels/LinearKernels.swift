import Synchronization

/// The linear layers' kernels, in sources that NVRTC compiles on first use, each alone (all
/// at once took about a minute on an H100): a model's first command compiles only what its
/// layers use.
///
/// GPTQ tensors are AutoGPTQ's: qweight [K·bits/32, N] int32 packed along the input
/// dimension as a little-endian bit stream (value k at bit k·bits of column n), qzeros
/// [G, N·bits/32] packed the same way along the output dimension, scales [G, N] fp16.
/// Zeros as AutoGPTQ's kernels read them: checkpoint format v1 stores zero−1, read back
/// as stored+1 with no wrap (so a v1 zero field of all ones means 2^bits, which is what
/// AutoGPTQ computes for layers whose zero was 0); format v2 stores the zero.
package enum LinearKernels {
    /// What the kernels on CUDAGPTQLayout's tiled layout share: the words' unpacking into the A
    /// registers of an m16n8k16 product (the layout's comment in `tiled`) and the streamed
    /// weights' L2 policy.
    static let tiledFormat = #"""
/// Weights are read once: first out of L2 (x and the group parameters stay).
__device__ __forceinline__ uint64_t evict_first_policy() {
    uint64_t p; asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p)); return p;
}
/// A streamed 16-byte read: not kept in L1, first out of L2 (x and parameters stay).
__device__ __forceinline__ uint4 ld_stream(const uint4 *p, uint64_t policy) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p), "l"(policy));
    return v;
}
/// The scales and 1024+zeros of outputs g (s0, z0) and g+8 (s1, z1) as broadcast half2s.
struct TileGroup { half2_t s0, s1, z0, z1; };
__device__ __forceinline__ TileGroup tile_group(uint2 p) {
    return TileGroup{prmt(p.x, p.x, 0x1010), prmt(p.x, p.x, 0x3232), prmt(p.y, p.y, 0x1010), prmt(p.y, p.y, 0x3232)};
}
/// Word → A registers a[0…3] = scale · (q − zero), exact q − zero, one fp16 rounding.
__device__ __forceinline__ void dequant_q4_word(uint32_t w, const TileGroup &p, half2_t *a) {
    a[0] = hmul2(hsub2(and_or(w, 0x000F000Fu, 0x64006400u), p.z0), p.s0);
    a[1] = hmul2(hsub2(and_or(w >> 4, 0x000F000Fu, 0x64006400u), p.z1), p.s1);
    a[2] = hmul2(hsub2(and_or(w >> 8, 0x000F000Fu, 0x64006400u), p.z0), p.s0);
    a[3] = hmul2(hsub2(and_or(w >> 12, 0x000F000Fu, 0x64006400u), p.z1), p.s1);
}

"""#

    /// The 4-bit tensor-core kernel on the tiled layout and its dequantizer for cuBLAS.
    package static let tiled = KernelSource(name: "linear-tiled", code: KernelPrelude.source + tiledFormat + #"""

// ---- 4-bit tensor-core kernel, 1–32 rows (mma.sync m16n8k16, unpacked in registers) -----
// Weights in CUDAGPTQLayout's tiled layout: for output tile T (16 outputs) and input chunk
// C (64 inputs), 32 lanes × 16 bytes at ((T·chunks + C)·32 + lane). Lane (g = lane/4,
// t = lane%4) holds four words j = 0…3; word j holds inputs 16t+4j … 16t+4j+3 of outputs g
// and g+8, its nibble r and r+4 being the two halves of A register r of an m16n8k16
// product, so the 0x6400 magic number turns each word into A fragments with no shuffles.
// The product is yᵀ = W·xᵀ: outputs on the M side, batch rows on the N side (8 per
// product; lanes past the last row read that row again and their results are dropped),
// and the tile's k order is the lanes' x order, so lane (g, t) feeds row g's inputs
// 64C+16t … 64C+16t+15 from two 16-byte reads. Group parameters: for (T, group, g) one
// uint2 {scale[g], scale[g+8]} {1024+zero[g], 1024+zero[g+8]} (half2 each).
// A block's warps split the chunks of NT tiles (interleaved, so a block streams adjacent
// memory; one or two stages of U chunks of loads per warp) and sum fp32 accumulators in shared
// memory. The weights become exact q − zero levels (levels_q4_word); each chunk's products are
// scaled in fp32.
__device__ __forceinline__ void mma_16816(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/// Word → A registers a[0…3] = q − zero as exact fp16 integers (the kernel scales each
/// chunk's fp32 products instead of each weight): registers 0 and 2 (output g) from nibbles
/// (0, 4) and (2, 6) read as 1024 + q, minus 1024 + zero; registers 1 and 3 (output g+8) from
/// nibbles (1, 5) and (3, 7) read in place as 1024 + 16q, times 1/16 minus 64 + zero in one
/// fma (z1_neg = −(64 + zero)). One shift, four LOP3 and four half2 ops per 8 weights.
__device__ __forceinline__ void levels_q4_word(uint32_t w, half2_t z0, half2_t z1_neg, half2_t *a) {
    const uint32_t w8 = w >> 8;
    a[0] = hsub2(and_or(w, 0x000F000Fu, 0x64006400u), z0);
    a[1] = hfma2(and_or(w, 0x00F000F0u, 0x64006400u), 0x2C002C00u, z1_neg);
    a[2] = hsub2(and_or(w8, 0x000F000Fu, 0x64006400u), z0);
    a[3] = hfma2(and_or(w8, 0x00F000F0u, 0x64006400u), 0x2C002C00u, z1_neg);
}

/// U chunks of NT tiles: packed words and group parameters (PAIRS: of each pair of chunks,
/// which then share a group), loaded together (XPRE: and the chunks' x of BT row tiles, so that
/// their latency overlaps the weights').
template <int NT, int U, int BT, bool XPRE, bool PAIRS> struct TiledStage {
    uint4 w[U][NT]; uint2 p[PAIRS ? U / 2 : U][NT]; uint4 x[XPRE ? U : 1][XPRE ? BT : 1][2];
};

/// Where a warp's current stage starts: chunk c of tile tile0 (w: this lane's word, the next
/// tile's chunks · 32 words on; the U chunks of a stage are adjacent, so their words and x sit at
/// constant offsets that the loads carry as immediates) and the chunk's x of each row tile.
/// Stepping on costs one add a pointer, where indexing every load from (tile, chunk) cost about
/// 30 instructions a chunk of 64-bit address arithmetic (the SASS of the chunk loop).
template <int BT> struct TiledCursor {
    const uint4 *w;
    const half_t *x[BT];
    int c;
    __device__ __forceinline__ void advance(int chunks_ahead) {
        w += chunks_ahead * 32;
        #pragma unroll
        for (int bt = 0; bt < BT; bt++) x[bt] += chunks_ahead * 64;
        c += chunks_ahead;
    }
};

/// The group parameters' first uint2 of output tile tile0 for lane group g; group q of tile
/// tile0 + nt at + (nt · groups + q) · 8.
struct TiledGroups {
    const uint2 *p;
    int groups, chunks_per_group;
    uint32_t magic;  // c / chunks_per_group = umulhi(c, magic), exact while c · chunks_per_group < 2^32
    __device__ __forceinline__ int group(int c) const { return chunks_per_group == 1 ? c : (int)__umulhi((uint32_t)c, magic); }
};

/// CHECK: chunks past the last are skipped (a warp's last stage where U does not divide what
/// is left); else every chunk of the stage exists. PAIRS (groups of an even number of chunks,
/// and c even): chunks c + 2i and c + 2i + 1 share one load of group parameters.
template <int NT, int U, int BT, bool XPRE, bool PAIRS, bool CHECK>
__device__ __forceinline__ void load_stage(TiledStage<NT, U, BT, XPRE, PAIRS> &s, const TiledCursor<BT> &at, const TiledGroups &gp,
                                           size_t tile_words, int chunks, uint64_t policy) {
    #pragma unroll
    for (int u = 0; u < U; u++) {
        if (!CHECK || at.c + u < chunks) {
            if (!PAIRS || u % 2 == 0) {
                const uint2 *p = gp.p + (size_t)gp.group(at.c + u) * 8;
                #pragma unroll
                for (int nt = 0; nt < NT; nt++) s.p[PAIRS ? u / 2 : u][nt] = __ldg(p + (size_t)nt * gp.groups * 8);
            }
            #pragma unroll
            for (int nt = 0; nt < NT; nt++) s.w[u][nt] = ld_stream(at.w + nt * tile_words + u * 32, policy);
            if (XPRE) {
                #pragma unroll
                for (int bt = 0; bt < BT; bt++) {
                    s.x[XPRE ? u : 0][XPRE ? bt : 0][0] = __ldg((const uint4 *)(at.x[bt] + u * 64));
                    s.x[XPRE ? u : 0][XPRE ? bt : 0][1] = __ldg((const uint4 *)(at.x[bt] + u * 64 + 8));
                }
            }
        }
    }
}

/// Runs of P chunks sharing group parameters (P = 2 with PAIRS): each tile's Σ (q − zero)·x over
/// the run's inputs, exact levels on the tensor cores into fp32, is scaled once.
template <int NT, int BT, int U, bool XPRE, bool PAIRS, bool CHECK>
__device__ __forceinline__ void compute_stage(const TiledStage<NT, U, BT, XPRE, PAIRS> &s, float (&acc)[NT][BT][4], const TiledCursor<BT> &at, int chunks) {
    constexpr int P = PAIRS ? 2 : 1;
    #pragma unroll
    for (int u0 = 0; u0 < U; u0 += P) {
        if (!CHECK || at.c + u0 < chunks) {
            uint32_t xb[P][BT][8];
            #pragma unroll
            for (int v = 0; v < P; v++)
                #pragma unroll
                for (int bt = 0; bt < BT; bt++) {
                    const int u = u0 + v;
                    const uint4 lo = XPRE ? s.x[XPRE ? u : 0][XPRE ? bt : 0][0] : __ldg((const uint4 *)(at.x[bt] + u * 64));
                    const uint4 hi = XPRE ? s.x[XPRE ? u : 0][XPRE ? bt : 0][1] : __ldg((const uint4 *)(at.x[bt] + u * 64 + 8));
                    xb[v][bt][0] = lo.x; xb[v][bt][1] = lo.y; xb[v][bt][2] = lo.z; xb[v][bt][3] = lo.w;
                    xb[v][bt][4] = hi.x; xb[v][bt][5] = hi.y; xb[v][bt][6] = hi.z; xb[v][bt][7] = hi.w;
                }
            #pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const uint2 p = s.p[u0 / P][nt];
                const half2_t z0 = prmt(p.y, p.y, 0x1010), z1_neg = hsub2(0x63806380u /* 960 */, prmt(p.y, p.y, 0x3232));
                float levels[BT][4];
                #pragma unroll
                for (int bt = 0; bt < BT; bt++)
                    #pragma unroll
                    for (int i = 0; i < 4; i++) levels[bt][i] = 0.f;
                #pragma unroll
                for (int v = 0; v < P; v++) {
                    // A pair's second chunk past the last (a shorter last group) adds nothing.
                    if (v > 0 && CHECK && at.c + u0 + v >= chunks) break;
                    const uint4 wv = s.w[u0 + v][nt];
                    const uint32_t wc[4] = {wv.x, wv.y, wv.z, wv.w};
                    #pragma unroll
                    for (int j = 0; j < 4; j++) {
                        half2_t a[4];
                        levels_q4_word(wc[j], z0, z1_neg, a);
                        #pragma unroll
                        for (int bt = 0; bt < BT; bt++) mma_16816(levels[bt], a[0], a[1], a[2], a[3], xb[v][bt][2 * j], xb[v][bt][2 * j + 1]);
                    }
                }
                // Times the scales of outputs g, g+8.
                const float s0 = h2f((half_t)(p.x & 0xffffu)), s1 = h2f((half_t)(p.x >> 16));
                #pragma unroll
                for (int bt = 0; bt < BT; bt++) {
                    acc[nt][bt][0] = fmaf(s0, levels[bt][0], acc[nt][bt][0]);
                    acc[nt][bt][1] = fmaf(s0, levels[bt][1], acc[nt][bt][1]);
                    acc[nt][bt][2] = fmaf(s1, levels[bt][2], acc[nt][bt][2]);
                    acc[nt][bt][3] = fmaf(s1, levels[bt][3], acc[nt][bt][3]);
                }
            }
        }
    }
}

template <int NT, int BT, int STAGES, int U, bool XPRE, bool PAIRS>
__device__ __forceinline__ void mma_q4(const uint4 *__restrict__ tiles, const uint2 *__restrict__ params,
                                       const half_t *__restrict__ x, int ldx, int rows, half_t *__restrict__ y, int ldy,
                                       const half_t *__restrict__ bias, int K, int group_size) {
    constexpr int TN = NT * 16, OUTS = TN * BT * 8;
    extern __shared__ float reduction[];  // [warps][BT·8 rows][TN outputs]
    const int lane = threadIdx.x, warp = threadIdx.y, warps = blockDim.y;
    const int g = lane >> 2, t = lane & 3;
    const int chunks = K >> 6, groups = (K + group_size - 1) / group_size, chunks_per_group = group_size >> 6;  // the last group may be shorter
    const int tile0 = blockIdx.x * NT;
    const uint64_t policy = evict_first_policy();
    float acc[NT][BT][4];
    #pragma unroll
    for (int nt = 0; nt < NT; nt++)
        #pragma unroll
        for (int bt = 0; bt < BT; bt++)
            #pragma unroll
            for (int i = 0; i < 4; i++) acc[nt][bt][i] = 0.f;
    // Warp w takes the U adjacent chunks w·U … of each span of warps·U: the block streams
    // adjacent memory, and a stage's loads are one pointer plus constants.
    const int span = warps * U;
    const size_t tile_words = (size_t)chunks * 32;
    TiledCursor<BT> at;
    at.c = warp * U;
    at.w = tiles + ((size_t)tile0 * chunks + at.c) * 32 + lane;
    #pragma unroll
    for (int bt = 0; bt < BT; bt++) at.x[bt] = x + (size_t)min(bt * 8 + g, rows - 1) * ldx + 16 * t + at.c * 64;
    const TiledGroups gp{params + (size_t)tile0 * groups * 8 + g, groups, chunks_per_group,
                         chunks_per_group == 1 ? 0u : 0xFFFFFFFFu / (uint32_t)chunks_per_group + 1u};

    // Dependent launch: this block may have started while the kernel ahead still runs (it may
    // be writing x, or reading what y overwrites): wait for it after the setup above, then let
    // the kernel behind start its blocks. Loading or prefetching the first stage's weights before
    // the wait ran slower (BENCHMARKS.md).
    wait_for_prior_grids();
    allow_dependent_grids();
    TiledStage<NT, U, BT, XPRE, PAIRS> a, b;
    if (STAGES == 2) {
        // Two stages in registers: the loads of the next U chunks in flight while this warp
        // works on the current ones (every stage checked: this shape serves 9–32 rows).
        TiledCursor<BT> next = at;
        next.advance(span);
        load_stage<NT, U, BT, XPRE, PAIRS, true>(a, at, gp, tile_words, chunks, policy);
        while (at.c < chunks) {
            load_stage<NT, U, BT, XPRE, PAIRS, true>(b, next, gp, tile_words, chunks, policy);
            compute_stage<NT, BT, U, XPRE, PAIRS, true>(a, acc, at, chunks);
            at.advance(2 * span);
            load_stage<NT, U, BT, XPRE, PAIRS, true>(a, at, gp, tile_words, chunks, policy);
            compute_stage<NT, BT, U, XPRE, PAIRS, true>(b, acc, next, chunks);
            next.advance(2 * span);
        }
    } else {
        // Load U chunks, then work on them; only a warp's last stage may run past the end.
        for (; at.c + U <= chunks; at.advance(span)) {
            load_stage<NT, U, BT, XPRE, PAIRS, false>(a, at, gp, tile_words, chunks, policy);
            compute_stage<NT, BT, U, XPRE, PAIRS, false>(a, acc, at, chunks);
        }
        if (at.c < chunks) {
            load_stage<NT, U, BT, XPRE, PAIRS, true>(a, at, gp, tile_words, chunks, policy);
            compute_stage<NT, BT, U, XPRE, PAIRS, true>(a, acc, at, chunks);
        }
    }
    // C fragment: c0, c1 = outputs g, rows 2t, 2t+1; c2, c3 = output g+8.
    #pragma unroll
    for (int nt = 0; nt < NT; nt++)
        #pragma unroll
        for (int bt = 0; bt < BT; bt++) {
            float *r = reduction + warp * OUTS + (bt * 8 + 2 * t) * TN + nt * 16 + g;
            r[0] = acc[nt][bt][0]; r[TN] = acc[nt][bt][1]; r[8] = acc[nt][bt][2]; r[TN + 8] = acc[nt][bt][3];
        }
    __syncthreads();
    for (int o = warp * 32 + lane; o < OUTS; o += warps * 32) {
        const int b = o / TN, n = tile0 * 16 + o % TN;
        if (b < rows) {
            float s = 0.f;
            for (int i = 0; i < warps; i++) s += reduction[i * OUTS + o];
            if (bias) s += h2f(bias[n]);
            y[(size_t)b * ldy + n] = f2h(s);
        }
    }
}

// One tile a warp: up to 16 warps a block (128 registers); two tiles: up to 8. Each kernel
// twice: the name with _p reads a pair of chunks' group parameters once (groups of an even
// number of chunks, `CUDAGPTQLayout.TiledLaunch.pairedGroups`).
#define MMA_Q4_P(NT, BT, S, U, THREADS, PAIRS, P)                                                            \
extern "C" __global__ void __launch_bounds__(THREADS) mma_q4_n##NT##_b##BT##_s##S##u##U##P(                  \
    const uint4 *tiles, const uint2 *params, const half_t *x, int ldx, int rows, half_t *y, int ldy,         \
    const half_t *bias, int K, int group_size) {                                                               \
    mma_q4<NT, BT, S, U, false, PAIRS>(tiles, params, x, ldx, rows, y, ldy, bias, K, group_size);            \
}
#define MMA_Q4(NT, BT, S, U, THREADS) MMA_Q4_P(NT, BT, S, U, THREADS, false, ) MMA_Q4_P(NT, BT, S, U, THREADS, true, _p)
#define MMA_Q4_SU(S, U) MMA_Q4(1, 1, S, U, 512) MMA_Q4(1, 2, S, U, 512) MMA_Q4(1, 4, S, U, 512) \
                        MMA_Q4(2, 1, S, U, 256) MMA_Q4(2, 2, S, U, 256) MMA_Q4(2, 4, S, U, 256)
MMA_Q4_SU(1, 4) MMA_Q4_SU(2, 2)
// Up to 8 rows, x loaded with the weights (XPRE): any warps a block (compiled for two blocks of
// 16 warps: 64 registers), or exactly W warps compiled for M resident blocks a multiprocessor
// (`CUDAGPTQLayout.TiledLaunch.kernelName`).
#define MMA_Q4_X_P(NT, S, U, THREADS, MINB, NAME, PAIRS)                                                     \
extern "C" __global__ void __launch_bounds__(THREADS, MINB) NAME(                                           \
    const uint4 *tiles, const uint2 *params, const half_t *x, int ldx, int rows, half_t *y, int ldy,         \
    const half_t *bias, int K, int group_size) {                                                               \
    mma_q4<NT, 1, S, U, true, PAIRS>(tiles, params, x, ldx, rows, y, ldy, bias, K, group_size);              \
}
#define MMA_Q4_X(NT, S, U, THREADS, MINB, NAME) MMA_Q4_X_P(NT, S, U, THREADS, MINB, NAME, false) \
                                                 MMA_Q4_X_P(NT, S, U, THREADS, MINB, NAME##_p, true)
MMA_Q4_X(1, 1, 2, 512, 2, mma_q4_n1_b1_s1u2x) MMA_Q4_X(1, 1, 4, 128, 6, mma_q4_n1_b1_s1u4x_w4m6)

// ---- the read floor (benchmarks): a kernel that only streams its bytes ---------------------
// What no kernel reading a layer's weights once can beat: the tiled kernel's streaming loads
// and dependent launch, no arithmetic. Each thread keeps U 16-byte reads in flight (a warp's
// contiguous), grid-strided; their XOR is written only where it equals one chosen value (a
// 2^-32 chance on random bytes), so the compiler must keep every load.
template <int U>
__device__ __forceinline__ void read_stream(const uint4 *__restrict__ src, long long words, uint32_t *__restrict__ out) {
    wait_for_prior_grids();
    allow_dependent_grids();
    const uint64_t policy = evict_first_policy();
    const long long stride = (long long)gridDim.x * blockDim.x * U;
    uint32_t acc = 0;
    for (long long base = (long long)blockIdx.x * blockDim.x * U + threadIdx.x; base < words; base += stride) {
        uint4 v[U];
        #pragma unroll
        for (int u = 0; u < U; u++) {
            const long long i = base + (long long)u * blockDim.x;
            v[u] = i < words ? ld_stream(src + i, policy) : make_uint4(0, 0, 0, 0);
        }
        #pragma unroll
        for (int u = 0; u < U; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    if (acc == 0x5eed0123u) out[0] = acc;
}
#define READ_STREAM(U) \
extern "C" __global__ void read_stream_u##U(const uint4 *src, long long words, uint32_t *out) { read_stream<U>(src, words, out); }
READ_STREAM(1) READ_STREAM(2) READ_STREAM(4) READ_STREAM(8)  // CUDABenchmarks.readFloorReadsInFlight

// ---- tiled 4-bit → fp16 W [N, K] (the tile's k order), for cuBLAS -------------------------
// One warp per (tile, chunk): lane (g, t) writes inputs 16t … 16t+15 of outputs g and g+8
// as two 16-byte stores each.
extern "C" __global__ void dequantize_q4_tiled(const uint4 *__restrict__ tiles, const uint2 *__restrict__ params,
                                               half_t *__restrict__ w, int K, int group_size) {
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    const int chunks = K >> 6, c = blockIdx.x * blockDim.y + threadIdx.y, tile = blockIdx.y;
    if (c >= chunks) return;
    const uint4 v = tiles[((size_t)tile * chunks + c) * 32 + lane];
    const TileGroup q = tile_group(params[((size_t)tile * ((K + group_size - 1) / group_size) + c / (group_size >> 6)) * 8 + g]);
    const uint32_t wc[4] = {v.x, v.y, v.z, v.w};
    uint32_t lo[8], hi[8];
    #pragma unroll
    for (int j = 0; j < 4; j++) {
        half2_t a[4];
        dequant_q4_word(wc[j], q, a);
        lo[2 * j] = a[0]; lo[2 * j + 1] = a[2]; hi[2 * j] = a[1]; hi[2 * j + 1] = a[3];
    }
    uint4 *out_lo = (uint4 *)(w + (size_t)(tile * 16 + g) * K + c * 64 + 16 * t);
    uint4 *out_hi = (uint4 *)((half_t *)out_lo + (size_t)8 * K);
    out_lo[0] = make_uint4(lo[0], lo[1], lo[2], lo[3]); out_lo[1] = make_uint4(lo[4], lo[5], lo[6], lo[7]);
    out_hi[0] = make_uint4(hi[0], hi[1], hi[2], hi[3]); out_hi[1] = make_uint4(hi[4], hi[5], hi[6], hi[7]);
}
"""#)

    /// The 4-bit GEMV on AutoGPTQ's packing (layers the tiled layout does not fit), kernel
    /// `gemv_q4_b{rows}_r{chunk}_t{width}` alone in its source: its 72 variants took 52 s to
    /// compile together on an H100, and a model uses a few.
    static func fastGEMV(rows: Int, chunk: Int, width: Int) -> KernelSource {
        let name = "linear-gemv4-b\(rows)-r\(chunk)-t\(width)"
        if let source = fastGEMVSources.withLock({ $0[name] }) { return source }
        let source = KernelSource(name: name, code: fastGEMVTemplate + "GEMV_Q4(\(rows), \(chunk), \(width))\n")
        fastGEMVSources.withLock { $0[name] = source }
        return source
    }
    private static let fastGEMVSources = Mutex<[String: KernelSource]>([:])
    private static let fastGEMVTemplate = KernelPrelude.source + #"""

// ---- 4-bit GEMV, the decode fast path ------------------------------------------
// y[b, n] = sum_k x[b, k] * scale[g, n] * (q[k, n] - zero[g, n]), for B rows of x.
// Block: TX × (256/TX) threads over TX·4 columns; each thread owns 4 adjacent columns and
// reads them as one 16-byte load per packed row (8 k × 4 n). threadIdx.y splits K in chunks
// of R packed rows (R·8 k, inside one group), R loads in flight before the first use.
// Narrow blocks (TX 2 or 4) give narrow layers enough blocks to fill the GPU.
// Nibbles become half2 (k, k+4) pairs with the 0x6400 magic number; subtracting
// (1024 + zero) leaves exact q − zero, scaled in fp16 like a dequantized weight; the
// products are summed in fp32. (Sums of 8 products a half2 lane, as this kernel first did,
// moved a 4-bit g32 checkpoint's logits by 2.1e-3 from the same weights on the CPU.)
// Act-order checkpoints arrive with rows sorted by group (and x permuted to match).
template <int B, int R, int TX>
__device__ __forceinline__ void gemv_q4(const uint4 *__restrict__ qweight, const uint32_t *__restrict__ qzeros,
                                        const half_t *__restrict__ scales, const half_t *__restrict__ x, int ldx,
                                        half_t *__restrict__ y, int ldy, const half_t *__restrict__ bias,
                                        int K, int N, int group_size, int zero_offset) {
    constexpr int TY = 256 / TX, COLS = TX * 4;
    __shared__ float partial[TY][B][COLS];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int n0 = (blockIdx.x * TX + tx) * 4;
    float acc[4][B];
    #pragma unroll
    for (int j = 0; j < 4; j++)
        #pragma unroll
        for (int b = 0; b < B; b++) acc[j][b] = 0.f;

    if (n0 < N) {
        const int chunks = K / (8 * R);
        const int rows_per_group = group_size / 8;
        const int row_uint4 = N / 4;
        for (int c = ty; c < chunks; c += TY) {
            const int row0 = c * R;
            const int g = row0 / rows_per_group;
            uint4 w[R];
            #pragma unroll
            for (int r = 0; r < R; r++) w[r] = __ldg(qweight + (size_t)(row0 + r) * row_uint4 + (n0 >> 2));
            const uint2 sraw = __ldg((const uint2 *)(scales + (size_t)g * N + n0));
            const uint32_t zw = __ldg(qzeros + (size_t)g * (N >> 3) + (n0 >> 3)) >> ((n0 & 7) * 4);
            half2_t z2[4], s2[4];
            #pragma unroll
            for (int j = 0; j < 4; j++) {
                const uint32_t zh = 0x6400u + ((zw >> (4 * j)) & 0xFu) + zero_offset;
                z2[j] = zh | (zh << 16);
            }
            s2[0] = (sraw.x & 0xffffu) * 0x10001u;
            s2[1] = (sraw.x >> 16) * 0x10001u;
            s2[2] = (sraw.y & 0xffffu) * 0x10001u;
            s2[3] = (sraw.y >> 16) * 0x10001u;
            #pragma unroll
            for (int r = 0; r < R; r++) {
                const int k0 = (row0 + r) * 8;
                float2 xf[B][4];
                #pragma unroll
                for (int b = 0; b < B; b++) {
                    const uint4 xv = *(const uint4 *)(x + (size_t)b * ldx + k0);
                    xf[b][0] = h22f2(prmt(xv.x, xv.z, 0x5410));  // (x0, x4)
                    xf[b][1] = h22f2(prmt(xv.x, xv.z, 0x7632));  // (x1, x5)
                    xf[b][2] = h22f2(prmt(xv.y, xv.w, 0x5410));  // (x2, x6)
                    xf[b][3] = h22f2(prmt(xv.y, xv.w, 0x7632));  // (x3, x7)
                }
                const uint32_t wc[4] = {w[r].x, w[r].y, w[r].z, w[r].w};
                #pragma unroll
                for (int j = 0; j < 4; j++) {
                    float2 d[4];
                    #pragma unroll
                    for (int i = 0; i < 4; i++)
                        d[i] = h22f2(hmul2(hsub2(and_or(wc[j] >> (4 * i), 0x000F000Fu, 0x64006400u), z2[j]), s2[j]));
                    #pragma unroll
                    for (int b = 0; b < B; b++)
                        #pragma unroll
                        for (int i = 0; i < 4; i++) acc[j][b] = fmaf(d[i].y, xf[b][i].y, fmaf(d[i].x, xf[b][i].x, acc[j][b]));
                }
            }
        }
    }
    #pragma unroll
    for (int j = 0; j < 4; j++)
        #pragma unroll
        for (int b = 0; b < B; b++) partial[ty][b][tx * 4 + j] = acc[j][b];
    __syncthreads();
    for (int o = ty * TX + tx; o < COLS * B; o += TX * TY) {
        const int col = o % COLS, b = o / COLS;
        float s = 0.f;
        #pragma unroll 8
        for (int i = 0; i < TY; i++) s += partial[i][b][col];
        const int n = blockIdx.x * COLS + col;
        if (n < N) {
            if (bias) s += h2f(bias[n]);
            y[(size_t)b * ldy + n] = f2h(s);
        }
    }
}

#define GEMV_Q4(B, R, TX)                                                                                     \
extern "C" __global__ void __launch_bounds__(256) gemv_q4_b##B##_r##R##_t##TX(                                \
    const uint4 *qweight, const uint32_t *qzeros, const half_t *scales, const half_t *x, int ldx,             \
    half_t *y, int ldy, const half_t *bias, int K, int N, int group_size, int zero_offset) {                 \
    gemv_q4<B, R, TX>(qweight, qzeros, scales, x, ldx, y, ldy, bias, K, N, group_size, zero_offset);        \
}

"""#

    /// The any-width GEMV and the GPTQ dequantizer for cuBLAS.
    static let generic = KernelSource(name: "linear-generic", code: KernelPrelude.source + #"""

// ---- any-width GEMV (2, 3, 4, 8 bits, any g_idx): correct first ---------------
// Block 32 × 8: threadIdx.x is the column, threadIdx.y splits K.
template <int B>
__device__ __forceinline__ void gemv_qn(const uint32_t *__restrict__ qweight, const uint32_t *__restrict__ qzeros,
                                        const half_t *__restrict__ scales, const int32_t *__restrict__ g_idx,
                                        const half_t *__restrict__ x, int ldx, half_t *__restrict__ y, int ldy,
                                        const half_t *__restrict__ bias, int K, int N, int bits, int zero_offset) {
    __shared__ float partial[8][B][32];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int n = blockIdx.x * 32 + tx;
    float acc[B];
    #pragma unroll
    for (int b = 0; b < B; b++) acc[b] = 0.f;
    if (n < N) {
        const uint32_t mask = (1u << bits) - 1;
        const int zero_words = N * bits / 32;
        const int zbit = n * bits, zword = zbit >> 5, zoff = zbit & 31;
        for (int k = ty; k < K; k += 8) {
            const int bit = k * bits, word = bit >> 5, off = bit & 31;
            uint32_t v = qweight[(size_t)word * N + n] >> off;
            if (off + bits > 32) v |= qweight[(size_t)(word + 1) * N + n] << (32 - off);
            v &= mask;
            const int g = g_idx[k];
            uint32_t z = qzeros[(size_t)g * zero_words + zword] >> zoff;
            if (zoff + bits > 32) z |= qzeros[(size_t)g * zero_words + zword + 1] << (32 - zoff);
            z = (z & mask) + zero_offset;
            const float w = h2f(scales[(size_t)g * N + n]) * ((float)v - (float)z);
            #pragma unroll
            for (int b = 0; b < B; b++) acc[b] += w * h2f(x[(size_t)b * ldx + k]);
        }
    }
    #pragma unroll
    for (int b = 0; b < B; b++) partial[ty][b][tx] = acc[b];
    __syncthreads();
    for (int o = ty * 32 + tx; o < 32 * B; o += 256) {
        const int col = o % 32, b = o / 32;
        float s = 0.f;
        #pragma unroll
        for (int i = 0; i < 8; i++) s += partial[i][b][col];
        const int nn = blockIdx.x * 32 + col;
        if (nn < N) {
            if (bias) s += h2f(bias[nn]);
            y[(size_t)b * ldy + nn] = f2h(s);
        }
    }
}

#define GEMV_QN(B)                                                                                            \
extern "C" __global__ void __launch_bounds__(256) gemv_qn_b##B(                                               \
    const uint32_t *qweight, const uint32_t *qzeros, const half_t *scales, const int32_t *g_idx,              \
    const half_t *x, int ldx, half_t *y, int ldy, const half_t *bias, int K, int N, int bits, int zero_offset) { \
    gemv_qn<B>(qweight, qzeros, scales, g_idx, x, ldx, y, ldy, bias, K, N, bits, zero_offset);               \
}
GEMV_QN(1) GEMV_QN(2) GEMV_QN(3) GEMV_QN(4) GEMV_QN(5) GEMV_QN(6) GEMV_QN(7) GEMV_QN(8)

// ---- GPTQ → fp16 W [K, N] (row-major), for cuBLAS ---------------------------------
// Row k of the stored tensor goes to row dest_row[k] (the act-order permutation of the
// 4-bit fast layout), or k when dest_row is null. One thread per column and 8 rows.
extern "C" __global__ void dequantize_gptq(const uint32_t *__restrict__ qweight, const uint32_t *__restrict__ qzeros,
                                           const half_t *__restrict__ scales, const int32_t *__restrict__ g_idx,
                                           const int32_t *__restrict__ dest_row, half_t *__restrict__ w,
                                           int K, int N, int bits, int group_size, int zero_offset) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const uint32_t mask = (1u << bits) - 1;
    const int zero_words = N * bits / 32;
    const int zbit = n * bits, zword = zbit >> 5, zoff = zbit & 31;
    const int k_end = min(K, (int)(blockIdx.y + 1) * 8);
    for (int k = blockIdx.y * 8; k < k_end; k++) {
        const int bit = k * bits, word = bit >> 5, off = bit & 31;
        uint32_t v = __ldg(qweight + (size_t)word * N + n) >> off;
        if (off + bits > 32) v |= __ldg(qweight + (size_t)(word + 1) * N + n) << (32 - off);
        v &= mask;
        const int g = g_idx ? g_idx[k] : k / group_size;
        uint32_t z = __ldg(qzeros + (size_t)g * zero_words + zword) >> zoff;
        if (zoff + bits > 32) z |= __ldg(qzeros + (size_t)g * zero_words + zword + 1) << (32 - zoff);
        z = (z & mask) + zero_offset;
        const float value = h2f(scales[(size_t)g * N + n]) * ((float)v - (float)z);
        const int row = dest_row ? dest_row[k] : k;
        w[(size_t)row * N + n] = f2h(value);
    }
}
"""#)

    /// What every model uses: the act-order gather, the float16 GEMV, bias, benchmark fills.
    static let common = KernelSource(name: "linear-common", code: KernelPrelude.source + #"""

// ---- x[:, perm] for act-order 4-bit layers -----------------------------------------
extern "C" __global__ void gather_columns(const half_t *__restrict__ x, int ldx, const int32_t *__restrict__ perm,
                                          half_t *__restrict__ out, int K) {
    const int b = blockIdx.y;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < K; k += gridDim.x * blockDim.x)
        out[(size_t)b * K + k] = x[(size_t)b * ldx + perm[k]];
}

// ---- dense fp16 GEMV: y[b, n] = x[b, :] · W[n, :] (+ bias), W [N, K] row-major --------
// One warp per output row, 16-byte loads of W along K, fp32 accumulation.
// OUT_F32 selects a float32 output (logits).
template <int B, bool OUT_F32>
__device__ __forceinline__ void gemv_f16(const half_t *__restrict__ w, const half_t *__restrict__ x, int ldx,
                                         void *__restrict__ y, int ldy, const half_t *__restrict__ bias, int K, int N) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n = blockIdx.x * (blockDim.x >> 5) + warp;
    if (n >= N) return;
    float acc[B];
    #pragma unroll
    for (int b = 0; b < B; b++) acc[b] = 0.f;
    const uint4 *row = (const uint4 *)(w + (size_t)n * K);
    const int chunks = K / 8;
    #pragma unroll 4
    for (int c = lane; c < chunks; c += 32) {
        const uint4 wv = __ldg(row + c);
        const float2 w01 = h22f2(wv.x), w23 = h22f2(wv.y), w45 = h22f2(wv.z), w67 = h22f2(wv.w);
        #pragma unroll
        for (int b = 0; b < B; b++) {
            const uint4 xv = *(const uint4 *)(x + (size_t)b * ldx + c * 8);
            const float2 x01 = h22f2(xv.x), x23 = h22f2(xv.y), x45 = h22f2(xv.z), x67 = h22f2(xv.w);
            acc[b] += w01.x * x01.x + w01.y * x01.y + w23.x * x23.x + w23.y * x23.y
                    + w45.x * x45.x + w45.y * x45.y + w67.x * x67.x + w67.y * x67.y;
        }
    }
    #pragma unroll
    for (int b = 0; b < B; b++) {
        float s = warp_sum(acc[b]);
        if (lane == 0) {
            if (bias) s += h2f(bias[n]);
            if (OUT_F32) ((float *)y)[(size_t)b * ldy + n] = s;
            else ((half_t *)y)[(size_t)b * ldy + n] = f2h(s);
        }
    }
}

#define GEMV_F16(B)                                                                                           \
extern "C" __global__ void gemv_f16_b##B(const half_t *w, const half_t *x, int ldx, half_t *y, int ldy,      \
                                         const half_t *bias, int K, int N) {                                  \
    gemv_f16<B, false>(w, x, ldx, y, ldy, bias, K, N);                                                        \
}                                                                                                             \
extern "C" __global__ void gemv_f16_f32out_b##B(const half_t *w, const half_t *x, int ldx, float *y, int ldy, \
                                                const half_t *bias, int K, int N) {                           \
    gemv_f16<B, true>(w, x, ldx, y, ldy, bias, K, N);                                                         \
}
GEMV_F16(1) GEMV_F16(2) GEMV_F16(3) GEMV_F16(4) GEMV_F16(5) GEMV_F16(6) GEMV_F16(7) GEMV_F16(8)

// ---- the bias of a cuBLAS product: y[r, n] = half(product[r, n] + bias[n]), one rounding --
// y[r, n] += bias[n] on a float32 product (an LM head's logits).
extern "C" __global__ void add_bias_to_float(const half_t *bias, float *y, int ldy, int N) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x, r = blockIdx.y;
    if (n < N) y[(size_t)r * ldy + n] += h2f(bias[n]);
}

extern "C" __global__ void add_bias_to_half(const float *product, const half_t *bias, half_t *y, int ldy, int N) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x, r = blockIdx.y;
    if (n < N) y[(size_t)r * ldy + n] = f2h(product[(size_t)r * N + n] + h2f(bias[n]));
}

// ---- deterministic pseudo-random fills (benchmark weights) -----------------------------
__device__ __forceinline__ uint32_t mix32(uint64_t v) {
    v ^= v >> 33; v *= 0xff51afd7ed558ccdull; v ^= v >> 33; v *= 0xc4ceb9fe1a85ec53ull; v ^= v >> 33;
    return (uint32_t)v;
}
extern "C" __global__ void fill_random_u32(uint32_t *out, long long count, uint32_t seed) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x)
        out[i] = mix32(((uint64_t)seed << 40) ^ (uint64_t)i);
}
// Uniform in [lo, hi).
extern "C" __global__ void fill_random_f16(half_t *out, long long count, uint32_t seed, float lo, float hi) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x)
        out[i] = f2h(lo + (hi - lo) * (mix32(((uint64_t)seed << 40) ^ (uint64_t)i) * 2.3283064e-10f));
}
extern "C" __global__ void fill_random_f32(float *out, long long count, uint32_t seed, float lo, float hi) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x)
        out[i] = lo + (hi - lo) * (mix32(((uint64_t)seed << 40) ^ (uint64_t)i) * 2.3283064e-10f);
}
// Tiled 4-bit group parameters: scales uniform in [lo, hi), zeros 1…16 (v1's range).
extern "C" __global__ void fill_random_q4_params(uint2 *out, long long count, uint32_t seed, float lo, float hi) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
        const uint32_t r0 = mix32(((uint64_t)seed << 40) ^ (uint64_t)(2 * i)), r1 = mix32(((uint64_t)seed << 40) ^ (uint64_t)(2 * i + 1));
        const half_t s0 = f2h(lo + (hi - lo) * ((r0 >> 8) * 5.9604645e-8f)), s1 = f2h(lo + (hi - lo) * ((r1 >> 8) * 5.9604645e-8f));
        out[i] = make_uint2(s0 | ((uint32_t)s1 << 16), (0x6401u + (r0 & 15)) | ((0x6401u + (r1 & 15)) << 16));
    }
}
"""#)
}
