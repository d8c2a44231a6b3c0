/*
 * pinned.cu: page-locked host memory from the CUDA runtime, for the streamer's slots and RAM tier, so that
 * uploads from them are DMA at the bus's rate (pageable memory is staged by the driver at a fraction of it).
 * Signatures match io_host_alloc (io/stream.h) without depending on io/.
 */
#include <cuda_runtime.h>

#include "cuda_probe.h"

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
