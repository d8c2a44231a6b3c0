/*
 * iq.cuh: the CUDA decoders deq_<k> of the grid IQ formats (blocks: src/layout/quant_iq.h, grids:
 * src/layout/iq_grids.h as __device__ arrays in global memory: lanes index them divergently, which constant
 * memory would serialize), included by matmul.cuh, whose contract they keep: deq<4>(row, k, w) gives values
 * k .. k+3 of a row, 4 values being half of a group of 8 (so one grid entry, or for IQ3 exactly one), with
 * no branches, as (d f s) c in the order of the CPU's (src/kernels/cpu/dequant_iq.c): every product is exact,
 * so the values are bit-identical with it and with ggml. Blocks are 2-byte aligned; read in bytes and
 * 2-byte words. Value v of a block: 32-group g = v/32, group of 8 l = v%32/8, half hh = v%8/4.
 */
#ifndef FERRY_CUDA_IQ_CUH
#define FERRY_CUDA_IQ_CUH

#include "layout/iq_grids.h"

/* ksigns_iq2xs[i] computed: the 7 sign bits i and an eighth that makes their count even (no dependent load) */
__device__ __forceinline__ uint32_t iq_ksigns(uint32_t i)
{
	return i | (uint32_t)(__popc(i) & 1) << 7;
}

/* c (0 <= c < 2^23) as a float without a conversion instruction (I2F runs at a quarter of the FP32 rate or
 * less, and these decoders would need one per value): 2^23 + c has c in its mantissa, then minus 2^23, exact */
__device__ __forceinline__ float iq_flt(uint32_t c)
{
	return __fsub_rn(__int_as_float(0x4b000000 | c), 8388608.0f);
}

/* 4 values +-(bytes of gr) * ds, sign i from bit i of signs (set: negative; the grid bytes are never 0) */
__device__ __forceinline__ void iq_out4(float *w, float ds, uint32_t gr, uint32_t signs)
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		float c = __int_as_float(__float_as_int(iq_flt(gr >> 8 * i & 255)) ^ (int)((signs >> i & 1) << 31));
		w[i] = __fmul_rn(ds, c);
	}
}

/* IQ1: 4 values (8 g + shift) ds, g the signed bytes of gr (-1, 0, 1): 8 g + shift + 16 in 7 .. 25 */
__device__ __forceinline__ void iq1_out4(float *w, float ds, uint32_t gr, int shift)
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		uint32_t c = (uint32_t)(8 * (int)(int8_t)(gr >> 8 * i & 255) + shift + 16);
		w[i] = __fmul_rn(ds, __fsub_rn(__int_as_float(0x4b000000 | c), 8388624.0f));
	}
}

/* d f s: the scale of a sub-block, as the CPU forms it */
__device__ __forceinline__ float iq_ds(uint32_t dbits, float f, uint32_t s)
{
	return __fmul_rn(__fmul_rn(f16_bits_to_f32((uint16_t)dbits), f), iq_flt(2 * s + 1));
}

template <class B> struct deq_iq_base {
	static constexpr int BLOCK = QK_K, BYTES = sizeof(B), ALIGN = 2;
};

struct deq_iq2_xxs : deq_iq_base<struct block_iq2_xxs> {
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK_K) * BYTES;
		int v = (int)(k % QK_K), g = v / 32, l = v % 32 / 8, hh = v % 8 / 4;
		uint32_t aux = ld_u32_2a(p + 2 + 8 * g + 4);
		uint64_t gr = iq2xxs_grid[__ldg(p + 2 + 8 * g + l)];
		uint32_t signs = iq_ksigns(aux >> 7 * l & 127) >> 4 * hh;
		iq_out4(w, iq_ds(ld_u16(p), 0.125f, aux >> 28), (uint32_t)(gr >> 32 * hh), signs);
	}
};

struct deq_iq2_xs : deq_iq_base<struct block_iq2_xs> {
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK_K) * BYTES;
		int v = (int)(k % QK_K), g = v / 32, l = v % 32 / 8, hh = v % 8 / 4;
		uint32_t q = ld_u16(p + 2 + 8 * g + 2 * l), sc = __ldg(p + 66 + g) >> 4 * (l / 2) & 15;
		uint64_t gr = iq2xs_grid[q & 511];
		iq_out4(w, iq_ds(ld_u16(p), 0.125f, sc), (uint32_t)(gr >> 32 * hh), iq_ksigns(q >> 9) >> 4 * hh);
	}
};

