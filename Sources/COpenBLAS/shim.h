#pragma once
// OpenBLAS (Debian: libopenblas-dev) provides CBLAS and the Fortran LAPACK symbols.
#include <cblas.h>

// LAPACK Cholesky factorisation and inverse from a factor, Fortran calling convention.
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info);
void spotrf_(const char *uplo, const int *n, float *a, const int *lda, int *info);
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
