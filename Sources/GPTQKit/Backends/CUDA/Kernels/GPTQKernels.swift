/// The kernels of GPTQ on the GPU (CUDAGPTQ): input checks, the act-order permutation,
/// the damped, reversed float64 Hessian and the diagonal blocks of its Cholesky
/// factorisation, the upper factor of the inverse, the quantization parameters of a
/// group, and the sequential quantization of one block of columns.
///
/// Matrices handed to cuBLAS are column-major; weights are row-major [rows, columns]
/// (the Hugging Face layout), the inverse factor U row-major [n, n]. The arithmetic of
/// the quantizer is AutoGPTQ's in float32 (IEEE division, rintf: round half to even),
/// as Quantizer does it on the CPU.
enum GPTQKernels {
    /// Columns of one block of gptq_quantize_block (four per lane of a warp).
    static let maxBlockSize = 128
    /// Rows (one per warp) of one thread block of gptq_quantize_block.
    static let rowsPerBlock = 16
    /// Order of the diagonal blocks of the blocked Cholesky factorisation.
    static let choleskyBlock = 128

    package static let source = KernelSource(name: "gptq", code: KernelPrelude.source + #"""
// flag[0] = 1 when any of the `count` values is NaN or infinite.
extern "C" __global__ void gptq_nonfinite(const float *p, long long count, int *flag) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x)
        if (!isfinite(p[i])) { *flag = 1; return; }
}

extern "C" __global__ void gptq_diagonal(const float *h, int n, float *diag) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) diag[i] = h[(long long)i * n + i];
}

// dst[r, j] = src[r, perm[j]], or 0 where that column is dead (its Hessian diagonal is 0).
// Grid (ceil(columns / 256), rows).
extern "C" __global__ void gptq_permute_columns(const float *src, float *dst, int columns, const int *perm, const int *dead) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= columns) return;
    long long row = (long long)blockIdx.y * columns;
    int c = perm[j];
    dst[row + j] = dead[c] ? 0.f : src[row + c];
}

// a = J·(P·H·Pᵀ + damp·I)·J in float64, J the reversal: a[i, j] = H[perm[n−1−i], perm[n−1−j]]
// (+ damp on the diagonal), H read from its row-major upper triangle, a zero diagonal
// (a dead column) read as 1. Symmetric, so its layout is both row- and column-major.
// Grid (ceil(n / 256), n).
extern "C" __global__ void gptq_damped_reversed(const float *h, int n, const int *perm, double damp, double *a) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y;
    if (j >= n) return;
    int x = perm[n - 1 - i], y = perm[n - 1 - j];
    int lo = min(x, y), hi = max(x, y);
    double v = (double)h[(long long)lo * n + hi];
    if (i == j) v = (v == 0.0 ? 1.0 : v) + damp;
    a[(long long)i * n + j] = v;
}

// Cholesky factorisation of the diagonal block a[k:k+b, k:k+b] (column-major, ld n) in
// shared memory, lower triangle written back. A pivot that is not positive (or NaN)
// records its column (1-based) in *info; the factorisation fails.
// One thread block; dynamic shared memory b·b doubles.
extern "C" __global__ void gptq_cholesky_diagonal(double *a, int n, int k, int b, int *info) {
    extern __shared__ double s[];
    for (int idx = threadIdx.x; idx < b * b; idx += blockDim.x)
        s[idx] = a[(long long)(k + idx / b) * n + k + idx % b];
    __syncthreads();
    for (int j = 0; j < b; j++) {
        if (threadIdx.x == 0) {
            double d = s[j * b + j];
            if (!(d > 0.0)) atomicCAS(info, 0, k + j + 1);
            s[j * b + j] = sqrt(d);
        }
        __syncthreads();
        double pivot = s[j * b + j];
        for (int r = j + 1 + threadIdx.x; r < b; r += blockDim.x) s[j * b + r] /= pivot;
        __syncthreads();
        int m = b - j - 1;
        for (int idx = threadIdx.x; idx < m * m; idx += blockDim.x) {
            int r = j + 1 + idx % m, c = j + 1 + idx / m;
            if (r >= c) s[c * b + r] -= s[j * b + r] * s[j * b + c];
        }
        __syncthreads();
    }
    for (int idx = threadIdx.x; idx < b * b; idx += blockDim.x) {
        int r = idx % b, c = idx / b;
        if (r >= c) a[(long long)(k + c) * n + k + r] = s[idx];
    }
}

extern "C" __global__ void gptq_identity(double *a, int n) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < n) a[(long long)blockIdx.y * n + j] = (j == (int)blockIdx.y) ? 1.0 : 0.0;
}

// u[i, j] = linv[n−1−i, n−1−j] for j ≥ i, else 0: the upper factor of the inverse of the
// unreversed matrix, as float32 row-major. linv is column-major (element (r, c) at c·n + r).
// 32×32 tiles through shared memory so that reads and writes are both coalesced.
// Grid (ceil(n / 32), ceil(n / 32)), block (32, 8).
extern "C" __global__ void gptq_inverse_factor(const double *linv, int n, float *u) {
    __shared__ double tile[32][33];
    int i0 = blockIdx.y * 32, j0 = blockIdx.x * 32;
    for (int dy = threadIdx.y; dy < 32; dy += 8) {
        int i = i0 + threadIdx.x, j = j0 + dy;
        if (i < n && j < n) tile[dy][threadIdx.x] = linv[(long long)(n - 1 - j) * n + (n - 1 - i)];
    }
    __syncthreads();
    for (int dy = threadIdx.y; dy < 32; dy += 8) {
        int i = i0 + dy, j = j0 + threadIdx.x;
        if (i < n && j < n) u[(long long)i * n + j] = j >= i ? (float)tile[threadIdx.x][dy] : 0.f;
    }
}

