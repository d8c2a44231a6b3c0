/*
 * pinned.cu: page-locked host memory from the CUDA runtime, for the streamer's slots and RAM tier, so that
 * uploads from them are DMA at the bus's rate (pageable memory is staged by the driver at a fraction of it).
 * Signatures match io_host_alloc (src/io/stream.h) without depending on io/.
 */
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_probe.h"

extern "C" void *cuda_host_alloc(size_t bytes, void *ctx)
{
	(void)ctx;
	void *p = NULL;
	if (cudaHostAlloc(&p, bytes, cudaHostAllocPortable) != cudaSuccess) {
		cudaGetLastError();
		return NULL;
	}
	return p;
}

extern "C" void cuda_host_free(void *p, size_t bytes, void *ctx)
{
	(void)bytes;
	(void)ctx;
	cudaFreeHost(p);
}

/* Median seconds of one cudaMemcpy host -> device of `bytes` from `host` over `reps` timed copies (after a
 * warm-up copy), timed with events; -1 when no device or an allocation fails. */
extern "C" double cuda_h2d_seconds(const void *host, size_t bytes, int reps)
{
	void *dev = NULL;
	cudaEvent_t a, b;
	if (cudaMalloc(&dev, bytes) != cudaSuccess) {
		cudaGetLastError();
		return -1;
	}
	cudaEventCreate(&a);
	cudaEventCreate(&b);
	float ms[64];
	reps = reps < 1 ? 1 : reps > 64 ? 64 : reps;
	bool ok = cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice) == cudaSuccess;
	for (int i = 0; ok && i < reps; i++) {
		cudaEventRecord(a);
		ok = cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice) == cudaSuccess;
		cudaEventRecord(b);
		ok = ok && cudaEventSynchronize(b) == cudaSuccess && cudaEventElapsedTime(&ms[i], a, b) == cudaSuccess;
	}
	cudaEventDestroy(a);
	cudaEventDestroy(b);
	cudaFree(dev);
	if (!ok) {
		cudaGetLastError();
		return -1;
	}
	for (int i = 1; i < reps; i++) /* insertion sort for the median */
		for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
			float t = ms[j];
			ms[j] = ms[j - 1];
			ms[j - 1] = t;
		}
	return ms[reps / 2] / 1e3;
}
