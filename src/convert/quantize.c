/*
 * quantize.c: f32 rows into Q8_0, Q4_0, Q5_0, Q4_1, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS
 * blocks by a search over scales with a weighted least-squares refit (quantize.h), and the named mixes of
 * `ferry convert --quant`.
 */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "convert/quantize.h"
#include "convert/quantize_iq.h"
#include "layout/layout.h"
#include "layout/quant.h"
#include "layout/wfmt.h"

#define STEPS 10 /* candidate scales either side of the plain one, a tenth of a level apart */

static int clampi(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* The integer nearest v (ties to even, as lrintf in the default rounding mode) within [lo, hi]: clamped
 * first (NaN goes to lo), then rounded by adding and removing 1.5 * 2^23, which leaves the integer part
 * in the mantissa; inline, so the loops that call it vectorize (lrintf is a libm call). */
static inline float levelf(float v, float lo, float hi)
{
	v = v >= lo ? (v <= hi ? v : hi) : lo;
	return (v + 12582912.0f) - 12582912.0f;
}

static inline int level(float v, int lo, int hi)
{
	return (int)levelf(v, (float)lo, (float)hi);
}

static float f16_round(float v)
{
	return f16_to_f32(f32_to_f16(v));
}

/* w[i]: how much block position i matters (quantize.h). */
static void weights_of(const float *x, const float *imp, int n, float *w)
{
	double s = 0;
	for (int i = 0; i < n; i++)
		s += (double)x[i] * x[i];
	float sigma2 = (float)(s / n);
	for (int i = 0; i < n; i++)
		w[i] = imp ? imp[i] * sqrtf(sigma2 + x[i] * x[i]) : sigma2 + x[i] * x[i];
}

/* The value of largest magnitude (the first of them) */
static float largest(const float *x, int n)
{
	float amax = 0, xm = 0;
	for (int i = 0; i < n; i++)
		if (fabsf(x[i]) > amax) {
			amax = fabsf(x[i]);
			xm = x[i];
		}
	return xm;
}

static const int8_t iq4_values[16] = IQ4NL_VALUES;

/* The index of the IQ4 table value nearest v (the table ascends): a binary search over the midpoints */
static int iq4_index(float v)
{
	int lo = 0, hi = 15;
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (v > 0.5f * (float)(iq4_values[mid] + iq4_values[mid + 1]))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The codes of a symmetric grid y = d c: the integers qmin..qmax, or (table) the IQ4 values */
struct grid {
	int qmin, qmax;
	bool table;
};

/* v rounded to the grid's nearest code, as a float (the integer grids inline, so loops over it vectorize) */
static inline float grid_codef(const struct grid *g, float v)
{
	return g->table ? (float)iq4_values[iq4_index(v)] : (float)level(v, g->qmin, g->qmax);
}

/* One candidate scale d0: the codes it picks, the scale refit to them by weighted least squares, and the
 * weighted error with the codes picked again for that scale; returns the error (INFINITY: no fit). The sums
 * are of one block (at most 32 values) in float, in SIMD lanes (omp simd). */
static double grid_refit(const float *x, const float *w, int n, const struct grid *g, float d0, float *d_out)
{
	float sxq = 0, sqq = 0, id0 = 1.0f / d0; /* a product per value, not a division: codes differ only at ties */
	float lo = (float)g->qmin, hi = (float)g->qmax;
	if (g->table) {
		for (int i = 0; i < n; i++) {
			float q = grid_codef(g, x[i] * id0);
			sxq += w[i] * x[i] * q;
			sqq += w[i] * q * q;
		}
	} else {
#pragma omp simd reduction(+ : sxq, sqq)
		for (int i = 0; i < n; i++) {
			float q = levelf(x[i] * id0, lo, hi);
			sxq += w[i] * x[i] * q;
			sqq += w[i] * q * q;
		}
	}
	if (!(sqq > 0))
		return INFINITY;
	float d = sxq / sqq, id = 1.0f / d, err = 0;
	if (g->table) {
		for (int i = 0; i < n; i++) {
			float e = x[i] - d * grid_codef(g, x[i] * id);
			err += w[i] * e * e;
		}
	} else {
#pragma omp simd reduction(+ : err)
		for (int i = 0; i < n; i++) {
			float e = x[i] - d * levelf(x[i] * id, lo, hi);
			err += w[i] * e * e;
		}
	}
	*d_out = d;
	return err;
}

/* Symmetric y = d q, q in [qmin, qmax] (|qmin| >= qmax): the value of largest magnitude goes to qmin (its sign
 * sets d's), then candidates around that level, each refit by least squares; returns the best d. */
static float sym_fit(const float *x, const float *w, int n, int qmin, int qmax, int steps)
{
	float xm = largest(x, n);
	if (xm == 0)
		return 0;
	struct grid g = {qmin, qmax, false};
	float best = xm / (float)qmin, d;
	double best_err = INFINITY;
	for (int k = -steps; k <= steps; k++) {
		double err = grid_refit(x, w, n, &g, xm / ((float)qmin + 0.1f * (float)k), &d);
		if (err < best_err) {
			best_err = err;
			best = d;
		}
	}
	return best;
}

/* Asymmetric y = a q + b, q in 0..nmax, b <= 0 unless free_b (the K-quants store -b as a non-negative min;
 * Q4_1/Q5_1 store b as it is): candidates of the scale over [min, max], each refit by weighted least squares
 * in (a, b). */
static void asym_fit(const float *x, const float *w, int n, int nmax, bool free_b, float *a_out, float *b_out)
{
	float mn = x[0], mx = x[0];
	for (int i = 1; i < n; i++) {
		mn = x[i] < mn ? x[i] : mn;
		mx = x[i] > mx ? x[i] : mx;
	}
	mn = mn > 0 && !free_b ? 0 : mn;
	*a_out = 0;
	*b_out = mn;
	if (mx <= mn)
		return;
	/* the plain fit first: the range over the levels; the sums of one block in float, in SIMD lanes */
	float top = (float)nmax, a0 = (mx - mn) / top, ia0 = 1.0f / a0, best_err = 0, sw = 0, sx = 0;
	*a_out = a0;
#pragma omp simd reduction(+ : best_err, sw, sx)
	for (int i = 0; i < n; i++) {
		float e = x[i] - (a0 * levelf((x[i] - mn) * ia0, 0, top) + mn);
		best_err += w[i] * e * e;
		sw += w[i];
		sx += w[i] * x[i];
	}
	for (int k = -STEPS; k <= STEPS; k++) {
		float is = (top + 0.1f * (float)k) / (mx - mn), sl = 0, sll = 0, sxl = 0;
#pragma omp simd reduction(+ : sl, sll, sxl)
		for (int i = 0; i < n; i++) {
			float l = levelf(is * (x[i] - mn), 0, top);
			sl += w[i] * l;
			sll += w[i] * l * l;
			sxl += w[i] * x[i] * l;
		}
		double det = (double)sw * sll - (double)sl * sl, a, b;
		if (det <= 0)
			continue;
		a = ((double)sw * sxl - (double)sl * sx) / det;
		b = ((double)sll * sx - (double)sl * sxl) / det;
		if (b > 0 && !free_b) {
			b = 0;
			a = (double)sxl / sll;
		}
		if (a <= 0)
			continue;
		float af = (float)a, bf = (float)b, ia = 1.0f / af, err = 0;
#pragma omp simd reduction(+ : err)
		for (int i = 0; i < n; i++) {
			float e = x[i] - (af * levelf((x[i] - bf) * ia, 0, top) + bf);
			err += w[i] * e * e;
		}
		if (err < best_err) {
			best_err = err;
			*a_out = af;
			*b_out = bf;
		}
	}
}

static void quant_q8_0(const float *x, const float *imp, struct block_q8_0 *b)
{
	float w[QK];
	weights_of(x, imp, QK, w);
	float d = f16_round(sym_fit(x, w, QK, -127, 127, 4));
	b->d = f32_to_f16(d);
	for (int i = 0; i < QK; i++)
		b->qs[i] = (int8_t)(d != 0 ? level(x[i] / d, -127, 127) : 0);
}

static void quant_q4_0(const float *x, const float *imp, struct block_q4_0 *b)
{
	float w[QK];
	weights_of(x, imp, QK, w);
	float d = f16_round(sym_fit(x, w, QK, -8, 7, STEPS));
	b->d = f32_to_f16(d);
	for (int j = 0; j < QK / 2; j++) {
		int lo = d != 0 ? level(x[j] / d, -8, 7) : 0, hi = d != 0 ? level(x[j + QK / 2] / d, -8, 7) : 0;
		b->qs[j] = (uint8_t)((lo + 8) | (hi + 8) << 4);
	}
}

static void quant_q5_0(const float *x, const float *imp, struct block_q5_0 *b)
{
	float w[QK];
	weights_of(x, imp, QK, w);
	float d = f16_round(sym_fit(x, w, QK, -16, 15, STEPS));
	b->d = f32_to_f16(d);
	uint32_t qh = 0;
	for (int j = 0; j < QK / 2; j++) {
		int lo = (d != 0 ? level(x[j] / d, -16, 15) : 0) + 16, hi = (d != 0 ? level(x[j + QK / 2] / d, -16, 15) : 0) + 16;
		b->qs[j] = (uint8_t)((lo & 15) | (hi & 15) << 4);
		qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
	}
	for (int k = 0; k < 4; k++)
		b->qh[k] = (uint8_t)(qh >> (8 * k));
}

/* rms + |x| of each sub-block of `sub` values (the asymmetric K-quants without an importance matrix: it fits
 * their grid better than the squared weights of the symmetric formats, measured against llama-quantize,
 * bench/bench_quant.py), else weights_of */
static void k_weights(const float *x, const float *imp, int n, int sub, float *w)
{
	if (imp) {
		weights_of(x, imp, n, w);
		return;
	}
	for (int j = 0; j < n / sub; j++) {
		double s2 = 0;
		for (int l = 0; l < sub; l++)
			s2 += (double)x[sub * j + l] * x[sub * j + l];
		float av = (float)sqrt(s2 / sub);
		for (int l = 0; l < sub; l++)
			w[sub * j + l] = av + fabsf(x[sub * j + l]);
	}
}

/* Q4_K (qh NULL) and Q5_K: 8 sub-blocks of 32, y = d sc q - dmin m with 6-bit sc and m. */
static void quant_k45(const float *x, const float *imp, uint16_t *dh, uint16_t *mh, uint8_t *scales, uint8_t *qs,
		      uint8_t *qh)
{
	int nmax = qh ? 31 : 15;
	float w[QK_K], a[8], mins[8], amax = 0, mmax = 0;
	k_weights(x, imp, QK_K, 32, w);
	for (int j = 0; j < 8; j++) {
		float b;
		asym_fit(x + 32 * j, w + 32 * j, 32, nmax, false, &a[j], &b);
		mins[j] = -b;
		amax = a[j] > amax ? a[j] : amax;
		mmax = mins[j] > mmax ? mins[j] : mmax;
	}
	float d = f16_round(amax / 63), dmin = f16_round(mmax / 63);
	uint8_t sc[8], m[8];
	for (int j = 0; j < 8; j++) {
		sc[j] = (uint8_t)(d > 0 ? level(a[j] / d, 0, 63) : 0);
		m[j] = (uint8_t)(dmin > 0 ? level(mins[j] / dmin, 0, 63) : 0);
	}
	*dh = f32_to_f16(d);
	*mh = f32_to_f16(dmin);
	k_scales_pack(sc, m, scales);
	if (qh)
		memset(qh, 0, QK_K / 8);
	for (int c = 0; c < 4; c++)
		for (int h = 0; h < 2; h++) {
			int j = 2 * c + h;
			float sd = d * sc[j], sm = dmin * m[j];
			for (int l = 0; l < 32; l++) {
				int q = sd > 0 ? level((x[32 * j + l] + sm) / sd, 0, nmax) : 0;
				if (h)
					qs[32 * c + l] = (uint8_t)(qs[32 * c + l] | (q & 15) << 4);
				else
					qs[32 * c + l] = (uint8_t)(q & 15);
				if (qh)
					qh[l] = (uint8_t)(qh[l] | (q >> 4) << j);
			}
		}
}

/* Q6_K: 16 sub-blocks of 16, y = d sc q with 8-bit sc and q in -32..31. */
static void quant_q6_k(const float *x, const float *imp, struct block_q6_K *b)
{
	float w[QK_K], s[16], smax = 0;
	weights_of(x, imp, QK_K, w);
	for (int j = 0; j < 16; j++) {
		s[j] = sym_fit(x + 16 * j, w + 16 * j, 16, -32, 31, STEPS);
		smax = fabsf(s[j]) > fabsf(smax) ? s[j] : smax;
	}
	float d = f16_round(smax / -128);
	b->d = f32_to_f16(d);
	memset(b->ql, 0, sizeof(b->ql));
	memset(b->qh, 0, sizeof(b->qh));
	for (int j = 0; j < 16; j++)
		b->scales[j] = (int8_t)(d != 0 ? level(s[j] / d, -128, 127) : 0);
	for (int v = 0; v < QK_K; v++) {
		float sd = d * (float)b->scales[v / 16];
		int q = (sd != 0 ? level(x[v] / sd, -32, 31) : 0) + 32;
		int half = v / 128, r = v % 128, g = r / 32, l = r % 32;
		uint8_t *ql = b->ql + 64 * half + l + (g & 1) * 32;
		*ql = (uint8_t)(*ql | (q & 15) << (g >= 2 ? 4 : 0));
		b->qh[32 * half + l] = (uint8_t)(b->qh[32 * half + l] | (q >> 4) << (2 * g));
	}
}

/* Q4_1 (qh NULL) and Q5_1: y = d q + m, q in 0..nmax, m of either sign */
static void quant_q51(const float *x, const float *imp, uint16_t *dh, uint16_t *mh, uint8_t *qs, uint8_t *qh)
{
	int nmax = qh ? 31 : 15;
	float w[QK], a, b;
	k_weights(x, imp, QK, QK, w);
	asym_fit(x, w, QK, nmax, true, &a, &b);
	float d = f16_round(a), m = f16_round(b);
	*dh = f32_to_f16(d);
	*mh = f32_to_f16(m);
	uint32_t h = 0;
	for (int j = 0; j < QK / 2; j++) {
		int lo = d > 0 ? level((x[j] - m) / d, 0, nmax) : 0, hi = d > 0 ? level((x[j + QK / 2] - m) / d, 0, nmax) : 0;
		qs[j] = (uint8_t)((lo & 15) | (hi & 15) << 4);
		h |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
	}
	for (int k = 0; qh && k < 4; k++)
		qh[k] = (uint8_t)(h >> (8 * k));
}

/* Q2_K: 16 sub-blocks of 16, y = d sc q - dmin m with 4-bit sc and m, q in 0..3 */
static void quant_q2_k(const float *x, const float *imp, struct block_q2_K *b)
{
	float w[QK_K], a[16], mins[16], amax = 0, mmax = 0;
	k_weights(x, imp, QK_K, 16, w);
	for (int j = 0; j < 16; j++) {
		float bj;
		asym_fit(x + 16 * j, w + 16 * j, 16, 3, false, &a[j], &bj);
		mins[j] = -bj;
		amax = a[j] > amax ? a[j] : amax;
		mmax = mins[j] > mmax ? mins[j] : mmax;
	}
	float d = f16_round(amax / 15), dmin = f16_round(mmax / 15);
	b->d = f32_to_f16(d);
	b->dmin = f32_to_f16(dmin);
	memset(b->qs, 0, sizeof(b->qs));
	for (int j = 0; j < 16; j++) {
		int sc = d > 0 ? level(a[j] / d, 0, 15) : 0, m = dmin > 0 ? level(mins[j] / dmin, 0, 15) : 0;
		b->scales[j] = (uint8_t)(sc | m << 4);
		float sd = d * (float)sc, sm = dmin * (float)m;
		for (int l = 0; l < 16; l++) {
			int v = 16 * j + l, q = sd > 0 ? level((x[v] + sm) / sd, 0, 3) : 0;
			b->qs[32 * (v / 128) + v % 32] = (uint8_t)(b->qs[32 * (v / 128) + v % 32] | q << (2 * (v % 128 / 32)));
		}
	}
}

/* Q3_K: 16 sub-blocks of 16, y = d sc q with 6-bit signed sc (-32..31) and q in -4..3 */
static void quant_q3_k(const float *x, const float *imp, struct block_q3_K *b)
{
	float w[QK_K], s[16], smax = 0;
	k_weights(x, imp, QK_K, 16, w);
	for (int j = 0; j < 16; j++) {
		s[j] = sym_fit(x + 16 * j, w + 16 * j, 16, -4, 3, STEPS);
		smax = fabsf(s[j]) > fabsf(smax) ? s[j] : smax;
	}
	float d = f16_round(smax / -32);
	b->d = f32_to_f16(d);
	uint8_t sc6[16];
	memset(b->qs, 0, sizeof(b->qs));
	memset(b->hmask, 0, sizeof(b->hmask));
	for (int j = 0; j < 16; j++) {
		int sc = d != 0 ? level(s[j] / d, -32, 31) : 0;
		sc6[j] = (uint8_t)(sc + 32);
		float sd = d * (float)sc;
		for (int l = 0; l < 16; l++) {
			int v = 16 * j + l, q = (sd != 0 ? level(x[v] / sd, -4, 3) : 0) + 4;
			int n = v / 128, f = v % 128 / 32, at = v % 32;
			b->qs[32 * n + at] = (uint8_t)(b->qs[32 * n + at] | (q & 3) << (2 * f));
			b->hmask[at] = (uint8_t)(b->hmask[at] | (q >> 2) << (4 * n + f));
		}
	}
	q3k_scales_pack(sc6, b->scales);
}

/* y = d v[q] over n values: the largest value mapped near either end of the table (-127 or 113, the scale a
 * step of 1 either way), each candidate refit by weighted least squares; returns the best d */
static float iq4_fit(const float *x, const float *w, int n)
{
	float xm = largest(x, n);
	if (xm == 0)
		return 0;
	struct grid g = {0, 0, true};
	float best = xm / (float)iq4_values[0], d;
	double best_err = INFINITY;
	for (int end = 0; end < 2; end++)
		for (int k = -7; k <= 7; k++) {
			float d0 = xm / ((float)(end ? iq4_values[15] : iq4_values[0]) + (float)k);
			double err = grid_refit(x, w, n, &g, d0, &d);
			if (err < best_err) {
				best_err = err;
				best = d;
			}
		}
	return best;
}

/* 32 values as IQ4 nibbles for the scale d: values j (low nibbles) and j + 16 (high) */
static void iq4_pack(const float *x, float d, uint8_t *qs)
{
	for (int j = 0; j < QK / 2; j++) {
		int lo = d != 0 ? iq4_index(x[j] / d) : iq4_index(0), hi = d != 0 ? iq4_index(x[j + QK / 2] / d) : iq4_index(0);
		qs[j] = (uint8_t)(lo | hi << 4);
	}
}

static void quant_iq4_nl(const float *x, const float *imp, struct block_iq4_nl *b)
{
	float w[QK];
	k_weights(x, imp, QK, QK, w);
	float d = f16_round(iq4_fit(x, w, QK));
	b->d = f32_to_f16(d);
	iq4_pack(x, d, b->qs);
}

/* Weighted error of 32 values as IQ4 codes of scale d */
static double iq4_err(const float *x, const float *w, float d)
{
	double err = 0;
	for (int i = 0; i < 32; i++) {
		double e = x[i] - (d != 0 ? d * (float)iq4_values[iq4_index(x[i] / d)] : 0.0f);
		err += w[i] * e * e;
	}
	return err;
}

/* IQ4_XS: 8 sub-blocks of 32 as IQ4_NL's, each scale 6 bits (-32..31) of an f16 d. The 6-bit steps are coarse
 * for sub-blocks far below the largest: a few d around the largest scale's / -32 are tried, and each sub-block
 * takes the better of the two integer scales around its own, by its error as coded. */
static void quant_iq4_xs(const float *x, const float *imp, struct block_iq4_xs *b)
{
	float w[QK_K], s[8], smax = 0;
	k_weights(x, imp, QK_K, 32, w);
	for (int j = 0; j < 8; j++) {
		s[j] = iq4_fit(x + 32 * j, w + 32 * j, 32);
		smax = fabsf(s[j]) > fabsf(smax) ? s[j] : smax;
	}
	float best_d = 0;
	int best_sc[8] = {0};
	double best_err = INFINITY;
	for (int c = 0; c < 5; c++) {
		float d = f16_round(smax / (-32.0f + 0.5f * (float)c));
		int sc[8];
		double err = 0;
		for (int j = 0; j < 8; j++) {
			int lo = d != 0 ? clampi((int)floorf(s[j] / d), -32, 31) : 0, hi = clampi(lo + 1, -32, 31);
			double el = iq4_err(x + 32 * j, w + 32 * j, d * (float)lo), eh = iq4_err(x + 32 * j, w + 32 * j, d * (float)hi);
			sc[j] = eh < el ? hi : lo;
			err += eh < el ? eh : el;
		}
		if (err < best_err) {
			best_err = err;
			best_d = d;
			memcpy(best_sc, sc, sizeof(sc));
		}
	}
	b->d = f32_to_f16(best_d);
	uint8_t ls[8];
	for (int j = 0; j < 8; j++) {
		ls[j] = (uint8_t)(best_sc[j] + 32);
		iq4_pack(x + 32 * j, best_d * (float)best_sc[j], b->qs + 16 * j);
	}
	iq4xs_scales_pack(ls, &b->scales_h, b->scales_l);
}

bool quant_supported(int fmt)
{
	return fmt == WFMT_Q8_0 || fmt == WFMT_Q4_0 || fmt == WFMT_Q5_0 || fmt == WFMT_Q4_K || fmt == WFMT_Q5_K ||
	       fmt == WFMT_Q6_K || fmt == WFMT_Q4_1 || fmt == WFMT_Q5_1 || fmt == WFMT_Q2_K || fmt == WFMT_Q3_K ||
	       fmt == WFMT_IQ4_NL || fmt == WFMT_IQ4_XS || quant_iq_supported(fmt);
}

int quant_row(int fmt, const float *x, const float *imp, int64_t n, void *dst)
{
	if (!quant_supported(fmt) || n % wfmt_table[fmt].block)
		return -1;
	int64_t nb = n / wfmt_table[fmt].block, B = wfmt_table[fmt].block;
	for (int64_t i = 0; i < nb; i++) {
		const float *xi = x + i * B, *ii = imp ? imp + i * B : NULL;
		if (quant_iq_supported(fmt)) { /* the grid formats: quantize_iq.c */
			float w[QK_K];
			weights_of(xi, ii, QK_K, w);
			quant_iq_block(fmt, xi, w, (uint8_t *)dst + i * (int64_t)wfmt_table[fmt].block_bytes);
			continue;
		}
		switch (fmt) {
		case WFMT_Q8_0: quant_q8_0(xi, ii, (struct block_q8_0 *)dst + i); break;
		case WFMT_Q4_0: quant_q4_0(xi, ii, (struct block_q4_0 *)dst + i); break;
		case WFMT_Q5_0: quant_q5_0(xi, ii, (struct block_q5_0 *)dst + i); break;
		case WFMT_Q4_K: {
			struct block_q4_K *b = (struct block_q4_K *)dst + i;
			quant_k45(xi, ii, &b->d, &b->dmin, b->scales, b->qs, NULL);
			break;
		}
		case WFMT_Q5_K: {
			struct block_q5_K *b = (struct block_q5_K *)dst + i;
			quant_k45(xi, ii, &b->d, &b->dmin, b->scales, b->qs, b->qh);
			break;
		}
		case WFMT_Q4_1: {
			struct block_q4_1 *b = (struct block_q4_1 *)dst + i;
			quant_q51(xi, ii, &b->d, &b->m, b->qs, NULL);
			break;
		}
		case WFMT_Q5_1: {
			struct block_q5_1 *b = (struct block_q5_1 *)dst + i;
			quant_q51(xi, ii, &b->d, &b->m, b->qs, b->qh);
			break;
		}
		case WFMT_Q2_K: quant_q2_k(xi, ii, (struct block_q2_K *)dst + i); break;
		case WFMT_Q3_K: quant_q3_k(xi, ii, (struct block_q3_K *)dst + i); break;
		case WFMT_IQ4_NL: quant_iq4_nl(xi, ii, (struct block_iq4_nl *)dst + i); break;
		case WFMT_IQ4_XS: quant_iq4_xs(xi, ii, (struct block_iq4_xs *)dst + i); break;
		default: quant_q6_k(xi, ii, (struct block_q6_K *)dst + i); break;
		}
	}
	return 0;
}

int quant_rows(int fmt, int64_t n, int64_t cols, const float *imp, void (*row)(int64_t r, float *x, void *ctx),
	       void *ctx, void *dst)
{
	if (!quant_supported(fmt) || cols % wfmt_table[fmt].block)
		return -1;
	uint64_t rb = wfmt_row_bytes(fmt, (uint64_t)cols);
	float *xs = malloc(sizeof(float) * (size_t)cols * (size_t)omp_get_max_threads());
	if (!xs)
		return -ENOMEM;
#pragma omp parallel for schedule(static)
	for (int64_t r = 0; r < n; r++) {
		float *x = xs + (size_t)omp_get_thread_num() * (size_t)cols;
		row(r, x, ctx);
		quant_row(fmt, x, imp, cols, (uint8_t *)dst + (uint64_t)r * rb);
	}
	free(xs);
	return 0;
}

void quant_src_row(int64_t r, float *x, void *ctx)
{
	const struct quant_src *s = ctx;
	int fmt = s->fmt;
	size_t es = fmt == WFMT_F32 ? 4 : 2;
	const uint8_t *p = (const uint8_t *)s->data + (size_t)r * (size_t)s->cols * es;
	for (int64_t i = 0; i < s->cols; i++, p += es) {
		uint16_t h;
		if (fmt == WFMT_F32) {
			memcpy(&x[i], p, 4);
			continue;
		}
		memcpy(&h, p, 2);
		x[i] = fmt == WFMT_F16 ? f16_to_f32(h) : bf16_to_f32(h);
	}
}

int quant_matrix(int qfmt, const void *src, int sfmt, int64_t rows, int64_t cols, const float *imp,
		 int (*sink)(const void *out, size_t bytes, int64_t r0, int64_t n_rows, void *ctx), void *ctx)
{
	uint64_t rb = wfmt_row_bytes(qfmt, (uint64_t)cols), sb = (uint64_t)cols * (sfmt == WFMT_F32 ? 4 : 2);
	int64_t chunk = (int64_t)((16u << 20) / rb) + 1;
	chunk = chunk > rows ? rows : chunk;
	uint8_t *out = malloc(rb * (uint64_t)chunk);
	int rc = out ? 0 : -ENOMEM;
	for (int64_t r0 = 0; !rc && r0 < rows; r0 += chunk) {
		int64_t n = rows - r0 < chunk ? rows - r0 : chunk;
		struct quant_src s = {(const uint8_t *)src + (uint64_t)r0 * sb, sfmt, cols};
		rc = quant_rows(qfmt, n, cols, imp, quant_src_row, &s, out);
		rc = rc ? rc : sink(out, (size_t)(rb * (uint64_t)n), r0, n, ctx);
	}
	free(out);
	return rc;
}

/* The mixes, as llama.cpp's llama_tensor_get_type picks per tensor of a dense model (src/llama-quant.cpp): a
 * base format; the output matrix's (the tied embedding's too); and for attn_v, ffn_down and attn_output a
 * format on all layers and another on the layers a rule selects. A -1 format is the base. */
enum layers {
	L_NONE,
	L_MORE,      /* llama.cpp's use_more_bits: the first and last eighth and every third layer between */
	L_EIGHTH,    /* i < n/8 */
	L_SIXTEENTH, /* i < n/16 */
	L_FIRST2,    /* i < 2 */
	L_FIRST4,    /* i < 4 */
};
struct quant_mix {
	const char *name;
	int base, output;
	int v, v_sel, v_gqa4; /* attn_v: v, v_sel on the selected layers, v_gqa4 (when not -1) with 4+ q heads per kv */
	enum layers v_on;
	int down, down_sel; /* ffn_down likewise */
	enum layers down_on;
	int o; /* attn_output */
	int embd, qk; /* an untied token_embd; attn_q and attn_k */
	bool needs_im, no_70b; /* requires an importance matrix; llama.cpp's 70B attn_v rule does not apply */
};

#define X_ -1
static const struct quant_mix mixes[] = {
	{"Q4_K_M", WFMT_Q4_K, WFMT_Q6_K, X_, WFMT_Q6_K, X_, L_MORE, X_, WFMT_Q6_K, L_MORE, X_, X_, X_, false, false},
	{"Q4_K_S", WFMT_Q4_K, WFMT_Q6_K, X_, WFMT_Q5_K, X_, L_FIRST4, X_, WFMT_Q5_K, L_EIGHTH, X_, X_, X_, false, false},
	{"Q5_K_M", WFMT_Q5_K, WFMT_Q6_K, X_, WFMT_Q6_K, X_, L_MORE, X_, WFMT_Q6_K, L_MORE, X_, X_, X_, false, false},
	{"Q5_K_S", WFMT_Q5_K, WFMT_Q6_K, X_, X_, X_, L_NONE, X_, X_, L_NONE, X_, X_, X_, false, false},
	{"Q6_K", WFMT_Q6_K, WFMT_Q6_K, X_, X_, X_, L_NONE, X_, X_, L_NONE, X_, X_, X_, false, false},
	{"Q8_0", WFMT_Q8_0, WFMT_Q8_0, X_, X_, X_, L_NONE, X_, X_, L_NONE, X_, X_, X_, false, false},
	{"Q4_0", WFMT_Q4_0, WFMT_Q6_K, X_, X_, X_, L_NONE, X_, X_, L_NONE, X_, X_, X_, false, false},
	{"Q5_0", WFMT_Q5_0, WFMT_Q6_K, X_, X_, X_, L_NONE, X_, X_, L_NONE, X_, X_, X_, false, false},
	{"Q4_1", WFMT_Q4_1, WFMT_Q6_K, X_, X_, X_, L_NONE, X_, X_, L_NONE, X_, X_, X_, false, false},
	{"Q5_1", WFMT_Q5_1, WFMT_Q6_K, X_, X_, X_, L_NONE, X_, X_, L_NONE, X_, X_, X_, false, false},
	{"Q2_K", WFMT_Q2_K, WFMT_Q6_K, WFMT_Q3_K, X_, WFMT_Q4_K, L_NONE, WFMT_Q3_K, X_, L_NONE, WFMT_Q3_K, X_, X_, false, false},
	{"Q3_K_S", WFMT_Q3_K, WFMT_Q6_K, X_, X_, X_, L_NONE, X_, X_, L_NONE, X_, X_, X_, false, false},
	{"Q3_K_M", WFMT_Q3_K, WFMT_Q6_K, WFMT_Q4_K, WFMT_Q5_K, X_, L_FIRST2, WFMT_Q4_K, WFMT_Q5_K, L_SIXTEENTH, WFMT_Q4_K, X_, X_, false, false},
	{"Q3_K_L", WFMT_Q3_K, WFMT_Q6_K, WFMT_Q5_K, X_, X_, L_NONE, WFMT_Q5_K, X_, L_NONE, WFMT_Q5_K, X_, X_, false, false},
	/* ffn_down's first eighth in Q5_K only without an importance matrix (quant_mix_pick_im) */
	{"IQ4_XS", WFMT_IQ4_XS, WFMT_Q6_K, X_, X_, WFMT_Q5_K, L_NONE, X_, WFMT_Q5_K, L_EIGHTH, X_, X_, X_, false, false},
	{"IQ4_NL", WFMT_IQ4_NL, WFMT_Q6_K, X_, X_, WFMT_Q5_K, L_NONE, X_, WFMT_Q5_K, L_EIGHTH, X_, X_, X_, false, false},
	/* the grid IQ mixes (IQ2_S is IQ2_XS with IQ3_S where the others put Q2_K); all but IQ3_S/M need an imatrix */
	{"IQ3_XXS", WFMT_IQ3_XXS, WFMT_Q5_K, X_, X_, WFMT_Q4_K, L_NONE, X_, X_, L_NONE, WFMT_IQ3_S, WFMT_IQ3_S, WFMT_IQ2_S, true, false},
	{"IQ3_S", WFMT_IQ3_S, WFMT_Q6_K, X_, X_, WFMT_Q4_K, L_NONE, X_, X_, L_NONE, X_, X_, X_, false, false},
	{"IQ3_M", WFMT_IQ3_S, WFMT_Q6_K, WFMT_Q4_K, X_, X_, L_NONE, X_, WFMT_Q4_K, L_EIGHTH, WFMT_Q4_K, X_, X_, false, false},
	{"IQ2_XXS", WFMT_IQ2_XXS, WFMT_Q5_K, WFMT_Q2_K, X_, WFMT_Q4_K, L_NONE, X_, WFMT_Q2_K, L_EIGHTH, X_, WFMT_Q2_K, X_, true, true},
	{"IQ2_XS", WFMT_IQ2_XS, WFMT_Q5_K, WFMT_Q2_K, X_, WFMT_Q4_K, L_NONE, X_, WFMT_Q2_K, L_EIGHTH, X_, WFMT_Q2_K, X_, true, true},
	{"IQ2_S", WFMT_IQ2_XS, WFMT_Q5_K, WFMT_IQ3_S, X_, WFMT_Q4_K, L_NONE, X_, WFMT_IQ3_S, L_EIGHTH, WFMT_IQ3_S, WFMT_IQ3_S, X_, true, true},
	{"IQ2_M", WFMT_IQ2_S, WFMT_Q5_K, WFMT_IQ3_S, X_, WFMT_Q4_K, L_NONE, X_, WFMT_IQ3_S, L_EIGHTH, WFMT_IQ3_S, WFMT_IQ3_S, X_, true, true},
	{"IQ1_S", WFMT_IQ1_S, WFMT_Q5_K, WFMT_Q2_K, X_, WFMT_Q4_K, L_NONE, X_, WFMT_Q2_K, L_EIGHTH, WFMT_IQ2_XXS, WFMT_Q2_K, X_, true, true},
	{"IQ1_M", WFMT_IQ1_M, WFMT_Q5_K, WFMT_Q2_K, X_, WFMT_Q4_K, L_NONE, X_, WFMT_Q2_K, L_EIGHTH, WFMT_IQ2_XXS, WFMT_Q2_K, X_, true, true},
	/* single formats: every matrix, the output too */
	{"Q4_K", WFMT_Q4_K, WFMT_Q4_K, X_, X_, X_, L_NONE, X_, X_, L_NONE, X_, X_, X_, false, false},
	{"Q5_K", WFMT_Q5_K, WFMT_Q5_K, X_, X_, X_, L_NONE, X_, X_, L_NONE, X_, X_, X_, false, false},
};
#undef X_

const struct quant_mix *quant_mix_find(const char *name)
{
	for (size_t i = 0; name && i < sizeof(mixes) / sizeof(mixes[0]); i++)
		if (!strcasecmp(name, mixes[i].name))
			return &mixes[i];
	return NULL;
}

bool quant_mix_needs_imatrix(const struct quant_mix *m)
{
	return m->needs_im;
}

int quant_mix_open(const char *quant, bool have_imatrix, const struct quant_mix **out, char *err, size_t errlen)
{
	char names[512];
	if (!(*out = quant_mix_find(quant))) {
		snprintf(err, errlen, "--quant %s: not a quantization (%s)", quant, quant_mix_list(names, sizeof(names)));
		return -EINVAL;
	}
	if (quant_mix_needs_imatrix(*out) && !have_imatrix) {
		snprintf(err, errlen, "--quant %s needs an importance matrix: --imatrix FILE (make one with `ferry imatrix -m MODEL TEXT -o FILE`)",
			 (*out)->name);
		*out = NULL;
		return -EINVAL;
	}
	return 0;
}

const char *quant_mix_list(char *buf, size_t n)
{
	size_t len = 0;
	buf[0] = 0;
	for (size_t i = 0; i < sizeof(mixes) / sizeof(mixes[0]) && len < n; i++)
		len += (size_t)snprintf(buf + len, n - len, "%s%s", i ? ", " : "", mixes[i].name);
	return buf;
}

static bool selected(enum layers on, int i, int n)
{
	switch (on) {
	case L_MORE: return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
	case L_EIGHTH: return i < n / 8;
	case L_SIXTEENTH: return i < n / 16;
	case L_FIRST2: return i < 2;
	case L_FIRST4: return i < 4;
	default: return false;
	}
}

/* fmt, or the base for -1 */
static int or_base(int fmt, const struct quant_mix *m)
{
	return fmt >= 0 ? fmt : m->base;
}

int quant_mix_pick(const struct quant_mix *m, const char *name, int layer, const struct layout_hparams *hp,
		   int64_t cols)
{
	return quant_mix_pick_im(m, name, layer, hp, cols, false);
}

int quant_mix_pick_im(const struct quant_mix *m, const char *name, int layer, const struct layout_hparams *hp,
		      int64_t cols, bool imatrix)
{
	int fmt = m->base, n = hp->n_layers;
	int gqa = hp->n_kv_heads > 0 ? hp->n_heads / hp->n_kv_heads : 1;
	bool in_layer = layer >= 0;
	size_t len = strlen(name);
	if (len > 5 && !strcmp(name + len - 5, ".bias")) /* gpt-oss's experts' biases [E, n]: added, kept (F16: keep) */
		return WFMT_F16;
	if (!strcmp(name, "output.weight") || (hp->tied_embeddings && !strcmp(name, "token_embd.weight"))) {
		/* rows not whole blocks of the base format: Q8_0 (llama.cpp), then the fallbacks below */
		fmt = cols % wfmt_table[m->base].block && m->output != m->base ? WFMT_Q8_0 : m->output;
	} else if (!strcmp(name, "token_embd.weight")) {
		fmt = or_base(m->embd, m);
	} else if (in_layer && (!strcmp(name, "attn_q.weight") || !strcmp(name, "attn_k.weight"))) {
		fmt = or_base(m->qk, m);
	} else if (in_layer && !strcmp(name, "attn_v.weight")) {
		fmt = gqa >= 4 && m->v_gqa4 >= 0 ? m->v_gqa4 : or_base(selected(m->v_on, layer, n) ? m->v_sel : m->v, m);
		/* llama.cpp's 70B (80 layers, grouped kv heads): attn_v is 8x smaller than attn_q, more bits cost little */
		if (n == 80 && gqa > 1 && !m->no_70b && (fmt == WFMT_Q3_K || fmt == WFMT_Q4_K))
			fmt = WFMT_Q5_K;
	} else if (in_layer && !strcmp(name, "ffn_down.weight")) {
		bool iq4 = m->base == WFMT_IQ4_XS || m->base == WFMT_IQ4_NL;
		/* the IQ4 mixes' more bits on the first eighth only without an imatrix; with one, Q4_0/Q5_0's first
		 * eighth in Q4_1/Q5_1 (llama.cpp's guard against ffn_down's outliers) */
		fmt = or_base(selected(m->down_on, layer, n) && !(iq4 && imatrix) ? m->down_sel : m->down, m);
		if (imatrix && (m->base == WFMT_Q4_0 || m->base == WFMT_Q5_0) && layer < n / 8)
			fmt = m->base == WFMT_Q4_0 ? WFMT_Q4_1 : WFMT_Q5_1;
	} else if (in_layer && !strcmp(name, "attn_output.weight")) {
		fmt = or_base(m->o, m);
	}
	/* a row that is not a whole number of blocks: llama.cpp's fallbacks, then F16 */
	if (cols % wfmt_table[fmt].block)
		fmt = fmt == WFMT_Q6_K ? WFMT_Q8_0 : fmt == WFMT_Q4_K ? WFMT_Q5_0 : fmt == WFMT_Q5_K ? WFMT_Q5_1
		      : fmt == WFMT_Q2_K || fmt == WFMT_Q3_K ? WFMT_Q4_0
		      : fmt == WFMT_IQ4_XS || quant_iq_supported(fmt) ? WFMT_IQ4_NL : fmt;
	if (cols % wfmt_table[fmt].block)
		fmt = WFMT_F16;
	return fmt;
}

bool quant_mix_fell_back(const struct quant_mix *m, const char *name, int layer, const struct layout_hparams *hp,
			 int64_t cols, bool imatrix)
{
	return quant_mix_pick_im(m, name, layer, hp, cols, imatrix) !=
	       quant_mix_pick_im(m, name, layer, hp, (cols + 255) / 256 * 256, imatrix);
}
