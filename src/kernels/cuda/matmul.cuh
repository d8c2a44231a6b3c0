/*
 * matmul.cuh: the weight decoders shared by the fused matrix-vector kernels (matvec.cu), the GEMM path's
 * dequantization to bf16/f16 (matmul.cu) and the tensor-core kernel (matmul_mma.cu), and the launchers
 * matmul.cu calls in the other two.
 *
 * A decoder is a struct deq_<k> per weight format with kernels (src/layout/wfmt_list.h; matvec.cu, matmul.cu and
 * matmul_mma.cu build their per-format tables from the list) with BLOCK (values per block), BYTES (bytes per block), ALIGN
 * (the alignment its rows need, checked by cuda_matmul) and deq<XV>(row, k, w): the XV consecutive values
 * k .. k+XV-1 of one weight row, k a multiple of XV, as f32.
 * Quantized formats take XV = 4 only (4 values never straddle a 32-value sub-block); F32/F16/BF16 take 4
 * (rows and x aligned for vector loads) or 1. Dequantized values are bit-identical with src/kernels/cpu/dequant.c:
 * the same products in the same order, rounded separately (__fmul_rn keeps nvcc from fusing them into an
 * FMA). Q4_K/Q5_K read the 16-byte block head in one load, so their rows must be 16-byte aligned; the other
 * quantized blocks (18, 22, 34, 210 bytes) are 2-byte aligned at best and are read in 2-byte words. Decoders
 * have no branches: a branch inside the unrolled loop of matvec.cu keeps the loads of later iterations from
 * being issued early (measured on an H200: quantized formats at 0.15-0.25 of the copy rate with branches).
 */
#ifndef FERRY_CUDA_MATMUL_CUH
#define FERRY_CUDA_MATMUL_CUH

#include <stdint.h>
#include <type_traits>

#include "kernels/cuda/cuda_common.cuh"
#include "layout/quant.h"
#include "layout/wfmt.h"

__device__ __forceinline__ uint32_t ld_u16(const uint8_t *p)
{
	return __ldg((const unsigned short *)p);
}

/* 4 bytes at a 2-byte aligned address, as two 2-byte loads: no branch on the alignment, so that the loads of
 * several unrolled iterations can all be in flight before the first is used. */
__device__ __forceinline__ uint32_t ld_u32_2a(const uint8_t *p)
{
	return ld_u16(p) | ld_u16(p + 2) << 16;
}

/* Scale and min of sub-block j of a K-quant (k_scale_min in src/layout/quant.h), from the words h.y, h.z, h.w
 * (scale bytes 0-3, 4-7, 8-11) of its 16-byte head. Branch-free: with jl = j % 4, bytes jl, jl + 4, jl + 8
 * are the only ones either case reads, and each sits in a fixed word. */
__device__ __forceinline__ void k_scale_min_int(uint4 h, int j, int *sc, int *m)
{
	int jl = j & 3;
	uint32_t s0 = h.y >> 8 * jl & 255, s4 = h.z >> 8 * jl & 255, s8 = h.w >> 8 * jl & 255;
	uint32_t sc_lo = s0 & 63, m_lo = s4 & 63;
	uint32_t sc_hi = (s8 & 15) | (s0 >> 6) << 4, m_hi = (s8 >> 4) | (s4 >> 6) << 4;
	*sc = (int)(j < 4 ? sc_lo : sc_hi);
	*m = (int)(j < 4 ? m_lo : m_hi);
}

__device__ __forceinline__ void k_scale_min_dev(uint4 h, int j, float *sc, float *m)
{
	int si, mi;
	k_scale_min_int(h, j, &si, &mi);
	*sc = (float)si;
	*m = (float)mi;
}

struct deq_f32 {
	static constexpr int BLOCK = 1, BYTES = 4, ALIGN = 4;
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		const float *r = (const float *)row + k;
		if (XV == 4) {
			float4 v = __ldg((const float4 *)r);
			w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
		} else {
			w[0] = __ldg(r);
		}
	}
};

