/*
 * matvec_q8.cuh: the per-thread code of the 8-bit-activation matrix-vector kernels (matvec_q8.cu): the
 * activation quantizer's arithmetic and one integer dot per weight format. Device code only, no launches, so
 * tests/test_cuda_mvq_host.cpp compiles it for the host (tests/cuda_emul.h) and checks every format's dot,
 * lane by lane in the kernel's order, against the CPU's qdot on the same codes.
 *
 * Activations are quantized as the CPU does (src/kernels/cpu/qdot.h, cpu_xq_quantize): per block of the weight
 * format's B values (32 or 256), amax = max |x|, dx = amax / 127, a = round-half-even(clamp(x * (127 / amax),
 * -127, 127)), the same f32 operations, so the codes and dx are bit for bit the CPU's. The codes of token t are
 * xq[t*K .. t*K + K), the scales xd[t*(K/B) ..].
 *
 * A dot struct dq_<k> has BLOCK, BYTES (the block), ALIGN (its rows' alignment, as the decoder's), LPB (lanes per block: each of LPB consecutive threads takes
 * BLOCK / LPB values of a block, 16 or 32, with loads of adjacent bytes), a register image W of one lane's part of
 * a block (codes packed 4 per word, integer sub-scales and mins, f32 scales) filled once by load(block, j, w),
 * and dot(w, j, a, dx): that part against one token's codes a (the block's first) with scale dx:
 *     f32(d dx) * I - f32(dmin dx) * M,   I = sum_g c_g sum_i q_i a_i, M = sum_g m_g sum_i a_i
 * over the lane's values, I and M exact int32 (__dp4a), as qdot.h's block formula split over the lanes: the
 * kernel's sum differs from the CPU's only in f32 rounding order. Loads follow each format's alignment
 * (Q4_K/Q5_K 16 bytes, the others 2: two 2-byte loads a word, no branch on the address).
 */
#ifndef FERRY_CUDA_MATVEC_Q8_CUH
#define FERRY_CUDA_MATVEC_Q8_CUH

#include "kernels/cuda/matmul.cuh"

#define MVQ_ONES 0x01010101u

/* x * (127 / amax) clamped to [-127, 127] (NaN to -127, as the CPU) and rounded half to even */
__device__ __forceinline__ int mvq_code(float x, float id)
{
	float v = __fmul_rn(x, id);
	v = v >= -127.0f && v <= 127.0f ? v : v > 0 ? 127.0f : -127.0f;
	return __float2int_rn(v);
}

/* the larger of two |x| maxima, NaN never taken (the CPU's comparison) */
__device__ __forceinline__ float mvq_amax(float a, float v)
{
	return fabsf(v) > a ? fabsf(v) : a;
}

/* 127 / amax (0 for amax 0) and dx = amax / 127, correctly rounded f32 divisions as on the CPU */
__device__ __forceinline__ float mvq_inv(float amax)
{
	return amax > 0 ? __fdiv_rn(127.0f, amax) : 0.0f;
}

__device__ __forceinline__ float mvq_dx(float amax)
{
	return __fdiv_rn(amax, 127.0f);
}

__device__ __forceinline__ int dp4(uint32_t w, uint32_t a, int acc)
{
	return __dp4a((int)w, (int)a, acc);
}

/* 4 bits b0..b3 of n to bit 4 of bytes 0..3 */
__device__ __forceinline__ uint32_t bits_to_b4(uint32_t n)
{
	return ((n & 1) | (n & 2) << 7 | (n & 4) << 14 | (n & 8) << 21) << 4;
}

/* Q4_K (QH false) and Q5_K (QH true): lane j (0..7) takes the 16 qs bytes 16j .. 16j + 15, chunk c = j/2, bytes
 * l0 = 16 (j%2) .. l0 + 15 of it: low nibbles are values 64c + l0 + i of sub-block 2c, high nibbles 64c + 32 +
 * l0 + i of sub-block 2c + 1 (Q5_K: + 16 from bits 2c and 2c + 1 of qh[l0 + i]). */
