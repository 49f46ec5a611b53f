#include "ck_transformer.h"
#include <immintrin.h>
#include <math.h>

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// exp(x) for 8 floats: Cephes' expf (range reduction by ln 2 split in two constants,
// degree-5 polynomial), about 1 ulp, the same accuracy class as libm's expf.
static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.3762626647949f));
    __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

void ck_rmsnorm(const float *x, const float *weight, float *y, size_t n, float eps) {
    __m256 acc = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { __m256 v = _mm256_loadu_ps(x + i); acc = _mm256_fmadd_ps(v, v, acc); }
    float sum = hsum(acc);
    for (; i < n; i++) sum += x[i] * x[i];
    float r = 1.0f / sqrtf(sum / (float)n + eps);
    __m256 rv = _mm256_set1_ps(r);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(weight + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), rv)));
    for (; i < n; i++) y[i] = weight[i] * (x[i] * r);
}

void ck_add(float *x, const float *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) x[i] += y[i];
}

void ck_layernorm(const float *x, const float *weight, const float *bias, float *y, size_t n, float eps) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += x[i];
    float mean = (float)(sum / (double)n);
    double squares = 0;
    for (size_t i = 0; i < n; i++) { double d = (double)x[i] - mean; squares += d * d; }
    float r = 1.0f / sqrtf((float)(squares / (double)n) + eps);
    for (size_t i = 0; i < n; i++) {
        float v = (x[i] - mean) * r;
        if (weight) v *= weight[i];
        if (bias) v += bias[i];
        y[i] = v;
    }
}

static inline float activate(int activation, float g) {
    switch (activation) {
    case 0: return g / (1.0f + expf(-g));
    case 1: return 0.5f * g * (1.0f + erff(g * 0.70710678118654752f));
    case 2: return 0.5f * g * (1.0f + tanhf(0.79788456080286536f * (g + 0.044715f * g * g * g)));
    default: return g > 0 ? g : 0;
    }
}

void ck_activate(int activation, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = activate(activation, x[i]);
}

void ck_gated(int activation, const float *gate, const float *up, float *out, size_t n) {
    size_t i = 0;
    if (activation == 0) {
        const __m256 one = _mm256_set1_ps(1.0f);
        for (; i + 8 <= n; i += 8) {
            __m256 g = _mm256_loadu_ps(gate + i);
            __m256 sig = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
            _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(g, sig), _mm256_loadu_ps(up + i)));
        }
    }
    for (; i < n; i++) out[i] = activate(activation, gate[i]) * up[i];
}

void ck_rope(float *x, size_t heads, size_t head_dim, size_t rotary_dims, int interleaved, const float *cos, const float *sin) {
    size_t half = rotary_dims / 2;
    for (size_t h = 0; h < heads; h++) {
        float *a = x + h * head_dim;
        if (interleaved) {
            for (size_t i = 0; i < half; i++) {
                float va = a[2 * i], vb = a[2 * i + 1];
                a[2 * i] = va * cos[i] - vb * sin[i];
                a[2 * i + 1] = vb * cos[i] + va * sin[i];
            }
            continue;
        }
        float *b = a + half;
        size_t i = 0;
        for (; i + 8 <= half; i += 8) {
            __m256 va = _mm256_loadu_ps(a + i), vb = _mm256_loadu_ps(b + i);
            __m256 c = _mm256_loadu_ps(cos + i), s = _mm256_loadu_ps(sin + i);
            _mm256_storeu_ps(a + i, _mm256_fmsub_ps(va, c, _mm256_mul_ps(vb, s)));
            _mm256_storeu_ps(b + i, _mm256_fmadd_ps(vb, c, _mm256_mul_ps(va, s)));
        }
        for (; i < half; i++) {
            float va = a[i], vb = b[i];
            a[i] = va * cos[i] - vb * sin[i];
            b[i] = vb * cos[i] + va * sin[i];
        }
    }
}

void ck_masked_softmax(float *row, size_t count, size_t lo, size_t hi) {
    for (size_t j = 0; j < lo; j++) row[j] = 0;
    for (size_t j = hi; j < count; j++) row[j] = 0;
    float *r = row + lo;
    size_t n = hi - lo, i = 0;
    __m256 mv = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(r + i));
    float m = hmax(mv);
    for (; i < n; i++) m = r[i] > m ? r[i] : m;
    __m256 sv = _mm256_setzero_ps(), mb = _mm256_set1_ps(m);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(r + i), mb));
        _mm256_storeu_ps(r + i, e);
        sv = _mm256_add_ps(sv, e);
    }
    float sum = hsum(sv);
    for (; i < n; i++) { r[i] = expf(r[i] - m); sum += r[i]; }
    __m256 inv = _mm256_set1_ps(1.0f / sum);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(r + i, _mm256_mul_ps(_mm256_loadu_ps(r + i), inv));
    for (; i < n; i++) r[i] *= 1.0f / sum;
}

