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

// ---- int8 activations (q8_kernels.c) -------------------------------------
/// The instruction sets of the int8 kernels: every one computes the same integer dot
/// products (AVX2 maddubs/madd, AVX-VNNI or AVX-512 VNNI vpdpbusd on 256 bits, plain C).
enum { CK_Q8_SCALAR = 0, CK_Q8_AVX2 = 1, CK_Q8_AVXVNNI = 2, CK_Q8_AVX512VNNI = 3 };
typedef int ck_q8_path;
/// Whether this CPU can run `path`.
int ck_q8_path_supported(ck_q8_path path);
/// The path the int8 kernels take: the best this CPU has, unless ck_q8_select_path chose one.
ck_q8_path ck_q8_current_path(void);
/// Makes the kernels take `path` (−1: the best again), for tests and benchmarks; 0 when the
/// CPU lacks it (nothing changes), else 1.
int ck_q8_select_path(int path);

/// Rows of activations quantized per block of 32 channels: x[c] ≈ scales[c / 32] · values[c],
/// values in [−127, 127], scale = max |x| of the block / 127 (round to nearest even).
/// The GPTQ kernels' copy adds the values in the order their bits read them (arranged) and
/// Σ scale · value per group of the weight (group_sums). Pointers are into a workspace.
typedef struct {
    int32_t rows;
    int32_t in_features;           // a multiple of 32
    const int8_t *values;          // [rows][values_stride], channel order
    size_t values_stride;
    const float *scales;           // [rows][scales_stride], in_features / 32 used
    size_t scales_stride;
    const int8_t *arranged;        // GPTQ only: [rows][arranged_stride] bytes, int16 for 8 bits
    size_t arranged_stride;
    int32_t arranged_width;        // bytes per channel in `arranged`
    const float *group_sums;       // GPTQ only: [rows][group_sums_stride]
    size_t group_sums_stride;
} ck_q8_rows;

/// Workspace bytes (64-byte aligned memory) for `rows` rows: bits 0 for ck_q8_quantize,
/// else the GPTQ weight's bits and groups for ck_gptq_q8_prepare.
size_t ck_q8_rows_bytes(int rows, int in_features, int bits, int groups);
/// Quantizes x [rows, in_features] (in_features a multiple of 32) into the workspace.
ck_q8_rows ck_q8_quantize(const float *x, int rows, int in_features, void *workspace);

/// Whether the int8 GEMV can run `w`: in_features and every group start multiples of 32.
int ck_gptq_q8_supported(const ck_gptq_weight *w);
/// x [rows, in_features] in the weight's channel order, quantized for ck_gptq_q8_gemv.
ck_q8_rows ck_gptq_q8_prepare(const ck_gptq_weight *w, const float *x, int rows, void *workspace);
/// ck_gptq_gemv with int8 activations: y[r, o] = Σ_g scale · (Σ_{c in g} x̂[r, c] · q[c, o] − zero · Σ_{c in g} x̂[r, c]),
/// x̂ = the quantized x, for o in [col_begin, col_end) ∩ [0, out_features), col_begin a multiple of 32.
void ck_gptq_q8_gemv(const ck_gptq_weight *w, const ck_q8_rows *x, int col_begin, int col_end, float *y, size_t ldy);

/// An int8 matrix [out_features, in_features] (in_features a multiple of 32) with a float
/// scale per row: w[o, c] ≈ scales[o] · weight[o, c], weight in [−127, 127].
typedef struct {
    const int8_t *weight;
    const float *scales;
    int32_t in_features;
    int32_t out_features;
} ck_q8_matrix;
/// Quantizes w [rows, in_features] row by row: scale = max |w| / 127, round to nearest even.
void ck_q8_quantize_matrix(const float *w, int rows, int in_features, int8_t *q, float *scales);
/// y[r, o] = scales[o] · Σ_c weight[o, c] · x̂[r, c] for o in [o_begin, o_end), r < x->rows.
void ck_q8_matrix_gemv(const ck_q8_matrix *m, const ck_q8_rows *x, int o_begin, int o_end, float *y, size_t ldy);

// Swaps two paths atomically (Linux renameat2 with RENAME_EXCHANGE); -1 with errno set on failure.
int ck_rename_exchange(const char *a, const char *b);

