/*
 * qdot_simd.h: the x86 SIMD row kernels (contract in qdot.h), written once over 256-bit vectors and included
 * by qdot_avx2.c and qdot_avx512.c, which compile it with their own instruction sets and define:
 *   dot_u8s8(acc, u, s)  acc (8 x int32) + the sums of 4 products u8 * s8 (AVX2: maddubs + madd + add;
 *                        AVX-512 VNNI: vpdpbusd)
 *   dot_i16(acc, p, c)   acc + the sums of 2 products int16 * int16 (AVX2: madd + add; VNNI: vpdpwssd)
 *   QDOT_FIND, FDOT_FIND, QTILE_FIND the names of the file's finders.
 * The integer dots are exact: maddubs never saturates here (|u| <= 128 for Q8_0 and Q8_Z, <= 127 for the IQ4 tables,
 * <= 63 elsewhere, |a| <= 127: a pair is at most 32512), and the int32 lanes of a block hold at most 2^26.
 *
 * qk_<k> (QUANT, QMIN) and fk_<k> (FLOAT), one per format of src/layout/wfmt_list.h: each weight vector is
 * unpacked once and used for all T tokens; independent accumulator chains hide the latency. The 32-blocks
 * take their signed codes q as |q| against a * sign(q) (IQ4_NL and MXFP4 looked up by a byte shuffle of their
 * 16-value table; Q4_1/Q5_1 unsigned, their min times the block's code sum); the K-quants add their 16- or
 * 32-value sub-blocks times the integer scale in int32 lanes for a whole 256-block, then convert once; Q4_K/Q5_K
 * mins and Q6_K's -32 come from the 16-sums of the activation codes. The other 256-blocks (Q2_K, Q3_K, IQ4_XS,
 * TQ1_0, TQ2_0) unpack to 8 vectors of codes and 16 scales and share one accumulation (k256_dot).
 */
#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#include "layout/quant.h"
#include "layout/wfmt.h"

#define AI static inline __attribute__((always_inline))
/* Tokens per call of the row kernels qk_<k>/fk_<k> (their chains stay in registers); a qdot of more tokens
 * runs them in groups of QK_SUB_T, the tiled formats (q32_tile) take all QDOT_MAX_T at once. */
#define QK_SUB_T 4
/* Independent accumulator chains per token, to hide the latency of FMA and vpdpwssd: 4 when T = 1, 2 when
 * T = 2, else 1; CH(t, j) is token t's chain j % NCH. Arrays of chains have 2 * QK_SUB_T entries. */
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

/* Q5_0/Q5_1's unsigned codes: nibble | bit j of qh << 4 */
AI __m256i q5_ucodes(__m256i nib, uint32_t qh)
{
#ifdef __AVX512BW__
	return _mm256_mask_add_epi8(nib, _cvtu32_mask32(qh), nib, _mm256_set1_epi8(16)); /* nib < 16: add is or */
#else
	const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
	__m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuf); /* byte j: the qh byte holding bit j */
	b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
	__m256i set = _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1));
	return _mm256_or_si256(nib, _mm256_and_si256(set, _mm256_set1_epi8(16)));
#endif
}

/* Q5_0's signed codes: (nibble | bit j of qh << 4) - 16 */
AI __m256i q5_codes(__m256i nib, uint32_t qh)
{
	return _mm256_sub_epi8(q5_ucodes(nib, qh), _mm256_set1_epi8(16));
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

/* 16-value tables, the same in both 128-bit lanes, for _mm256_shuffle_epi8 */
AI __m256i lut16(const int8_t *v)
{
	return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)v));
}

static const int8_t iq4nl_lut[16] = IQ4NL_VALUES, mxfp4_lut[16] = MXFP4_VALUES;

/* Block b of a 32-block row (Q8_0, Q4_0, Q5_0, Q4_1, Q5_1, IQ4_NL, MXFP4, Q4_Z, Q8_Z) into chain j. Signed codes
 * w as |w| (unsigned: -128 is 0x80) against a * sign(w), which makes vpdpbusd/maddubs a signed dot; the unsigned
 * codes of Q4_1/Q5_1/Q4_Z as they are, their min m (Q4_Z/Q8_Z: -d z) times the block's code sum into accm
 * (out = chains + accm). */
