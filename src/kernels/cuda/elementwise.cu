/*
 * elementwise.cu: the element-wise ops of a layer and the head: the residual add (cuda_add), the gated MLP
 * activations silu(gate) * up, gelu_tanh(gate) * up and gpt-oss's clamped SwiGLU (cuda_glu, as
 * src/kernels/cpu/swiglu.c and geglu.c, in
 * the same op order and with the same precise expf/tanhf), and Gemma's final logit softcap (cuda_softcap).
 * One element per thread of a grid-stride loop: these are memory-bound and n can pass 2^31.
 */
#include "kernels/cuda/cuda_common.cuh"

#include "layout/layout.h"

/* Enough blocks of 256 to fill the GPU a few times over; the grid-stride loop covers the rest. */
static unsigned elementwise_blocks(const struct cuda_ctx *c, int64_t n)
{
	int64_t want = (n + 255) / 256, cap = (int64_t)(c->n_sm > 0 ? c->n_sm : 1) * 16;
	return (unsigned)(want < cap ? want : cap);
}

#define GRID_STRIDE(i, n) \
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

static __global__ void k_add(float *y, const float *x, int64_t n)
{
	GRID_STRIDE(i, n)
	y[i] += x[i];
}

static __global__ void k_glu_silu(float *y, const float *gate, const float *up, int64_t n)
{
	GRID_STRIDE(i, n)
	{
		float g = gate[i];
		y[i] = g / (1.0f + expf(-g)) * up[i];
	}
}

static __global__ void k_glu_gelu_tanh(float *y, const float *gate, const float *up, int64_t n)
{
	const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
	GRID_STRIDE(i, n)
	{
		float x = gate[i];
		y[i] = 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x))) * up[i];
	}
}

static __global__ void k_glu_swiglu_oai(float *y, const float *gate, const float *up, int64_t n)
{
	GRID_STRIDE(i, n)
	{
		float g = fminf(gate[i], ACT_OAI_LIMIT), u = fminf(fmaxf(up[i], -ACT_OAI_LIMIT), ACT_OAI_LIMIT);
		y[i] = g / (1.0f + expf(-ACT_OAI_ALPHA * g)) * (u + 1.0f);
	}
}

static __global__ void k_softcap(float *x, int64_t n, float cap)
{
	GRID_STRIDE(i, n)
	x[i] = cap * tanhf(x[i] / cap);
}

extern "C" int cuda_add(struct cuda_ctx *c, float *y, const float *x, int64_t n)
{
	CUDA_ARG_CHECK(c, n >= 0, "cuda_add: n = %lld", (long long)n);
	if (n == 0)
		return 0;
	k_add<<<elementwise_blocks(c, n), 256, 0, cuda_stream_of(c)>>>(y, x, n);
	CUDA_LAUNCH_CHECK(c, "k_add");
	return 0;
}

extern "C" int cuda_glu(struct cuda_ctx *c, float *y, const float *gate, const float *up, int64_t n, int act)
{
	CUDA_ARG_CHECK(c, n >= 0, "cuda_glu: n = %lld", (long long)n);
	CUDA_ARG_CHECK(c, act == ACT_SILU || act == ACT_GELU_TANH || act == ACT_SWIGLU_OAI,
		       "cuda_glu: unknown activation %d", act);
	if (n == 0)
		return 0;
	if (act == ACT_SILU)
		k_glu_silu<<<elementwise_blocks(c, n), 256, 0, cuda_stream_of(c)>>>(y, gate, up, n);
	else if (act == ACT_SWIGLU_OAI)
		k_glu_swiglu_oai<<<elementwise_blocks(c, n), 256, 0, cuda_stream_of(c)>>>(y, gate, up, n);
	else
		k_glu_gelu_tanh<<<elementwise_blocks(c, n), 256, 0, cuda_stream_of(c)>>>(y, gate, up, n);
	CUDA_LAUNCH_CHECK(c, "k_glu");
	return 0;
}

extern "C" int cuda_softcap(struct cuda_ctx *c, float *logits, int64_t n, float cap)
{
	CUDA_ARG_CHECK(c, n >= 0, "cuda_softcap: n = %lld", (long long)n);
	CUDA_ARG_CHECK(c, cap > 0, "cuda_softcap: cap %g must be > 0", (double)cap);
	if (n == 0)
		return 0;
	k_softcap<<<elementwise_blocks(c, n), 256, 0, cuda_stream_of(c)>>>(logits, n, cap);
	CUDA_LAUNCH_CHECK(c, "k_softcap");
	return 0;
}
