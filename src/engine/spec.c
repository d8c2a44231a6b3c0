/*
 * spec.c: token tries of guesses, prompt lookup and the tree planner (spec.h). The draft model's steps and
 * the verification walk live in the scheduler (scheduler.c), which owns the sequences.
 */
#include <math.h>
#include <string.h>

#include "engine/spec.h"

static const char *const spec_names[] = {"off", "auto", "lookup", "draft", "tree", "combined"};

int spec_mode_parse(const char *s)
{
	for (int i = 0; i < (int)(sizeof(spec_names) / sizeof(spec_names[0])); i++)
		if (!strcmp(s, spec_names[i]))
			return i;
	return -1;
}

const char *spec_mode_name(int mode)
{
	return mode >= 0 && mode <= SPEC_COMBINED ? spec_names[mode] : "?";
}

void spec_tree_reset(struct spec_tree *t, int root)
{
	t->n = 1;
	t->tok[0] = root;
	t->parent[0] = -1;
	t->src[0] = SPEC_SRC_LOOKUP;
	t->cls[0] = 0;
	t->p[0] = 1;
	t->pin[0] = 1;
	for (int i = 0; i < SPEC_SRC_COUNT; i++)
		t->n_chain[i] = 0;
}

int spec_tree_offer(struct spec_tree *t, int parent, int tok, int src, int cls, float p, int max)
{
	for (int i = parent + 1; i < t->n; i++)
		if (t->parent[i] == parent && t->tok[i] == tok) {
			if (p > t->p[i]) {
				t->p[i] = p;
				t->cls[i] = (unsigned char)cls;
			}
			return i;
		}
	if (t->n >= max || t->n >= KV_TREE_MAX)
		return -1;
	t->tok[t->n] = tok;
	t->parent[t->n] = parent;
	t->src[t->n] = (unsigned char)src;
	t->cls[t->n] = (unsigned char)cls;
	t->p[t->n] = p;
	t->pin[t->n] = 0;
	return t->n++;
}

int spec_tree_pin(struct spec_tree *t, const int *toks, int n)
{
	int node = 0, k = 0;
	for (; k < n; k++) {
		int c = -1;
		for (int i = node + 1; i < t->n && c < 0; i++)
			if (t->parent[i] == node && t->tok[i] == toks[k])
				c = i;
		if (c < 0)
			break;
		t->pin[c] = 1;
		node = c;
	}
	return k;
}

int spec_tree_add(struct spec_tree *t, int parent, int tok, int src, int max)
{
	return spec_tree_offer(t, parent, tok, src, src == SPEC_SRC_DRAFT ? 0 : SPEC_DRAFT_BINS, 0, max);
}

/* the draft bins' upper ends */
static const float draft_bin_hi[SPEC_DRAFT_BINS] = {0.1f, 0.3f, 0.6f, 0.9f, 1.01f};

int spec_draft_class(float q)
{
	int b = 0;
	while (b < SPEC_DRAFT_BINS - 1 && !(q < draft_bin_hi[b]))
		b++;
	return b;
}

int spec_lookup_class(int g)
{
	return SPEC_DRAFT_BINS + (g < SPEC_LOOKUP_CLASSES ? g : SPEC_LOOKUP_CLASSES) - 1;
}

int spec_tree_depth(const struct spec_tree *t, int i)
{
	int d = 0;
	while (t->parent[i] >= 0) {
		i = t->parent[i];
		d++;
	}
	return d;
}

void spec_lookup(const int *toks, int n, int ngram, int depth, int branches, int max, struct spec_tree *t)
{
	for (int g = ngram < n - 1 ? ngram : n - 1; g >= 1; g--) {
		const int *suf = toks + n - g;
		int found = 0;
		for (int i = n - g - 1; i >= 0 && found < branches; i--) {
			if (memcmp(toks + i, suf, sizeof(int) * (size_t)g))
				continue;
			/* the continuation toks[i+g ..], as a path from the root */
			int node = 0, end = i + g + depth < n ? i + g + depth : n;
			for (int j = i + g; j < end && node >= 0; j++)
				node = spec_tree_add(t, node, toks[j], SPEC_SRC_LOOKUP, max);
			found++;
		}
		if (found)
			return;
	}
}

int spec_lookup_chain(const int *toks, int n, int ngram, int depth, int *out)
{
	struct spec_tree c;
	spec_tree_reset(&c, toks[n - 1]);
	spec_lookup(toks, n, ngram, depth, 1, KV_TREE_MAX, &c);
	for (int i = 1; i < c.n; i++)
		out[i - 1] = c.tok[i];
	return c.n - 1;
}

