/*
 * quantize_iq.c: f32 blocks of 256 into the grid IQ formats (quantize_iq.h). Every value of these formats is
 * d f s c (src/layout/quant_iq.h): an f16 d, a power of two f, an odd sub-scale s = 2n + 1 per 16 or 32 values
 * and a code c per value, taken 8 (or 4) at a time from a grid entry of src/layout/iq_grids.h, with a sign per
 * value (IQ2_XXS, IQ2_XS, IQ3_XXS: an even number of minus signs per 8; IQ2_S, IQ3_S: free) or, for IQ1_S and
 * IQ1_M, 8 g + a shift of +-1 per 32 (IQ1_S) or per 8 (IQ1_M) values with g in -1, 0, 1.
 *
 * The search, per block:
 *   1. signs: each value's own; where the parity rule forbids that (an odd count in a group of 8), the value
 *      of least weight w x^2 takes the other sign, and its target magnitude becomes -|x| (the grid then pulls
 *      it towards the smallest code rather than pretending it is +|x|).
 *   2. per sub-block (the values of one s), candidate scales around the largest magnitude over the top code;
 *      for each, every group's nearest grid entry under the weighted error, the scale refit by weighted least
 *      squares to those entries and the entries chosen again; the scale of least error is the sub-block's.
 *      IQ1 (3 levels per value) instead: the sub-block's values sorted, the least-error scale of every split
 *      into the 3 levels (and shifts) in closed form, then that one scale's grid entries and one refit
 *      (iq1_split_scale). It finds scales the candidates above miss (outliers clipped: 1-2% less error) in a
 *      third of their time (bench/RESULTS.md); quant_iq_dense keeps the candidates for IQ1, the tests' reference.
 *   3. the block's d from the largest sub-block scale (3 candidates, the top s at 2nmax + 1 - k), each
 *      sub-block's n rounded and (not IQ1) its two neighbours tried, each with its entries chosen again;
 *      least error wins.
 * "Nearest grid entry" is a lookup, not a scan: a group's target rounded per value to the grid's levels is a
 * point of a small lattice (3^8 for IQ2 and IQ1, 8^4 for IQ3); for each lattice point the grid entries nearest
 * it (and those one level step further, at most NB_MAX) are listed once per format (on first use), and the
 * weighted error picks among them.
 * Speed: the search meets a group's lattice point at many scales, so each group keeps its weighted sums at the
 * point it last met (struct grp_stats): there an entry's error at scale d is a - 2 d b + d^2 c, one multiply-add;
 * a refit that lands on a scale already tried is not fitted again; levels and lattice points are counted with
 * 8-lane vector compares, and a new point's sums take 8 entries at a time.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "convert/quantize_iq.h"
#include "layout/iq_grids.h"
#include "layout/quant.h"
#include "layout/wfmt.h"

#define NB_MAX 32    /* grid entries listed per lattice point */
#define MAX_LV 8     /* levels per coordinate */
#define N_CAND 15    /* candidate scales per sub-block */
static bool iq_dense; /* quant_iq_dense: IQ1 searched as the other kinds are */

/* 8 lanes (GCC/Clang vector extensions: AVX where the build has it, SSE pairs else) */
typedef float v8f __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef int8_t v8b __attribute__((vector_size(8)));

enum iq_signs { SG_PARITY, SG_FREE, SG_SHIFT };

struct iq_kind {
	int fmt;
	int gw;            /* values per grid entry: 8 or 4 */
	int n_grid;
	enum iq_signs signs;
	int sub;           /* values per sub-scale s: 32 or 16 */
	int nmax;          /* s = 2n + 1, n in 0..nmax (15: 4 bits, 7: 3 bits) */
	int shift_n;       /* SG_SHIFT: values sharing one shift (32 or 8) */
	float f;           /* value = d f s c */
	/* built by kind_init: the grid's codes (n_grid x gw, IQ1: 8 g), the levels, the neighbour lists */
	float *gv;
	int n_lv;
	float lv[MAX_LV];
	float mid[MAX_LV]; /* mid[l]: halfway between levels l and l + 1 */
	v8i pw;            /* n_lv^j for the gw coordinates, 0 past them */
	int n_lat;
	uint8_t *nn;       /* per lattice point: how many listed */
	uint16_t *nb;      /* per lattice point: NB_MAX entries, nearest first */
	int8_t *nbc;       /* per lattice point: their codes, gw rows of NB_MAX (code j of entry m at j NB_MAX + m) */
	atomic_int ready;
};

