#pragma once
// CUDA driver, NVRTC and cuBLAS entry points, resolved at run time with dlopen.
// Nothing CUDA is needed to build or link swift-gptq: the types below are declared
// here (opaque handles, enums as ints) with the ABI of the CUDA 12/13 libraries.
#include <stddef.h>
#include <stdint.h>

// The table's entries are never NULL once loaded (cuLaunchKernelEx and cublasSetWorkspace excepted);
// only they carry nullability, so Swift calls them without unwrapping.
#pragma clang diagnostic ignored "-Wnullability-completeness"

// ---- driver API types ----------------------------------------------------
typedef int CUresult;                       // CUDA_SUCCESS = 0
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef struct CUgraph_st *CUgraph;
typedef struct CUgraphExec_st *CUgraphExec;

// cuLaunchKernelEx's launch configuration (CUDA ≥ 11.8), laid out as cuda.h lays it out:
// an attribute is its id, padding to 8 bytes and a 64-byte value union (72 bytes).
enum { CCUDA_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6 };
typedef struct CUlaunchAttribute {
    int id;
    char pad[4];
    union {
        char pad[64];
        int programmaticStreamSerializationAllowed;
    } value;
} CUlaunchAttribute;
typedef struct CUlaunchConfig {
    unsigned int gridDimX, gridDimY, gridDimZ;
    unsigned int blockDimX, blockDimY, blockDimZ;
    unsigned int sharedMemBytes;
    CUstream hStream;
    CUlaunchAttribute *attrs;
    unsigned int numAttrs;
} CUlaunchConfig;

// ---- NVRTC types ---------------------------------------------------------
typedef int nvrtcResult;                    // NVRTC_SUCCESS = 0
typedef struct _nvrtcProgram *nvrtcProgram;

// ---- cuBLAS types --------------------------------------------------------
typedef int cublasStatus_t;                 // CUBLAS_STATUS_SUCCESS = 0
typedef struct cublasContext *cublasHandle_t;