AI void q32_block(int fmt, const uint8_t *p, const struct cpu_xq *xq, int t0, int T, int b, int j, __m256 *acc,
		  float *accm)
{
	bool zero = fmt == WFMT_Q4_Z || fmt == WFMT_Q8_Z;
	bool uns = fmt == WFMT_Q4_1 || fmt == WFMT_Q5_1 || fmt == WFMT_Q4_Z, with_min = uns || zero;
	float dw = fmt == WFMT_MXFP4 ? e8m0_half(p[0]) : ld_f16(p);
	int16_t z;
	memcpy(&z, p + 2, 2);
	float m = zero ? -dw * (float)z : with_min ? ld_f16(p + 2) : 0;
	__m256i w8;
	uint32_t qh;
	if (fmt == WFMT_Q8_0) {
		w8 = _mm256_loadu_si256((const __m256i *)(p + 2));
	} else if (fmt == WFMT_Q8_Z) {
		w8 = _mm256_loadu_si256((const __m256i *)(p + 4));
	} else if (fmt == WFMT_Q4_Z) {
		w8 = nibbles32(p + 4);
	} else if (fmt == WFMT_Q4_0) {
		w8 = _mm256_sub_epi8(nibbles32(p + 2), _mm256_set1_epi8(8));
	} else if (fmt == WFMT_Q5_0) {
		memcpy(&qh, p + 2, 4);
		w8 = q5_codes(nibbles32(p + 6), qh);
	} else if (fmt == WFMT_Q4_1) {
		w8 = nibbles32(p + 4);
	} else if (fmt == WFMT_Q5_1) {
		memcpy(&qh, p + 4, 4);
		w8 = q5_ucodes(nibbles32(p + 8), qh);
	} else if (fmt == WFMT_IQ4_NL) {
		w8 = _mm256_shuffle_epi8(lut16(iq4nl_lut), nibbles32(p + 2));
	} else {
		w8 = _mm256_shuffle_epi8(lut16(mxfp4_lut), nibbles32(p + 1));
	}
	__m256i u = uns ? w8 : _mm256_abs_epi8(w8);
	int K = xq->K;
	UNROLL for (int t = 0; t < T; t++) {
		int row = t0 + t;
		__m256i a = _mm256_loadu_si256((const __m256i *)xq_codes(xq, row, 32 * b));
		__m256i i = dot_u8s8(_mm256_setzero_si256(), u, uns ? a : _mm256_sign_epi8(a, w8));
		float dx = xq->d[(size_t)row * (size_t)(K / 32) + (size_t)b];
		acc[CH(t, j)] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_set1_ps(dw * dx), acc[CH(t, j)]);
		if (with_min) {
			const int16_t *s = xq->s + (size_t)row * (size_t)(K / 16) + 2 * (size_t)b;
			accm[t] += m * dx * (float)(s[0] + s[1]);
		}
	}
}

AI void q32_dot(int fmt, size_t bb, const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	__m256 acc[2 * QK_SUB_T];
	float accm[QK_SUB_T] = {0};
	for (int i = 0; i < 2 * QK_SUB_T; i++)
		acc[i] = _mm256_setzero_ps();
	const uint8_t *p = w;
	int nb = xq->K / 32, b = 0;
	for (; b + 3 < nb; b += 4, p += 4 * bb)
		UNROLL for (int j = 0; j < 4; j++)
			q32_block(fmt, p + j * bb, xq, t0, T, b + j, j, acc, accm);
	for (; b < nb; b++, p += bb)
		q32_block(fmt, p, xq, t0, T, b, 0, acc, accm);
	finish(acc, T, out);
	for (int t = 0; t < T; t++)
		out[t] += accm[t];
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

AI void qk_q4_1(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	q32_dot(WFMT_Q4_1, sizeof(struct block_q4_1), w, xq, t0, T, out);
}

AI void qk_q5_1(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	q32_dot(WFMT_Q5_1, sizeof(struct block_q5_1), w, xq, t0, T, out);
}

AI void qk_iq4_nl(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	q32_dot(WFMT_IQ4_NL, sizeof(struct block_iq4_nl), w, xq, t0, T, out);
}

AI void qk_q4_z(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	q32_dot(WFMT_Q4_Z, sizeof(struct block_q4_z), w, xq, t0, T, out);
}

AI void qk_q8_z(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	q32_dot(WFMT_Q8_Z, sizeof(struct block_q8_z), w, xq, t0, T, out);
}

/* Q4_Z128 and Q8_Z128: 4 sub-blocks of 32 (Q4_Z's unsigned / Q8_Z's signed codes) into one int32 sum per
 * token, then one scale d dx for the 128 values and the zero's part -d z dx times the 8 code sums into accm */
AI void qz128_dot(bool eight, const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	size_t bb = eight ? sizeof(struct block_q8_z128) : sizeof(struct block_q4_z128);
	__m256 acc[2 * QDOT_MAX_T];
	float accm[QDOT_MAX_T] = {0};
	for (int i = 0; i < 2 * QDOT_MAX_T; i++)
		acc[i] = _mm256_setzero_ps();
	int K = xq->K, nb = K / 128;
	for (int b = 0; b < nb; b++) {
		const uint8_t *p = (const uint8_t *)w + (size_t)b * bb;
		float dw = ld_f16(p);
		int16_t z;
		memcpy(&z, p + 2, 2);
		__m256i isum[QDOT_MAX_T];
		for (int t = 0; t < T; t++)
			isum[t] = _mm256_setzero_si256();
		UNROLL for (int s = 0; s < QZ_SUB; s++) {
			__m256i w8 = eight ? _mm256_loadu_si256((const __m256i *)(p + 4 + 32 * s)) : nibbles32(p + 4 + 16 * s);
			__m256i u = eight ? _mm256_abs_epi8(w8) : w8;
			UNROLL for (int t = 0; t < T; t++) {
				__m256i a = _mm256_loadu_si256((const __m256i *)xq_codes(xq, t0 + t, 128 * b + 32 * s));
				isum[t] = dot_u8s8(isum[t], u, eight ? _mm256_sign_epi8(a, w8) : a);
			}
		}
		UNROLL for (int t = 0; t < T; t++) {
			size_t row = (size_t)(t0 + t);
			float dx = xq->d[row * (size_t)nb + (size_t)b];
			const int16_t *s16 = xq->s + row * (size_t)(K / 16) + 8 * (size_t)b;
			int S = 0;
			for (int g = 0; g < 8; g++)
				S += s16[g];
			acc[CH(t, b)] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(dw * dx), acc[CH(t, b)]);
			accm[t] += -dw * (float)z * dx * (float)S;
		}
	}
	finish(acc, T, out);
	for (int t = 0; t < T; t++)
		out[t] += accm[t];
}