static struct iq_kind kinds[] = {
	{WFMT_IQ2_XXS, 8, 256, SG_PARITY, 32, 15, 0, .f = 0.125f},
	{WFMT_IQ2_XS, 8, 512, SG_PARITY, 16, 15, 0, .f = 0.125f},
	{WFMT_IQ2_S, 8, 1024, SG_FREE, 16, 15, 0, .f = 0.125f},
	{WFMT_IQ3_XXS, 4, 256, SG_PARITY, 32, 15, 0, .f = 0.25f},
	{WFMT_IQ3_S, 4, 512, SG_FREE, 32, 15, 0, .f = 1.0f},
	{WFMT_IQ1_S, 8, 2048, SG_SHIFT, 32, 7, 32, .f = 0.125f},
	{WFMT_IQ1_M, 8, 2048, SG_SHIFT, 16, 7, 8, .f = 0.125f},
};
#define N_KINDS (int)(sizeof(kinds) / sizeof(kinds[0]))

/* code j of grid entry i of kind k's table (IQ1: 8 g, the shift apart) */
static float grid_code(const struct iq_kind *k, int i, int j)
{
	switch (k->fmt) {
	case WFMT_IQ2_XXS: return (float)(iq2xxs_grid[i] >> 8 * j & 255);
	case WFMT_IQ2_XS: return (float)(iq2xs_grid[i] >> 8 * j & 255);
	case WFMT_IQ2_S: return (float)(iq2s_grid[i] >> 8 * j & 255);
	case WFMT_IQ3_XXS: return (float)(iq3xxs_grid[i] >> 8 * j & 255);
	case WFMT_IQ3_S: return (float)(iq3s_grid[i] >> 8 * j & 255);
	default: return 8.0f * (float)(int8_t)(iq1s_grid[i] >> 8 * j & 255);
	}
}

struct cand {
	float d2;
	uint16_t i;
};

static int cand_cmp(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	return x->d2 < y->d2 ? -1 : x->d2 > y->d2 ? 1 : (int)x->i - (int)y->i;
}

/* The codes, levels and neighbour lists of kind k (once, under build_lock) */
static void kind_build(struct iq_kind *k)
{
	int gw = k->gw;
	k->gv = malloc(sizeof(float) * (size_t)k->n_grid * (size_t)gw);
	FERRY_ASSERT(k->gv);
	k->n_lv = 0;
	for (int i = 0; i < k->n_grid; i++)
		for (int j = 0; j < gw; j++) {
			float v = k->gv[i * gw + j] = grid_code(k, i, j);
			int l = 0;
			while (l < k->n_lv && k->lv[l] < v)
				l++;
			if (l < k->n_lv && k->lv[l] == v)
				continue;
			FERRY_ASSERT(k->n_lv < MAX_LV);
			memmove(k->lv + l + 1, k->lv + l, sizeof(float) * (size_t)(k->n_lv - l));
			k->lv[l] = v;
			k->n_lv++;
		}
	float step = INFINITY; /* the smallest distance between two levels */
	for (int l = 0; l + 1 < k->n_lv; l++) {
		step = fminf(step, k->lv[l + 1] - k->lv[l]);
		k->mid[l] = 0.5f * (k->lv[l] + k->lv[l + 1]);
	}
	k->n_lat = 1;
	for (int j = 0; j < gw; j++) {
		k->pw[j] = k->n_lat;
		k->n_lat *= k->n_lv;
	}
	k->nn = malloc((size_t)k->n_lat);
	k->nb = malloc(sizeof(uint16_t) * (size_t)k->n_lat * NB_MAX);
	struct cand *c = malloc(sizeof(struct cand) * (size_t)k->n_grid);
	k->nbc = calloc((size_t)k->n_lat * (size_t)gw * NB_MAX, 1);
	FERRY_ASSERT(k->nn && k->nb && k->nbc && c);
	for (int p = 0; p < k->n_lat; p++) {
		float pt[8];
		for (int j = 0, r = p; j < gw; j++, r /= k->n_lv)
			pt[j] = k->lv[r % k->n_lv];
		for (int i = 0; i < k->n_grid; i++) {
			float d2 = 0;
			for (int j = 0; j < gw; j++)
				d2 += (pt[j] - k->gv[i * gw + j]) * (pt[j] - k->gv[i * gw + j]);
			c[i] = (struct cand){d2, (uint16_t)i};
		}
		qsort(c, (size_t)k->n_grid, sizeof(*c), cand_cmp);
		int n = 0;
		while (n < NB_MAX && n < k->n_grid && c[n].d2 <= c[0].d2 + step * step * 1.01f) {
			k->nb[(size_t)p * NB_MAX + n] = c[n].i;
			for (int j = 0; j < gw; j++)
				k->nbc[((size_t)p * (size_t)gw + (size_t)j) * NB_MAX + (size_t)n] =
					(int8_t)k->gv[(size_t)c[n].i * (size_t)gw + (size_t)j];
			n++;
		}
		k->nn[p] = (uint8_t)n;
	}
	free(c);
}

