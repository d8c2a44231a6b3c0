/*
 * qdot_simd.h: the x86 SIMD row kernels (contract in qdot.h), written once over 256-bit vectors and included
 * by qdot_avx2.c and qdot_avx512.c, which compile it with their own instruction sets and define:
 *   dot_u8s8(acc, u, s)  acc (8 x int32) + the sums of 4 products u8 * s8 (AVX2: maddubs + madd + add;
 *                        AVX-512 VNNI: vpdpbusd)
 *   dot_i16(acc, p, c)   acc + the sums of 2 products int16 * int16 (AVX2: madd + add; VNNI: vpdpwssd)
 *   QDOT_FIND, FDOT_FIND the names of the file's finders.
 * The integer dots are exact: maddubs never saturates here (|u| <= 128 for Q8_0, <= 63 elsewhere, |a| <=
 * 127: a pair is at most 32512), and the int32 lanes of a block hold at most 2^26.
 *
 * qk_<k> (QUANT, QMIN) and fk_<k> (FLOAT), one per format of src/layout/wfmt_list.h: each weight vector is
 * unpacked once and used for all T tokens; independent accumulator chains hide the latency. The 32-blocks
 * take their signed codes q as |q| against a * sign(q); the K-quants add their 16- or 32-value sub-blocks times the
 * integer scale in int32 lanes for a whole 256-block, then convert once; Q4_K/Q5_K mins and Q6_K's -32 come
 * from the 16-sums of the activation codes.
 */
#include <immintrin.h>
#include <string.h>

#include "layout/quant.h"
#include "layout/wfmt.h"

#define AI static inline __attribute__((always_inline))
/* Independent accumulator chains per token, to hide the latency of FMA and vpdpwssd: 4 when T = 1, 2 when
 * T = 2, else 1; CH(t, j) is token t's chain j % NCH. Arrays of chains have 2 * QDOT_MAX_T entries. */
#define NCH (T == 1 ? 4 : T == 2 ? 2 : 1)
#define CH(t, j) ((t) * NCH + (j) % NCH)
#define UNROLL _Pragma("GCC unroll 4")

AI float ld_f16(const void *p)
{
	uint16_t h;
	memcpy(&h, p, 2);
	return _cvtsh_ss(h);
}

AI float hsum(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* 16 bytes of packed nibbles -> 32 bytes: low nibbles (values 0..15), then high nibbles (16..31) */
AI __m256i nibbles32(const uint8_t *qs)
{
	__m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
	return _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_set_epi64x(4, 4, 0, 0)), _mm256_set1_epi8(15));
}

/* Q5_0's signed codes: (nibble | bit j of qh << 4) - 16 */
AI __m256i q5_codes(__m256i nib, uint32_t qh)
{
#ifdef __AVX512BW__
	return _mm256_mask_sub_epi8(nib, _cvtu32_mask32(~qh), nib, _mm256_set1_epi8(16));
#else
	const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
	__m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuf); /* byte j: the qh byte holding bit j */
	b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
	__m256i set = _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1));
	return _mm256_sub_epi8(_mm256_or_si256(nib, _mm256_and_si256(set, _mm256_set1_epi8(16))), _mm256_set1_epi8(16));
#endif
}

AI const int8_t *xq_codes(const struct cpu_xq *xq, int row, int k)
{
	return xq->q + (size_t)row * (size_t)xq->K + (size_t)k;
}

/* out[t] = the sum of token t's chains */
AI void finish(const __m256 *acc, int T, float *out)
{
	for (int t = 0; t < T; t++) {
		__m256 s = acc[CH(t, 0)];
		for (int j = 1; j < NCH; j++)
			s = _mm256_add_ps(s, acc[CH(t, j)]);
		out[t] = hsum(s);
	}
}

/* Block b of a 32-block row (Q8_0, Q4_0, Q5_0) into chain j: the signed codes w as |w| (unsigned: -128 is
 * 0x80) against a * sign(w), which makes vpdpbusd/maddubs a signed dot. */
