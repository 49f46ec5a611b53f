// GPTQ dequantize-and-multiply kernels (AVX2/FMA). Vectorised across output columns:
// the 8 lanes of a register are 8 consecutive output columns, whose packed words are
// adjacent in qweight, so one load feeds 8 columns and field extraction is shifts and a mask.
#include "ckernels.h"
#include <immintrin.h>
#include <string.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))

// Field c of the 8 columns at o, for any channel c (fields may straddle two words).
ALWAYS_INLINE __m256i field8(const uint32_t *qweight, size_t stride, int o, int c, int bits) {
    int position = c * bits, index = position >> 5, shift = position & 31;
    __m256i v = _mm256_srl_epi32(_mm256_loadu_si256((const __m256i *)(qweight + (size_t)index * stride + o)), _mm_cvtsi32_si128(shift));
    if (shift + bits > 32) {
        __m256i next = _mm256_loadu_si256((const __m256i *)(qweight + (size_t)(index + 1) * stride + o));
        v = _mm256_or_si256(v, _mm256_sll_epi32(next, _mm_cvtsi32_si128(32 - shift)));
    }
    return _mm256_and_si256(v, _mm256_set1_epi32((1 << bits) - 1));
}

// Field k (a compile-time constant once inlined) of a unit of 32 channels, whose `bits`
// words start at `unit` (the unit's first word for the 8 columns).
ALWAYS_INLINE __m256 unit_field8(const uint32_t *unit, size_t stride, int k, int bits) {
    int position = k * bits, index = position >> 5, shift = position & 31;
    __m256i v = _mm256_srli_epi32(_mm256_loadu_si256((const __m256i *)(unit + (size_t)index * stride)), shift);
    if (shift + bits > 32) {
        __m256i next = _mm256_loadu_si256((const __m256i *)(unit + (size_t)(index + 1) * stride));
        v = _mm256_or_si256(v, _mm256_slli_epi32(next, 32 - shift));
    }
    return _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32((1 << bits) - 1)));
}

