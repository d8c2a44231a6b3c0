/* quant_ref.h: the CPU kernel tests' random numbers (xorshift, a fixed seed a test may change) and their own
 * view of the GGUF quantized blocks: random blocks with finite scales, and each value's dequantization from the
 * byte layout of ggml-common.h in ggml's float order (written here, not taken from the kernels). */
#ifndef FERRY_TEST_QUANT_REF_H
#define FERRY_TEST_QUANT_REF_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "layout/wfmt.h"
#include "quant_ref_iq.h"

static unsigned long long rng = 88172645463325252ull;

static double urand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) * 0x1.0p-53;
}

static float nrand(void)
{
	return (float)(sqrt(-2 * log(urand() + 1e-300)) * cos(2 * M_PI * urand()));
}

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* A random finite half: either sign, 1 in 8 subnormal, otherwise 2^-14 .. 2^2. */
static uint16_t rand_half(void)
{
	uint16_t sign = urand() < 0.5 ? 0x8000 : 0, man = (uint16_t)(urand() * 1024);
	uint16_t exp = urand() < 0.125 ? 0 : (uint16_t)(1 + urand() * 17);
	return (uint16_t)(sign | exp << 10 | man);
}

/* nb blocks of random bytes with random finite f16 scales (d, and dmin for the K-quants with mins) */
static uint8_t *rand_blocks(int fmt, size_t nb)
{
	size_t bb = wfmt_table[fmt].block_bytes;
	uint8_t *p = malloc(nb * bb);
	for (size_t i = 0; i < nb * bb; i++)
		p[i] = (uint8_t)(urand() * 256);
	for (size_t i = 0; i < nb; i++) {
		uint8_t *b = p + i * bb;
		size_t d_at = fmt == WFMT_Q6_K ? 208 : 0;
		uint16_t d = rand_half(), dmin = rand_half();
		memcpy(b + d_at, &d, 2);
		if (fmt == WFMT_IQ1_M)
			ref_iq1m_set_d(b, d);
		if (fmt == WFMT_Q4_K || fmt == WFMT_Q5_K)
			memcpy(b + 2, &dmin, 2);
	}
	return p;
}

/* Value j of one block, from the byte layout of ggml-common.h and ggml's float order (not the kernels'). */
static float ref_dequant(int fmt, const uint8_t *b, int j)
{
	float d = f16_to_f32(rd16(fmt == WFMT_Q6_K ? b + 208 : b));
	switch (fmt) {
	case WFMT_Q8_0:
		return (float)(int8_t)b[2 + j] * d;
	case WFMT_Q4_0:
		return (float)((j < 16 ? b[2 + j] & 15 : b[2 + j - 16] >> 4) - 8) * d;
	case WFMT_Q5_0: {
		uint32_t qh = (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24;
		int nib = j < 16 ? b[6 + j] & 15 : b[6 + j - 16] >> 4;
		return (float)((nib | (int)((qh >> j) & 1) << 4) - 16) * d;
	}
	case WFMT_Q4_K:
	case WFMT_Q5_K: {
		const uint8_t *s = b + 4, *qs = b + (fmt == WFMT_Q4_K ? 16 : 48), *qh = b + 16;
		int c = j / 64, h = j % 64 / 32, l = j % 32, sub = 2 * c + h, sc, m;
		if (sub < 4) {
			sc = s[sub] & 63, m = s[sub + 4] & 63;
		} else {
			sc = (s[sub + 4] & 15) | (s[sub - 4] >> 6) << 4;
			m = (s[sub + 4] >> 4) | (s[sub] >> 6) << 4;
		}
		int q = h ? qs[32 * c + l] >> 4 : qs[32 * c + l] & 15;
		if (fmt == WFMT_Q5_K && (qh[l] >> sub & 1))
			q += 16;
		float d1 = d * (float)sc, m1 = f16_to_f32(rd16(b + 2)) * (float)m;
		float p = d1 * (float)q;
		return p - m1;
	}
	case WFMT_Q6_K: {
		int half = j / 128, g = j % 128 / 32, l = j % 32;
		const uint8_t *ql = b + 64 * half, *qh = b + 128 + 32 * half;
		int8_t sc = (int8_t)b[192 + 8 * half + l / 16 + 2 * g];
		int low = g & 1 ? ql[l + 32] : ql[l];
		low = g & 2 ? low >> 4 : low & 15;
		int q = (low | (qh[l] >> (2 * g) & 3) << 4) - 32;
		return d * (float)sc * (float)q;
	}
	}
	return ref_dequant_iq(fmt, b, j);
}

#endif
