/*
 * dequant_iq.c: the grid IQ formats on the CPU (blocks: src/layout/quant_iq.h, grids: src/layout/iq_grids.h):
 * qint_<k>, one block as integer codes and sub-scales with an f32 scale (qint_iq.h; qdot.c's portable dots are
 * generated from it), and cpu_dequant_<k>, the values (d f s) * c from the same decoding.
 * Bit-identical with ggml's dequantize_row_iq* and gguf-py: d (f16, exact in f32) times f (a power of two),
 * s (<= 31) and c (|c| <= 62) has at most 11 + 5 + 6 significant bits, so every product of ggml's and of
 * ours is exact and the order of the multiplications cannot change a value (tests/test_dequant.py checks).
 */
#include <string.h>

#include "kernels/cpu/qdot.h"
#include "kernels/cpu/qint_iq.h"
#include "layout/iq_grids.h"
#include "layout/quant.h"

static uint32_t rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

/* n (8 or 4) codes from a grid entry g (value j in byte j) and sign bits (bit j set: negative) */
static void put_signed(int8_t *q, uint64_t g, unsigned signs, int n)
{
	for (int j = 0; j < n; j++) {
		int v = (int)(g >> 8 * j & 255);
		q[j] = (int8_t)(signs >> j & 1 ? -v : v);
	}
}

/* IQ1: 8 codes 8 grid + shift from an iq1s_grid entry (bytes -1, 0, 1) and the shift +-1 */
static void put_iq1(int8_t *q, uint64_t g, int shift)
{
	for (int j = 0; j < 8; j++)
		q[j] = (int8_t)(8 * (int8_t)(g >> 8 * j & 255) + shift);
}

/* both 16-halves of 32-group g share one scale */
static void scale32(int16_t *sc, int g, int s)
{
	sc[2 * g] = sc[2 * g + 1] = (int16_t)s;
}

static void no_mins(int16_t *mn, float *dmin)
{
	memset(mn, 0, sizeof(int16_t) * QK_K / 16);
	*dmin = 0;
}

void qint_iq2_xxs(const void *blk, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin)
{
	const struct block_iq2_xxs *b = blk;
	const uint8_t *qs = (const uint8_t *)b->qs;
	for (int g = 0; g < 8; g++, qs += 8) {
		uint32_t aux = rd32(qs + 4);
		scale32(sc, g, 2 * (int)(aux >> 28) + 1);
		for (int l = 0; l < 4; l++)
			put_signed(q + 32 * g + 8 * l, iq2xxs_grid[qs[l]], ksigns_iq2xs[aux >> 7 * l & 127], 8);
	}
	*d = f16_to_f32(b->d) * 0.125f;
	no_mins(mn, dmin);
}

void qint_iq2_xs(const void *blk, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin)
{
	const struct block_iq2_xs *b = blk;
	for (int g = 0; g < 8; g++) {
		sc[2 * g] = (int16_t)(2 * (b->scales[g] & 15) + 1);
		sc[2 * g + 1] = (int16_t)(2 * (b->scales[g] >> 4) + 1);
		for (int l = 0; l < 4; l++) {
			unsigned v = b->qs[4 * g + l];
			put_signed(q + 32 * g + 8 * l, iq2xs_grid[v & 511], ksigns_iq2xs[v >> 9], 8);
		}
	}
	*d = f16_to_f32(b->d) * 0.125f;
	no_mins(mn, dmin);
}

void qint_iq2_s(const void *blk, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin)
{
	const struct block_iq2_s *b = blk;
	for (int g = 0; g < 8; g++) {
		sc[2 * g] = (int16_t)(2 * (b->scales[g] & 15) + 1);
		sc[2 * g + 1] = (int16_t)(2 * (b->scales[g] >> 4) + 1);
		for (int l = 0; l < 4; l++) {
			unsigned idx = b->qs[4 * g + l] | ((unsigned)b->qh[g] << (8 - 2 * l) & 0x300);
			put_signed(q + 32 * g + 8 * l, iq2s_grid[idx], b->qs[QK_K / 8 + 4 * g + l], 8);
		}
	}
	*d = f16_to_f32(b->d) * 0.125f;
	no_mins(mn, dmin);
}

