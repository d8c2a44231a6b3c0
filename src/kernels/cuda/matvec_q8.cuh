/*
 * matvec_q8.cuh: the per-thread code of the 8-bit-activation matrix-vector kernels (matvec_q8.cu): the
 * activation quantizer's arithmetic and one integer dot per weight format. Device code only, no launches, so
 * tests/test_cuda_mvq_host.cpp compiles it for the host (tests/cuda_emul.h) and checks every format's dot,
 * lane by lane in the kernel's order, against the CPU's qdot on the same codes.
 *
 * Activations are quantized as the CPU does (src/kernels/cpu/qdot.h, cpu_xq_quantize): per block of the weight
 * format's B values (32, 128 or 256), amax = max |x|, dx = amax / 127, a = round-half-even(clamp(x * (127 / amax),
 * -127, 127)), the same f32 operations, so the codes and dx are bit for bit the CPU's. The codes of token t are
 * xq[t*K .. t*K + K), the scales xd[t*(K/B) ..].
 *
 * A dot struct dq_<k> (MVQ_DOT_LIST at the end names them; the grid IQ types' are in matvec_q8_iq.cuh) has
 * BLOCK, BYTES (the block), ALIGN (its rows' alignment, as the decoder's), LPB (lanes per block: each of LPB
 * consecutive threads takes BLOCK / LPB values of a block, 16 or 32, with loads of adjacent bytes), a register
 * image W of one lane's part of a block (codes packed 4 per word, integer sub-scales and mins, f32 scales) filled
 * once by load(block, j, w),
 * and dot(w, j, a, dx): that part against one token's codes a (the block's first) with scale dx:
 *     f32(d dx) * I - f32(dmin dx) * M,   I = sum_g c_g sum_i q_i a_i, M = sum_g m_g sum_i a_i
 * over the lane's values, I and M exact int32 (__dp4a), as qdot.h's block formula split over the lanes: the
 * kernel's sum differs from the CPU's only in f32 rounding order. Loads follow each format's alignment
 * (Q4_K/Q5_K 16 bytes, IQ1_M 8, MXFP4 1: a byte at a time, the others 2: two 2-byte loads a word, no branch on
 * the address).
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

/* The quantizer's block: calls fn(integral_constant<int, B>) for a weight format's BLOCK B of 32, 128 or 256
 * (k_quantize_x<B>, one scale per B values as the CPU's cpu_xq_init(.., blk = B)); false, nothing called, for
 * any other B. cuda_xq_codes launches through it and tests/test_cuda_mvq_host.cpp emulates through it. */
template <class Fn> static bool mvq_xq_block(int B, Fn &&fn)
{
	switch (B) {
	case QK:
		fn(std::integral_constant<int, QK>());
		return true;
	case QK * QZ_SUB:
		fn(std::integral_constant<int, QK * QZ_SUB>());
		return true;
	case QK_K:
		fn(std::integral_constant<int, QK_K>());
		return true;
	}
	return false;
}

/* 4 bits b0..b3 of n to bit 0 of bytes 0..3 */
__device__ __forceinline__ uint32_t bits_to_b0(uint32_t n)
{
	return (n & 1) | (n & 2) << 7 | (n & 4) << 14 | (n & 8) << 21;
}

/* 4 bits b0..b3 of n to bit 4 of bytes 0..3 */
__device__ __forceinline__ uint32_t bits_to_b4(uint32_t n)
{
	return bits_to_b0(n) << 4;
}

/* 4 packed magnitudes g (bytes 0..127) negated where bits 0..3 of s are set */
__device__ __forceinline__ uint32_t signed4(uint32_t g, uint32_t s)
{
	const uint32_t m = bits_to_b0(s & 15) * 255u;
	return __vsub4(g ^ m, m);
}

/* 4 bytes at any address, one load each (MXFP4's 17-byte blocks) */
__device__ __forceinline__ uint32_t ld_u32_1a(const uint8_t *p)
{
	return (uint32_t)__ldg(p) | (uint32_t)__ldg(p + 1) << 8 | (uint32_t)__ldg(p + 2) << 16 |
	       (uint32_t)__ldg(p + 3) << 24;
}

