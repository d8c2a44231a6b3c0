/*
 * cuda_blas.c: cuBLAS through dlopen (src/kernels/cuda/cuda_blas.h says why). The library is looked up by its
 * soname (the binary's runpath, LD_LIBRARY_PATH, the system), then in the toolkit ferry was built against.
 * Loaded once per process; the handle is never closed (the driver may still hold its kernels).
 */
#ifdef FERRY_CUDA
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "kernels/cuda/cuda_blas.h"

#ifndef FERRY_CUDA_HOME
#define FERRY_CUDA_HOME "/usr/local/cuda"
#endif

static struct cuda_blas blas;
static char blas_err[512];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void)
{
	const char *names[] = {"libcublas.so.13", FERRY_CUDA_HOME "/lib64/libcublas.so.13", "libcublas.so"};
	void *h = NULL;
	for (size_t i = 0; !h && i < sizeof(names) / sizeof(names[0]); i++)
		h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		snprintf(blas_err, sizeof(blas_err), "cuBLAS (libcublas.so.13) could not be loaded: %s", dlerror());
		return;
	}
	struct cuda_blas b;
	*(void **)&b.create = dlsym(h, "cublasCreate_v2");
	*(void **)&b.destroy = dlsym(h, "cublasDestroy_v2");
	*(void **)&b.set_stream = dlsym(h, "cublasSetStream_v2");
	*(void **)&b.set_workspace = dlsym(h, "cublasSetWorkspace_v2");
	*(void **)&b.gemm_ex = dlsym(h, "cublasGemmEx");
	*(void **)&b.status_string = dlsym(h, "cublasGetStatusString");
	if (!b.create || !b.destroy || !b.set_stream || !b.set_workspace || !b.gemm_ex || !b.status_string) {
		snprintf(blas_err, sizeof(blas_err), "cuBLAS: a function ferry needs is missing from the library");
		return;
	}
	blas = b;
}

const struct cuda_blas *cuda_blas_get(char *err, size_t errlen)
{
	pthread_once(&once, load);
	if (!blas.create) {
		snprintf(err, errlen, "%s", blas_err);
		return NULL;
	}
	return &blas;
}
#endif