static pthread_mutex_t build_lock = PTHREAD_MUTEX_INITIALIZER;

static const struct iq_kind *kind_of(int fmt)
{
	for (int i = 0; i < N_KINDS; i++)
		if (kinds[i].fmt == fmt) {
			struct iq_kind *k = &kinds[i];
			if (!atomic_load_explicit(&k->ready, memory_order_acquire)) {
				pthread_mutex_lock(&build_lock);
				if (!atomic_load_explicit(&k->ready, memory_order_relaxed))
					kind_build(k);
				atomic_store_explicit(&k->ready, 1, memory_order_release);
				pthread_mutex_unlock(&build_lock);
			}
			return k;
		}
	return NULL;
}

bool quant_iq_supported(int fmt)
{
	for (int i = 0; i < N_KINDS; i++)
		if (kinds[i].fmt == fmt)
			return true;
	return false;
}

/* One group's sums at the lattice point it last rounded to: with targets t, weights w and the listed entries'
 * codes c (plus the group's shift), the error at scale d is a - 2 d b + d^2 c'. The scale search meets the
 * same point at many scales (neighbouring candidates, the refit, the block's sub-scales), and there an entry
 * costs a multiply-add, not gw of them. */
struct grp_stats {
	int p; /* -1: none yet */
	float a;
	float b[NB_MAX], c[NB_MAX];
};

/* The grid entry nearest the gw targets t (in code units times d, less d dl) under weights w at scale d
 * (id = 1 / d); *err its weighted squared error. st: the group's sums for this shift dl. */
