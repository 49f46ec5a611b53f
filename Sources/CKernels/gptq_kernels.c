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
// words start at `unit` (the unit's first word for the 8 columns), as floats.
// For 2, 4 and 8 bits (fields never straddle words) the field is left in place, q·2^shift,
// masked but not shifted down (exact in float32: at most 8 significant bits), and the
// caller's x carries the 2^−shift (ck_gptq_gemv_prepare): one integer instruction less per
// 8 weights, with the same products. The top field of a word is shifted down instead, since
// q·2^shift would set the sign bit; its x is unscaled.
ALWAYS_INLINE __m256 unit_field8(const uint32_t *unit, size_t stride, int k, int bits) {
    int position = k * bits, index = position >> 5, shift = position & 31;
    __m256i v = _mm256_loadu_si256((const __m256i *)(unit + (size_t)index * stride));
    if (bits == 3) {
        v = _mm256_srli_epi32(v, shift);
        if (shift + bits > 32) {
            __m256i next = _mm256_loadu_si256((const __m256i *)(unit + (size_t)(index + 1) * stride));
            v = _mm256_or_si256(v, _mm256_slli_epi32(next, 32 - shift));
        }
        return _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32((1 << bits) - 1)));
    }
    if (shift + bits == 32) return _mm256_cvtepi32_ps(_mm256_srli_epi32(v, shift));
    return _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(((1 << bits) - 1) << shift)));
}

// The scale unit_field8 leaves on channel c's field: 2^shift for 2/4/8 bits below a word's top field.
static inline float field_scale(int c, int bits) {
    const int shift = (c * bits) & 31;
    return bits == 3 || shift + bits == 32 ? 1.0f : (float)(1u << shift);
}

size_t ck_gptq_gemv_workspace(const ck_gptq_weight *w, int rows) {
    return (size_t)rows * ((size_t)w->groups + (size_t)w->in_features);
}

void ck_gptq_gemv_prepare(const ck_gptq_weight *w, const float *x, int rows, float *workspace) {
    const int in = w->in_features, groups = w->groups;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * in;
        float *sums = workspace + (size_t)r * groups, *scaled = workspace + (size_t)rows * groups + (size_t)r * in;
        for (int g = 0; g < groups; g++) {
            float sum = 0;
            for (int c = w->group_start[g]; c < w->group_start[g + 1]; c++) sum += xr[c];
            sums[g] = sum;
        }
        for (int c = 0; c < in; c++) scaled[c] = xr[c] / field_scale(c, w->bits);
    }
}

