/*
 * kvcache.h: the page manager of the paged KV cache (src/kernels/kv_pages.h has the page contents). Host-side
 * bookkeeping only: which physical page of each pool holds which positions of which sequence. The model
 * allocates the pools (one K and one V pool per layer) in backend memory with the page counts it gives.
 *
 * Groups. Layers with the same attention window share page tables: group 0 holds the full-attention layers
 * (window 0), each further group the layers of one window W. A window group keeps only the pages a future
 * query can see: once a sequence has len positions, page i is released when its last position
 * (i+1)*page - 1 <= len - W, so a window layer holds about W + page positions per sequence whatever the
 * context.
 *
 * Sequences are rows of the page tables (`tables[g]`, rows of max_pages entries, -1 unmapped: the kernels
 * read it as is). Pages are reference counted: a page may be mapped by several sequences and by the prefix
 * cache.
 *
 * Prefix cache. When a page lying wholly inside a sequence's prompt has been computed, it is registered
 * under the hash of the prompt up to its end (a chain: hash of the previous page's key and this page's
 * tokens, tokens compared on lookup); the cache holds a reference to its pages in every group. A new
 * sequence whose prompt starts with registered pages maps them instead of computing them. Entries are
 * dropped least recently used first (a child never outlives its parent's use: using an entry touches its
 * whole chain) when a group runs out of free pages.
 *
 * Nothing here is ever corrupted by exhaustion: kvc_grow maps all the pages a growth needs or none.
 */
#ifndef FERRY_KVCACHE_H
#define FERRY_KVCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVC_GROUPS_MAX 8

struct kvc_group {
	int window;     /* 0: full attention */
	int n_pages;
	int *ref;       /* [n_pages] references: sequences and prefix entries mapping the page */
	int *free_list; /* [n_pages] stack of free pages */
	int n_free;
};

struct kvc_prefix {
	uint64_t key;   /* hash of the prompt up to the end of this page */
	int parent;     /* entry of the page before, -1 for page 0 */
	int depth;      /* its logical page index */
	uint64_t used;  /* clock of the last use */
	int *tokens;    /* [page] */
	int pages[KVC_GROUPS_MAX];
	bool live;
};

struct kvc_seq {
	bool used;
	int len;        /* positions computed */
	int *prompt;    /* [n_prompt] copy, for registering its pages */
	int n_prompt;
	int n_reg;      /* prompt pages registered so far */
	int last_entry; /* prefix entry of page n_reg - 1, or -1 */
};

struct kv_cache {
	int page, ctx, max_pages, max_seqs, n_groups;
	struct kvc_group g[KVC_GROUPS_MAX];
	int *tables[KVC_GROUPS_MAX]; /* [max_seqs * max_pages] */
	struct kvc_seq *seqs;        /* [max_seqs] */
	struct kvc_prefix *pfx;
	int n_pfx, cap_pfx;
	uint64_t clock;
	bool prefix_off;             /* no registration or lookup */
};

/* page: positions per page; ctx: most positions of a sequence; windows[n_groups] (windows[0] == 0 unless
 * every layer has a window) and n_pages[n_groups] the pool sizes. */
int kvc_init(struct kv_cache *kc, int page, int ctx, int max_seqs, int n_groups, const int *windows,
	     const int *n_pages, char *err, size_t errlen);
void kvc_free(struct kv_cache *kc);

/* Pages a window group needs per sequence so that a step of up to t_max tokens always finds room. */
int kvc_window_pages(int window, int page, int t_max, int ctx);

/* A free sequence row; prompt (may be NULL) is remembered for the prefix cache, and registered whole pages
 * that begin it are mapped: *n_cached positions (< n_prompt) are then already computed. -ENOSPC: no row. */
int kvc_seq_open(struct kv_cache *kc, const int *prompt, int n_prompt, int *seq, int *n_cached, char *err,
		 size_t errlen);
void kvc_seq_close(struct kv_cache *kc, int seq);

/* Maps pages for positions len .. len+n-1 of seq in every group; all or nothing (-ENOSPC with err). */
int kvc_grow(struct kv_cache *kc, int seq, int n, char *err, size_t errlen);
/* Unmaps the pages of seq past position len - 1 that kvc_grow mapped (the undo of a failed step). */
void kvc_shrink(struct kv_cache *kc, int seq, int len);
/* After a step computed n more positions of seq: len += n, registers its newly complete prompt pages,
 * releases what the window groups no longer need. */
void kvc_advance(struct kv_cache *kc, int seq, int n);

/* Pages of group g free for new positions: unmapped, or held only by the prefix cache. */
int kvc_available(const struct kv_cache *kc, int g);
/* Pages of group g that a sequence needs for positions 0 .. len-1 at most (the worst case of a step of up
 * to t_max tokens included for window groups). */
int kvc_pages_for(const struct kv_cache *kc, int g, int len, int t_max);

#endif
