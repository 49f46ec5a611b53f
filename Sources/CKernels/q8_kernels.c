// Decode kernels with int8 activations: x is quantized per block of 32 channels
// (x ≈ d · xi, d = max|x| / 127, xi in [−127, 127], llama.cpp's Q8_0) and the products are
// integer dot products, converted to float once per block. For GPTQ weights the packed
// fields are the unsigned operand as they are stored (tile layout of ck_gptq_weight, 8
// columns a register), so no repacking is needed; for the int8 matrix (an LM head) the
// bytes are a row's weights. The bodies (q8_dot.h) are compiled for AVX2, AVX-VNNI and
// AVX-512 VNNI (256-bit) and chosen at run time; a scalar path reproduces their arithmetic.
#include "ckernels.h"
#include <immintrin.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

// ---- activations ---------------------------------------------------------

// Bytes of each part of a prepared row: int8 values, float block scales, arranged copy
// (bits 8: int16), float group sums.
typedef struct { size_t values, scales, arranged, group_sums; } q8_row_layout;

static int arranged_width(int bits) { return bits == 8 ? 2 : 1; }

static q8_row_layout row_layout(int in_features, int bits, int groups) {
    q8_row_layout l;
    l.values = ((size_t)in_features + 63) / 64 * 64;
    l.scales = ((size_t)in_features / 32 * sizeof(float) + 63) / 64 * 64;
    l.arranged = bits ? ((size_t)in_features * arranged_width(bits) + 63) / 64 * 64 : 0;
    l.group_sums = bits ? ((size_t)groups * sizeof(float) + 63) / 64 * 64 : 0;
    return l;
}

size_t ck_q8_rows_bytes(int rows, int in_features, int bits, int groups) {
    const q8_row_layout l = row_layout(in_features, bits, groups);
    return (size_t)rows * (l.values + l.scales + l.arranged + l.group_sums);
}

// The parts laid out one after the other, each [rows][its row bytes], from a 64-byte aligned workspace.
static ck_q8_rows rows_in(void *workspace, int rows, int in_features, int bits, int groups) {
    const q8_row_layout l = row_layout(in_features, bits, groups);
    char *p = workspace;
    ck_q8_rows x;
    memset(&x, 0, sizeof x);
    x.rows = rows;
    x.in_features = in_features;
    x.values = (int8_t *)p;
    x.values_stride = l.values;
    p += (size_t)rows * l.values;
    x.scales = (float *)p;
    p += (size_t)rows * l.scales;
    x.scales_stride = l.scales / sizeof(float);
    if (bits) {
        x.arranged = (int8_t *)p;
        x.arranged_stride = l.arranged;
        x.arranged_width = arranged_width(bits);
        p += (size_t)rows * l.arranged;
        x.group_sums = (float *)p;
        x.group_sums_stride = l.group_sums / sizeof(float);
    }
    return x;
}

// x from row r0 on.
static inline ck_q8_rows q8_rows_from(const ck_q8_rows *x, int r0) {
    ck_q8_rows shifted = *x;
    shifted.rows = x->rows - r0;
    shifted.values += (size_t)r0 * x->values_stride;
    shifted.scales += (size_t)r0 * x->scales_stride;
    if (x->arranged) {
        shifted.arranged += (size_t)r0 * x->arranged_stride;
        shifted.group_sums += (size_t)r0 * x->group_sums_stride;
    }
    return shifted;
}

static void quantize_rows(const float *x, ck_q8_rows *q) {
    const int in = q->in_features, units = in / 32;
    for (int r = 0; r < q->rows; r++) {
        const float *xr = x + (size_t)r * in;
        int8_t *values = (int8_t *)q->values + (size_t)r * q->values_stride;
        float *scales = (float *)q->scales + (size_t)r * q->scales_stride;
        for (int u = 0; u < units; u++) {
            const __m256 sign = _mm256_set1_ps(-0.0f);
            __m256 v[4], amax = _mm256_setzero_ps();
            for (int k = 0; k < 4; k++) {
                v[k] = _mm256_loadu_ps(xr + u * 32 + 8 * k);
                amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[k]));
            }
            __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
            m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            m = _mm_max_ss(m, _mm_movehdup_ps(m));
            const float max = _mm_cvtss_f32(m), d = max / 127.0f, inverse = max > 0 ? 127.0f / max : 0.0f;
            scales[u] = d;
            // Round to nearest even, as lrintf does: |x · 127 / max| ≤ 127 up to rounding, which the pack saturates.
            __m256i i[4];
            for (int k = 0; k < 4; k++) i[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], _mm256_set1_ps(inverse)));
            const __m256i words = _mm256_packs_epi32(i[0], i[1]), words2 = _mm256_packs_epi32(i[2], i[3]);
            // The packs interleave 128-bit lanes: the permute puts the 32 bytes back in channel order.
            const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(words, words2), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(values + u * 32), _mm256_max_epi8(bytes, _mm256_set1_epi8(-127)));
        }
    }
}