/* The dot of a lane's 32 consecutive codes (lane j: values 32j .. 32j + 31 of a 256-block), packed 4 per word,
 * with a sub-scale per 16: the grid IQ formats, IQ4_XS and TQ1_0 fill W their own way (load) and share it. */
struct dq_g32 {
	static constexpr int BLOCK = QK_K, LPB = 8;
	struct W {
		uint32_t q[8];
		int sc0, sc1;
		float d;
	};
	__device__ static float dot(const W &w, int j, const int8_t *a, float dx)
	{
		uint4 a0 = __ldg((const uint4 *)(a + 32 * j)), a1 = __ldg((const uint4 *)(a + 32 * j + 16));
		int lo = dp4(w.q[3], a0.w, dp4(w.q[2], a0.z, dp4(w.q[1], a0.y, dp4(w.q[0], a0.x, 0))));
		int hi = dp4(w.q[7], a1.w, dp4(w.q[6], a1.z, dp4(w.q[5], a1.y, dp4(w.q[4], a1.x, 0))));
		return __fmul_rn(__fmul_rn(w.d, dx), (float)(w.sc0 * lo + w.sc1 * hi));
	}
};

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
 * with dmin = -m: M = the lane's sum of a. IQ4_NL (LUT true): Q4_0's nibbles through the IQ4NL_VALUES codebook;
 * MXFP4 (MX true): a 1-byte e8m0 head (2^(e - 128), e8m0_half) and the nibbles through MXFP4_VALUES, read a
 * byte at a time (17-byte blocks). */