template <bool QH> struct dq_k45 {
	static constexpr int BLOCK = QK_K, LPB = 8, BYTES = deq_k45<QH>::BYTES, ALIGN = deq_k45<QH>::ALIGN;
	struct W {
		uint32_t lo[4], hi[4];
		int sc0, sc1, m0, m1;
		float d, dmin;
	};
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		const int c = j >> 1, l0 = 16 * (j & 1);
		uint4 hd = __ldg((const uint4 *)p);
		w.d = f16_bits_to_f32((uint16_t)(hd.x & 0xffff));
		w.dmin = f16_bits_to_f32((uint16_t)(hd.x >> 16));
		k_scale_min_int(hd, 2 * c, &w.sc0, &w.m0);
		k_scale_min_int(hd, 2 * c + 1, &w.sc1, &w.m1);
		uint4 q = __ldg((const uint4 *)(p + (QH ? 48 : 16) + 32 * c + l0));
		uint4 h = QH ? __ldg((const uint4 *)(p + 16 + l0)) : uint4{0, 0, 0, 0};
		const uint32_t qw[4] = {q.x, q.y, q.z, q.w}, hw[4] = {h.x, h.y, h.z, h.w};
#pragma unroll
		for (int i = 0; i < 4; i++) {
			w.lo[i] = (qw[i] & 0x0f0f0f0fu) | (hw[i] >> (2 * c) & MVQ_ONES) << 4;
			w.hi[i] = (qw[i] >> 4 & 0x0f0f0f0fu) | (hw[i] >> (2 * c + 1) & MVQ_ONES) << 4;
		}
	}
	__device__ static float dot(const W &w, int j, const int8_t *a, float dx)
	{
		const int c = j >> 1, l0 = 16 * (j & 1);
		uint4 al = __ldg((const uint4 *)(a + 64 * c + l0)), ah = __ldg((const uint4 *)(a + 64 * c + 32 + l0));
		const uint32_t av[2][4] = {{al.x, al.y, al.z, al.w}, {ah.x, ah.y, ah.z, ah.w}};
		int dl = 0, dh = 0, sl = 0, sh = 0;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			dl = dp4(w.lo[i], av[0][i], dl);
			dh = dp4(w.hi[i], av[1][i], dh);
			sl = dp4(MVQ_ONES, av[0][i], sl);
			sh = dp4(MVQ_ONES, av[1][i], sh);
		}
		int I = w.sc0 * dl + w.sc1 * dh, M = w.m0 * sl + w.m1 * sh;
		return __fsub_rn(__fmul_rn(__fmul_rn(w.d, dx), (float)I), __fmul_rn(__fmul_rn(w.dmin, dx), (float)M));
	}
};
typedef dq_k45<false> dq_q4_k;
typedef dq_k45<true> dq_q5_k;

/* Q6_K: lane j (0..7) takes half hf = j/4 and l0 = 8 (j%4): the 8 values at l0 of each quarter u of the half
 * (ql[64hf + l0 ..] nibble for u 0, 2, ql[64hf + 32 + l0 ..] for u 1, 3, high bits qh[32hf + l0 ..] >> 2u),
 * scale scales[8hf + l0/16 + 2u], codes - 32. */
