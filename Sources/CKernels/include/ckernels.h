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