template <bool BF> struct deq_half {
	static constexpr int BLOCK = 1, BYTES = 2, ALIGN = 2;
	__device__ static float one(uint32_t h)
	{
		return BF ? bf16_bits_to_f32((uint16_t)h) : f16_bits_to_f32((uint16_t)h);
	}
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		const uint16_t *r = (const uint16_t *)row + k;
		if (XV == 4) {
			uint2 v = __ldg((const uint2 *)r);
			w[0] = one(v.x & 0xffff), w[1] = one(v.x >> 16), w[2] = one(v.y & 0xffff), w[3] = one(v.y >> 16);
		} else {
			w[0] = one(__ldg((const unsigned short *)r));
		}
	}
};
typedef deq_half<false> deq_f16;
typedef deq_half<true> deq_bf16;

struct deq_q8_0 {
	static constexpr int BLOCK = QK, BYTES = sizeof(struct block_q8_0), ALIGN = 2;
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK) * BYTES;
		float d = f16_bits_to_f32((uint16_t)ld_u16(p));
		uint32_t q = ld_u32_2a(p + 2 + k % QK);
#pragma unroll
		for (int i = 0; i < 4; i++)
			w[i] = __fmul_rn((float)(int8_t)(q >> 8 * i), d);
	}
};

struct deq_q4_0 {
	static constexpr int BLOCK = QK, BYTES = sizeof(struct block_q4_0), ALIGN = 2;
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK) * BYTES;
		int o = (int)(k % QK), sh = o >= QK / 2 ? 4 : 0;
		float d = f16_bits_to_f32((uint16_t)ld_u16(p));
		uint32_t q = ld_u32_2a(p + 2 + (o & 15));
#pragma unroll
		for (int i = 0; i < 4; i++)
			w[i] = __fmul_rn((float)((int)(q >> (8 * i + sh) & 15) - 8), d);
	}
};

struct deq_q5_0 {
	static constexpr int BLOCK = QK, BYTES = sizeof(struct block_q5_0), ALIGN = 2;
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK) * BYTES;
		int o = (int)(k % QK), sh = o >= QK / 2 ? 4 : 0;
		float d = f16_bits_to_f32((uint16_t)ld_u16(p));
		uint32_t qh = ld_u32_2a(p + 2), q = ld_u32_2a(p + 6 + (o & 15));
#pragma unroll
		for (int i = 0; i < 4; i++) {
			int v = (int)((q >> (8 * i + sh) & 15) | (qh >> (o + i) & 1) << 4) - 16;
			w[i] = __fmul_rn((float)v, d);
		}
	}
};

/* Q4_K (QH false) and Q5_K (QH true): value v of a block is in chunk c = v/64, nibble half h = v%64/32
 * (sub-block 2c+h), byte l = v%32 of the chunk's 32 qs bytes; Q5_K adds 16 where bit 2c+h of qh[l] is set. */
template <bool QH> struct deq_k45 {
	static constexpr int BLOCK = QK_K, ALIGN = 16;
	static constexpr int BYTES = QH ? sizeof(struct block_q5_K) : sizeof(struct block_q4_K);
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK_K) * BYTES;
		int v = (int)(k % QK_K), c = v / 64, h = v % 64 / 32, l = v % 32, j = 2 * c + h;
		uint4 hd = __ldg((const uint4 *)p);
		float d = f16_bits_to_f32((uint16_t)(hd.x & 0xffff)), dmin = f16_bits_to_f32((uint16_t)(hd.x >> 16));
		float sc, m;
		k_scale_min_dev(hd, j, &sc, &m);
		float d1 = __fmul_rn(d, sc), m1 = __fmul_rn(dmin, m);
		const int qs_at = QH ? 16 + QK_K / 8 : 16;
		uint32_t q = __ldg((const unsigned int *)(p + qs_at + 32 * c + l)) >> (4 * h);
		uint32_t qh = QH ? __ldg((const unsigned int *)(p + 16 + l)) >> j : 0;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			int qi = (int)(q >> 8 * i & 15) + (QH ? (int)(qh >> 8 * i & 1) << 4 : 0);
			w[i] = __fmul_rn(d1, (float)qi) - m1;
		}
	}
};
typedef deq_k45<false> deq_q4_k;
typedef deq_k45<true> deq_q5_k;

/* Q6_K: value v of a block is in half hf = v/128 and, within it, quarter u = v%128/32 at l = v%32: low bits
 * from ql[64hf + 32(u&1) + l] (nibble u>>1), high bits from qh[32hf + l] >> 2u, scale scales[8hf + l/16 + 2u]. */
