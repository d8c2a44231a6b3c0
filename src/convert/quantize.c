/*
 * quantize.c: f32 rows into Q8_0, Q4_0, Q5_0, Q4_K, Q5_K and Q6_K blocks by a search over scales with a
 * weighted least-squares refit (quantize.h), and the named mixes of `ferry convert --quant`.
 */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "convert/quantize.h"
#include "layout/quant.h"
#include "layout/wfmt.h"

#define STEPS 10 /* candidate scales either side of the plain one, a tenth of a level apart */

static int clampi(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

static int level(float v, int lo, int hi)
{
	return clampi((int)lrintf(v), lo, hi);
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

/* Symmetric y = d q, q in [qmin, qmax] (|qmin| >= qmax): the value of largest magnitude goes to qmin (its sign
 * sets d's), then candidates around that level, each refit by least squares; returns the best d. */
static float sym_fit(const float *x, const float *w, int n, int qmin, int qmax, int steps)
{
	float amax = 0, xm = 0;
	for (int i = 0; i < n; i++)
		if (fabsf(x[i]) > amax) {
			amax = fabsf(x[i]);
			xm = x[i];
		}
	if (amax == 0)
		return 0;
	float best = xm / (float)qmin;
	double best_err = INFINITY;
	for (int k = -steps; k <= steps; k++) {
		float d0 = xm / ((float)qmin + 0.1f * (float)k);
		double sxq = 0, sqq = 0;
		for (int i = 0; i < n; i++) {
			int q = level(x[i] / d0, qmin, qmax);
			sxq += (double)w[i] * x[i] * q;
			sqq += (double)w[i] * q * q;
		}
		if (sqq <= 0)
			continue;
		float d = (float)(sxq / sqq);
		double err = 0;
		for (int i = 0; i < n; i++) {
			double e = x[i] - d * (float)level(x[i] / d, qmin, qmax);
			err += w[i] * e * e;
		}
		if (err < best_err) {
			best_err = err;
			best = d;
		}
	}
	return best;
}

/* Asymmetric y = a q + b, q in 0..nmax, b <= 0 (the K-quants store -b as a non-negative min): candidates
 * of the scale over [min, max], each refit by weighted least squares in (a, b). */
static void asym_fit(const float *x, const float *w, int n, int nmax, float *a_out, float *b_out)
{
	float mn = x[0], mx = x[0];
	for (int i = 1; i < n; i++) {
		mn = x[i] < mn ? x[i] : mn;
		mx = x[i] > mx ? x[i] : mx;
	}
	mn = mn > 0 ? 0 : mn;
	*a_out = 0;
	*b_out = mn;
	if (mx <= mn)
		return;
	/* the plain fit first: the range over the levels */
	double best_err = 0;
	*a_out = (mx - mn) / (float)nmax;
	for (int i = 0; i < n; i++) {
		double e = x[i] - (*a_out * level((x[i] - mn) / *a_out, 0, nmax) + mn);
		best_err += w[i] * e * e;
	}
	for (int k = -STEPS; k <= STEPS; k++) {
		float is = ((float)nmax + 0.1f * (float)k) / (mx - mn);
		double sw = 0, sl = 0, sll = 0, sx = 0, sxl = 0;
		for (int i = 0; i < n; i++) {
			int l = level(is * (x[i] - mn), 0, nmax);
			sw += w[i];
			sl += (double)w[i] * l;
			sll += (double)w[i] * l * l;
			sx += (double)w[i] * x[i];
			sxl += (double)w[i] * x[i] * l;
		}
		double det = sw * sll - sl * sl, a, b;
		if (det <= 0)
			continue;
		a = (sw * sxl - sl * sx) / det;
		b = (sll * sx - sl * sxl) / det;
		if (b > 0) {
			b = 0;
			a = sxl / sll;
		}
		if (a <= 0)
			continue;
		double err = 0;
		for (int i = 0; i < n; i++) {
			double e = x[i] - (a * level((float)((x[i] - b) / a), 0, nmax) + b);
			err += w[i] * e * e;
		}
		if (err < best_err) {
			best_err = err;
			*a_out = (float)a;
			*b_out = (float)b;
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

/* Q4_K (qh NULL) and Q5_K: 8 sub-blocks of 32, y = d sc q - dmin m with 6-bit sc and m. */
static void quant_k45(const float *x, const float *imp, uint16_t *dh, uint16_t *mh, uint8_t *scales, uint8_t *qs,
		      uint8_t *qh)
{
	int nmax = qh ? 31 : 15;
	float w[QK_K], a[8], mins[8], amax = 0, mmax = 0;
	/* per sub-block: rms + |x| (without an importance matrix), which fits the asymmetric grid better than
	 * the squared weights of the symmetric formats (measured against llama-quantize, bench/bench_quant.py) */
	if (imp) {
		weights_of(x, imp, QK_K, w);
	} else {
		for (int j = 0; j < 8; j++) {
			double s2 = 0;
			for (int l = 0; l < 32; l++)
				s2 += (double)x[32 * j + l] * x[32 * j + l];
			float av = (float)sqrt(s2 / 32);
			for (int l = 0; l < 32; l++)
				w[32 * j + l] = av + fabsf(x[32 * j + l]);
		}
	}
	for (int j = 0; j < 8; j++) {
		float b;
		asym_fit(x + 32 * j, w + 32 * j, 32, nmax, &a[j], &b);
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

bool quant_supported(int fmt)
{
	return fmt == WFMT_Q8_0 || fmt == WFMT_Q4_0 || fmt == WFMT_Q5_0 || fmt == WFMT_Q4_K || fmt == WFMT_Q5_K ||
	       fmt == WFMT_Q6_K;
}

int quant_row(int fmt, const float *x, const float *imp, int64_t n, void *dst)
{
	if (!quant_supported(fmt) || n % wfmt_table[fmt].block)
		return -1;
	int64_t nb = n / wfmt_table[fmt].block, B = wfmt_table[fmt].block;
	for (int64_t i = 0; i < nb; i++) {
		const float *xi = x + i * B, *ii = imp ? imp + i * B : NULL;
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

/* The mixes, as llama.cpp's llama_model_quantize picks per tensor: a base format, the output matrix's, and
 * for attn_v and ffn_down either more bits on the layers use_more_bits names (the _M mixes) or on the first
 * eighth of the layers (Q4_K_S). */
enum more { MORE_NONE, MORE_SOME, MORE_FIRST };
struct quant_mix {
	const char *name;
	int base, output, more_fmt;
	enum more more;
};

static const struct quant_mix mixes[] = {
	{"Q4_K_M", WFMT_Q4_K, WFMT_Q6_K, WFMT_Q6_K, MORE_SOME},
	{"Q4_K_S", WFMT_Q4_K, WFMT_Q6_K, WFMT_Q5_K, MORE_FIRST},
	{"Q5_K_M", WFMT_Q5_K, WFMT_Q6_K, WFMT_Q6_K, MORE_SOME},
	{"Q5_K_S", WFMT_Q5_K, WFMT_Q6_K, -1, MORE_NONE},
	{"Q6_K", WFMT_Q6_K, WFMT_Q6_K, -1, MORE_NONE},
	{"Q8_0", WFMT_Q8_0, WFMT_Q8_0, -1, MORE_NONE},
	{"Q4_0", WFMT_Q4_0, WFMT_Q6_K, -1, MORE_NONE},
	{"Q5_0", WFMT_Q5_0, WFMT_Q6_K, -1, MORE_NONE},
	/* single formats: every matrix, the output too */
	{"Q4_K", WFMT_Q4_K, WFMT_Q4_K, -1, MORE_NONE},
	{"Q5_K", WFMT_Q5_K, WFMT_Q5_K, -1, MORE_NONE},
};

const struct quant_mix *quant_mix_find(const char *name)
{
	for (size_t i = 0; name && i < sizeof(mixes) / sizeof(mixes[0]); i++)
		if (!strcasecmp(name, mixes[i].name))
			return &mixes[i];
	return NULL;
}

const char *quant_mix_list(char *buf, size_t n)
{
	size_t len = 0;
	buf[0] = 0;
	for (size_t i = 0; i < sizeof(mixes) / sizeof(mixes[0]) && len < n; i++)
		len += (size_t)snprintf(buf + len, n - len, "%s%s", i ? ", " : "", mixes[i].name);
	return buf;
}

/* llama.cpp's use_more_bits: the first and last eighth of the layers and every third one between */
static bool more_bits(int i, int n)
{
	return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

int quant_mix_pick(const struct quant_mix *m, const char *name, int layer, int n_layers, int64_t cols)
{
	int fmt = m->base;
	if (!strcmp(name, "output.weight"))
		fmt = m->output;
	else if (layer >= 0 && (!strcmp(name, "attn_v.weight") || !strcmp(name, "ffn_down.weight")) &&
		 ((m->more == MORE_SOME && more_bits(layer, n_layers)) || (m->more == MORE_FIRST && layer < n_layers / 8)))
		fmt = m->more_fmt;
	/* a row that is not a whole number of blocks: llama.cpp's fallbacks (Q5_1 for Q5_K: ferry has Q5_0) */
	if (cols % wfmt_table[fmt].block)
		fmt = fmt == WFMT_Q6_K ? WFMT_Q8_0 : fmt == WFMT_Q4_K || fmt == WFMT_Q5_K ? WFMT_Q5_0 : fmt;
	if (cols % wfmt_table[fmt].block)
		fmt = WFMT_F16;
	return fmt;
}