AI void qk_q4_z128(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	qz128_dot(false, w, xq, t0, T, out);
}

AI void qk_q8_z128(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	qz128_dot(true, w, xq, t0, T, out);
}

AI void qk_mxfp4(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	q32_dot(WFMT_MXFP4, sizeof(struct block_mxfp4), w, xq, t0, T, out);
}

/* Prefill tiles of the 32-block formats (T >= 2): Q32_RM rows by pairs of tokens. A block's codes go in two
 * vectors, values 0..15 (lo) and 16..31 (hi), each repeated in both 128-bit halves, against a pair's codes
 * [token t | token t + 1] of the same 16 values: one integer dot then holds token t in lanes 0..3 and t + 1 in
 * lanes 4..7, and one conversion and one FMA serve both tokens; a row's codes are unpacked once per block for
 * all T tokens, a pair's codes (laid out by the quantizer: cpu_xq.pair) loaded once for Q32_RM rows; t0 even. Codes are unsigned in the dot: Q4_0/Q5_0 as
 * q + off with -off S_b (S_b: the token's code sum over the block) as the dot's start value, so I_b is exact
 * as on every path; Q4_1/Q5_1 as they are, their min times S_b added in f32; the signed ones (Q8_0, IQ4_NL,
 * MXFP4) as |w| against a sign(w). */
#define Q32_RM 4

AI bool q32_tiled(int fmt)
{
	return fmt == WFMT_Q8_0 || fmt == WFMT_Q4_0 || fmt == WFMT_Q5_0 || fmt == WFMT_Q4_1 || fmt == WFMT_Q5_1 ||
	       fmt == WFMT_IQ4_NL || fmt == WFMT_MXFP4;
}

AI int q32_off(int fmt)
{
	return fmt == WFMT_Q4_0 ? 8 : fmt == WFMT_Q5_0 ? 16 : 0;
}

AI bool q32_signed(int fmt)
{
	return fmt == WFMT_Q8_0 || fmt == WFMT_IQ4_NL || fmt == WFMT_MXFP4;
}

/* One row's block: codes lo/hi (signed formats: their sign in slo/shi, |w| in lo/hi), d and m broadcast */
struct q32_w {
	__m256i lo, hi, slo, shi;
	__m256 d, m;
};

AI __m256i bcast16(const uint8_t *p)
{
	return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
}

AI void q32_unpack(int fmt, const uint8_t *p, struct q32_w *w)
{
	const __m256i m15 = _mm256_set1_epi8(15);
	w->d = _mm256_set1_ps(fmt == WFMT_MXFP4 ? e8m0_half(p[0]) : ld_f16(p));
	if (fmt == WFMT_Q4_1 || fmt == WFMT_Q5_1)
		w->m = _mm256_set1_ps(ld_f16(p + 2));
	if (fmt == WFMT_Q8_0) {
		w->slo = bcast16(p + 2);
		w->shi = bcast16(p + 18);
	} else {
		int qs = fmt == WFMT_MXFP4 ? 1 : fmt == WFMT_Q4_1 ? 4 : fmt == WFMT_Q5_0 ? 6 : fmt == WFMT_Q5_1 ? 8 : 2;
		__m256i v = bcast16(p + qs);
		w->lo = _mm256_and_si256(v, m15);
		w->hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m15);
		if (fmt == WFMT_Q5_0 || fmt == WFMT_Q5_1) {
			uint32_t qh;
			memcpy(&qh, p + (fmt == WFMT_Q5_0 ? 2 : 4), 4);
			w->lo = q5_ucodes(w->lo, (qh & 0xffff) * 0x10001u);
			w->hi = q5_ucodes(w->hi, (qh >> 16) * 0x10001u);
		}
		if (fmt == WFMT_IQ4_NL || fmt == WFMT_MXFP4) {
			__m256i lut = lut16(fmt == WFMT_IQ4_NL ? iq4nl_lut : mxfp4_lut);
			w->slo = _mm256_shuffle_epi8(lut, w->lo);
			w->shi = _mm256_shuffle_epi8(lut, w->hi);
		}
	}
	if (q32_signed(fmt)) {
		w->lo = _mm256_abs_epi8(w->slo);
		w->hi = _mm256_abs_epi8(w->shi);
	}
}

