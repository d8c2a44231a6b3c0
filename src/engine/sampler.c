/* sampler.c: see sampler.h. Candidates are sorted by logit, ties by token id, so results are reproducible.
 * Logits must be finite (the caller checks). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sampler.h"
#include "base/util.h"

double sampler_uniform(struct sampler *s)
{
	return (double)(rng_next(&s->rng) >> 11) * 0x1.0p-53;
}

int sampler_init(struct sampler *s, const struct sampler_cfg *cfg, int V)
{
	memset(s, 0, sizeof(*s));
	s->cfg = *cfg;
	s->V = V;
	rng_seed(&s->rng, cfg->seed);
	s->idx = malloc(sizeof(int) * (size_t)V);
	s->p = malloc(sizeof(float) * (size_t)V);
	s->seen = calloc((size_t)V, 1);
	s->count = cfg->presence != 0 || cfg->frequency != 0 ? calloc((size_t)V, sizeof(int)) : NULL;
	if (!s->idx || !s->p || !s->seen || (!s->count && (cfg->presence != 0 || cfg->frequency != 0))) {
		sampler_free(s);
		return -ENOMEM;
	}
	return 0;
}

void sampler_free(struct sampler *s)
{
	free(s->idx);
	free(s->p);
	free(s->seen);
	free(s->count);
	s->count = NULL;
	s->idx = NULL;
	s->p = NULL;
	s->seen = NULL;
}

static int by_logit_desc(const void *a, const void *b, void *logits)
{
	const float *l = logits;
	int i = *(const int *)a, j = *(const int *)b;
	if (l[i] != l[j])
		return l[i] > l[j] ? -1 : 1;
	return i - j;
}

/* true when token i ranks after token j (lower logit, or equal logit and larger id) */
static int ranks_after(const float *l, int i, int j)
{
	return l[i] < l[j] || (l[i] == l[j] && i > j);
}

/* The k best tokens into idx[0..k) (unordered) with a min-heap: O(V log k) instead of sorting V. */
static int top_k_select(int *idx, const float *l, int V, int k)
{
	for (int i = 0; i < V; i++) {
		int n;
		if (i < k) {
			n = i; /* sift up */
			idx[n] = i;
			while (n > 0 && ranks_after(l, idx[n], idx[(n - 1) / 2])) {
				int p = (n - 1) / 2, t = idx[p];
				idx[p] = idx[n];
				idx[n] = t;
				n = p;
			}
			continue;
		}
		if (!ranks_after(l, idx[0], i))
			continue;
		idx[0] = i; /* replace the worst kept token, sift down */
		n = 0;
		for (;;) {
			int a = 2 * n + 1, b = a + 1, w = n;
			if (a < k && ranks_after(l, idx[a], idx[w]))
				w = a;
			if (b < k && ranks_after(l, idx[b], idx[w]))
				w = b;
			if (w == n)
				break;
			int t = idx[w];
			idx[w] = idx[n];
			idx[n] = t;
			n = w;
		}
	}
	return k;
}

static void penalize(struct sampler *s, float *logits, const int *hist, int n)
{
	float pen = s->cfg.rep_penalty;
	int from = s->cfg.rep_last_n > 0 && n > s->cfg.rep_last_n ? n - s->cfg.rep_last_n : 0;
	for (int i = from; i < n; i++) {
		int t = hist[i];
		if (t < 0 || t >= s->V || s->seen[t])
			continue;
		s->seen[t] = 1;
		logits[t] = logits[t] > 0 ? logits[t] / pen : logits[t] * pen;
	}
	for (int i = from; i < n; i++)
		if (hist[i] >= 0 && hist[i] < s->V)
			s->seen[hist[i]] = 0;
}

/* OpenAI's rule over the generated tokens: logit -= frequency * count + presence. */
static void penalize_openai(struct sampler *s, float *logits, const int *hist, int n)
{
	int from = s->n_prompt < n ? s->n_prompt : n;
	for (int i = from; i < n; i++)
		if (hist[i] >= 0 && hist[i] < s->V)
			s->count[hist[i]]++;
	for (int i = from; i < n; i++) {
		int t = hist[i];
		if (t < 0 || t >= s->V || !s->count[t])
			continue;
		logits[t] -= s->cfg.frequency * (float)s->count[t] + s->cfg.presence;
		s->count[t] = 0;
	}
}

/* The distribution over n candidates sorted best first: s->p[i] holds candidate i's logit on entry, s->idx[i]
 * its token. Temperature softmax (max first, so exp never overflows), top-p, min-p; returns the candidates
 * kept (their p not renormalized). */
static int probs_sorted(struct sampler *s, int n)
{
	double mx = s->p[0], sum = 0;
	for (int i = 0; i < n; i++) {
		s->p[i] = (float)exp(((double)s->p[i] - mx) / s->cfg.temp);
		sum += s->p[i];
	}
	for (int i = 0; i < n; i++)
		s->p[i] = (float)(s->p[i] / sum);
	if (s->cfg.top_p < 1) {
		double c = 0;
		for (int i = 0; i < n; i++) {
			c += s->p[i];
			if (c >= s->cfg.top_p) {
				n = i + 1;
				break;
			}
		}
	}
	if (s->cfg.min_p > 0) {
		float lim = s->cfg.min_p * s->p[0];
		int k = 1;
		while (k < n && s->p[k] >= lim)
			k++;
		n = k;
	}
	return n;
}