void ck_flash_softmax_f16(float *row, size_t count, size_t lo, size_t hi, size_t first_key, size_t tile) {
    for (size_t j = 0; j < lo; j++) row[j] = 0;
    for (size_t j = hi; j < count; j++) row[j] = 0;
    if (lo >= hi) return;
    // Tiles by absolute key index; the running max after each tile, and each key's rounded weight
    // relative to it.
    const size_t first_tile = (first_key + lo) / tile, tiles = (first_key + hi - 1) / tile - first_tile + 1;
    float running[tiles];
    float m = -INFINITY;
    for (size_t t = 0; t < tiles; t++) {
        const size_t start = (first_tile + t) * tile - first_key, a = start > lo ? start : lo, b = start + tile < hi ? start + tile : hi;
        for (size_t j = a; j < b; j++) m = row[j] > m ? row[j] : m;
        running[t] = m;
        for (size_t j = a; j < b; j++) row[j] = _cvtsh_ss(_cvtss_sh(expf(row[j] - m), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    float sum = 0;
    for (size_t t = 0; t < tiles; t++) {
        const size_t start = (first_tile + t) * tile - first_key, a = start > lo ? start : lo, b = start + tile < hi ? start + tile : hi;
        const float rescale = expf(running[t] - m);
        for (size_t j = a; j < b; j++) { row[j] *= rescale; sum += row[j]; }
    }
    for (size_t j = lo; j < hi; j++) row[j] /= sum;
}

static inline float dot(const float *a, const float *b, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
    float s = hsum(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

// Eight dot products of q with consecutive keys, reduced together: the horizontal sums
// of the eight accumulators are folded by one hadd tree instead of eight separate ones.
static inline __m256 dot8(const float *q, const float *k, size_t head_dim) {
    __m256 acc[8];
    for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
    for (size_t d = 0; d < head_dim; d += 8) {
        __m256 qv = _mm256_loadu_ps(q + d);
        for (int j = 0; j < 8; j++) acc[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + j * head_dim + d), acc[j]);
    }
    __m256 h0123 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
    __m256 h4567 = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(h0123, h4567, 0x20), _mm256_permute2f128_ps(h0123, h4567, 0x31));
}

void ck_attend(const float *q, const float *k, const float *v, size_t keys, size_t head_dim,
               float scale, const float *bias, float *scores, float *out) {
    size_t j = 0;
    if (head_dim % 8 == 0) {
        __m256 sv = _mm256_set1_ps(scale);
        for (; j + 8 <= keys; j += 8) _mm256_storeu_ps(scores + j, _mm256_mul_ps(dot8(q, k + j * head_dim, head_dim), sv));
    }
    for (; j < keys; j++) scores[j] = dot(q, k + j * head_dim, head_dim) * scale;
    if (bias) ck_add(scores, bias, keys);
    ck_masked_softmax(scores, keys, 0, keys);
    // Accumulate up to 64 output dims at a time in registers across all keys.
    size_t d0 = 0;
    for (; head_dim % 8 == 0 && d0 < head_dim; d0 += 64) {
        int vectors = head_dim - d0 >= 64 ? 8 : (int)(head_dim - d0) / 8;
        __m256 acc[8];
        for (int c = 0; c < 8; c++) acc[c] = _mm256_setzero_ps();
        for (j = 0; j < keys; j++) {
            __m256 p = _mm256_set1_ps(scores[j]);
            const float *vj = v + j * head_dim + d0;
            for (int c = 0; c < vectors; c++) acc[c] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 8 * c), acc[c]);
        }
        for (int c = 0; c < vectors; c++) _mm256_storeu_ps(out + d0 + 8 * c, acc[c]);
    }
    for (size_t d = d0; d < head_dim; d++) {
        float acc = 0;
        for (j = 0; j < keys; j++) acc += scores[j] * v[j * head_dim + d];
        out[d] = acc;
    }
}

float ck_logsumexp(const float *x, size_t n) {
    __m256 mv = _mm256_set1_ps(-INFINITY);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    float m = hmax(mv);
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    __m256 mb = _mm256_set1_ps(m), sv = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) sv = _mm256_add_ps(sv, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mb)));
    double sum = hsum(sv);
    for (; i < n; i++) sum += expf(x[i] - m);
    return m + (float)log(sum);
}
