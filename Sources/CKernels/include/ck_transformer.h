#pragma once
// Kernels of the float transformer forward on the CPU: dense matrix-vector products
// that read float16/bfloat16/float32 weights directly, and the elementwise and
// attention pieces of a llama-style decoder layer. All float32 arithmetic.
#include <stddef.h>
#include <stdint.h>

// ---- dense weights -----------------------------------------------------
// y[r*ldy + o] = sum_i w[o*in + i] * x[r*in + i] for outputs o in [o0, o1) and
// rows r < rows (1...4: the decode case, where streaming the weight dominates).
void ck_gemv_f16(const uint16_t *w, size_t in, const float *x, int rows, size_t o0, size_t o1, float *y, size_t ldy);
void ck_gemv_bf16(const uint16_t *w, size_t in, const float *x, int rows, size_t o0, size_t o1, float *y, size_t ldy);
void ck_gemv_f32(const float *w, size_t in, const float *x, int rows, size_t o0, size_t o1, float *y, size_t ldy);

// ---- elementwise -------------------------------------------------------
/// y = x / sqrt(mean(x²) + eps) * weight, as transformers' RMSNorm in float32.
void ck_rmsnorm(const float *x, const float *weight, float *y, size_t n, float eps);
/// x += y
void ck_add(float *x, const float *y, size_t n);
/// y = (x - mean) / sqrt(var + eps) * weight + bias (biased variance), as PyTorch's LayerNorm
/// in float32; weight and bias may be NULL (no affine part).
void ck_layernorm(const float *x, const float *weight, const float *bias, float *y, size_t n, float eps);
/// x = act(x) in place: 0 SiLU, 1 exact (erf) GELU, 2 GELU's tanh approximation, 3 ReLU.
void ck_activate(int activation, float *x, size_t n);
/// out = act(gate) * up with ck_activate's activations (SiLU vectorised).
void ck_gated(int activation, const float *gate, const float *up, float *out, size_t n);
/// Rotates the first `rotary_dims` of `heads` consecutive vectors of `head_dim` floats in
/// place, angles given as cos/sin[rotary_dims/2]: in halves (pairs (i, i + rotary_dims/2),
/// transformers' rotate_half) or, `interleaved`, in pairs (2i, 2i+1) (GPT-J's rotate_every_two).
void ck_rope(float *x, size_t heads, size_t head_dim, size_t rotary_dims, int interleaved, const float *cos, const float *sin);

// ---- attention ---------------------------------------------------------
/// Softmax of row[lo..<hi] in place; the other entries of row[0..<count] become 0.
void ck_masked_softmax(float *row, size_t count, size_t lo, size_t hi);
/* The CUDA flash prefill kernel's softmax of row[0..count) (key first_key + j at j) over the
   visible keys [lo, hi), rounded as the kernel rounds: keys in tiles of `tile` by absolute
   index, each weighed by float16(exp(s − m_t)) · exp(m_t − m), m_t the running max after its
   tile and m the row's max, and normalised by the sum of those weights. */
void ck_flash_softmax_f16(float *row, size_t count, size_t lo, size_t hi, size_t first_key, size_t tile);
/// One query against `keys` consecutive cached keys/values ([keys][head_dim] each):
/// out = softmax(scale * K q + bias) V, `bias` ([keys], ALiBi) may be NULL. `scores` holds
/// `keys` floats of scratch.
void ck_attend(const float *q, const float *k, const float *v, size_t keys, size_t head_dim,
               float scale, const float *bias, float *scores, float *out);

/// log(sum(exp(x[i]))), computed stably (max subtracted first).
float ck_logsumexp(const float *x, size_t n);
