/* test_kvcache.c: the KV page manager (src/engine/kvcache.c): allocation and growth, release on close, window
 * groups keeping only what a query can see, prefix sharing with reference counts and LRU eviction,
 * exhaustion failing cleanly (all or nothing), and a random walk that checks the bookkeeping invariants
 * after every operation. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "engine/kvcache.h"
#include "base/rng.h"

#define P 64

/* Every page is free xor referenced; references = page-table entries + live prefix entries. */
static void check_invariants(const struct kv_cache *kc)
{
	for (int g = 0; g < kc->n_groups; g++) {
		const struct kvc_group *gr = &kc->g[g];
		int refs[4096] = {0}, in_free[4096] = {0};
		for (int s = 0; s < kc->max_seqs; s++)
			for (int i = 0; i < kc->max_pages; i++) {
				int p = kc->tables[g][s * kc->max_pages + i];
				CHECK(p >= -1 && p < gr->n_pages);
				if (p >= 0) {
					CHECK(kc->seqs[s].used);
					refs[p]++;
				}
			}
		for (int e = 0; e < kc->n_pfx; e++)
			if (kc->pfx[e].live && kc->pfx[e].pages[g] >= 0)
				refs[kc->pfx[e].pages[g]]++;
		for (int i = 0; i < gr->n_free; i++)
			in_free[gr->free_list[i]]++;
		for (int p = 0; p < gr->n_pages; p++) {
			CHECK_MSG(refs[p] == gr->ref[p], "group %d page %d: %d references counted, %d recorded", g, p, refs[p],
				  gr->ref[p]);
			CHECK_MSG(in_free[p] == (gr->ref[p] == 0), "group %d page %d: free %d, ref %d", g, p, in_free[p],
				  gr->ref[p]);
		}
	}
}

static int mapped(const struct kv_cache *kc, int g, int s)
{
	int n = 0;
	for (int i = 0; i < kc->max_pages; i++)
		n += kc->tables[g][s * kc->max_pages + i] >= 0;
	return n;
}

static void basic(void)
{
	struct kv_cache kc;
	char err[256];
	int w[1] = {0}, np[1] = {8}, s0, s1, cached;
	CHECK(kvc_init(&kc, 48, 1000, 2, 1, w, np, err, sizeof(err)) == -EINVAL); /* page not a multiple of 64 */
	CHECK(kvc_init(&kc, P, 8 * P, 2, 1, w, np, err, sizeof(err)) == 0);
	kc.prefix_off = true;
	CHECK(kvc_seq_open(&kc, NULL, 0, &s0, &cached, err, sizeof(err)) == 0 && cached == 0);
	CHECK(kvc_grow(&kc, s0, 1, err, sizeof(err)) == 0 && mapped(&kc, 0, s0) == 1);
	kvc_advance(&kc, s0, 1);
	CHECK(kvc_grow(&kc, s0, P, err, sizeof(err)) == 0 && mapped(&kc, 0, s0) == 2); /* 1 .. 64 spans two pages */
	kvc_advance(&kc, s0, P);
	CHECK(kc.seqs[s0].len == P + 1 && kc.g[0].n_free == 6);
	/* growth past the context fails and changes nothing */
	CHECK(kvc_grow(&kc, s0, 8 * P, err, sizeof(err)) == -ENOSPC && mapped(&kc, 0, s0) == 2);
	CHECK(kvc_seq_open(&kc, NULL, 0, &s1, &cached, err, sizeof(err)) == 0 && s1 != s0);
	/* exhaustion: s1 asks for 7 pages with 6 free -> all or nothing */
	CHECK(kvc_grow(&kc, s1, 7 * P, err, sizeof(err)) == -ENOSPC && strstr(err, "full"));
	CHECK(mapped(&kc, 0, s1) == 0 && kc.g[0].n_free == 6);
	check_invariants(&kc);
	CHECK(kvc_grow(&kc, s1, 6 * P, err, sizeof(err)) == 0 && kc.g[0].n_free == 0);
	/* a failed step's undo */
	kvc_shrink(&kc, s1, 0);
	CHECK(kc.g[0].n_free == 6);
	int s2;
	CHECK(kvc_seq_open(&kc, NULL, 0, &s2, &cached, err, sizeof(err)) == -ENOSPC); /* 2 rows */
	kvc_seq_close(&kc, s0);
	CHECK(kc.g[0].n_free == 8);
	check_invariants(&kc);
	kvc_free(&kc);
}

static void window(void)
{
	struct kv_cache kc;
	char err[256];
	int w[2] = {0, 100}, np[2] = {32, 2 * kvc_window_pages(100, P, 16, 32 * P)}, s, cached;
	CHECK(kvc_window_pages(100, P, 16, 32 * P) == 3); /* 99 old + 16 new positions span at most 3 pages */
	CHECK(kvc_init(&kc, P, 32 * P, 2, 2, w, np, err, sizeof(err)) == 0);
	kc.prefix_off = true;
	CHECK(kvc_seq_open(&kc, NULL, 0, &s, &cached, err, sizeof(err)) == 0);
	int maxw = 0;
	for (int len = 0; len + 16 <= 20 * P; len += 16) {
		CHECK(kvc_grow(&kc, s, 16, err, sizeof(err)) == 0);
		/* every position a query of this step can see is mapped in the window group */
		for (int j = len + 16 - 100 > 0 ? len + 16 - 100 : 0; j < len + 16; j++)
			CHECK(kc.tables[1][s * kc.max_pages + j / P] >= 0);
		kvc_advance(&kc, s, 16);
		maxw = mapped(&kc, 1, s) > maxw ? mapped(&kc, 1, s) : maxw;
		check_invariants(&kc);
	}
	CHECK(mapped(&kc, 0, s) == 20 && maxw <= 3);
	kvc_free(&kc);
}

