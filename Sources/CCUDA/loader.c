#include "ccuda.h"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Tries each ':'-separated candidate; on failure describes every attempt in `error`.
static void *open_first(const char *what, const char *candidates, char *error, size_t error_len) {
    char name[1024];
    const char *reason = "no candidates";
    char last_reason[512] = "";
    const char *p = candidates;
    while (*p) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > 0 && len < sizeof name) {
            memcpy(name, p, len);
            name[len] = 0;
            void *handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
            if (handle) return handle;
            reason = dlerror();
            snprintf(last_reason, sizeof last_reason, "%s", reason ? reason : "unknown");
        }
        p = end ? end + 1 : p + len;
    }
    snprintf(error, error_len, "%s not found (tried %s): %s", what, candidates, last_reason[0] ? last_reason : reason);
    return NULL;
}

#define RESOLVE(lib, field, symbol)                                                      \
    do {                                                                                 \
        void *sym = dlsym(lib, symbol);                                                  \
        if (!sym) {                                                                      \
            snprintf(error, error_len, "%s: symbol %s is missing", #lib, symbol);        \
            return 1;                                                                    \
        }                                                                                \
        memcpy(&api->field, &sym, sizeof sym);                                           \
    } while (0)

static int resolve_all(ccuda_api *api, void *libcuda, void *libnvrtc, void *libcublas, char *error, size_t error_len);

const ccuda_api *ccuda_open(const char *driver_candidates, const char *nvrtc_candidates,
                            const char *cublas_candidates, char *error, size_t error_len) {
    void *libcuda = open_first("the CUDA driver library (libcuda.so.1)", driver_candidates, error, error_len);
    if (!libcuda) return NULL;
    void *libnvrtc = open_first("the NVRTC library (libnvrtc.so)", nvrtc_candidates, error, error_len);
    if (!libnvrtc) return NULL;
    void *libcublas = open_first("the cuBLAS library (libcublas.so)", cublas_candidates, error, error_len);
    if (!libcublas) return NULL;
    ccuda_api *api = calloc(1, sizeof *api);
    if (!api || resolve_all(api, libcuda, libnvrtc, libcublas, error, error_len) != 0) {
        free(api);
        return NULL;
    }
    return api;
}

static int resolve_all(ccuda_api *api, void *libcuda, void *libnvrtc, void *libcublas, char *error, size_t error_len) {

    RESOLVE(libcuda, cuInit, "cuInit");
    RESOLVE(libcuda, cuDriverGetVersion, "cuDriverGetVersion");
    RESOLVE(libcuda, cuDeviceGetCount, "cuDeviceGetCount");
    RESOLVE(libcuda, cuDeviceGet, "cuDeviceGet");
    RESOLVE(libcuda, cuDeviceGetName, "cuDeviceGetName");
    RESOLVE(libcuda, cuDeviceGetAttribute, "cuDeviceGetAttribute");
    RESOLVE(libcuda, cuDeviceTotalMem, "cuDeviceTotalMem_v2");
    RESOLVE(libcuda, cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    RESOLVE(libcuda, cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
    RESOLVE(libcuda, cuCtxSetCurrent, "cuCtxSetCurrent");
    RESOLVE(libcuda, cuCtxSynchronize, "cuCtxSynchronize");
    RESOLVE(libcuda, cuMemGetInfo, "cuMemGetInfo_v2");
    RESOLVE(libcuda, cuMemAlloc, "cuMemAlloc_v2");
    RESOLVE(libcuda, cuMemFree, "cuMemFree_v2");
    RESOLVE(libcuda, cuMemAllocHost, "cuMemAllocHost_v2");
    RESOLVE(libcuda, cuMemFreeHost, "cuMemFreeHost");
    RESOLVE(libcuda, cuMemcpyHtoD, "cuMemcpyHtoD_v2");
    RESOLVE(libcuda, cuMemcpyDtoH, "cuMemcpyDtoH_v2");
    RESOLVE(libcuda, cuMemcpyDtoD, "cuMemcpyDtoD_v2");
    RESOLVE(libcuda, cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2");
    RESOLVE(libcuda, cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2");
    RESOLVE(libcuda, cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2");
    RESOLVE(libcuda, cuMemsetD8Async, "cuMemsetD8Async");
    RESOLVE(libcuda, cuStreamCreate, "cuStreamCreate");
    RESOLVE(libcuda, cuStreamDestroy, "cuStreamDestroy_v2");
    RESOLVE(libcuda, cuStreamSynchronize, "cuStreamSynchronize");
    RESOLVE(libcuda, cuEventCreate, "cuEventCreate");
    RESOLVE(libcuda, cuEventDestroy, "cuEventDestroy_v2");
    RESOLVE(libcuda, cuEventRecord, "cuEventRecord");
    RESOLVE(libcuda, cuEventSynchronize, "cuEventSynchronize");
    RESOLVE(libcuda, cuEventElapsedTime, "cuEventElapsedTime");
    RESOLVE(libcuda, cuModuleLoadData, "cuModuleLoadData");
    RESOLVE(libcuda, cuModuleUnload, "cuModuleUnload");
    RESOLVE(libcuda, cuModuleGetFunction, "cuModuleGetFunction");
    RESOLVE(libcuda, cuFuncSetAttribute, "cuFuncSetAttribute");
    RESOLVE(libcuda, cuFuncGetAttribute, "cuFuncGetAttribute");
    RESOLVE(libcuda, cuOccupancyMaxActiveBlocksPerMultiprocessor, "cuOccupancyMaxActiveBlocksPerMultiprocessor");
    RESOLVE(libcuda, cuLaunchKernel, "cuLaunchKernel");
    void *launch_ex = dlsym(libcuda, "cuLaunchKernelEx");
    memcpy(&api->cuLaunchKernelEx, &launch_ex, sizeof launch_ex);
    RESOLVE(libcuda, cuStreamBeginCapture, "cuStreamBeginCapture_v2");
    RESOLVE(libcuda, cuStreamEndCapture, "cuStreamEndCapture");
    RESOLVE(libcuda, cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags");
    RESOLVE(libcuda, cuGraphLaunch, "cuGraphLaunch");
    RESOLVE(libcuda, cuGraphExecDestroy, "cuGraphExecDestroy");
    RESOLVE(libcuda, cuGraphDestroy, "cuGraphDestroy");
    RESOLVE(libcuda, cuGetErrorName, "cuGetErrorName");
    RESOLVE(libcuda, cuGetErrorString, "cuGetErrorString");

    RESOLVE(libnvrtc, nvrtcVersion, "nvrtcVersion");
    RESOLVE(libnvrtc, nvrtcCreateProgram, "nvrtcCreateProgram");
    RESOLVE(libnvrtc, nvrtcDestroyProgram, "nvrtcDestroyProgram");
    RESOLVE(libnvrtc, nvrtcCompileProgram, "nvrtcCompileProgram");
    RESOLVE(libnvrtc, nvrtcGetCUBINSize, "nvrtcGetCUBINSize");
    RESOLVE(libnvrtc, nvrtcGetCUBIN, "nvrtcGetCUBIN");
    RESOLVE(libnvrtc, nvrtcGetProgramLogSize, "nvrtcGetProgramLogSize");
    RESOLVE(libnvrtc, nvrtcGetProgramLog, "nvrtcGetProgramLog");
    RESOLVE(libnvrtc, nvrtcGetErrorString, "nvrtcGetErrorString");

    RESOLVE(libcublas, cublasCreate, "cublasCreate_v2");
    RESOLVE(libcublas, cublasDestroy, "cublasDestroy_v2");
    RESOLVE(libcublas, cublasGetVersion, "cublasGetVersion_v2");
    RESOLVE(libcublas, cublasSetStream, "cublasSetStream_v2");
    RESOLVE(libcublas, cublasSetMathMode, "cublasSetMathMode");
    RESOLVE(libcublas, cublasGemmEx, "cublasGemmEx");
    RESOLVE(libcublas, cublasGemmStridedBatchedEx, "cublasGemmStridedBatchedEx");
    RESOLVE(libcublas, cublasSsyrk, "cublasSsyrk_v2");
    RESOLVE(libcublas, cublasDsyrk, "cublasDsyrk_v2");
    RESOLVE(libcublas, cublasDtrsm, "cublasDtrsm_v2");
    void *workspace = dlsym(libcublas, "cublasSetWorkspace_v2");
    memcpy(&api->cublasSetWorkspace, &workspace, sizeof workspace);
    return 0;
}
