/*
 * tok_bpe.c: the BPE merge loop on one pre-token, shared by both merge kinds.
 *
 * Symbols start as single characters (single bytes for byte-level vocabularies) in a linked list; a
 * min-heap holds candidate adjacent pairs ordered by (priority, left position): merge rank for ranked
 * merges, minus the merged token's score for SentencePiece. A popped pair is stale when either side has
 * since merged; sizes only grow, so "both alive and sizes add up" identifies a current pair. Symbols that
 * end as no token (SentencePiece characters outside the vocabulary) fall back to <0xXX> byte tokens, else
 * to the unknown token (llama.cpp); a tokenizer.json starts from HF's symbols instead (hf_symbols).
 *
 * Results for short pre-tokens are cached per tokenizer (the same words recur constantly in text), so a
 * word's ids must depend on the word alone (fuse_unk never reaches into ids before the word).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

#define CACHE_MAX_WORD 64
#define CACHE_MAX_ENTRIES (1u << 17)

struct sym {
	int32_t id;
	uint32_t start, len;
	int32_t prev, next;
};

struct bigram {
	double prio;
	int32_t left, right, id;
	uint32_t size;
};

static bool before(const struct bigram *a, const struct bigram *b)
{
	return a->prio < b->prio || (a->prio == b->prio && a->left < b->left);
}

struct heap {
	struct bigram *v;
	size_t n, cap;
};

static int heap_push(struct heap *h, struct bigram b)
{
	if (h->n == h->cap) {
		size_t cap = h->cap ? 2 * h->cap : 64;
		struct bigram *v = realloc(h->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		h->v = v;
		h->cap = cap;
	}
	size_t i = h->n++;
	while (i > 0 && before(&b, &h->v[(i - 1) / 2])) {
		h->v[i] = h->v[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	h->v[i] = b;
	return 0;
}

static struct bigram heap_pop(struct heap *h)
{
	struct bigram top = h->v[0], last = h->v[--h->n];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && before(&h->v[c + 1], &h->v[c]))
			c++;
		if (!before(&h->v[c], &last))
			break;
		h->v[i] = h->v[c];
		i = c;
	}
	if (h->n)
		h->v[i] = last;
	return top;
}

static int try_pair(const struct tokenizer *t, const char *s, const struct sym *sy, int32_t l, int32_t r,
		    struct heap *h)
{
	if (l < 0 || r < 0)
		return 0;
	struct bigram b = {0, l, r, -1, sy[l].len + sy[r].len};
	if (t->merge == TOK_MERGE_RANKS) {
		if (sy[l].id < 0 || sy[r].id < 0)
			return 0;
		const struct pairmap_slot *m = pairmap_get(&t->merges, (uint64_t)sy[l].id << 32 | (uint32_t)sy[r].id);
		if (!m)
			return 0;
		b.prio = m->a;
		b.id = m->b;
	} else {
		b.id = strmap_get(&t->vocab, s + sy[l].start, b.size);
		if (b.id < 0)
			return 0;
		b.prio = -(double)t->score[b.id];
	}
	return heap_push(h, b);
}

static int cache_get(struct tokenizer *t, const char *s, size_t n, struct tok_ids *out)
{
	int rc = -ENOENT;
	pthread_mutex_lock(&t->lock);
	int32_t at = strmap_get(&t->cache, s, n);
	if (at >= 0) {
		rc = 0;
		int32_t k = t->cache_ids.ids[at];
		for (int32_t i = 0; !rc && i < k; i++)
			rc = tok_ids_push(out, t->cache_ids.ids[at + 1 + i]);
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}

static void cache_put(struct tokenizer *t, const char *s, size_t n, const int32_t *ids, size_t k)
{
	pthread_mutex_lock(&t->lock);
	if (t->cache.n >= CACHE_MAX_ENTRIES || t->cache_ids.n > 8 * CACHE_MAX_ENTRIES) {
		strmap_clear(&t->cache);
		t->cache_ids.n = 0;
	}
	int32_t at = (int32_t)t->cache_ids.n;
	int rc = tok_ids_push(&t->cache_ids, (int32_t)k);
	for (size_t i = 0; !rc && i < k; i++)
		rc = tok_ids_push(&t->cache_ids, ids[i]);
	rc = rc ? rc : strmap_put(&t->cache, s, n, at);
	if (rc)
		t->cache_ids.n = (size_t)at;
	pthread_mutex_unlock(&t->lock);
}

/* The unknown token; with fuse_unk, consecutive unknowns of one word (out->ids[first..]) become one. */
static int push_unknown(const struct tokenizer *t, size_t first, struct tok_ids *out)
{
	if (t->unk < 0)
		return 0;
	if (t->fuse_unk && out->n > first && out->ids[out->n - 1] == t->unk)
		return 0;
	return tok_ids_push(out, t->unk);
}