struct dq_q6_k {
	static constexpr int BLOCK = QK_K, LPB = 8, BYTES = sizeof(struct block_q6_K), ALIGN = deq_q6_k::ALIGN;
	struct W {
		uint32_t q[4][2];
		int sc[4];
		float d;
	};
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		const int hf = j >> 2, l0 = 8 * (j & 3);
		w.d = f16_bits_to_f32((uint16_t)ld_u16(p + 208));
#pragma unroll
		for (int i = 0; i < 2; i++) {
			uint32_t A = ld_u32_2a(p + 64 * hf + l0 + 4 * i), B = ld_u32_2a(p + 64 * hf + 32 + l0 + 4 * i);
			uint32_t H = ld_u32_2a(p + 128 + 32 * hf + l0 + 4 * i);
			w.q[0][i] = __vsub4((A & 0x0f0f0f0fu) | (H << 4 & 0x30303030u), 0x20202020u);
			w.q[1][i] = __vsub4((B & 0x0f0f0f0fu) | (H << 2 & 0x30303030u), 0x20202020u);
			w.q[2][i] = __vsub4((A >> 4 & 0x0f0f0f0fu) | (H & 0x30303030u), 0x20202020u);
			w.q[3][i] = __vsub4((B >> 4 & 0x0f0f0f0fu) | (H >> 2 & 0x30303030u), 0x20202020u);
		}
#pragma unroll
		for (int u = 0; u < 4; u++)
			w.sc[u] = (int)(int8_t)__ldg(p + 192 + 8 * hf + (l0 >> 4) + 2 * u);
	}
	__device__ static float dot(const W &w, int j, const int8_t *a, float dx)
	{
		const int hf = j >> 2, l0 = 8 * (j & 3);
		int I = 0;
#pragma unroll
		for (int u = 0; u < 4; u++) {
			uint2 av = __ldg((const uint2 *)(a + 128 * hf + 32 * u + l0));
			I += w.sc[u] * dp4(w.q[u][1], av.y, dp4(w.q[u][0], av.x, 0));
		}
		return __fmul_rn(__fmul_rn(w.d, dx), (float)I);
	}
};

/* Q8_0: lane j (0..3) takes codes 8j .. 8j + 7 */
struct dq_q8_0 {
	static constexpr int BLOCK = QK, LPB = 4, BYTES = sizeof(struct block_q8_0), ALIGN = deq_q8_0::ALIGN;
	struct W {
		uint32_t q[2];
		float d;
	};
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		w.d = f16_bits_to_f32((uint16_t)ld_u16(p));
		w.q[0] = ld_u32_2a(p + 2 + 8 * j);
		w.q[1] = ld_u32_2a(p + 6 + 8 * j);
	}
	__device__ static float dot(const W &w, int j, const int8_t *a, float dx)
	{
		uint2 av = __ldg((const uint2 *)(a + 8 * j));
		int I = dp4(w.q[1], av.y, dp4(w.q[0], av.x, 0));
		return __fmul_rn(__fmul_rn(w.d, dx), (float)I);
	}
};

/* Q4_0 (QH false) and Q5_0 (QH true): lane j (0..1) takes qs bytes 8j .. 8j + 7: low nibbles values 8j + i,
 * high nibbles 16 + 8j + i (Q5_0: bit 4 from qh bit 8j + i, 16 + 8j + i); codes - 8 (- 16). Q4_1 and Q5_1
 * (MIN true): the codes unsigned after d and the min m, y = d q + m taken as qdot.c does, a min of 1 per 16
 * with dmin = -m: M = the lane's sum of a. IQ4_NL (LUT true): Q4_0's nibbles through the IQ4NL_VALUES codebook. */