struct deq_q6_k {
	static constexpr int BLOCK = QK_K, BYTES = sizeof(struct block_q6_K), ALIGN = 2;
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK_K) * BYTES;
		int v = (int)(k % QK_K), hf = v / 128, u = v % 128 / 32, l = v % 32;
		float d = f16_bits_to_f32((uint16_t)ld_u16(p + 208));
		float sc = (float)(int8_t)__ldg(p + 192 + 8 * hf + l / 16 + 2 * u);
		float ds = __fmul_rn(d, sc);
		uint32_t ql = ld_u32_2a(p + 64 * hf + 32 * (u & 1) + l) >> (4 * (u >> 1));
		uint32_t qh = ld_u32_2a(p + 128 + 32 * hf + l) >> (2 * u);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			int qi = (int)((ql >> 8 * i & 15) | (qh >> 8 * i & 3) << 4) - 32;
			w[i] = __fmul_rn(ds, (float)qi);
		}
	}
};

#include "kernels/cuda/iq.cuh"

/* Q4_1 (QH false) and Q5_1 (QH true): y = d q + m, the product rounded before the sum as on the CPU */
template <bool QH> struct deq_q51 {
	static constexpr int BLOCK = QK, ALIGN = 2;
	static constexpr int BYTES = QH ? sizeof(struct block_q5_1) : sizeof(struct block_q4_1);
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK) * BYTES;
		int o = (int)(k % QK), sh = o >= QK / 2 ? 4 : 0;
		float d = f16_bits_to_f32((uint16_t)ld_u16(p)), m = f16_bits_to_f32((uint16_t)ld_u16(p + 2));
		uint32_t qh = QH ? ld_u32_2a(p + 4) : 0, q = ld_u32_2a(p + (QH ? 8 : 4) + (o & 15));
#pragma unroll
		for (int i = 0; i < 4; i++) {
			int v = (int)((q >> (8 * i + sh) & 15) | (qh >> (o + i) & 1) << 4);
			w[i] = __fadd_rn(__fmul_rn(d, (float)v), m);
		}
	}
};
typedef deq_q51<false> deq_q4_1;
typedef deq_q51<true> deq_q5_1;

IQ_TABLE float nf4_values_dev[16] = NF4_VALUES;
IQ_TABLE float bnb_fp4_values_dev[16] = BNB_FP4_VALUES;

/* NF4 and BNB_FP4 (FP4: its table): 4 consecutive values are the nibbles of 2 bytes, high nibble first;
 * y = table[code] d (one rounding) */
template <bool FP4> struct deq_table4 {
	static constexpr int BLOCK = 64, BYTES = sizeof(struct block_nf4), ALIGN = 4;
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / BLOCK) * BYTES;
		float d = __ldg((const float *)p);
		uint32_t q = ld_u16(p + 4 + (k % BLOCK) / 2);
		uint32_t c[4] = {q >> 4 & 15, q & 15, q >> 12 & 15, q >> 8 & 15};
#pragma unroll
		for (int i = 0; i < 4; i++)
			w[i] = __fmul_rn(__ldg((FP4 ? bnb_fp4_values_dev : nf4_values_dev) + c[i]), d);
	}
};
typedef deq_table4<false> deq_nf4;
typedef deq_table4<true> deq_bnb_fp4;

/* Q4_Z/Q8_Z (SUB 1) and Q4_Z128/Q8_Z128 (SUB 4; EIGHT: the 8-bit ones): y = d (q - z), the integer q - z formed
 * first as on the CPU; sub-block s of 32 at 4 + 16 s (4-bit: Q4_0's nibble order) or 4 + 32 s */
template <bool EIGHT, int SUB> struct deq_qz {
	static constexpr int BLOCK = QK * SUB, ALIGN = 2;
	static constexpr int BYTES = 4 + SUB * (EIGHT ? QK : QK / 2);
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / BLOCK) * BYTES;
		int ob = (int)(k % BLOCK), o = ob % QK, sh = !EIGHT && o >= QK / 2 ? 4 : 0;
		float d = f16_bits_to_f32((uint16_t)ld_u16(p));
		int z = (int)(int16_t)ld_u16(p + 2);
		uint32_t q = ld_u32_2a(p + 4 + (EIGHT ? ob : ob / QK * (QK / 2) + (o & 15)));
