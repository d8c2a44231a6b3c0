/*
 * rmsnorm.cu: y[T,n] = x * rsqrt(mean(x^2) + eps) * w (cuda_rmsnorm), as src/kernels/cpu/rmsnorm.c. One block
 * per row; the sum of squares is reduced in a fixed order (per thread, then a tree over the warps), so the
 * result does not depend on timing. y may equal x: each element is read before the same thread writes it.
 */
#include "kernels/cuda/cuda_common.cuh"

#define RMSNORM_THREADS 256

static __global__ void __launch_bounds__(RMSNORM_THREADS)
	k_rmsnorm(float *y, const float *x, const void *w, int wfmt, int n, float eps)
{
	__shared__ float part[RMSNORM_THREADS / 32];
	const float *xr = x + (size_t)blockIdx.x * (size_t)n;
	float *yr = y + (size_t)blockIdx.x * (size_t)n;
	float ss = 0;
	for (int i = threadIdx.x; i < n; i += RMSNORM_THREADS)
		ss += xr[i] * xr[i];
	for (int o = 16; o > 0; o >>= 1)
		ss += __shfl_xor_sync(0xffffffffu, ss, o);
	if ((threadIdx.x & 31) == 0)
		part[threadIdx.x >> 5] = ss;
	__syncthreads();
	ss = 0;
	for (int i = 0; i < RMSNORM_THREADS / 32; i++)
		ss += part[i];
	float r = (float)(1.0 / sqrt((double)ss / n + eps));
	for (int i = threadIdx.x; i < n; i += RMSNORM_THREADS)
		yr[i] = xr[i] * r * vec_elem_f32(w, wfmt, i);
}

extern "C" int cuda_rmsnorm(struct cuda_ctx *c, float *y, const float *x, const void *w, int wfmt, int T, int n,
			    float eps)
{
	CUDA_ARG_CHECK(c, T >= 0 && n > 0, "cuda_rmsnorm: T = %d, n = %d", T, n);
	CUDA_ARG_CHECK(c, wfmt >= 0 && wfmt <= 2, "cuda_rmsnorm: weight format %d is not F32/F16/BF16", wfmt);
	if (T == 0)
		return 0;
	k_rmsnorm<<<T, RMSNORM_THREADS, 0, cuda_stream_of(c)>>>(y, x, w, wfmt, n, eps);
	CUDA_LAUNCH_CHECK(c, "k_rmsnorm");
	return 0;
}
