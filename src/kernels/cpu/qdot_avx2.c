/*
 * qdot_avx2.c: the row kernels of qdot_simd.h for AVX2 + FMA + F16C (the Makefile compiles this file with
 * -mavx2 -mfma -mf16c -mno-avx512f, whatever ARCH is; qdot.c calls it only where cpuid says the CPU has them).
 * The integer dots are maddubs (u8 x s8 pairs to int16) then madd (pairs to int32).
 */
#include "kernels/cpu/qdot.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && !defined(FERRY_NO_SIMD)
#define dot_u8s8(acc, u, s) \
	_mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1)))
#define dot_i16(acc, p, c) _mm256_add_epi32((acc), _mm256_madd_epi16((p), (c)))
#define QDOT_FIND cpu_qdot_find_avx2
#define FDOT_FIND cpu_fdot_find_avx2
#define QTILE_FIND cpu_qtile_find_avx2
#include "kernels/cpu/qdot_simd.h"
#else
QDOT_NO_KERNELS(avx2)
#endif