ck_q8_rows ck_q8_quantize(const float *x, int rows, int in_features, void *workspace) {
    ck_q8_rows q = rows_in(workspace, rows, in_features, 0, 0);
    quantize_rows(x, &q);
    return q;
}

int ck_gptq_q8_supported(const ck_gptq_weight *w) {
    if (w->in_features % 32 != 0) return 0;
    for (int g = 0; g <= w->groups; g++)
        if (w->group_start[g] % 32 != 0) return 0;
    return 1;
}

ck_q8_rows ck_gptq_q8_prepare(const ck_gptq_weight *w, const float *x, int rows, void *workspace) {
    const int in = w->in_features, bits = w->bits, units = in / 32;
    ck_q8_rows q = rows_in(workspace, rows, in, bits, w->groups);
    quantize_rows(x, &q);
    for (int r = 0; r < rows; r++) {
        const int8_t *values = q.values + (size_t)r * q.values_stride;
        const float *scales = q.scales + (size_t)r * q.scales_stride;
        int8_t *arranged = (int8_t *)q.arranged + (size_t)r * q.arranged_stride;
        float *sums = (float *)q.group_sums + (size_t)r * q.group_sums_stride;
        // The layouts q8_dot.h's unit_dot reads, unit by unit.
        for (int u = 0; u < units; u++) {
            const int8_t *xv = values + u * 32;
            if (bits == 2 || bits == 4) {
                int8_t *xa = arranged + u * 32;
                const int per_byte = 8 / bits, per_word = 32 / bits;
                for (int i = 0; i < bits; i++)
                    for (int j = 0; j < per_byte; j++)
                        for (int b = 0; b < 4; b++) xa[(i * per_byte + j) * 4 + b] = xv[i * per_word + b * per_byte + j];
            } else if (bits == 8) {
                int16_t *xa = (int16_t *)arranged + u * 32;
                for (int i = 0; i < 8; i++) {
                    xa[i * 4 + 0] = xv[i * 4 + 0];
                    xa[i * 4 + 1] = xv[i * 4 + 2];
                    xa[i * 4 + 2] = xv[i * 4 + 1];
                    xa[i * 4 + 3] = xv[i * 4 + 3];
                }
            } else {
                memcpy(arranged + u * 32, xv, 32);
            }
        }
        // Σ x̂ per group, x̂ = d · xi: the zero points multiply the quantized x, so that the
        // result is exactly the float product with x̂ (the error is x's rounding alone).
        for (int g = 0; g < w->groups; g++) {
            float sum = 0;
            for (int u = w->group_start[g] / 32; u < w->group_start[g + 1] / 32; u++) {
                int32_t units_sum = 0;
                for (int k = 0; k < 32; k++) units_sum += values[u * 32 + k];
                sum += scales[u] * (float)units_sum;
            }
            sums[g] = sum;
        }
    }
    return q;
}

void ck_q8_quantize_matrix(const float *w, int rows, int in_features, int8_t *q, float *scales) {
    for (int o = 0; o < rows; o++) {
        const float *row = w + (size_t)o * in_features;
        float max = 0;
        for (int c = 0; c < in_features; c++) max = fmaxf(max, fabsf(row[c]));
        scales[o] = max / 127.0f;
        const float inverse = max > 0 ? 127.0f / max : 0.0f;
        for (int c = 0; c < in_features; c++) {
            const long value = lrintf(row[c] * inverse);
            q[(size_t)o * in_features + c] = (int8_t)(value > 127 ? 127 : value < -127 ? -127 : value);
        }
    }
}

// ---- path selection ------------------------------------------------------

