extension LinearKernels {
    /// The 4-bit kernel on Hopper's warpgroup tensor-core instructions (wgmma, compute capability
    /// 9.0 only: compiled for sm_90a) for batches of 33–128 rows (`CUDALinear.warpgroupRows`),
    /// where the tiled kernel's mma.sync issue rate limits it and dequantizing for cuBLAS writes
    /// and reads W again.
    static let warpgroup = KernelSource(name: "linear-wgmma", code: KernelPrelude.source + tiledFormat + #"""

// ---- 4-bit warpgroup kernel (wgmma m64nRk16, A = unpacked weights in registers) ----------
// yᵀ = W·xᵀ as in the tiled kernel: warp w of a block takes output tile blockIdx.x·4·WG + w
// (16 outputs), so a warpgroup's four warps are wgmma's 64 M rows, each warp's A fragment the
// tiled layout's word unpacked to scale · (q − zero) in fp16 (one rounding, as dequantize +
// cuBLAS). Batch rows are the N side, R a launch (grid z; rows past the last are zeros and
// dropped). x comes gathered in the order CUDAGPTQLayout.warpgroupInputOrder gives and laid out
// as the stages take it (stage_x_wgmma), so that B is plain 16-byte pieces in shared memory
// without swizzle: core matrices of 8 rows × 8 k (128 bytes), a chunk's 8 k-groups side by
// side (LBO 128 bytes), row groups 1024 bytes apart (SBO); the k16 product j starts at k-group
// 2j. A block's WG warpgroups share the staged x (64·WG outputs per read of it). P stages of x
// are copied in by the copy engine, P − 2 ahead; the weights stream into registers (a
// bulk copy a tile's chunk was too many small copies: the copy engine held every chunk to about
// 1.2 µs). A chunk's products overlap the next chunk's unpacking. Grid y splits the chunks:
// with one split the block writes y, else fp32 partial sums that wgmma_q4_finish adds up.
__device__ __forceinline__ uint32_t shared_address(const void *p) {
    uint32_t a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
/// The stages arrive by the copy engine (cp.async.bulk), counted in bytes on an mbarrier a stage:
/// written through the async proxy as wgmma reads, so no proxy fence (whose MEMBAR waited for
/// every copy in flight when cp.async filled the stages) sits in the loop.
__device__ __forceinline__ void mbarrier_init(uint32_t bar) { asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(bar) : "memory"); }
__device__ __forceinline__ void mbarrier_expect_bytes(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
    uint32_t done = 0;
    while (!done)
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done) : "r"(bar), "r"(parity) : "memory");
}
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void *src, uint32_t bytes, uint32_t bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 :: "r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(N) : "memory"); }
/// Keeps the compiler from moving register reads or writes across the asynchronous wgmma.
template <int M> __device__ __forceinline__ void pin(float (&d)[M]) {
    #pragma unroll
    for (int i = 0; i < M; i++) asm volatile("" : "+f"(d[i]) :: "memory");
}
__device__ __forceinline__ void pin(uint32_t (&a)[4]) {
    #pragma unroll
    for (int i = 0; i < 4; i++) asm volatile("" : "+r"(a[i]) :: "memory");
}
/// Shared-memory matrix descriptor, no swizzle: start, leading (k) and stride (rows) byte offsets.
__device__ __forceinline__ uint64_t smem_descriptor(uint32_t address, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((address & 0x3FFFF) >> 4) | ((uint64_t)(lbo >> 4) << 16) | ((uint64_t)(sbo >> 4) << 32);
}
#define WGMMA_D4(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define WGMMA_D16(i) WGMMA_D4(i), WGMMA_D4(i + 4), WGMMA_D4(i + 8), WGMMA_D4(i + 12)
template <int R> struct Wgmma;
template <> struct Wgmma<64> {
    static __device__ __forceinline__ void mma(float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
                     "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
                     : WGMMA_D16(0), WGMMA_D16(16)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(1));
    }
};
template <> struct Wgmma<128> {
    static __device__ __forceinline__ void mma(float (&d)[64], const uint32_t (&a)[4], uint64_t b) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
                     "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, "
                     "%40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, "
                     "%60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
                     : WGMMA_D16(0), WGMMA_D16(16), WGMMA_D16(32), WGMMA_D16(48)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(1));
    }
};