// AutoGPTQ's find_params per row for `groups` consecutive groups of columns: group g covers
// columns [start + g·size, min(start + (g+1)·size, end)) of w (row-major, ld columns), and
// its scale and zero go to scales/zeros[r · groupCount + offset + g].
// One warp per row; grid (ceil(rows / 8), groups), block 256.
extern "C" __global__ void gptq_group_params(const float *w, int rows, int columns, int start, int end, int size, int offset,
                                             int groupCount, float maxq, int sym, float *scales, float *zeros) {
    int r = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= rows) return;
    int c0 = start + blockIdx.y * size, c1 = min(c0 + size, end);
    const float *row = w + (long long)r * columns;
    float xmin = 0.f, xmax = 0.f;
    for (int c = c0 + lane; c < c1; c += 32) { xmin = fminf(xmin, row[c]); xmax = fmaxf(xmax, row[c]); }
    xmin = -warp_max(-xmin);
    xmax = warp_max(xmax);
    if (lane != 0) return;
    if (sym) {
        xmax = fmaxf(fabsf(xmin), xmax);
        // Only a row with a negative value becomes symmetric (AutoGPTQ keeps xmin = 0 otherwise).
        if (xmin < 0.f) xmin = -xmax;
    }
    if (xmin == 0.f && xmax == 0.f) { xmin = -1.f; xmax = 1.f; }
    float scale = (xmax - xmin) / maxq;
    long long at = (long long)r * groupCount + offset + blockIdx.y;
    scales[at] = scale;
    zeros[at] = sym ? (maxq + 1.f) / 2.f : rintf(-xmin / scale);
}

// Quantizes columns [i1, i1 + count) (count ≤ 128) of the working weight w (row-major, ld
// columns, in quantization order) one after another, each column's error spread over the
// block's later columns through U's rows: fasterquant's inner loop. Rows are independent:
// one warp per row, lane l holding columns l, l+32, l+64, l+96 of the block. Writes the
// quantized values to q in the original column order (q[r, perm[j]]), the scaled errors
// to err[r, 0..<count] (ld 128) for the lazy update of the later columns, and adds
// Σ err²/2 to *loss. The group of column j: 0 (mode 0: one group per row), j / size
// (mode 1: groups in quantization order), perm[j] / size (mode 2: static groups).
// Grid ceil(rows / 16), block 512, dynamic shared memory 128·128·4 + 128·4 bytes.
extern "C" __global__ void gptq_quantize_block(const float *w, int rows, int columns, int i1, int count, const float *u,
                                               const float *scales, const float *zeros, int groupCount, int mode, int size,
                                               const int *perm, float maxq, float *q, float *err, double *loss) {
    extern __shared__ float shared[];
    float *block = shared;                 // U[i1 + a, i1 + b] at a·128 + b
    int *group = (int *)(shared + 128 * 128);
    for (int idx = threadIdx.x; idx < count * count; idx += blockDim.x) {
        int a = idx / count, b = idx % count;
        block[a * 128 + b] = u[(long long)(i1 + a) * columns + i1 + b];
    }
    for (int i = threadIdx.x; i < count; i += blockDim.x) {
        int j = i1 + i;
        group[i] = mode == 0 ? 0 : mode == 1 ? j / size : perm[j] / size;
    }
    __syncthreads();
    int r = blockIdx.x * 16 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= rows) return;
    const float *row = w + (long long)r * columns + i1;
    float x[4], qs[4], es[4];
    #pragma unroll
    for (int s = 0; s < 4; s++) { int c = s * 32 + lane; x[s] = c < count ? row[c] : 0.f; qs[s] = 0.f; es[s] = 0.f; }
    const float *rowScales = scales + (long long)r * groupCount, *rowZeros = zeros + (long long)r * groupCount;
    double lossSum = 0.0;
    #pragma unroll
    for (int s = 0; s < 4; s++) {
        for (int t = 0; t < 32; t++) {
            int i = s * 32 + t;
            if (i >= count) break;
            float v = __shfl_sync(0xffffffffu, x[s], t);
            float scale = rowScales[group[i]], zero = rowZeros[group[i]];
            float level = fminf(fmaxf(rintf(v / scale) + zero, 0.f), maxq);
            float quantized = scale * (level - zero);
            float e = (v - quantized) / block[i * 128 + i];
            if (lane == t) { qs[s] = quantized; es[s] = e; lossSum += (double)e * (double)e / 2.0; }
            #pragma unroll
            for (int s2 = s; s2 < 4; s2++) {
                int c = s2 * 32 + lane;
                if (c > i && c < count) x[s2] -= e * block[i * 128 + c];
            }
        }
    }
    #pragma unroll
    for (int s = 0; s < 4; s++) {
        int c = s * 32 + lane;
        if (c < count) {
            q[(long long)r * columns + perm[i1 + c]] = qs[s];
            err[(long long)r * 128 + c] = es[s];
        }
    }
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) lossSum += __shfl_xor_sync(0xffffffffu, lossSum, o);
    if (lane == 0) atomicAdd(loss, lossSum);
}
"""#)
}