AI void q32_block(int fmt, const uint8_t *p, const struct cpu_xq *xq, int t0, int T, int b, int j, __m256 *acc)
{
	float dw = ld_f16(p);
	__m256i w8;
	if (fmt == WFMT_Q8_0) {
		w8 = _mm256_loadu_si256((const __m256i *)(p + 2));
	} else if (fmt == WFMT_Q4_0) {
		w8 = _mm256_sub_epi8(nibbles32(p + 2), _mm256_set1_epi8(8));
	} else {
		uint32_t qh;
		memcpy(&qh, p + 2, 4);
		w8 = q5_codes(nibbles32(p + 6), qh);
	}
	__m256i u = _mm256_abs_epi8(w8);
	int K = xq->K;
	UNROLL for (int t = 0; t < T; t++) {
		int row = t0 + t;
		__m256i a = _mm256_loadu_si256((const __m256i *)xq_codes(xq, row, 32 * b));
		__m256i i = dot_u8s8(_mm256_setzero_si256(), u, _mm256_sign_epi8(a, w8));
		__m256 sd = _mm256_set1_ps(dw * xq->d[(size_t)row * (size_t)(K / 32) + (size_t)b]);
		acc[CH(t, j)] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), sd, acc[CH(t, j)]);
	}
}

AI void q32_dot(int fmt, size_t bb, const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	__m256 acc[2 * QDOT_MAX_T];
	for (int i = 0; i < 2 * QDOT_MAX_T; i++)
		acc[i] = _mm256_setzero_ps();
	const uint8_t *p = w;
	int nb = xq->K / 32, b = 0;
	for (; b + 3 < nb; b += 4, p += 4 * bb)
		UNROLL for (int j = 0; j < 4; j++)
			q32_block(fmt, p + j * bb, xq, t0, T, b + j, j, acc);
	for (; b < nb; b++, p += bb)
		q32_block(fmt, p, xq, t0, T, b, 0, acc);
	finish(acc, T, out);
}

AI void qk_q8_0(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	q32_dot(WFMT_Q8_0, sizeof(struct block_q8_0), w, xq, t0, T, out);
}

AI void qk_q4_0(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	q32_dot(WFMT_Q4_0, sizeof(struct block_q4_0), w, xq, t0, T, out);
}

AI void qk_q5_0(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	q32_dot(WFMT_Q5_0, sizeof(struct block_q5_0), w, xq, t0, T, out);
}

/* token t's int32 chains added */
AI __m256i isum_total(const __m256i *isum, int T, int t)
{
	__m256i s = isum[CH(t, 0)];
	for (int j = 1; j < NCH; j++)
		s = _mm256_add_epi32(s, isum[CH(t, j)]);
	return s;
}

/* 256-block i of a format without mins done: acc[t] += f32(I_t) * f32(d dx_t), I_t token t's chains */
AI void acc_block(__m256 *acc, const __m256i *isum, float d, const struct cpu_xq *xq, int t0, int T, int i)
{
	int nsb = xq->K / QK_K;
	UNROLL for (int t = 0; t < T; t++) {
		float dx = xq->d[(size_t)(t0 + t) * (size_t)nsb + (size_t)i];
		acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum_total(isum, T, t)), _mm256_set1_ps(d * dx), acc[t]);
	}
}

/* The 12 scale bytes of Q4_K/Q5_K (and the 4 bytes after them, unused) -> sc[8] (bytes 0..7) and m[8] (8..15),
 * as k_scale_min: 32-bit lane 0 holds the low 6 bits of sc0..3, lane 1 those of m0..3, lane 2 the low (high)
 * nibbles of sc4..7 (m4..7), whose 2 high bits are the top bits of lane 0 (1). */
AI __m128i k_scales_vec(const uint8_t *s)
{
	__m128i v = _mm_loadu_si128((const __m128i *)s);
	__m128i a = _mm_and_si128(v, _mm_set1_epi8(63));
	__m128i h = _mm_and_si128(_mm_srli_epi32(v, 2), _mm_set1_epi8(0x30));
	__m128i lo = _mm_and_si128(v, _mm_set1_epi8(15)), hi = _mm_and_si128(_mm_srli_epi32(v, 4), _mm_set1_epi8(15));
	__m128i top = _mm_or_si128(_mm_shuffle_epi32(h, _MM_SHUFFLE(1, 1, 0, 0)),
				   _mm_shuffle_epi32(_mm_unpackhi_epi32(lo, hi), _MM_SHUFFLE(1, 1, 0, 0)));
	return _mm_blend_epi32(_mm_shuffle_epi32(a, _MM_SHUFFLE(1, 1, 0, 0)), top, 10);
}