/* Bytes of a symbol that is no token: <0xXX> tokens where the vocabulary has them, else unknown. */
static int push_bytes(const struct tokenizer *t, const char *s, uint32_t n, size_t first, struct tok_ids *out)
{
	int rc = 0;
	for (uint32_t i = 0; !rc && i < n; i++) {
		int32_t id = t->byte_tok[(uint8_t)s[i]];
		rc = id >= 0 && !t->byte_level ? tok_ids_push(out, id) : push_unknown(t, first, out);
	}
	return rc;
}

static int utf8_len(uint8_t c)
{
	return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t c = *cap ? *cap : 64;
	while (c < need)
		c *= 2;
	void *q = realloc(*p, c * elem);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = c;
	return 0;
}

/* The character at s[i..n): its length, and its token id (-1 if none) in *id. */
static uint32_t char_at(const struct tokenizer *t, const char *s, size_t n, size_t i, int32_t *id)
{
	uint32_t k = (uint32_t)utf8_len((uint8_t)s[i]);
	if (k > n - i)
		k = (uint32_t)(n - i);
	if (t->byte_level) {
		/* A mapped byte's code point is < 324: one or two UTF-8 bytes. */
		uint32_t cp = k == 1 ? (uint8_t)s[i] : k == 2 ? ((uint32_t)s[i] & 31) << 6 | ((uint32_t)s[i + 1] & 63) : 0xFFFF;
		int b = tok_cp_byte(t, cp);
		*id = b >= 0 ? t->byte_tok[b] : strmap_get(&t->vocab, s + i, k);
	} else {
		*id = strmap_get(&t->vocab, s + i, k);
	}
	return k;
}

/* Whether every byte of s[0..k) has a <0xXX> token. */
static bool all_bytes(const struct tokenizer *t, const char *s, uint32_t k)
{
	for (uint32_t j = 0; j < k; j++)
		if (t->byte_tok[(uint8_t)s[j]] < 0)
			return false;
	return true;
}

/* The initial symbols as HF's BPE::merge_word makes them: a character without a token becomes its byte
 * tokens if all exist (byte_fallback), else the unknown token, which is added only at the next known
 * character or the end (so fuse_unk joins unknowns across byte-fallback characters, and those come
 * first, as in HF); with no unknown token the character is dropped and its neighbours may merge. */
static int32_t hf_symbols(const struct tokenizer *t, const char *s, size_t n, struct sym *sy)
{
	int32_t ns = 0;
	struct sym unk = {.id = -1};
	for (size_t i = 0; i < n;) {
		int32_t id;
		uint32_t k = char_at(t, s, n, i, &id);
		if (id >= 0) {
			if (unk.id >= 0)
				sy[ns++] = unk;
			unk.id = -1;
			sy[ns++] = (struct sym){id, (uint32_t)i, k, 0, 0};
		} else if (t->byte_fallback && !t->byte_level && all_bytes(t, s + i, k)) {
			for (uint32_t j = 0; j < k; j++)
				sy[ns++] = (struct sym){t->byte_tok[(uint8_t)s[i + j]], (uint32_t)(i + j), 1, 0, 0};
		} else if (t->unk >= 0) {
			if (unk.id >= 0 && t->fuse_unk) {
				unk.len += k;
			} else {
				if (unk.id >= 0)
					sy[ns++] = unk;
				unk = (struct sym){t->unk, (uint32_t)i, k, 0, 0};
			}
		}
		i += k;
	}
	if (unk.id >= 0)
		sy[ns++] = unk;
	for (int32_t i = 0; i < ns; i++) {
		sy[i].prev = i - 1;
		sy[i].next = i + 1;
	}
	return ns;
}