struct deq_iq2_s : deq_iq_base<struct block_iq2_s> {
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK_K) * BYTES;
		int v = (int)(k % QK_K), g = v / 32, l = v % 32 / 8, hh = v % 8 / 4;
		uint32_t h = __ldg(p + 66 + g), sc = __ldg(p + 74 + g) >> 4 * (l / 2) & 15;
		uint32_t idx = __ldg(p + 2 + 4 * g + l) | (h << (8 - 2 * l) & 0x300);
		uint32_t signs = (uint32_t)__ldg(p + 2 + QK_K / 8 + 4 * g + l) >> 4 * hh;
		iq_out4(w, iq_ds(ld_u16(p), 0.125f, sc), (uint32_t)(iq2s_grid[idx] >> 32 * hh), signs);
	}
};

struct deq_iq3_xxs : deq_iq_base<struct block_iq3_xxs> {
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK_K) * BYTES;
		int v = (int)(k % QK_K), g = v / 32, l = v % 32 / 8, hh = v % 8 / 4;
		uint32_t aux = ld_u32_2a(p + 2 + QK_K / 4 + 4 * g);
		uint32_t gr = iq3xxs_grid[__ldg(p + 2 + 8 * g + 2 * l + hh)];
		uint32_t signs = iq_ksigns(aux >> 7 * l & 127) >> 4 * hh;
		iq_out4(w, iq_ds(ld_u16(p), 0.25f, aux >> 28), gr, signs);
	}
};

struct deq_iq3_s : deq_iq_base<struct block_iq3_s> {
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK_K) * BYTES;
		int v = (int)(k % QK_K), g = v / 32, l = v % 32 / 8, hh = v % 8 / 4, i = 2 * l + hh;
		uint32_t idx = __ldg(p + 2 + 8 * g + i) | ((uint32_t)__ldg(p + 66 + g) >> i & 1) << 8;
		uint32_t signs = (uint32_t)__ldg(p + 74 + 4 * g + l) >> 4 * hh;
		uint32_t sc = __ldg(p + 106 + g / 2) >> 4 * (g & 1) & 15;
		iq_out4(w, iq_ds(ld_u16(p), 1.0f, sc), iq3s_grid[idx], signs);
	}
};

struct deq_iq1_s : deq_iq_base<struct block_iq1_s> {
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK_K) * BYTES;
		int v = (int)(k % QK_K), g = v / 32, l = v % 32 / 8, hh = v % 8 / 4;
		uint32_t h = ld_u16(p + 34 + 2 * g);
		uint64_t gr = iq1s_grid[__ldg(p + 2 + 4 * g + l) | (h >> 3 * l & 7) << 8];
		iq1_out4(w, iq_ds(ld_u16(p), 0.125f, h >> 12 & 7), (uint32_t)(gr >> 32 * hh), h & 0x8000 ? -1 : 1);
	}
};

/* IQ1_M: the 4 scale words (d's nibbles and the sub-scales) in one 8-byte load: blocks are 56 bytes, so rows
 * of whole blocks keep the 8-byte alignment of the matrix (ALIGN 8) */
struct deq_iq1_m : deq_iq_base<struct block_iq1_m> {
	static constexpr int ALIGN = 8;
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK_K) * BYTES;
		int v = (int)(k % QK_K), g = v / 32, l = v % 32 / 8, hh = v % 8 / 4;
		uint2 s = __ldg((const uint2 *)(p + 48)); /* words 0, 1 in s.x, words 2, 3 in s.y */
		uint32_t dbits = (s.x >> 12 & 0xf) | (s.x >> 24 & 0xf0) | (s.y >> 4 & 0xf00) | (s.y >> 16 & 0xf000);
		uint32_t sc = (g < 4 ? s.x : s.y) >> (16 * (g / 2 & 1) + 6 * (g & 1) + 3 * (l / 2)) & 7;
		uint32_t hq = (uint32_t)__ldg(p + 32 + 2 * g + l / 2) >> 4 * (l & 1);
		uint64_t gr = iq1s_grid[__ldg(p + 4 * g + l) | (hq & 7) << 8];
		iq1_out4(w, iq_ds(dbits, 0.125f, sc), (uint32_t)(gr >> 32 * hh), hq & 8 ? -1 : 1);
	}
};

#endif
