/*
 * kv_store.cu: writes a step's keys and values (f32) into the f16 KV cache of a layer at rows pos[t]
 * (cuda_kv_store), as kernels/cpu/attention.c's cpu_kv_store; f32 -> f16 rounds to nearest even. One thread
 * per element of k and v.
 */
#include "cuda_common.cuh"

static __global__ void k_kv_store(uint16_t *kc, uint16_t *vc, const float *k, const float *v, const int *pos,
				  int T, int kv_dim)
{
	int64_t n = (int64_t)T * kv_dim;
	for (int64_t id = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; id < n;
	     id += (int64_t)gridDim.x * blockDim.x) {
		int t = (int)(id / kv_dim), i = (int)(id % kv_dim);
		size_t dst = (size_t)pos[t] * (size_t)kv_dim + (size_t)i;
		kc[dst] = __half_as_ushort(__float2half_rn(k[id]));
		vc[dst] = __half_as_ushort(__float2half_rn(v[id]));
	}
}

extern "C" int cuda_kv_store(struct cuda_ctx *c, uint16_t *kc, uint16_t *vc, const float *k, const float *v,
			     const int *pos, int T, int kv_dim)
{
	CUDA_ARG_CHECK(c, T >= 0 && kv_dim > 0, "cuda_kv_store: T = %d, kv_dim = %d", T, kv_dim);
	if (T == 0)
		return 0;
	int64_t n = (int64_t)T * kv_dim, blocks = (n + 255) / 256, cap = (int64_t)(c->n_sm > 0 ? c->n_sm : 1) * 16;
	k_kv_store<<<(unsigned)(blocks < cap ? blocks : cap), 256, 0, cuda_stream_of(c)>>>(kc, vc, k, v, pos, T,
											   kv_dim);
	CUDA_LAUNCH_CHECK(c, "k_kv_store");
	return 0;
}
