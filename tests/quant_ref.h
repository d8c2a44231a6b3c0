/* quant_ref.h: the CPU kernel tests' random numbers (host_rand.h from a seed of their own, a test may change it) and their own
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

#define HOST_RAND_SEED 88172645463325252ull /* the data the tests' bounds were set on */
#include "host_rand.h"

static float nrand(void)
{
	return (float)(sqrt(-2 * log(urand() + 1e-300)) * cos(2 * M_PI * urand()));
}

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* Where a block's f16 scale d is (its dmin or min follows it) */
static size_t ref_d_at(int fmt)
{
	switch (fmt) {
	case WFMT_Q6_K:
		return 208;
	case WFMT_Q2_K:
		return 80;
	case WFMT_Q3_K:
		return 108;
	case WFMT_TQ1_0:
		return 52;
	case WFMT_TQ2_0:
		return 64;
	}
	return 0;
}

static const int ref_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
static const int ref_fp4x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* nb blocks of random bytes with random finite f16 scales (d, and dmin for the K-quants with mins) */
static uint8_t *rand_blocks(int fmt, size_t nb)
{
	size_t bb = wfmt_table[fmt].block_bytes;
	uint8_t *p = malloc(nb * bb);
	for (size_t i = 0; i < nb * bb; i++)
		p[i] = (uint8_t)(urand() * 256);
	for (size_t i = 0; i < nb; i++) {
		uint8_t *b = p + i * bb;
		uint16_t d = rand_half(), dmin = rand_half();
		if (fmt == WFMT_MXFP4) { /* e8m0: 2^-24 .. 2^2 like the halves */
			b[0] = (uint8_t)(104 + urand() * 27);
			continue;
		}
		memcpy(b + ref_d_at(fmt), &d, 2);
		if (fmt == WFMT_IQ1_M)
			ref_iq1m_set_d(b, d);
		if (fmt == WFMT_NF4 || fmt == WFMT_BNB_FP4) { /* f32 absmax, positive as bitsandbytes' (2^-14 .. 2^2) */
			float a = ldexpf((float)(1 + urand()), (int)(urand() * 17) - 14);
			memcpy(b, &a, 4);
		}
		if (fmt == WFMT_Q4_Z || fmt == WFMT_Q8_Z || fmt == WFMT_Q4_Z128 || fmt == WFMT_Q8_Z128) {
			/* zero points as GPTQ/AWQ give them, little-endian int16 */
			int four = fmt == WFMT_Q4_Z || fmt == WFMT_Q4_Z128;
			int z = four ? (int)(urand() * 17) : (int)(urand() * 257) - 128;
			b[2] = (uint8_t)(z & 255), b[3] = (uint8_t)((unsigned)z >> 8 & 255);
		}
		if (fmt == WFMT_Q4_K || fmt == WFMT_Q5_K || fmt == WFMT_Q4_1 || fmt == WFMT_Q5_1 || fmt == WFMT_Q2_K)
			memcpy(b + ref_d_at(fmt) + 2, &dmin, 2);
	}
	return p;
}