/* RM rows (RM <= Q32_RM) from w, T tokens (P = (T + 1) / 2 pairs) from t0: y[t * ldy + r] */
AI void q32_tile(int fmt, size_t bb, int RM, int P, const uint8_t *w, size_t rb, const struct cpu_xq *xq, int t0,
		 int T, float *y, int64_t ldy)
{
	enum { P_MAX = (QDOT_MAX_T + 1) / 2 };
	int K = xq->K, nb = K / 32, off = q32_off(fmt);
	bool with_min = fmt == WFMT_Q4_1 || fmt == WFMT_Q5_1;
	__m256 acc[Q32_RM][P_MAX];
	for (int r = 0; r < Q32_RM; r++)
		for (int q = 0; q < P_MAX; q++)
			acc[r][q] = _mm256_setzero_ps();
	for (int b = 0; b < nb; b++) {
		struct q32_w wr[Q32_RM];
		UNROLL for (int r = 0; r < RM; r++)
			q32_unpack(fmt, w + (size_t)r * rb + (size_t)b * bb, &wr[r]);
		UNROLL for (int q = 0; q < P; q++) {
			/* an odd T's last pair: lanes 4..7 hold whatever the row after it holds, never read out */
			const uint8_t *e = xq->pair + ((size_t)(t0 / 2 + q) * (size_t)nb + (size_t)b) * CPU_XQ_PAIR_BYTES;
			__m256i alo = _mm256_loadu_si256((const __m256i *)e), ahi = _mm256_loadu_si256((const __m256i *)(e + 32));
			__m256 dx = _mm256_loadu_ps((const float *)(e + 64));
			__m256i negs = _mm256_loadu_si256((const __m256i *)(e + 96));
			__m256i start = off == 8 ? _mm256_slli_epi32(negs, 3) : off == 16 ? _mm256_slli_epi32(negs, 4)
											  : _mm256_setzero_si256();
			UNROLL for (int r = 0; r < RM; r++) {
				__m256i i;
				if (q32_signed(fmt))
					i = dot_u8s8(dot_u8s8(start, wr[r].lo, _mm256_sign_epi8(alo, wr[r].slo)), wr[r].hi,
						     _mm256_sign_epi8(ahi, wr[r].shi));
				else
					i = dot_u8s8(dot_u8s8(start, wr[r].lo, alo), wr[r].hi, ahi);
				acc[r][q] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(wr[r].d, dx), acc[r][q]);
				if (with_min)
					acc[r][q] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(negs), _mm256_mul_ps(wr[r].m, dx),
								     acc[r][q]);
			}
		}
	}
	for (int r = 0; r < RM; r++)
		for (int q = 0; q < P; q++) {
			__m128 lo = _mm256_castps256_ps128(acc[r][q]), hi = _mm256_extractf128_ps(acc[r][q], 1);
			lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
			hi = _mm_add_ps(hi, _mm_movehl_ps(hi, hi));
			y[(size_t)(2 * q) * (size_t)ldy + (size_t)r] = _mm_cvtss_f32(_mm_add_ss(lo, _mm_movehdup_ps(lo)));
			if (2 * q + 1 < T)
				y[(size_t)(2 * q + 1) * (size_t)ldy + (size_t)r] = _mm_cvtss_f32(_mm_add_ss(hi, _mm_movehdup_ps(hi)));
		}
}

/* rows rows of a tiled format, T in 2..QDOT_MAX_T: Q32_RM at a time, then the rest; the switches give each
 * (rows, pairs) its own unrolled copy */
AI void q32_rows_p(int fmt, size_t bb, int P, const uint8_t *p, size_t rb, int rows, const struct cpu_xq *xq, int t0,
		   int T, float *y, int64_t ldy)
{
	int r = 0;
	for (; r + Q32_RM <= rows; r += Q32_RM, p += Q32_RM * rb)
		q32_tile(fmt, bb, Q32_RM, P, p, rb, xq, t0, T, y + r, ldy);
	switch (rows - r) {
	case 3: q32_tile(fmt, bb, 3, P, p, rb, xq, t0, T, y + r, ldy); break;
	case 2: q32_tile(fmt, bb, 2, P, p, rb, xq, t0, T, y + r, ldy); break;
	case 1: q32_tile(fmt, bb, 1, P, p, rb, xq, t0, T, y + r, ldy); break;
	default: break;
	}
}

AI void q32_rows(int fmt, size_t bb, const void *w, size_t rb, int rows, const struct cpu_xq *xq, int t0, int T,
		 float *y, int64_t ldy)
{
	_Static_assert(QDOT_MAX_T <= 8, "q32_rows: at most 4 pairs");
	switch ((T + 1) / 2) {
	case 1: q32_rows_p(fmt, bb, 1, w, rb, rows, xq, t0, T, y, ldy); break;
	case 2: q32_rows_p(fmt, bb, 2, w, rb, rows, xq, t0, T, y, ldy); break;
	case 3: q32_rows_p(fmt, bb, 3, w, rb, rows, xq, t0, T, y, ldy); break;
	default: q32_rows_p(fmt, bb, 4, w, rb, rows, xq, t0, T, y, ldy); break;
	}
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

/* Chunk c of a Q4_K/Q5_K block: the codes of sub-blocks 2c (lo) and 2c + 1 (hi) from the 32 bytes qs + 32c, Q5_K's
 * high bits from *hb (then shifted on for the next chunk) */
AI void k45_chunk(bool q5, const uint8_t *qs, int c, __m256i *hb, __m256i *lo, __m256i *hi)
{
	const __m256i m15 = _mm256_set1_epi8(15), m1 = _mm256_set1_epi8(1);
	__m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
	*lo = _mm256_and_si256(v, m15);
	*hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m15);
	if (q5) {
		*lo = _mm256_or_si256(*lo, _mm256_slli_epi16(_mm256_and_si256(*hb, m1), 4));
		*hi = _mm256_or_si256(*hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(*hb, 1), m1), 4));
		*hb = _mm256_srli_epi16(*hb, 2);
	}
}

