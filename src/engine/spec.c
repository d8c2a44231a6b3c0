/*
 * spec.c: token tries of guesses, prompt lookup and the tree planner (spec.h). The draft model's steps and
 * the verification walk live in the scheduler (scheduler.c), which owns the sequences.
 */
#include <math.h>
#include <string.h>

#include "engine/spec.h"

static const char *const spec_names[] = {"off", "auto", "lookup", "draft", "tree"};

int spec_mode_parse(const char *s)
{
	for (int i = 0; i < (int)(sizeof(spec_names) / sizeof(spec_names[0])); i++)
		if (!strcmp(s, spec_names[i]))
			return i;
	return -1;
}

const char *spec_mode_name(int mode)
{
	return mode >= 0 && mode <= SPEC_TREE ? spec_names[mode] : "?";
}

void spec_tree_reset(struct spec_tree *t, int root)
{
	t->n = 1;
	t->tok[0] = root;
	t->parent[0] = -1;
	t->src[0] = SPEC_SRC_LOOKUP;
}

int spec_tree_add(struct spec_tree *t, int parent, int tok, int src, int max)
{
	for (int i = parent + 1; i < t->n; i++)
		if (t->parent[i] == parent && t->tok[i] == tok)
			return i;
	if (t->n >= max || t->n >= KV_TREE_MAX)
		return -1;
	t->tok[t->n] = tok;
	t->parent[t->n] = parent;
	t->src[t->n] = (unsigned char)src;
	return t->n++;
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

void spec_plan_cost(const struct spec_plan *p, double *c0, double *c1)
{
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
	double a = spec_plan_alpha(p), c0, c1, best = -1;
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
