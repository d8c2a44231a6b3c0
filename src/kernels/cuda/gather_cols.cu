/*
 * gather_cols.cu: dst[t, j] = src[t, perm[j]] for T rows of K (perm: f32 indices in device memory), the
 * activation permutation of act-order weights; as src/kernels/cpu/gather_cols.c.
 */
#include "kernels/cuda/cuda_common.cuh"

static __global__ void k_gather_cols(float *dst, const float *src, const float *perm, int64_t N, int64_t K)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N; i += (int64_t)gridDim.x * blockDim.x)
		dst[i] = src[i - i % K + (int64_t)perm[i % K]];
}

extern "C" int cuda_gather_cols(struct cuda_ctx *c, float *dst, const float *src, const float *perm, int T, int64_t K)
{
	CUDA_ARG_CHECK(c, T >= 0 && K >= 1 && dst != src, "cuda_gather_cols: T %d, K %lld", T, (long long)K);
	int64_t N = (int64_t)T * K, want = (N + 255) / 256, cap = (int64_t)(c->n_sm > 0 ? c->n_sm : 1) * 16;
	if (N == 0)
		return 0;
	k_gather_cols<<<(unsigned)(want < cap ? want : cap), 256, 0, cuda_stream_of(c)>>>(dst, src, perm, N, K);
	CUDA_LAUNCH_CHECK(c, "k_gather_cols");
	return 0;
}