/* A seeded draw from the n candidates probs_sorted kept. */
static int draw_sorted(struct sampler *s, int n)
{
	n = probs_sorted(s, n);
	double sum = 0;
	for (int i = 0; i < n; i++)
		sum += s->p[i];
	double r = sampler_uniform(s) * sum, c = 0;
	for (int i = 0; i < n; i++) {
		c += s->p[i];
		if (r < c)
			return s->idx[i];
	}
	return s->idx[n - 1];
}

/* The penalties, then (temperature > 0) the top-k candidates sorted into s->idx, their logits in s->p;
 * returns their count, or -1 with *best the greedy pick. */
static int candidates(struct sampler *s, float *logits, const int *history, int n_hist, int *best)
{
	int V = s->V;
	if (s->cfg.rep_penalty > 0 && s->cfg.rep_penalty != 1.0f)
		penalize(s, logits, history, n_hist);
	if (s->count)
		penalize_openai(s, logits, history, n_hist);
	if (s->cfg.temp <= 0) {
		*best = 0;
		for (int i = 1; i < V; i++)
			if (logits[i] > logits[*best])
				*best = i;
		return -1;
	}
	int n = s->cfg.top_k > 0 && s->cfg.top_k < V ? top_k_select(s->idx, logits, V, s->cfg.top_k) : V;
	if (n == V)
		for (int i = 0; i < V; i++)
			s->idx[i] = i;
	qsort_r(s->idx, (size_t)n, sizeof(int), by_logit_desc, logits);
	for (int i = 0; i < n; i++)
		s->p[i] = logits[s->idx[i]];
	return n;
}

int sampler_pick(struct sampler *s, float *logits, const int *history, int n_hist)
{
	int best, n = candidates(s, logits, history, n_hist, &best);
	return n < 0 ? best : draw_sorted(s, n);
}

/* Speculative verification over the distribution probs_sorted leaves in s->p[0..n) (unnormalized): each
 * proposed token in turn is accepted with probability p(x) / (mass left), else its mass is removed; when
 * none is accepted, a draw from what is left. For proposals fixed before the draw (distinct tokens), the
 * result follows p exactly: P(x_1) = p_1, P(x_2) = (1 - p_1) p_2 / (1 - p_1), ... and the residual for the rest. */
static int verify_sorted(struct sampler *s, int n, const int *prop, int n_prop, int *acc)
{
	n = probs_sorted(s, n);
	double mass = 0;
	for (int i = 0; i < n; i++)
		mass += s->p[i];
	for (int c = 0; c < n_prop; c++) {
		int i = 0;
		while (i < n && s->idx[i] != prop[c])
			i++;
		if (i == n || s->p[i] <= 0)
			continue; /* outside the kept set: probability 0 */
		if (sampler_uniform(s) * mass < s->p[i]) {
			*acc = c;
			return prop[c];
		}
		mass -= s->p[i];
		s->p[i] = 0;
	}
	double r = sampler_uniform(s) * mass, cum = 0;
	int last = -1;
	for (int i = 0; i < n; i++) {
		if (s->p[i] <= 0)
			continue;
		last = i;
		cum += s->p[i];
		if (r < cum)
			return s->idx[i];
	}
	return s->idx[last >= 0 ? last : 0];
}

int sampler_pick_spec(struct sampler *s, float *logits, const float *vals, const int *idx, int k, const int *history,
		      int n_hist, const int *prop, int n_prop, int *acc)
{
	*acc = -1;
	int x, n;
	if (s->cfg.temp <= 0) {
		x = logits ? sampler_pick(s, logits, history, n_hist) : idx[0];
		for (int c = 0; c < n_prop && *acc < 0; c++)
			if (prop[c] == x)
				*acc = c;
		return x;
	}
	if (logits) {
		n = candidates(s, logits, history, n_hist, &x);
	} else {
		for (int i = 0; i < k; i++) {
			s->p[i] = vals[i];
			s->idx[i] = idx[i];
		}
		n = k;
	}
	return verify_sorted(s, n, prop, n_prop, acc);
}

int sampler_top_k_needed(const struct sampler *s)
{
	if ((s->cfg.rep_penalty > 0 && s->cfg.rep_penalty != 1.0f) || s->count)
		return 0; /* a penalty changes the ranking: it needs every logit */
	if (s->cfg.temp <= 0)
		return 1;
	return s->cfg.top_k > 0 && s->cfg.top_k <= SAMPLER_TOP_MAX && s->cfg.top_k < s->V ? s->cfg.top_k : 0;
}

int sampler_pick_top(struct sampler *s, const float *vals, const int *idx, int k)
{
	FERRY_ASSERT(k >= 1 && k <= s->V);
	if (s->cfg.temp <= 0)
		return idx[0];
	for (int i = 0; i < k; i++) {
		s->p[i] = vals[i];
		s->idx[i] = idx[i];
	}
	return draw_sorted(s, k);
}