/* Value j of one block, from the byte layout of ggml-common.h and ggml's float order (not the kernels'). */
static float ref_dequant(int fmt, const uint8_t *b, int j)
{
	float d = f16_to_f32(rd16(b + ref_d_at(fmt)));
	switch (fmt) {
	case WFMT_Q4_1:
	case WFMT_Q5_1: {
		float m = f16_to_f32(rd16(b + 2));
		int five = fmt == WFMT_Q5_1, nib = j < 16 ? b[4 + 4 * five + j] & 15 : b[4 + 4 * five + j - 16] >> 4;
		uint32_t qh = five ? (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 | (uint32_t)b[7] << 24 : 0;
		float p = d * (float)(nib | (int)((qh >> j) & 1) << 4);
		return p + m;
	}
	case WFMT_NF4: { /* bitsandbytes' NF4 table (functional.py), value 2i the high nibble of byte i */
		static const double nf4[16] = {-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
					       -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
					       0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
					       0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
					       0.7229568362236023, 1.0};
		float a;
		memcpy(&a, b, 4);
		return (float)nf4[j % 2 ? b[4 + j / 2] & 15 : b[4 + j / 2] >> 4] * a;
	}
	case WFMT_BNB_FP4: { /* bitsandbytes' FP4 (get_4bit_type: sign, 2 exponent bits, 1 mantissa bit, the
			    * subnormal 0.0625) over its max 12, value 2i the high nibble of byte i */
		int c = j % 2 ? b[4 + j / 2] & 15 : b[4 + j / 2] >> 4, e = c >> 1 & 3;
		double v = e ? ldexp(c & 1 ? 1.5 : 1.0, 4 - e) : (c & 1 ? 0.0625 : 0.0);
		float a;
		memcpy(&a, b, 4);
		return (float)((c & 8 ? -v : v) / 12) * a;
	}
	case WFMT_Q4_Z:
	case WFMT_Q8_Z:
	case WFMT_Q4_Z128:
	case WFMT_Q8_Z128: { /* Q4_Z128: sub-block j / 32 at 4 + 16 (j / 32), laid out as Q4_Z */
		int z = (int16_t)rd16(b + 2), o = j % 32;
		const uint8_t *qs = b + 4 + 16 * (j / 32);
		int q = fmt == WFMT_Q8_Z || fmt == WFMT_Q8_Z128 ? (int8_t)b[4 + j] : o < 16 ? qs[o] & 15 : qs[o - 16] >> 4;
		return d * (float)(q - z);
	}
	case WFMT_Q2_K: {
		int sc = b[j / 16], q = b[16 + 32 * (j / 128) + j % 32] >> (2 * (j % 128 / 32)) & 3;
		float dl = d * (float)(sc & 15), ml = f16_to_f32(rd16(b + 82)) * (float)(sc >> 4);
		float p = dl * (float)q;
		return p - ml;
	}
	case WFMT_Q3_K: {
		int g = j / 16, shift = 2 * (j % 128 / 32), bit = j / 32;
		const uint8_t *sc = b + 96;
		int s6 = (g < 8 ? sc[g] & 15 : sc[g - 8] >> 4) | (sc[8 + g % 4] >> (2 * (g / 4)) & 3) << 4;
		int q = (b[32 + 32 * (j / 128) + j % 32] >> shift & 3) - ((b[j % 32] >> bit & 1) ? 0 : 4);
		return d * (float)(s6 - 32) * (float)q;
	}
	case WFMT_IQ4_NL:
		return d * (float)ref_iq4nl[j < 16 ? b[2 + j] & 15 : b[2 + j - 16] >> 4];
	case WFMT_IQ4_XS: {
		int s = j / 32, o = j % 32;
		int ls = (b[4 + s / 2] >> (4 * (s % 2)) & 15) | (rd16(b + 2) >> (2 * s) & 3) << 4;
		const uint8_t *qs = b + 8 + 16 * s;
		return d * (float)(ls - 32) * (float)ref_iq4nl[o < 16 ? qs[o] & 15 : qs[o - 16] >> 4];
	}
	case WFMT_MXFP4:
		return ldexpf(1.0f, b[0] - 128) * (float)ref_fp4x2[j < 16 ? b[1 + j] & 15 : b[1 + j - 16] >> 4];
	case WFMT_TQ1_0: {
		/* byte and power of 3 of value j; a digit is the top trit of the byte's fixed-point fraction */
		int byte = j < 160 ? j % 32 : j < 240 ? 32 + (j - 160) % 16 : 48 + (j - 240) % 4;
		int n = j < 160 ? j / 32 : j < 240 ? (j - 160) / 16 : (j - 240) / 4, p3 = 1;
		for (int i = 0; i < n; i++)
			p3 *= 3;
		int digit = (int)(((unsigned)(b[byte] * p3) & 255) * 3 >> 8);
		return d * (float)(digit - 1);
	}
	case WFMT_TQ2_0:
		return d * (float)((b[32 * (j / 128) + j % 32] >> (2 * (j % 128 / 32)) & 3) - 1);
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