#pragma unroll
		for (int i = 0; i < 4; i++) {
			int v = EIGHT ? (int)(int8_t)(q >> 8 * i) : (int)(q >> (8 * i + sh) & 15);
			w[i] = __fmul_rn(d, (float)(v - z));
		}
	}
};
typedef deq_qz<false, 1> deq_q4_z;
typedef deq_qz<true, 1> deq_q8_z;
typedef deq_qz<false, QZ_SUB> deq_q4_z128;
typedef deq_qz<true, QZ_SUB> deq_q8_z128;
static_assert(deq_q4_z128::BYTES == sizeof(struct block_q4_z128) && deq_q8_z::BYTES == sizeof(struct block_q8_z),
	      "deq_qz block sizes");

/* Q2_K: value v in half n = v/128, field j = v%128/32 at byte l = v%32; sub-block g = v/16 */
struct deq_q2_k {
	static constexpr int BLOCK = QK_K, BYTES = sizeof(struct block_q2_K), ALIGN = 2;
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK_K) * BYTES;
		int v = (int)(k % QK_K), n = v / 128, j = v % 128 / 32, l = v % 32;
		float d = f16_bits_to_f32((uint16_t)ld_u16(p + 80)), dmin = f16_bits_to_f32((uint16_t)ld_u16(p + 82));
		uint32_t sc = __ldg(p + v / 16);
		float dl = __fmul_rn(d, (float)(sc & 15)), ml = __fmul_rn(dmin, (float)(sc >> 4));
		uint32_t q = ld_u32_2a(p + 16 + 32 * n + l) >> (2 * j);
#pragma unroll
		for (int i = 0; i < 4; i++)
			w[i] = __fmul_rn(dl, (float)(q >> 8 * i & 3)) - ml;
	}
};

/* Q3_K: as Q2_K's fields, minus 4 where bit 4n + j of hmask[l] is clear; 6-bit scales as q3k_scale */
struct deq_q3_k {
	static constexpr int BLOCK = QK_K, BYTES = sizeof(struct block_q3_K), ALIGN = 2;
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK_K) * BYTES;
		int v = (int)(k % QK_K), n = v / 128, j = v % 128 / 32, l = v % 32, g = v / 16;
		float d = f16_bits_to_f32((uint16_t)ld_u16(p + 108));
		uint32_t lo = __ldg(p + 96 + g % 8) >> (4 * (g / 8)) & 15, hi = __ldg(p + 104 + g % 4) >> (2 * (g / 4)) & 3;
		float dl = __fmul_rn(d, (float)((int)(lo | hi << 4) - 32));
		uint32_t q = ld_u32_2a(p + 32 + 32 * n + l) >> (2 * j), hm = ld_u32_2a(p + l) >> (4 * n + j);
#pragma unroll
		for (int i = 0; i < 4; i++)
			w[i] = __fmul_rn(dl, (float)((int)(q >> 8 * i & 3) - (hm >> 8 * i & 1 ? 0 : 4)));
	}
};

/* 4 entries of a 16-byte table (words t0..t3) at the 4 nibble indices in the bytes of idx, branch-free: byte
 * permutes of the low and the high 8 entries, then a select per byte on bit 3 of the index; lut16_packed
 * returns them packed (byte i the entry of index byte i), lut16_x4 sign-extended. */
__device__ __forceinline__ uint32_t lut16_packed(uint32_t idx, uint32_t t0, uint32_t t1, uint32_t t2, uint32_t t3)
{
	uint32_t sel = (idx & 7) | (idx >> 4 & 0x70) | (idx >> 8 & 0x700) | (idx >> 12 & 0x7000);
	uint32_t lo = __byte_perm(t0, t1, sel), hi = __byte_perm(t2, t3, sel);
	uint32_t m = (idx >> 3 & 0x01010101u) * 255u;
	return (lo & ~m) | (hi & m);
}

__device__ __forceinline__ void lut16_x4(uint32_t idx, uint32_t t0, uint32_t t1, uint32_t t2, uint32_t t3, int *v)
{
	uint32_t r = lut16_packed(idx, t0, t1, t2, t3);
#pragma unroll
	for (int i = 0; i < 4; i++)
		v[i] = (int)(int8_t)(r >> 8 * i);
}

