#pragma once
// CUDA driver, NVRTC and cuBLAS entry points, resolved at run time with dlopen.
// Nothing CUDA is needed to build or link swift-gptq; see Backends/CUDA.
#include <stddef.h>
#include <stdint.h>

/// Opens libcuda.so.1, libnvrtc and libcublas. Returns 0 on success; otherwise
/// writes a message naming the library that is missing into `error`.
int ccuda_load(char *error, size_t error_len);
