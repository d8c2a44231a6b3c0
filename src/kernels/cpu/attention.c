/*
 * attention.c: the paged KV cache on the CPU (src/kernels/kv_pages.h): cpu_kv_store writes a range's key and
 * value rows into their pages in the pool's format, cpu_attention runs causal GQA attention over them.
 *
 * Attention works on items of (token, kv head, a run of that kv head's query heads): each key row and
 * value row the token sees is dequantized to f32 once per item and used by every query head of the run.
 * A run is all g = H/Hkv query heads unless that leaves threads idle (decode of few tokens) or the scores
 * of g heads do not fit the scratch; a head's result does not depend on its run, since each head is
 * computed in the same order whatever it is grouped with: scores in key order, max-subtracted softmax in
 * f32, the weighted sum of value rows in key order. So results do not depend on the thread count.
 *
 * Attention sinks (gpt-oss): a head's sink logit joins the max and the denominator, no value row with it.
 *
 * Token trees (src/kernels/kv_pages.h): keys of other branches score -inf and are never read, so a chain
 * given as a tree computes exactly what the plain part computes.
 *
 * Letters: T tokens of the range, H query heads, Hkv kv heads, g = H / Hkv, Dh head dim, n keys a query sees.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

/* Query heads whose scores cpu_attention_scratch reserves room for. */
#define ATT_SCRATCH_HEADS 8