void spec_lookup_all(const int *toks, int n, int ngram, int depth, int matches, const struct spec_plan *pl, int max,
		     struct spec_tree *t)
{
	float copy = (float)spec_plan_rate(pl, SPEC_CLASS_COPY);
	for (int g = ngram < n - 1 ? ngram : n - 1; g >= 1; g--) {
		const int *suf = toks + n - g;
		int cls = spec_lookup_class(g), found = 0;
		float rate = (float)spec_plan_rate(pl, cls);
		for (int i = n - g - 1; i >= 0 && found < matches; i--) {
			if (toks[i] != suf[0] || memcmp(toks + i, suf, sizeof(int) * (size_t)g))
				continue;
			int node = 0, end = i + g + depth < n ? i + g + depth : n;
			for (int j = i + g; j < end && node >= 0; j++) {
				int c = j == i + g ? cls : SPEC_CLASS_COPY;
				float r = j == i + g ? rate : copy;
				node = spec_tree_offer(t, node, toks[j], SPEC_SRC_LOOKUP, c, t->p[node] * r, max);
			}
			found++;
		}
	}
}

void spec_tree_keep(struct spec_tree *t, int keep)
{
	if (keep >= t->n)
		return;
	if (keep < 1)
		keep = 1;
	bool kept[KV_TREE_MAX] = {false};
	int order[KV_TREE_MAX], m = 0, map[KV_TREE_MAX];
	for (int i = 0; i < t->n; i++) { /* insertion by score, best first, ties: the earlier node */
		int j = m++;
		while (j > 0 && t->p[order[j - 1]] < t->p[i]) {
			order[j] = order[j - 1];
			j--;
		}
		order[j] = i;
	}
	kept[0] = true;
	int left = keep - 1;
	for (int i = 1; i < t->n && left > 0; i++) /* the spine: a path, parents before children */
		if (t->pin[i] && kept[t->parent[i]]) {
			kept[i] = true;
			left--;
		}
	for (int j = 0; j < m && left > 0; j++) {
		int i = order[j];
		if (i == 0 || kept[i] || !kept[t->parent[i]]) /* (a parent scored below its child: not kept, nor the child) */
			continue;
		kept[i] = true;
		left--;
	}
	int n = 0;
	for (int i = 0; i < t->n; i++) {
		if (!kept[i])
			continue;
		map[i] = n;
		t->tok[n] = t->tok[i];
		t->parent[n] = i ? map[t->parent[i]] : -1;
		t->src[n] = t->src[i];
		t->cls[n] = t->cls[i];
		t->p[n] = t->p[i];
		t->pin[n] = t->pin[i];
		n++;
	}
	t->n = n;
}

void spec_row_top(const float *row, int V, int k, int *top, float *prob)
{
	for (int j = 0; j < k; j++) {
		int b = -1;
		for (int i = 0; i < V; i++) {
			bool after = j == 0 || row[i] < row[top[j - 1]] || (row[i] == row[top[j - 1]] && i > top[j - 1]);
			if (after && (b < 0 || row[i] > row[b]))
				b = i;
		}
		top[j] = b;
	}
	double mx = row[top[0]], sum = 0;
	for (int i = 0; i < V; i++)
		sum += exp((double)row[i] - mx);
	for (int j = 0; j < k; j++)
		prob[j] = (float)(exp((double)row[top[j]] - mx) / sum);
}

void spec_plan_init(struct spec_plan *p)
{
	memset(p, 0, sizeof(*p));
}

void spec_plan_pass(struct spec_plan *p, int T, double sec)
{
	/* a slow forgetting (the cache grows, the machine's load changes) */
	const double keep = 0.995;
	p->n = p->n * keep + 1;
	p->st = p->st * keep + T;
	p->stt = p->stt * keep + (double)T * T;
	p->sc = p->sc * keep + sec;
	p->stc = p->stc * keep + T * sec;
}

void spec_plan_walk(struct spec_plan *p, int accepted, bool stopped)
{
	p->deeper += accepted;
	p->stopped += stopped;
}

double spec_plan_alpha(const struct spec_plan *p)
{
	return (p->deeper + 1) / (p->deeper + p->stopped + 2); /* a uniform prior: 1/2 before any walk */
}

void spec_plan_offer(struct spec_plan *p, int cls, bool taken)
{
	p->offered[cls]++;
	p->taken[cls] += taken;
}

double spec_plan_rate(const struct spec_plan *p, int cls)
{
	double prior = cls == SPEC_CLASS_COPY ? 0.8 : 0.5;
	if (cls < SPEC_DRAFT_BINS)
		prior = cls ? (draft_bin_hi[cls - 1] + (cls < SPEC_DRAFT_BINS - 1 ? draft_bin_hi[cls] : 1.0)) / 2
			    : draft_bin_hi[0] / 2;
	return (p->taken[cls] + 2 * prior) / (p->offered[cls] + 2);
}

