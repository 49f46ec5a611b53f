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

// ---- GGUF dequantization (ggml block layouts, 32 elements per block) ---
// Each writes 32 * n_blocks floats. The arithmetic is that of the `gguf`
// package's numpy code, so the results match it bit for bit.
/// Q8_0 block: f16 d, 32 int8 q; x = d * q.
void ck_dequant_q8_0(const uint8_t *blocks, float *dst, size_t n_blocks);
/// Q4_0 block: f16 d, 16 bytes; low nibbles are elements 0..15, high nibbles 16..31; x = d * (q - 8).
void ck_dequant_q4_0(const uint8_t *blocks, float *dst, size_t n_blocks);
/// Q4_1 block: f16 d, f16 m, 16 bytes (nibbles as Q4_0); x = d * q + m.
void ck_dequant_q4_1(const uint8_t *blocks, float *dst, size_t n_blocks);
