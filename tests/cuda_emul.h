/*
 * cuda_emul.h: the device intrinsics and types src/kernels/cuda/matmul.cuh and matmul_mma.cuh use, emulated on
 * the host from their CUDA definitions, so that tests compile those headers with the host compiler (include
 * this, then the header): __ldg a load that must be aligned to its size (misaligned counts the others),
 * __byte_perm byte n = byte s<4n+2:4n> of y:x, __fmul_rn/__fadd_rn/__fsub_rn one rounded f32 operation each
 * (tests are built with -ffp-contract=off), __popc, __dp4a, __vsub4, __float2int_rn (half to even), __fdiv_rn
 * and the bit casts as defined, f16 widening exact, f32 to
 * bf16 bits round-to-nearest-even (f32_to_bf16 of src/layout/wfmt.h, __float2bfloat16_rn on the device).
 * cuda_common.cuh stays out (its include guard is defined here).
 */
#ifndef FERRY_TESTS_CUDA_EMUL_H
#define FERRY_TESTS_CUDA_EMUL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define FERRY_CUDA_COMMON_CUH /* the CUDA headers stay out: the emulation below stands in */
#define __device__
#define __host__
#define __forceinline__ inline
#define __align__(n) alignas(n)
struct uint4 {
	unsigned x, y, z, w;
};
struct uint2 {
	unsigned x, y;
};
struct float4 {
	float x, y, z, w;
};

static inline int misaligned;

template <class T> static inline T __ldg(const T *p)
{
	misaligned += (uintptr_t)p % sizeof(T) != 0;
	T v;
	memcpy(&v, p, sizeof(T));
	return v;
}

static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s)
{
	uint64_t v = (uint64_t)y << 32 | x;
	unsigned r = 0;
	for (int n = 0; n < 4; n++)
		r |= (unsigned)(v >> (8 * (s >> (4 * n) & 7)) & 255) << (8 * n);
	return r;
}

static inline float __fmul_rn(float a, float b)
{
	return a * b;
}

static inline float __fadd_rn(float a, float b)
{
	return a + b;
}

static inline float __uint_as_float(unsigned u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static inline float __fsub_rn(float a, float b)
{
	return a - b;
}

static inline float __int_as_float(int i)
{
	float f;
	memcpy(&f, &i, 4);
	return f;
}

static inline int __float_as_int(float f)
{
	int i;
	memcpy(&i, &f, 4);
	return i;
}

static inline int __popc(unsigned u)
{
	return __builtin_popcount(u);
}

/* c + the sum of the 4 products of the signed bytes of a and b */
static inline int __dp4a(int a, int b, int c)
{
	for (int i = 0; i < 4; i++)
		c += (int)(int8_t)(a >> 8 * i) * (int)(int8_t)(b >> 8 * i);
	return c;
}

/* per byte a - b modulo 256 */
static inline unsigned __vsub4(unsigned a, unsigned b)
{
	unsigned r = 0;
	for (int i = 0; i < 4; i++)
		r |= (((a >> 8 * i) - (b >> 8 * i)) & 255) << 8 * i;
	return r;
}

/* round half to even: the default rounding mode's nearbyintf */
static inline int __float2int_rn(float v)
{
	return (int)nearbyintf(v);
}

static inline float __fdiv_rn(float a, float b)
{
	return a / b;
}

extern "C" {
#include "kernels/cpu/cpu_ops.h"
#include "layout/wfmt.h"
}

static inline float f16_bits_to_f32(uint16_t h)
{
	return f16_to_f32(h);
}

static inline float bf16_bits_to_f32(uint16_t h)
{
	return bf16_to_f32(h);
}

/* cuda_common.cuh's 4-byte load: misaligned counts an address the device would fault on */
static inline uint32_t ld_word(const void *p)
{
	misaligned += (uintptr_t)p % 4 != 0;
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static inline uint16_t bf16_bits_rn(float f)
{
	return f32_to_bf16(f);
}

/* an F32/F16/BF16 vector element as f32 (cuda_common.cuh's, fmt an enum wfmt) */
static inline float vec_elem_f32(const void *p, int fmt, int64_t i)
{
	if (fmt == WFMT_F16)
		return f16_to_f32(((const uint16_t *)p)[i]);
	if (fmt == WFMT_BF16)
		return bf16_to_f32(((const uint16_t *)p)[i]);
	return ((const float *)p)[i];
}

#endif