static int cpu_has(ck_q8_path path) {
    switch (path) {
    case CK_Q8_SCALAR: return 1;
    case CK_Q8_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CK_Q8_AVXVNNI: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
    case CK_Q8_AVX512VNNI:
        return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
    }
    return 0;
}

int ck_q8_path_supported(ck_q8_path path) { return cpu_has(path); }

static ck_q8_path best_path(void) {
    if (cpu_has(CK_Q8_AVX512VNNI)) return CK_Q8_AVX512VNNI;
    if (cpu_has(CK_Q8_AVXVNNI)) return CK_Q8_AVXVNNI;
    return cpu_has(CK_Q8_AVX2) ? CK_Q8_AVX2 : CK_Q8_SCALAR;
}

// −1 until first use.
static _Atomic int selected_path = -1;

ck_q8_path ck_q8_current_path(void) {
    int path = atomic_load_explicit(&selected_path, memory_order_relaxed);
    if (path < 0) {
        path = (int)best_path();
        atomic_store_explicit(&selected_path, path, memory_order_relaxed);
    }
    return (ck_q8_path)path;
}

int ck_q8_select_path(int path) {
    if (path < 0) {
        atomic_store_explicit(&selected_path, (int)best_path(), memory_order_relaxed);
        return 1;
    }
    if (path > CK_Q8_AVX512VNNI || !cpu_has((ck_q8_path)path)) return 0;
    atomic_store_explicit(&selected_path, path, memory_order_relaxed);
    return 1;
}

// ---- the vector paths ------------------------------------------------------