void qint_iq3_xxs(const void *blk, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin)
{
	const struct block_iq3_xxs *b = blk;
	for (int g = 0; g < 8; g++) {
		uint32_t aux = rd32(b->qs + QK_K / 4 + 4 * g);
		scale32(sc, g, 2 * (int)(aux >> 28) + 1);
		for (int l = 0; l < 4; l++) {
			unsigned s = ksigns_iq2xs[aux >> 7 * l & 127];
			int8_t *o = q + 32 * g + 8 * l;
			put_signed(o, iq3xxs_grid[b->qs[8 * g + 2 * l]], s & 15, 4);
			put_signed(o + 4, iq3xxs_grid[b->qs[8 * g + 2 * l + 1]], s >> 4, 4);
		}
	}
	*d = f16_to_f32(b->d) * 0.25f;
	no_mins(mn, dmin);
}

void qint_iq3_s(const void *blk, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin)
{
	const struct block_iq3_s *b = blk;
	for (int g = 0; g < 8; g++) {
		scale32(sc, g, 2 * (b->scales[g / 2] >> 4 * (g & 1) & 15) + 1);
		unsigned h = b->qh[g];
		for (int l = 0; l < 4; l++) {
			unsigned s = b->signs[4 * g + l];
			unsigned i1 = b->qs[8 * g + 2 * l] | (h << (8 - 2 * l) & 256);
			unsigned i2 = b->qs[8 * g + 2 * l + 1] | (h << (7 - 2 * l) & 256);
			int8_t *o = q + 32 * g + 8 * l;
			put_signed(o, iq3s_grid[i1], s & 15, 4);
			put_signed(o + 4, iq3s_grid[i2], s >> 4, 4);
		}
	}
	*d = f16_to_f32(b->d);
	no_mins(mn, dmin);
}

void qint_iq1_s(const void *blk, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin)
{
	const struct block_iq1_s *b = blk;
	for (int g = 0; g < 8; g++) {
		unsigned h = b->qh[g];
		scale32(sc, g, 2 * (int)(h >> 12 & 7) + 1);
		for (int l = 0; l < 4; l++)
			put_iq1(q + 32 * g + 8 * l, iq1s_grid[b->qs[4 * g + l] | (h >> 3 * l & 7) << 8], h & 0x8000 ? -1 : 1);
	}
	*d = f16_to_f32(b->d) * 0.125f;
	no_mins(mn, dmin);
}

void qint_iq1_m(const void *blk, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin)
{
	const struct block_iq1_m *b = blk;
	for (int g = 0; g < 8; g++) {
		unsigned s = (unsigned)b->scales[g & ~1] | (unsigned)b->scales[(g & ~1) + 1] << 8;
		s >>= 6 * (g & 1);
		sc[2 * g] = (int16_t)(2 * (s & 7) + 1);
		sc[2 * g + 1] = (int16_t)(2 * (s >> 3 & 7) + 1);
		for (int l = 0; l < 4; l++) {
			unsigned h = b->qh[2 * g + l / 2] >> 4 * (l & 1);
			put_iq1(q + 32 * g + 8 * l, iq1s_grid[b->qs[4 * g + l] | (h & 7) << 8], h & 8 ? -1 : 1);
		}
	}
	*d = f16_to_f32(iq1m_d_bits(b->scales)) * 0.125f;
	no_mins(mn, dmin);
}

/* y = (d s) c per value: exact (see the top), so equal to ggml's own order */
static void dequant_from_qint(void (*qint)(const void *, int8_t *, int16_t *, int16_t *, float *, float *),
			      size_t bb, const void *src, float *y, int64_t nb)
{
	int8_t q[QK_K];
	int16_t sc[QK_K / 16], mn[QK_K / 16];
	for (int64_t i = 0; i < nb; i++, y += QK_K) {
		float d, dmin;
		qint((const char *)src + (size_t)i * bb, q, sc, mn, &d, &dmin);
		for (int j = 0; j < QK_K; j++) {
			float ds = d * (float)sc[j / 16];
			y[j] = ds * (float)q[j];
		}
	}
}

#define DEQUANT_IQ(k)                                                                  \
	void cpu_dequant_##k(const void *src, float *y, int64_t nb)                    \
	{                                                                              \
		dequant_from_qint(qint_##k, sizeof(struct block_##k), src, y, nb);     \
	}
DEQUANT_IQ(iq2_xxs)
DEQUANT_IQ(iq2_xs)
DEQUANT_IQ(iq2_s)
DEQUANT_IQ(iq3_xxs)
DEQUANT_IQ(iq3_s)
DEQUANT_IQ(iq1_s)
DEQUANT_IQ(iq1_m)
#undef DEQUANT_IQ