template <bool QH, bool MIN = false, bool LUT = false, bool MX = false> struct dq_q450 {
	static constexpr int BLOCK = QK, LPB = 2;
	static constexpr int ALIGN = MX ? deq_mxfp4::ALIGN : LUT ? deq_iq4_nl::ALIGN : MIN ? deq_q4_1::ALIGN : deq_q4_0::ALIGN;
	static constexpr int BYTES = MX ? sizeof(struct block_mxfp4) : LUT ? sizeof(struct block_iq4_nl)
				     : MIN ? (QH ? sizeof(struct block_q5_1) : sizeof(struct block_q4_1))
					   : (QH ? sizeof(struct block_q5_0) : sizeof(struct block_q4_0));
	static constexpr int QH_AT = MIN ? 4 : 2, QS_AT = MX ? 1 : QH_AT + (QH ? 4 : 0);
	struct W {
		uint32_t lo[2], hi[2];
		float d, dmin;
	};
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		const uint32_t off = MIN || LUT || MX ? 0 : QH ? 0x10101010u : 0x08080808u;
		if (MX) {
			const uint32_t e = __ldg(p);
			w.d = __uint_as_float(e < 2 ? 0x00200000u << e : (e - 1) << 23);
		} else {
			w.d = f16_bits_to_f32((uint16_t)ld_u16(p));
		}
		w.dmin = MIN ? -f16_bits_to_f32((uint16_t)ld_u16(p + 2)) : 0.0f;
		uint32_t qh = QH ? ld_u32_2a(p + QH_AT) : 0;
#pragma unroll
		for (int i = 0; i < 2; i++) {
			uint32_t q = MX ? ld_u32_1a(p + QS_AT + 8 * j + 4 * i) : ld_u32_2a(p + QS_AT + 8 * j + 4 * i);
			uint32_t bl = QH ? bits_to_b4(qh >> (8 * j + 4 * i) & 15) : 0;
			uint32_t bh = QH ? bits_to_b4(qh >> (16 + 8 * j + 4 * i) & 15) : 0;
			w.lo[i] = __vsub4((q & 0x0f0f0f0fu) | bl, off);
			w.hi[i] = __vsub4((q >> 4 & 0x0f0f0f0fu) | bh, off);
			if (MX) {
				constexpr uint32_t t0 = pack4(0, 1, 2, 3), t1 = pack4(4, 6, 8, 12), t2 = pack4(0, -1, -2, -3),
						   t3 = pack4(-4, -6, -8, -12);
				w.lo[i] = lut16_packed(w.lo[i], t0, t1, t2, t3);
				w.hi[i] = lut16_packed(w.hi[i], t0, t1, t2, t3);
			} else if (LUT) {
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
typedef dq_q450<false, false, false, true> dq_mxfp4;

/* The 2-bit field layout of Q2_K, Q3_K and TQ2_0 (value v: half n = v/128, field u = v%128/32 of byte l = v%32
 * of the half's 32 qs bytes, sub-block v/16): lane j (0..7) takes n = j/4 and the 8 bytes l0 = 8 (j%4) .. l0 + 7,
 * so its 32 values are 8 at l0 of each field u, sub-block 8n + 2u + l0/16. Q2_K: codes 0..3, scale and min
 * nibbles per 16 (scales[g]), d, dmin; Q3_K: codes - 4 where bit 4n + u of hmask[l] is clear, scales q3k_scale
 * - 32; TQ2_0: codes - 1, one scale. */
enum { K2_Q2_K, K2_Q3_K, K2_TQ2_0 };
template <int KIND> struct dq_k2 {
	static constexpr int BLOCK = QK_K, LPB = 8;
	static constexpr int BYTES = KIND == K2_Q2_K ? sizeof(struct block_q2_K)
				     : KIND == K2_Q3_K ? sizeof(struct block_q3_K) : sizeof(struct block_tq2_0);
	static constexpr int ALIGN = KIND == K2_Q2_K ? deq_q2_k::ALIGN : KIND == K2_Q3_K ? deq_q3_k::ALIGN : deq_tq2_0::ALIGN;
	static constexpr int QS_AT = KIND == K2_Q2_K ? 16 : KIND == K2_Q3_K ? 32 : 0;
	static constexpr int D_AT = KIND == K2_Q2_K ? 80 : KIND == K2_Q3_K ? 108 : 64;
	struct W {
		uint32_t q[4][2]; /* field u's codes, words of 4 */
		uint32_t sm;      /* byte u: Q2_K scales[g] (scale nibble, min nibble), Q3_K its 6-bit scale (32 is 0) */
		float d, dmin;
	};
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		const int n = j >> 2, l0 = 8 * (j & 3);
		w.d = f16_bits_to_f32((uint16_t)ld_u16(p + D_AT));
		w.dmin = KIND == K2_Q2_K ? f16_bits_to_f32((uint16_t)ld_u16(p + 82)) : 0.0f;
		w.sm = 0;
#pragma unroll
		for (int i = 0; i < 2; i++) {
			const uint32_t q = ld_u32_2a(p + QS_AT + 32 * n + l0 + 4 * i);
			const uint32_t hm = KIND == K2_Q3_K ? ld_u32_2a(p + l0 + 4 * i) >> 4 * n : 0;
#pragma unroll
			for (int u = 0; u < 4; u++) {
				const uint32_t c = q >> 2 * u & 0x03030303u;
				w.q[u][i] = KIND == K2_Q3_K  ? __vsub4(c | (hm >> u & MVQ_ONES) << 2, 0x04040404u)
					    : KIND == K2_TQ2_0 ? __vsub4(c, MVQ_ONES)
							       : c;
			}
		}
		/* the lane's sub-blocks g = 8n + h + 2u (h = l0/16): bytes h, h + 2, h + 4, h + 6 of the 8 at 8n (Q2_K),
		 * of the low-nibble bytes at 96, and the 2-bit fields of bytes 104 + h, 106 + h (Q3_K, q3k_scale) */
		const uint32_t sel = l0 & 16 ? 0x7531 : 0x6420;
		if (KIND == K2_Q2_K) {
			w.sm = __byte_perm(ld_u32_2a(p + 8 * n), ld_u32_2a(p + 8 * n + 4), sel);
		} else if (KIND == K2_Q3_K) {
			const uint32_t lo = __byte_perm(ld_u32_2a(p + 96), ld_u32_2a(p + 100), sel) >> 4 * n & 0x0f0f0f0fu;
			const uint32_t hb = __byte_perm(ld_u32_2a(p + 104), 0, sel) >> 4 * n; /* bytes 104 + h, 106 + h */
			const uint32_t hi = (hb & 0x0303u) | (hb >> 2 & 0x0303u) << 16;       /* u = 0, 1, then 2, 3 */
			w.sm = lo | hi << 4;
		}
	}
	__device__ static float dot(const W &w, int j, const int8_t *a, float dx)
	{
		const int n = j >> 2, l0 = 8 * (j & 3);
		int I = 0, M = 0;
#pragma unroll
		for (int u = 0; u < 4; u++) {
			uint2 av = __ldg((const uint2 *)(a + 128 * n + 32 * u + l0));
			int dq = dp4(w.q[u][1], av.y, dp4(w.q[u][0], av.x, 0));
			const uint32_t sb = w.sm >> 8 * u & 255;
			I += KIND == K2_TQ2_0 ? dq : KIND == K2_Q3_K ? ((int)sb - 32) * dq : (int)(sb & 15) * dq;
			if (KIND == K2_Q2_K)
				M += (int)(sb >> 4) * dp4(MVQ_ONES, av.y, dp4(MVQ_ONES, av.x, 0));
		}
		if (KIND != K2_Q2_K)
			return __fmul_rn(__fmul_rn(w.d, dx), (float)I);
		return __fsub_rn(__fmul_rn(__fmul_rn(w.d, dx), (float)I), __fmul_rn(__fmul_rn(w.dmin, dx), (float)M));
	}
};
typedef dq_k2<K2_Q2_K> dq_q2_k;
typedef dq_k2<K2_Q3_K> dq_q3_k;
typedef dq_k2<K2_TQ2_0> dq_tq2_0;

/* IQ4_XS: lane j takes sub-block j of 32 (qs bytes 16j .. 16j + 15: low nibbles values 0..15, high 16..31)
 * through the IQ4NL_VALUES codebook, scale iq4xs_scale(j) - 32 */
struct dq_iq4_xs : dq_g32 {
	static constexpr int BYTES = sizeof(struct block_iq4_xs), ALIGN = deq_iq4_xs::ALIGN;
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		constexpr uint32_t t0 = pack4(-127, -104, -83, -65), t1 = pack4(-49, -35, -22, -10), t2 = pack4(1, 13, 25, 38),
				   t3 = pack4(53, 69, 89, 113);
		w.d = f16_bits_to_f32((uint16_t)ld_u16(p));
		const uint32_t ls = (__ldg(p + 4 + j / 2) >> 4 * (j & 1) & 15) | (ld_u16(p + 2) >> 2 * j & 3) << 4;
		w.sc0 = w.sc1 = (int)ls - 32;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			uint32_t q = ld_u32_2a(p + 8 + 16 * j + 4 * i);
			w.q[i] = lut16_packed(q & 0x0f0f0f0fu, t0, t1, t2, t3);
			w.q[4 + i] = lut16_packed(q >> 4 & 0x0f0f0f0fu, t0, t1, t2, t3);
		}
	}
};

