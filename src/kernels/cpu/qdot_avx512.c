/*
 * qdot_avx512.c: the row kernels of qdot_simd.h with AVX-512 VNNI (the Makefile compiles this file with
 * -mavx512f -mavx512bw -mavx512vl -mavx512vnni besides AVX2/FMA/F16C, whatever ARCH is; qdot.c calls it only
 * where cpuid says the CPU has them). The integer dots are one instruction each on 256-bit vectors:
 * vpdpbusd (u8 x s8, 4 products into each int32) and vpdpwssd (int16 x int16, 2 products), neither
 * saturating.
 */
#include "kernels/cpu/qdot.h"

#if defined(__AVX512VNNI__) && defined(__AVX512VL__) && defined(__AVX512BW__) && defined(__FMA__) && \
	defined(__F16C__) && !defined(FERRY_NO_SIMD)
#define dot_u8s8(acc, u, s) _mm256_dpbusd_epi32((acc), (u), (s))
#define dot_i16(acc, p, c) _mm256_dpwssd_epi32((acc), (p), (c))
#define QDOT_FIND cpu_qdot_find_avx512
#define FDOT_FIND cpu_fdot_find_avx512
#define QTILE_FIND cpu_qtile_find_avx512
#include "kernels/cpu/qdot_simd.h"
#else
QDOT_NO_KERNELS(avx512)
#endif
