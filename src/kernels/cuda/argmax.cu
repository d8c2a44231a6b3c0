/*
 * argmax.cu: greedy sampling, idx[t] = the index of the largest of logits[t, 0..V) (cuda_argmax), the lowest
 * index among equal maxima, as a host loop with a strict '>' would pick. One block per row: each thread keeps
 * the first maximum of its strided elements, then a tree over lanes and warps keeps the larger value, or the
 * lower index on a tie.
 */
#include "kernels/cuda/cuda_common.cuh"

#define ARGMAX_THREADS 1024

static __device__ __forceinline__ void argmax_merge(float *v, int *i, float v2, int i2)
{
	if (v2 > *v || (v2 == *v && i2 < *i)) {
		*v = v2;
		*i = i2;
	}
}

static __global__ void __launch_bounds__(ARGMAX_THREADS) k_argmax(int *idx, const float *logits, int V)
{
	__shared__ float wv[ARGMAX_THREADS / 32];
	__shared__ int wi[ARGMAX_THREADS / 32];
	const float *row = logits + (size_t)blockIdx.x * (size_t)V;
	int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	float best = -INFINITY;
	int bi = tid < V ? tid : 0x7fffffff;
	if (tid < V)
		best = row[tid];
	for (int i = tid + ARGMAX_THREADS; i < V; i += ARGMAX_THREADS)
		if (row[i] > best) {
			best = row[i];
			bi = i;
		}
	for (int o = 16; o > 0; o >>= 1)
		argmax_merge(&best, &bi, __shfl_xor_sync(0xffffffffu, best, o), __shfl_xor_sync(0xffffffffu, bi, o));
	if (lane == 0) {
		wv[warp] = best;
		wi[warp] = bi;
	}
	__syncthreads();
	if (warp == 0) {
		best = wv[lane];
		bi = wi[lane];
		for (int o = 16; o > 0; o >>= 1)
			argmax_merge(&best, &bi, __shfl_xor_sync(0xffffffffu, best, o),
				     __shfl_xor_sync(0xffffffffu, bi, o));
		if (lane == 0)
			idx[blockIdx.x] = bi;
	}
}

extern "C" int cuda_argmax(struct cuda_ctx *c, int *idx, const float *logits, int T, int V)
{
	CUDA_ARG_CHECK(c, T >= 0 && V > 0, "cuda_argmax: T = %d, V = %d", T, V);
	if (T == 0)
		return 0;
	k_argmax<<<T, ARGMAX_THREADS, 0, cuda_stream_of(c)>>>(idx, logits, V);
	CUDA_LAUNCH_CHECK(c, "k_argmax");
	return 0;
}
