/*
 * synth_iq.c: random valid blocks of the grid IQ formats for `ferry synth` (blocks: src/layout/quant_iq.h).
 * Every bit pattern of an IQ block is a valid block (any grid index, any sign index: ksigns_iq2xs keeps the
 * parity itself), so a block is random bytes with its f16 d (IQ1_M: the 4 top nibbles of its scales) set so
 * that the values d f s c have the RMS asked for: E[v^2] = (d f)^2 E[s^2] E[c^2] with s = 2 n + 1 for a
 * uniform 4-bit n (E[s^2] = 341) or 3-bit n (IQ1: 85) and c a grid byte of a uniform index with a random sign
 * (IQ1: 8 g +- 1, E = 64 E[g^2] + 1), E[c^2] measured once on the grids of src/layout/iq_grids.h.
 */
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "convert/synth_iq.h"
#include "layout/iq_grids.h"
#include "layout/quant.h"

#define S2_4BIT 341.0 /* mean of (2n + 1)^2, n = 0..15 */
#define S2_3BIT 85.0  /* n = 0..7 */

static double ms_iq2xxs, ms_iq2xs, ms_iq2s, ms_iq3xxs, ms_iq3s, ms_iq1s;
static pthread_once_t ms_once = PTHREAD_ONCE_INIT;

/* mean square of n bytes, as int8 when sgn */
static double bytes_ms(const void *t, size_t n, bool sgn)
{
	const uint8_t *b = t;
	double s = 0;
	for (size_t i = 0; i < n; i++) {
		double v = sgn ? (double)(int8_t)b[i] : (double)b[i];
		s += v * v;
	}
	return s / (double)n;
}

static void ms_init(void)
{
	ms_iq2xxs = bytes_ms(iq2xxs_grid, sizeof(iq2xxs_grid), false);
	ms_iq2xs = bytes_ms(iq2xs_grid, sizeof(iq2xs_grid), false);
	ms_iq2s = bytes_ms(iq2s_grid, sizeof(iq2s_grid), false);
	ms_iq3xxs = bytes_ms(iq3xxs_grid, sizeof(iq3xxs_grid), false);
	ms_iq3s = bytes_ms(iq3s_grid, sizeof(iq3s_grid), false);
	ms_iq1s = 64 * bytes_ms(iq1s_grid, sizeof(iq1s_grid), true) + 1;
}

/* K / 256 random blocks of bb bytes; unit: the RMS of the values when d = 1 */
static void fill_iq(uint8_t *dst, int64_t K, size_t bb, double unit, bool iq1m, double rms, struct rng *r)
{
	size_t n = (size_t)(K / QK_K) * bb;
	for (size_t i = 0; i < n; i += 8) {
		uint64_t v = rng_next(r);
		memcpy(dst + i, &v, n - i < 8 ? n - i : 8);
	}
	uint16_t d = f32_to_f16((float)(rms / unit));
	for (uint8_t *b = dst; b < dst + n; b += bb) {
		if (!iq1m) {
			memcpy(b, &d, 2);
			continue;
		}
		uint8_t *sc = b + offsetof(struct block_iq1_m, scales); /* d's nibbles, low to high: iq1m_d_bits */
		sc[1] = (uint8_t)((sc[1] & 15) | (d & 15) << 4);
		sc[3] = (uint8_t)((sc[3] & 15) | (d & 0xf0));
		sc[5] = (uint8_t)((sc[5] & 15) | (d >> 8 & 15) << 4);
		sc[7] = (uint8_t)((sc[7] & 15) | (d >> 8 & 0xf0));
	}
}

#define SYNTH_IQ(k, f, s2, ms, iq1m)                                                            \
	void synth_fill_##k(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)        \
	{                                                                                       \
		(void)fmt;                                                                      \
		pthread_once(&ms_once, ms_init);                                                \
		fill_iq(dst, K, sizeof(struct block_##k), (f) * sqrt((s2) * (ms)), iq1m, rms, r); \
	}
SYNTH_IQ(iq2_xxs, 0.125, S2_4BIT, ms_iq2xxs, false)
SYNTH_IQ(iq2_xs, 0.125, S2_4BIT, ms_iq2xs, false)
SYNTH_IQ(iq2_s, 0.125, S2_4BIT, ms_iq2s, false)
SYNTH_IQ(iq3_xxs, 0.25, S2_4BIT, ms_iq3xxs, false)
SYNTH_IQ(iq3_s, 1.0, S2_4BIT, ms_iq3s, false)
SYNTH_IQ(iq1_s, 0.125, S2_3BIT, ms_iq1s, false)
SYNTH_IQ(iq1_m, 0.125, S2_3BIT, ms_iq1s, true)
#undef SYNTH_IQ
