/*
 * quant.h: the GGUF quantized blocks ferry stores as they are (ggml-common.h layout, little-endian, packed),
 * one definition shared by the C and CUDA kernels. Values per block and bytes per block are also in
 * src/layout/wfmt_list.h; the static asserts tie the two together. Dequantization formulas: ../shared/FACTS.md
 * and the kernels (src/kernels/cpu/dequant.c).
 */
#ifndef FERRY_QUANT_H
#define FERRY_QUANT_H

#include <stdint.h>

#include "layout/wfmt.h"

#define QK 32     /* values per Q4_0/Q5_0/Q8_0 block */
#define QK_K 256  /* values per K-quant super-block */
#define K_SCALE_BYTES 12

struct block_q4_0 {
	uint16_t d;          /* f16 scale */
	uint8_t qs[QK / 2];  /* y[j] = (lo(qs[j]) - 8) d, y[j + 16] = (hi(qs[j]) - 8) d */
};

struct block_q5_0 {
	uint16_t d;
	uint8_t qh[4];       /* bit j: 5th bit of value j (little-endian u32) */
	uint8_t qs[QK / 2];  /* y[j] = ((lo(qs[j]) | bit j << 4) - 16) d, y[j + 16] with bit j + 16 and hi(qs[j]) */
};

struct block_q8_0 {
	uint16_t d;
	int8_t qs[QK];
};

struct block_q4_K {
	uint16_t d, dmin;                 /* f16 super-block scale for the 6-bit scales and mins */
	uint8_t scales[K_SCALE_BYTES];    /* 8 x (6-bit scale, 6-bit min) */
	uint8_t qs[QK_K / 2];
};

struct block_q5_K {
	uint16_t d, dmin;
	uint8_t scales[K_SCALE_BYTES];
	uint8_t qh[QK_K / 8];
	uint8_t qs[QK_K / 2];
};

struct block_q6_K {
	uint8_t ql[QK_K / 2];  /* low 4 bits */
	uint8_t qh[QK_K / 4];  /* high 2 bits */
	int8_t scales[QK_K / 16];
	uint16_t d;
};

struct block_q4_1 {
	uint16_t d, m;       /* f16 scale and min */
	uint8_t qs[QK / 2];  /* y[j] = lo(qs[j]) d + m, y[j + 16] = hi(qs[j]) d + m */
};

struct block_q5_1 {
	uint16_t d, m;
	uint8_t qh[4];       /* bit j: 5th bit of value j (little-endian u32) */
	uint8_t qs[QK / 2];  /* y[j] = (lo(qs[j]) | bit j << 4) d + m, y[j + 16] with bit j + 16 and hi(qs[j]) */
};

/* Q4_Z and Q8_Z (not GGUF: GPTQ/AWQ groups, src/layout/FORMAT.md): y = d (q - z) with an integer zero point z,
 * the product exact in f32 for |q - z| <= 2^13. Q4_Z's nibbles as Q4_0's (q[j] low, q[j + 16] high), Q8_Z's int8. */
struct block_q4_z {
	uint16_t d;          /* f16 scale */
	int16_t z;           /* zero point */
	uint8_t qs[QK / 2];  /* y[j] = d (lo(qs[j]) - z), y[j + 16] = d (hi(qs[j]) - z) */
};

struct block_q8_z {
	uint16_t d;
	int16_t z;
	int8_t qs[QK];       /* y[j] = d (qs[j] - z) */
};

/* Q4_Z128 and Q8_Z128: 128 values under one d and z, as 4 sub-blocks of 32 each laid out as Q4_Z's / Q8_Z's
 * codes (sub-block s at qs + 16 s / qs + 32 s) */
#define QZ_SUB 4
struct block_q4_z128 {
	uint16_t d;
	int16_t z;
	uint8_t qs[QZ_SUB * QK / 2];
};

struct block_q8_z128 {
	uint16_t d;
	int16_t z;
	int8_t qs[QZ_SUB * QK];
};

/* NF4 (bitsandbytes' 4-bit NormalFloat, not GGUF): y = NF4_VALUES[code] * d, the f32 product (bitsandbytes'
 * own before its cast to the compute dtype); value 2i is the high nibble of qs[i], 2i + 1 the low one. The
 * table as bitsandbytes' kernels write it (f32 literals). */
#define NF4_VALUES                                                                                            \
	{-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,      \
	 -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,        \
	 0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,                \
	 0.7229568362236023f, 1.0f}

struct block_nf4 {
	float d;             /* the block's absmax (double quantization already undone, in f32) */
	uint8_t qs[32];
};

/* BNB_FP4 (bitsandbytes' 4-bit float, not GGUF): NF4's block with the FP4 table: bitsandbytes' e2m1-like codes
 * (sign bit 3; 0, 0.0625, 8, 12, 4, 6, 2, 3) divided by 12 in f32 (its get_4bit_type's data / max, and the
 * values its dequantizing kernel writes as literals); code 8 is -0. y = BNB_FP4_VALUES[code] * d in f32. */
