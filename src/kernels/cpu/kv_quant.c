/*
 * kv_quant.c: the row formats of the paged KV cache (src/kernels/kv_pages.h) and the Hadamard rotation that
 * precedes the group-coded ones (Q8, Q4, Q5, A4, A5). Bit for bit what the CUDA kernels compute (kernels/cuda/ tests
 * compare bytes), so every rounding step is spelled out: scales are f32, rounded to f16 (nearest even), and q
 * is computed from the rounded scale by a true division and nearbyintf (nearest even in the default rounding
 * mode). The rotation is adds, subtracts and one multiply per value, nothing a compiler may fuse into an FMA.
 * One quantize and one dequantize function per row format of KV_ROW_LIST, reached through the table it
 * generates (a KV format's keys and values each take their pool's row format: kv_pool_fmt).
 */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"
#include "layout/wfmt.h"

void cpu_hadamard32(float *x, int64_t n)
{
	for (int64_t g = 0; g < n; g += KV_GROUP) {
		float *v = x + g;
		for (int h = 1; h < KV_GROUP; h <<= 1)
			for (int i = 0; i < KV_GROUP; i++)
				if (!(i & h)) {
					float a = v[i], b = v[i + h];
					v[i] = a + b;
					v[i + h] = a - b;
				}
		for (int i = 0; i < KV_GROUP; i++)
			v[i] *= 0.17677669529663687f;
	}
}

/* One group of 32 to Q8: 32 int8 and the f16 scale. */
static void quant_q8_group(const float *x, int8_t *q, uint16_t *s)
{
	float amax = 0;
	for (int i = 0; i < KV_GROUP; i++)
		amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
	*s = f32_to_f16(amax / 127.0f);
	float d = f16_to_f32(*s);
	for (int i = 0; i < KV_GROUP; i++) {
		float r = d == 0 ? 0 : nearbyintf(x[i] / d);
		q[i] = (int8_t)(r < -127 ? -127 : r > 127 ? 127 : r);
	}
}

/* One group of 32 to the 2^bits codes of ggml's Q4_0 / Q5_0 rule: d = m / -2^(bits-1) for m the value of
 * largest magnitude (the first on ties, sign kept), c = clamp(round(x / d) + 2^(bits-1), 0, 2^bits - 1). */
static void quant_codes_group(const float *x, int bits, uint8_t *c, uint16_t *s)
{
	float m = 0, half = (float)(1 << (bits - 1)), top = (float)((1 << bits) - 1);
	for (int i = 0; i < KV_GROUP; i++)
		if (fabsf(x[i]) > fabsf(m))
			m = x[i];
	*s = f32_to_f16(m / -half);
	float d = f16_to_f32(*s);
	for (int i = 0; i < KV_GROUP; i++) {
		float r = d == 0 ? half : nearbyintf(x[i] / d) + half;
		c[i] = (uint8_t)(r < 0 ? 0 : r > top ? top : r);
	}
}

/* One group of 32 to the 2^bits codes of an affine (asymmetric) rule: m = f16(min), d = f16((max - m) /
 * (2^bits - 1)), c = clamp(round((x - m) / d), 0, 2^bits - 1), value = c * d + m (the minimum and the step
 * rounded first, the codes from the rounded ones: (x - m) / d is a subtraction then a true division). */
static void quant_affine_group(const float *x, int bits, uint8_t *c, uint16_t *s, uint16_t *mn)
{
	float lo = x[0], hi = x[0], top = (float)((1 << bits) - 1);
	for (int i = 1; i < KV_GROUP; i++) {
		lo = x[i] < lo ? x[i] : lo;
		hi = x[i] > hi ? x[i] : hi;
	}
	*mn = f32_to_f16(lo);
	float m = f16_to_f32(*mn);
	*s = f32_to_f16((hi - m) / top);
	float d = f16_to_f32(*s);
	for (int i = 0; i < KV_GROUP; i++) {
		float r = d == 0 ? 0 : nearbyintf((x[i] - m) / d);
		c[i] = (uint8_t)(r < 0 ? 0 : r > top ? top : r);
	}
}

/* The low nibbles of a group's 32 codes as 16 bytes of pairs (i, i + 16). */
static void nibbles_pack(const uint8_t *c, uint8_t *q)
{
	for (int i = 0; i < KV_GROUP / 2; i++)
		q[i] = (uint8_t)((c[i] & 15) | (c[i + KV_GROUP / 2] & 15) << 4);
}

