/*
 * qdot_iq_simd.h: qk_<k> of the grid IQ formats (blocks: src/layout/quant_iq.h), included by qdot_simd.h
 * (whose helpers it uses) and so built for AVX2 and AVX-512 VNNI alike. One kernel, iq_dot, over a decoder
 * per format that turns a 32-group of a block into magnitudes u (unsigned bytes: the grid entries, gathered
 * 8 or 4 values at a time) and signs s (bytes +-1), with the group's two sub-scales; the products are
 * maddubs(u, sign(a, s)) (|u| <= 62, |a| <= 127: never saturates) times the sub-scale of each 16 (madd or
 * vpdpwssd) in int32 lanes for a whole 256-block, converted once and scaled by f32(d dx) as qdot.h says.
 * IQ1_S/IQ1_M codes 8 grid +- 1 are formed in bytes (|c| <= 9) and split into |c| and sign(c) (never 0).
 */
#include "layout/iq_grids.h"

/* 32 sign bits (bit i set: value i negative) -> 32 bytes of +1 / -1 */
AI __m256i iq_signs(uint32_t bits)
{
#ifdef __AVX512BW__
	return _mm256_mask_blend_epi8(_cvtu32_mask32(bits), _mm256_set1_epi8(1), _mm256_set1_epi8(-1));
#else
	const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
	const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
	__m256i b = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf), bit);
	return _mm256_or_si256(_mm256_cmpeq_epi8(b, bit), _mm256_set1_epi8(1));
#endif
}

AI uint32_t iq_rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

AI uint32_t iq_rd16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return v;
}

/* the 8-bit signs of 4 groups of 8 from their 7-bit sign indices (bits 7l.. of aux) */
AI uint32_t iq_ksigns4(uint32_t aux)
{
	return (uint32_t)ksigns_iq2xs[aux & 127] | (uint32_t)ksigns_iq2xs[aux >> 7 & 127] << 8 |
	       (uint32_t)ksigns_iq2xs[aux >> 14 & 127] << 16 | (uint32_t)ksigns_iq2xs[aux >> 21 & 127] << 24;
}

/* IQ1: codes 8 grid + shift of 4 groups of 8 (iq1s_grid entries e0..e3; shift l -1 where bit l of neg is set,
 * else +1), split into |c| and c. Scalars, not arrays: an array stored and read back as one vector stalls
 * the store forwarding (measured: 5x slower). */
AI void iq1_codes(uint64_t e0, uint64_t e1, uint64_t e2, uint64_t e3, unsigned neg, __m256i *u, __m256i *s)
{
	__m256i gv = _mm256_set_epi64x((long long)e3, (long long)e2, (long long)e1, (long long)e0);
	/* bit l of neg -> byte l of a 32-bit mask -> all 8 sign bits of group l */
	uint32_t bytes = (uint32_t)(((neg & 15) * 0x00204081u) & 0x01010101u) * 0xffu;
	__m256i dv = iq_signs(bytes);
	__m256i c = _mm256_add_epi8(_mm256_sign_epi8(_mm256_set1_epi8(8), gv), dv);
	*u = _mm256_abs_epi8(c);
	*s = c;
}