static int nearest(const struct iq_kind *k, const float *t, const float *w, float d, float id, float dl,
		   struct grp_stats *st, float *err)
{
	int gw = k->gw;
	v8f v;
	if (gw == 8) {
		memcpy(&v, t, sizeof(v));
	} else { /* one 4-lane load widened (a 16-byte copy into a zeroed 32-byte vector stalls its load) */
		v4f h, z = {0};
		memcpy(&h, t, sizeof(h));
		v = __builtin_shufflevector(h, z, 0, 1, 2, 3, 4, 5, 6, 7);
	}
	v = v * id - dl;
	v8i l = {0};
	for (int i = 0; i + 1 < k->n_lv; i++) /* the level of each value: how many midpoints lie below it */
		l -= v > k->mid[i];
	l *= k->pw; /* the lattice point: sum of level j times n_lv^j (pw is 0 past gw) */
	l += __builtin_shufflevector(l, l, 4, 5, 6, 7, 0, 1, 2, 3);
	l += __builtin_shufflevector(l, l, 2, 3, 0, 1, 2, 3, 0, 1);
	int p = l[0] + l[1];
	const uint16_t *nb = k->nb + (size_t)p * NB_MAX;
	int n = k->nn[p];
	if (st->p != p) {
		st->p = p;
		st->a = 0;
		for (int j = 0; j < gw; j++)
			st->a += w[j] * t[j] * t[j];
		const int8_t *code = k->nbc + (size_t)p * (size_t)gw * NB_MAX;
		if (gw == 4) /* IQ3 (no shift): lists of 2-3 entries on average, 4 codes each: not worth a vector */
			for (int m = 0; m < n; m++) {
				const float *g = k->gv + (size_t)nb[m] * 4;
				float b = 0, c = 0;
				for (int j = 0; j < 4; j++) {
					b += w[j] * t[j] * g[j];
					c += w[j] * g[j] * g[j];
				}
				st->b[m] = b;
				st->c[m] = c;
			}
		else for (int m = 0; m < n; m += 8) { /* 8 entries at a time; the lanes past n are never read */
			v8f b = {0}, c = {0};
			for (int j = 0; j < gw; j++) {
				v8b cb;
				memcpy(&cb, code + j * NB_MAX + m, sizeof(cb));
				v8f cj = __builtin_convertvector(__builtin_convertvector(cb, v8i), v8f) + dl;
				b += w[j] * t[j] * cj;
				c += w[j] * cj * cj;
			}
			memcpy(st->b + m, &b, sizeof(b));
			memcpy(st->c + m, &c, sizeof(c));
		}
	}
	int best = 0;
	float best_e = INFINITY;
	for (int m = 0; m < n; m++) {
		float e = st->a - d * (2.0f * st->b[m] - d * st->c[m]);
		if (e < best_e) {
			best_e = e;
			best = m;
		}
	}
	*err = fmaxf(best_e, 0.0f); /* a rounding below 0 is an exact fit */
	return nb[best];
}

/* The entries (idx: one per gw values) and shifts (per group of 8; 0 without) of n values of targets t at
 * scale d (value = d c); returns the weighted error. st: the sums of these n values' groups, 2 per group
 * (shift -1, +1) for the IQ1 kinds, one else. */
static float sub_fit(const struct iq_kind *k, const float *t, const float *w, int n, float d, uint16_t *idx,
		     int8_t *shift, struct grp_stats *st)
{
	bool sh = k->signs == SG_SHIFT;
	int scope = sh ? k->shift_n : n, gw = k->gw;
	float err = 0, id1 = 1.0f / d;
	for (int s0 = 0; s0 < n; s0 += scope) {
		float best = INFINITY;
		for (int dl = sh ? -1 : 0; dl <= (sh ? 1 : 0); dl += 2) {
			uint16_t id[32 / 4];
			float e = 0;
			for (int gi = s0 / gw, m = 0; m < scope / gw; gi++, m++) { /* group gi, m-th of this scope */
				float eg;
				struct grp_stats *sg = st + (sh ? 2 * gi + (dl > 0) : gi);
				id[m] = (uint16_t)nearest(k, t + gi * gw, w + gi * gw, d, id1, (float)dl, sg, &eg);
				e += eg;
			}
			if (e < best) {
				best = e;
				memcpy(idx + s0 / gw, id, sizeof(uint16_t) * (size_t)(scope / gw));
				for (int g = s0; g < s0 + scope; g += 8)
					shift[g / 8] = (int8_t)dl;
			}
		}
		err += best;
	}
	return err;
}

/* the weighted least-squares scale of targets t for the codes idx, shift; 0 when none */
static float refit(const struct iq_kind *k, const float *t, const float *w, int n, const uint16_t *idx,
		   const int8_t *shift)
{
	double stc = 0, scc = 0;
	for (int i = 0; i < n; i++) {
		float c = k->gv[(size_t)idx[i / k->gw] * (size_t)k->gw + (size_t)(i % k->gw)] + (float)shift[i / 8];
		stc += (double)w[i] * t[i] * c;
		scc += (double)w[i] * c * c;
	}
	return scc > 0 && stc > 0 ? (float)(stc / scc) : 0;
}

