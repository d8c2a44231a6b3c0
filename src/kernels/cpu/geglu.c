/*
 * geglu.c: the gated MLP activation of Gemma, gelu_tanh(gate) * up (PyTorch's gelu(approximate="tanh")). The
 * element is geglu_simd.h's (tanh computed in double, correctly rounded to float); the AVX2 and AVX-512 rows
 * (geglu_avx2.c, geglu_avx512.c) compute the same bits 4 and 8 at a time, so the isa (cpu_qdot_isa: the
 * best, or the one the tests force) never changes a result. libm's tanhf took 15% of a Gemma 3 270M prefill.
 */
#include <omp.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/geglu_simd.h"
#include "kernels/cpu/qdot.h"

static void geglu_portable(float *y, const float *gate, const float *up, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		y[i] = geglu_one(gate[i], up[i]);
}

cpu_geglu_fn cpu_geglu_find(int isa)
{
	if (isa == CPU_ISA_PORTABLE)
		return geglu_portable;
#if defined(__x86_64__) || defined(__i386__)
	if (isa == CPU_ISA_AVX2 && __builtin_cpu_supports("avx2"))
		return cpu_geglu_find_avx2();
	if (isa == CPU_ISA_AVX512 && __builtin_cpu_supports("avx512f"))
		return cpu_geglu_find_avx512();
#endif
	return NULL;
}

void cpu_geglu(float *y, const float *gate, const float *up, int64_t n)
{
	cpu_geglu_fn fn = NULL;
	for (int isa = cpu_qdot_isa(); !fn; isa--)
		fn = cpu_geglu_find(isa);
	if (n < CPU_PAR_MIN / 8) {
		fn(y, gate, up, n);
		return;
	}
#pragma omp parallel
	{
		/* whole 16-float pieces per thread, so every thread but the last runs vectors only */
		int64_t nt = omp_get_num_threads(), it = omp_get_thread_num();
		int64_t i0 = n * it / nt / 16 * 16, i1 = it == nt - 1 ? n : n * (it + 1) / nt / 16 * 16;
		fn(y + i0, gate + i0, up + i0, i1 - i0);
	}
}
