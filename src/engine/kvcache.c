/*
 * kvcache.c: the KV page manager (kvcache.h): free lists and reference counts per group, page tables per
 * sequence, the prefix cache with LRU eviction.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kvcache.h"

static int *row_of(const struct kv_cache *kc, int g, int seq)
{
	return kc->tables[g] + (size_t)seq * (size_t)kc->max_pages;
}

static int div_up(int a, int b)
{
	return (a + b - 1) / b;
}

int kvc_window_pages(int window, int page, int t_max, int ctx)
{
	int all = div_up(ctx, page);
	if (window <= 0)
		return all;
	int n = div_up(window - 1 + t_max, page) + 1;
	return n < all ? n : all;
}

int kvc_init(struct kv_cache *kc, int page, int ctx, int max_seqs, int n_groups, const int *windows,
	     const int *n_pages, char *err, size_t errlen)
{
	memset(kc, 0, sizeof(*kc));
	if (page < 64 || page % 64 || ctx < 1 || max_seqs < 1 || n_groups < 1 || n_groups > KVC_GROUPS_MAX) {
		snprintf(err, errlen, "KV cache: page %d (a multiple of 64), ctx %d, %d sequences, %d groups", page, ctx,
			 max_seqs, n_groups);
		return -EINVAL;
	}
	kc->page = page;
	kc->ctx = ctx;
	kc->max_pages = div_up(ctx, page);
	kc->max_seqs = max_seqs;
	kc->n_groups = n_groups;
	kc->seqs = calloc((size_t)max_seqs, sizeof(*kc->seqs));
	bool ok = kc->seqs;
	for (int g = 0; ok && g < n_groups; g++) {
		struct kvc_group *gr = &kc->g[g];
		gr->window = windows[g];
		gr->n_pages = n_pages[g];
		gr->ref = calloc((size_t)(n_pages[g] > 0 ? n_pages[g] : 1), sizeof(int));
		gr->free_list = malloc(sizeof(int) * (size_t)(n_pages[g] > 0 ? n_pages[g] : 1));
		kc->tables[g] = malloc(sizeof(int) * (size_t)max_seqs * (size_t)kc->max_pages);
		ok = gr->ref && gr->free_list && kc->tables[g];
		for (int i = 0; ok && i < n_pages[g]; i++)
			gr->free_list[i] = n_pages[g] - 1 - i; /* page 0 is taken first */
		gr->n_free = ok ? n_pages[g] : 0;
		for (size_t i = 0; ok && i < (size_t)max_seqs * (size_t)kc->max_pages; i++)
			kc->tables[g][i] = -1;
	}
	if (!ok) {
		kvc_free(kc);
		snprintf(err, errlen, "out of memory for the KV page tables");
		return -ENOMEM;
	}
	return 0;
}

void kvc_free(struct kv_cache *kc)
{
	for (int g = 0; g < KVC_GROUPS_MAX; g++) {
		free(kc->g[g].ref);
		free(kc->g[g].free_list);
		free(kc->tables[g]);
	}
	for (int s = 0; kc->seqs && s < kc->max_seqs; s++)
		free(kc->seqs[s].prompt);
	for (int i = 0; i < kc->n_pfx; i++)
		free(kc->pfx[i].tokens);
	free(kc->seqs);
	free(kc->pfx);
	memset(kc, 0, sizeof(*kc));
}

static void page_release(struct kv_cache *kc, int g, int p)
{
	struct kvc_group *gr = &kc->g[g];
	if (--gr->ref[p] == 0)
		gr->free_list[gr->n_free++] = p;
}

/* Drops the least recently used prefix entry (the deepest of equals: children before parents). */
static bool prefix_evict(struct kv_cache *kc)
{
	int best = -1;
	for (int i = 0; i < kc->n_pfx; i++) {
		const struct kvc_prefix *e = &kc->pfx[i];
		if (e->live && (best < 0 || e->used < kc->pfx[best].used ||
				(e->used == kc->pfx[best].used && e->depth > kc->pfx[best].depth)))
			best = i;
	}
	if (best < 0)
		return false;
	struct kvc_prefix *e = &kc->pfx[best];
	for (int g = 0; g < kc->n_groups; g++)
		if (e->pages[g] >= 0)
			page_release(kc, g, e->pages[g]);
	free(e->tokens);
	e->tokens = NULL;
	e->live = false;
	return true;
}

