/*
 * test_expert_cache.c: the expert cache's policy (src/engine/expert_cache.c). Known cases (free entries
 * first, pinned entries never evicted, the fewest uses evicted with ties to the least recently used,
 * admission refused to a colder expert, unpin setting the guard), then random traffic against a reference
 * written here from the header's rule with plain scans (same hits, fills, evictions, refusals and contents
 * after every operation), then the figures the policy exists for: on a cyclic scan of layers with a skewed
 * router it keeps the hot experts (hit rate near the hot share), where LRU keeps next to nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "base/rng.h"
#include "engine/expert_cache.h"

static double unif01(struct rng *r)
{
	return (double)(rng_next(r) >> 11) / 9007199254740992.0;
}

/* The reference: the same rule, written without the index. */
struct ref {
	int n, n_exp, n_keys;
	int key[64], pin[64];
	uint64_t last[64];
	uint32_t freq[4096];
	uint64_t tick, uses, hits, misses, refused;
};

static int ref_slot(const struct ref *r, int k)
{
	for (int i = 0; i < r->n; i++)
		if (r->key[i] == k)
			return i;
	return -1;
}

static void ref_use(struct ref *r, int k)
{
	r->freq[k]++;
	if (++r->uses % (4 * (uint64_t)r->n_keys) == 0)
		for (int i = 0; i < r->n_keys; i++)
			r->freq[i] /= 2;
}

static int ref_insert(struct ref *r, int k, int pin)
{
	int v = ref_slot(r, -1);
	if (v < 0) {
		for (int i = 0; i < r->n; i++) {
			if (r->pin[i] >= 0)
				continue;
			if (v < 0 || r->freq[r->key[i]] < r->freq[r->key[v]] ||
			    (r->freq[r->key[i]] == r->freq[r->key[v]] && r->last[i] < r->last[v]))
				v = i;
		}
		if (v < 0)
			return -1;
		if (r->freq[r->key[v]] > r->freq[k]) {
			r->refused++;
			return -1;
		}
	}
	r->key[v] = k;
	r->pin[v] = pin;
	r->last[v] = ++r->tick;
	return v;
}

/* A cyclic scan of L layers, each token routing K of E experts per layer: hot experts 0..H-1 take `hot` of
 * the picks. Returns the cache's hit rate; lru: the same traffic through a plain LRU of the same size. */
static double scan(int L, int E, int K, int H, double hot, int n, int tokens, bool lru, uint64_t seed)
{
	struct expert_cache c;
	CHECK(ec_init(&c, n, L, E) == 0);
	struct rng s;
	rng_seed(&s, seed);
	uint64_t lru_last[4096] = {0}, tick = 0, hits = 0, looks = 0;
	int lru_key[256];
	for (int i = 0; i < n; i++)
		lru_key[i] = -1;
	for (int t = 0; t < tokens; t++)
		for (int l = 0; l < L; l++) {
			bool used[256] = {0};
			for (int k = 0; k < K; k++) {
				int e;
				do
					e = unif01(&s) < hot ? (int)(rng_next(&s) % (uint64_t)H) : (int)(rng_next(&s) % (uint64_t)E);
				while (used[e]);
				used[e] = true;
			}
			for (int e = 0; e < E; e++) {
				if (!used[e])
					continue;
				int key = l * E + e;
				if (lru) {
					int at = -1, v = 0;
					for (int i = 0; i < n; i++) {
						if (lru_key[i] == key)
							at = i;
						if (lru_key[i] < 0 || lru_last[i] < lru_last[v])
							v = i;
					}
					looks++;
					hits += at >= 0;
					lru_key[at >= 0 ? at : v] = key;
					lru_last[at >= 0 ? at : v] = ++tick;
					continue;
				}
				ec_use(&c, l, e);
				if (ec_find(&c, l, e, true) < 0)
					ec_insert(&c, l, e, l);
			}
			ec_unpin(&c, l);
		}
	double rate = lru ? (double)hits / (double)looks : (double)c.hits / (double)(c.hits + c.misses);
	ec_free(&c);
	return rate;
}