#define BNB_FP4_VALUES                                                                                        \
	{0.0f, 0.0625f / 12, 8.0f / 12, 12.0f / 12, 4.0f / 12, 6.0f / 12, 2.0f / 12, 3.0f / 12,               \
	 -0.0f, -0.0625f / 12, -8.0f / 12, -12.0f / 12, -4.0f / 12, -6.0f / 12, -2.0f / 12, -3.0f / 12}

struct block_bnb_fp4 {
	float d;             /* the block's absmax, as NF4's */
	uint8_t qs[32];
};

/* Q2_K: value 128n + 32j + l (n < 2, j < 4, l < 32) is (qs[32n + l] >> 2j) & 3; sub-block g = v / 16 has
 * y = d (scales[g] & 15) q - dmin (scales[g] >> 4). */
struct block_q2_K {
	uint8_t scales[QK_K / 16];
	uint8_t qs[QK_K / 4];
	uint16_t d, dmin;
};

/* Q3_K: value 128n + 32j + l has low bits (qs[32n + l] >> 2j) & 3 and q = low - 4 unless bit 4n + j of
 * hmask[l] is set; y = d (s_g - 32) q with the 6-bit s_g of sub-block g = v / 16 (q3k_scale). */
struct block_q3_K {
	uint8_t hmask[QK_K / 8];
	uint8_t qs[QK_K / 4];
	uint8_t scales[K_SCALE_BYTES];
	uint16_t d;
};

/* The 16-value codebook of IQ4_NL and IQ4_XS (ggml's kvalues_iq4nl) and MXFP4's doubled e2m1 values */
#define IQ4NL_VALUES {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}
#define MXFP4_VALUES {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12}

struct block_iq4_nl {
	uint16_t d;
	uint8_t qs[QK / 2];  /* y[j] = d v[lo(qs[j])], y[j + 16] = d v[hi(qs[j])] */
};

/* IQ4_XS: 8 sub-blocks of 32 as IQ4_NL's, sub-block b scaled by d (ls_b - 32), ls_b 6 bits: the low 4 in
 * nibble b % 2 of scales_l[b / 2], the high 2 at bit 2b of scales_h. */
struct block_iq4_xs {
	uint16_t d;
	uint16_t scales_h;
	uint8_t scales_l[QK_K / 64];
	uint8_t qs[QK_K / 2];
};

/* MXFP4: y[j] = e8m0_half(e) v[lo(qs[j])], y[j + 16] with hi(qs[j]) (v: MXFP4_VALUES) */
struct block_mxfp4 {
	uint8_t e;
	uint8_t qs[QK / 2];
};

/* TQ1_0: 5 ternary digits per byte of qs (values 0..239: 32 bytes x 5, then 16 bytes x 5) and 4 per byte of
 * qh (240..255); digit n of byte b is ((uint8_t)(b 3^n) * 3) >> 8, y = (digit - 1) d. */
struct block_tq1_0 {
	uint8_t qs[48];
	uint8_t qh[4];
	uint16_t d;
};

/* TQ2_0: value 128n + 32j + l is ((qs[32n + l] >> 2j) & 3) - 1, times d */
struct block_tq2_0 {
	uint8_t qs[QK_K / 4];
	uint16_t d;
};

#ifdef __cplusplus
#define QUANT_STATIC_ASSERT static_assert
#else
#define QUANT_STATIC_ASSERT _Static_assert
#endif
QUANT_STATIC_ASSERT(sizeof(struct block_q4_0) == WFMT_BYTES_Q4_0, "block_q4_0");
QUANT_STATIC_ASSERT(sizeof(struct block_q5_0) == WFMT_BYTES_Q5_0, "block_q5_0");
QUANT_STATIC_ASSERT(sizeof(struct block_q8_0) == WFMT_BYTES_Q8_0, "block_q8_0");
QUANT_STATIC_ASSERT(sizeof(struct block_q4_K) == WFMT_BYTES_Q4_K, "block_q4_K");
QUANT_STATIC_ASSERT(sizeof(struct block_q5_K) == WFMT_BYTES_Q5_K, "block_q5_K");
QUANT_STATIC_ASSERT(sizeof(struct block_q6_K) == WFMT_BYTES_Q6_K, "block_q6_K");
QUANT_STATIC_ASSERT(sizeof(struct block_q4_1) == WFMT_BYTES_Q4_1, "block_q4_1");
QUANT_STATIC_ASSERT(sizeof(struct block_q5_1) == WFMT_BYTES_Q5_1, "block_q5_1");
QUANT_STATIC_ASSERT(sizeof(struct block_nf4) == WFMT_BYTES_NF4, "block_nf4");
QUANT_STATIC_ASSERT(sizeof(struct block_bnb_fp4) == WFMT_BYTES_BNB_FP4, "block_bnb_fp4");
QUANT_STATIC_ASSERT(sizeof(struct block_q4_z) == WFMT_BYTES_Q4_Z, "block_q4_z");
QUANT_STATIC_ASSERT(sizeof(struct block_q8_z) == WFMT_BYTES_Q8_Z, "block_q8_z");
QUANT_STATIC_ASSERT(sizeof(struct block_q4_z128) == WFMT_BYTES_Q4_Z128, "block_q4_z128");
QUANT_STATIC_ASSERT(sizeof(struct block_q8_z128) == WFMT_BYTES_Q8_Z128, "block_q8_z128");
QUANT_STATIC_ASSERT(sizeof(struct block_q2_K) == WFMT_BYTES_Q2_K, "block_q2_K");
QUANT_STATIC_ASSERT(sizeof(struct block_q3_K) == WFMT_BYTES_Q3_K, "block_q3_K");
QUANT_STATIC_ASSERT(sizeof(struct block_iq4_nl) == WFMT_BYTES_IQ4_NL, "block_iq4_nl");
QUANT_STATIC_ASSERT(sizeof(struct block_iq4_xs) == WFMT_BYTES_IQ4_XS, "block_iq4_xs");
QUANT_STATIC_ASSERT(sizeof(struct block_mxfp4) == WFMT_BYTES_MXFP4, "block_mxfp4");
QUANT_STATIC_ASSERT(sizeof(struct block_tq1_0) == WFMT_BYTES_TQ1_0, "block_tq1_0");
QUANT_STATIC_ASSERT(sizeof(struct block_tq2_0) == WFMT_BYTES_TQ2_0, "block_tq2_0");