template <int R, int WG, int P, int D>
__device__ __forceinline__ void wgmma_q4(const uint4 *__restrict__ tiles, const uint2 *__restrict__ params,
                                         const uint4 *__restrict__ x_staged, int rows, half_t *__restrict__ y, int ldy,
                                         const half_t *__restrict__ bias, float *__restrict__ partial, int K, int N, int group_size) {
    // A stage: x's R rows of one chunk as stage_x_wgmma lays it out; after the P stages, their P
    // mbarriers. The weights and group parameters stream into registers, D chunks ahead.
    constexpr int X_BYTES = R * 128;
    static_assert(P >= 3 && (D == 2 || D == 4), "stages; weights in flight");
    extern __shared__ __align__(128) unsigned char stages[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2;
    const int chunks = K >> 6, groups = (K + group_size - 1) / group_size, chunks_per_group = group_size >> 6;
    const int tile = blockIdx.x * 4 * WG + warp;
    const bool has_tile = tile < (N >> 4);
    const int split = blockIdx.y, splits = gridDim.y;
    const int c_begin = (int)((long long)chunks * split / splits), c_end = (int)((long long)chunks * (split + 1) / splits);
    const int count = c_end - c_begin, r0 = blockIdx.z * R;
    const uint32_t base = shared_address(stages), bars = base + P * X_BYTES;
    const uint64_t policy = evict_first_policy();
    float acc[R / 2];
    #pragma unroll
    for (int i = 0; i < R / 2; i++) acc[i] = 0.f;
    pin(acc);
    if (tid == 0) {
        #pragma unroll
        for (int s = 0; s < P; s++) mbarrier_init(bars + s * 8);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();

    wait_for_prior_grids();
    allow_dependent_grids();
    // The chunk loop's addresses are cursors stepped by adds: ncu showed the kernel issue-bound
    // on integer work (1.8 instructions a cycle, the ALU the busiest pipe) when each chunk's
    // addresses and group came from divisions.
    // x: chunk i's rows by one bulk copy (thread 0), into stage i % P.
    const unsigned char *x_next = (const unsigned char *)x_staged + ((size_t)blockIdx.z * chunks + c_begin) * X_BYTES;
    int x_loaded = 0;
    auto load_x = [&]() {
        if (tid == 0) {
            const uint32_t slot = x_loaded % P, bar = bars + slot * 8;
            mbarrier_expect_bytes(bar, X_BYTES);
            bulk_copy(base + slot * X_BYTES, x_next, X_BYTES, bar);
        }
        x_next += X_BYTES;
        x_loaded++;
    };
    // Weights: this lane's 16 bytes of the warp's tile and the group parameters, chunk by chunk.
    struct Weights { uint4 w; uint2 p; };
    const uint4 *w_next = tiles + ((size_t)tile * chunks + c_begin) * 32 + lane;
    const uint2 *p_next = params + ((size_t)tile * groups + c_begin / chunks_per_group) * 8 + g;
    int group_left = chunks_per_group - c_begin % chunks_per_group, fetch_left = has_tile ? count : 0;
    auto fetch = [&](Weights &s) {
        if (fetch_left > 0) {
            s.w = ld_stream(w_next, policy);
            s.p = __ldg(p_next);
            w_next += 32;
            if (--group_left == 0) { p_next += 8; group_left = chunks_per_group; }
            fetch_left--;
        }
    };
    const uint64_t desc0 = smem_descriptor(base, 128, 1024);
    // Chunk i: its weights (in w, which then takes chunk i + D's) into A registers a (zeros for
    // a warp past the last tile), then its four products queued. The products of chunk i − 1 may
    // still run (they read the other registers and the x stage before); those of i − 2 are done,
    // so their stage is refilled.
    auto step = [&](int i, uint32_t (&a)[4][4], Weights &w) {
        __syncthreads();
        if (x_loaded < count) load_x();
        const Weights now = w;
        fetch(w);
        if (has_tile) {
            const TileGroup q = tile_group(now.p);
            dequant_q4_word(now.w.x, q, a[0]); dequant_q4_word(now.w.y, q, a[1]);
            dequant_q4_word(now.w.z, q, a[2]); dequant_q4_word(now.w.w, q, a[3]);
        } else {
            #pragma unroll
            for (int j = 0; j < 4; j++) a[j][0] = a[j][1] = a[j][2] = a[j][3] = 0u;
        }
        #pragma unroll
        for (int j = 0; j < 4; j++) pin(a[j]);
        const uint32_t slot = i % P;
        mbarrier_wait(bars + slot * 8, (i / P) & 1);
        wgmma_fence();
        // The descriptor's address field counts 16 bytes: + 16 per 256 bytes.
        #pragma unroll
        for (int j = 0; j < 4; j++) Wgmma<R>::mma(acc, a[j], desc0 + (slot * X_BYTES + j * 256) / 16);
        wgmma_commit();
        wgmma_wait<1>();
    };
    #pragma unroll
    for (int i = 0; i < P - 2; i++)
        if (x_loaded < count) load_x();
    Weights w[D];
    #pragma unroll
    for (int d = 0; d < D; d++) fetch(w[d]);
    uint32_t a0[4][4], a1[4][4];
    for (int i = 0; i < count; i += D) {
        #pragma unroll
        for (int d = 0; d < D; d++)
            if (i + d < count) step(i + d, d % 2 ? a1 : a0, w[d]);
    }
    wgmma_wait<0>();
    pin(acc);
    if (!has_tile) return;
    // D fragment: acc[4j …] = outputs g, g+8 (of this warp's tile) × rows 8j + 2t, 8j + 2t + 1.
    const int n0 = tile * 16 + g, t = lane & 3;
    const float b0 = bias && splits == 1 ? h2f(bias[n0]) : 0.f, b1 = bias && splits == 1 ? h2f(bias[n0 + 8]) : 0.f;
    #pragma unroll
    for (int j = 0; j < R / 8; j++)
        #pragma unroll
        for (int e = 0; e < 2; e++) {
            const int row = r0 + 8 * j + 2 * t + e;
            if (row < rows) {
                if (splits == 1) {
                    y[(size_t)row * ldy + n0] = f2h(acc[4 * j + e] + b0);
                    y[(size_t)row * ldy + n0 + 8] = f2h(acc[4 * j + 2 + e] + b1);
                } else {
                    float *out = partial + ((size_t)split * rows + row) * N + n0;
                    out[0] = acc[4 * j + e];
                    out[8] = acc[4 * j + 2 + e];
                }
            }
        }
}
// R rows, WG warpgroups, P stages of x, D chunks of weights in flight, compiled for MINB blocks a
// multiprocessor (`CUDAGPTQLayout.WarpgroupLaunch`): wgmma keeps its accumulators and A
// registers pinned while it runs, and where they do not fit ptxas serializes the products.
#define WGMMA_Q4(R, WG, P, D, MINB)                                                                          \
extern "C" __global__ void __launch_bounds__(128 * WG, MINB) wgmma_q4_r##R##_w##WG##_p##P##_d##D(          \
    const uint4 *tiles, const uint2 *params, const uint4 *x_staged, int rows, half_t *y, int ldy,              \
    const half_t *bias, float *partial, int K, int N, int group_size) {                                       \
    wgmma_q4<R, WG, P, D>(tiles, params, x_staged, rows, y, ldy, bias, partial, K, N, group_size);          \
}
WGMMA_Q4(64, 2, 8, 2, 2) WGMMA_Q4(128, 2, 5, 4, 1)

/// y[row, n] = Σ over splits of partial[split, row, n] (+ bias), four outputs a thread.
extern "C" __global__ void wgmma_q4_finish(const float4 *__restrict__ partial, int splits, int rows, int N,
                                           const half_t *__restrict__ bias, half_t *__restrict__ y, int ldy) {
    wait_for_prior_grids();
    allow_dependent_grids();
    const int quads = N >> 2;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * quads) return;
    const int row = (int)(i / quads), n = (int)(i % quads) * 4;
    float4 s = partial[i];
    for (int k = 1; k < splits; k++) {
        const float4 v = partial[(long long)k * rows * quads + i];
        s.x += v.x; s.y += v.y; s.z += v.z; s.w += v.w;
    }
    if (bias) { s.x += h2f(bias[n]); s.y += h2f(bias[n + 1]); s.z += h2f(bias[n + 2]); s.w += h2f(bias[n + 3]); }
    half_t *out = y + (size_t)row * ldy + n;
    out[0] = f2h(s.x); out[1] = f2h(s.y); out[2] = f2h(s.z); out[3] = f2h(s.w);
}

