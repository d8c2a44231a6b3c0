/*
 * geglu_avx2.c: geglu_simd.h's row on AVX2, 4 lanes (4 floats, 4 doubles: tanh is computed in double). The
 * Makefile compiles this file with -mavx2 -mno-avx512f -ffp-contract=off whatever ARCH is; geglu.c calls it
 * only where cpuid says the CPU has AVX2.
 */
#include "kernels/cpu/cpu_ops.h"

#if defined(__AVX2__) && !defined(FERRY_NO_SIMD)
#include <immintrin.h>

#define L 4
#define VF __m128
#define VD __m256d
#define F_LOADU _mm_loadu_ps
#define F_STOREU _mm_storeu_ps
#define F_SET1 _mm_set1_ps
#define F_MUL _mm_mul_ps
#define F_ADD _mm_add_ps
#define F_AND _mm_and_ps
#define F_OR _mm_or_ps
#define F_ANDNOT _mm_andnot_ps
#define F_FROM_D _mm256_cvtpd_ps
#define D_FROM_F _mm256_cvtps_pd
#define D_SET1 _mm256_set1_pd
#define D_MUL _mm256_mul_pd
#define D_ADD _mm256_add_pd
#define D_SUB _mm256_sub_pd
#define D_DIV _mm256_div_pd
#define D_MIN _mm256_min_pd
#define D_POW2(nb)                                                                                 \
	_mm256_castsi256_pd(_mm256_add_epi64(_mm256_slli_epi64(_mm256_castpd_si256(nb), 52), \
					     _mm256_set1_epi64x((long long)GEGLU_ONE_BITS)))
#define GEGLU_ROW cpu_geglu_avx2
#include "kernels/cpu/geglu_simd.h"

cpu_geglu_fn cpu_geglu_find_avx2(void)
{
	return cpu_geglu_avx2;
}
#else
cpu_geglu_fn cpu_geglu_find_avx2(void)
{
	return NULL;
}
#endif
