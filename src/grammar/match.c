/*
 * match.c: the matcher (a pushdown recognizer over code points) and the vocabulary trie.
 *
 * A stack is a chain of nodes (pos, up): pos a position in sym[], up the node below (-1: the bottom).
 * Nodes are hash-consed, so equal stacks are the same node id and a state's set of stacks is a set of ints
 * (-1 in it: the empty stack, the text so far is complete). A state's tops always point at a character
 * class: a reference is expanded into its rule's alternatives (with the continuation pushed, unless the
 * reference ends its alternative: right recursion stays flat) and a finished alternative pops. A code point
 * moves every stack whose class takes it one position on. Bytes of a character not yet complete keep the
 * stacks and are checked against the range of code points they can still become.
 *
 * The mask walks the vocabulary's trie depth first from the state: a subtree is left as soon as its prefix
 * is refused, so the tokens tried are those the grammar can start. Nodes made during a walk (or a trial
 * feed) are dropped after it: the pool is rolled back to its mark, deleting the hash entries in reverse
 * order of insertion, which restores the linear-probing table exactly.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"
#include "grammar/grammar_internal.h"

struct ivec {
	int *v;
	int n, cap;
};

struct gram_state {
	const struct gram *g;
	int *npos, *nup; /* the node pool */
	uint32_t *mark;  /* per node: the build that last added it to a set */
	uint32_t *xmark; /* per node (pos of a reference, continuation): the build that last expanded it */
	int n_node, cap_node;
	int *ht;         /* node ids, -1: empty; cap a power of two */
	int ht_cap;
	uint32_t gen;
	struct ivec tops; /* the state's stacks */
	uint32_t cp;      /* a partial UTF-8 character: its bits so far, continuation bytes still needed */
	int need;
	struct ivec work; /* the mask's per-depth sets */
	bool end_mark;
	int depth; /* expand's recursion now */
};

struct gram_vocab {
	/* trie nodes: first child, next sibling, the byte into the node, the first token ending here */
	int *kid, *sib, *tok;
	uint8_t *byte;
	int n, cap;
	int *tok_next;   /* [V] the next token with the same bytes (-1) */
	int V;
};

static int ivec_push(struct ivec *a, int x)
{
	if (a->n == a->cap) {
		int nc = a->cap ? 2 * a->cap : 64;
		int *nv = realloc(a->v, sizeof(int) * (size_t)nc);
		if (!nv)
			return -ENOMEM;
		a->v = nv;
		a->cap = nc;
	}
	a->v[a->n++] = x;
	return 0;
}

static uint32_t hash2(int pos, int up)
{
	uint64_t h = (uint64_t)(uint32_t)pos * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uint32_t)up * 0xC2B2AE3D27D4EB4Full;
	return (uint32_t)(h ^ (h >> 29));
}

static int ht_grow(struct gram_state *s)
{
	int cap = s->ht_cap ? 2 * s->ht_cap : 1024;
	int *ht = malloc(sizeof(int) * (size_t)cap);
	if (!ht)
		return -ENOMEM;
	memset(ht, 0xff, sizeof(int) * (size_t)cap);
	for (int id = 0; id < s->n_node; id++) {
		uint32_t h = hash2(s->npos[id], s->nup[id]) & (uint32_t)(cap - 1);
		while (ht[h] >= 0)
			h = (h + 1) & (uint32_t)(cap - 1);
		ht[h] = id;
	}
	free(s->ht);
	s->ht = ht;
	s->ht_cap = cap;
	return 0;
}

/* The node (pos, up); -1 with *oom set when out of memory. */
static int node(struct gram_state *s, int pos, int up, bool *oom)
{
	if (2 * (s->n_node + 1) > s->ht_cap && ht_grow(s)) {
		*oom = true;
		return -1;
	}
	uint32_t h = hash2(pos, up) & (uint32_t)(s->ht_cap - 1);
	for (; s->ht[h] >= 0; h = (h + 1) & (uint32_t)(s->ht_cap - 1))
		if (s->npos[s->ht[h]] == pos && s->nup[s->ht[h]] == up)
			return s->ht[h];
	if (s->n_node == s->cap_node) {
		int nc = s->cap_node ? 2 * s->cap_node : 1024;
		int *np = realloc(s->npos, sizeof(int) * (size_t)nc), *nu = np ? realloc(s->nup, sizeof(int) * (size_t)nc) : NULL;
		if (np)
			s->npos = np;
		if (nu)
			s->nup = nu;
		uint32_t *nm = nu ? realloc(s->mark, sizeof(uint32_t) * (size_t)nc) : NULL;
		if (nm)
			s->mark = nm;
		uint32_t *nx = nm ? realloc(s->xmark, sizeof(uint32_t) * (size_t)nc) : NULL;
		if (!nx) {
			*oom = true;
			return -1;
		}
		s->xmark = nx;
		memset(nm + s->cap_node, 0, sizeof(uint32_t) * (size_t)(nc - s->cap_node));
		memset(nx + s->cap_node, 0, sizeof(uint32_t) * (size_t)(nc - s->cap_node));
		s->cap_node = nc;
	}
	int id = s->n_node++;
	s->npos[id] = pos;
	s->nup[id] = up;
	s->mark[id] = s->xmark[id] = 0;
	s->ht[h] = id;
	return id;
}

