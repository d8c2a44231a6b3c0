/*
 * quant_iq.h: the blocks of the grid IQ formats (ggml-common.h layout, little-endian, packed, 256 values each),
 * included by quant.h. A block holds an f16 scale d (IQ1_M: spread over its scales), small integer sub-scales
 * and, per group of 8 (IQ3: 4) values, an index into a grid of src/layout/iq_grids.h plus sign bits. Every
 * value is d * f * s * c exactly (f a power of two, s an odd integer sub-scale per 16 values, c an integer code):
 *   IQ2_XXS, IQ2_XS, IQ2_S  f = 1/8, s = 2 nibble + 1, c = +-grid (8, 25, 43)
 *   IQ3_XXS                 f = 1/4, s = 2 nibble + 1, c = +-grid (4 .. 62)
 *   IQ3_S                   f = 1,   s = 2 nibble + 1, c = +-grid (1 .. 15)
 *   IQ1_S, IQ1_M            f = 1/8, s = 2 x + 1 (x 3 bits), c = 8 grid +- 1 (grid -1, 0, 1; the +-1/8 shift)
 * which is how the CPU kernels decode them (qint_<k>, src/kernels/cpu/dequant_iq.c); bit fields per block
 * below. All block sizes are even and no field is wider than 2 bytes: a block in a row is 2-byte aligned.
 */
#ifndef FERRY_QUANT_IQ_H
#define FERRY_QUANT_IQ_H

#include <stdint.h>

/* 8 groups of 32: bytes 8g..8g+3 of qs are the grid indices of its 4 groups of 8 (iq2xxs_grid); the u32 at
 * 8g + 4 holds 4 x 7-bit sign indices (ksigns_iq2xs, bits 7l..7l+6) and the nibble of its scale (bits 28..31). */
struct block_iq2_xxs {
	uint16_t d;
	uint16_t qs[QK_K / 8];
};

/* qs[4g + l]: bits 0..8 the index (iq2xs_grid) of group of 8 number l of 32-group g, bits 9..15 its sign
 * index; scales[g]: low nibble for values 0..15 of the group, high nibble for 16..31. */
struct block_iq2_xs {
	uint16_t d;
	uint16_t qs[QK_K / 8];
	uint8_t scales[QK_K / 32];
};

/* qs[4g + l] the low 8 bits of the index (iq2s_grid) of group l of 32-group g, bits 2l, 2l + 1 of qh[g] its
 * 2 high bits; qs[32 + 4g + l] its 8 sign bits (no parity); scales as IQ2_XS. */
struct block_iq2_s {
	uint16_t d;
	uint8_t qs[QK_K / 4];
	uint8_t qh[QK_K / 32];
	uint8_t scales[QK_K / 32];
};

/* qs[0..63]: 2 indices (iq3xxs_grid, 4 values each) per group of 8; qs[64 + 4g ..] a u32 per 32-group as in
 * IQ2_XXS (sign indices, scale nibble in bits 28..31). */
struct block_iq3_xxs {
	uint16_t d;
	uint8_t qs[3 * QK_K / 8];
};

/* qs[8g + i] the low 8 bits of index i (iq3s_grid, 4 values each) of 32-group g, bit i of qh[g] its 9th
 * bit; signs[4g + l] the 8 sign bits of group of 8 l; scales[g / 2] nibble g % 2 the scale of group g. */
struct block_iq3_s {
	uint16_t d;
	uint8_t qs[QK_K / 4];
	uint8_t qh[QK_K / 32];
	uint8_t signs[QK_K / 8];
	uint8_t scales[QK_K / 64];
};

/* qs[4g + l] the low 8 bits of the index (iq1s_grid) of group l of 32-group g; qh[g]: bits 3l..3l+2 its
 * 3 high bits, bits 12..14 the group's scale, bit 15 the shift's sign (set: -1/8). */
struct block_iq1_s {
	uint16_t d;
	uint8_t qs[QK_K / 8];
	uint16_t qh[QK_K / 32];
};

/* qs as IQ1_S; qh[2g + h] for the groups 2h, 2h + 1 of 32-group g: bits 0..2 and 4..6 their 3 high index
 * bits, bits 3 and 7 their shift's sign; the u16 scales s_i (i = 0..3, scales[2i], scales[2i + 1]): bits
 * 6(g%2)..+2 and 6(g%2)+3..+5 of s_(g/2) the scales of values 0..15 and 16..31 of group g; the 4 top nibbles
 * of s_0..s_3 are the f16 d, low to high. */
struct block_iq1_m {
	uint8_t qs[QK_K / 8];
	uint8_t qh[QK_K / 16];
	uint8_t scales[QK_K / 32];
};

QUANT_STATIC_ASSERT(sizeof(struct block_iq2_xxs) == WFMT_BYTES_IQ2_XXS, "block_iq2_xxs");
QUANT_STATIC_ASSERT(sizeof(struct block_iq2_xs) == WFMT_BYTES_IQ2_XS, "block_iq2_xs");
QUANT_STATIC_ASSERT(sizeof(struct block_iq2_s) == WFMT_BYTES_IQ2_S, "block_iq2_s");
QUANT_STATIC_ASSERT(sizeof(struct block_iq3_xxs) == WFMT_BYTES_IQ3_XXS, "block_iq3_xxs");
QUANT_STATIC_ASSERT(sizeof(struct block_iq3_s) == WFMT_BYTES_IQ3_S, "block_iq3_s");
QUANT_STATIC_ASSERT(sizeof(struct block_iq1_s) == WFMT_BYTES_IQ1_S, "block_iq1_s");
QUANT_STATIC_ASSERT(sizeof(struct block_iq1_m) == WFMT_BYTES_IQ1_M, "block_iq1_m");

/* The f16 bits of an IQ1_M block's d, from the top nibbles of its 4 scale words */
static inline uint16_t iq1m_d_bits(const uint8_t *scales)
{
	return (uint16_t)((scales[1] >> 4) | (scales[3] & 0xf0) | (scales[5] >> 4) << 8 | (scales[7] & 0xf0) << 8);
}

#endif
