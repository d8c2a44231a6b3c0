/*
 * cuda_blas.h: cuBLAS, loaded with dlopen when the CUDA backend starts rather than linked: libcublasLt costs
 * some 200 MB of resident memory the moment a process maps it, which a CPU run, `ferry convert` or a
 * machine without cuBLAS should not pay. Only what ferry calls is resolved.
 */
#ifndef FERRY_CUDA_BLAS_H
#define FERRY_CUDA_BLAS_H

#include <cublas_v2.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cuda_blas {
	cublasStatus_t (*create)(cublasHandle_t *h);
	cublasStatus_t (*destroy)(cublasHandle_t h);
	cublasStatus_t (*set_stream)(cublasHandle_t h, cudaStream_t s);
	cublasStatus_t (*set_workspace)(cublasHandle_t h, void *ws, size_t bytes);
	cublasStatus_t (*gemm_ex)(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
				  const void *alpha, const void *A, cudaDataType at, int lda, const void *B,
				  cudaDataType bt, int ldb, const void *beta, void *C, cudaDataType ct, int ldc,
				  cublasComputeType_t compute, cublasGemmAlgo_t algo);
	const char *(*status_string)(cublasStatus_t s);
};

/* The loaded library (loads it on the first call); NULL with a one-line reason in err when it cannot. */
const struct cuda_blas *cuda_blas_get(char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