static inline float q8_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// The 4 bytes at p in every int32 lane.
static inline __m256i q8_broadcast4(const void *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

// About 256 KiB of int8 weight a block: half of this machine's L2.
static inline int q8_matrix_block_rows(const ck_q8_matrix *m) {
    const int rows = (256 << 10) / m->in_features;
    return rows < 16 ? 16 : rows;
}

// AVX2: maddubs's int16 pair sums collect in acc_pairs (see q8_dot.h for why they cannot
// saturate) and widen to int32 once, at the end; the 8-bit path's madd goes to int32 directly.
#define Q8_NAME(name) avx2_##name
#define Q8_DOT_DECLARE(acc) __m256i acc##_pairs = _mm256_setzero_si256(), acc##_words = _mm256_setzero_si256()
#define Q8_DOT_U8S8(acc, u, s) acc##_pairs = _mm256_add_epi16(acc##_pairs, _mm256_maddubs_epi16((u), (s)))
#define Q8_DOT_S16(acc, a, b) acc##_words = _mm256_add_epi32(acc##_words, _mm256_madd_epi16((a), (b)))
#define Q8_DOT_END(acc) _mm256_add_epi32(acc##_words, _mm256_madd_epi16(acc##_pairs, _mm256_set1_epi16(1)))
#include "q8_dot.h"
#undef Q8_NAME
#undef Q8_DOT_DECLARE
#undef Q8_DOT_U8S8
#undef Q8_DOT_S16
#undef Q8_DOT_END

// VNNI: vpdpbusd / vpdpwssd accumulate straight into int32.
#define Q8_DOT_DECLARE(acc) __m256i acc = _mm256_setzero_si256()
#define Q8_DOT_END(acc) (acc)

#pragma clang attribute push(__attribute__((target("avx2,fma,avxvnni"))), apply_to = function)
#define Q8_NAME(name) avxvnni_##name
#define Q8_DOT_U8S8(acc, u, s) acc = _mm256_dpbusd_avx_epi32(acc, (u), (s))
#define Q8_DOT_S16(acc, a, b) acc = _mm256_dpwssd_avx_epi32(acc, (a), (b))
#include "q8_dot.h"
#undef Q8_NAME
#undef Q8_DOT_U8S8
#undef Q8_DOT_S16
#pragma clang attribute pop

#pragma clang attribute push(__attribute__((target("avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni"))), apply_to = function)
#define Q8_NAME(name) avx512vnni_##name
#define Q8_DOT_U8S8(acc, u, s) acc = _mm256_dpbusd_epi32(acc, (u), (s))
#define Q8_DOT_S16(acc, a, b) acc = _mm256_dpwssd_epi32(acc, (a), (b))
#include "q8_dot.h"
#undef Q8_NAME
#undef Q8_DOT_U8S8
#undef Q8_DOT_S16
#pragma clang attribute pop

// ---- the scalar path: the same integer sums and the same fused float steps ----

static int32_t gptq_field(const ck_gptq_weight *w, int c, int o) {
    const size_t words = (size_t)w->in_features * w->bits / 32;
    const uint32_t *column = w->qweight + (size_t)(o >> 5) * words * 32 + (o & 31);
    const int position = c * w->bits, index = position >> 5, shift = position & 31;
    uint64_t v = column[(size_t)index * 32] >> shift;
    if (shift + w->bits > 32) v |= (uint64_t)column[(size_t)(index + 1) * 32] << (32 - shift);
    return (int32_t)(v & ((1u << w->bits) - 1));
}

static void scalar_gptq_gemv(const ck_gptq_weight *w, const ck_q8_rows *x, int col_begin, int col_end, float *y, size_t ldy) {
    for (int r = 0; r < x->rows; r++) {
        const int8_t *values = x->values + (size_t)r * x->values_stride;
        const float *scales = x->scales + (size_t)r * x->scales_stride, *sums = x->group_sums + (size_t)r * x->group_sums_stride;
        for (int o = col_begin; o < col_end; o++) {
            const size_t parameters = (size_t)(o >> 5) * w->groups * 32 + (o & 31);
            float out = 0;
            for (int g = 0; g < w->groups; g++) {
                float acc = 0;
                for (int u = w->group_start[g] / 32; u < w->group_start[g + 1] / 32; u++) {
                    int32_t dot = 0;
                    for (int k = 0; k < 32; k++) dot += gptq_field(w, u * 32 + k, o) * values[u * 32 + k];
                    acc = fmaf(scales[u], (float)dot, acc);
                }
                const float centred = fmaf(-w->zeros[parameters + (size_t)g * 32], sums[g], acc);
                out = fmaf(w->scales[parameters + (size_t)g * 32], centred, out);
            }
            y[(size_t)r * ldy + o] = out;
        }
    }
}

static void scalar_matrix_gemv(const ck_q8_matrix *m, const ck_q8_rows *x, int o_begin, int o_end, float *y, size_t ldy) {
    const int in = m->in_features, units = in / 32;
    for (int r = 0; r < x->rows; r++) {
        const int8_t *values = x->values + (size_t)r * x->values_stride;
        const float *scales = x->scales + (size_t)r * x->scales_stride;
        for (int o = o_begin; o < o_end; o++) {
            const int8_t *row = m->weight + (size_t)o * in;
            float acc = 0;
            for (int u = 0; u < units; u++) {
                int32_t dot = 0;
                for (int k = 0; k < 32; k++) dot += row[u * 32 + k] * values[u * 32 + k];
                acc = fmaf(scales[u], (float)dot, acc);
            }
            y[(size_t)r * ldy + o] = m->scales[o] * acc;
        }
    }
}

// ---- entry points ------------------------------------------------------------

void ck_gptq_q8_gemv(const ck_gptq_weight *w, const ck_q8_rows *x, int col_begin, int col_end, float *y, size_t ldy) {
    if (col_end > w->out_features) col_end = w->out_features;
    switch (ck_q8_current_path()) {
    case CK_Q8_SCALAR: scalar_gptq_gemv(w, x, col_begin, col_end, y, ldy); break;
    case CK_Q8_AVX2: avx2_gptq_gemv(w, x, col_begin, col_end, y, ldy); break;
    case CK_Q8_AVXVNNI: avxvnni_gptq_gemv(w, x, col_begin, col_end, y, ldy); break;
    case CK_Q8_AVX512VNNI: avx512vnni_gptq_gemv(w, x, col_begin, col_end, y, ldy); break;
    }
}

void ck_q8_matrix_gemv(const ck_q8_matrix *m, const ck_q8_rows *x, int o_begin, int o_end, float *y, size_t ldy) {
    switch (ck_q8_current_path()) {
    case CK_Q8_SCALAR: scalar_matrix_gemv(m, x, o_begin, o_end, y, ldy); break;
    case CK_Q8_AVX2: avx2_matrix_gemv(m, x, o_begin, o_end, y, ldy); break;
    case CK_Q8_AVXVNNI: avxvnni_matrix_gemv(m, x, o_begin, o_end, y, ldy); break;
    case CK_Q8_AVX512VNNI: avx512vnni_matrix_gemv(m, x, o_begin, o_end, y, ldy); break;
    }
}
