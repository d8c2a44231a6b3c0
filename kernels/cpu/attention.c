/*
 * attention.c: KV store and causal GQA attention over an f32 KV cache in RAM. One thread computes one
 * (token, head) pair: scores over the visible cache rows, max-subtracted softmax in f32, weighted sum of V.
 * Key row j is visible to a query at position p iff j <= p and (window == 0 or p - j < window).
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "cpu_ops.h"

void cpu_kv_store(float *kc, float *vc, const float *k, const float *v, const int *pos, int T, int kv_dim)
{
	for (int t = 0; t < T; t++) {
		memcpy(kc + (size_t)pos[t] * (size_t)kv_dim, k + (size_t)t * (size_t)kv_dim, sizeof(float) * (size_t)kv_dim);
		memcpy(vc + (size_t)pos[t] * (size_t)kv_dim, v + (size_t)t * (size_t)kv_dim, sizeof(float) * (size_t)kv_dim);
	}
}

void cpu_attention(float *out, const float *q, const float *kc, const float *vc, const int *pos, int T, int H,
		   int Hkv, int Dh, int window, float scale, float *scratch, int64_t per_thread)
{
	int group = H / Hkv, kv_dim = Hkv * Dh;
#pragma omp parallel
	{
		float *sc = scratch + (size_t)omp_get_thread_num() * (size_t)per_thread;
#pragma omp for schedule(static) collapse(2)
		for (int t = 0; t < T; t++) {
			for (int h = 0; h < H; h++) {
				int p = pos[t], j0 = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
				const float *qv = q + ((size_t)t * (size_t)H + (size_t)h) * (size_t)Dh;
				const float *kb = kc + (size_t)(h / group) * (size_t)Dh;
				const float *vb = vc + (size_t)(h / group) * (size_t)Dh;
				float *o = out + ((size_t)t * (size_t)H + (size_t)h) * (size_t)Dh;
				float mx = -INFINITY;
				for (int j = j0; j <= p; j++) {
					const float *kv = kb + (size_t)j * (size_t)kv_dim;
					float s = 0;
#pragma omp simd reduction(+ : s)
					for (int i = 0; i < Dh; i++)
						s += qv[i] * kv[i];
					sc[j] = s * scale;
					mx = sc[j] > mx ? sc[j] : mx;
				}
				float sum = 0;
				for (int j = j0; j <= p; j++) {
					sc[j] = expf(sc[j] - mx);
					sum += sc[j];
				}
				memset(o, 0, sizeof(float) * (size_t)Dh);
				for (int j = j0; j <= p; j++) {
					const float *vv = vb + (size_t)j * (size_t)kv_dim;
					float wgt = sc[j] / sum;
					for (int i = 0; i < Dh; i++)
						o[i] += wgt * vv[i];
				}
			}
		}
	}
}
