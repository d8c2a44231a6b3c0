/*
 * qdot.c: the portable fused dot of a quantized weight row with up to QDOT_MAX_T activation rows
 * (contract in qdot.h), and the choice between it and the AVX2 kernels of qdot_avx2.c. Each block is
 * dequantized exactly (dequant.c) into a buffer on the stack, then dotted with every token's x, so the
 * weight row is read once for all T tokens.
 */
#include <stddef.h>

#include "kernels/cpu/qdot.h"
#include "layout/quant.h"
#include "layout/wfmt.h"

static void qdot_portable(cpu_dequant_fn deq, int block, int block_bytes, const void *w, const float *x,
			  int64_t ldx, int T, int K, float *out)
{
	float buf[QK_K];
	float acc[QDOT_MAX_T] = {0};
	const char *p = w;
	for (int k0 = 0; k0 < K; k0 += block, p += block_bytes) {
		deq(p, buf, 1);
		for (int t = 0; t < T; t++) {
			const float *xt = x + (size_t)t * (size_t)ldx + k0;
			float s = 0;
			for (int j = 0; j < block; j++)
				s += buf[j] * xt[j];
			acc[t] += s;
		}
	}
	for (int t = 0; t < T; t++)
		out[t] = acc[t];
}

#define QDOT_PORTABLE(name, fmt, deq)                                                                           \
	static void name(const void *w, const float *x, int64_t ldx, const float *xs, int T, int K, float *out) \
	{                                                                                                       \
		(void)xs;                                                                                       \
		qdot_portable(deq, (int)wfmt_table[fmt].block, (int)wfmt_table[fmt].block_bytes, w, x, ldx, T,  \
			      K, out);                                                                          \
	}

QDOT_PORTABLE(qdot_q8_0, WFMT_Q8_0, cpu_dequant_q8_0)
QDOT_PORTABLE(qdot_q4_0, WFMT_Q4_0, cpu_dequant_q4_0)
QDOT_PORTABLE(qdot_q5_0, WFMT_Q5_0, cpu_dequant_q5_0)
QDOT_PORTABLE(qdot_q4_k, WFMT_Q4_K, cpu_dequant_q4_k)
QDOT_PORTABLE(qdot_q5_k, WFMT_Q5_K, cpu_dequant_q5_k)
QDOT_PORTABLE(qdot_q6_k, WFMT_Q6_K, cpu_dequant_q6_k)

cpu_qdot_fn cpu_qdot_find(int fmt, bool simd)
{
	static const cpu_qdot_fn by_fmt[WFMT_COUNT] = {
		[WFMT_Q8_0] = qdot_q8_0, [WFMT_Q4_0] = qdot_q4_0, [WFMT_Q5_0] = qdot_q5_0,
		[WFMT_Q4_K] = qdot_q4_k, [WFMT_Q5_K] = qdot_q5_k, [WFMT_Q6_K] = qdot_q6_k,
	};
	if (simd)
		return cpu_qdot_find_avx2(fmt);
	return fmt >= 0 && fmt < WFMT_COUNT ? by_fmt[fmt] : NULL;
}

void cpu_qdot_xsums(const float *x, int64_t ldx, int T, int K, float *xs)
{
	for (int t = 0; t < T; t++)
		for (int j = 0; j < K / QK; j++) {
			const float *xt = x + (size_t)t * (size_t)ldx + (size_t)j * QK;
			float s = 0;
			for (int l = 0; l < QK; l++)
				s += xt[l];
			xs[(size_t)t * (size_t)(K / QK) + (size_t)j] = s;
		}
}
