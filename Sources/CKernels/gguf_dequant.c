#include "ckernels.h"
#include <immintrin.h>
#include <string.h>

// Q4_1's d*q+m may be contracted into an FMA (-ffp-contract=fast) without changing a
// bit of the result: d is a float16 (11 significant bits) and q < 16, so the product
// is exact in float32 and the single rounding of the sum is the same either way.

static inline float half_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

// 16 packed bytes -> 32 nibbles as int32 lanes: [0..7], [8..15] low nibbles, [16..23], [24..31] high.
static inline void unpack_nibbles(const uint8_t *qs, __m256i out[4]) {
    __m128i bytes = _mm_loadu_si128((const __m128i *)qs);
    __m128i mask = _mm_set1_epi8(0x0F);
    __m128i lo = _mm_and_si128(bytes, mask);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
    out[0] = _mm256_cvtepu8_epi32(lo);
    out[1] = _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8));
    out[2] = _mm256_cvtepu8_epi32(hi);
    out[3] = _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8));
}

void ck_dequant_q8_0(const uint8_t *blocks, float *dst, size_t n_blocks) {
    for (size_t b = 0; b < n_blocks; b++) {
        const uint8_t *block = blocks + b * 34;
        __m256 d = _mm256_set1_ps(half_at(block));
        for (int i = 0; i < 4; i++) {
            __m128i q8 = _mm_loadl_epi64((const __m128i *)(block + 2 + 8 * i));
            __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8));
            _mm256_storeu_ps(dst + b * 32 + 8 * i, _mm256_mul_ps(d, q));
        }
    }
}

void ck_dequant_q4_0(const uint8_t *blocks, float *dst, size_t n_blocks) {
    const __m256i eight = _mm256_set1_epi32(8);
    for (size_t b = 0; b < n_blocks; b++) {
        const uint8_t *block = blocks + b * 18;
        __m256 d = _mm256_set1_ps(half_at(block));
        __m256i q[4];
        unpack_nibbles(block + 2, q);
        for (int i = 0; i < 4; i++) {
            __m256 centred = _mm256_cvtepi32_ps(_mm256_sub_epi32(q[i], eight));
            _mm256_storeu_ps(dst + b * 32 + 8 * i, _mm256_mul_ps(d, centred));
        }
    }
}

void ck_dequant_q4_1(const uint8_t *blocks, float *dst, size_t n_blocks) {
    for (size_t b = 0; b < n_blocks; b++) {
        const uint8_t *block = blocks + b * 20;
        __m256 d = _mm256_set1_ps(half_at(block));
        __m256 m = _mm256_set1_ps(half_at(block + 2));
        __m256i q[4];
        unpack_nibbles(block + 4, q);
        for (int i = 0; i < 4; i++) {
            __m256 product = _mm256_mul_ps(d, _mm256_cvtepi32_ps(q[i]));
            _mm256_storeu_ps(dst + b * 32 + 8 * i, _mm256_add_ps(product, m));
        }
    }
}