/* Q4_K and Q5_K: blocks {d, dmin, scales[12], (Q5_K: qh[32]), qs[128]}. A chunk c of 64 values is the low
 * nibbles of qs[32c..32c+31] (sub-block 2c) then their high nibbles (2c + 1), against 64 contiguous codes. */
AI void k45_dot(bool q5, const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	size_t bb = q5 ? sizeof(struct block_q5_K) : sizeof(struct block_q4_K);
	int K = xq->K, nsb = K / QK_K;
	__m256 acc[2 * QK_SUB_T]; /* token t: 2t scales, 2t + 1 mins */
	for (int i = 0; i < 2 * QK_SUB_T; i++)
		acc[i] = _mm256_setzero_ps();
	for (int i = 0; i < nsb; i++) {
		const uint8_t *p = (const uint8_t *)w + (size_t)i * bb, *qs = p + (q5 ? 48 : 16);
		__m128i sm = k_scales_vec(p + 4);
		__m256i mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm)); /* m_j for both 16-halves of j */
		__m256i isum[2 * QK_SUB_T];
		__m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm)); /* 8 x int16 scales, twice */
		__m256i hb = q5 ? _mm256_loadu_si256((const __m256i *)(p + 16)) : _mm256_setzero_si256();
		UNROLL for (int c = 0; c < 4; c++) {
			__m256i lo, hi;
			k45_chunk(q5, qs, c, &hb, &lo, &hi);
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
	__m256 acc[QK_SUB_T];
	for (int t = 0; t < QK_SUB_T; t++)
		acc[t] = _mm256_setzero_ps();
	for (int i = 0; i < nsb; i++) {
		const struct block_q6_K *b = (const struct block_q6_K *)w + i;
		__m256i scw = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
		int32_t scp[8]; /* scale pairs (sc[2G], sc[2G + 1]) as int16 */
		_mm256_storeu_si256((__m256i *)scp, scw);
		__m256i isum[2 * QK_SUB_T];
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

/* The other 256-blocks (Q2_K, Q3_K, IQ4_XS, TQ1_0, TQ2_0) unpack into 8 vectors of 32 codes w (value 32g + l
 * in byte l of w[g]) and 16 int16 sub-scales (one per 16 values, in order); k256_codes adds them up per token,
 * k256_finish converts the block: I = chains - off sum_g sc_g S_g (the codes were stored as q + off), and the
 * Q2_K mins M = sum_g m_g S_g. Codes are unsigned (< 128) unless sgn, then signed (|q| <= 127). */
static const int8_t pair_bcast_idx[32] = {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
					  2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3};

AI void k256_codes(const __m256i *w, bool sgn, __m256i sc16, const struct cpu_xq *xq, int t0, int T, int i,
		   __m256i *isum)
{
	int32_t scp[8]; /* scale pairs (sc[2g], sc[2g + 1]) as int16 */
	_mm256_storeu_si256((__m256i *)scp, sc16);
	const __m256i pair_bcast = _mm256_loadu_si256((const __m256i *)pair_bcast_idx);
	UNROLL for (int g = 0; g < 8; g++) {
		/* sc[2g] in the int16 lanes of values 0..15, sc[2g + 1] in those of 16..31 */
		__m256i sg = _mm256_shuffle_epi8(_mm256_set1_epi32(scp[g]), pair_bcast);
		__m256i u = sgn ? _mm256_abs_epi8(w[g]) : w[g];
		UNROLL for (int t = 0; t < T; t++) {
			__m256i a = _mm256_loadu_si256((const __m256i *)xq_codes(xq, t0 + t, QK_K * i + 32 * g));
			__m256i p16 = _mm256_maddubs_epi16(u, sgn ? _mm256_sign_epi8(a, w[g]) : a);
			isum[CH(t, g)] = g < NCH ? _mm256_madd_epi16(p16, sg) : dot_i16(isum[CH(t, g)], p16, sg);
		}
	}
}

/* acc: token t's scale part in acc[2t], its min part in acc[2t + 1]; out = acc[2t] - acc[2t + 1] */
AI void k256_finish(const __m256i *isum, __m256i sc16, int off, const __m256i *mins16, float d, float dmin,
		    const struct cpu_xq *xq, int t0, int T, int i, __m256 *acc)
{
	int K = xq->K, nsb = K / QK_K;
	UNROLL for (int t = 0; t < T; t++) {
		size_t row = (size_t)(t0 + t);
		float dx = xq->d[row * (size_t)nsb + (size_t)i];
		__m256i I = isum_total(isum, T, t);
		__m256i s16 = _mm256_loadu_si256((const __m256i *)(xq->s + row * (size_t)(K / 16) + 16 * (size_t)i));
		if (off)
			I = _mm256_sub_epi32(I, _mm256_mullo_epi32(_mm256_madd_epi16(s16, sc16), _mm256_set1_epi32(off)));
		acc[2 * t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(I), _mm256_set1_ps(d * dx), acc[2 * t]);
		if (mins16)
			acc[2 * t + 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(s16, *mins16)),
							 _mm256_set1_ps(dmin * dx), acc[2 * t + 1]);
	}
}

/* 2-bit fields j = 0..3 of 64 bytes: w[4n + j] = (qs[32n + l] >> 2j) & 3 (Q2_K, Q3_K's low bits, TQ2_0) */
AI void crumbs(const uint8_t *qs, __m256i *w)
{
	const __m256i m3 = _mm256_set1_epi8(3);
	UNROLL for (int n = 0; n < 2; n++) {
		__m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * n));
		w[4 * n] = _mm256_and_si256(v, m3);
		w[4 * n + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 2), m3);
		w[4 * n + 2] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m3);
		w[4 * n + 3] = _mm256_and_si256(_mm256_srli_epi16(v, 6), m3);
	}
}