int main(void)
{
	struct expert_cache c;
	/* known cases: 2 units x 4 experts, 3 entries */
	CHECK(ec_init(&c, 3, 2, 4) == 0);
	CHECK(ec_find(&c, 0, 1, true) == -1 && c.misses == 1);
	ec_use(&c, 0, 1);
	int a = ec_insert(&c, 0, 1, 0);
	CHECK(a >= 0 && ec_find(&c, 0, 1, true) == a && c.hits == 1);
	ec_use(&c, 0, 2);
	int b = ec_insert(&c, 0, 2, 0);
	ec_use(&c, 0, 3);
	int d = ec_insert(&c, 0, 3, 0);
	CHECK(b >= 0 && d >= 0 && a != b && b != d && a != d);
	ec_use(&c, 1, 0);
	CHECK(ec_insert(&c, 1, 0, 1) == -1); /* every entry pinned by unit 0 */
	ec_unpin(&c, 0);
	CHECK(c.ent[a].pin == -1 && c.ent[a].guard == 0);
	ec_use(&c, 0, 1); /* (0,1) has 2 uses; (0,2) and (0,3) 1 each, (0,2) the older */
	int x = ec_insert(&c, 1, 0, 1);
	CHECK(x == b && ec_find(&c, 0, 2, false) == -1 && c.evictions == 1);
	CHECK(ec_find(&c, 1, 0, false) == b);
	ec_unpin(&c, 1);
	/* (1,1) with no use against victims of 1 use: refused */
	CHECK(ec_insert(&c, 1, 1, -1) == -1 && c.refused == 1);
	ec_free(&c);
	CHECK(ec_insert(&c, 0, 0, 0) == -1); /* a cache of no entries holds nothing */

	/* random traffic against the reference: 3 units x 20 experts, 7 entries */
	struct ref r = {.n = 7, .n_exp = 20, .n_keys = 60};
	for (int i = 0; i < r.n; i++)
		r.key[i] = -1, r.pin[i] = -1;
	CHECK(ec_init(&c, r.n, 3, r.n_exp) == 0);
	struct rng s;
	rng_seed(&s, 42);
	for (int step = 0; step < 20000; step++) {
		int unit = (int)(rng_next(&s) % 3), e = (int)(rng_next(&s) % 20);
		e = unif01(&s) < 0.5 ? e % 5 : e; /* some experts hotter */
		int k = unit * 20 + e;
		if (unif01(&s) < 0.3) { /* a prefetch: look, insert unpinned */
			int have = ec_find(&c, unit, e, false);
			CHECK(have == ref_slot(&r, k));
			if (have < 0)
				CHECK(ec_insert(&c, unit, e, -1) == ref_insert(&r, k, -1));
			else
				r.last[have] = ++r.tick;
		} else {
			ec_use(&c, unit, e);
			ref_use(&r, k);
			int have = ec_find(&c, unit, e, true);
			CHECK(have == ref_slot(&r, k));
			r.hits += have >= 0;
			r.misses += have < 0;
			if (have >= 0)
				r.last[have] = ++r.tick, r.pin[have] = unit;
			else
				CHECK(ec_insert(&c, unit, e, unit) == ref_insert(&r, k, unit));
		}
		if (unif01(&s) < 0.4) {
			int u = (int)(rng_next(&s) % 3);
			ec_unpin(&c, u);
			for (int i = 0; i < r.n; i++)
				r.pin[i] = r.pin[i] == u ? -1 : r.pin[i];
		}
		for (int i = 0; i < r.n; i++)
			CHECK_MSG(c.ent[i].key == r.key[i] && c.ent[i].pin == r.pin[i], "step %d entry %d: %d/%d vs %d/%d", step,
				  i, c.ent[i].key, c.ent[i].pin, r.key[i], r.pin[i]);
		if (check_failures)
			break;
	}
	CHECK(c.hits == r.hits && c.misses == r.misses && c.refused == r.refused);
	CHECK(c.hits > 1000 && c.refused > 0 && c.evictions > 0);
	ec_free(&c);

	/* the policy's purpose: 8 layers x 64 experts, top-4, 64 entries (1/8 of the experts, 2 tokens' worth);
	 * hot experts 0..7 of every layer take 80% of the picks */
	double skew = scan(8, 64, 4, 8, 0.8, 64, 400, false, 7), skew_lru = scan(8, 64, 4, 8, 0.8, 64, 400, true, 7);
	double unif = scan(8, 64, 4, 8, 0.0, 64, 400, false, 7);
	printf("hit rate: skewed %.3f (LRU %.3f), uniform %.3f\n", skew, skew_lru, unif);
	CHECK_MSG(skew > 0.6, "skewed hit rate %.3f", skew);
	CHECK_MSG(skew > skew_lru + 0.2, "frequency-aware %.3f vs LRU %.3f", skew, skew_lru);
	CHECK_MSG(unif > 0.05 && unif < 0.3, "uniform hit rate %.3f (about 64 / 512)", unif);
	CHECK_DONE();
}