static int page_take(struct kv_cache *kc, int g)
{
	struct kvc_group *gr = &kc->g[g];
	while (!gr->n_free && prefix_evict(kc))
		;
	if (!gr->n_free)
		return -1;
	int p = gr->free_list[--gr->n_free];
	gr->ref[p] = 1;
	return p;
}

static uint64_t hash_page(uint64_t parent, const int *tokens, int n)
{
	uint64_t h = parent ^ 0x9e3779b97f4a7c15ull;
	for (int i = 0; i < n; i++) {
		h ^= (uint64_t)(uint32_t)tokens[i];
		h *= 0x100000001b3ull;
		h ^= h >> 29;
	}
	return h;
}

static int prefix_find(const struct kv_cache *kc, uint64_t key, int parent, int depth, const int *tokens)
{
	for (int i = 0; i < kc->n_pfx; i++) {
		const struct kvc_prefix *e = &kc->pfx[i];
		if (e->live && e->key == key && e->parent == parent && e->depth == depth &&
		    !memcmp(e->tokens, tokens, sizeof(int) * (size_t)kc->page))
			return i;
	}
	return -1;
}

static void prefix_touch(struct kv_cache *kc, int e)
{
	kc->clock++;
	for (; e >= 0; e = kc->pfx[e].parent)
		kc->pfx[e].used = kc->clock;
}

/* Releases the pages of the window groups that no query at position >= len can see. */
static void window_release(struct kv_cache *kc, int seq)
{
	int len = kc->seqs[seq].len;
	for (int g = 0; g < kc->n_groups; g++) {
		int W = kc->g[g].window, *row = row_of(kc, g, seq);
		for (int i = 0; W > 0 && i < kc->max_pages && (i + 1) * kc->page - 1 <= len - W; i++)
			if (row[i] >= 0) {
				page_release(kc, g, row[i]);
				row[i] = -1;
			}
	}
}

