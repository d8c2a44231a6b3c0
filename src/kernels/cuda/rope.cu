/*
 * rope.cu: rotary position embedding in place (cuda_rope), as src/kernels/cpu/rope.c: the angle pos * inv_freq[i]
 * and its cosine and sine in double (positions in the tens of thousands stay exact), scaled by mscale and
 * rounded to f32 once. One thread per (token, pair index i) computes the rotation once and applies it to
 * every head; consecutive threads take consecutive i, so the loads of a head are coalesced.
 */
#include "kernels/cuda/cuda_common.cuh"

static __global__ void k_rope(float *x, const int *pos, int T, int n_heads, int Dh, const double *inv_freq,
			      double mscale, bool neox)
{
	int half = Dh / 2;
	int64_t id = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
	if (id >= (int64_t)T * half)
		return;
	int t = (int)(id / half), i = (int)(id % half);
	double s, co;
	sincos((double)pos[t] * inv_freq[i], &s, &co);
	float cf = (float)(co * mscale), sf = (float)(s * mscale);
	int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
	for (int h = 0; h < n_heads; h++) {
		float *v = x + ((size_t)t * (size_t)n_heads + (size_t)h) * (size_t)Dh;
		float x0 = v[i0], x1 = v[i1];
		v[i0] = x0 * cf - x1 * sf;
		v[i1] = x1 * cf + x0 * sf;
	}
}

extern "C" int cuda_rope(struct cuda_ctx *c, float *x, const int *pos, int T, int n_heads, int Dh,
			 const double *inv_freq, double mscale, bool neox)
{
	CUDA_ARG_CHECK(c, T >= 0 && n_heads > 0 && Dh > 0 && Dh % 2 == 0, "cuda_rope: T = %d, heads = %d, Dh = %d", T,
		       n_heads, Dh);
	if (T == 0)
		return 0;
	int64_t n = (int64_t)T * (Dh / 2);
	k_rope<<<(unsigned)((n + 127) / 128), 128, 0, cuda_stream_of(c)>>>(x, pos, T, n_heads, Dh, inv_freq, mscale,
									  neox);
	CUDA_LAUNCH_CHECK(c, "k_rope");
	return 0;
}