/* The first product of chain j (0..3 in order) of a block sets it, later ones add: (2c + h) < NCH */
#define FIRST(c, h) ((c) < 2 && 2 * (c) + (h) < NCH)

/* Q4_K and Q5_K: blocks {d, dmin, scales[12], (Q5_K: qh[32]), qs[128]}. A chunk c of 64 values is the low
 * nibbles of qs[32c..32c+31] (sub-block 2c) then their high nibbles (2c + 1), against 64 contiguous codes. */
AI void k45_dot(bool q5, const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	size_t bb = q5 ? sizeof(struct block_q5_K) : sizeof(struct block_q4_K);
	int K = xq->K, nsb = K / QK_K;
	__m256 acc[2 * QDOT_MAX_T]; /* token t: 2t scales, 2t + 1 mins */
	for (int i = 0; i < 2 * QDOT_MAX_T; i++)
		acc[i] = _mm256_setzero_ps();
	for (int i = 0; i < nsb; i++) {
		const uint8_t *p = (const uint8_t *)w + (size_t)i * bb, *qs = p + (q5 ? 48 : 16);
		__m128i sm = k_scales_vec(p + 4);
		__m256i mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm)); /* m_j for both 16-halves of j */
		__m256i isum[2 * QDOT_MAX_T];
		const __m256i m15 = _mm256_set1_epi8(15), m1 = _mm256_set1_epi8(1);
		__m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm)); /* 8 x int16 scales, twice */
		__m256i hb = q5 ? _mm256_loadu_si256((const __m256i *)(p + 16)) : _mm256_setzero_si256();
		UNROLL for (int c = 0; c < 4; c++) {
			__m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
			__m256i lo = _mm256_and_si256(v, m15), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m15);
			if (q5) {
				lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, m1), 4));
				hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), m1), 4));
				hb = _mm256_srli_epi16(hb, 2);
			}
			/* the int16 scale 2c (2c + 1) in every lane: bytes 4c, 4c + 1 (4c + 2, 4c + 3) of sc */
			__m256i s0 = _mm256_shuffle_epi8(sc, _mm256_set1_epi16((short)((4 * c + 1) << 8 | 4 * c)));
			__m256i s1 = _mm256_shuffle_epi8(sc, _mm256_set1_epi16((short)((4 * c + 3) << 8 | (4 * c + 2))));
			UNROLL for (int t = 0; t < T; t++) {
				const int8_t *a = xq_codes(xq, t0 + t, QK_K * i + 64 * c);
				__m256i a0 = _mm256_loadu_si256((const __m256i *)a);
				__m256i a1 = _mm256_loadu_si256((const __m256i *)(a + 32));
				int j = 2 * (c & 1);
				__m256i p0 = _mm256_maddubs_epi16(lo, a0), p1 = _mm256_maddubs_epi16(hi, a1);
				isum[CH(t, j)] = FIRST(c, 0) ? _mm256_madd_epi16(p0, s0) : dot_i16(isum[CH(t, j)], p0, s0);
				isum[CH(t, j + 1)] = FIRST(c, 1) ? _mm256_madd_epi16(p1, s1) : dot_i16(isum[CH(t, j + 1)], p1, s1);
			}
		}
		uint32_t dd;
		memcpy(&dd, p, 4);
		__m128 ddm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dd)); /* d, dmin */
		UNROLL for (int t = 0; t < T; t++) {
			size_t row = (size_t)(t0 + t);
			__m128 s = _mm_mul_ps(ddm, _mm_set1_ps(xq->d[row * (size_t)nsb + (size_t)i])); /* d dx, dmin dx */
			__m256i I = isum_total(isum, T, t);
			acc[2 * t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(I), _mm256_broadcastss_ps(s), acc[2 * t]);
			__m256i s16 = _mm256_loadu_si256((const __m256i *)(xq->s + row * (size_t)(K / 16) + 16 * (size_t)i));
			__m256i M = _mm256_madd_epi16(s16, mins);
			acc[2 * t + 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(M), _mm256_broadcastss_ps(_mm_movehdup_ps(s)),
							  acc[2 * t + 1]);
		}
	}
	for (int t = 0; t < T; t++)
		out[t] = hsum(acc[2 * t]) - hsum(acc[2 * t + 1]);
}

AI void qk_q4_k(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	k45_dot(false, w, xq, t0, T, out);
}

AI void qk_q5_k(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	k45_dot(true, w, xq, t0, T, out);
}