__host__ __device__ constexpr uint32_t pack4(int a, int b, int c, int d)
{
	return (uint32_t)(a & 255) | (uint32_t)(b & 255) << 8 | (uint32_t)(c & 255) << 16 | (uint32_t)(d & 255) << 24;
}

/* The 4 nibbles of 4 packed bytes q >> sh, one per byte */
__device__ __forceinline__ uint32_t nib4(uint32_t q, int sh)
{
	return q >> sh & 0x0f0f0f0fu;
}

/* IQ4_NL (XS false) and IQ4_XS (XS true): 32-value sub-blocks of nibbles through kvalues_iq4nl; IQ4_XS scales
 * sub-block s by d (ls_s - 32) (iq4xs_scale) */
template <bool XS> struct deq_iq4 {
	static constexpr int BLOCK = XS ? QK_K : QK, ALIGN = 2;
	static constexpr int BYTES = XS ? sizeof(struct block_iq4_xs) : sizeof(struct block_iq4_nl);
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / BLOCK) * BYTES;
		int v = (int)(k % BLOCK), s = v / QK, o = v % QK, sh = o >= QK / 2 ? 4 : 0;
		float d = f16_bits_to_f32((uint16_t)ld_u16(p));
		if (XS) {
			uint32_t ls = (__ldg(p + 4 + s / 2) >> (4 * (s % 2)) & 15) | (ld_u16(p + 2) >> (2 * s) & 3) << 4;
			d = __fmul_rn(d, (float)((int)ls - 32));
		}
		uint32_t q = ld_u32_2a(p + (XS ? 8 + 16 * s : 2) + (o & 15));
		int c[4];
		lut16_x4(nib4(q, sh), pack4(-127, -104, -83, -65), pack4(-49, -35, -22, -10), pack4(1, 13, 25, 38),
			 pack4(53, 69, 89, 113), c);
#pragma unroll
		for (int i = 0; i < 4; i++)
			w[i] = __fmul_rn(d, (float)c[i]);
	}
};
typedef deq_iq4<false> deq_iq4_nl;
typedef deq_iq4<true> deq_iq4_xs;

/* MXFP4: 17-byte blocks, read a byte at a time; the scale 2^(e - 128) as e8m0_half */
struct deq_mxfp4 {
	static constexpr int BLOCK = QK, BYTES = sizeof(struct block_mxfp4), ALIGN = 1;
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK) * BYTES;
		int o = (int)(k % QK), sh = o >= QK / 2 ? 4 : 0;
		uint32_t e = __ldg(p);
		float d = __uint_as_float(e < 2 ? 0x00200000u << e : (e - 1) << 23);
		const uint8_t *q = p + 1 + (o & 15);
		uint32_t q4 = (uint32_t)__ldg(q) | (uint32_t)__ldg(q + 1) << 8 | (uint32_t)__ldg(q + 2) << 16 |
			      (uint32_t)__ldg(q + 3) << 24;
		int c[4];
		lut16_x4(nib4(q4, sh), pack4(0, 1, 2, 3), pack4(4, 6, 8, 12), pack4(0, -1, -2, -3), pack4(-4, -6, -8, -12),
			 c);
#pragma unroll
		for (int i = 0; i < 4; i++)
			w[i] = __fmul_rn(d, (float)c[i]);
	}
};

/* TQ1_0: 4 consecutive values are digit dg of 4 consecutive bytes at off (tq1_code): qs[v % 32] digit v / 32
 * below 160, qs[32 + (v - 160) % 16] digit (v - 160) / 16 below 240, then qh[0..3] digit (v - 240) / 4 */
struct deq_tq1_0 {
	static constexpr int BLOCK = QK_K, BYTES = sizeof(struct block_tq1_0), ALIGN = 2;
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK_K) * BYTES;
		int v = (int)(k % QK_K);
		int off = v < 160 ? v % 32 : v < 240 ? 32 + (v - 160) % 16 : 48;
		int dg = v < 160 ? v / 32 : v < 240 ? (v - 160) / 16 : (v - 240) / 4;
		uint32_t p3 = (uint32_t)(0x511b090301ull >> (8 * dg)) & 255;
		float d = f16_bits_to_f32((uint16_t)ld_u16(p + 52));
		uint32_t q = ld_u32_2a(p + off);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			uint32_t m = (q >> 8 * i & 255) * p3 & 255;
			w[i] = __fmul_rn(d, (float)((int)(m * 3 >> 8) - 1));
		}
	}
};

