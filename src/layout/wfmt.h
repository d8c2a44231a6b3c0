/*
 * wfmt.h: weight format codes and the element conversions every backend shares.
 *
 * One code per storage format of a tensor in a model.ferry file. The numeric values are part of the
 * on-disk format (src/layout/FORMAT.md): never renumber, only append. Quantized formats keep their
 * block structure (bytes per block of `block` values); F32/F16/BF16 are block size 1.
 */
#ifndef FERRY_WFMT_H
#define FERRY_WFMT_H

#include <stdint.h>
#include <string.h>

enum wfmt {
	WFMT_F32 = 0,
	WFMT_F16 = 1,
	WFMT_BF16 = 2,
	WFMT_Q8_0 = 3, /* GGUF blocks, kept as they are (src/layout/quant.h) */
	WFMT_Q4_0 = 4,
	WFMT_Q4_K = 5,
	WFMT_Q5_K = 6,
	WFMT_Q6_K = 7,
	WFMT_NF4 = 8,   /* reserved: bitsandbytes NF4 */
	WFMT_INT4G = 9, /* reserved: group-wise int4 with scales (GPTQ) */
	WFMT_INT8G = 10,
	WFMT_Q5_0 = 11, /* GGUF block: Q4_K_M files use it where a row is not a multiple of 256 */
	WFMT_COUNT
};

struct wfmt_info {
	const char *name;
	uint32_t block;       /* values per block */
	uint32_t block_bytes; /* bytes per block */
};

extern const struct wfmt_info wfmt_table[WFMT_COUNT];

/* Returns -1 when the name is unknown. */
int wfmt_from_name(const char *name);
const char *wfmt_name(int fmt);
/* Bytes of a row of n values, 0 when n is not a multiple of the block or fmt is unknown. */
uint64_t wfmt_row_bytes(int fmt, uint64_t n);

/* IEEE half -> float, exact (subnormals, inf, nan). */
static inline float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f;
	uint32_t man = h & 0x3ff;
	uint32_t bits;
	if (exp == 0) {
		if (man == 0) {
			bits = sign;
		} else { /* subnormal: normalize */
			int e = -1;
			do {
				e++;
				man <<= 1;
			} while (!(man & 0x400));
			bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
		}
	} else if (exp == 31) {
		bits = sign | 0x7f800000u | (man << 13);
	} else {
		bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
	}
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

static inline float bf16_to_f32(uint16_t h)
{
	uint32_t bits = (uint32_t)h << 16;
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

/* float -> half, round to nearest even (used by tests and converters). */
static inline uint16_t f32_to_f16(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	uint32_t sign = (x >> 16) & 0x8000;
	uint32_t absx = x & 0x7fffffff;
	if (absx >= 0x7f800000) /* inf or nan */
		return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000 ? 0x200 : 0));
	if (absx >= 0x477ff000) /* rounds to >= 65520: overflow */
		return (uint16_t)(sign | 0x7c00);
	if (absx < 0x38800000) { /* result is subnormal or zero: m = round_even(x * 2^24) */
		uint32_t e = absx >> 23, shift = 126 - e;
		if (e == 0 || shift > 24)
			return (uint16_t)sign;
		uint32_t mant = (absx & 0x7fffff) | 0x800000, m = mant >> shift, r = mant & ((1u << shift) - 1);
		uint32_t half = 1u << (shift - 1);
		if (r > half || (r == half && (m & 1)))
			m++;
		return (uint16_t)(sign | m);
	}
	uint32_t mant = absx & 0x7fffff;
	uint32_t exp = (absx >> 23) - 127 + 15;
	uint32_t h = (exp << 10) | (mant >> 13);
	uint32_t rem = mant & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
		h++;
	return (uint16_t)(sign | h);
}

static inline uint16_t f32_to_bf16(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	if ((x & 0x7fffffff) > 0x7f800000)
		return (uint16_t)((x >> 16) | 0x40);
	x += 0x7fff + ((x >> 16) & 1);
	return (uint16_t)(x >> 16);
}

#endif