// One tile of H·8 columns from o0 for R rows (R, H, bits constant after inlining, so the
// accumulators stay in registers). Per group: acc = Σ x·q, then y += scale · (acc − zero · Σx)
// (the group sums of x come from ck_gptq_gemv_prepare, computed once rather than per tile).
// Whole aligned units of 32 channels read the prepared x; other channels (act-order group
// edges) the plain x. Results go to out[r · 32 + lane].
ALWAYS_INLINE void gemv_tile(const ck_gptq_weight *w, const float *x, const float *xs, const float *sums, int bits, int R, int H,
                             int o0, float *out) {
    // This tile's words and group parameters (o0 may start the tile's second half of 16).
    const size_t words = (size_t)w->in_features * bits / 32, lane = (size_t)(o0 & 31);
    const uint32_t *tile = w->qweight + (size_t)(o0 >> 5) * words * 32;
    const float *tile_scales = w->scales + (size_t)(o0 >> 5) * w->groups * 32, *tile_zeros = w->zeros + (size_t)(o0 >> 5) * w->groups * 32;
    const int in = w->in_features, groups = w->groups;
    __m256 y[4][4];
    for (int r = 0; r < R; r++)
        for (int h = 0; h < H; h++) y[r][h] = _mm256_setzero_ps();
    for (int g = 0; g < groups; g++) {
        const int c0 = w->group_start[g], c1 = w->group_start[g + 1];
        if (c0 == c1) continue;
        __m256 acc[4][4];
        for (int r = 0; r < R; r++)
            for (int h = 0; h < H; h++) acc[r][h] = _mm256_setzero_ps();
        int c = c0;
        while (c < c1) {
            if ((c & 31) == 0 && c + 32 <= c1) {
                const uint32_t *unit = tile + (size_t)(c / 32 * bits) * 32 + lane;
                for (int k = 0; k < 32; k++) {
                    __m256 q[4];
                    for (int h = 0; h < H; h++) q[h] = unit_field8(unit + 8 * h, 32, k, bits);
                    for (int r = 0; r < R; r++) {
                        const __m256 xb = _mm256_set1_ps(xs[(size_t)r * in + c + k]);
                        for (int h = 0; h < H; h++) acc[r][h] = _mm256_fmadd_ps(xb, q[h], acc[r][h]);
                    }
                }
                c += 32;
            } else {
                __m256 q[4];
                for (int h = 0; h < H; h++) q[h] = _mm256_cvtepi32_ps(field8(tile, 32, (int)lane + 8 * h, c, bits));
                for (int r = 0; r < R; r++) {
                    const __m256 xb = _mm256_set1_ps(x[(size_t)r * in + c]);
                    for (int h = 0; h < H; h++) acc[r][h] = _mm256_fmadd_ps(xb, q[h], acc[r][h]);
                }
                c += 1;
            }
        }
        for (int h = 0; h < H; h++) {
            const __m256 s = _mm256_loadu_ps(tile_scales + (size_t)g * 32 + lane + 8 * h);
            const __m256 z = _mm256_loadu_ps(tile_zeros + (size_t)g * 32 + lane + 8 * h);
            for (int r = 0; r < R; r++) {
                const __m256 centred = _mm256_fnmadd_ps(z, _mm256_set1_ps(sums[(size_t)r * groups + g]), acc[r][h]);
                y[r][h] = _mm256_fmadd_ps(s, centred, y[r][h]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int h = 0; h < H; h++) _mm256_storeu_ps(out + r * 32 + 8 * h, y[r][h]);
}

// Register budget (16 ymm): R·H accumulators + H unpacked fields + a broadcast; 3-4 rows
// therefore take the 32 columns as two halves of 16.
#define DEFINE_TILE(B)                                                                                                        \
    static void gemv_tile_b##B(const ck_gptq_weight *w, const float *x, const float *xs, const float *sums, int rows,         \
                               int o0, float *out) {                                                                         \
        switch (rows) {                                                                                                       \
        case 1: gemv_tile(w, x, xs, sums, B, 1, 4, o0, out); break;                                                     \
        case 2: gemv_tile(w, x, xs, sums, B, 2, 4, o0, out); break;                                                     \
        case 3: gemv_tile(w, x, xs, sums, B, 3, 2, o0, out); gemv_tile(w, x, xs, sums, B, 3, 2, o0 + 16, out + 16); break; \
        default: gemv_tile(w, x, xs, sums, B, 4, 2, o0, out); gemv_tile(w, x, xs, sums, B, 4, 2, o0 + 16, out + 16); break; \
        }                                                                                                                     \
    }
DEFINE_TILE(2)
DEFINE_TILE(3)
DEFINE_TILE(4)
DEFINE_TILE(8)

void ck_gptq_gemv(const ck_gptq_weight *w, const float *x, const float *workspace, int rows, int col_begin, int col_end,
                  float *y, size_t ldy) {
    if (col_end > w->out_features) col_end = w->out_features;
    const int in = w->in_features, groups = w->groups;
    const float *all_sums = workspace, *all_scaled = workspace + (size_t)rows * groups;
    float out[4 * 32];
    for (int r0 = 0; r0 < rows; r0 += 4) {
        const int rc = rows - r0 < 4 ? rows - r0 : 4;
        const float *xr = x + (size_t)r0 * in, *xs = all_scaled + (size_t)r0 * in, *sums = all_sums + (size_t)r0 * groups;
        for (int o0 = col_begin; o0 < col_end; o0 += 32) {
            switch (w->bits) {
            case 2: gemv_tile_b2(w, xr, xs, sums, rc, o0, out); break;
            case 3: gemv_tile_b3(w, xr, xs, sums, rc, o0, out); break;
            case 4: gemv_tile_b4(w, xr, xs, sums, rc, o0, out); break;
            default: gemv_tile_b8(w, xr, xs, sums, rc, o0, out); break;
            }
            const int n = col_end - o0 < 32 ? col_end - o0 : 32;
            for (int r = 0; r < rc; r++) memcpy(y + (size_t)(r0 + r) * ldy + o0, out + r * 32, (size_t)n * sizeof(float));
        }
    }
}

void ck_gptq_dequantize(const ck_gptq_weight *w, int ch_begin, int ch_end, int col_begin, int col_end, float *dst, size_t ld) {
    const size_t words = (size_t)w->in_features * w->bits / 32, groups = (size_t)w->groups;
    int g = 0;
    for (int c = ch_begin; c < ch_end; c++) {
        while (c >= w->group_start[g + 1]) g++;
        float *row = dst + (size_t)(c - ch_begin) * ld;
        for (int o = col_begin; o < col_end; o += 8) {
            const size_t tile = (size_t)(o >> 5), lane = (size_t)(o & 31), parameters = (tile * groups + (size_t)g) * 32 + lane;
            const __m256 q = _mm256_cvtepi32_ps(field8(w->qweight + tile * words * 32, 32, (int)lane, c, w->bits));
            const __m256 value = _mm256_mul_ps(_mm256_loadu_ps(w->scales + parameters), _mm256_sub_ps(q, _mm256_loadu_ps(w->zeros + parameters)));
            _mm256_storeu_ps(row + (o - col_begin), value);
        }
    }
}