static int bpe_word(struct tokenizer *t, const char *s, size_t n, struct tok_work *w, struct tok_ids *out)
{
	bool cacheable = n <= CACHE_MAX_WORD;
	size_t first = out->n;
	if (cacheable && cache_get(t, s, n, out) == 0)
		return 0;
	int rc = 0;
	if (t->ignore_merges) {
		int32_t id = strmap_get(&t->vocab, s, n);
		if (id >= 0) {
			rc = tok_ids_push(out, id);
			goto done;
		}
	}
	if (rc || grow(&w->sym, &w->cap_sym, n + 1, sizeof(struct sym)))
		return -ENOMEM;
	struct sym *sy = w->sym;
	int32_t ns = t->hf ? hf_symbols(t, s, n, sy) : 0;
	for (size_t i = 0; !t->hf && i < n; ns++) {
		int32_t id;
		uint32_t k = char_at(t, s, n, i, &id);
		sy[ns] = (struct sym){id, (uint32_t)i, k, ns - 1, ns + 1};
		i += k;
	}
	if (ns)
		sy[ns - 1].next = -1;
	struct heap h = {w->heap, 0, w->cap_heap};
	for (int32_t i = 1; !rc && i < ns; i++)
		rc = try_pair(t, s, sy, i - 1, i, &h);
	while (!rc && h.n) {
		struct bigram b = heap_pop(&h);
		struct sym *l = &sy[b.left], *r = &sy[b.right];
		if (!l->len || !r->len || l->len + r->len != b.size)
			continue;
		l->len += r->len;
		l->id = b.id;
		r->len = 0;
		l->next = r->next;
		if (r->next >= 0)
			sy[r->next].prev = b.left;
		rc = try_pair(t, s, sy, l->prev, b.left, &h);
		rc = rc ? rc : try_pair(t, s, sy, b.left, l->next, &h);
	}
	w->heap = h.v;
	w->cap_heap = h.cap;
	for (int32_t i = ns ? 0 : -1; !rc && i >= 0; i = sy[i].next) {
		if (sy[i].id >= 0)
			rc = tok_ids_push(out, sy[i].id);
		else if (t->byte_fallback)
			rc = push_bytes(t, s + sy[i].start, sy[i].len, first, out);
		else
			rc = push_unknown(t, first, out);
	}
done:
	if (!rc && cacheable)
		cache_put(t, s, n, out->ids ? out->ids + first : NULL, out->n - first);
	return rc;
}

/* Merges by scores (SentencePiece) see the whole text as one word; a byte that is in no token's text can
 * never be inside a merge, so the word is encoded as the parts between such bytes and the bytes alone,
 * which gives the same ids (merges in separate parts never interact) with small heaps and cacheable parts. */
int tok_bpe_word(struct tokenizer *t, const char *s, size_t n, struct tok_work *w, struct tok_ids *out)
{
	if (t->merge != TOK_MERGE_SCORES || t->hf || t->fuse_unk)
		return bpe_word(t, s, n, w, out);
	size_t start = 0;
	int rc = 0;
	for (size_t i = 0; !rc && i < n; i++) {
		uint8_t c = (uint8_t)s[i];
		if (c >= 128 || !t->barrier[c])
			continue;
		if (i > start)
			rc = bpe_word(t, s + start, i - start, w, out);
		rc = rc ? rc : bpe_word(t, s + i, 1, w, out);
		start = i + 1;
	}
	return rc || start == n ? rc : bpe_word(t, s + start, n - start, w, out);
}