/// x [rows, K] laid out as the warpgroup kernel's stages take it: for row tile z (R rows) and
/// chunk c, R·128 bytes at (z·chunks + c)·R·128 whose 16-byte piece p holds row (p >> 6)·8 +
/// (p & 7) at inputs order[64c + 8q …] for k-group q = (p >> 3) & 7 (core matrices of 8 rows, a
/// chunk's 8 k-groups side by side: the shared-memory descriptor's layout). Rows past the last
/// are zeros.
extern "C" __global__ void stage_x_wgmma(const half_t *__restrict__ x, int ldx, int rows, const int32_t *__restrict__ order,
                                         uint4 *__restrict__ out, int K, int R) {
    wait_for_prior_grids();
    allow_dependent_grids();
    const int c = blockIdx.x, z = blockIdx.y, chunks = K >> 6;
    for (int p = threadIdx.x; p < R * 8; p += blockDim.x) {
        const int row = z * R + (p >> 6) * 8 + (p & 7), q = (p >> 3) & 7;
        half_t v[8];
        #pragma unroll
        for (int e = 0; e < 8; e++) v[e] = row < rows ? x[(size_t)row * ldx + order[c * 64 + q * 8 + e]] : (half_t)0;
        out[((size_t)z * chunks + c) * R * 8 + p] = make_uint4(v[0] | (uint32_t)v[1] << 16, v[2] | (uint32_t)v[3] << 16,
                                                               v[4] | (uint32_t)v[5] << 16, v[6] | (uint32_t)v[7] << 16);
    }
}
"""#, architectureSpecific: true)
}