/* A broken invariant of the caller (an unmapped page it should have mapped, too little scratch): stop. */
#define ATT_REQUIRE(c)                                                                                    \
	do {                                                                                              \
		if (!(c)) {                                                                               \
			fprintf(stderr, "%s:%d: %s failed\n", __FILE__, __LINE__, #c);                    \
			abort();                                                                          \
		}                                                                                         \
	} while (0)

/* The q part and the s part of row (h, position p) of pool `pool` (0 keys, 1 values), through the page
 * table row `pages`. */
static void row_locate(const struct kv_layer *kv, int pool, const int *pages, int h, int p, const uint8_t **q,
		       const uint8_t **s)
{
	int phys = pages[p / kv->page], r = p % kv->page, rf = kv_pool_fmt(kv->fmt, pool);
	ATT_REQUIRE(phys >= 0 && phys < kv->n_pages);
	size_t qrow = (size_t)kv_qrow_bytes(rf, kv->Dh), srow = (size_t)kv_srow_bytes(rf, kv->Dh);
	const uint8_t *base = (const uint8_t *)(pool ? kv->v : kv->k) +
			      (size_t)phys * kv_page_bytes(rf, kv->Hkv, kv->Dh, kv->page);
	*q = base + ((size_t)h * (size_t)kv->page + (size_t)r) * qrow;
	*s = base + (size_t)kv->Hkv * (size_t)kv->page * qrow + ((size_t)h * (size_t)kv->page + (size_t)r) * srow;
}

void cpu_kv_store(const struct kv_layer *kv, const float *k, const float *v, const struct kv_batch *bt)
{
	int Hkv = kv->Hkv, Dh = kv->Dh;
#pragma omp parallel for schedule(static)
	for (int t = 0; t < bt->T; t++) {
		const int *pages = bt->pages + (size_t)bt->part_row[bt->tok_part[t]] * (size_t)bt->max_pages;
		for (int h = 0; h < Hkv; h++) {
			size_t off = ((size_t)t * (size_t)Hkv + (size_t)h) * (size_t)Dh;
			const uint8_t *q, *s;
			row_locate(kv, 0, pages, h, bt->pos[t], &q, &s);
			cpu_kv_row_quant(kv_pool_fmt(kv->fmt, 0), k + off, (void *)q, (void *)s, Dh);
			row_locate(kv, 1, pages, h, bt->pos[t], &q, &s);
			cpu_kv_row_quant(kv_pool_fmt(kv->fmt, 1), v + off, (void *)q, (void *)s, Dh);
		}
	}
}

int64_t cpu_attention_scratch(int max_ctx, int Dh)
{
	return (int64_t)ATT_SCRATCH_HEADS * max_ctx + Dh;
}

/* Row j of pool `pool` (0 keys, 1 values) as f32: the row itself for F32, else dequantized into buf. */
static const float *row_f32(const struct kv_layer *kv, int pool, const int *pages, int h, int j, float *buf)
{
	const uint8_t *q, *s;
	int rf = kv_pool_fmt(kv->fmt, pool);
	row_locate(kv, pool, pages, h, j, &q, &s);
	if (rf == KV_F32)
		return (const float *)q;
	cpu_kv_row_dequant(rf, q, s, buf, kv->Dh);
	return buf;
}

/* Query heads h0 .. h0+nh-1 (of kv head hk) of token t. sc: nh * n scores, row: Dh floats. */
static void attend_item(float *out, const float *q, const struct kv_layer *kv, const struct kv_batch *bt, int H,
			int window, float scale, const float *sinks, int t, int hk, int h0, int nh, float *sc, float *row)
{
	int Dh = kv->Dh, p = bt->pos[t], lp = bt->lpos ? bt->lpos[t] : p;
	int j0 = window > 0 && lp - window + 1 > 0 ? lp - window + 1 : 0, n = p - j0 + 1;
	int tb = bt->tree_base ? bt->tree_base[t] : KV_TREE_NONE;
	const uint32_t *mask = bt->tree_mask ? bt->tree_mask + (size_t)t * KV_TREE_WORDS : NULL;
	const int *pages = bt->pages + (size_t)bt->part_row[bt->tok_part[t]] * (size_t)bt->max_pages;
	const float *qt = q + ((size_t)t * (size_t)H + (size_t)h0) * (size_t)Dh;
	float *ot = out + ((size_t)t * (size_t)H + (size_t)h0) * (size_t)Dh;
	for (int j = 0; j < n; j++) {
		if (!kv_visible(p, lp, tb, mask, j0 + j, window)) { /* another branch of the token's tree */
			for (int a = 0; a < nh; a++)
				sc[(size_t)a * (size_t)n + (size_t)j] = -INFINITY;
			continue;
		}
		const float *kr = row_f32(kv, 0, pages, hk, j0 + j, row);
		for (int a = 0; a < nh; a++) {
			const float *qa = qt + (size_t)a * (size_t)Dh;
			float s = 0;
#pragma omp simd reduction(+ : s)
			for (int i = 0; i < Dh; i++)
				s += qa[i] * kr[i];
			sc[(size_t)a * (size_t)n + (size_t)j] = s * scale;
		}
	}
	for (int a = 0; a < nh; a++) {
		float *sa = sc + (size_t)a * (size_t)n, mx = sinks ? sinks[h0 + a] : -INFINITY;
		for (int j = 0; j < n; j++)
			mx = sa[j] > mx ? sa[j] : mx;
		float sum = sinks ? expf(sinks[h0 + a] - mx) : 0; /* the sink's share, given to no value */
		for (int j = 0; j < n; j++) {
			sa[j] = expf(sa[j] - mx);
			sum += sa[j];
		}
		for (int j = 0; j < n; j++)
			sa[j] /= sum;
	}
	memset(ot, 0, sizeof(float) * (size_t)nh * (size_t)Dh);
	for (int j = 0; j < n; j++) {
		if (!kv_visible(p, lp, tb, mask, j0 + j, window))
			continue;
		const float *vr = row_f32(kv, 1, pages, hk, j0 + j, row);
		for (int a = 0; a < nh; a++) {
			float w = sc[(size_t)a * (size_t)n + (size_t)j], *oa = ot + (size_t)a * (size_t)Dh;
#pragma omp simd
			for (int i = 0; i < Dh; i++)
				oa[i] += w * vr[i];
		}
	}
}

void cpu_attention(float *out, const float *q, const struct kv_layer *kv, const struct kv_batch *bt, int H,
		   int window, float scale, const float *sinks, float *scratch, int64_t per_thread)
{
	int T = bt->T, Hkv = kv->Hkv, g = H / Hkv, Dh = kv->Dh;
	/* a tree token's stored position runs ahead of its logical one by less than KV_TREE_MAX */
	int w_keys = window + (bt->tree_base ? KV_TREE_MAX : 0);
	int n_max = window > 0 && w_keys < bt->max_pos + 1 ? w_keys : bt->max_pos + 1;
	/* Heads per item: all g, split further while items are fewer than threads, capped by the scratch. */
	int chunks = 1, nth = omp_get_max_threads();
	while (chunks < g && (int64_t)T * Hkv * chunks < nth)
		chunks++;
	int run = (g + chunks - 1) / chunks;
	int64_t fit = (per_thread - Dh) / (n_max > 0 ? n_max : 1);
	ATT_REQUIRE(fit >= 1);
	if (run > fit)
		run = (int)fit;
	int per_kv = (g + run - 1) / run;
	int64_t items = (int64_t)T * Hkv * per_kv;
#pragma omp parallel
	{
		float *sc = scratch + (size_t)omp_get_thread_num() * (size_t)per_thread;
		float *row = sc + (size_t)per_thread - (size_t)Dh;
#pragma omp for schedule(dynamic, 1)
		for (int64_t it = 0; it < items; it++) {
			int t = (int)(it / ((int64_t)Hkv * per_kv)), hk = (int)(it / per_kv % Hkv), c = (int)(it % per_kv);
			int h0 = hk * g + c * run, nh = g - c * run < run ? g - c * run : run;
			attend_item(out, q, kv, bt, H, window, scale, sinks, t, hk, h0, nh, sc, row);
		}
	}
}