#include "layout/quant_iq.h"

/* Scale and min of sub-block j (0..7) of a Q4_K/Q5_K block. */
static inline void k_scale_min(int j, const uint8_t *s, uint8_t *sc, uint8_t *m)
{
	if (j < 4) {
		*sc = s[j] & 63;
		*m = s[j + 4] & 63;
	} else {
		*sc = (uint8_t)((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4));
		*m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
	}
}

/* The 12 scale bytes of a Q4_K/Q5_K block from 8 6-bit scales and mins (inverse of k_scale_min). */
static inline void k_scales_pack(const uint8_t *sc, const uint8_t *m, uint8_t *s)
{
	for (int j = 0; j < 4; j++) {
		s[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
		s[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
		s[j + 8] = (uint8_t)((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
	}
}

/* The 6-bit scale (0..63, 32 is zero) of sub-block j (0..15) of a Q3_K block */
static inline int q3k_scale(int j, const uint8_t *s)
{
	int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
	return lo | (s[8 + j % 4] >> (2 * (j / 4)) & 3) << 4;
}

/* The 12 scale bytes of a Q3_K block from 16 6-bit scales (inverse of q3k_scale) */
static inline void q3k_scales_pack(const uint8_t *sc, uint8_t *s)
{
	for (int j = 0; j < 12; j++)
		s[j] = 0;
	for (int j = 0; j < 16; j++) {
		s[j % 8] = (uint8_t)(s[j % 8] | (sc[j] & 15) << (4 * (j / 8)));
		s[8 + j % 4] = (uint8_t)(s[8 + j % 4] | (sc[j] >> 4) << (2 * (j / 4)));
	}
}

/* The 6-bit scale (0..63, 32 is zero) of sub-block b (0..7) of an IQ4_XS block */
static inline int iq4xs_scale(int b, uint16_t scales_h, const uint8_t *scales_l)
{
	return (scales_l[b / 2] >> (4 * (b % 2)) & 15) | (scales_h >> (2 * b) & 3) << 4;
}

/* The scale fields of an IQ4_XS block from 8 6-bit scales (inverse of iq4xs_scale) */
static inline void iq4xs_scales_pack(const uint8_t *ls, uint16_t *scales_h, uint8_t *scales_l)
{
	*scales_h = 0;
	for (int b = 0; b < 4; b++)
		scales_l[b] = (uint8_t)((ls[2 * b] & 15) | (ls[2 * b + 1] & 15) << 4);
	for (int b = 0; b < 8; b++)
		*scales_h = (uint16_t)(*scales_h | (ls[b] >> 4) << (2 * b));
}

/* MXFP4's block scale: 2^(e - 128) (half of e8m0's 2^(e - 127), as its values are doubled), exact in f32 */
static inline float e8m0_half(uint8_t e)
{
	union {
		uint32_t u;
		float f;
	} v = {e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23};
	return v.f;
}

/* Digit n (0..4) of a TQ1_0 byte: 0, 1 or 2 */
static inline int tq1_digit(uint8_t b, int n)
{
	static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
	return ((uint8_t)(b * pow3[n]) * 3) >> 8;
}

/* Value v (0..255) of a TQ1_0 block as its digit 0..2 (the value is (digit - 1) d) */
static inline int tq1_code(const uint8_t *qs, const uint8_t *qh, int v)
{
	if (v < 160)
		return tq1_digit(qs[v % 32], v / 32);
	if (v < 240)
		return tq1_digit(qs[32 + (v - 160) % 16], (v - 160) / 16);
	return tq1_digit(qh[(v - 240) % 4], (v - 240) / 4);
}

#endif