AI void qk_q6_k(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	int K = xq->K, nsb = K / QK_K;
	const __m256i m15 = _mm256_set1_epi8(15), m48 = _mm256_set1_epi8(48);
	const __m256i pair_bcast = _mm256_set_epi8(3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 1, 0, 1, 0, 1, 0, 1, 0, 1,
						   0, 1, 0, 1, 0, 1, 0);
	__m256 acc[QDOT_MAX_T];
	for (int t = 0; t < QDOT_MAX_T; t++)
		acc[t] = _mm256_setzero_ps();
	for (int i = 0; i < nsb; i++) {
		const struct block_q6_K *b = (const struct block_q6_K *)w + i;
		__m256i scw = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
		int32_t scp[8]; /* scale pairs (sc[2G], sc[2G + 1]) as int16 */
		_mm256_storeu_si256((__m256i *)scp, scw);
		__m256i isum[2 * QDOT_MAX_T];
		UNROLL for (int t = 0; t < T; t++) { /* the -32 of every code: - 32 sum_g sc_g S_g */
			const int16_t *s = xq->s + (size_t)(t0 + t) * (size_t)(K / 16) + 16 * (size_t)i;
			__m256i corr = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)s), scw);
			isum[CH(t, 0)] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5));
		}
		const uint8_t *ql = b->ql, *qh = b->qh;
		UNROLL for (int half = 0; half < 2; half++, ql += 64, qh += 32) {
			__m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
			__m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
			__m256i hv = _mm256_loadu_si256((const __m256i *)qh);
			__m256i q[4] = {
				_mm256_or_si256(_mm256_and_si256(l0, m15), _mm256_and_si256(_mm256_slli_epi16(hv, 4), m48)),
				_mm256_or_si256(_mm256_and_si256(l1, m15), _mm256_and_si256(_mm256_slli_epi16(hv, 2), m48)),
				_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m15), _mm256_and_si256(hv, m48)),
				_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m15),
						_mm256_and_si256(_mm256_srli_epi16(hv, 2), m48)),
			};
			UNROLL for (int g = 0; g < 4; g++) {
				int G = 4 * half + g;
				/* sc[2G] in the int16 lanes of values 0..15, sc[2G + 1] in those of 16..31 */
				__m256i sg = _mm256_shuffle_epi8(_mm256_set1_epi32(scp[G]), pair_bcast);
				UNROLL for (int t = 0; t < T; t++) {
					const int8_t *a = xq_codes(xq, t0 + t, QK_K * i + 32 * G);
					__m256i p16 = _mm256_maddubs_epi16(q[g], _mm256_loadu_si256((const __m256i *)a));
					bool first = half == 0 && g > 0 && g < NCH; /* chain 0 starts at -32 sum */
					isum[CH(t, g)] = first ? _mm256_madd_epi16(p16, sg) : dot_i16(isum[CH(t, g)], p16, sg);
				}
			}
		}
		acc_block(acc, isum, ld_f16(&b->d), xq, t0, T, i);
	}
	for (int t = 0; t < T; t++)
		out[t] = hsum(acc[t]);
}

/* Element formats: 8 weights widened exactly to f32 */
AI __m256 ld8(int fmt, const void *w, int k)
{
	if (fmt == WFMT_F32)
		return _mm256_loadu_ps((const float *)w + k);
	__m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + k));
	if (fmt == WFMT_F16)
		return _mm256_cvtph_ps(h);
	return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AI float ld1(int fmt, const void *w, int k)
{
	return fmt == WFMT_F32 ? ((const float *)w)[k]
	       : fmt == WFMT_F16 ? f16_to_f32(((const uint16_t *)w)[k])
				 : bf16_to_f32(((const uint16_t *)w)[k]);
}

