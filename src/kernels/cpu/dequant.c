/*
 * dequant.c: GGUF quantized blocks (src/layout/quant.h) -> f32, one function per format, bit-identical with
 * ggml's dequantize_row_* and gguf-py's gguf.quants.dequantize (tests/test_dequant.py checks both ways).
 * Identity needs ggml's order of float operations: f16 scales widened exactly, products formed left to
 * right (Q6_K: (d * sc) * q; Q4_K/Q5_K: d1 = d * sc and m1 = dmin * m first, then d1 * q - m1 as a
 * product and a separate subtraction). The product and the subtraction are separate statements so that
 * no compiler fuses them into an FMA, whatever its -ffp-contract default.
 *
 * Blocks are read through the struct fields only: a block inside a row is 2-byte aligned at best (18,
 * 22, 34 and 210 are not multiples of 4), which the uint16_t fields respect.
 */
#include <string.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/qdot.h"
#include "layout/quant.h"
#include "layout/wfmt.h"

void cpu_dequant_q8_0(const void *src, float *y, int64_t nb)
{
	const struct block_q8_0 *b = src;
	for (int64_t i = 0; i < nb; i++, y += QK) {
		float d = f16_to_f32(b[i].d);
		for (int j = 0; j < QK; j++)
			y[j] = (float)b[i].qs[j] * d;
	}
}

void cpu_dequant_q4_0(const void *src, float *y, int64_t nb)
{
	const struct block_q4_0 *b = src;
	for (int64_t i = 0; i < nb; i++, y += QK) {
		float d = f16_to_f32(b[i].d);
		for (int j = 0; j < QK / 2; j++) {
			y[j] = (float)((b[i].qs[j] & 15) - 8) * d;
			y[j + QK / 2] = (float)((b[i].qs[j] >> 4) - 8) * d;
		}
	}
}

void cpu_dequant_q5_0(const void *src, float *y, int64_t nb)
{
	const struct block_q5_0 *b = src;
	for (int64_t i = 0; i < nb; i++, y += QK) {
		float d = f16_to_f32(b[i].d);
		uint32_t qh = (uint32_t)b[i].qh[0] | (uint32_t)b[i].qh[1] << 8 | (uint32_t)b[i].qh[2] << 16 |
			      (uint32_t)b[i].qh[3] << 24;
		for (int j = 0; j < QK / 2; j++) {
			int lo = (int)((b[i].qs[j] & 15) | ((qh >> j) & 1) << 4) - 16;
			int hi = (int)((b[i].qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - 16;
			y[j] = (float)lo * d;
			y[j + QK / 2] = (float)hi * d;
		}
	}
}

/* Q4_K and Q5_K: qh is NULL for Q4_K. */
static void dequant_k45(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, uint16_t dh, uint16_t mh,
			float *y)
{
	float d = f16_to_f32(dh), dmin = f16_to_f32(mh);
	for (int c = 0; c < 4; c++, qs += 32, y += 64) {
		for (int h = 0; h < 2; h++) {
			uint8_t sc, m;
			k_scale_min(2 * c + h, scales, &sc, &m);
			float d1 = d * (float)sc, m1 = dmin * (float)m;
			for (int l = 0; l < 32; l++) {
				int q = h ? qs[l] >> 4 : qs[l] & 15;
				if (qh && (qh[l] >> (2 * c + h) & 1))
					q += 16;
				float p = d1 * (float)q;
				y[32 * h + l] = p - m1;
			}
		}
	}
}

void cpu_dequant_q4_k(const void *src, float *y, int64_t nb)
{
	const struct block_q4_K *b = src;
	for (int64_t i = 0; i < nb; i++, y += QK_K)
		dequant_k45(b[i].scales, b[i].qs, NULL, b[i].d, b[i].dmin, y);
}

void cpu_dequant_q5_k(const void *src, float *y, int64_t nb)
{
	const struct block_q5_K *b = src;
	for (int64_t i = 0; i < nb; i++, y += QK_K)
		dequant_k45(b[i].scales, b[i].qs, b[i].qh, b[i].d, b[i].dmin, y);
}

void cpu_dequant_q6_k(const void *src, float *y, int64_t nb)
{
	const struct block_q6_K *b = src;
	for (int64_t i = 0; i < nb; i++) {
		float d = f16_to_f32(b[i].d);
		const uint8_t *ql = b[i].ql, *qh = b[i].qh;
		const int8_t *sc = b[i].scales;
		for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, y += 128) {
			for (int l = 0; l < 32; l++) {
				int is = l / 16;
				int q1 = ((ql[l] & 15) | (qh[l] & 3) << 4) - 32;
				int q2 = ((ql[l + 32] & 15) | (qh[l] >> 2 & 3) << 4) - 32;
				int q3 = ((ql[l] >> 4) | (qh[l] >> 4 & 3) << 4) - 32;
				int q4 = ((ql[l + 32] >> 4) | (qh[l] >> 6 & 3) << 4) - 32;
				y[l] = d * (float)sc[is] * (float)q1;
				y[l + 32] = d * (float)sc[is + 2] * (float)q2;
				y[l + 64] = d * (float)sc[is + 4] * (float)q3;
				y[l + 96] = d * (float)sc[is + 6] * (float)q4;
			}
		}
	}
}

cpu_dequant_fn cpu_dequant_find(int fmt)
{
	static const cpu_dequant_fn by_fmt[WFMT_COUNT] = {
		[WFMT_Q8_0] = cpu_dequant_q8_0, [WFMT_Q4_0] = cpu_dequant_q4_0, [WFMT_Q5_0] = cpu_dequant_q5_0,
		[WFMT_Q4_K] = cpu_dequant_q4_k, [WFMT_Q5_K] = cpu_dequant_q5_k, [WFMT_Q6_K] = cpu_dequant_q6_k,
	};
	return fmt >= 0 && fmt < WFMT_COUNT ? by_fmt[fmt] : NULL;
}