/* TQ1_0's digits ((uint8_t)(b p) * 3) >> 8 of every byte of v, p per int16 lane (both bytes of a lane) */
AI __m256i tq1_digits(__m256i v, __m256i p)
{
	const __m256i ff = _mm256_set1_epi16(255), three = _mm256_set1_epi16(3);
	__m256i lo = _mm256_and_si256(_mm256_mullo_epi16(v, p), ff);
	__m256i hi = _mm256_and_si256(_mm256_mullo_epi16(_mm256_srli_epi16(v, 8), p), ff);
	lo = _mm256_srli_epi16(_mm256_mullo_epi16(lo, three), 8);
	hi = _mm256_srli_epi16(_mm256_mullo_epi16(hi, three), 8);
	return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 8));
}

/* Q3_K's 16 6-bit scales minus 32 as int16 (q3k_scale): low nibbles of bytes 0..7 then their high nibbles, with
 * 2 bits of byte 8 + j % 4 at 2 (j / 4) on top */
AI __m256i q3k_scales_vec(const uint8_t *s)
{
	uint8_t t[16] = {0};
	memcpy(t, s, 12); /* not a 16-byte load: the last block of a row may end 2 bytes after its scales */
	__m128i v = _mm_loadu_si128((const __m128i *)t), m15 = _mm_set1_epi8(15);
	__m128i lo = _mm_unpacklo_epi64(_mm_and_si128(v, m15), _mm_and_si128(_mm_srli_epi16(v, 4), m15));
	__m128i h = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 2, 2, 2)), _mm_setr_epi32(0, 2, 4, 6));
	__m128i s6 = _mm_or_si128(lo, _mm_slli_epi16(_mm_and_si128(h, _mm_set1_epi8(3)), 4));
	return _mm256_sub_epi16(_mm256_cvtepu8_epi16(s6), _mm256_set1_epi16(32));
}

/* IQ4_XS's 8 6-bit scales minus 32 (iq4xs_scale), each twice as int16 (its two 16-value halves): sub-block b
 * in 32-bit lane b */
AI __m256i iq4xs_scales_vec(uint16_t scales_h, const uint8_t *scales_l)
{
	uint32_t sl;
	memcpy(&sl, scales_l, 4);
	__m256i lo = _mm256_srlv_epi32(_mm256_set1_epi32((int)sl), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
	__m256i hi = _mm256_srlv_epi32(_mm256_set1_epi32(scales_h), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14));
	__m256i ls = _mm256_or_si256(_mm256_and_si256(lo, _mm256_set1_epi32(15)),
				     _mm256_slli_epi32(_mm256_and_si256(hi, _mm256_set1_epi32(3)), 4));
	ls = _mm256_sub_epi32(ls, _mm256_set1_epi32(32));
	return _mm256_or_si256(_mm256_and_si256(ls, _mm256_set1_epi32(0xffff)), _mm256_slli_epi32(ls, 16));
}

