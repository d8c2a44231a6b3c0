/*
 * moe.c: the mixture-of-experts ops around the experts' matmuls: the router's choice (cpu_moe_route), the
 * rows of the tokens routed to one expert gathered (cpu_gather_rows), and their outputs added back with
 * the router's weights (cpu_scatter_add). src/kernels/cuda/moe.cu mirrors them.
 *
 * Routing: src/kernels/moe_route.h, shared with CUDA. Letters: T tokens, E experts, K experts per token,
 * D row width.
 */
#include "kernels/cpu/cpu_ops.h"
#include "kernels/moe_route.h"

void cpu_moe_route(int *ids, float *wts, const float *logits, int T, int E, int K, bool norm)
{
#pragma omp parallel for schedule(static) if (T >= 16)
	for (int t = 0; t < T; t++)
		moe_route_token(ids + (size_t)t * (size_t)K, wts + (size_t)t * (size_t)K, logits + (size_t)t * (size_t)E, E,
				K, norm);
}

void cpu_gather_rows(float *dst, const float *src, const int *rows, int n, int64_t D)
{
#pragma omp parallel for schedule(static) if ((int64_t)n * D >= CPU_PAR_MIN)
	for (int i = 0; i < n; i++)
		for (int64_t d = 0; d < D; d++)
			dst[(size_t)i * (size_t)D + (size_t)d] = src[(size_t)rows[i] * (size_t)D + (size_t)d];
}

/* Each row of y is written by one thread only when rows has no repeats: the model passes one expert's
 * tokens, each once. */
void cpu_scatter_add(float *y, const float *src, const int *rows, const float *w, int n, int64_t D)
{
#pragma omp parallel for schedule(static) if ((int64_t)n * D >= CPU_PAR_MIN)
	for (int i = 0; i < n; i++)
		for (int64_t d = 0; d < D; d++)
			y[(size_t)rows[i] * (size_t)D + (size_t)d] += w[i] * src[(size_t)i * (size_t)D + (size_t)d];
}