/* Drops the nodes made since n (newest first). */
static void rollback(struct gram_state *s, int n)
{
	while (s->n_node > n) {
		int id = --s->n_node;
		uint32_t h = hash2(s->npos[id], s->nup[id]) & (uint32_t)(s->ht_cap - 1);
		while (s->ht[h] != id)
			h = (h + 1) & (uint32_t)(s->ht_cap - 1);
		s->ht[h] = -1;
	}
}

/* expand's deepest recursion: nullable repetitions inside repetitions (("a"? | "b"){190}){190}, a fuzzer's find)
 * nest one call per optional item, and an unbounded depth overflowed the stack; deeper is refused (-E2BIG) */
#define GRAM_EXPAND_DEPTH 4096

static int expand_at(struct gram_state *s, int pos, int up, struct ivec *out, bool *oom);

/* Adds to out (once each, by this build's mark) the stacks (pos, up) stands for: references expanded,
 * finished alternatives popped, so every top is a class (or -1, the empty stack). 0, -ENOMEM or -E2BIG. */
static int expand(struct gram_state *s, int pos, int up, struct ivec *out, bool *oom)
{
	if (s->depth >= GRAM_EXPAND_DEPTH)
		return -E2BIG;
	s->depth++;
	int rc = expand_at(s, pos, up, out, oom);
	s->depth--;
	return rc;
}

static int expand_at(struct gram_state *s, int pos, int up, struct ivec *out, bool *oom)
{
	const struct gram *g = s->g;
	const struct gsym *y = &g->sym[pos];
	if (y->kind == GS_END) {
		if (up >= 0)
			return expand(s, s->npos[up], s->nup[up], out, oom);
		if (s->end_mark)
			return 0;
		s->end_mark = true;
		return ivec_push(out, -1);
	}
	if (y->kind == GS_REF) {
		int cont = g->sym[pos + 1].kind == GS_END ? up : node(s, pos + 1, up, oom);
		/* a reference met again with the same continuation in this build adds nothing new: this ends the
		 * loops of nullable repetitions ((x?)*), which the parser lets through */
		int key = *oom ? -1 : node(s, pos, cont, oom);
		if (*oom)
			return -ENOMEM;
		if (s->xmark[key] == s->gen)
			return 0;
		s->xmark[key] = s->gen;
		for (int a = 0; a < g->rule_nalt[y->a]; a++) {
			int rc = expand(s, g->alt[g->rule_alt0[y->a] + a], cont, out, oom);
			if (rc)
				return rc;
		}
		return 0;
	}
	int id = node(s, pos, up, oom);
	if (id < 0)
		return -ENOMEM;
	if (s->mark[id] == s->gen)
		return 0;
	s->mark[id] = s->gen;
	return ivec_push(out, id);
}

static void build_begin(struct gram_state *s)
{
	if (++s->gen == 0) { /* the marks wrapped: clear them */
		memset(s->mark, 0, sizeof(uint32_t) * (size_t)s->cap_node);
		memset(s->xmark, 0, sizeof(uint32_t) * (size_t)s->cap_node);
		s->gen = 1;
	}
	s->end_mark = false;
}

/* Can some stack of in[0..n) take a code point in [lo, hi]? */
static bool viable(const struct gram_state *s, const int *in, int n, uint32_t lo, uint32_t hi)
{
	for (int i = 0; i < n; i++)
		if (in[i] >= 0 && gsym_match(s->g, &s->g->sym[s->npos[in[i]]], lo, hi))
			return true;
	return false;
}

/* One byte from the stacks at work[off .. off + n) with the partial character (*cp, *need): the next
 * stacks appended to s->work (possibly a copy when the character is still partial). Returns the number
 * appended (0: refused) or -ENOMEM. */
