/*
 * dequant.c: stored weight rows -> f32 (cpu_row_to_f32, the only place the CPU kernels look at a weight format
 * besides the fused dots), one function cpu_dequant_<k> per format of src/layout/wfmt_list.h and the table built
 * from the list. Element formats are widened exactly; GGUF quantized blocks (src/layout/quant.h) are
 * bit-identical with ggml's dequantize_row_* and gguf-py's gguf.quants.dequantize (tests/test_dequant.py
 * checks both ways).
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

/* Element formats: nb values. */
void cpu_dequant_f32(const void *src, float *y, int64_t nb)
{
	memcpy(y, src, (size_t)nb * sizeof(float));
}

void cpu_dequant_f16(const void *src, float *y, int64_t nb)
{
	const uint16_t *h = src;
	for (int64_t i = 0; i < nb; i++)
		y[i] = f16_to_f32(h[i]);
}

void cpu_dequant_bf16(const void *src, float *y, int64_t nb)
{
	const uint16_t *h = src;
	for (int64_t i = 0; i < nb; i++)
		y[i] = bf16_to_f32(h[i]);
}

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

/* Q4_1 and Q5_1: y = d q + m, the product and the sum rounded separately (gguf-py: (d * qs) + m) */
static void dequant_q51(const uint8_t *qs, uint32_t qh, uint16_t dh, uint16_t mh, float *y)
{
	float d = f16_to_f32(dh), m = f16_to_f32(mh);
	for (int j = 0; j < QK / 2; j++) {
		int lo = (int)((qs[j] & 15) | ((qh >> j) & 1) << 4);
		int hi = (int)((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
		float p0 = d * (float)lo, p1 = d * (float)hi;
		y[j] = p0 + m;
		y[j + QK / 2] = p1 + m;
	}
}

void cpu_dequant_q4_1(const void *src, float *y, int64_t nb)
{
	const struct block_q4_1 *b = src;
	for (int64_t i = 0; i < nb; i++, y += QK)
		dequant_q51(b[i].qs, 0, b[i].d, b[i].m, y);
}

void cpu_dequant_q5_1(const void *src, float *y, int64_t nb)
{
	const struct block_q5_1 *b = src;
	for (int64_t i = 0; i < nb; i++, y += QK) {
		uint32_t qh = (uint32_t)b[i].qh[0] | (uint32_t)b[i].qh[1] << 8 | (uint32_t)b[i].qh[2] << 16 |
			      (uint32_t)b[i].qh[3] << 24;
		dequant_q51(b[i].qs, qh, b[i].d, b[i].m, y);
	}
}

static const float nf4_values[16] = NF4_VALUES, bnb_fp4_values[16] = BNB_FP4_VALUES;

/* NF4 and BNB_FP4 (bitsandbytes' 4-bit types, one block layout): y = table[code] d, one f32 rounding
 * (bitsandbytes' kDequantizeBlockwise before its cast) */
static void dequant_table4(const float *table, const void *src, float *y, int64_t nb)
{
	const struct block_nf4 *b = src;
	for (int64_t i = 0; i < nb; i++, y += 64)
		for (int j = 0; j < 32; j++) {
			y[2 * j] = table[b[i].qs[j] >> 4] * b[i].d;
			y[2 * j + 1] = table[b[i].qs[j] & 15] * b[i].d;
		}
}

void cpu_dequant_nf4(const void *src, float *y, int64_t nb)
{
	dequant_table4(nf4_values, src, y, nb);
}

void cpu_dequant_bnb_fp4(const void *src, float *y, int64_t nb)
{
	dequant_table4(bnb_fp4_values, src, y, nb);
}

/* Q4_Z/Q8_Z (sub 1) and Q4_Z128/Q8_Z128 (sub 4): y = d (q - z), one rounding (exact for the zero points GPTQ
 * and AWQ store); blocks of 4 + sub * 16 (4-bit) or 4 + sub * 32 bytes: d, z, the codes */
static void dequant_qz(const uint8_t *p, bool eight, int sub, float *y, int64_t nb)
{
	size_t bb = 4 + (size_t)sub * (eight ? QK : QK / 2);
	for (int64_t i = 0; i < nb; i++, p += bb) {
		uint16_t dh;
		int16_t z;
		memcpy(&dh, p, 2);
		memcpy(&z, p + 2, 2);
		float d = f16_to_f32(dh);
		for (int s = 0; s < sub; s++, y += QK) {
			const uint8_t *qs = p + 4 + (size_t)s * (eight ? QK : QK / 2);
			for (int j = 0; eight && j < QK; j++)
				y[j] = d * (float)((int8_t)qs[j] - z);
			for (int j = 0; !eight && j < QK / 2; j++) {
				y[j] = d * (float)((qs[j] & 15) - z);
				y[j + QK / 2] = d * (float)((qs[j] >> 4) - z);
			}
		}
	}
}

void cpu_dequant_q4_z(const void *src, float *y, int64_t nb)
{
	dequant_qz(src, false, 1, y, nb);
}

void cpu_dequant_q8_z(const void *src, float *y, int64_t nb)
{
	dequant_qz(src, true, 1, y, nb);
}

void cpu_dequant_q4_z128(const void *src, float *y, int64_t nb)
{
	dequant_qz(src, false, QZ_SUB, y, nb);
}

void cpu_dequant_q8_z128(const void *src, float *y, int64_t nb)
{
	dequant_qz(src, true, QZ_SUB, y, nb);
}

void cpu_dequant_q2_k(const void *src, float *y, int64_t nb)
{
	const struct block_q2_K *b = src;
	for (int64_t i = 0; i < nb; i++, y += QK_K) {
		float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
		for (int v = 0; v < QK_K; v++) {
			int g = v / 16, q = b[i].qs[32 * (v / 128) + v % 32] >> (2 * (v % 128 / 32)) & 3;
			float dl = d * (float)(b[i].scales[g] & 15), ml = dmin * (float)(b[i].scales[g] >> 4);
			float p = dl * (float)q;
			y[v] = p - ml;
		}
	}
}

void cpu_dequant_q3_k(const void *src, float *y, int64_t nb)
{
	const struct block_q3_K *b = src;
	for (int64_t i = 0; i < nb; i++, y += QK_K) {
		float d = f16_to_f32(b[i].d);
		for (int v = 0; v < QK_K; v++) {
			int n = v / 128, j = v % 128 / 32, l = v % 32;
			int q = (b[i].qs[32 * n + l] >> (2 * j) & 3) - (b[i].hmask[l] >> (4 * n + j) & 1 ? 0 : 4);
			float dl = d * (float)(q3k_scale(v / 16, b[i].scales) - 32);
			y[v] = dl * (float)q;
		}
	}
}

static const int8_t iq4nl_values[16] = IQ4NL_VALUES;
static const int8_t mxfp4_values[16] = MXFP4_VALUES;

/* 16 bytes of nibbles through a 16-value table, times d: values j (low nibbles) and j + 16 (high) */
static void dequant_lut32(const uint8_t *qs, const int8_t *lut, float d, float *y)
{
	for (int j = 0; j < QK / 2; j++) {
		y[j] = d * (float)lut[qs[j] & 15];
		y[j + QK / 2] = d * (float)lut[qs[j] >> 4];
	}
}

void cpu_dequant_iq4_nl(const void *src, float *y, int64_t nb)
{
	const struct block_iq4_nl *b = src;
	for (int64_t i = 0; i < nb; i++, y += QK)
		dequant_lut32(b[i].qs, iq4nl_values, f16_to_f32(b[i].d), y);
}

void cpu_dequant_iq4_xs(const void *src, float *y, int64_t nb)
{
	const struct block_iq4_xs *b = src;
	for (int64_t i = 0; i < nb; i++) {
		float d = f16_to_f32(b[i].d);
		for (int s = 0; s < QK_K / QK; s++, y += QK)
			dequant_lut32(b[i].qs + 16 * s, iq4nl_values,
				      d * (float)(iq4xs_scale(s, b[i].scales_h, b[i].scales_l) - 32), y);
	}
}

void cpu_dequant_mxfp4(const void *src, float *y, int64_t nb)
{
	const struct block_mxfp4 *b = src;
	for (int64_t i = 0; i < nb; i++, y += QK)
		dequant_lut32(b[i].qs, mxfp4_values, e8m0_half(b[i].e), y);
}

void cpu_dequant_tq1_0(const void *src, float *y, int64_t nb)
{
	const struct block_tq1_0 *b = src;
	for (int64_t i = 0; i < nb; i++, y += QK_K) {
		float d = f16_to_f32(b[i].d);
		for (int v = 0; v < QK_K; v++)
			y[v] = d * (float)(tq1_code(b[i].qs, b[i].qh, v) - 1);
	}
}

void cpu_dequant_tq2_0(const void *src, float *y, int64_t nb)
{
	const struct block_tq2_0 *b = src;
	for (int64_t i = 0; i < nb; i++, y += QK_K) {
		float d = f16_to_f32(b[i].d);
		for (int v = 0; v < QK_K; v++)
			y[v] = d * (float)((b[i].qs[32 * (v / 128) + v % 32] >> (2 * (v % 128 / 32)) & 3) - 1);
	}
}

#define DEQUANT_ROW(id, code, block, bytes, ggml, kind, k) WFMT_RUNS_##kind(cpu_dequant_##k, NULL),
static const cpu_dequant_fn dequant_by_fmt[WFMT_COUNT] = {WFMT_LIST(DEQUANT_ROW)};
#undef DEQUANT_ROW

bool cpu_fmt_supported(int fmt)
{
	return fmt >= 0 && fmt < WFMT_COUNT && dequant_by_fmt[fmt];
}

int cpu_row_to_f32(int fmt, const void *src, float *dst, int64_t n)
{
	if (!cpu_fmt_supported(fmt) || n % wfmt_table[fmt].block)
		return -1;
	dequant_by_fmt[fmt](src, dst, n / wfmt_table[fmt].block);
	return 0;
}