/* The scale (value = d c) of least weighted error for the n targets t: candidates that put the largest
 * magnitude at 0.6 .. 1.3 times the top code or on a lower level (a flat group's grid entry may lie there),
 * each refit once */
static float sub_search(const struct iq_kind *k, const float *t, const float *w, int n, struct grp_stats *st)
{
	float amax = 0, top = k->lv[k->n_lv - 1] + (k->signs == SG_SHIFT ? 1.0f : 0.0f);
	for (int i = 0; i < n; i++)
		amax = fmaxf(amax, fabsf(t[i]));
	if (amax == 0)
		return 0;
	uint16_t idx[32 / 4];
	int8_t shift[4];
	float best_d = amax / top, best_e = INFINITY, refits[N_CAND + MAX_LV];
	int n_refits = 0;
	for (int c = 0; c < N_CAND + k->n_lv - 1; c++) { /* then the largest magnitude on each lower level */
		float d = c < N_CAND ? amax / (top * (0.6f + 0.05f * (float)c)) : amax / fabsf(k->lv[c - N_CAND]);
		if (!isfinite(d))
			continue;
		float e = sub_fit(k, t, w, n, d, idx, shift, st);
		if (e < best_e) {
			best_e = e;
			best_d = d;
		}
		float d2 = refit(k, t, w, n, idx, shift);
		bool again = false; /* neighbouring candidates often choose the same codes, so the same refit */
		for (int r = 0; r < n_refits && !again; r++)
			again = refits[r] == d2;
		if (again || !(d2 > 0))
			continue;
		refits[n_refits++] = d2;
		if ((e = sub_fit(k, t, w, n, d2, idx, shift, st)) < best_e) {
			best_e = e;
			best_d = d2;
		}
	}
	return best_d;
}

/* IQ1 (value = d c, c = 8 g + shift, g in -1, 0, 1, one shift of +-1 per scope of shift_n values): the n values
 * sorted once, every split of them into g = -1 (the lowest i1), 0 (up to i2) and +1 (the rest), with every choice
 * of shift per scope, has a closed-form least-squares scale d = X / Q (X = sum w t c, Q = sum w c^2) and error
 * sum w t^2 - X d, from prefix sums per scope. Returns the scale of the split of least error (0: none has X > 0).
 * The grid holds only some of the splits' points, so this is where the grid search starts, not its answer.
 * Each i1 scores 8 values of i2 per vector (those below i1 or past n masked off). */
#define TIE_HI (1 + 1e-5f) /* splits whose errors differ by less are a tie, which the smaller scale wins */
#define TIE_LO (1 - 1e-5f)

