// renameat2 is declared only under _GNU_SOURCE, which Swift's Glibc module leaves out,
// and syscall() is variadic, which Swift cannot call: this is the one-line bridge.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include "ckernels.h"

int ck_rename_exchange(const char *a, const char *b) {
#if defined(__linux__) && defined(RENAME_EXCHANGE)
    return renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE);
#else
    errno = ENOSYS;
    return -1;
#endif
}