template <bool QH, bool MIN = false, bool LUT = false> struct dq_q450 {
	static constexpr int BLOCK = QK, LPB = 2;
	static constexpr int ALIGN = LUT ? deq_iq4_nl::ALIGN : MIN ? deq_q4_1::ALIGN : deq_q4_0::ALIGN;
	static constexpr int BYTES = LUT ? sizeof(struct block_iq4_nl)
				     : MIN ? (QH ? sizeof(struct block_q5_1) : sizeof(struct block_q4_1))
					   : (QH ? sizeof(struct block_q5_0) : sizeof(struct block_q4_0));
	static constexpr int QH_AT = MIN ? 4 : 2, QS_AT = QH_AT + (QH ? 4 : 0);
	struct W {
		uint32_t lo[2], hi[2];
		float d, dmin;
	};
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		const uint32_t off = MIN || LUT ? 0 : QH ? 0x10101010u : 0x08080808u;
		w.d = f16_bits_to_f32((uint16_t)ld_u16(p));
		w.dmin = MIN ? -f16_bits_to_f32((uint16_t)ld_u16(p + 2)) : 0.0f;
		uint32_t qh = QH ? ld_u32_2a(p + QH_AT) : 0;
#pragma unroll
		for (int i = 0; i < 2; i++) {
			uint32_t q = ld_u32_2a(p + QS_AT + 8 * j + 4 * i);
			uint32_t bl = QH ? bits_to_b4(qh >> (8 * j + 4 * i) & 15) : 0;
			uint32_t bh = QH ? bits_to_b4(qh >> (16 + 8 * j + 4 * i) & 15) : 0;
			w.lo[i] = __vsub4((q & 0x0f0f0f0fu) | bl, off);
			w.hi[i] = __vsub4((q >> 4 & 0x0f0f0f0fu) | bh, off);
			if (LUT) {
				constexpr uint32_t t0 = pack4(-127, -104, -83, -65), t1 = pack4(-49, -35, -22, -10),
						   t2 = pack4(1, 13, 25, 38), t3 = pack4(53, 69, 89, 113);
				w.lo[i] = lut16_packed(w.lo[i], t0, t1, t2, t3);
				w.hi[i] = lut16_packed(w.hi[i], t0, t1, t2, t3);
			}
		}
	}
	__device__ static float dot(const W &w, int j, const int8_t *a, float dx)
	{
		uint2 al = __ldg((const uint2 *)(a + 8 * j)), ah = __ldg((const uint2 *)(a + 16 + 8 * j));
		int I = dp4(w.lo[0], al.x, 0);
		I = dp4(w.lo[1], al.y, I);
		I = dp4(w.hi[0], ah.x, I);
		I = dp4(w.hi[1], ah.y, I);
		if (!MIN)
			return __fmul_rn(__fmul_rn(w.d, dx), (float)I);
		int M = dp4(MVQ_ONES, ah.y, dp4(MVQ_ONES, ah.x, dp4(MVQ_ONES, al.y, dp4(MVQ_ONES, al.x, 0))));
		return __fsub_rn(__fmul_rn(__fmul_rn(w.d, dx), (float)I), __fmul_rn(__fmul_rn(w.dmin, dx), (float)M));
	}
};
typedef dq_q450<false> dq_q4_0;
typedef dq_q450<true> dq_q5_0;
typedef dq_q450<false, true> dq_q4_1;
typedef dq_q450<true, true> dq_q5_1;
typedef dq_q450<false, false, true> dq_iq4_nl;

/* Which format has a dot here: dq_for<WFMT_x>::type, void for the others (they keep the f32 kernels). */
template <int FMT> struct dq_for {
	typedef void type;
};
template <> struct dq_for<WFMT_Q4_K> {
	typedef dq_q4_k type;
};
template <> struct dq_for<WFMT_Q5_K> {
	typedef dq_q5_k type;
};
template <> struct dq_for<WFMT_Q6_K> {
	typedef dq_q6_k type;
};
template <> struct dq_for<WFMT_Q8_0> {
	typedef dq_q8_0 type;
};
template <> struct dq_for<WFMT_Q4_0> {
	typedef dq_q4_0 type;
};
template <> struct dq_for<WFMT_Q5_0> {
	typedef dq_q5_0 type;
};
template <> struct dq_for<WFMT_Q4_1> {
	typedef dq_q4_1 type;
};
template <> struct dq_for<WFMT_Q5_1> {
	typedef dq_q5_1 type;
};
template <> struct dq_for<WFMT_IQ4_NL> {
	typedef dq_iq4_nl type;
};

#endif