static float iq1_split_scale(const struct iq_kind *k, const float *t, const float *w, int n)
{
	int nsc = n / k->shift_n, ord[32];
	float px[2][48], pw[2][48];
	FERRY_ASSERT(nsc <= 2 && n <= 32);
	for (int i = 0; i < n; i++) { /* insertion sort of the indices by value */
		int j = i;
		for (; j > 0 && t[ord[j - 1]] > t[i]; j--)
			ord[j] = ord[j - 1];
		ord[j] = i;
	}
	for (int h = 0; h < 2; h++) {
		px[h][0] = pw[h][0] = 0;
		for (int j = 0; j < n; j++) {
			int i = ord[j];
			bool in = h == i / k->shift_n;
			px[h][j + 1] = px[h][j] + (in ? w[i] * t[i] : 0);
			pw[h][j + 1] = pw[h][j] + (in ? w[i] : 0);
		}
		for (int j = n + 1; j < 48; j++)
			px[h][j] = px[h][n], pw[h][j] = pw[h][n];
	}
	const v8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
	v8f best_s = {0}, best_d = {0};
	for (int i1 = 0; i1 <= n; i1++)
		for (int i2 = i1 & ~7; i2 <= n; i2 += 8) {
			v8i j2 = lane + i2;
			v8i ok = (j2 >= i1) & (j2 <= n);
			v8f x8[2], q0[2], q16[2];
			for (int h = 0; h < nsc; h++) {
				v8f p2, w2;
				memcpy(&p2, px[h] + i2, sizeof(p2));
				memcpy(&w2, pw[h] + i2, sizeof(w2));
				float tx = px[h][n], tw = pw[h][n], p1 = px[h][i1], w1 = pw[h][i1];
				x8[h] = 8.0f * (tx - p1 - p2);
				q0[h] = tw + 64.0f * (tw + w1 - w2);
				q16[h] = 16.0f * (tw - w1 - w2);
			}
			for (int sh = 0; sh < 1 << nsc; sh++) { /* bit h: scope h's shift is +1 */
				v8f X = {0}, Q = {0};
				for (int h = 0; h < nsc; h++) {
					float dl = sh >> h & 1 ? 1.0f : -1.0f, tx = px[h][n];
					X += x8[h] + dl * tx;
					Q += q0[h] + dl * q16[h];
				}
				v8f d = X / Q, sc = X * d;
				v8i take = ok & (X > 0) & (Q > 0) & ((sc > best_s * TIE_HI) | ((sc >= best_s * TIE_LO) & (d < best_d)));
				best_s = (v8f)(((v8i)sc & take) | ((v8i)best_s & ~take));
				best_d = (v8f)(((v8i)d & take) | ((v8i)best_d & ~take));
			}
		}
	float s = 0, d = 0;
	for (int l = 0; l < 8; l++)
		if (best_s[l] > s * TIE_HI || (best_s[l] >= s * TIE_LO && best_d[l] < d)) {
			s = best_s[l];
			d = best_d[l];
		}
	return d;
}

/* IQ1's sub-block scale: the best split's scale, its grid entries chosen, then the scale refit to them once */
static float iq1_sub_search(const struct iq_kind *k, const float *t, const float *w, int n, struct grp_stats *st)
{
	uint16_t idx[32 / 4];
	int8_t shift[4];
	float d = iq1_split_scale(k, t, w, n);
	if (!(d > 0))
		return 0;
	float e = sub_fit(k, t, w, n, d, idx, shift, st), d2 = refit(k, t, w, n, idx, shift);
	return d2 > 0 && d2 != d && sub_fit(k, t, w, n, d2, idx, shift, st) < e ? d2 : d;
}

/* one block as chosen: d (f16 bits), n per sub-block, entries, sign bits and shifts per group of 8 */
struct iq_codes {
	uint16_t d;
	uint8_t n[16];
	uint16_t idx[64];
	uint8_t signs[32];
	int8_t shift[32];
};

/* targets t (the magnitude each value's sign leaves; IQ1: x) and the sign bits per group of 8 */
static void iq_signs(const struct iq_kind *k, const float *x, const float *w, float *t, uint8_t *signs)
{
	for (int g = 0; g < QK_K / 8; g++) {
		const float *xg = x + 8 * g;
		unsigned s = 0;
		for (int j = 0; j < 8; j++) {
			bool neg = k->signs != SG_SHIFT && xg[j] < 0;
			s |= (unsigned)neg << j;
			t[8 * g + j] = k->signs == SG_SHIFT ? xg[j] : fabsf(xg[j]);
		}
		if (k->signs == SG_PARITY && __builtin_popcount(s) % 2) {
			int m = 0;
			for (int j = 1; j < 8; j++)
				if (w[8 * g + j] * xg[j] * xg[j] < w[8 * g + m] * xg[m] * xg[m])
					m = j;
			s ^= 1u << m;
			t[8 * g + m] = -t[8 * g + m];
		}
		signs[g] = (uint8_t)s;
	}
}