/* TQ1_0: lane j takes values 32j .. 32j + 31, 4 at a time as deq_tq1_0 finds them (4 consecutive values are
 * one base-3 digit of 4 consecutive bytes), codes digit - 1, scale 1 */
struct dq_tq1_0 : dq_g32 {
	static constexpr int BYTES = sizeof(struct block_tq1_0), ALIGN = deq_tq1_0::ALIGN;
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		w.d = f16_bits_to_f32((uint16_t)ld_u16(p + 52));
		w.sc0 = w.sc1 = 1;
#pragma unroll
		for (int i = 0; i < 8; i++) {
			const int v = 32 * j + 4 * i;
			const int off = v < 160 ? v % 32 : v < 240 ? 32 + (v - 160) % 16 : 48;
			const int dg = v < 160 ? v / 32 : v < 240 ? (v - 160) / 16 : (v - 240) / 4;
			const uint32_t p3 = (uint32_t)(0x511b090301ull >> (8 * dg)) & 255, q = ld_u32_2a(p + off);
			uint32_t c = 0;
#pragma unroll
			for (int b = 0; b < 4; b++)
				c |= ((q >> 8 * b & 255) * p3 & 255) * 3 >> 8 << 8 * b;
			w.q[i] = __vsub4(c, MVQ_ONES);
		}
	}
};

/* Q4_Z/Q8_Z (SUB 1) and Q4_Z128/Q8_Z128 (SUB 4; EIGHT: the 8-bit ones), y = d (q - z): lane j (LPB = 2 SUB)
 * takes half h = j%2 of sub-block s = j/2: 4-bit, its qs bytes 8h .. 8h + 7 (low nibbles values 8h + i, high
 * 16 + 8h + i, Q4_0's order); 8-bit, codes 16h .. 16h + 15. The zero point is qdot.h's min: M = z * the lane's
 * sum of a, dmin = d. */