int kvc_seq_open(struct kv_cache *kc, const int *prompt, int n_prompt, int *seq, int *n_cached, char *err,
		 size_t errlen)
{
	int s = 0;
	while (s < kc->max_seqs && kc->seqs[s].used)
		s++;
	if (s == kc->max_seqs) {
		snprintf(err, errlen, "all %d sequences of the KV cache are in use", kc->max_seqs);
		return -ENOSPC;
	}
	struct kvc_seq *sq = &kc->seqs[s];
	*sq = (struct kvc_seq){.used = true, .last_entry = -1};
	if (n_prompt > 0 && prompt) {
		sq->prompt = malloc(sizeof(int) * (size_t)n_prompt);
		if (!sq->prompt) {
			sq->used = false;
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		memcpy(sq->prompt, prompt, sizeof(int) * (size_t)n_prompt);
		sq->n_prompt = n_prompt;
	}
	/* the longest registered chain of whole pages, leaving the last prompt token to compute */
	int k = 0, parent = -1;
	uint64_t key = 0;
	int chain[1024];
	while (!kc->prefix_off && k < 1024 && (k + 1) * kc->page <= n_prompt - 1) {
		const int *t = prompt + (size_t)k * (size_t)kc->page;
		uint64_t kk = hash_page(key, t, kc->page);
		int e = prefix_find(kc, kk, parent, k, t);
		if (e < 0)
			break;
		chain[k++] = e;
		parent = e;
		key = kk;
	}
	/* a window group must still have the pages its window reaches back to from position k * page */
	for (bool ok = false; k > 0 && !ok; ) {
		ok = true;
		for (int g = 0; g < kc->n_groups && ok; g++)
			for (int i = 0; i < k && ok; i++)
				if (kc->pfx[chain[i]].pages[g] < 0 && (kc->g[g].window == 0 ||
								       (i + 1) * kc->page - 1 > k * kc->page - kc->g[g].window))
					ok = false;
		k -= !ok;
	}
	for (int i = 0; i < k; i++)
		for (int g = 0; g < kc->n_groups; g++) {
			int p = kc->pfx[chain[i]].pages[g];
			row_of(kc, g, s)[i] = p;
			if (p >= 0)
				kc->g[g].ref[p]++;
		}
	if (k > 0) {
		prefix_touch(kc, chain[k - 1]);
		sq->last_entry = chain[k - 1];
	}
	sq->len = k * kc->page;
	sq->n_reg = k;
	window_release(kc, s);
	*seq = s;
	*n_cached = sq->len;
	return 0;
}

void kvc_shrink(struct kv_cache *kc, int seq, int len)
{
	for (int g = 0; g < kc->n_groups; g++) {
		int *row = row_of(kc, g, seq);
		for (int i = div_up(len, kc->page); i < kc->max_pages; i++)
			if (row[i] >= 0) {
				page_release(kc, g, row[i]);
				row[i] = -1;
			}
	}
}

void kvc_seq_close(struct kv_cache *kc, int seq)
{
	if (seq < 0 || seq >= kc->max_seqs || !kc->seqs[seq].used)
		return;
	kvc_shrink(kc, seq, 0);
	free(kc->seqs[seq].prompt);
	memset(&kc->seqs[seq], 0, sizeof(kc->seqs[seq]));
}

int kvc_grow(struct kv_cache *kc, int seq, int n, char *err, size_t errlen)
{
	struct kvc_seq *sq = &kc->seqs[seq];
	if (n < 0 || sq->len + n > kc->ctx) {
		snprintf(err, errlen, "sequence of %d positions does not fit the context of %d", sq->len + n, kc->ctx);
		return -ENOSPC;
	}
	if (n == 0)
		return 0;
	for (int g = 0; g < kc->n_groups; g++) {
		int *row = row_of(kc, g, seq);
		for (int i = sq->len / kc->page; i <= (sq->len + n - 1) / kc->page; i++) {
			if (row[i] >= 0)
				continue;
			if ((row[i] = page_take(kc, g)) < 0) {
				kvc_shrink(kc, seq, sq->len);
				snprintf(err, errlen, "the KV cache is full (%d pages of %d positions%s)", kc->g[g].n_pages,
					 kc->page, kc->g[g].window ? " in the sliding-window pool" : "");
				return -ENOSPC;
			}
		}
	}
	return 0;
}

static void prefix_register(struct kv_cache *kc, int seq)
{
	struct kvc_seq *sq = &kc->seqs[seq];
	while (!kc->prefix_off && (sq->n_reg + 1) * kc->page <= sq->n_prompt && (sq->n_reg + 1) * kc->page <= sq->len) {
		int i = sq->n_reg, parent = sq->last_entry;
		if (i > 0 && (parent < 0 || !kc->pfx[parent].live || kc->pfx[parent].depth != i - 1))
			return; /* its chain was evicted: later pages could never be found */
		const int *t = sq->prompt + (size_t)i * (size_t)kc->page;
		uint64_t key = hash_page(i ? kc->pfx[parent].key : 0, t, kc->page);
		int e = prefix_find(kc, key, parent, i, t);
		if (e < 0) {
			int slot = 0;
			while (slot < kc->n_pfx && kc->pfx[slot].live)
				slot++;
			if (slot == kc->cap_pfx) {
				int cap = kc->cap_pfx ? 2 * kc->cap_pfx : 64;
				struct kvc_prefix *np = realloc(kc->pfx, sizeof(*np) * (size_t)cap);
				if (!np)
					return;
				kc->pfx = np;
				kc->cap_pfx = cap;
			}
			int *tok = malloc(sizeof(int) * (size_t)kc->page);
			if (!tok)
				return;
			memcpy(tok, t, sizeof(int) * (size_t)kc->page);
			struct kvc_prefix *np = &kc->pfx[slot];
			*np = (struct kvc_prefix){.key = key, .parent = parent, .depth = i, .tokens = tok, .live = true};
			for (int g = 0; g < KVC_GROUPS_MAX; g++) {
				np->pages[g] = g < kc->n_groups ? row_of(kc, g, seq)[i] : -1;
				if (np->pages[g] >= 0)
					kc->g[g].ref[np->pages[g]]++;
			}
			if (slot == kc->n_pfx)
				kc->n_pfx++;
			e = slot;
		}
		prefix_touch(kc, e);
		sq->last_entry = e;
		sq->n_reg++;
	}
}

void kvc_advance(struct kv_cache *kc, int seq, int n)
{
	kc->seqs[seq].len += n;
	prefix_register(kc, seq);
	window_release(kc, seq);
}

int kvc_available(const struct kv_cache *kc, int g)
{
	int n = kc->g[g].n_free;
	for (int i = 0; i < kc->n_pfx; i++) {
		int p = kc->pfx[i].live ? kc->pfx[i].pages[g] : -1;
		n += p >= 0 && kc->g[g].ref[p] == 1;
	}
	return n;
}

int kvc_pages_for(const struct kv_cache *kc, int g, int len, int t_max)
{
	int n = div_up(len, kc->page), w = kvc_window_pages(kc->g[g].window, kc->page, t_max, kc->ctx);
	return n < w ? n : w;
}
