/*
 * probe.cu: asks the CUDA runtime which GPUs exist, so that `--device auto` can say what it found.
 * Compiled only when nvcc is present; a machine without a GPU or driver reports 0 devices.
 */
#include <cuda_runtime.h>
#include <stdio.h>

#include "kernels/cuda/cuda_probe.h"

extern "C" int cuda_probe(char *desc, size_t n)
{
	int count = 0;
	if (cudaGetDeviceCount(&count) != cudaSuccess || count <= 0) {
		cudaGetLastError(); /* clear the sticky "no device" error */
		if (n)
			desc[0] = 0;
		return 0;
	}
	cudaDeviceProp p;
	if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) {
		snprintf(desc, n, "GPU 0 (properties unavailable)");
		return count;
	}
	snprintf(desc, n, "%s, %.1f GiB, sm_%d%d", p.name, (double)p.totalGlobalMem / (1 << 30), p.major, p.minor);
	return count;
}
