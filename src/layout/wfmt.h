/*
 * wfmt.h: weight format codes and the element conversions every backend shares.
 *
 * One code per storage format of a tensor in a model.ferry file, generated from the rows of wfmt_list.h (the one
 * description of each format). The numeric values are part of the on-disk format (src/layout/FORMAT.md): never
 * renumber, only append. Quantized formats keep their block structure (bytes per block of `block` values);
 * F32/F16/BF16 are block size 1.
 */
#ifndef FERRY_WFMT_H
#define FERRY_WFMT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "layout/wfmt_list.h"

#define WFMT_ENUM_ROW(id, code, block, bytes, ggml, kind, k) WFMT_##id,
enum wfmt { WFMT_LIST(WFMT_ENUM_ROW) WFMT_COUNT };
#undef WFMT_ENUM_ROW
/* WFMT_BYTES_<id>: bytes per block as a constant (quant.h checks its block structs against them) */
#define WFMT_BYTES_ROW(id, code, block, bytes, ggml, kind, k) WFMT_BYTES_##id = bytes,
enum { WFMT_LIST(WFMT_BYTES_ROW) };
#undef WFMT_BYTES_ROW

struct wfmt_info {
	const char *name;
	uint32_t block;       /* values per block */
	uint32_t block_bytes; /* bytes per block */
	int ggml;             /* GGML type id of the same bytes, -1: none */
};

extern const struct wfmt_info wfmt_table[WFMT_COUNT];

/* Returns -1 when the name is unknown. */
int wfmt_from_name(const char *name);
const char *wfmt_name(int fmt);
/* Bytes of a row of n values, 0 when n is not a multiple of the block or fmt is unknown. */
uint64_t wfmt_row_bytes(int fmt, uint64_t n);

/* A GGML tensor type (the type id of a GGUF tensor): a row of WFMT_LIST with a GGML id (wfmt its format) or
 * of GGML_ONLY_LIST (wfmt -1: ferry can name and size it, not convert it). */
struct wfmt_ggml {
	uint32_t id;
	const char *name;
	uint32_t block, block_bytes;
	int wfmt;
};
/* NULL for a type id neither list has. */
const struct wfmt_ggml *wfmt_ggml_find(uint32_t id);

/* The formats that have kernels (block > 0; WFMT_NAMES_GGUF: and a GGML type), smallest block first and then by
 * code, into fmts; returns how many. The order of the messages that say what is accepted and of the tests. */
enum { WFMT_NAMES_GGUF = 1, WFMT_NAMES_LOWER = 2 };
int wfmt_sorted(int fmts[WFMT_COUNT], unsigned flags);
/* Their names, ", "-separated ("F32, F16, BF16, Q8_0, ..."; WFMT_NAMES_LOWER: in lower case). */
void wfmt_names(char *buf, size_t len, unsigned flags);

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
