/* test_sampler.c: greedy, determinism per seed, the sampled distribution against softmax(logits / T)
 * (chi-square), and what top-k, top-p, min-p and the repetition penalty keep or change. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "engine/sampler.h"

#define V 8

static struct sampler_cfg base(void)
{
	return (struct sampler_cfg){.temp = 1, .top_k = 0, .top_p = 1, .min_p = 0, .rep_penalty = 1, .seed = 42};
}

static void counts(struct sampler_cfg c, const float *logits, int n, int *hist)
{
	struct sampler s;
	float l[V];
	memset(hist, 0, sizeof(int) * V);
	CHECK(sampler_init(&s, &c, V) == 0);
	for (int i = 0; i < n; i++) {
		memcpy(l, logits, sizeof(l));
		int t = sampler_pick(&s, l, NULL, 0);
		CHECK(t >= 0 && t < V);
		hist[t]++;
	}
	sampler_free(&s);
}

int main(void)
{
	const float logits[V] = {1.0f, 2.0f, 0.5f, 2.5f, -1.0f, 0.0f, 1.5f, -3.0f};
	int hist[V], hist2[V];
	struct sampler_cfg c = base();

	/* greedy: the first maximum, whatever the seed */
	c.temp = 0;
	counts(c, logits, 10, hist);
	CHECK(hist[3] == 10);

	/* same seed, same stream; another seed, another stream */
	c = base();
	counts(c, logits, 500, hist);
	counts(c, logits, 500, hist2);
	CHECK(memcmp(hist, hist2, sizeof(hist)) == 0);
	c.seed = 43;
	counts(c, logits, 500, hist2);
	CHECK(memcmp(hist, hist2, sizeof(hist)) != 0);

	/* temperature 0.7: chi-square against softmax(logits / 0.7), 7 degrees of freedom, p = 0.001 bound */
	c = base();
	c.temp = 0.7f;
	int n = 40000;
	counts(c, logits, n, hist);
	double z = 0, p[V], chi = 0;
	for (int i = 0; i < V; i++)
		z += exp(logits[i] / 0.7);
	for (int i = 0; i < V; i++) {
		p[i] = exp(logits[i] / 0.7) / z;
		chi += (hist[i] - n * p[i]) * (hist[i] - n * p[i]) / (n * p[i]);
	}
	CHECK_MSG(chi < 24.3, "chi-square %.1f", chi);

	/* top-k 2 keeps tokens 3 and 1 only */
	c = base();
	c.top_k = 2;
	counts(c, logits, 2000, hist);
	CHECK(hist[3] + hist[1] == 2000 && hist[1] > 0);

	/* top-p: probabilities (T=1) sorted are .35, .21, .13, .10, ...; p = 0.5 keeps the first two */
	c = base();
	c.top_p = 0.5f;
	counts(c, logits, 2000, hist);
	CHECK(hist[3] + hist[1] == 2000 && hist[1] > 0);

	/* min-p 0.3 keeps tokens with p >= 0.3 * p_max: 2.5 (1), 2.0 (0.61), 1.5 (0.37); 1.0 is 0.22 */
	c = base();
	c.min_p = 0.3f;
	counts(c, logits, 3000, hist);
	CHECK(hist[3] + hist[1] + hist[6] == 3000 && hist[6] > 0);

	/* repetition penalty (HF rule) on tokens of the history, each once */
	c = base();
	c.temp = 0;
	c.rep_penalty = 2.0f;
	struct sampler s;
	CHECK(sampler_init(&s, &c, V) == 0);
	float l[V];
	memcpy(l, logits, sizeof(l));
	int hist_ids[4] = {3, 3, 4, 1};
	int t = sampler_pick(&s, l, hist_ids, 4);
	CHECK(l[3] == 1.25f && l[4] == -2.0f && l[1] == 1.0f && l[0] == 1.0f);
	CHECK(t == 6); /* 1.5 is now the largest */
	/* rep_last_n 1 looks only at the last token */
	s.cfg.rep_last_n = 1;
	memcpy(l, logits, sizeof(l));
	sampler_pick(&s, l, hist_ids, 4);
	CHECK(l[3] == 2.5f && l[1] == 1.0f);
	sampler_free(&s);

	/* top-k by heap selection keeps exactly the k best tokens (logit desc, ties by id) of a large vocabulary:
	 * at a high temperature every kept token gets drawn and no other does */
	{
		enum { BIG = 5000 };
		static float big[BIG], lb[BIG];
		static int seen[BIG];
		for (int i = 0; i < BIG; i++)
			big[i] = (float)((i * 7919) % 1000) / 100.0f; /* many ties */
		for (int k = 1; k <= 16; k *= 2) {
			struct sampler_cfg ck = base();
			ck.top_k = k;
			ck.temp = 1000;
			CHECK(sampler_init(&s, &ck, BIG) == 0);
			memset(seen, 0, sizeof(seen));
			for (int r = 0; r < 400 * k; r++) {
				memcpy(lb, big, sizeof(big));
				seen[sampler_pick(&s, lb, NULL, 0)] = 1;
			}
			int n_seen = 0, bad = 0;
			for (int t = 0; t < BIG; t++) {
				if (!seen[t])
					continue;
				n_seen++;
				int better = 0;
				for (int i = 0; i < BIG; i++)
					better += big[i] > big[t] || (big[i] == big[t] && i < t);
				bad += better >= k;
			}
			CHECK_MSG(n_seen == k && bad == 0, "top-k %d: %d distinct tokens drawn, %d outside the top k", k, n_seen,
				  bad);
			sampler_free(&s);
		}
	}

	/* sampler_pick_top over the k best (what a GPU hands over) draws the same tokens as sampler_pick over the
	 * whole row, seed for seed: greedy, and top-k with temperature, top-p and min-p */
	{
		enum { BIG = 3000 };
		static float big[BIG], lb[BIG], vals[SAMPLER_TOP_MAX];
		static int order[BIG];
		for (int i = 0; i < BIG; i++)
			big[i] = (float)((i * 7919) % 700) / 50.0f - 5.0f; /* ties */
		for (int i = 0; i < BIG; i++) /* ranking: logit desc, ties by id (insertion into a sorted prefix) */
			order[i] = i;
		for (int i = 1; i < BIG; i++)
			for (int j = i; j > 0 && (big[order[j]] > big[order[j - 1]] ||
						  (big[order[j]] == big[order[j - 1]] && order[j] < order[j - 1])); j--) {
				int t = order[j];
				order[j] = order[j - 1];
				order[j - 1] = t;
			}
		struct sampler_cfg cfgs[] = {
			{.temp = 0, .top_p = 1, .rep_penalty = 1, .seed = 1},
			{.temp = 0.8f, .top_k = 40, .top_p = 0.9f, .rep_penalty = 1, .seed = 2},
			{.temp = 1.3f, .top_k = 64, .top_p = 0.95f, .min_p = 0.05f, .rep_penalty = 1, .seed = 3},
			{.temp = 1, .top_k = 1024, .top_p = 1, .rep_penalty = 1, .seed = 4},
		};
		for (size_t ci = 0; ci < sizeof(cfgs) / sizeof(cfgs[0]); ci++) {
			struct sampler a, b;
			CHECK(sampler_init(&a, &cfgs[ci], BIG) == 0 && sampler_init(&b, &cfgs[ci], BIG) == 0);
			int k = sampler_top_k_needed(&a), same = 0;
			CHECK(k == (cfgs[ci].temp <= 0 ? 1 : cfgs[ci].top_k));
			for (int i = 0; i < k; i++)
				vals[i] = big[order[i]];
			for (int r = 0; r < 300; r++) {
				memcpy(lb, big, sizeof(big));
				same += sampler_pick(&a, lb, NULL, 0) == sampler_pick_top(&b, vals, order, k);
			}
			CHECK_MSG(same == 300, "config %zu: %d of 300 draws equal", ci, same);
			sampler_free(&a);
			sampler_free(&b);
		}
		struct sampler_cfg pen = {.temp = 0, .top_p = 1, .rep_penalty = 1.1f, .seed = 1};
		CHECK(sampler_init(&s, &pen, BIG) == 0);
		CHECK(sampler_top_k_needed(&s) == 0);
		sampler_free(&s);
	}

	/* uniform stream stays in [0, 1) with a sane mean */
	c = base();
	CHECK(sampler_init(&s, &c, V) == 0);
	double mean = 0;
	for (int i = 0; i < 100000; i++) {
		double u = sampler_uniform(&s);
		CHECK(u >= 0 && u < 1);
		mean += u / 100000;
	}
	CHECK(fabs(mean - 0.5) < 0.01);
	sampler_free(&s);
	CHECK_DONE();
}