/* 32-group g of the block at p: magnitudes u, signs s, sub-scales s0 (values 0..15) and s1 (16..31) */
AI void iq_group(int fmt, const uint8_t *p, int g, __m256i *u, __m256i *s, int *s0, int *s1)
{
	if (fmt == WFMT_IQ2_XXS) {
		const uint8_t *qs = p + 2 + 8 * g;
		uint32_t aux = iq_rd32(qs + 4);
		*u = _mm256_set_epi64x((long long)iq2xxs_grid[qs[3]], (long long)iq2xxs_grid[qs[2]],
				       (long long)iq2xxs_grid[qs[1]], (long long)iq2xxs_grid[qs[0]]);
		*s = iq_signs(iq_ksigns4(aux));
		*s0 = *s1 = 2 * (int)(aux >> 28) + 1;
	} else if (fmt == WFMT_IQ2_XS) {
		const uint8_t *qs = p + 2 + 8 * g;
		uint32_t v0 = iq_rd16(qs), v1 = iq_rd16(qs + 2), v2 = iq_rd16(qs + 4), v3 = iq_rd16(qs + 6);
		*u = _mm256_set_epi64x((long long)iq2xs_grid[v3 & 511], (long long)iq2xs_grid[v2 & 511],
				       (long long)iq2xs_grid[v1 & 511], (long long)iq2xs_grid[v0 & 511]);
		*s = iq_signs((uint32_t)ksigns_iq2xs[v0 >> 9] | (uint32_t)ksigns_iq2xs[v1 >> 9] << 8 |
			      (uint32_t)ksigns_iq2xs[v2 >> 9] << 16 | (uint32_t)ksigns_iq2xs[v3 >> 9] << 24);
		uint8_t sc = p[66 + g];
		*s0 = 2 * (sc & 15) + 1, *s1 = 2 * (sc >> 4) + 1;
	} else if (fmt == WFMT_IQ2_S) {
		const uint8_t *qs = p + 2 + 4 * g;
		uint32_t h = p[66 + g];
		*u = _mm256_set_epi64x((long long)iq2s_grid[qs[3] | (h << 2 & 0x300)], (long long)iq2s_grid[qs[2] | (h << 4 & 0x300)],
				       (long long)iq2s_grid[qs[1] | (h << 6 & 0x300)], (long long)iq2s_grid[qs[0] | (h << 8 & 0x300)]);
		*s = iq_signs(iq_rd32(p + 2 + QK_K / 8 + 4 * g));
		uint8_t sc = p[74 + g];
		*s0 = 2 * (sc & 15) + 1, *s1 = 2 * (sc >> 4) + 1;
	} else if (fmt == WFMT_IQ3_XXS) {
		const uint8_t *qs = p + 2 + 8 * g;
		uint32_t aux = iq_rd32(p + 2 + QK_K / 4 + 4 * g);
		*u = _mm256_set_epi32((int)iq3xxs_grid[qs[7]], (int)iq3xxs_grid[qs[6]], (int)iq3xxs_grid[qs[5]],
				      (int)iq3xxs_grid[qs[4]], (int)iq3xxs_grid[qs[3]], (int)iq3xxs_grid[qs[2]],
				      (int)iq3xxs_grid[qs[1]], (int)iq3xxs_grid[qs[0]]);
		*s = iq_signs(iq_ksigns4(aux));
		*s0 = *s1 = 2 * (int)(aux >> 28) + 1;
	} else if (fmt == WFMT_IQ3_S) {
		const uint8_t *qs = p + 2 + 8 * g;
		uint32_t h = p[66 + g];
#define IQ3S(i) (int)iq3s_grid[qs[i] | (h >> (i) & 1) << 8]
		*u = _mm256_set_epi32(IQ3S(7), IQ3S(6), IQ3S(5), IQ3S(4), IQ3S(3), IQ3S(2), IQ3S(1), IQ3S(0));
#undef IQ3S
		*s = iq_signs(iq_rd32(p + 74 + 4 * g));
		*s0 = *s1 = 2 * (p[106 + g / 2] >> 4 * (g & 1) & 15) + 1;
	} else if (fmt == WFMT_IQ1_S) {
		const uint8_t *qs = p + 2 + 4 * g;
		uint32_t h = iq_rd16(p + 34 + 2 * g);
#define IQ1S(l) iq1s_grid[qs[l] | (h >> 3 * (l) & 7) << 8]
		iq1_codes(IQ1S(0), IQ1S(1), IQ1S(2), IQ1S(3), h & 0x8000 ? 15 : 0, u, s);
#undef IQ1S
		*s0 = *s1 = 2 * (int)(h >> 12 & 7) + 1;
	} else { /* IQ1_M: qh byte l / 2 of the group holds index bits and shift sign of groups of 8 l (low nibble), l + 1 */
		const uint8_t *qs = p + 4 * g;
		uint32_t h = iq_rd16(p + 32 + 2 * g);
#define IQ1M(l) iq1s_grid[qs[l] | (h >> 4 * (l) & 7) << 8]
		unsigned neg = (h >> 3 & 1) | (h >> 6 & 2) | (h >> 9 & 4) | (h >> 12 & 8);
		iq1_codes(IQ1M(0), IQ1M(1), IQ1M(2), IQ1M(3), neg, u, s);
#undef IQ1M
		uint32_t sc = iq_rd16(p + 48 + 2 * (g / 2)) >> 6 * (g & 1);
		*s0 = 2 * (int)(sc & 7) + 1, *s1 = 2 * (int)(sc >> 3 & 7) + 1;
	}
}

/* d f of the block at p (qint_<k>'s d) */
AI float iq_scale(int fmt, const uint8_t *p)
{
	if (fmt == WFMT_IQ1_M)
		return _cvtsh_ss(iq1m_d_bits(p + 48)) * 0.125f;
	float d = ld_f16(p);
	return fmt == WFMT_IQ3_S ? d : fmt == WFMT_IQ3_XXS ? d * 0.25f : d * 0.125f;
}

AI void iq_dot(int fmt, size_t bb, const void *w, const struct cpu_xq *xq, int t0, int T, float *out)
{
	int nsb = xq->K / QK_K;
	__m256 acc[QK_SUB_T];
	for (int t = 0; t < QK_SUB_T; t++)
		acc[t] = _mm256_setzero_ps();
	for (int i = 0; i < nsb; i++) {
		const uint8_t *p = (const uint8_t *)w + (size_t)i * bb;
		__m256i isum[2 * QK_SUB_T];
		for (int j = 0; j < 2 * QK_SUB_T; j++)
			isum[j] = _mm256_setzero_si256();
		_Pragma("GCC unroll 8") for (int g = 0; g < 8; g++) { /* unrolled whole: isum[CH(t, g)] stays in registers */
			__m256i u, s;
			int s0, s1;
			iq_group(fmt, p, g, &u, &s, &s0, &s1);
			__m256i sv = _mm256_set_m128i(_mm_set1_epi16((short)s1), _mm_set1_epi16((short)s0));
			UNROLL for (int t = 0; t < T; t++) {
				__m256i a = _mm256_loadu_si256((const __m256i *)xq_codes(xq, t0 + t, QK_K * i + 32 * g));
				__m256i p16 = _mm256_maddubs_epi16(u, _mm256_sign_epi8(a, s));
				isum[CH(t, g)] = dot_i16(isum[CH(t, g)], p16, sv);
			}
		}
		acc_block(acc, isum, iq_scale(fmt, p), xq, t0, T, i);
	}
	for (int t = 0; t < T; t++)
		out[t] = hsum(acc[t]);
}

#define QK_IQ(k, FMT)                                                                          \
	AI void qk_##k(const void *w, const struct cpu_xq *xq, int t0, int T, float *out)      \
	{                                                                                      \
		iq_dot(WFMT_##FMT, sizeof(struct block_##k), w, xq, t0, T, out);               \
	}
QK_IQ(iq2_xxs, IQ2_XXS)
QK_IQ(iq2_xs, IQ2_XS)
QK_IQ(iq2_s, IQ2_S)
QK_IQ(iq3_xxs, IQ3_XXS)
QK_IQ(iq3_s, IQ3_S)
QK_IQ(iq1_s, IQ1_S)
QK_IQ(iq1_m, IQ1_M)
#undef QK_IQ