/* A group's 32 fifth bits (bit 4 of each code) as 4 bytes, the bit of value i at bit i % 8 of byte i / 8 */
static void fifth_bits_pack(const uint8_t *c, uint8_t *hb)
{
	for (int b = 0; b < 4; b++) {
		uint8_t m = 0;
		for (int i = 0; i < 8; i++)
			m |= (uint8_t)((c[8 * b + i] >> 4 & 1) << i);
		hb[b] = m;
	}
}

/* The 5-bit code of value i of a group: its nibble (pairs (i, i + 16)) and its fifth bit */
static int code5(const uint8_t *qg, const uint8_t *hg, int i)
{
	int lo = i < KV_GROUP / 2 ? qg[i] & 15 : qg[i - KV_GROUP / 2] >> 4;
	return lo | (hg[i / 8] >> (i % 8) & 1) << 4;
}

/* One row of each format (src/kernels/kv_pages.h: KV_FMT_LIST), kv_quant_<k> and kv_dequant_<k>. */
static void kv_quant_f32(const float *x, void *q, void *s, int Dh)
{
	(void)s;
	memcpy(q, x, sizeof(float) * (size_t)Dh);
}

static void kv_dequant_f32(const void *q, const void *s, float *x, int Dh)
{
	(void)s;
	memcpy(x, q, sizeof(float) * (size_t)Dh);
}

static void kv_quant_f16(const float *x, void *q, void *s, int Dh)
{
	(void)s;
	for (int i = 0; i < Dh; i++)
		((uint16_t *)q)[i] = f32_to_f16(x[i]);
}

static void kv_dequant_f16(const void *q, const void *s, float *x, int Dh)
{
	(void)s;
	for (int i = 0; i < Dh; i++)
		x[i] = f16_to_f32(((const uint16_t *)q)[i]);
}

static void kv_quant_q8(const float *x, void *q, void *s, int Dh)
{
	for (int g = 0; g < Dh / KV_GROUP; g++)
		quant_q8_group(x + g * KV_GROUP, (int8_t *)q + g * KV_GROUP, (uint16_t *)s + g);
}

static void kv_dequant_q8(const void *q, const void *s, float *x, int Dh)
{
	for (int g = 0; g < Dh / KV_GROUP; g++) {
		float d = f16_to_f32(((const uint16_t *)s)[g]);
		const int8_t *qg = (const int8_t *)q + g * KV_GROUP;
		for (int i = 0; i < KV_GROUP; i++)
			x[g * KV_GROUP + i] = (float)qg[i] * d;
	}
}

static void kv_quant_q4(const float *x, void *q, void *s, int Dh)
{
	uint8_t c[KV_GROUP];
	for (int g = 0; g < Dh / KV_GROUP; g++) {
		quant_codes_group(x + g * KV_GROUP, 4, c, (uint16_t *)s + g);
		nibbles_pack(c, (uint8_t *)q + g * KV_GROUP / 2);
	}
}

static void kv_dequant_q4(const void *q, const void *s, float *x, int Dh)
{
	for (int g = 0; g < Dh / KV_GROUP; g++) {
		float d = f16_to_f32(((const uint16_t *)s)[g]);
		const uint8_t *qg = (const uint8_t *)q + g * KV_GROUP / 2;
		float *xg = x + g * KV_GROUP;
		for (int i = 0; i < KV_GROUP / 2; i++) {
			xg[i] = (float)((qg[i] & 15) - 8) * d;
			xg[i + KV_GROUP / 2] = (float)((qg[i] >> 4) - 8) * d;
		}
	}
}

/* Q5: the s part is the Dh/32 scales, then 4 bytes of fifth bits per group (src/kernels/kv_pages.h) */
static void kv_quant_q5(const float *x, void *q, void *s, int Dh)
{
	uint8_t c[KV_GROUP], *hb = (uint8_t *)s + Dh / KV_GROUP * 2;
	for (int g = 0; g < Dh / KV_GROUP; g++) {
		quant_codes_group(x + g * KV_GROUP, 5, c, (uint16_t *)s + g);
		nibbles_pack(c, (uint8_t *)q + g * KV_GROUP / 2);
		fifth_bits_pack(c, hb + 4 * g);
	}
}