static void iq_choose(const struct iq_kind *k, const float *x, const float *w, struct iq_codes *o)
{
	float t[QK_K], ds[16], dmax = 0;
	int ns = QK_K / k->sub, per = k->sub / k->gw, nst = (k->signs == SG_SHIFT ? 2 : 1) * per;
	bool iq1 = k->signs == SG_SHIFT && !iq_dense;
	struct grp_stats st[64]; /* nst per sub-block: 256 / gw groups, twice for IQ1 */
	for (int i = 0; i < ns * nst; i++)
		st[i].p = -1;
	memset(o, 0, sizeof(*o));
	iq_signs(k, x, w, t, o->signs);
	for (int j = 0; j < ns; j++) {
		ds[j] = iq1 ? iq1_sub_search(k, t + j * k->sub, w + j * k->sub, k->sub, st + j * nst)
			    : sub_search(k, t + j * k->sub, w + j * k->sub, k->sub, st + j * nst);
		dmax = fmaxf(dmax, ds[j]);
	}
	for (int g = 0; g < QK_K / 8; g++)
		o->shift[g] = k->signs == SG_SHIFT ? 1 : 0;
	if (!(dmax > 0))
		return;
	struct iq_codes c;
	float best = INFINITY;
	int nrange = iq1 ? 0 : 1; /* n tried around the rounded one (IQ1: its split scales need no neighbours) */
	for (int cand = 0; cand < 3; cand++) {
		float smax = (float)(2 * k->nmax + 1 - cand);
		uint16_t dh = f32_to_f16(dmax / (k->f * smax));
		float dq = f16_to_f32(dh) * k->f, err = 0;
		if (!(dq > 0) || isinf(dq))
			continue;
		c = *o;
		c.d = dh;
		for (int j = 0; j < ns; j++) {
			const float *tj = t + j * k->sub, *wj = w + j * k->sub;
			int n0 = (int)lrintf(0.5f * (ds[j] / dq - 1));
			float be = INFINITY;
			for (int n = n0 - nrange; n <= n0 + nrange; n++) {
				uint16_t idx[32 / 4];
				int8_t shift[4];
				if (n < 0 || n > k->nmax)
					continue;
				float e = sub_fit(k, tj, wj, k->sub, dq * (float)(2 * n + 1), idx, shift, st + j * nst);
				if (e < be) {
					be = e;
					c.n[j] = (uint8_t)n;
					memcpy(c.idx + j * per, idx, sizeof(uint16_t) * (size_t)per);
					memcpy(c.shift + j * k->sub / 8, shift, (size_t)(k->sub / 8));
				}
			}
			if (be == INFINITY) { /* n0 far outside 0..nmax: the nearest end */
				int n = n0 < 0 ? 0 : k->nmax;
				be = sub_fit(k, tj, wj, k->sub, dq * (float)(2 * n + 1), c.idx + j * per, c.shift + j * k->sub / 8,
					     st + j * nst);
				c.n[j] = (uint8_t)n;
			}
			err += be;
		}
		if (err < best) {
			best = err;
			*o = c;
		}
	}
}

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void put16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}

