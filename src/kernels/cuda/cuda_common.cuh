/*
 * cuda_common.cuh: what every kernel file shares: the launch check, argument checks that fill ctx->err,
 * and f16/bf16 conversions. Included by the .cu files only.
 */
#ifndef FERRY_CUDA_COMMON_CUH
#define FERRY_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <stdio.h>

#include "kernels/cuda/cuda_ops.h"

/* After a launch: counts it in c->launches; on failure writes "file:line: what: cuda error" into c->err and
 * returns -EIO from the launcher. */
#define CUDA_LAUNCH_CHECK(c, what)                                                                              \
	do {                                                                                                    \
		(c)->launches++;                                                                                \
		cudaError_t e_ = cudaGetLastError();                                                            \
		if (e_ != cudaSuccess) {                                                                        \
			snprintf((c)->err, sizeof((c)->err), "%s:%d: %s: %s", __FILE__, __LINE__, (what),       \
				 cudaGetErrorString(e_));                                                       \
			return -EIO;                                                                            \
		}                                                                                               \
	} while (0)

#define CUDA_CALL_CHECK(c, call)                                                                                \
	do {                                                                                                    \
		cudaError_t e_ = (call);                                                                        \
		if (e_ != cudaSuccess) {                                                                        \
			snprintf((c)->err, sizeof((c)->err), "%s:%d: %s: %s", __FILE__, __LINE__, #call,       \
				 cudaGetErrorString(e_));                                                       \
			return -EIO;                                                                            \
		}                                                                                               \
	} while (0)

/* A shape or format the kernel cannot do: a one-line reason, -EINVAL, before anything is launched. */
#define CUDA_ARG_CHECK(c, cond, ...)                                                                            \
	do {                                                                                                    \
		if (!(cond)) {                                                                                  \
			snprintf((c)->err, sizeof((c)->err), __VA_ARGS__);                                     \
			return -EINVAL;                                                                         \
		}                                                                                               \
	} while (0)

static inline cudaStream_t cuda_stream_of(const struct cuda_ctx *c)
{
	return (cudaStream_t)c->stream;
}

__device__ __forceinline__ float f16_bits_to_f32(uint16_t h)
{
	return __half2float(__ushort_as_half(h));
}

__device__ __forceinline__ float bf16_bits_to_f32(uint16_t h)
{
	return __uint_as_float((uint32_t)h << 16);
}

/* f32 -> bf16 bits, round to nearest even */
__device__ __forceinline__ uint16_t bf16_bits_rn(float v)
{
	return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

/* The 4-byte word at p (4-byte aligned: shared memory tiles, int8 and 16-bit lanes read as one word). */
__device__ __forceinline__ uint32_t ld_word(const void *p)
{
	return *(const uint32_t *)p;
}

/* The sum over a warp by a fixed butterfly of shuffles: the result does not depend on timing. */
__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/* An F32/F16/BF16 vector element (norm weights, biases) as f32; fmt is enum wfmt. */
__device__ __forceinline__ float vec_elem_f32(const void *p, int fmt, int64_t i)
{
	if (fmt == 1)
		return f16_bits_to_f32(((const uint16_t *)p)[i]);
	if (fmt == 2)
		return bf16_bits_to_f32(((const uint16_t *)p)[i]);
	return ((const float *)p)[i];
}

#endif
