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

#endif
