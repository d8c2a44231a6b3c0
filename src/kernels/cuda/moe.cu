/*
 * moe.cu: the mixture-of-experts ops around the experts' matmuls, as src/kernels/cpu/moe.c: the router's
 * choice (cuda_moe_route: one thread per token running src/kernels/moe_route.h, the CPU's definition, so
 * the choice and its ties are the CPU's exactly), the rows routed to one expert gathered
 * (cuda_gather_rows) and added back with their weights (cuda_scatter_add: rows without repeats, so every
 * element has one writer and no atomics).
 */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/moe_route.h"

static __global__ void k_moe_route(int *ids, float *wts, const float *logits, int T, int E, int K, bool norm)
{
	int t = blockIdx.x * blockDim.x + threadIdx.x;
	if (t >= T)
		return;
	moe_route_token(ids + (size_t)t * K, wts + (size_t)t * K, logits + (size_t)t * E, E, K, norm);
}

static __global__ void k_gather_rows(float *dst, const float *src, const int *rows, int n, int64_t D)
{
	int64_t N = (int64_t)n * D;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N; i += (int64_t)gridDim.x * blockDim.x)
		dst[i] = src[(int64_t)rows[i / D] * D + i % D];
}

static __global__ void k_scatter_add(float *y, const float *src, const int *rows, const float *w, int n, int64_t D)
{
	int64_t N = (int64_t)n * D;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N; i += (int64_t)gridDim.x * blockDim.x)
		y[(int64_t)rows[i / D] * D + i % D] += w[i / D] * src[i];
}

static unsigned rows_blocks(const struct cuda_ctx *c, int64_t n)
{
	int64_t want = (n + 255) / 256, cap = (int64_t)(c->n_sm > 0 ? c->n_sm : 1) * 16;
	return (unsigned)(want < cap ? want : cap);
}

extern "C" int cuda_moe_route(struct cuda_ctx *c, int *ids, float *wts, const float *logits, int T, int E, int K,
			      bool norm)
{
	CUDA_ARG_CHECK(c, T >= 0 && E >= 1 && K >= 1 && K <= E, "cuda_moe_route: T %d, E %d, K %d", T, E, K);
	if (T == 0)
		return 0;
	k_moe_route<<<(T + 63) / 64, 64, 0, cuda_stream_of(c)>>>(ids, wts, logits, T, E, K, norm);
	CUDA_LAUNCH_CHECK(c, "k_moe_route");
	return 0;
}

extern "C" int cuda_gather_rows(struct cuda_ctx *c, float *dst, const float *src, const int *rows, int n, int64_t D)
{
	CUDA_ARG_CHECK(c, n >= 0 && D >= 1, "cuda_gather_rows: n %d, D %lld", n, (long long)D);
	if (n == 0)
		return 0;
	k_gather_rows<<<rows_blocks(c, (int64_t)n * D), 256, 0, cuda_stream_of(c)>>>(dst, src, rows, n, D);
	CUDA_LAUNCH_CHECK(c, "k_gather_rows");
	return 0;
}

extern "C" int cuda_scatter_add(struct cuda_ctx *c, float *y, const float *src, const int *rows, const float *w, int n,
				int64_t D)
{
	CUDA_ARG_CHECK(c, n >= 0 && D >= 1, "cuda_scatter_add: n %d, D %lld", n, (long long)D);
	if (n == 0)
		return 0;
	k_scatter_add<<<rows_blocks(c, (int64_t)n * D), 256, 0, cuda_stream_of(c)>>>(y, src, rows, w, n, D);
	CUDA_LAUNCH_CHECK(c, "k_scatter_add");
	return 0;
}
