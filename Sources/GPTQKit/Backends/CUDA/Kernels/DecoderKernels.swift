/// The llama decoder's other kernels: embedding, RMSNorm (with the residual add), RoPE
/// with the KV-cache write, attention, SwiGLU, argmax. The residual stream is float32,
/// activations entering a linear are float16. Kernels that depend on the position read
/// it from device memory, so one captured graph serves every decode step. The kernels a
/// linear follows (RMSNorm, decode attention, SwiGLU) call allow_dependent_grids first: the
/// 4-bit tiled kernel behind them, launched to overlap, then starts and sets up its blocks
/// while they run (it waits for them to finish before reading their output).
enum DecoderKernels {
    static let source = KernelSource(name: "decoder", code: KernelPrelude.source + #"""
// x[r, :] = table[tokens[r], :] (float16 table, float32 rows)
extern "C" __global__ void embed(const int32_t *__restrict__ tokens, const half_t *__restrict__ table, float *__restrict__ x, int H) {
    const int r = blockIdx.x;
    const half_t *row = table + (size_t)tokens[r] * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x) x[(size_t)r * H + i] = h2f(row[i]);
}

// out[r, :] = float16(x[r, :] / rms(x[r, :]) * w), after x[r, :] += y[r, :] when y is given.
extern "C" __global__ void add_rmsnorm(float *__restrict__ x, const half_t *__restrict__ y, int ldy, const float *__restrict__ w,
                                       half_t *__restrict__ out, int H, float eps) {
    allow_dependent_grids();
    __shared__ float scratch[32];
    const int r = blockIdx.x;
    float *xr = x + (size_t)r * H;
    float ss = 0.f;
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        float v = xr[i];
        if (y) { v += h2f(y[(size_t)r * ldy + i]); xr[i] = v; }
        ss += v * v;
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / H + eps);
    for (int i = threadIdx.x; i < H; i += blockDim.x) out[(size_t)r * H + i] = f2h(xr[i] * inv * w[i]);
}

// Per row r (a token of sequence `seq` at position pos[seq] + r, or with decode_rows
// sequence r at position pos[r]) and head: optional per-head RMSNorm of q and k (Qwen3), RoPE as
// transformers' rotate_half with angles position · inv_freq[i] in float32, q rotated in
// place in the qkv row, k (rotated) and v written to the caches [seq][kv head][cap][D].
// Grid (rows, H + KV), block 64.
extern "C" __global__ void rope_qkv(half_t *__restrict__ qkv, int ld, const float *__restrict__ inv_freq, const int32_t *__restrict__ pos,
                                    int decode_rows, int seq, int H, int KV, int D, half_t *__restrict__ k_cache,
                                    half_t *__restrict__ v_cache, int cap, const float *__restrict__ q_norm,
                                    const float *__restrict__ k_norm, float eps) {
    __shared__ float scratch[32];
    const int r = blockIdx.x, head = blockIdx.y, half = D / 2;
    const int position = decode_rows ? pos[r] : pos[seq] + r;
    const int s = decode_rows ? r : seq;
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
    half_t *dst = is_q ? x : k_cache + (((size_t)s * KV + (head - H)) * cap + position) * D;
    // Each thread reads and writes its own pair (i, i + D/2), so q can be rotated in place.
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float a = h2f(x[i]), b = h2f(x[i + half]);
        if (norm) { a *= inv * norm[i]; b *= inv * norm[i + half]; }
        float sn, cs;
        sincosf((float)position * inv_freq[i], &sn, &cs);
        const float ra = a * cs - b * sn, rb = b * cs + a * sn;
        dst[i] = f2h(ra);
        dst[i + half] = f2h(rb);
    }
    if (!is_q) {
        half_t *vdst = v_cache + (((size_t)s * KV + (head - H)) * cap + position) * D;
        for (int i = threadIdx.x; i < D; i += blockDim.x) vdst[i] = v[i];
    }
}

