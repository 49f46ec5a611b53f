/// Helpers every kernel source starts with. Half precision is declared here with PTX
/// (no cuda_fp16.h), so NVRTC needs no CUDA headers at run time.
enum KernelPrelude {
    static let source = #"""
typedef unsigned short half_t;     // IEEE binary16 bits
typedef unsigned int half2_t;      // two binary16, the first in the low half
typedef unsigned int uint32_t;
typedef int int32_t;
typedef unsigned long long uint64_t;

__device__ __forceinline__ float h2f(half_t h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ half_t f2h(float f) { half_t h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ half2_t hsub2(half2_t a, half2_t b) { half2_t r; asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b)); return r; }
__device__ __forceinline__ half2_t hmul2(half2_t a, half2_t b) { half2_t r; asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b)); return r; }
__device__ __forceinline__ half2_t hfma2(half2_t a, half2_t b, half2_t c) { half2_t r; asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c)); return r; }
__device__ __forceinline__ float2 h22f2(half2_t v) { return make_float2(h2f((half_t)(v & 0xffff)), h2f((half_t)(v >> 16))); }
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t selector) {
    uint32_t r; asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(selector)); return r;
}
/// (a & mask) | bits in one LOP3.
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t mask, uint32_t bits) {
    uint32_t r; asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(a), "r"(mask), "r"(bits)); return r;
}
/// Programmatic dependent launch (compute capability 9.0; no-ops below it, and when the
/// kernel was launched plainly). wait_for_prior_grids: blocks until the kernel ahead on the
/// stream has finished and its writes are visible (before reading what it may write, and
/// before any write). allow_dependent_grids: the kernel behind, if launched to overlap, may
/// start once every block of this one has called it or exited.
__device__ __forceinline__ void wait_for_prior_grids() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_dependent_grids() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ float warp_sum(float v) {
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v, float *scratch32) {
    v = warp_sum(v);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) scratch32[warp] = v;
    __syncthreads();
    float t = lane < warps ? scratch32[lane] : 0.f;
    return warp_sum(t);
}
__device__ __forceinline__ float block_max(float v, float *scratch32) {
    v = warp_max(v);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) scratch32[warp] = v;
    __syncthreads();
    float t = lane < warps ? scratch32[lane] : -3.0e38f;
    return warp_max(t);
}

"""#
}
