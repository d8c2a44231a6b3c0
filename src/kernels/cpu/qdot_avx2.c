/*
 * qdot_avx2.c: the fused dot of a quantized weight row with up to QDOT_MAX_T f32 activation rows, in
 * AVX2/FMA registers (contract in qdot.h). Each 32-value group of quants is unpacked to 32 signed bytes,
 * widened to four vectors of 8 floats and multiplied with x by FMA; the group's f32 partial sums (two,
 * one per 16 values) are then scaled by the block or sub-block scale (d, d*sc of Q4_K/Q5_K, d*sc of
 * Q6_K: the same f32 products the dequantization forms) and accumulated. Q4_K/Q5_K subtract their mins
 * as dmin*m * sum(x) from the per-32 sums of x. f16 scales are widened by F16C, which is exact.
 *
 * Decode reads each weight once, so the kernels are written to keep up with memory: one unpack per
 * weight vector shared by all T tokens, and two independent accumulators when T = 1.
 * Built only with AVX2, FMA and F16C and without FERRY_NO_SIMD; cpu_qdot_find_avx2 returns NULL otherwise.
 */
#include <stddef.h>

#include "kernels/cpu/qdot.h"
#include "layout/quant.h"
#include "layout/wfmt.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && !defined(FERRY_NO_SIMD)
#include <immintrin.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))
/* T = 1: two chains (h = 0, 1) to hide the FMA latency; T > 1: one per token */
#define ACC(t, h) acc[T == 1 ? (h) : (t)]

struct f32x32 {
	__m256 v[4];
};

static float half_to_f32(uint16_t h)
{
	return _cvtsh_ss(h);
}

AI struct f32x32 widen32(__m256i q)
{
	__m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
	struct f32x32 f;
	f.v[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
	f.v[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(lo, lo)));
	f.v[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
	f.v[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(hi, hi)));
	return f;
}

/* sum of f[2h..2h+1] * x[16h..16h+15] */
AI __m256 dot16(const struct f32x32 *f, int h, const float *x)
{
	__m256 s = _mm256_mul_ps(f->v[2 * h], _mm256_loadu_ps(x + 16 * h));
	return _mm256_fmadd_ps(f->v[2 * h + 1], _mm256_loadu_ps(x + 16 * h + 8), s);
}

/* acc(t) += dot(q, x_t[0..31]) with scale s0 on the first 16 values and s1 on the last 16 */
AI void group32(__m256 *acc, int T, __m256i q, const float *x, int64_t ldx, __m256 s0, __m256 s1)
{
	struct f32x32 f = widen32(q);
	for (int t = 0; t < T; t++) {
		const float *xt = x + (size_t)t * (size_t)ldx;
		ACC(t, 0) = _mm256_fmadd_ps(dot16(&f, 0, xt), s0, ACC(t, 0));
		ACC(t, 1) = _mm256_fmadd_ps(dot16(&f, 1, xt), s1, ACC(t, 1));
	}
}

AI float hsum(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

AI void finish(const __m256 *acc, int T, const float *mins, float *out)
{
	if (T == 1) {
		out[0] = hsum(_mm256_add_ps(acc[0], acc[1])) - mins[0];
		return;
	}
	for (int t = 0; t < T; t++)
		out[t] = hsum(acc[t]) - mins[t];
}

/* 32 bits -> 32 bytes, 0xff where the bit is set (byte j from bit j) */
AI __m256i bits_to_bytes(uint32_t bits)
{
	const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
	__m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
	b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
	return _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1));
}