// One tile of H·8 columns from o0 for R rows (R, H, bits constant after inlining, so the
// accumulators stay in registers). Per group: acc = Σ x·q and xsum = Σ x, then
// y += scale · (acc − zero · xsum). Results go to out[r · 32 + lane].
ALWAYS_INLINE void gemv_tile(const ck_gptq_weight *w, const float *x, int bits, int R, int H, int o0, float *out) {
    const size_t stride = (size_t)w->out_stride;
    const int in = w->in_features;
    __m256 y[4][4];
    for (int r = 0; r < R; r++)
        for (int h = 0; h < H; h++) y[r][h] = _mm256_setzero_ps();
    for (int g = 0; g < w->groups; g++) {
        const int c0 = w->group_start[g], c1 = w->group_start[g + 1];
        if (c0 == c1) continue;
        __m256 acc[4][4];
        float xsum[4] = {0, 0, 0, 0};
        for (int r = 0; r < R; r++)
            for (int h = 0; h < H; h++) acc[r][h] = _mm256_setzero_ps();
        int c = c0;
        while (c < c1) {
            if ((c & 31) == 0 && c + 32 <= c1) {
                const uint32_t *unit = w->qweight + (size_t)(c / 32 * bits) * stride + o0;
                for (int k = 0; k < 32; k++) {
                    __m256 q[4];
                    for (int h = 0; h < H; h++) q[h] = unit_field8(unit + 8 * h, stride, k, bits);
                    for (int r = 0; r < R; r++) {
                        const float xv = x[(size_t)r * in + c + k];
                        const __m256 xb = _mm256_set1_ps(xv);
                        xsum[r] += xv;
                        for (int h = 0; h < H; h++) acc[r][h] = _mm256_fmadd_ps(xb, q[h], acc[r][h]);
                    }
                }
                c += 32;
            } else {
                __m256 q[4];
                for (int h = 0; h < H; h++) q[h] = _mm256_cvtepi32_ps(field8(w->qweight, stride, o0 + 8 * h, c, bits));
                for (int r = 0; r < R; r++) {
                    const float xv = x[(size_t)r * in + c];
                    const __m256 xb = _mm256_set1_ps(xv);
                    xsum[r] += xv;
                    for (int h = 0; h < H; h++) acc[r][h] = _mm256_fmadd_ps(xb, q[h], acc[r][h]);
                }
                c += 1;
            }
        }
        for (int h = 0; h < H; h++) {
            const __m256 s = _mm256_loadu_ps(w->scales + (size_t)g * stride + o0 + 8 * h);
            const __m256 z = _mm256_loadu_ps(w->zeros + (size_t)g * stride + o0 + 8 * h);
            for (int r = 0; r < R; r++) {
                const __m256 centred = _mm256_fnmadd_ps(z, _mm256_set1_ps(xsum[r]), acc[r][h]);
                y[r][h] = _mm256_fmadd_ps(s, centred, y[r][h]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int h = 0; h < H; h++) _mm256_storeu_ps(out + r * 32 + 8 * h, y[r][h]);
}

// Register budget (16 ymm): R·H accumulators + H unpacked fields + a broadcast, plus the
// running sums; 3-4 rows therefore take the 32 columns as two halves of 16.
#define DEFINE_TILE(B)                                                                                       \
    static void gemv_tile_b##B(const ck_gptq_weight *w, const float *x, int rows, int o0, float *out) {      \
        switch (rows) {                                                                                      \
        case 1: gemv_tile(w, x, B, 1, 4, o0, out); break;                                                    \
        case 2: gemv_tile(w, x, B, 2, 4, o0, out); break;                                                    \
        case 3: gemv_tile(w, x, B, 3, 2, o0, out); gemv_tile(w, x, B, 3, 2, o0 + 16, out + 16); break;       \
        default: gemv_tile(w, x, B, 4, 2, o0, out); gemv_tile(w, x, B, 4, 2, o0 + 16, out + 16); break;      \
        }                                                                                                    \
    }
DEFINE_TILE(2)
DEFINE_TILE(3)
DEFINE_TILE(4)
DEFINE_TILE(8)

void ck_gptq_gemv(const ck_gptq_weight *w, const float *x, int rows, int col_begin, int col_end, float *y, size_t ldy) {
    if (col_end > w->out_features) col_end = w->out_features;
    float out[4 * 32];
    for (int r0 = 0; r0 < rows; r0 += 4) {
        const int rc = rows - r0 < 4 ? rows - r0 : 4;
        const float *xr = x + (size_t)r0 * w->in_features;
        for (int o0 = col_begin; o0 < col_end; o0 += 32) {
            switch (w->bits) {
            case 2: gemv_tile_b2(w, xr, rc, o0, out); break;
            case 3: gemv_tile_b3(w, xr, rc, o0, out); break;
            case 4: gemv_tile_b4(w, xr, rc, o0, out); break;
            default: gemv_tile_b8(w, xr, rc, o0, out); break;
            }
            const int n = col_end - o0 < 32 ? col_end - o0 : 32;
            for (int r = 0; r < rc; r++) memcpy(y + (size_t)(r0 + r) * ldy + o0, out + r * 32, (size_t)n * sizeof(float));
        }
    }
}

void ck_gptq_dequantize(const ck_gptq_weight *w, int ch_begin, int ch_end, int col_begin, int col_end, float *dst, size_t ld) {
    const size_t stride = (size_t)w->out_stride;
    int g = 0;
    for (int c = ch_begin; c < ch_end; c++) {
        while (c >= w->group_start[g + 1]) g++;
        const float *scales = w->scales + (size_t)g * stride, *zeros = w->zeros + (size_t)g * stride;
        float *row = dst + (size_t)(c - ch_begin) * ld;
        for (int o = col_begin; o < col_end; o += 8) {
            const __m256 q = _mm256_cvtepi32_ps(field8(w->qweight, stride, o, c, w->bits));
            const __m256 value = _mm256_mul_ps(_mm256_loadu_ps(scales + o), _mm256_sub_ps(q, _mm256_loadu_ps(zeros + o)));
            _mm256_storeu_ps(row + (o - col_begin), value);
        }
    }
}