template <bool EIGHT, int SUB> struct dq_z {
	static constexpr int BLOCK = QK * SUB, LPB = 2 * SUB, BYTES = deq_qz<EIGHT, SUB>::BYTES;
	static constexpr int ALIGN = deq_qz<EIGHT, SUB>::ALIGN;
	struct W {
		uint32_t q[4];
		int z;
		float d;
	};
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		const int s = j >> 1, h = j & 1;
		w.d = f16_bits_to_f32((uint16_t)ld_u16(p));
		w.z = (int)(int16_t)ld_u16(p + 2);
		const uint8_t *qs = p + 4 + s * (EIGHT ? QK : QK / 2) + (EIGHT ? 16 : 8) * h;
#pragma unroll
		for (int i = 0; i < (EIGHT ? 4 : 2); i++) {
			const uint32_t q = ld_u32_2a(qs + 4 * i);
			if (EIGHT) {
				w.q[i] = q;
			} else {
				w.q[i] = q & 0x0f0f0f0fu;
				w.q[2 + i] = q >> 4 & 0x0f0f0f0fu;
			}
		}
	}
	__device__ static float dot(const W &w, int j, const int8_t *a, float dx)
	{
		const int s = j >> 1, h = j & 1;
		uint32_t av[4];
		if (EIGHT) {
			uint4 v = __ldg((const uint4 *)(a + QK * s + 16 * h));
			av[0] = v.x, av[1] = v.y, av[2] = v.z, av[3] = v.w;
		} else {
			uint2 lo = __ldg((const uint2 *)(a + QK * s + 8 * h)), hi = __ldg((const uint2 *)(a + QK * s + 16 + 8 * h));
			av[0] = lo.x, av[1] = lo.y, av[2] = hi.x, av[3] = hi.y;
		}
		int I = 0, S = 0;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			I = dp4(w.q[i], av[i], I);
			S = dp4(MVQ_ONES, av[i], S);
		}
		const float sd = __fmul_rn(w.d, dx);
		return __fsub_rn(__fmul_rn(sd, (float)I), __fmul_rn(sd, (float)(w.z * S)));
	}
};
typedef dq_z<false, 1> dq_q4_z;
typedef dq_z<true, 1> dq_q8_z;
typedef dq_z<false, QZ_SUB> dq_q4_z128;
typedef dq_z<true, QZ_SUB> dq_q8_z128;

#include "kernels/cuda/matvec_q8_iq.cuh"

/* Which format has a dot here: dq_for<WFMT_x>::type, void for the others (they keep the f32 kernels). */
#define MVQ_DOT_LIST(X)                                                                                        \
	X(Q4_K, dq_q4_k) X(Q5_K, dq_q5_k) X(Q6_K, dq_q6_k) X(Q8_0, dq_q8_0) X(Q4_0, dq_q4_0) X(Q5_0, dq_q5_0)  \
	X(Q4_1, dq_q4_1) X(Q5_1, dq_q5_1) X(IQ4_NL, dq_iq4_nl) X(MXFP4, dq_mxfp4) X(Q2_K, dq_q2_k)             \
	X(Q3_K, dq_q3_k) X(TQ2_0, dq_tq2_0) X(TQ1_0, dq_tq1_0) X(IQ4_XS, dq_iq4_xs) X(IQ2_XXS, dq_iq2_xxs)     \
	X(IQ2_XS, dq_iq2_xs) X(IQ2_S, dq_iq2_s) X(IQ3_XXS, dq_iq3_xxs) X(IQ3_S, dq_iq3_s) X(IQ1_S, dq_iq1_s)  \
	X(IQ1_M, dq_iq1_m) X(Q4_Z, dq_q4_z) X(Q8_Z, dq_q8_z) X(Q4_Z128, dq_q4_z128) X(Q8_Z128, dq_q8_z128)
template <int FMT> struct dq_for {
	typedef void type;
};
#define MVQ_DQ_FOR(id, dq)                \
	template <> struct dq_for<WFMT_##id> { \
		typedef dq type;               \
	};
MVQ_DOT_LIST(MVQ_DQ_FOR)
#undef MVQ_DQ_FOR

#endif
