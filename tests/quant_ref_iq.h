/* quant_ref_iq.h: the C tests' own view of the grid IQ blocks (included by quant_ref.h): value j of a block,
 * written per value from the byte layout of ggml-common.h and ggml's float order (db = d (0.5 + n) / 4 and so
 * on), not from the kernels' integer form; the grids are layout/iq_grids.h, whose values tests/test_dequant.py
 * checks against gguf-py's. Also the fix-up that makes IQ1_M's random scale nibbles a finite f16. */
#ifndef FERRY_TEST_QUANT_REF_IQ_H
#define FERRY_TEST_QUANT_REF_IQ_H

#include <math.h>
#include <stdint.h>

#include "layout/iq_grids.h"
#include "layout/wfmt.h"

static uint32_t rd32_le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static float sgn_of(unsigned signs, int bit)
{
	return signs >> bit & 1 ? -1.f : 1.f;
}

/* byte i of a grid entry */
static int grid_byte(uint64_t e, int i)
{
	return (int)(e >> 8 * i & 255);
}

static float ref_dequant_iq(int fmt, const uint8_t *b, int j)
{
	int g = j / 32, l = j % 32 / 8, i = j % 8;
	float d = f16_to_f32((uint16_t)(b[0] | b[1] << 8));
	switch (fmt) {
	case WFMT_IQ2_XXS: {
		uint32_t aux = rd32_le(b + 2 + 8 * g + 4);
		float db = d * (0.5f + (float)(aux >> 28)) * 0.25f;
		return db * (float)grid_byte(iq2xxs_grid[b[2 + 8 * g + l]], i) * sgn_of(ksigns_iq2xs[aux >> 7 * l & 127], i);
	}
	case WFMT_IQ2_XS: {
		unsigned q = b[2 + 8 * g + 2 * l] | b[3 + 8 * g + 2 * l] << 8;
		float db = d * (0.5f + (float)(b[66 + g] >> 4 * (l / 2) & 15)) * 0.25f;
		return db * (float)grid_byte(iq2xs_grid[q & 511], i) * sgn_of(ksigns_iq2xs[q >> 9], i);
	}
	case WFMT_IQ2_S: {
		float db = d * (0.5f + (float)(b[74 + g] >> 4 * (l / 2) & 15)) * 0.25f;
		unsigned idx = b[2 + 4 * g + l] | (b[66 + g] << (8 - 2 * l) & 0x300);
		return db * (float)grid_byte(iq2s_grid[idx], i) * sgn_of(b[34 + 4 * g + l], i);
	}
	case WFMT_IQ3_XXS: {
		uint32_t aux = rd32_le(b + 66 + 4 * g);
		float db = d * (0.5f + (float)(aux >> 28)) * 0.5f;
		uint32_t e = iq3xxs_grid[b[2 + 8 * g + 2 * l + i / 4]];
		return db * (float)grid_byte(e, i % 4) * sgn_of(ksigns_iq2xs[aux >> 7 * l & 127], i);
	}
	case WFMT_IQ3_S: {
		float db = d * (float)(1 + 2 * (b[106 + g / 2] >> 4 * (g % 2) & 15));
		int k = 2 * l + i / 4;
		uint32_t e = iq3s_grid[b[2 + 8 * g + k] | (b[66 + g] >> k & 1) << 8];
		return db * (float)grid_byte(e, i % 4) * sgn_of(b[74 + 4 * g + l], i);
	}
	case WFMT_IQ1_S: {
		unsigned h = b[34 + 2 * g] | b[35 + 2 * g] << 8;
		float dl = d * (float)(2 * (h >> 12 & 7) + 1), delta = h & 0x8000 ? -IQ1S_DELTA : IQ1S_DELTA;
		uint64_t e = iq1s_grid[b[2 + 4 * g + l] | (h >> 3 * l & 7) << 8];
		return dl * ((float)(int8_t)grid_byte(e, i) + delta);
	}
	case WFMT_IQ1_M: {
		unsigned sc[4];
		for (int k = 0; k < 4; k++)
			sc[k] = b[48 + 2 * k] | b[49 + 2 * k] << 8;
		float dm = f16_to_f32((uint16_t)((sc[0] >> 12) | (sc[1] >> 8 & 0xf0) | (sc[2] >> 4 & 0xf00) | (sc[3] & 0xf000)));
		float dl = dm * (float)(2 * (sc[g / 2] >> (6 * (g % 2) + 3 * (l / 2)) & 7) + 1);
		unsigned h = b[32 + 2 * g + l / 2] >> 4 * (l % 2);
		float delta = h & 8 ? -IQ1S_DELTA : IQ1S_DELTA;
		uint64_t e = iq1s_grid[b[4 * g + l] | (h & 7) << 8];
		return dl * ((float)(int8_t)grid_byte(e, i) + delta);
	}
	}
	return NAN;
}

/* IQ1_M keeps d in the top nibbles of its 4 scale words: set them to the f16 d */
static void ref_iq1m_set_d(uint8_t *b, uint16_t d)
{
	for (int k = 0; k < 4; k++)
		b[49 + 2 * k] = (uint8_t)((b[49 + 2 * k] & 15) | (d >> 4 * k & 15) << 4);
}

#endif
