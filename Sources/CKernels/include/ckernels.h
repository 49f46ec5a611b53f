#pragma once
// Hot loops of swift-gptq in plain C with AVX2/FMA/F16C intrinsics.
// Every function works on caller-owned memory and never allocates.
#include <stddef.h>
#include <stdint.h>

// ---- number formats ----------------------------------------------------
void ck_f16_to_f32(const uint16_t *src, float *dst, size_t n);
/// Round-to-nearest-even, as torch's .half() does.
void ck_f32_to_f16(const float *src, uint16_t *dst, size_t n);
void ck_bf16_to_f32(const uint16_t *src, float *dst, size_t n);
/// Round-to-nearest-even, as torch's .bfloat16() does (NaN stays NaN).
void ck_f32_to_bf16(const float *src, uint16_t *dst, size_t n);
/// Rounds each value in place to the nearest float16 (ties to even), as a float16 store
/// and load do; values beyond float16's range become ±inf.
void ck_round_f16(float *x, size_t n);

// ---- GGUF dequantization (ggml block layouts, 32 elements per block) ---
// Each writes 32 * n_blocks floats. The arithmetic is that of the `gguf`
// package's numpy code, so the results match it bit for bit.
/// Q8_0 block: f16 d, 32 int8 q; x = d * q.
void ck_dequant_q8_0(const uint8_t *blocks, float *dst, size_t n_blocks);
/// Q4_0 block: f16 d, 16 bytes; low nibbles are elements 0..15, high nibbles 16..31; x = d * (q - 8).
void ck_dequant_q4_0(const uint8_t *blocks, float *dst, size_t n_blocks);
/// Q4_1 block: f16 d, f16 m, 16 bytes (nibbles as Q4_0); x = d * q + m.
void ck_dequant_q4_1(const uint8_t *blocks, float *dst, size_t n_blocks);

// ---- GPTQ quantized linear (gptq_kernels.c) -----------------------------
/// A GPTQ weight prepared for the CPU kernels (GPTQLinear builds it). Input channels are
/// in group order (act-order checkpoints are permuted at load), so group g holds channels
/// [group_start[g], group_start[g+1]). Column o of qweight is a little-endian stream of
/// `bits`-bit fields, field c = q[c, o], in 32-bit words. Everything is stored by tiles of 32
/// columns, each tile contiguous: word w of column o is qweight[((o / 32) · words + w) · 32 + o % 32]
/// (words = in_features · bits / 32), and scales/zeros of group g at ((o / 32) · groups + g) · 32 + o % 32.
typedef struct {
    const uint32_t *qweight;    // [out_stride / 32][words][32]
    const float *scales;        // [out_stride / 32][groups][32]
    const float *zeros;         // [out_stride / 32][groups][32], the zero points themselves
    const int32_t *group_start; // [groups + 1]
    int32_t bits;               // 2, 3, 4 or 8
    int32_t in_features;
    int32_t out_features;
    int32_t out_stride;         // out_features rounded up to a multiple of 32 (padding is zero)
    int32_t groups;
} ck_gptq_weight;

/// Floats of the workspace ck_gptq_gemv_prepare fills for `rows` rows.
size_t ck_gptq_gemv_workspace(const ck_gptq_weight *w, int rows);
/// What every column tile of the GEMV shares, computed once per forward: the per-group sums
/// of x and x rescaled for the kernel's field extraction.
void ck_gptq_gemv_prepare(const ck_gptq_weight *w, const float *x, int rows, float *workspace);
/// Decode GEMV: y[r, o] = Σ_c x[r, c] · scale[g(c), o] · (q[c, o] − zero[g(c), o]) for
/// r < rows and o in [col_begin, col_end) ∩ [0, out_features); col_begin a multiple of 32.
/// x is [rows, in_features] in the weight's channel order, workspace prepared from it;
/// y has row stride ldy.
void ck_gptq_gemv(const ck_gptq_weight *w, const float *x, const float *workspace, int rows, int col_begin, int col_end,
                  float *y, size_t ldy);

/// Dequantizes channels [ch_begin, ch_end) × columns [col_begin, col_end) (multiples of 8,
/// within out_stride) into dst[(c − ch_begin) · ld + (o − col_begin)] = scale · (q − zero).
void ck_gptq_dequantize(const ck_gptq_weight *w, int ch_begin, int ch_end, int col_begin, int col_end, float *dst, size_t ld);

// Swaps two paths atomically (Linux renameat2 with RENAME_EXCHANGE); -1 with errno set on failure.
int ck_rename_exchange(const char *a, const char *b);

