#include "ccuda.h"
#include <dlfcn.h>
#include <stdio.h>

int ccuda_load(char *error, size_t error_len) {
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) { snprintf(error, error_len, "libcuda.so.1 not found: %s", dlerror()); return 1; }
    return 0;
}
