/// The block engine's kernels besides the linears: the stem (embedding, learned positions),
/// norms (RMSNorm, LayerNorm, with the residual adds), rotary positions with the KV-cache
/// write, attention (with ALiBi), the MLP's activation, argmax. The residual stream is
/// float32, activations entering a linear are float16. Kernels that depend on the position read
/// it from device memory, so one captured graph serves every decode step. RMSNorm, decode
/// attention and SwiGLU are launched to overlap the kernel ahead (they wait for it before
/// reading its output) and call allow_dependent_grids as soon as they have waited: the
/// 4-bit tiled kernel behind them, launched to overlap too, then starts and sets up its
/// blocks while they run.
package enum DecoderKernels {
    package static let source = KernelSource(name: "decoder", code: KernelPrelude.source + #"""
// x[r, :] = table[t, :] (float16 table, float32 rows), t = tokens[r], or r without tokens (a
// stem's projected rows), plus row pos[r] + offset of the learned positions (float32) when given.
extern "C" __global__ void embed(const int32_t *__restrict__ tokens, const half_t *__restrict__ table, float *__restrict__ x, int H,
                                 const float *__restrict__ positions, int offset, const int32_t *__restrict__ pos) {
    const int r = blockIdx.x;
    const half_t *row = table + (size_t)(tokens ? tokens[r] : r) * H;
    const float *learned = positions ? positions + (size_t)(pos[r] + offset) * H : nullptr;
    for (int i = threadIdx.x; i < H; i += blockDim.x) x[(size_t)r * H + i] = h2f(row[i]) + (learned ? learned[i] : 0.f);
}

// out[r, :] = table[tokens[r], :]: float16 rows of width W (the input of a stem's projection).
extern "C" __global__ void gather_rows(const int32_t *__restrict__ tokens, const half_t *__restrict__ table, half_t *__restrict__ out, int W) {
    const int r = blockIdx.x;
    for (int i = threadIdx.x; i < W; i += blockDim.x) out[(size_t)r * W + i] = table[(size_t)tokens[r] * W + i];
}

// out[r, :] = float16(norm(x[r, :])) after x[r, :] += y[r, :] and then += y2[r, :] where given
// (the sublayer outputs a block step adds). kind 0: no norm (a copy); 1: RMSNorm, x / rms · w;
// 2: LayerNorm, (x − mean) / sd · w + b; w and b optional (1 and 0). `replace`: x = norm(x) too
// (post-norm blocks); out optional. Each thread keeps its elements (at most ITEMS: H <= ITEMS ·
// blockDim.x) in registers, so x, y and w are each read once and all before the block's
// reductions (one memory latency instead of two); w, which no kernel writes, is read before
// waiting for the kernel ahead. Up to 1024 threads: at most 64 registers a thread, so b is read
// at the end. `add_norm` keeps 8 (H up to 8192), `add_norm16` 16 (H up to 16384);
// `CUDASession.normLaunch` picks.
template <int ITEMS>
__device__ __forceinline__ void add_norm_row(float *__restrict__ x, const half_t *__restrict__ y, const half_t *__restrict__ y2, int ldy,
                                             int kind, const float *__restrict__ w, const float *__restrict__ b,
                                             half_t *__restrict__ out, int H, float eps, int replace) {
    __shared__ float scratch[32];
    const int r = blockIdx.x;
    float *xr = x + (size_t)r * H;
    float v[ITEMS], g[ITEMS];
    #pragma unroll
    for (int k = 0; k < ITEMS; k++) {
        const int i = threadIdx.x + k * blockDim.x;
        g[k] = i < H && w ? w[i] : 1.f;
    }
    wait_for_prior_grids();
    allow_dependent_grids();
    #pragma unroll
    for (int k = 0; k < ITEMS; k++) {
        const int i = threadIdx.x + k * blockDim.x;
        v[k] = 0.f;
        if (i < H) {
            v[k] = xr[i];
            if (y) v[k] += h2f(y[(size_t)r * ldy + i]);
            if (y2) v[k] += h2f(y2[(size_t)r * ldy + i]);
        }
    }
    float mean = 0.f, inv = 1.f;
    if (kind == 2) {
        float s = 0.f;
        #pragma unroll
        for (int k = 0; k < ITEMS; k++) s += v[k];
        mean = block_sum(s, scratch) / H;
    }
    if (kind != 0) {
        float ss = 0.f;
        #pragma unroll
        for (int k = 0; k < ITEMS; k++) {
            const int i = threadIdx.x + k * blockDim.x;
            const float d = i < H ? v[k] - mean : 0.f;
            ss += d * d;
        }
        inv = rsqrtf(block_sum(ss, scratch) / H + eps);
    }
    #pragma unroll
    for (int k = 0; k < ITEMS; k++) {
        const int i = threadIdx.x + k * blockDim.x;
        if (i >= H) continue;
        const float o = kind == 0 ? v[k] : (v[k] - mean) * inv * g[k] + (b ? b[i] : 0.f);
        if (replace) xr[i] = o;
        else if (y) xr[i] = v[k];
        if (out) out[(size_t)r * H + i] = f2h(o);
    }
}
extern "C" __global__ void __launch_bounds__(1024) add_norm(float *__restrict__ x, const half_t *__restrict__ y, const half_t *__restrict__ y2,
                                                            int ldy, int kind, const float *__restrict__ w, const float *__restrict__ b,
                                                            half_t *__restrict__ out, int H, float eps, int replace) {
    add_norm_row<8>(x, y, y2, ldy, kind, w, b, out, H, eps, replace);
}
extern "C" __global__ void __launch_bounds__(1024) add_norm16(float *__restrict__ x, const half_t *__restrict__ y, const half_t *__restrict__ y2,
                                                              int ldy, int kind, const float *__restrict__ w, const float *__restrict__ b,
                                                              half_t *__restrict__ out, int H, float eps, int replace) {
    add_norm_row<16>(x, y, y2, ldy, kind, w, b, out, H, eps, replace);
}

// The dimensions rotary pair i of a head's D/2 pairs joins: the first rot/2 pairs rotate,
// (i, i + rot/2) as transformers' rotate_half or (2i, 2i + 1) as GPT-J's rotate_every_two; the
// pairs after them cover dimensions rot..D-1, which pass through.
__device__ __forceinline__ void rotary_pair(int i, int rot, int interleaved, int *a, int *b) {
    const int half = rot / 2;
    if (i >= half) { *a = rot + 2 * (i - half); *b = *a + 1; }
    else if (interleaved) { *a = 2 * i; *b = 2 * i + 1; }
    else { *a = i; *b = i + half; }
}

// ALiBi's bias of key j for a head of slope `slope` (already rounded to bfloat16 when `bf16`):
// slope · j, in bfloat16 as Falcon computes it when `bf16`, times `scale`.
__device__ __forceinline__ float alibi_bias(float slope, int j, int bf16, float scale) {
    float b = slope * (float)j;
    if (bf16) {
        const uint32_t bits = __float_as_uint(b);
        b = __uint_as_float((bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u);
    }
    return b * scale;
}

// The paged KV cache: each layer's keys (and values) are blocks of B = 1 << block_shift
// positions, [block][KV][B][D] float16, and sequence s's position p lives in block
// tables[s · max_blocks + p / B] (KVBlockAllocator keeps the tables). The element offset of
// that position's row for kv head kvh:
__device__ __forceinline__ size_t kv_row(const int32_t *__restrict__ tables, int max_blocks, int block_shift, int s, int KV, int kvh,
                                         int p, int D) {
    const size_t block = (size_t)tables[s * max_blocks + (p >> block_shift)];
    return (((block * KV + kvh) << block_shift) + (size_t)(p & ((1 << block_shift) - 1))) * D;
}

// Prefill: per row r (a token of sequence seqs[r] at position pos[r]) and head: optional
// per-head RMSNorm of q and k (Qwen3), rotary positions over the first `rot` dimensions
// (rotary_pair) with angles position · inv_freq[i] in float32 (rot 0: none), q rotated in
// place in the qkv row, k (rotated) and v written to the paged caches (kv_row).
// Grid (rows, H + KV), block 64.
extern "C" __global__ void rope_qkv(half_t *__restrict__ qkv, int ld, const float *__restrict__ inv_freq, int rot, int interleaved,
                                    const int32_t *__restrict__ pos, const int32_t *__restrict__ seqs, int H, int KV, int D, half_t *__restrict__ k_cache,
                                    half_t *__restrict__ v_cache, const int32_t *__restrict__ tables, int max_blocks, int block_shift,
                                    const float *__restrict__ q_norm,
                                    const float *__restrict__ k_norm, float eps) {
    __shared__ float scratch[32];
    const int r = blockIdx.x, head = blockIdx.y;
    const int position = pos[r], seq = seqs[r];
    const bool is_q = head < H;
    half_t *v = qkv + (size_t)r * ld + (size_t)(H + KV) * D + (size_t)(head - H) * D;
    half_t *x = qkv + (size_t)r * ld + (size_t)head * D;
    const float *norm = is_q ? q_norm : k_norm;
    float inv = 1.f;
    if (norm) {
        float ss = 0.f;
        for (int i = threadIdx.x; i < D; i += blockDim.x) { const float t = h2f(x[i]); ss += t * t; }
        inv = rsqrtf(block_sum(ss, scratch) / D + eps);
    }
    const size_t cache_row = is_q ? 0 : kv_row(tables, max_blocks, block_shift, seq, KV, head - H, position, D);
    half_t *dst = is_q ? x : k_cache + cache_row;
    // Each thread reads and writes its own pairs, so q can be rotated in place.
    for (int i = threadIdx.x; i < D / 2; i += blockDim.x) {
        int ia, ib;
        rotary_pair(i, rot, interleaved, &ia, &ib);
        float a = h2f(x[ia]), b = h2f(x[ib]);
        if (norm) { a *= inv * norm[ia]; b *= inv * norm[ib]; }
        if (i < rot / 2) {
            float sn, cs;
            sincosf((float)position * inv_freq[i], &sn, &cs);
            const float ra = a * cs - b * sn, rb = b * cs + a * sn;
            a = ra;
            b = rb;
        }
        dst[ia] = f2h(a);
        dst[ib] = f2h(b);
    }
    if (!is_q) {
        half_t *vdst = v_cache + cache_row;
        for (int i = threadIdx.x; i < D; i += blockDim.x) vdst[i] = v[i];
    }
}

// Decode: one new token a sequence, grid (H, sequences, splits), block a multiple of 32
// (256), dynamic shared memory (2·D + warps · lanes · 10) floats, lanes = D/8 rounded up to a
// power of two. Sequence s's token sits at position p = pos[s]. Its q (head h) and k, v (kv
// head h / (H / KV)) come from the qkv row: q and k normed per head (Qwen3) and rotated as
// rope_qkv does, rounded to float16 as prefill keeps them; a key's score gets ALiBi's bias
// when slopes are given; and the group's first q head
// writes k and v into the caches at p (no other block reads that position of the cache: each
// uses its own copy). Keys start..p (start > 0 with a sliding window) are split into chunks
// of whole rounds, at least SPLIT_MIN_KEYS keys, over at most gridDim.z blocks (those past
// the context return at once), so a long context is read by many blocks. In a block, a key's D
// halves are read 16 bytes a lane by `lanes` lanes (a slot), slot i takes keys i, i + slots,
// ... four at a time (their loads in flight together) with its own running max and sum
// (online softmax), and the slots are merged, within each warp by shuffles, then across
// warps. One chunk: the block writes the output. Several: each writes its max, sum and
// unnormalized output to partials [sequence][head][split][2 + D], and the last to finish
// (counters [sequence][head], left at 0 again) merges them in split order.
#define SPLIT_MIN_KEYS 256
extern "C" __global__ void attention_decode(const half_t *__restrict__ qkv, int ld, const float *__restrict__ inv_freq, int rot,
                                            int interleaved, const int32_t *__restrict__ pos, int H, int KV, int D, half_t *__restrict__ k_cache,
                                            half_t *__restrict__ v_cache, const int32_t *__restrict__ tables, int max_blocks, int block_shift,
                                            const float *__restrict__ q_norm,
                                            const float *__restrict__ k_norm, float eps, float scale, int window,
                                            half_t *__restrict__ out, int ldo, float *__restrict__ partials, int *__restrict__ counters,
                                            const float *__restrict__ alibi_slopes, int alibi_bf16, float alibi_scale) {
    extern __shared__ float smem[];
    __shared__ float scratch[32];
    __shared__ int last_block;
    const int h = blockIdx.x, s = blockIdx.y, z = blockIdx.z, group = H / KV, kvh = h / group;
    float *q = smem;                                             // [D] rotated, rounded, scaled
    half_t *k_new = (half_t *)(smem + D), *v_new = k_new + D;    // [D] each
    float *merge = smem + 2 * D;                                 // [warps][lanes][m, l, 8 sums]
    wait_for_prior_grids();
    allow_dependent_grids();
    const int p = pos[s], L = p + 1, start = window > 0 ? max(0, L - window) : 0;
    int lanes = 1;
    while (lanes * 8 < D) lanes <<= 1;
    const int slots = blockDim.x / lanes, round = 4 * slots;
    const int chunk = (max((L - start + gridDim.z - 1) / gridDim.z, SPLIT_MIN_KEYS) + round - 1) / round * round;
    const int splits = (L - start + chunk - 1) / chunk;
    if (z >= splits) return;
    const int lo = start + z * chunk, hi = min(L, lo + chunk);
    const half_t *row = qkv + (size_t)s * ld;
    const half_t *qh = row + (size_t)h * D, *kh = row + (size_t)(H + kvh) * D, *vh = row + (size_t)(H + KV + kvh) * D;
    float q_inv = 1.f, k_inv = 1.f;
    if (q_norm) {
        float qs = 0.f, ks = 0.f;
        for (int i = threadIdx.x; i < D; i += blockDim.x) { const float a = h2f(qh[i]), b = h2f(kh[i]); qs += a * a; ks += b * b; }
        q_inv = rsqrtf(block_sum(qs, scratch) / D + eps);
        k_inv = rsqrtf(block_sum(ks, scratch) / D + eps);
    }
    for (int i = threadIdx.x; i < D / 2; i += blockDim.x) {
        int ia, ib;
        rotary_pair(i, rot, interleaved, &ia, &ib);
        float sn = 0.f, cs = 1.f;
        if (i < rot / 2) sincosf((float)p * inv_freq[i], &sn, &cs);
        float a = h2f(qh[ia]), b = h2f(qh[ib]);
        if (q_norm) { a *= q_inv * q_norm[ia]; b *= q_inv * q_norm[ib]; }
        q[ia] = h2f(f2h(a * cs - b * sn)) * scale;
        q[ib] = h2f(f2h(b * cs + a * sn)) * scale;
        a = h2f(kh[ia]); b = h2f(kh[ib]);
        if (k_norm) { a *= k_inv * k_norm[ia]; b *= k_inv * k_norm[ib]; }
        k_new[ia] = f2h(a * cs - b * sn);
        k_new[ib] = f2h(b * cs + a * sn);
    }
    for (int i = threadIdx.x; i < D; i += blockDim.x) v_new[i] = vh[i];
    __syncthreads();
    if (h % group == 0 && z == 0) {
        const size_t row_p = kv_row(tables, max_blocks, block_shift, s, KV, kvh, p, D);
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            k_cache[row_p + i] = k_new[i];
            v_cache[row_p + i] = v_new[i];
        }
    }

    const int slot = threadIdx.x / lanes, sub = threadIdx.x % lanes;
    const bool active = sub * 8 < D;
    float qr[8], acc[8], m = -3.0e38f, l = 0.f;
    #pragma unroll
    for (int e = 0; e < 8; e++) { qr[e] = active ? q[sub * 8 + e] : 0.f; acc[e] = 0.f; }
    // One key's dot product with q over its slot's lanes, and the slot's online-softmax update.
    const float slope = alibi_slopes ? alibi_slopes[h] : 0.f;
    auto attend = [&](uint4 kw, uint4 vw, int j, bool counted) {
        const uint32_t kk[4] = {kw.x, kw.y, kw.z, kw.w}, vv[4] = {vw.x, vw.y, vw.z, vw.w};
        float dot = 0.f;
        #pragma unroll
        for (int e = 0; e < 4; e++) { const float2 f = h22f2(kk[e]); dot += qr[2 * e] * f.x + qr[2 * e + 1] * f.y; }
        for (int o = lanes / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        if (alibi_slopes) dot += alibi_bias(slope, j, alibi_bf16, alibi_scale);
        if (counted) {
            const float mn = fmaxf(m, dot), c = __expf(m - mn), w = __expf(dot - mn);
            l = l * c + w;
            #pragma unroll
            for (int e = 0; e < 4; e++) {
                const float2 f = h22f2(vv[e]);
                acc[2 * e] = acc[2 * e] * c + w * f.x;
                acc[2 * e + 1] = acc[2 * e + 1] * c + w * f.y;
            }
            m = mn;
        }
    };
    // The cached keys of this chunk (before p, which no block of this launch writes), 16-byte
    // loads through the read-only path; every thread runs the same rounds (the shuffles need
    // whole warps).
    const int cached_hi = min(hi, p);
    for (int j00 = lo; j00 < cached_hi; j00 += round) {
        uint4 kw[4], vw[4];
        #pragma unroll
        for (int u = 0; u < 4; u++) {
            const int j = j00 + slot + u * slots;
            kw[u] = vw[u] = make_uint4(0u, 0u, 0u, 0u);
            if (j < cached_hi && active) {
                const size_t row_j = kv_row(tables, max_blocks, block_shift, s, KV, kvh, j, D) + sub * 8;
                kw[u] = __ldg((const uint4 *)(k_cache + row_j));
                vw[u] = __ldg((const uint4 *)(v_cache + row_j));
            }
        }
        #pragma unroll
        for (int u = 0; u < 4; u++) attend(kw[u], vw[u], j00 + slot + u * slots, j00 + slot + u * slots < cached_hi);
    }
    // The new key, in the chunk that ends at p: slot 0 takes it from shared memory.
    if (hi == L) {
        const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
        attend(active ? *(const uint4 *)(k_new + sub * 8) : zero, active ? *(const uint4 *)(v_new + sub * 8) : zero, p, slot == 0);
    }
    for (int o = lanes; o < 32; o <<= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), l2 = __shfl_xor_sync(0xffffffffu, l, o);
        const float mn = fmaxf(m, m2), c1 = __expf(m - mn), c2 = __expf(m2 - mn);
        l = l * c1 + l2 * c2;
        #pragma unroll
        for (int e = 0; e < 8; e++) acc[e] = acc[e] * c1 + __shfl_xor_sync(0xffffffffu, acc[e], o) * c2;
        m = mn;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    if (lane < lanes) {
        float *r = merge + (warp * lanes + lane) * 10;
        r[0] = m; r[1] = l;
        #pragma unroll
        for (int e = 0; e < 8; e++) r[2 + e] = acc[e];
    }
    __syncthreads();
    if (warp == 0 && lane < lanes && active) {
        float M = -3.0e38f, total = 0.f, o[8];
        for (int w = 0; w < warps; w++) M = fmaxf(M, merge[(w * lanes + lane) * 10]);
        #pragma unroll
        for (int e = 0; e < 8; e++) o[e] = 0.f;
        for (int w = 0; w < warps; w++) {
            const float *r = merge + (w * lanes + lane) * 10, c = __expf(r[0] - M);
            total += r[1] * c;
            #pragma unroll
            for (int e = 0; e < 8; e++) o[e] += r[2 + e] * c;
        }
        if (splits == 1) {
            const float inv = 1.f / total;
            uint32_t packed[4];
            #pragma unroll
            for (int e = 0; e < 4; e++) packed[e] = (uint32_t)f2h(o[2 * e] * inv) | ((uint32_t)f2h(o[2 * e + 1] * inv) << 16);
            *(uint4 *)(out + (size_t)s * ldo + (size_t)h * D + lane * 8) = make_uint4(packed[0], packed[1], packed[2], packed[3]);
        } else {
            float *part = partials + (((size_t)s * H + h) * gridDim.z + z) * (2 + D);
            if (lane == 0) { part[0] = M; part[1] = total; }
            #pragma unroll
            for (int e = 0; e < 8; e++) part[2 + lane * 8 + e] = o[e];
        }
    }
    if (splits == 1) return;
    // Publish this chunk, then the last block to arrive merges every chunk (in split order).
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last_block = atomicAdd(counters + s * H + h, 1) == splits - 1;
    __syncthreads();
    if (!last_block) return;
    __threadfence();
    const volatile float *parts = partials + ((size_t)s * H + h) * gridDim.z * (2 + D);
    float M = -3.0e38f;
    for (int c = 0; c < splits; c++) M = fmaxf(M, parts[c * (2 + D)]);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float total = 0.f, o = 0.f;
        for (int c = 0; c < splits; c++) {
            const float w = __expf(parts[c * (2 + D)] - M);
            total += parts[c * (2 + D) + 1] * w;
            o += parts[c * (2 + D) + 2 + d] * w;
        }
        out[(size_t)s * ldo + (size_t)h * D + d] = f2h(o / total);
    }
    if (threadIdx.x == 0) counters[s * H + h] = 0;
}

// Prefill attention, flash style: `rows` query rows of sequence s (qkv rows first_row..., at
// positions p0..., q rotated by rope_qkv) against that sequence's keys 0..p0+rows-1 in the
// paged cache, with no score matrix in memory. Grid (ceil(rows / 64), H), block 128, dynamic
// shared memory 3 · 64 · (DP + 8) halves (q, k and v tiles; rows padded by 8 halves so the
// fragment loads hit distinct banks). DP: the head dimension D (a multiple of 8) rounded up
// to 16, the zero-padded width the tensor cores take. Each warp owns 16 query rows; the block
// walks key tiles of 64 aligned to multiples of 64 from key 0 (the float16 emulations,
// CPUArithmetic.cudaFloat16 and scripts/fixtures/fp16_logit_error.py, follow the same tiles):
// S = q·kᵀ (mma m16n8k16, float32 sums), scaled and ALiBi-biased, masked (causal, sliding
// window); an online softmax keeps each row's running max m; P = exp(S − m) rounded to float16
// (the mma's A operand), l = l·exp(m_old − m) + ΣP, O = O·exp(m_old − m) + P·V (V fragments by
// ldmatrix.trans); the row's O / l is written as float16.
#define PREFILL_ROWS 64
#define NEG_INF __int_as_float(0xff800000)
#define PREFILL_KEYS 64
__device__ __forceinline__ uint32_t shared_address(const void *p) {
    uint32_t a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
__device__ __forceinline__ void mma_f16_16816(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_halves(float lo, float hi) { return (uint32_t)f2h(lo) | ((uint32_t)f2h(hi) << 16); }

// Rows [row0, row0 + 64) of a [.][ld] float16 source into a shared tile of stride DP + 8, 16
// bytes a thread at a time; rows at or past `valid_rows` and columns at or past D are zero.
template <int DP, typename RowAddress>
__device__ __forceinline__ void load_tile(half_t *tile, int valid_rows, int D, RowAddress row_address) {
    constexpr int CHUNKS = DP / 8;
    for (int i = threadIdx.x; i < PREFILL_ROWS * CHUNKS; i += blockDim.x) {
        const int r = i / CHUNKS, d = (i % CHUNKS) * 8;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (r < valid_rows && d < D) v = *(const uint4 *)(row_address(r) + d);
        *(uint4 *)(tile + r * (DP + 8) + d) = v;
    }
}

template <int DP>
__device__ __forceinline__ void attention_prefill_tiles(const half_t *__restrict__ qkv, int ld, int first_row, int rows, int p0, int s,
                                                        int H, int KV, int D, const half_t *__restrict__ k_cache,
                                                        const half_t *__restrict__ v_cache, const int32_t *__restrict__ tables,
                                                        int max_blocks, int block_shift, float scale, int window,
                                                        half_t *__restrict__ out, int ldo, const float *__restrict__ alibi_slopes,
                                                        int alibi_bf16, float alibi_scale) {
    constexpr int STRIDE = DP + 8, NT = PREFILL_KEYS / 8, DT = DP / 8;
    extern __shared__ __align__(16) half_t tiles[];
    half_t *Qs = tiles, *Ks = Qs + PREFILL_ROWS * STRIDE, *Vs = Ks + PREFILL_KEYS * STRIDE;
    const int r0 = blockIdx.x * PREFILL_ROWS, h = blockIdx.y, kvh = h / (H / KV);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int row_a = r0 + warp * 16 + g, row_b = row_a + 8;          // this thread's two query rows
    const int pos_a = p0 + row_a, pos_b = p0 + row_b;
    const int last_key = min(p0 + rows, p0 + r0 + PREFILL_ROWS) - 1;   // the last key a row of the block sees
    const int first_key = window > 0 ? max(0, p0 + r0 - window + 1) : 0;
    const float slope = alibi_slopes ? alibi_slopes[h] : 0.f;
    load_tile<DP>(Qs, rows - r0, D, [&](int r) { return qkv + (size_t)(first_row + r0 + r) * ld + (size_t)h * D; });

    float o[DT][4], m_a = NEG_INF, m_b = NEG_INF, l_a = 0.f, l_b = 0.f;
    #pragma unroll
    for (int i = 0; i < DT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    const half_t *q_a = Qs + (warp * 16 + g) * STRIDE + 2 * t, *q_b = q_a + 8 * STRIDE;
    for (int k0 = first_key / PREFILL_KEYS * PREFILL_KEYS; k0 <= last_key; k0 += PREFILL_KEYS) {
        __syncthreads();  // the previous tiles are consumed (and the q tile is in)
        auto key_row = [&](int r) { return kv_row(tables, max_blocks, block_shift, s, KV, kvh, k0 + r, D); };
        load_tile<DP>(Ks, last_key - k0 + 1, D, [&](int r) { return k_cache + key_row(r); });
        load_tile<DP>(Vs, last_key - k0 + 1, D, [&](int r) { return v_cache + key_row(r); });
        __syncthreads();
        float sc[NT][4];
        #pragma unroll
        for (int n = 0; n < NT; n++) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
        #pragma unroll
        for (int kk = 0; kk < DP / 16; kk++) {
            const uint32_t a0 = *(const uint32_t *)(q_a + kk * 16), a1 = *(const uint32_t *)(q_b + kk * 16);
            const uint32_t a2 = *(const uint32_t *)(q_a + kk * 16 + 8), a3 = *(const uint32_t *)(q_b + kk * 16 + 8);
            #pragma unroll
            for (int n = 0; n < NT; n++) {
                const half_t *k = Ks + (n * 8 + g) * STRIDE + kk * 16 + 2 * t;
                mma_f16_16816(sc[n], a0, a1, a2, a3, *(const uint32_t *)k, *(const uint32_t *)(k + 8));
            }
        }
        // Scale, bias and mask; each row's tile max over the quad that holds it.
        float tile_a = NEG_INF, tile_b = NEG_INF;
        #pragma unroll
        for (int n = 0; n < NT; n++) {
            #pragma unroll
            for (int c = 0; c < 4; c++) {
                const int key = k0 + n * 8 + 2 * t + (c & 1), pos = c < 2 ? pos_a : pos_b;
                const bool visible = key <= pos && (window <= 0 || key > pos - window) && (c < 2 ? row_a : row_b) < rows;
                const float v = sc[n][c] * scale + (alibi_slopes ? alibi_bias(slope, key, alibi_bf16, alibi_scale) : 0.f);
                sc[n][c] = visible ? v : NEG_INF;
            }
            tile_a = fmaxf(tile_a, fmaxf(sc[n][0], sc[n][1]));
            tile_b = fmaxf(tile_b, fmaxf(sc[n][2], sc[n][3]));
        }
        #pragma unroll
        for (int o2 = 1; o2 <= 2; o2 <<= 1) {
            tile_a = fmaxf(tile_a, __shfl_xor_sync(0xffffffffu, tile_a, o2));
            tile_b = fmaxf(tile_b, __shfl_xor_sync(0xffffffffu, tile_b, o2));
        }
        const float new_a = fmaxf(m_a, tile_a), new_b = fmaxf(m_b, tile_b);
        // A row with no visible key yet keeps m = -inf, P = 0 and O = 0.
        const float base_a = new_a == NEG_INF ? 0.f : new_a, base_b = new_b == NEG_INF ? 0.f : new_b;
        const float alpha_a = __expf(m_a - base_a), alpha_b = __expf(m_b - base_b);
        m_a = new_a;
        m_b = new_b;
        l_a *= alpha_a;
        l_b *= alpha_b;
        #pragma unroll
        for (int i = 0; i < DT; i++) { o[i][0] *= alpha_a; o[i][1] *= alpha_a; o[i][2] *= alpha_b; o[i][3] *= alpha_b; }
        uint32_t pa[NT], pb[NT];   // P in float16, rows a and b, keys 2t and 2t + 1 of each 8
        #pragma unroll
        for (int n = 0; n < NT; n++) {
            const half_t e0 = f2h(__expf(sc[n][0] - base_a)), e1 = f2h(__expf(sc[n][1] - base_a));
            const half_t e2 = f2h(__expf(sc[n][2] - base_b)), e3 = f2h(__expf(sc[n][3] - base_b));
            l_a += h2f(e0) + h2f(e1);
            l_b += h2f(e2) + h2f(e3);
            pa[n] = (uint32_t)e0 | ((uint32_t)e1 << 16);
            pb[n] = (uint32_t)e2 | ((uint32_t)e3 << 16);
        }
        #pragma unroll
        for (int j = 0; j < PREFILL_KEYS / 16; j++) {
            // ldmatrix.x4.trans: lanes 0-7 and 8-15 address keys 16j..16j+7 and 16j+8..16j+15 of
            // dimensions 8i..8i+7, lanes 16-31 the same keys of dimensions 8i+8..8i+15.
            const int key = 16 * j + (lane & 7) + ((lane >> 3) & 1) * 8, column = ((lane >> 4) & 1) * 8;
            #pragma unroll
            for (int i = 0; i < DT; i += 2) {
                uint32_t b0, b1, b2, b3;
                asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                             : "=r"(b0), "=r"(b1), "=r"(b2), "=r"(b3) : "r"(shared_address(Vs + key * STRIDE + i * 8 + column)));
                mma_f16_16816(o[i], pa[2 * j], pb[2 * j], pa[2 * j + 1], pb[2 * j + 1], b0, b1);
                mma_f16_16816(o[i + 1], pa[2 * j], pb[2 * j], pa[2 * j + 1], pb[2 * j + 1], b2, b3);  // DT is even
            }
        }
    }
    #pragma unroll
    for (int o2 = 1; o2 <= 2; o2 <<= 1) {
        l_a += __shfl_xor_sync(0xffffffffu, l_a, o2);
        l_b += __shfl_xor_sync(0xffffffffu, l_b, o2);
    }
    #pragma unroll
    for (int i = 0; i < DT; i++) {
        const int d = i * 8 + 2 * t;
        if (d >= D) continue;
        if (row_a < rows) *(uint32_t *)(out + (size_t)(first_row + row_a) * ldo + (size_t)h * D + d) = pack_halves(o[i][0] / l_a, o[i][1] / l_a);
        if (row_b < rows) *(uint32_t *)(out + (size_t)(first_row + row_b) * ldo + (size_t)h * D + d) = pack_halves(o[i][2] / l_b, o[i][3] / l_b);
    }
}

#define ATTENTION_PREFILL(DP)                                                                                                   \
extern "C" __global__ void __launch_bounds__(128) attention_prefill_d##DP(                                                      \
    const half_t *__restrict__ qkv, int ld, int first_row, int rows, int p0, int s, int H, int KV, int D,                       \
    const half_t *__restrict__ k_cache, const half_t *__restrict__ v_cache, const int32_t *__restrict__ tables, int max_blocks, \
    int block_shift, float scale, int window, half_t *__restrict__ out, int ldo, const float *__restrict__ alibi_slopes,        \
    int alibi_bf16, float alibi_scale) {                                                                                        \
    attention_prefill_tiles<DP>(qkv, ld, first_row, rows, p0, s, H, KV, D, k_cache, v_cache, tables, max_blocks, block_shift,   \
                                scale, window, out, ldo, alibi_slopes, alibi_bf16, alibi_scale);                                \
}
ATTENTION_PREFILL(16)
ATTENTION_PREFILL(32)
ATTENTION_PREFILL(48)
ATTENTION_PREFILL(64)
ATTENTION_PREFILL(80)
ATTENTION_PREFILL(96)
ATTENTION_PREFILL(128)
ATTENTION_PREFILL(256)

// The MLP's activation, as the CPU's ck_activate: 0 silu, 1 gelu (erf), 2 gelu (tanh), 3 relu.
__device__ __forceinline__ float activate(int kind, float g) {
    switch (kind) {
    case 0: return g / (1.f + __expf(-g));
    case 1: return 0.5f * g * (1.f + erff(g * 0.70710678118654752f));
    case 2: return 0.5f * g * (1.f + tanhf(0.79788456080286536f * (g + 0.044715f * g * g * g)));
    default: return g > 0.f ? g : 0.f;
    }
}

// out[r, i] = act(gate[r, i]) · up[r, i] with gate and up side by side in one row of gu
// (`gated`), else act(gu[r, i]).
extern "C" __global__ void mlp_activation(const half_t *__restrict__ gu, int ld, int I, int gated, int kind, half_t *__restrict__ out) {
    wait_for_prior_grids();
    allow_dependent_grids();
    const int r = blockIdx.y;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < I; i += gridDim.x * blockDim.x) {
        const float g = activate(kind, h2f(gu[(size_t)r * ld + i]));
        out[(size_t)r * I + i] = f2h(gated ? g * h2f(gu[(size_t)r * ld + I + i]) : g);
    }
}

// tokens[r] = argmax(logits[r, :]) (the lowest index among equal maxima). Block 1024.
extern "C" __global__ void argmax_rows(const float *__restrict__ logits, int V, int32_t *__restrict__ tokens) {
    __shared__ float best_v[32];
    __shared__ int best_i[32];
    const int r = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float bv = -3.0e38f; int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const float v = logits[(size_t)r * V + i];
        if (v > bv) { bv = v; bi = i; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
    }
    if (lane == 0) { best_v[warp] = bv; best_i[warp] = bi; }
    __syncthreads();
    if (warp == 0) {
        bv = lane < (int)(blockDim.x >> 5) ? best_v[lane] : -3.0e38f;
        bi = lane < (int)(blockDim.x >> 5) ? best_i[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
        }
        if (lane == 0) tokens[r] = bi;
    }
}

// Every sequence's position moves on by one after a decode step. Block >= n threads.
// Scoring: row r's target token t = targets[r] under logits[r, :]: scores[r] = {log-softmax of t
// (float32: max, then the sum of exp(x − max) over the block), 1 when t is the argmax (no
// logit above it, none equal at a lower id) else 0}. Block 1024.
extern "C" __global__ void score_targets(const float *__restrict__ logits, int V, const int32_t *__restrict__ targets,
                                         float2 *__restrict__ scores) {
    __shared__ float scratch[32];
    __shared__ int beaten;
    const int r = blockIdx.x, t = targets[r];
    const float *row = logits + (size_t)r * V, target = row[t];
    if (threadIdx.x == 0) beaten = 0;
    float m = -3.0e38f;
    int above = 0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const float v = row[i];
        m = fmaxf(m, v);
        above |= v > target || (v == target && i < t);
    }
    m = block_max(m, scratch);
    if (above) beaten = 1;
    float sum = 0.f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) sum += __expf(row[i] - m);
    sum = block_sum(sum, scratch);  // its barriers also publish `beaten`
    if (threadIdx.x == 0) scores[r] = make_float2(target - (m + __logf(sum)), beaten ? 0.f : 1.f);
}

extern "C" __global__ void advance_positions(int32_t *pos, int n) { for (int i = threadIdx.x; i < n; i += blockDim.x) pos[i] += 1; }

// x[r, :] = float32(h[r, :]) (a layer's float16 input, for layer-by-layer forwards)
extern "C" __global__ void half_to_float(const half_t *__restrict__ h, float *__restrict__ x, int H) {
    const int r = blockIdx.x;
    for (int i = threadIdx.x; i < H; i += blockDim.x) x[(size_t)r * H + i] = h2f(h[(size_t)r * H + i]);
}

"""#)
}