static void kv_dequant_q5(const void *q, const void *s, float *x, int Dh)
{
	const uint8_t *hb = (const uint8_t *)s + Dh / KV_GROUP * 2;
	for (int g = 0; g < Dh / KV_GROUP; g++) {
		float d = f16_to_f32(((const uint16_t *)s)[g]);
		const uint8_t *qg = (const uint8_t *)q + g * KV_GROUP / 2;
		for (int i = 0; i < KV_GROUP; i++)
			x[g * KV_GROUP + i] = (float)(code5(qg, hb + 4 * g, i) - 16) * d;
	}
}

/* A4 (4-bit affine): the q part as Q4's nibbles (codes 0..15, no bias), the s part the Dh/32 f16 steps d
 * then the Dh/32 f16 minima m (src/kernels/kv_pages.h) */
static void kv_quant_a4(const float *x, void *q, void *s, int Dh)
{
	uint8_t c[KV_GROUP];
	for (int g = 0; g < Dh / KV_GROUP; g++) {
		quant_affine_group(x + g * KV_GROUP, 4, c, (uint16_t *)s + g, (uint16_t *)s + Dh / KV_GROUP + g);
		nibbles_pack(c, (uint8_t *)q + g * KV_GROUP / 2);
	}
}

static void kv_dequant_a4(const void *q, const void *s, float *x, int Dh)
{
	for (int g = 0; g < Dh / KV_GROUP; g++) {
		float d = f16_to_f32(((const uint16_t *)s)[g]), m = f16_to_f32(((const uint16_t *)s)[Dh / KV_GROUP + g]);
		const uint8_t *qg = (const uint8_t *)q + g * KV_GROUP / 2;
		float *xg = x + g * KV_GROUP;
		for (int i = 0; i < KV_GROUP / 2; i++) {
			xg[i] = (float)(qg[i] & 15) * d + m;
			xg[i + KV_GROUP / 2] = (float)(qg[i] >> 4) * d + m;
		}
	}
}

/* A5 (5-bit affine): as A4, the fifth bits after the minima as Q5's (4 bytes per group) */
static void kv_quant_a5(const float *x, void *q, void *s, int Dh)
{
	uint8_t c[KV_GROUP], *hb = (uint8_t *)s + Dh / KV_GROUP * 4;
	for (int g = 0; g < Dh / KV_GROUP; g++) {
		quant_affine_group(x + g * KV_GROUP, 5, c, (uint16_t *)s + g, (uint16_t *)s + Dh / KV_GROUP + g);
		nibbles_pack(c, (uint8_t *)q + g * KV_GROUP / 2);
		fifth_bits_pack(c, hb + 4 * g);
	}
}

static void kv_dequant_a5(const void *q, const void *s, float *x, int Dh)
{
	const uint8_t *hb = (const uint8_t *)s + Dh / KV_GROUP * 4;
	for (int g = 0; g < Dh / KV_GROUP; g++) {
		float d = f16_to_f32(((const uint16_t *)s)[g]), m = f16_to_f32(((const uint16_t *)s)[Dh / KV_GROUP + g]);
		const uint8_t *qg = (const uint8_t *)q + g * KV_GROUP / 2;
		for (int i = 0; i < KV_GROUP; i++)
			x[g * KV_GROUP + i] = (float)code5(qg, hb + 4 * g, i) * d + m;
	}
}

static const struct {
	void (*quant)(const float *x, void *q, void *s, int Dh);
	void (*dequant)(const void *q, const void *s, float *x, int Dh);
} kv_by_row[KV_ROW_COUNT] = {
#define KV_ROW(id, k, qbits, gbytes) [KV_##id] = {kv_quant_##k, kv_dequant_##k},
	KV_ROW_LIST(KV_ROW)
#undef KV_ROW
};

void cpu_kv_row_quant(int rfmt, const float *x, void *q, void *s, int Dh)
{
	if (rfmt >= 0 && rfmt < KV_ROW_COUNT)
		kv_by_row[rfmt].quant(x, q, s, Dh);
}

void cpu_kv_row_dequant(int rfmt, const void *q, const void *s, float *x, int Dh)
{
	if (rfmt >= 0 && rfmt < KV_ROW_COUNT)
		kv_by_row[rfmt].dequant(q, s, x, Dh);
}
