/*
 * hadamard.cu: the Walsh-Hadamard rotation of the quantized KV formats (cuda_hadamard32, src/kernels/kv_pages.h):
 * each group of 32 floats times the orthonormal H32, in place. One warp per group, lane i holding value i:
 * the butterfly of pair (i, i + h) is a shuffle, (a + b) on the low lane and (a - b) on the high one, for
 * h = 1, 2, 4, 8, 16 in that order, then the scale 1/sqrt(32). Every operation rounds on its own (no FMA
 * contraction), so the result is bit for bit cpu_hadamard32's.
 */
#include "kernels/cuda/cuda_common.cuh"

static __global__ void k_hadamard32(float *x, int64_t groups)
{
	int lane = threadIdx.x & 31;
	int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
	for (int64_t gi = blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5); gi < groups; gi += warps) {
		float v = x[gi * 32 + lane];
#pragma unroll
		for (int h = 1; h < 32; h <<= 1) {
			float o = __shfl_xor_sync(0xffffffffu, v, h);
			v = lane & h ? __fsub_rn(o, v) : __fadd_rn(v, o);
		}
		x[gi * 32 + lane] = __fmul_rn(v, 0.17677669529663687f);
	}
}

extern "C" int cuda_hadamard32(struct cuda_ctx *c, float *x, int64_t n)
{
	CUDA_ARG_CHECK(c, n >= 0 && n % 32 == 0, "cuda_hadamard32: n = %lld (a multiple of 32)", (long long)n);
	if (n == 0)
		return 0;
	/* 8 groups per block of 256 threads, enough blocks to fill the GPU a few times over */
	int64_t groups = n / 32, want = (groups + 7) / 8, cap = (int64_t)(c->n_sm > 0 ? c->n_sm : 1) * 16;
	k_hadamard32<<<(unsigned)(want < cap ? want : cap), 256, 0, cuda_stream_of(c)>>>(x, groups);
	CUDA_LAUNCH_CHECK(c, "k_hadamard32");
	return 0;
}
