/*
 * qdot.c: the portable fused dot of a quantized weight row with up to QDOT_MAX_T activation rows
 * (contract in qdot.h), and the choice between it and the AVX2 kernels of qdot_avx2.c. Each block is
 * dequantized exactly (dequant.c) into a buffer on the stack, then dotted with every token's x, so the
 * weight row is read once for all T tokens. One per format whose kind has a fused dot (src/layout/wfmt_list.h).
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

/* qdot_<k> for every format with a fused dot (src/layout/wfmt_list.h), around its cpu_dequant_<k> */
#define QDOT_PORTABLE(id, k)                                                                                     \
	static void qdot_##k(const void *w, const float *x, int64_t ldx, const float *xs, int T, int K, float *out) \
	{                                                                                                        \
		(void)xs;                                                                                        \
		qdot_portable(cpu_dequant_##k, (int)wfmt_table[WFMT_##id].block,                                 \
			      (int)wfmt_table[WFMT_##id].block_bytes, w, x, ldx, T, K, out);                     \
	}
#define QDOT_DEF(id, code, block, bytes, ggml, kind, k) WFMT_QDOT_##kind(QDOT_PORTABLE(id, k), )
WFMT_LIST(QDOT_DEF)
#undef QDOT_DEF

#define QDOT_ROW(id, code, block, bytes, ggml, kind, k) WFMT_QDOT_##kind(qdot_##k, NULL),
static const cpu_qdot_fn qdot_by_fmt[WFMT_COUNT] = {WFMT_LIST(QDOT_ROW)};
#undef QDOT_ROW

#define XSUMS_ROW(id, code, block, bytes, ggml, kind, k) WFMT_XSUMS_##kind(true, false),
static const bool xsums_by_fmt[WFMT_COUNT] = {WFMT_LIST(XSUMS_ROW)};
#undef XSUMS_ROW

cpu_qdot_fn cpu_qdot_find(int fmt, bool simd)
{
	if (simd)
		return cpu_qdot_find_avx2(fmt);
	return fmt >= 0 && fmt < WFMT_COUNT ? qdot_by_fmt[fmt] : NULL;
}

bool cpu_qdot_reads_xsums(int fmt)
{
	return fmt >= 0 && fmt < WFMT_COUNT && xsums_by_fmt[fmt];
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
