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

// Prefill: per row r (a token of sequence seqs[r] at position pos[r]) and head: optional
// per-head RMSNorm of q and k (Qwen3), rotary positions over the first `rot` dimensions
// (rotary_pair) with angles position · inv_freq[i] in float32 (rot 0: none), q rotated in
// place in the qkv row, k (rotated) and v written to the caches [seq][kv head][cap][D].
// Grid (rows, H + KV), block 64.
extern "C" __global__ void rope_qkv(half_t *__restrict__ qkv, int ld, const float *__restrict__ inv_freq, int rot, int interleaved,
                                    const int32_t *__restrict__ pos, const int32_t *__restrict__ seqs, int H, int KV, int D, half_t *__restrict__ k_cache,
                                    half_t *__restrict__ v_cache, int cap, const float *__restrict__ q_norm,
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
    half_t *dst = is_q ? x : k_cache + (((size_t)seq * KV + (head - H)) * cap + position) * D;
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
        half_t *vdst = v_cache + (((size_t)seq * KV + (head - H)) * cap + position) * D;
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
                                            half_t *__restrict__ v_cache, int cap, const float *__restrict__ q_norm,
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
    const size_t head_base = ((size_t)s * KV + kvh) * cap * D;
    if (h % group == 0 && z == 0)
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            k_cache[head_base + (size_t)p * D + i] = k_new[i];
            v_cache[head_base + (size_t)p * D + i] = v_new[i];
        }

    const int slot = threadIdx.x / lanes, sub = threadIdx.x % lanes;
    const bool active = sub * 8 < D;
    float qr[8], acc[8], m = -3.0e38f, l = 0.f;
    #pragma unroll
    for (int e = 0; e < 8; e++) { qr[e] = active ? q[sub * 8 + e] : 0.f; acc[e] = 0.f; }
    const uint4 *K = (const uint4 *)(k_cache + head_base + sub * 8), *V = (const uint4 *)(v_cache + head_base + sub * 8);
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
            if (j < cached_hi && active) { kw[u] = __ldg(K + (size_t)j * (D / 8)); vw[u] = __ldg(V + (size_t)j * (D / 8)); }
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

// Prefill: softmax over keys of the scores S[h][t][L] (float32, from cuBLAS) with the
// causal mask (key j visible to query t when j <= p0 + t, and within `window`), scaled, plus
// ALiBi's bias when slopes are given; P (float16, same layout) for the P·V product. Grid (T, H),
// block 256.
extern "C" __global__ void softmax_causal(const float *__restrict__ S, half_t *__restrict__ P, int T, int L, int p0,
                                          float scale, int window, const float *__restrict__ alibi_slopes, int alibi_bf16,
                                          float alibi_scale) {
    __shared__ float scratch[32];
    const int t = blockIdx.x, h = blockIdx.y;
    const float *row = S + ((size_t)h * T + t) * L;
    half_t *prow = P + ((size_t)h * T + t) * L;
    const int last = p0 + t, first = window > 0 ? max(0, last - window + 1) : 0;
    const float slope = alibi_slopes ? alibi_slopes[h] : 0.f;
    auto score = [&](int j) { return row[j] * scale + (alibi_slopes ? alibi_bias(slope, j, alibi_bf16, alibi_scale) : 0.f); };
    float m = -3.0e38f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) if (j >= first && j <= last) m = fmaxf(m, score(j));
    m = block_max(m, scratch);
    float sum = 0.f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) if (j >= first && j <= last) sum += __expf(score(j) - m);
    const float inv = 1.f / block_sum(sum, scratch);
    for (int j = threadIdx.x; j < L; j += blockDim.x)
        prow[j] = f2h(j >= first && j <= last ? __expf(score(j) - m) * inv : 0.f);
}

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
extern "C" __global__ void advance_positions(int32_t *pos, int n) { if ((int)threadIdx.x < n) pos[threadIdx.x] += 1; }

// x[r, :] = float32(h[r, :]) (a layer's float16 input, for layer-by-layer forwards)
extern "C" __global__ void half_to_float(const half_t *__restrict__ h, float *__restrict__ x, int H) {
    const int r = blockIdx.x;
    for (int i = threadIdx.x; i < H; i += blockDim.x) x[(size_t)r * H + i] = h2f(h[(size_t)r * H + i]);
}

"""#)
}
