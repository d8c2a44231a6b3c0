/*
 * geglu_avx512.c: geglu_simd.h's row on AVX-512F, 8 lanes (8 floats in a 256-bit vector, 8 doubles in a
 * 512-bit one: tanh is computed in double). The Makefile compiles this file with -mavx2 -mavx512f
 * -ffp-contract=off whatever ARCH is; geglu.c calls it only where cpuid says the CPU has AVX-512F.
 */
#include "kernels/cpu/cpu_ops.h"

#if defined(__AVX512F__) && !defined(FERRY_NO_SIMD)
#include <immintrin.h>

#define L 8
#define VF __m256
#define VD __m512d
#define F_LOADU _mm256_loadu_ps
#define F_STOREU _mm256_storeu_ps
#define F_SET1 _mm256_set1_ps
#define F_MUL _mm256_mul_ps
#define F_ADD _mm256_add_ps
#define F_AND _mm256_and_ps
#define F_OR _mm256_or_ps
#define F_ANDNOT _mm256_andnot_ps
#define F_FROM_D _mm512_cvtpd_ps
#define D_FROM_F _mm512_cvtps_pd
#define D_SET1 _mm512_set1_pd
#define D_MUL _mm512_mul_pd
#define D_ADD _mm512_add_pd
#define D_SUB _mm512_sub_pd
#define D_DIV _mm512_div_pd
#define D_MIN _mm512_min_pd
#define D_POW2(nb)                                                                                 \
	_mm512_castsi512_pd(_mm512_add_epi64(_mm512_slli_epi64(_mm512_castpd_si512(nb), 52), \
					     _mm512_set1_epi64((long long)GEGLU_ONE_BITS)))
#define GEGLU_ROW cpu_geglu_avx512
#include "kernels/cpu/geglu_simd.h"

cpu_geglu_fn cpu_geglu_find_avx512(void)
{
	return cpu_geglu_avx512;
}
#else
cpu_geglu_fn cpu_geglu_find_avx512(void)
{
	return NULL;
}
#endif
