/// Drawing the next token on the GPU from one row of float32 logits with the CPU Sampler's
/// rules: softmax weights at a temperature, top-k (every token tied with the k-th kept),
/// top-p (the tail of least likely tokens whose weights sum to at most (1 − p) of the kept
/// mass is dropped; tokens tied at its boundary are all kept, where the CPU drops them by
/// id), then the token at `u` of the kept mass. Thresholds come from bisection on the bits of
/// the weights (positive floats order as their bit patterns), so nothing is sorted; the draw
/// walks the kept tokens in id order, which gives the same distribution as the CPU's walk
/// from the most likely.
enum SamplingKernels {
    package static let source = KernelSource(name: "sampling", code: KernelPrelude.source + #"""
// One block of 1024 threads; token[0] receives the draw. The weights live in dynamic shared
// memory when the launch gives V floats of it (the ~60 threshold passes then read on-chip
// memory), else in `global_w`, scratch for V floats.
extern "C" __global__ void sample_row(const float *__restrict__ logits, int V, float temperature, int top_k, float top_p,
                                      float u, float *__restrict__ global_w, int shared_weights, int32_t *__restrict__ token) {
    extern __shared__ float shared_w[];
    float *w = shared_weights ? shared_w : global_w;
    __shared__ float scratch[32];
    __shared__ float chunk_sums[1024];
    const int T = blockDim.x, tid = threadIdx.x;
    float m = -3.0e38f;
    for (int i = tid; i < V; i += T) m = fmaxf(m, logits[i]);
    m = block_max(m, scratch);
    for (int i = tid; i < V; i += T) w[i] = expf((logits[i] - m) / temperature);
    __syncthreads();
    // Top-k: the k-th largest weight is the largest t with at least k weights >= t.
    unsigned kth = 0;
    if (top_k > 0 && top_k < V) {
        unsigned lo = 0, hi = 0x3F800000u;  // the largest weight is exactly 1
        while (lo < hi) {
            const unsigned mid = lo + (hi - lo + 1) / 2;
            float c = 0.f;
            for (int i = tid; i < V; i += T) c += __float_as_uint(w[i]) >= mid ? 1.f : 0.f;
            if (block_sum(c, scratch) >= (float)top_k) lo = mid; else hi = mid - 1;
        }
        kth = lo;
    }
    // Top-p: drop the kept weights below the largest t whose sum stays <= (1 - p) of the mass.
    unsigned lowest = kth;
    if (top_p < 1.f) {
        float mass = 0.f;
        for (int i = tid; i < V; i += T) if (__float_as_uint(w[i]) >= kth) mass += w[i];
        const float limit = (1.f - top_p) * block_sum(mass, scratch);
        unsigned lo = kth, hi = 0x3F800000u;
        while (lo < hi) {
            const unsigned mid = lo + (hi - lo + 1) / 2;
            float s = 0.f;
            for (int i = tid; i < V; i += T) { const unsigned b = __float_as_uint(w[i]); if (b >= kth && b < mid) s += w[i]; }
            if (block_sum(s, scratch) <= limit) lo = mid; else hi = mid - 1;
        }
        lowest = lo;
    }
    // The draw: contiguous chunks, one a thread; thread 0 finds the chunk where u of the mass
    // falls and walks it.
    const int per = (V + T - 1) / T, begin = tid * per, end = min(V, begin + per);
    float local = 0.f, last = -1.f;
    for (int i = begin; i < end; i++) if (__float_as_uint(w[i]) >= lowest) { local += w[i]; last = (float)i; }
    chunk_sums[tid] = local;
    last = block_max(last, scratch);  // its barrier also publishes chunk_sums
    if (tid == 0) {
        float total = 0.f;
        for (int c = 0; c < T; c++) total += chunk_sums[c];
        const float target = u * total;
        float acc = 0.f;
        int chosen = (int)last;  // rounding may leave the target unreached: the last kept token
        for (int c = 0; c < T; c++) {
            if (acc + chunk_sums[c] <= target) { acc += chunk_sums[c]; continue; }
            bool found = false;
            for (int i = c * per; i < min(V, (c + 1) * per); i++) {
                if (__float_as_uint(w[i]) < lowest) continue;
                acc += w[i];
                if (acc > target) { chosen = i; found = true; break; }
            }
            if (found) break;
        }
        token[0] = chosen;
    }
}
"""#)
}