static int step_byte(struct gram_state *s, int off, int n, uint32_t *cp, int *need, uint8_t b)
{
	/* *cp: the character's bits so far, its length in bytes above bit 24 (the smallest code point of each
	 * length refuses overlong forms) */
	static const uint32_t min_of_len[5] = {0, 0, 0x80, 0x800, 0x10000};
	uint32_t c;
	if (n == 0) /* no stack (a grammar whose language is empty): nothing goes on */
		return 0;
	if (*need == 0) {
		if (b < 0x80) {
			c = b;
		} else {
			*need = b >= 0xC2 && b <= 0xDF ? 1 : b >= 0xE0 && b <= 0xEF ? 2 : b >= 0xF0 && b <= 0xF4 ? 3 : 0;
			if (!*need)
				return 0;
			*cp = (uint32_t)(*need + 1) << 24 | (b & (*need == 1 ? 0x1Fu : *need == 2 ? 0x0Fu : 0x07u));
			goto partial;
		}
	} else {
		if ((b & 0xC0) != 0x80)
			return 0;
		*cp = (*cp & 0xFF000000u) | (*cp & 0xFFFFFFu) << 6 | (b & 0x3Fu);
		if (--*need)
			goto partial;
		c = *cp & 0xFFFFFFu;
		if (c < min_of_len[*cp >> 24] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
			return 0;
	}
	{
		/* reads s->work.v[off + i] afresh each time: expand appends to (and may move) s->work */
		int n0 = s->work.n;
		bool oom = false;
		build_begin(s);
		for (int i = 0; i < n; i++) {
			int t = s->work.v[off + i];
			if (t < 0 || !gsym_match(s->g, &s->g->sym[s->npos[t]], c, c))
				continue;
			int rc = expand(s, s->npos[t] + 1, s->nup[t], &s->work, &oom);
			if (rc)
				return rc;
		}
		return s->work.n - n0;
	}
partial: {
		uint32_t lo = (*cp & 0xFFFFFFu) << (6 * *need), hi = lo | ((1u << (6 * *need)) - 1);
		lo = lo > min_of_len[*cp >> 24] ? lo : min_of_len[*cp >> 24];
		hi = hi < 0x10FFFF ? hi : 0x10FFFF;
		if (lo > hi || !viable(s, s->work.v + off, n, lo, hi))
			return 0;
		int k = 0;
		for (int i = 0; i < n; i++)
			if (s->work.v[off + i] >= 0 && ++k && ivec_push(&s->work, s->work.v[off + i]))
				return -ENOMEM;
		return k; /* the empty stack cannot take the rest of a character */
	}
}

int gram_state_new(const struct gram *g, struct gram_state **out)
{
	struct gram_state *s = calloc(1, sizeof(*s));
	bool oom = false;
	int rc = 0;
	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->g = g;
	build_begin(s);
	for (int a = 0; a < g->rule_nalt[g->root] && !rc; a++)
		rc = expand(s, g->alt[g->rule_alt0[g->root] + a], -1, &s->tops, &oom);
	if (rc) {
		gram_state_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

void gram_state_free(struct gram_state *s)
{
	if (!s)
		return;
	free(s->npos);
	free(s->nup);
	free(s->mark);
	free(s->xmark);
	free(s->ht);
	free(s->tops.v);
	free(s->work.v);
	free(s);
}

/* Runs bytes p[0..n) from the state into s->work; the offset and count of the final stacks there, or
 * count 0 when refused (or out of memory: refused too). */
static int run_bytes(struct gram_state *s, const char *p, size_t n, uint32_t *cp, int *need, int *off)
{
	s->work.n = 0;
	for (int i = 0; i < s->tops.n; i++)
		if (ivec_push(&s->work, s->tops.v[i]))
			return 0;
	int o = 0, cnt = s->tops.n;
	*cp = s->cp;
	*need = s->need;
	for (size_t i = 0; i < n && cnt > 0; i++) {
		int o2 = s->work.n;
		cnt = step_byte(s, o, cnt, cp, need, (uint8_t)p[i]);
		o = o2;
	}
	*off = o;
	return cnt > 0 ? cnt : 0;
}

bool gram_state_accepts(struct gram_state *s, const char *p, size_t n)
{
	int mark = s->n_node, off, need;
	uint32_t cp;
	int cnt = run_bytes(s, p, n, &cp, &need, &off);
	rollback(s, mark);
	return cnt > 0;
}

bool gram_state_feed(struct gram_state *s, const char *p, size_t n)
{
	int mark = s->n_node, off, need;
	uint32_t cp;
	int cnt = run_bytes(s, p, n, &cp, &need, &off);
	if (cnt <= 0) {
		rollback(s, mark);
		return false;
	}
	struct ivec t = {0};
	for (int i = 0; i < cnt; i++)
		if (ivec_push(&t, s->work.v[off + i])) {
			free(t.v);
			rollback(s, mark);
			return false;
		}
	free(s->tops.v);
	s->tops = t;
	s->cp = cp;
	s->need = need;
	return true;
}

bool gram_state_can_end(const struct gram_state *s)
{
	if (s->need)
		return false;
	for (int i = 0; i < s->tops.n; i++)
		if (s->tops.v[i] < 0)
			return true;
	return false;
}

bool gram_state_done(const struct gram_state *s)
{
	return !s->need && s->tops.n == 1 && s->tops.v[0] < 0;
}

/* ---- the vocabulary ---- */

static int trie_node(struct gram_vocab *vb, uint8_t b)
{
	if (vb->n == vb->cap) {
		int nc = vb->cap ? 2 * vb->cap : 4096;
		int *k = realloc(vb->kid, sizeof(int) * (size_t)nc);
		if (k)
			vb->kid = k;
		int *sb = k ? realloc(vb->sib, sizeof(int) * (size_t)nc) : NULL;
		if (sb)
			vb->sib = sb;
		int *t = sb ? realloc(vb->tok, sizeof(int) * (size_t)nc) : NULL;
		if (t)
			vb->tok = t;
		uint8_t *by = t ? realloc(vb->byte, (size_t)nc) : NULL;
		if (!by)
			return -1;
		vb->byte = by;
		vb->cap = nc;
	}
	vb->kid[vb->n] = vb->sib[vb->n] = vb->tok[vb->n] = -1;
	vb->byte[vb->n] = b;
	return vb->n++;
}

int gram_vocab_new(const char *const *text, const size_t *len, int V, struct gram_vocab **out)
{
	struct gram_vocab *vb = calloc(1, sizeof(*vb));
	*out = NULL;
	if (!vb || !(vb->tok_next = malloc(sizeof(int) * (size_t)V)) || trie_node(vb, 0) < 0) {
		gram_vocab_free(vb);
		return -ENOMEM;
	}
	vb->V = V;
	for (int t = 0; t < V; t++) {
		vb->tok_next[t] = -1;
		if (!text[t] || !len[t])
			continue;
		int at = 0;
		for (size_t i = 0; i < len[t]; i++) {
			uint8_t b = (uint8_t)text[t][i];
			int c = vb->kid[at];
			while (c >= 0 && vb->byte[c] != b)
				c = vb->sib[c];
			if (c < 0) {
				if ((c = trie_node(vb, b)) < 0) {
					gram_vocab_free(vb);
					return -ENOMEM;
				}
				vb->sib[c] = vb->kid[at];
				vb->kid[at] = c;
			}
			at = c;
		}
		vb->tok_next[t] = vb->tok[at];
		vb->tok[at] = t;
	}
	*out = vb;
	return 0;
}

void gram_vocab_free(struct gram_vocab *vb)
{
	if (!vb)
		return;
	free(vb->kid);
	free(vb->sib);
	free(vb->tok);
	free(vb->byte);
	free(vb->tok_next);
	free(vb);
}

/* The children of trie node at, from the stacks work[off .. off + n) and the partial character. */
static int walk(const struct gram_vocab *vb, struct gram_state *s, int at, int off, int n, uint32_t cp, int need,
		uint8_t *allow)
{
	int count = 0;
	for (int c = vb->kid[at]; c >= 0; c = vb->sib[c]) {
		int o2 = s->work.n, mark = s->n_node, need2 = need;
		uint32_t cp2 = cp;
		int cnt = step_byte(s, off, n, &cp2, &need2, vb->byte[c]);
		if (cnt < 0)
			return cnt;
		if (cnt > 0) {
			for (int t = vb->tok[c]; t >= 0; t = vb->tok_next[t], count++)
				allow[t] = 1;
			int r = walk(vb, s, c, o2, cnt, cp2, need2, allow);
			if (r < 0)
				return r;
			count += r;
		}
		s->work.n = o2;
		rollback(s, mark);
	}
	return count;
}

int gram_vocab_mask(const struct gram_vocab *vb, struct gram_state *s, uint8_t *allow)
{
	memset(allow, 0, (size_t)vb->V);
	s->work.n = 0;
	for (int i = 0; i < s->tops.n; i++)
		if (ivec_push(&s->work, s->tops.v[i]))
			return -ENOMEM;
	int mark = s->n_node, r = walk(vb, s, 0, 0, s->tops.n, s->cp, s->need, allow);
	rollback(s, mark);
	return r;
}