/* 16 bytes of packed nibbles -> 32 bytes: low nibbles (values 0..15), then high nibbles (16..31) */
AI __m256i nibbles32(const uint8_t *qs)
{
	__m128i v = _mm_loadu_si128((const __m128i *)qs), m = _mm_set1_epi8(15);
	return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

/* The 32-value formats (Q8_0, Q4_0, Q5_0): a block's quants as 32 signed bytes */
AI __m256i q32_unpack(int fmt, const uint8_t *blk)
{
	if (fmt == WFMT_Q8_0)
		return _mm256_loadu_si256((const __m256i *)(blk + 2));
	if (fmt == WFMT_Q4_0)
		return _mm256_sub_epi8(nibbles32(blk + 2), _mm256_set1_epi8(8));
	uint32_t qh;
	memcpy(&qh, blk + 2, 4);
	__m256i hi = _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(16));
	return _mm256_sub_epi8(_mm256_or_si256(nibbles32(blk + 6), hi), _mm256_set1_epi8(16));
}

AI void q32_t(int fmt, const void *w, const float *x, int64_t ldx, int T, int K, float *out)
{
	const uint8_t *p = w;
	size_t bb = fmt == WFMT_Q8_0 ? sizeof(struct block_q8_0)
		  : fmt == WFMT_Q4_0 ? sizeof(struct block_q4_0)
				     : sizeof(struct block_q5_0);
	__m256 acc[QDOT_MAX_T] = {0};
	float mins[QDOT_MAX_T] = {0};
	for (int i = 0; i < K / QK; i++, p += bb) {
		uint16_t dh;
		memcpy(&dh, p, 2);
		__m256 d = _mm256_set1_ps(half_to_f32(dh));
		group32(acc, T, q32_unpack(fmt, p), x + (size_t)i * QK, ldx, d, d);
	}
	finish(acc, T, mins, out);
}

/* The kernels of the formats, qdot_avx2_<k> (src/layout/wfmt_list.h), with one signature; T is a constant in
 * each copy the dispatch below makes. */
#define QDOT_AVX2_ARGS const void *w, const float *x, int64_t ldx, const float *xs, int T, int K, float *out

AI void qdot_avx2_q8_0(QDOT_AVX2_ARGS)
{
	(void)xs;
	q32_t(WFMT_Q8_0, w, x, ldx, T, K, out);
}

AI void qdot_avx2_q4_0(QDOT_AVX2_ARGS)
{
	(void)xs;
	q32_t(WFMT_Q4_0, w, x, ldx, T, K, out);
}

AI void qdot_avx2_q5_0(QDOT_AVX2_ARGS)
{
	(void)xs;
	q32_t(WFMT_Q5_0, w, x, ldx, T, K, out);
}

/* Q4_K and Q5_K (qh NULL for Q4_K): scales d*sc in registers, mins dmin*m against the sums of x */
AI void k45_block(__m256 *acc, float *mins, int T, const uint8_t *scales, const uint8_t *qs, const uint8_t *qh,
		  uint16_t dh, uint16_t mh, const float *x, int64_t ldx, const float *xs, int nsub)
{
	float d = half_to_f32(dh), dmin = half_to_f32(mh);
	__m256i qhv = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
	for (int c = 0; c < 4; c++) {
		__m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * c)), m15 = _mm256_set1_epi8(15);
		__m256i q[2] = {_mm256_and_si256(v, m15), _mm256_and_si256(_mm256_srli_epi16(v, 4), m15)};
		for (int h = 0; h < 2; h++) {
			int j = 2 * c + h;
			uint8_t sc, m;
			k_scale_min(j, scales, &sc, &m);
			if (qh) {
				__m256i bit = _mm256_set1_epi8((char)(1 << j));
				__m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(qhv, bit), bit);
				q[h] = _mm256_or_si256(q[h], _mm256_and_si256(set, _mm256_set1_epi8(16)));
			}
			__m256 s = _mm256_set1_ps(d * (float)sc);
			group32(acc, T, q[h], x + 32 * j, ldx, s, s);
			float m1 = dmin * (float)m;
			for (int t = 0; t < T; t++)
				mins[t] += m1 * xs[(size_t)t * (size_t)nsub + (size_t)j];
		}
	}
}