// One query per sequence s (decode): grid (H, sequences), block 256 (8 warps), dynamic
// shared memory (D + cap + 8·D) floats. Keys 0..pos[s] (those within `window` of it when
// window > 0). Warp w scores keys w, w + 8, ... (lanes across the head dimension), then
// accumulates the same keys' values with lane l owning dimensions l, l + 32, ... (D <= 256),
// and the warps' partial outputs are summed: no thread walks every key alone.
extern "C" __global__ void attention_decode(const half_t *__restrict__ qkv, int ld, const half_t *__restrict__ k_cache,
                                            const half_t *__restrict__ v_cache, half_t *__restrict__ out, int ldo,
                                            const int32_t *__restrict__ pos, int H, int KV, int D, int cap, float scale, int window) {
    allow_dependent_grids();
    extern __shared__ float smem[];
    __shared__ float scratch[32];
    const int h = blockIdx.x, s = blockIdx.y, kvh = h / (H / KV);
    const int L = pos[s] + 1, start = window > 0 ? max(0, L - window) : 0;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    float *q = smem, *scores = smem + D, *partial = smem + D + cap;
    for (int i = threadIdx.x; i < D; i += blockDim.x) q[i] = h2f(qkv[(size_t)s * ld + (size_t)h * D + i]) * scale;
    __syncthreads();
    const half_t *K = k_cache + ((size_t)s * KV + kvh) * cap * D;
    const half_t *V = v_cache + ((size_t)s * KV + kvh) * cap * D;
    float local_max = -3.0e38f;
    for (int j = start + warp; j < L; j += warps) {
        float dot = 0.f;
        for (int d = lane; d < D; d += 32) dot += q[d] * h2f(K[(size_t)j * D + d]);
        dot = warp_sum(dot);
        if (lane == 0) scores[j - start] = dot;
        local_max = fmaxf(local_max, dot);
    }
    const float m = block_max(local_max, scratch);
    float local_sum = 0.f;
    for (int j = start + threadIdx.x; j < L; j += blockDim.x) {
        const float e = __expf(scores[j - start] - m);
        scores[j - start] = e;
        local_sum += e;
    }
    const float inv = 1.f / block_sum(local_sum, scratch);
    float acc[8];
    #pragma unroll
    for (int c = 0; c < 8; c++) acc[c] = 0.f;
    for (int j = start + warp; j < L; j += warps) {
        const float p = scores[j - start];
        const half_t *row = V + (size_t)j * D;
        #pragma unroll
        for (int c = 0; c < 8; c++) if (lane + 32 * c < D) acc[c] += p * h2f(row[lane + 32 * c]);
    }
    #pragma unroll
    for (int c = 0; c < 8; c++) if (lane + 32 * c < D) partial[warp * D + lane + 32 * c] = acc[c];
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float t = 0.f;
        for (int w = 0; w < warps; w++) t += partial[w * D + d];
        out[(size_t)s * ldo + (size_t)h * D + d] = f2h(t * inv);
    }
}

// Prefill: softmax over keys of the scores S[h][t][L] (float32, from cuBLAS) with the
// causal mask (key j visible to query t when j <= p0 + t, and within `window`), scaled;
// P (float16, same layout) for the P·V product. Grid (T, H), block 256.
extern "C" __global__ void softmax_causal(const float *__restrict__ S, half_t *__restrict__ P, int T, int L, int p0,
                                          float scale, int window) {
    __shared__ float scratch[32];
    const int t = blockIdx.x, h = blockIdx.y;
    const float *row = S + ((size_t)h * T + t) * L;
    half_t *prow = P + ((size_t)h * T + t) * L;
    const int last = p0 + t, first = window > 0 ? max(0, last - window + 1) : 0;
    float m = -3.0e38f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) if (j >= first && j <= last) m = fmaxf(m, row[j] * scale);
    m = block_max(m, scratch);
    float sum = 0.f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) if (j >= first && j <= last) sum += __expf(row[j] * scale - m);
    const float inv = 1.f / block_sum(sum, scratch);
    for (int j = threadIdx.x; j < L; j += blockDim.x)
        prow[j] = f2h(j >= first && j <= last ? __expf(row[j] * scale - m) * inv : 0.f);
}

// out[r, i] = silu(gate[r, i]) · up[r, i], with gate and up side by side in one row of gu.
extern "C" __global__ void silu_mul(const half_t *__restrict__ gu, int ld, int I, half_t *__restrict__ out) {
    allow_dependent_grids();
    const int r = blockIdx.y;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < I; i += gridDim.x * blockDim.x) {
        const float g = h2f(gu[(size_t)r * ld + i]), u = h2f(gu[(size_t)r * ld + I + i]);
        out[(size_t)r * I + i] = f2h(g / (1.f + __expf(-g)) * u);
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

// out[r, :] = float16(x[r, :] + y[r, :]): a layer's output, its last residual add included.
extern "C" __global__ void residual_to_half(const float *__restrict__ x, const half_t *__restrict__ y, half_t *__restrict__ out, int H) {
    const int r = blockIdx.x;
    for (int i = threadIdx.x; i < H; i += blockDim.x) out[(size_t)r * H + i] = f2h(x[(size_t)r * H + i] + h2f(y[(size_t)r * H + i]));
}
"""#)
}