/* One block of fmt as codes wv[8] (stored as q + off, off from k256_off), scales, mins (Q2_K), d, dmin */
AI void k256_unpack(int fmt, const uint8_t *p, __m256i *wv, __m256i *sc16, __m256i *mins16, float *d, float *dmin)
{
	*dmin = 0;
	if (fmt == WFMT_Q2_K) {
		const struct block_q2_K *b = (const struct block_q2_K *)p;
		crumbs(b->qs, wv);
		__m256i s = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
		*sc16 = _mm256_and_si256(s, _mm256_set1_epi16(15));
		*mins16 = _mm256_srli_epi16(s, 4);
		*d = ld_f16(&b->d);
		*dmin = ld_f16(&b->dmin);
	} else if (fmt == WFMT_Q3_K) {
		const struct block_q3_K *b = (const struct block_q3_K *)p;
		crumbs(b->qs, wv);
		__m256i hm = _mm256_loadu_si256((const __m256i *)b->hmask);
		const __m256i m1 = _mm256_set1_epi8(1);
		UNROLL for (int g = 0; g < 8; g++) /* q + 4 = low | hbit << 2 */
			wv[g] = _mm256_or_si256(wv[g], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, g), m1), 2));
		*sc16 = q3k_scales_vec(b->scales);
		*d = ld_f16(&b->d);
	} else if (fmt == WFMT_IQ4_XS) {
		const struct block_iq4_xs *b = (const struct block_iq4_xs *)p;
		const __m256i lut = lut16(iq4nl_lut);
		UNROLL for (int g = 0; g < 8; g++)
			wv[g] = _mm256_shuffle_epi8(lut, nibbles32(b->qs + 16 * g));
		*sc16 = iq4xs_scales_vec(b->scales_h, b->scales_l);
		*d = ld_f16(&b->d);
	} else if (fmt == WFMT_TQ1_0) {
		/* values 0..159: digit g of qs[0..31]; 160..239: digits 0..4 of qs[32..47], 16 values each;
		 * 240..255: digit n of qh[j] at 240 + 4n + j */
		const struct block_tq1_0 *b = (const struct block_tq1_0 *)p;
		__m256i v = _mm256_loadu_si256((const __m256i *)b->qs);
		UNROLL for (int g = 0, p3 = 1; g < 5; g++, p3 *= 3)
			wv[g] = tq1_digits(v, _mm256_set1_epi16((short)p3));
		__m128i q16 = _mm_loadu_si128((const __m128i *)(b->qs + 32));
		uint32_t qh;
		memcpy(&qh, b->qh, 4);
		__m256i q2 = _mm256_broadcastsi128_si256(q16);
		wv[5] = tq1_digits(q2, _mm256_setr_m128i(_mm_set1_epi16(1), _mm_set1_epi16(3)));
		wv[6] = tq1_digits(q2, _mm256_setr_m128i(_mm_set1_epi16(9), _mm_set1_epi16(27)));
		wv[7] = tq1_digits(_mm256_setr_m128i(q16, _mm_set1_epi32((int)qh)),
				   _mm256_setr_m128i(_mm_set1_epi16(81), _mm_setr_epi16(1, 1, 3, 3, 9, 9, 27, 27)));
		*sc16 = _mm256_set1_epi16(1);
		*d = ld_f16(&b->d);
	} else { /* TQ2_0 */
		const struct block_tq2_0 *b = (const struct block_tq2_0 *)p;
		crumbs(b->qs, wv);
		*sc16 = _mm256_set1_epi16(1);
		*d = ld_f16(&b->d);
	}
}

/* The offset k256_unpack's codes carry: Q3_K 4, the ternary formats 1 */
#define K256_OFF(fmt) ((fmt) == WFMT_Q3_K ? 4 : (fmt) == WFMT_TQ1_0 || (fmt) == WFMT_TQ2_0 ? 1 : 0)

AI void k256_dot(int fmt, size_t bb, const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	int nsb = xq->K / QK_K;
	__m256 acc[2 * QK_SUB_T];
	for (int i = 0; i < 2 * QK_SUB_T; i++)
		acc[i] = _mm256_setzero_ps();
	for (int i = 0; i < nsb; i++) {
		__m256i wv[8], sc16, mins16 = _mm256_setzero_si256(), isum[2 * QK_SUB_T];
		float d, dmin;
		k256_unpack(fmt, (const uint8_t *)w + (size_t)i * bb, wv, &sc16, &mins16, &d, &dmin);
		k256_codes(wv, fmt == WFMT_IQ4_XS, sc16, xq, t0, T, i, isum);
		k256_finish(isum, sc16, K256_OFF(fmt), fmt == WFMT_Q2_K ? &mins16 : NULL, d, dmin, xq, t0, T, i, acc);
	}
	for (int t = 0; t < T; t++)
		out[t] = hsum(acc[2 * t]) - hsum(acc[2 * t + 1]);
}

AI void qk_q2_k(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	k256_dot(WFMT_Q2_K, sizeof(struct block_q2_K), w, xq, t0, T, out);
}

AI void qk_q3_k(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	k256_dot(WFMT_Q3_K, sizeof(struct block_q3_K), w, xq, t0, T, out);
}

AI void qk_iq4_xs(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	k256_dot(WFMT_IQ4_XS, sizeof(struct block_iq4_xs), w, xq, t0, T, out);
}

AI void qk_tq1_0(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	k256_dot(WFMT_TQ1_0, sizeof(struct block_tq1_0), w, xq, t0, T, out);
}

AI void qk_tq2_0(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	k256_dot(WFMT_TQ2_0, sizeof(struct block_tq2_0), w, xq, t0, T, out);
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
	__m256 acc[2 * QK_SUB_T];
	for (int i = 0; i < 2 * QK_SUB_T; i++)
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

static const float nf4_lut[16] = NF4_VALUES, bnb_fp4_lut[16] = BNB_FP4_VALUES;

/* NF4 table lookup of 8 codes (bytes of c8): two 8-float permutes blended on bit 3 */
AI __m256 nf4_8(__m128i c8, __m256 lo, __m256 hi)
{
	__m256i idx = _mm256_cvtepu8_epi32(c8);
	return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx),
				_mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7))));
}

/* NF4 and BNB_FP4 (table lut): each 64-block's 32 bytes split into high and low nibbles and interleaved (code
 * 2i high, 2i + 1 low), looked up 8 at a time, times d in f32 (the weights bit-identical with cpu_dequant_nf4),
 * then dotted like the element formats */
