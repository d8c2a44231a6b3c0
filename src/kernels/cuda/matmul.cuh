/*
 * matmul.cuh: the weight decoders shared by the fused matrix-vector kernels (matvec.cu) and the GEMM path's
 * dequantization to bf16/f16 (matmul.cu), and the launcher matmul.cu calls in matvec.cu.
 *
 * A decoder is a struct deq_<k> per weight format with kernels (src/layout/wfmt_list.h; matvec.cu and matmul.cu
 * build their per-format tables from the list) with BLOCK (values per block), BYTES (bytes per block), ALIGN
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
__device__ __forceinline__ void k_scale_min_dev(uint4 h, int j, float *sc, float *m)
{
	int jl = j & 3;
	uint32_t s0 = h.y >> 8 * jl & 255, s4 = h.z >> 8 * jl & 255, s8 = h.w >> 8 * jl & 255;
	uint32_t sc_lo = s0 & 63, m_lo = s4 & 63;
	uint32_t sc_hi = (s8 & 15) | (s0 >> 6) << 4, m_hi = (s8 >> 4) | (s4 >> 6) << 4;
	*sc = (float)(j < 4 ? sc_lo : sc_hi);
	*m = (float)(j < 4 ? m_lo : m_hi);
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

/* matvec.cu: y[T,N] = x[T,K] . W[N,K]^T (+ bias) for T <= CUDA_MATVEC_T_MAX, arguments already checked by
 * cuda_matmul (format supported, K a multiple of its block, alignment). */
int cuda_matvec(struct cuda_ctx *c, float *y, const float *x, const void *W, int wfmt, int64_t N, int64_t K,
		const void *bias, int bias_fmt, int T);

#endif