void spec_plan_chain(struct spec_plan *p, int src, const int *ch, int n, const int *got, int n_got)
{
	/* the recent figures forget a pass's weight by this factor a pass: a few passes decide */
	const double keep = 0.8;
	int m = 0;
	while (m < n && m < n_got && ch[m] == got[m])
		m++;
	double tok = 1 + (m < n_got ? m : n_got - 1);
	p->chain_tok[src] += tok;
	p->chain_pass[src]++;
	p->chain_rtok[src] = p->chain_rtok[src] * keep + tok;
	p->chain_rpass[src] = p->chain_rpass[src] * keep + 1;
	p->chain_deep[src] += m;
	p->chain_stop[src] += m < n && m < n_got; /* (ch[m] was checked against the target's pick, and wrong) */
}

double spec_plan_chain_alpha(const struct spec_plan *p, int src)
{
	return (p->chain_deep[src] + 1) / (p->chain_deep[src] + p->chain_stop[src] + 2);
}

int spec_plan_spine(const struct spec_plan *p)
{
	if (!(p->chain_pass[SPEC_SRC_LOOKUP] > 0 && p->chain_pass[SPEC_SRC_DRAFT] > 0))
		return -1;
	double l = p->chain_rtok[SPEC_SRC_LOOKUP] / p->chain_rpass[SPEC_SRC_LOOKUP];
	double d = p->chain_rtok[SPEC_SRC_DRAFT] / p->chain_rpass[SPEC_SRC_DRAFT];
	return l >= d ? SPEC_SRC_LOOKUP : SPEC_SRC_DRAFT;
}

void spec_plan_cost(const struct spec_plan *p, double *c0, double *c1)
{
	if (p->fix0 > 0) {
		*c0 = p->fix0;
		*c1 = p->fix1;
		return;
	}
	double var = p->n > 0 ? p->stt / p->n - (p->st / p->n) * (p->st / p->n) : 0;
	*c1 = 0;
	*c0 = p->n > 0 ? p->sc / p->n : 1;
	if (p->n >= 2 && var > 1e-9) {
		double cov = p->stc / p->n - (p->st / p->n) * (p->sc / p->n);
		*c1 = cov / var > 0 ? cov / var : 0;
		*c0 = p->sc / p->n - *c1 * p->st / p->n;
	}
	if (*c0 <= 0) /* a line through the origin or below: keep a positive fixed part */
		*c0 = 1e-6 + (p->n > 0 ? 0.1 * p->sc / p->n : 0);
}

int spec_plan_depth(const struct spec_plan *p, int max, int width, int others, double level_s)
{
	return spec_plan_depth_alpha(p, spec_plan_alpha(p), max, width, others, level_s);
}

int spec_plan_depth_alpha(const struct spec_plan *p, double alpha, int max, int width, int others, double level_s)
{
	double a = alpha, c0, c1, best = -1;
	spec_plan_cost(p, &c0, &c1);
	int w = width > 0 ? width : 1, best_d = 1;
	double expect = 1, reach = 1;
	for (int d = 1; d * w <= max; d++) {
		reach *= a;
		expect += reach;
		double rate = expect / (c0 + c1 * (double)(others + 1 + d * w) + level_s * d);
		if (rate > best * (1 + 1e-9)) { /* ties: the shallower tree */
			best = rate;
			best_d = d;
		}
	}
	return best_d;
}

int spec_plan_size(const struct spec_plan *p, const float *score, int n, int max, int others, double extra_s)
{
	double c0, c1, best = -1, expect = 1;
	spec_plan_cost(p, &c0, &c1);
	int best_n = 0;
	for (int k = 0; k <= n && k <= max; k++) {
		if (k > 0) {
			if (!(score[k - 1] > 0))
				break;
			expect += score[k - 1];
		}
		double rate = expect / (c0 + c1 * (double)(others + 1 + k) + extra_s);
		if (rate > best * (1 + 1e-9)) { /* ties: the smaller tree */
			best = rate;
			best_n = k;
		}
	}
	return best_n;
}

void spec_plan_tree(const struct spec_plan *p, struct spec_tree *t, int max, int others, double extra_s)
{
	float score[KV_TREE_MAX];
	int m = 0;
	for (int i = 1; i < t->n; i++) { /* the guesses' scores, best first */
		int j = m++;
		while (j > 0 && score[j - 1] < t->p[i]) {
			score[j] = score[j - 1];
			j--;
		}
		score[j] = t->p[i];
	}
	spec_tree_keep(t, 1 + spec_plan_size(p, score, m, max, others, extra_s));
}

double spec_plan_pmin(const struct spec_plan *p, double expect, int n_tok, int others, double extra_s, int width,
		      double level_s)
{
	double c0, c1;
	spec_plan_cost(p, &c0, &c1);
	double rate = expect / (c0 + c1 * (double)(others + n_tok) + extra_s);
	return rate * (level_s + c1 * (double)width);
}
