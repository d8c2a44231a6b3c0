/*
 * moe_route.h: the router's choice for one token, the one definition both backends run (the CPU's
 * src/kernels/cpu/moe.c, per token on a thread; CUDA's src/kernels/cuda/moe.cu, per token on a device
 * thread), so the experts chosen and their ties are the same on either.
 *
 * id[K]: the K largest of the router logits l[E], in decreasing order, ties by the lower expert id (K passes
 * of an argmax over the experts not taken yet: K is small). w[K]: their softmax weights, over all E experts,
 * or over the K chosen when norm (the softmax of the chosen logits alone).
 */
#ifndef FERRY_MOE_ROUTE_H
#define FERRY_MOE_ROUTE_H

#include <math.h>
#include <stdbool.h>

#ifdef __CUDACC__
#define MOE_ROUTE_FN static __host__ __device__ inline
#else
#define MOE_ROUTE_FN static inline
#endif

MOE_ROUTE_FN void moe_route_token(int *id, float *w, const float *l, int E, int K, bool norm)
{
	for (int k = 0; k < K; k++) {
		int best = -1;
		for (int e = 0; e < E; e++) {
			bool taken = false;
			for (int j = 0; j < k && !taken; j++)
				taken = id[j] == e;
			if (!taken && (best < 0 || l[e] > l[best]))
				best = e;
		}
		id[k] = best;
	}
	float mx = l[id[0]], sum = 0, chosen = 0;
	for (int e = 0; e < E; e++)
		sum += expf(l[e] - mx);
	for (int k = 0; k < K; k++) {
		w[k] = expf(l[id[k]] - mx);
		chosen += w[k];
	}
	for (int k = 0; k < K; k++)
		w[k] /= norm ? chosen : sum;
}

#endif