/* the chosen codes into the format's bit fields (quant_iq.h) */
static void iq_pack(int fmt, const struct iq_codes *o, void *dst)
{
	uint8_t *b = dst;
	switch (fmt) {
	case WFMT_IQ2_XXS:
		put16(b, o->d);
		for (int g = 0; g < 8; g++) {
			uint32_t aux = (uint32_t)o->n[g] << 28;
			for (int l = 0; l < 4; l++) {
				b[2 + 8 * g + l] = (uint8_t)o->idx[4 * g + l];
				aux |= (uint32_t)(o->signs[4 * g + l] & 127) << 7 * l;
			}
			put32(b + 2 + 8 * g + 4, aux);
		}
		break;
	case WFMT_IQ2_XS: {
		struct block_iq2_xs *q = dst;
		q->d = o->d;
		for (int g = 0; g < 8; g++) {
			q->scales[g] = (uint8_t)(o->n[2 * g] | o->n[2 * g + 1] << 4);
			for (int l = 0; l < 4; l++)
				q->qs[4 * g + l] = (uint16_t)(o->idx[4 * g + l] | (o->signs[4 * g + l] & 127) << 9);
		}
		break;
	}
	case WFMT_IQ2_S: {
		struct block_iq2_s *q = dst;
		memset(q, 0, sizeof(*q));
		q->d = o->d;
		for (int g = 0; g < 8; g++) {
			q->scales[g] = (uint8_t)(o->n[2 * g] | o->n[2 * g + 1] << 4);
			for (int l = 0; l < 4; l++) {
				q->qs[4 * g + l] = (uint8_t)o->idx[4 * g + l];
				q->qh[g] = (uint8_t)(q->qh[g] | (o->idx[4 * g + l] >> 8) << 2 * l);
				q->qs[QK_K / 8 + 4 * g + l] = o->signs[4 * g + l];
			}
		}
		break;
	}
	case WFMT_IQ3_XXS: {
		struct block_iq3_xxs *q = dst;
		q->d = o->d;
		for (int g = 0; g < 8; g++) {
			uint32_t aux = (uint32_t)o->n[g] << 28;
			for (int i = 0; i < 8; i++)
				q->qs[8 * g + i] = (uint8_t)o->idx[8 * g + i];
			for (int l = 0; l < 4; l++)
				aux |= (uint32_t)(o->signs[4 * g + l] & 127) << 7 * l;
			put32(q->qs + QK_K / 4 + 4 * g, aux);
		}
		break;
	}
	case WFMT_IQ3_S: {
		struct block_iq3_s *q = dst;
		memset(q, 0, sizeof(*q));
		q->d = o->d;
		for (int g = 0; g < 8; g++) {
			q->scales[g / 2] = (uint8_t)(q->scales[g / 2] | o->n[g] << 4 * (g & 1));
			for (int i = 0; i < 8; i++) {
				q->qs[8 * g + i] = (uint8_t)o->idx[8 * g + i];
				q->qh[g] = (uint8_t)(q->qh[g] | (o->idx[8 * g + i] >> 8) << i);
			}
			for (int l = 0; l < 4; l++)
				q->signs[4 * g + l] = o->signs[4 * g + l];
		}
		break;
	}
	case WFMT_IQ1_S: {
		struct block_iq1_s *q = dst;
		q->d = o->d;
		for (int g = 0; g < 8; g++) {
			unsigned h = (unsigned)o->n[g] << 12 | (o->shift[4 * g] < 0 ? 0x8000u : 0);
			for (int l = 0; l < 4; l++) {
				q->qs[4 * g + l] = (uint8_t)o->idx[4 * g + l];
				h |= (unsigned)(o->idx[4 * g + l] >> 8) << 3 * l;
			}
			q->qh[g] = (uint16_t)h;
		}
		break;
	}
	default: { /* IQ1_M */
		struct block_iq1_m *q = dst;
		memset(q, 0, sizeof(*q));
		for (int g = 0; g < 8; g++) {
			for (int l = 0; l < 4; l++) {
				unsigned h = (unsigned)(o->idx[4 * g + l] >> 8) | (o->shift[4 * g + l] < 0 ? 8u : 0);
				q->qs[4 * g + l] = (uint8_t)o->idx[4 * g + l];
				q->qh[2 * g + l / 2] = (uint8_t)(q->qh[2 * g + l / 2] | h << 4 * (l & 1));
			}
		}
		for (int i = 0; i < 4; i++) { /* word i: the 4 sub-scales of groups 2i, 2i + 1 and nibble i of d */
			unsigned s = (unsigned)o->n[4 * i] | (unsigned)o->n[4 * i + 1] << 3 | (unsigned)o->n[4 * i + 2] << 6 |
				     (unsigned)o->n[4 * i + 3] << 9 | (unsigned)(o->d >> 4 * i & 15) << 12;
			put16(q->scales + 2 * i, (uint16_t)s);
		}
		break;
	}
	}
}

void quant_iq_dense(bool on)
{
	iq_dense = on;
}

void quant_iq_block(int fmt, const float *x, const float *w, void *dst)
{
	const struct iq_kind *k = kind_of(fmt);
	FERRY_ASSERT(k);
	struct iq_codes o;
	iq_choose(k, x, w, &o);
	iq_pack(fmt, &o, dst);
}