static void prefix(void)
{
	struct kv_cache kc;
	char err[256];
	int w[2] = {0, 100}, np[2] = {10, 16}, a, b, c, cached;
	int prompt[5 * P];
	for (int i = 0; i < 5 * P; i++)
		prompt[i] = 1000 + i;
	CHECK(kvc_init(&kc, P, 8 * P, 3, 2, w, np, err, sizeof(err)) == 0);
	CHECK(kvc_seq_open(&kc, prompt, 3 * P + 10, &a, &cached, err, sizeof(err)) == 0 && cached == 0);
	CHECK(kvc_grow(&kc, a, 3 * P + 10, err, sizeof(err)) == 0);
	kvc_advance(&kc, a, 3 * P + 10);
	CHECK(kc.n_pfx == 3); /* three whole prompt pages registered */
	check_invariants(&kc);
	/* the same first 2 pages, then different: 2 pages shared */
	int p2[3 * P];
	memcpy(p2, prompt, sizeof(p2));
	p2[2 * P + 5] = 7;
	CHECK(kvc_seq_open(&kc, p2, 3 * P, &b, &cached, err, sizeof(err)) == 0 && cached == 2 * P);
	CHECK(kc.tables[0][b * kc.max_pages] == kc.tables[0][a * kc.max_pages]);
	CHECK(kc.g[0].ref[kc.tables[0][a * kc.max_pages]] == 3); /* a, b and the prefix entry */
	check_invariants(&kc);
	/* a prompt of exactly 3 pages reuses at most 2: the last token must be computed for its logits */
	CHECK(kvc_seq_open(&kc, prompt, 3 * P, &c, &cached, err, sizeof(err)) == 0 && cached == 2 * P);
	kvc_seq_close(&kc, c);
	/* closing every sequence leaves the prefix entries holding their pages */
	kvc_seq_close(&kc, a);
	kvc_seq_close(&kc, b);
	check_invariants(&kc);
	CHECK(kc.g[0].n_free == 10 - 3 && kvc_available(&kc, 0) == 10);
	/* a sequence that needs 8 of the 10 pages evicts one entry: the deepest (children before parents) */
	CHECK(kvc_seq_open(&kc, NULL, 0, &a, &cached, err, sizeof(err)) == 0);
	CHECK(kvc_grow(&kc, a, 8 * P, err, sizeof(err)) == 0);
	int live = 0;
	for (int e = 0; e < kc.n_pfx; e++) {
		live += kc.pfx[e].live;
		CHECK(!kc.pfx[e].live || kc.pfx[e].depth < 2);
	}
	CHECK(live == 2 && kc.g[0].n_free == 0);
	check_invariants(&kc);
	kvc_free(&kc);
}

/* Random opens (with prompts drawn from a few shared prefixes), growths, advances, shrinks and closes. */
static void random_walk(void)
{
	struct kv_cache kc;
	char err[256];
	int w[2] = {0, 150}, np[2] = {20, 12};
	CHECK(kvc_init(&kc, P, 10 * P, 6, 2, w, np, err, sizeof(err)) == 0);
	struct rng r;
	rng_seed(&r, 7);
	int prompts[3][10 * P];
	for (int k = 0; k < 3; k++)
		for (int i = 0; i < 10 * P; i++)
			prompts[k][i] = i < 3 * P ? i : k * 100000 + i;
	bool open[6] = {0};
	int fails = 0, shared = 0;
	for (int it = 0; it < 4000; it++) {
		int s = (int)(rng_next(&r) % 6), op = (int)(rng_next(&r) % 4), cached;
		if (!open[s]) {
			int k = (int)(rng_next(&r) % 3), n = 1 + (int)(rng_next(&r) % (6 * P)), seq;
			if (kvc_seq_open(&kc, prompts[k], n, &seq, &cached, err, sizeof(err)) == 0) {
				open[seq] = true;
				shared += cached > 0;
				CHECK(cached < n && cached % P == 0);
			}
		} else if (op == 0) {
			kvc_seq_close(&kc, s);
			open[s] = false;
		} else {
			int n = 1 + (int)(rng_next(&r) % 100), len = kc.seqs[s].len;
			if (len + n > kc.ctx) {
				kvc_seq_close(&kc, s);
				open[s] = false;
			} else if (kvc_grow(&kc, s, n, err, sizeof(err)) == 0) {
				if (op == 1)
					kvc_shrink(&kc, s, len);
				else
					kvc_advance(&kc, s, n);
			} else {
				fails++;
				CHECK(kc.seqs[s].len == len);
			}
		}
		check_invariants(&kc);
		if (check_failures)
			break;
	}
	CHECK_MSG(fails > 0 && shared > 0, "%d failed growths, %d shared opens", fails, shared); /* both were reached */
	for (int s = 0; s < 6; s++)
		kvc_seq_close(&kc, s);
	/* with every sequence closed, only the prefix cache holds pages, and all of them are available */
	CHECK(kvc_available(&kc, 0) == kc.g[0].n_pages && kvc_available(&kc, 1) == kc.g[1].n_pages);
	check_invariants(&kc);
	kvc_free(&kc);
}

int main(void)
{
	basic();
	window();
	prefix();
	random_walk();
	CHECK_DONE();
}