AI void qdot_avx2_q4_k(QDOT_AVX2_ARGS)
{
	const struct block_q4_K *b = w;
	__m256 acc[QDOT_MAX_T] = {0};
	float mins[QDOT_MAX_T] = {0};
	for (int i = 0; i < K / QK_K; i++)
		k45_block(acc, mins, T, b[i].scales, b[i].qs, NULL, b[i].d, b[i].dmin, x + (size_t)i * QK_K, ldx,
			  xs + (size_t)i * 8, K / QK);
	finish(acc, T, mins, out);
}

AI void qdot_avx2_q5_k(QDOT_AVX2_ARGS)
{
	const struct block_q5_K *b = w;
	__m256 acc[QDOT_MAX_T] = {0};
	float mins[QDOT_MAX_T] = {0};
	for (int i = 0; i < K / QK_K; i++)
		k45_block(acc, mins, T, b[i].scales, b[i].qs, b[i].qh, b[i].d, b[i].dmin, x + (size_t)i * QK_K, ldx,
			  xs + (size_t)i * 8, K / QK);
	finish(acc, T, mins, out);
}

AI void qdot_avx2_q6_k(QDOT_AVX2_ARGS)
{
	(void)xs;
	const struct block_q6_K *b = w;
	__m256 acc[QDOT_MAX_T] = {0};
	float mins[QDOT_MAX_T] = {0};
	const __m256i m15 = _mm256_set1_epi8(15), m48 = _mm256_set1_epi8(48), m32 = _mm256_set1_epi8(32);
	for (int i = 0; i < K / QK_K; i++) {
		float d = half_to_f32(b[i].d), ds[16];
		for (int j = 0; j < 16; j++)
			ds[j] = d * (float)b[i].scales[j];
		const uint8_t *ql = b[i].ql, *qh = b[i].qh;
		for (int half = 0; half < 2; half++, ql += 64, qh += 32) {
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
			for (int g = 0; g < 4; g++) {
				const float *s = ds + 8 * half + 2 * g;
				group32(acc, T, _mm256_sub_epi8(q[g], m32), x + (size_t)i * QK_K + 128 * half + 32 * g, ldx,
					_mm256_broadcast_ss(s), _mm256_broadcast_ss(s + 1));
			}
		}
	}
	finish(acc, T, mins, out);
}

/* qdot_<k>, one function per format with a fused dot; the switch gives each T its own unrolled copy. */
#define QDOT_AVX2(k)                                                                                            \
	static void qdot_##k(QDOT_AVX2_ARGS)                                                                    \
	{                                                                                                       \
		switch (T) {                                                                                    \
		case 1:                                                                                         \
			qdot_avx2_##k(w, x, ldx, xs, 1, K, out);                                                \
			break;                                                                                  \
		case 2:                                                                                         \
			qdot_avx2_##k(w, x, ldx, xs, 2, K, out);                                                \
			break;                                                                                  \
		case 3:                                                                                         \
			qdot_avx2_##k(w, x, ldx, xs, 3, K, out);                                                \
			break;                                                                                  \
		default:                                                                                        \
			qdot_avx2_##k(w, x, ldx, xs, 4, K, out);                                                \
			break;                                                                                  \
		}                                                                                               \
	}
#define QDOT_DEF(id, code, block, bytes, ggml, kind, k) WFMT_QDOT_##kind(QDOT_AVX2(k), )
WFMT_LIST(QDOT_DEF)
#undef QDOT_DEF

cpu_qdot_fn cpu_qdot_find_avx2(int fmt)
{
#define QDOT_ROW(id, code, block, bytes, ggml, kind, k) WFMT_QDOT_##kind(qdot_##k, NULL),
	static const cpu_qdot_fn by_fmt[WFMT_COUNT] = {WFMT_LIST(QDOT_ROW)};
#undef QDOT_ROW
	return fmt >= 0 && fmt < WFMT_COUNT ? by_fmt[fmt] : NULL;
}

#else

cpu_qdot_fn cpu_qdot_find_avx2(int fmt)
{
	(void)fmt;
	return NULL;
}

#endif