AI void fdot(int fmt, const void *w, const float *x, int64_t ldx, int T, int K, float *out)
{
	__m256 acc[2 * QDOT_MAX_T];
	for (int i = 0; i < 2 * QDOT_MAX_T; i++)
		acc[i] = _mm256_setzero_ps();
	int k = 0;
	for (; k + 32 <= K; k += 32)
		UNROLL for (int j = 0; j < 4; j++) {
			__m256 wv = ld8(fmt, w, k + 8 * j);
			UNROLL for (int t = 0; t < T; t++) {
				const float *xt = x + (size_t)t * (size_t)ldx + k + 8 * j;
				acc[CH(t, j)] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xt), acc[CH(t, j)]);
			}
		}
	for (; k + 8 <= K; k += 8) {
		__m256 wv = ld8(fmt, w, k);
		for (int t = 0; t < T; t++)
			acc[CH(t, 0)] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + (size_t)t * (size_t)ldx + k), acc[CH(t, 0)]);
	}
	finish(acc, T, out);
	for (int t = 0; t < T; t++)
		for (int j = k; j < K; j++)
			out[t] += ld1(fmt, w, j) * x[(size_t)t * (size_t)ldx + (size_t)j];
}

AI void fk_f32(const void *w, const float *x, int64_t ldx, int T, int K, float *out)
{
	fdot(WFMT_F32, w, x, ldx, T, K, out);
}

AI void fk_f16(const void *w, const float *x, int64_t ldx, int T, int K, float *out)
{
	fdot(WFMT_F16, w, x, ldx, T, K, out);
}

AI void fk_bf16(const void *w, const float *x, int64_t ldx, int T, int K, float *out)
{
	fdot(WFMT_BF16, w, x, ldx, T, K, out);
}

#include "kernels/cpu/qdot_iq_simd.h"

/* One function per format, over rows; the switch gives each T its own unrolled copy. */
#define SIMD_ROWS(T, call)                                                                                \
	for (int r = 0; r < rows; r++, w = (const char *)w + rb) {                                        \
		float out[QDOT_MAX_T];                                                                    \
		call;                                                                                     \
		for (int t = 0; t < (T); t++)                                                             \
			y[t * ldy + r] = out[t];                                                          \
	}
#define SIMD_QDOT(k)                                                                                      \
	static void qdot_##k(const void *w, size_t rb, int rows, const struct cpu_xq *xq, int t0, int T,  \
			     float *y, int64_t ldy)                                                       \
	{                                                                                                 \
		switch (T) {                                                                              \
		case 1: SIMD_ROWS(1, qk_##k(w, xq, t0, 1, out)) break;                                    \
		case 2: SIMD_ROWS(2, qk_##k(w, xq, t0, 2, out)) break;                                    \
		case 3: SIMD_ROWS(3, qk_##k(w, xq, t0, 3, out)) break;                                    \
		default: SIMD_ROWS(4, qk_##k(w, xq, t0, 4, out)) break;                                   \
		}                                                                                         \
	}
#define SIMD_FDOT(k)                                                                                      \
	static void fdot_##k(const void *w, size_t rb, int rows, const float *x, int64_t ldx, int T, int K, \
			     float *y, int64_t ldy)                                                       \
	{                                                                                                 \
		switch (T) {                                                                              \
		case 1: SIMD_ROWS(1, fk_##k(w, x, ldx, 1, K, out)) break;                                 \
		case 2: SIMD_ROWS(2, fk_##k(w, x, ldx, 2, K, out)) break;                                 \
		case 3: SIMD_ROWS(3, fk_##k(w, x, ldx, 3, K, out)) break;                                 \
		default: SIMD_ROWS(4, fk_##k(w, x, ldx, 4, K, out)) break;                                \
		}                                                                                         \
	}
#define SIMD_DEF(id, code, block, bytes, ggml, kind, k) WFMT_QDOT_##kind(SIMD_QDOT(k), ) WFMT_FDOT_##kind(SIMD_FDOT(k), )
WFMT_LIST(SIMD_DEF)
#undef SIMD_DEF

cpu_qdot_fn QDOT_FIND(int fmt)
{
#define ROW(id, code, block, bytes, ggml, kind, k) WFMT_QDOT_##kind(qdot_##k, NULL),
	static const cpu_qdot_fn by_fmt[WFMT_COUNT] = {WFMT_LIST(ROW)};
#undef ROW
	return fmt >= 0 && fmt < WFMT_COUNT ? by_fmt[fmt] : NULL;
}

cpu_fdot_fn FDOT_FIND(int fmt)
{
#define ROW(id, code, block, bytes, ggml, kind, k) WFMT_FDOT_##kind(fdot_##k, NULL),
	static const cpu_fdot_fn by_fmt[WFMT_COUNT] = {WFMT_LIST(ROW)};
#undef ROW
	return fmt >= 0 && fmt < WFMT_COUNT ? by_fmt[fmt] : NULL;
}