/* TQ2_0: Q2_K's field layout, code - 1, one scale d */
struct deq_tq2_0 {
	static constexpr int BLOCK = QK_K, BYTES = sizeof(struct block_tq2_0), ALIGN = 2;
	template <int XV> __device__ static void deq(const uint8_t *row, int64_t k, float *w)
	{
		static_assert(XV == 4, "quantized decoders take 4 values");
		const uint8_t *p = row + (k / QK_K) * BYTES;
		int v = (int)(k % QK_K), n = v / 128, j = v % 128 / 32, l = v % 32;
		float d = f16_bits_to_f32((uint16_t)ld_u16(p + 64));
		uint32_t q = ld_u32_2a(p + 32 * n + l) >> (2 * j);
#pragma unroll
		for (int i = 0; i < 4; i++)
			w[i] = __fmul_rn(d, (float)((int)(q >> 8 * i & 3) - 1));
	}
};

/* The token bucket of the matrix-vector kernels (matvec.cu, matvec_q8.cu): calls fn(integral_constant<int, TB>)
 * with TB the least power of two >= T, at most TMAX, so one kernel per bucket serves T .. TB. */
template <int TMAX, int TB = 1, class Fn> static void tb_dispatch(int T, Fn &&fn)
{
	if constexpr (TB < TMAX) {
		if (T > TB) {
			tb_dispatch<TMAX, 2 * TB>(T, fn);
			return;
		}
	}
	fn(std::integral_constant<int, TB>());
}

/* matvec.cu: y[T,N] = x[T,K] . W[N,K]^T (+ bias) for T <= CUDA_MATVEC_T_MAX, arguments already checked by
 * cuda_matmul (format supported, K a multiple of its block, alignment). */
int cuda_matvec(struct cuda_ctx *c, float *y, const float *x, const void *W, int wfmt, int64_t N, int64_t K,
		const void *bias, int bias_fmt, int T);

/* matvec_q8.cu: the same product for T <= CUDA_MVQ_T_MAX on 8-bit activations (integer dots), for the formats
 * where cuda_mvq_runs (cuda_ops.h); needs cuda_mvq_ws_bytes(T, K) (cuda_ops.h) of c->ws (-ENOSPC without); arguments checked
 * by cuda_matmul. */
/* x[T,K] as 8-bit codes xq[T*K] and scales xd[T*K/B] per block of B (32, 128 or 256) at the start of c->ws (the
 * CPU's cpu_xq_quantize, bit for bit), kept from the previous 8-bit product when it was over the same x, T,
 * K and B with nothing launched or uploaded since; 0, -ENOSPC (needs cuda_mvq_ws_bytes(T, K)) or -EINVAL
 * (another B). After
 * launching its product, a caller notes the codes with cuda_xq_keep (they stay valid unless y overlaps x). */
int cuda_xq_codes(struct cuda_ctx *c, const float *x, int T, int64_t K, int B, int8_t **xq, float **xd);
void cuda_xq_keep(struct cuda_ctx *c, const float *y, const float *x, int T, int64_t N, int64_t K, int B);
int cuda_matvec_q8(struct cuda_ctx *c, float *y, const float *x, const void *W, int wfmt, int64_t N, int64_t K,
		   const void *bias, int bias_fmt, int T);

/* matmul_mma.cu: the same product on tensor cores with the weights dequantized in the kernel, for the formats
 * and devices where cuda_mma_runs; arguments checked by cuda_matmul. */
bool cuda_mma_runs(const struct cuda_ctx *c, int wfmt);
int cuda_matmul_mma(struct cuda_ctx *c, float *y, const float *x, const void *W, int wfmt, int64_t N, int64_t K,
		    const void *bias, int bias_fmt, int T);

/* matmul_q8mma.cu: the same product on int8 tensor cores (x quantized as the 8-bit matvec quantizes it, the
 * weights' integer codes unpacked in the kernel), for the formats and devices where cuda_q8mma_runs
 * (cuda_ops.h); needs cuda_mvq_ws_bytes(T, K) of c->ws; arguments checked by cuda_matmul. */
int cuda_matmul_q8mma(struct cuda_ctx *c, float *y, const float *x, const void *W, int wfmt, int64_t N, int64_t K,
		      const void *bias, int bias_fmt, int T);

#endif