/// Every entry point swift-gptq uses. Optional ones (marked) may be NULL.
typedef struct ccuda_api {
    // driver
    CUresult (* _Nonnull cuInit)(unsigned int flags);
    CUresult (* _Nonnull cuDriverGetVersion)(int *version);
    CUresult (* _Nonnull cuDeviceGetCount)(int *count);
    CUresult (* _Nonnull cuDeviceGet)(CUdevice *device, int ordinal);
    CUresult (* _Nonnull cuDeviceGetName)(char *name, int len, CUdevice device);
    CUresult (* _Nonnull cuDeviceGetAttribute)(int *value, int attribute, CUdevice device);
    CUresult (* _Nonnull cuDeviceTotalMem)(size_t *bytes, CUdevice device);
    CUresult (* _Nonnull cuDevicePrimaryCtxRetain)(CUcontext *context, CUdevice device);
    CUresult (* _Nonnull cuDevicePrimaryCtxRelease)(CUdevice device);
    CUresult (* _Nonnull cuCtxSetCurrent)(CUcontext context);
    CUresult (* _Nonnull cuCtxSynchronize)(void);
    CUresult (* _Nonnull cuMemGetInfo)(size_t *free_bytes, size_t *total_bytes);
    CUresult (* _Nonnull cuMemAlloc)(CUdeviceptr *ptr, size_t bytes);
    CUresult (* _Nonnull cuMemFree)(CUdeviceptr ptr);
    CUresult (* _Nonnull cuMemAllocHost)(void **ptr, size_t bytes);
    CUresult (* _Nonnull cuMemFreeHost)(void *ptr);
    CUresult (* _Nonnull cuMemcpyHtoD)(CUdeviceptr dst, const void *src, size_t bytes);
    CUresult (* _Nonnull cuMemcpyDtoH)(void *dst, CUdeviceptr src, size_t bytes);
    CUresult (* _Nonnull cuMemcpyDtoD)(CUdeviceptr dst, CUdeviceptr src, size_t bytes);
    CUresult (* _Nonnull cuMemcpyHtoDAsync)(CUdeviceptr dst, const void *src, size_t bytes, CUstream stream);
    CUresult (* _Nonnull cuMemcpyDtoHAsync)(void *dst, CUdeviceptr src, size_t bytes, CUstream stream);
    CUresult (* _Nonnull cuMemcpyDtoDAsync)(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream stream);
    CUresult (* _Nonnull cuMemsetD8Async)(CUdeviceptr dst, unsigned char value, size_t count, CUstream stream);
    CUresult (* _Nonnull cuStreamCreate)(CUstream *stream, unsigned int flags);
    CUresult (* _Nonnull cuStreamDestroy)(CUstream stream);
    CUresult (* _Nonnull cuStreamSynchronize)(CUstream stream);
    CUresult (* _Nonnull cuEventCreate)(CUevent *event, unsigned int flags);
    CUresult (* _Nonnull cuEventDestroy)(CUevent event);
    CUresult (* _Nonnull cuEventRecord)(CUevent event, CUstream stream);
    CUresult (* _Nonnull cuEventSynchronize)(CUevent event);
    CUresult (* _Nonnull cuEventElapsedTime)(float *ms, CUevent start, CUevent end);
    CUresult (* _Nonnull cuModuleLoadData)(CUmodule *module, const void *image);
    CUresult (* _Nonnull cuModuleUnload)(CUmodule module);
    CUresult (* _Nonnull cuModuleGetFunction)(CUfunction *function, CUmodule module, const char *name);
    CUresult (* _Nonnull cuFuncSetAttribute)(CUfunction function, int attribute, int value);
    CUresult (* _Nonnull cuFuncGetAttribute)(int *value, int attribute, CUfunction function);
    CUresult (* _Nonnull cuOccupancyMaxActiveBlocksPerMultiprocessor)(int *blocks, CUfunction function, int block_threads,
                                                                      size_t dynamic_shared_bytes);
    CUresult (* _Nonnull cuLaunchKernel)(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                               unsigned int bx, unsigned int by, unsigned int bz,
                               unsigned int shared_bytes, CUstream stream, void **params, void **extra);
    /// Optional (CUDA ≥ 11.8): launches with attributes (programmatic dependent launch).
    CUresult (* _Nullable cuLaunchKernelEx)(const CUlaunchConfig *config, CUfunction f, void **params, void **extra);
    CUresult (* _Nonnull cuStreamBeginCapture)(CUstream stream, int mode);
    CUresult (* _Nonnull cuStreamEndCapture)(CUstream stream, CUgraph *graph);
    CUresult (* _Nonnull cuGraphInstantiateWithFlags)(CUgraphExec *exec, CUgraph graph, unsigned long long flags);
    CUresult (* _Nonnull cuGraphLaunch)(CUgraphExec exec, CUstream stream);
    CUresult (* _Nonnull cuGraphExecDestroy)(CUgraphExec exec);
    CUresult (* _Nonnull cuGraphDestroy)(CUgraph graph);
    CUresult (* _Nonnull cuGetErrorName)(CUresult error, const char **name);
    CUresult (* _Nonnull cuGetErrorString)(CUresult error, const char **text);

    // NVRTC
    nvrtcResult (* _Nonnull nvrtcVersion)(int *major, int *minor);
    nvrtcResult (* _Nonnull nvrtcCreateProgram)(nvrtcProgram *program, const char *source, const char *name,
                                      int header_count, const char *const *headers, const char *const *include_names);
    nvrtcResult (* _Nonnull nvrtcDestroyProgram)(nvrtcProgram *program);
    nvrtcResult (* _Nonnull nvrtcCompileProgram)(nvrtcProgram program, int option_count, const char *const *options);
    nvrtcResult (* _Nonnull nvrtcGetCUBINSize)(nvrtcProgram program, size_t *bytes);
    nvrtcResult (* _Nonnull nvrtcGetCUBIN)(nvrtcProgram program, char *cubin);
    nvrtcResult (* _Nonnull nvrtcGetProgramLogSize)(nvrtcProgram program, size_t *bytes);
    nvrtcResult (* _Nonnull nvrtcGetProgramLog)(nvrtcProgram program, char *log);
    const char *(* _Nonnull nvrtcGetErrorString)(nvrtcResult result);

    // cuBLAS (the _v2 entry points; cuBLAS takes the driver's current context)
    cublasStatus_t (* _Nonnull cublasCreate)(cublasHandle_t *handle);
    cublasStatus_t (* _Nonnull cublasDestroy)(cublasHandle_t handle);
    cublasStatus_t (* _Nonnull cublasGetVersion)(cublasHandle_t handle, int *version);
    cublasStatus_t (* _Nonnull cublasSetStream)(cublasHandle_t handle, CUstream stream);
    cublasStatus_t (* _Nonnull cublasSetMathMode)(cublasHandle_t handle, int mode);
    /// Optional (cuBLAS ≥ 11.4): lets graph capture use a workspace we own.
    cublasStatus_t (* _Nullable cublasSetWorkspace)(cublasHandle_t handle, void *workspace, size_t bytes);
    cublasStatus_t (* _Nonnull cublasGemmEx)(cublasHandle_t handle, int transa, int transb, int m, int n, int k,
                                   const void *alpha, const void *a, int a_type, int lda,
                                   const void *b, int b_type, int ldb, const void *beta,
                                   void *c, int c_type, int ldc, int compute_type, int algo);
    cublasStatus_t (* _Nonnull cublasGemmStridedBatchedEx)(cublasHandle_t handle, int transa, int transb, int m, int n, int k,
                                                 const void *alpha, const void *a, int a_type, int lda, long long stride_a,
                                                 const void *b, int b_type, int ldb, long long stride_b, const void *beta,
                                                 void *c, int c_type, int ldc, long long stride_c,
                                                 int batch_count, int compute_type, int algo);
    // GPTQ on the GPU: Hessian accumulation (C = alpha·A·Aᵀ + beta·C, one triangle) and the
    // blocked float64 Cholesky factorisation and triangular inverse of the damped Hessian.
    cublasStatus_t (* _Nonnull cublasSsyrk)(cublasHandle_t handle, int uplo, int trans, int n, int k,
                                  const float *alpha, const float *a, int lda, const float *beta, float *c, int ldc);
    cublasStatus_t (* _Nonnull cublasDsyrk)(cublasHandle_t handle, int uplo, int trans, int n, int k,
                                  const double *alpha, const double *a, int lda, const double *beta, double *c, int ldc);
    cublasStatus_t (* _Nonnull cublasDtrsm)(cublasHandle_t handle, int side, int uplo, int trans, int diag, int m, int n,
                                  const double *alpha, const double *a, int lda, double *b, int ldb);
} ccuda_api;

/// Opens the three libraries and resolves every entry point into a table that lives
/// as long as the process. Each `*_candidates` is a ':'-separated list of file names
/// or paths, tried in order. Returns NULL and writes into `error` which library (with
/// every candidate tried and dlerror's reason) or which symbol is missing.
const ccuda_api *ccuda_open(const char *driver_candidates, const char *nvrtc_candidates,
                            const char *cublas_candidates, char *error, size_t error_len);