AI void fk_table4(const float *lut, const void *w, const float *x, int64_t ldx, int T, int K, float *out)
{
	__m256 acc[2 * QDOT_MAX_T];
	for (int i = 0; i < 2 * QDOT_MAX_T; i++)
		acc[i] = _mm256_setzero_ps();
	const __m256 lo = _mm256_loadu_ps(lut), hi = _mm256_loadu_ps(lut + 8);
	const __m128i m15 = _mm_set1_epi8(15);
	for (int b = 0; b < K / 64; b++) {
		const uint8_t *p = (const uint8_t *)w + sizeof(struct block_nf4) * (size_t)b;
		float d;
		memcpy(&d, p, 4);
		__m256 dv = _mm256_set1_ps(d);
		__m128i c[4]; /* codes 0..15, 16..31, 32..47, 48..63 as bytes */
		for (int h = 0; h < 2; h++) {
			__m128i v = _mm_loadu_si128((const __m128i *)(p + 4 + 16 * h));
			__m128i vh = _mm_and_si128(_mm_srli_epi16(v, 4), m15), vl = _mm_and_si128(v, m15);
			c[2 * h] = _mm_unpacklo_epi8(vh, vl);
			c[2 * h + 1] = _mm_unpackhi_epi8(vh, vl);
		}
		UNROLL for (int j = 0; j < 8; j++) {
			__m128i c8 = j % 2 ? _mm_srli_si128(c[j / 2], 8) : c[j / 2];
			__m256 wv = _mm256_mul_ps(nf4_8(c8, lo, hi), dv);
			UNROLL for (int t = 0; t < T; t++) {
				const float *xt = x + (size_t)t * (size_t)ldx + 64 * b + 8 * j;
				acc[CH(t, j)] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xt), acc[CH(t, j)]);
			}
		}
	}
	finish(acc, T, out);
}

AI void fk_nf4(const void *w, const float *x, int64_t ldx, int T, int K, float *out)
{
	fk_table4(nf4_lut, w, x, ldx, T, K, out);
}

AI void fk_bnb_fp4(const void *w, const float *x, int64_t ldx, int T, int K, float *out)
{
	fk_table4(bnb_fp4_lut, w, x, ldx, T, K, out);
}

#include "kernels/cpu/qdot_iq_simd.h"
#include "kernels/cpu/qdot_ktile_simd.h"

/* One function per format, over rows, in groups of QK_SUB_T tokens (the tiled formats: all T at once); the
 * switch gives each group size its own unrolled copy. */
#define SIMD_ROWS(T, call)                                                                                \
	for (int r = 0; r < rows; r++, wr = (const char *)wr + rb) {                                      \
		float out[QK_SUB_T];                                                                      \
		call;                                                                                     \
		for (int t = 0; t < (T); t++)                                                             \
			yg[t * ldy + r] = out[t];                                                         \
	}
#define SIMD_GROUPS(k1, k2, k3, k4)                                                                       \
	for (int g = 0; g < T; g += QK_SUB_T) {                                                           \
		const void *wr = w;                                                                       \
		float *yg = y + g * ldy;                                                                  \
		switch (T - g < QK_SUB_T ? T - g : QK_SUB_T) {                                            \
		case 1: SIMD_ROWS(1, k1) break;                                                           \
		case 2: SIMD_ROWS(2, k2) break;                                                           \
		case 3: SIMD_ROWS(3, k3) break;                                                           \
		default: SIMD_ROWS(4, k4) break;                                                          \
		}                                                                                         \
	}
#define SIMD_QDOT(id, k)                                                                                  \
	static void qdot_##k(const void *w, size_t rb, int rows, const struct cpu_xq *xq, int t0, int T,  \
			     float *y, int64_t ldy)                                                       \
	{                                                                                                 \
		if (q32_tiled(WFMT_##id) && T >= 2 && t0 % 2 == 0 && xq->pair) {                          \
			q32_rows(WFMT_##id, WFMT_BYTES_##id, w, rb, rows, xq, t0, T, y, ldy);             \
			return;                                                                           \
		}                                                                                         \
		SIMD_GROUPS(qk_##k(wr, xq, t0 + g, 1, out), qk_##k(wr, xq, t0 + g, 2, out),               \
			    qk_##k(wr, xq, t0 + g, 3, out), qk_##k(wr, xq, t0 + g, 4, out))               \
	}
#define SIMD_FDOT(k)                                                                                      \
	static void fdot_##k(const void *w, size_t rb, int rows, const float *x, int64_t ldx, int T, int K, \
			     float *y, int64_t ldy)                                                       \
	{                                                                                                 \
		SIMD_GROUPS(fk_##k(wr, x + g * ldx, ldx, 1, K, out), fk_##k(wr, x + g * ldx, ldx, 2, K, out), \
			    fk_##k(wr, x + g * ldx, ldx, 3, K, out), fk_##k(wr, x + g * ldx, ldx, 4, K, out)) \
	}
#define SIMD_DEF(id, code, block, bytes, ggml, kind, k) WFMT_QDOT_##kind(SIMD_QDOT(id, k), ) WFMT_FDOT_##kind(SIMD_FDOT(k), )
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
