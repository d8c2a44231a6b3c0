/*
 * pace.cu: pacing a stream's copies to emulate a slower host-to-device link (--h2d-limit): a one-thread
 * kernel before a copy notes the GPU's clock, one after it spins until the copy's bytes at the limited rate
 * have elapsed since the note. Emulation only: it holds one multiprocessor while it waits.
 */
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_ops.h"

static __device__ unsigned long long clock_ns(void)
{
	unsigned long long t;
	asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
	return t;
}

static __global__ void pace_mark(unsigned long long *mark)
{
	*mark = clock_ns();
}

static __global__ void pace_wait(const unsigned long long *mark, unsigned long long ns)
{
	unsigned long long until = *mark + ns;
	while (clock_ns() < until)
		__nanosleep(1000);
}

extern "C" int cuda_pace(void *stream, unsigned long long *mark, int after, unsigned long long ns)
{
	cudaStream_t s = (cudaStream_t)stream;
	if (after)
		pace_wait<<<1, 1, 0, s>>>(mark, ns);
	else
		pace_mark<<<1, 1, 0, s>>>(mark);
	return cudaGetLastError() == cudaSuccess ? 0 : -5;
}
