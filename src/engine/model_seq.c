/*
 * model_seq.c: the sequences of a model (model.h: open, close, commit a token tree's path) and what a step
 * makes of its parts on the host before any layer runs (model_seq_step): tokens, stored and logical
 * positions, each part's offset and span, the token trees' bases and ancestor masks (src/kernels/kv_pages.h),
 * and the step's RoPE tables.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine/model_internal.h"

int model_seq_open(struct model *m, const int *prompt, int n_prompt, int *seq, int *n_cached, char *err,
		   size_t errlen)
{
	if (n_prompt > m->opt.ctx) {
		snprintf(err, errlen, "the prompt (%d tokens) does not fit the context of %d", n_prompt, m->opt.ctx);
		return -ENOSPC;
	}
	return kvc_seq_open(&m->kc, prompt, n_prompt, seq, n_cached, err, errlen);
}

void model_seq_close(struct model *m, int seq)
{
	kvc_seq_close(&m->kc, seq);
	if (seq >= 0 && seq < m->opt.max_seqs)
		m->tree[seq].n = 0;
}

int model_seq_tree(const struct model *m, int seq)
{
	return m->tree[seq].n;
}

/* Tree part p of the step: its tokens' stored and logical positions, tree bases and ancestor masks from t on,
 * added to its sequence's tree. */
static int tree_build(struct model *m, const struct model_part *p, int t, int len, int *max_lpos, char *err,
		      size_t errlen)
{
	struct model_tree *tr = &m->tree[p->seq];
	if (tr->n + p->n > KV_TREE_MAX) {
		snprintf(err, errlen, "a token tree of %d tokens (at most %d)", tr->n + p->n, KV_TREE_MAX);
		return -EINVAL;
	}
	for (int j = 0; j < p->n; j++) {
		int i = tr->n + j, par = p->parent[j];
		if (par < -1 || par >= i) {
			snprintf(err, errlen, "tree token %d has parent %d (a token before it, or -1)", i, par);
			return -EINVAL;
		}
		tr->parent[i] = (short)par;
		tr->depth[i] = (short)(par < 0 ? 0 : tr->depth[par] + 1);
		if (par < 0)
			memset(tr->mask[i], 0, sizeof(tr->mask[i]));
		else
			memcpy(tr->mask[i], tr->mask[par], sizeof(tr->mask[i]));
		tr->mask[i][i >> 5] |= 1u << (i & 31);
		m->pos[t + j] = len + i;
		m->lpos[t + j] = len + tr->depth[i];
		m->tree_base[t + j] = len;
		memcpy(m->tree_mask + (size_t)(t + j) * KV_TREE_WORDS, tr->mask[i], sizeof(tr->mask[i]));
		*max_lpos = m->lpos[t + j] > *max_lpos ? m->lpos[t + j] : *max_lpos;
	}
	tr->n += p->n;
	return 0;
}

int model_seq_commit(struct model *m, int seq, const int *path, int n, char *err, size_t errlen)
{
	struct model_tree *tr = &m->tree[seq];
	int len = m->kc.seqs[seq].len, from[KV_TREE_MAX], to[KV_TREE_MAX], rc = 0;
	bool moves = false;
	for (int i = 0; i < n; i++) {
		if (path[i] < 0 || path[i] >= tr->n || tr->parent[path[i]] != (i ? path[i - 1] : -1)) {
			snprintf(err, errlen, "commit: tree token %d at %d is not on a path from a root", path[i], i);
			return -EINVAL;
		}
		from[i] = len + path[i];
		to[i] = len + i;
		moves = moves || from[i] != to[i];
	}
	struct backend *b = m->b;
	if (moves && m->kvh.n_host)
		rc = b->ops->sync(b); /* the write-backs of host layers' pages land first */
	for (int l = 0; !rc && moves && l < m->hp->n_layers; l++) {
		const int *pages = m->kc.tables[m->kv[l].group] + (size_t)seq * (size_t)m->kc.max_pages;
		struct kv_layer hv;
		if (kvh_host_view(&m->kvh, l, m->kv, &hv))
			kv_rows_move(&hv, pages, n, from, to);
		else
			rc = b->ops->kv_move(b, &m->kv[l], pages, n, from, to);
	}
	if (rc) {
		snprintf(err, errlen, "commit: %s", b->err);
		return rc;
	}
	kvc_advance(&m->kc, seq, n);
	kvc_shrink(&m->kc, seq, len + n);
	tr->n = 0;
	return 0;
}

/* Undoes what model_seq_step added to the trees of parts 0 .. n-1. */
static void trees_undo(struct model *m, const struct model_part *parts, int n)
{
	for (int k = 0; k < n; k++)
		if (parts[k].parent)
			m->tree[parts[k].seq].n -= parts[k].n;
}

int model_seq_step(struct model *m, const struct model_part *parts, int n_parts, int *T, int *rows, char *err,
		   size_t errlen)
{
	int t = 0, r = 0, max_pos = 0;
	m->part_t0[0] = 0;
	m->has_tree = false;
	for (int i = 0; i < n_parts; i++)
		m->has_tree = m->has_tree || parts[i].parent;
	for (int i = 0; i < n_parts; i++) {
		const struct model_part *p = &parts[i];
		bool open = p->seq >= 0 && p->seq < m->kc.max_seqs && m->kc.seqs[p->seq].used;
		for (int j = 0; open && j < i; j++)
			open = parts[j].seq != p->seq;
		if (!open || p->n < 1 || p->n_logits < 0 || p->n_logits > p->n || t + p->n > m->opt.t_max) {
			snprintf(err, errlen, "step part %d (sequence %d, %d tokens, %d logits) is not valid for a step of at most %d tokens", i,
				 p->seq, p->n, p->n_logits, m->opt.t_max);
			trees_undo(m, parts, i);
			return -EINVAL;
		}
		int len = m->kc.seqs[p->seq].len, n_tree = m->tree[p->seq].n;
		if (!p->parent && n_tree) {
			snprintf(err, errlen, "step part %d: sequence %d has an uncommitted token tree", i, p->seq);
			trees_undo(m, parts, i);
			return -EINVAL;
		}
		for (int j = 0; j < p->n; j++) {
			m->tokens[t + j] = p->tokens[j];
			m->pos[t + j] = m->lpos[t + j] = len + j;
			m->tree_base[t + j] = KV_TREE_NONE;
		}
		if (m->has_tree)
			memset(m->tree_mask + (size_t)t * KV_TREE_WORDS, 0, sizeof(uint32_t) * KV_TREE_WORDS * (size_t)p->n);
		int rc = p->parent ? tree_build(m, p, t, len, &max_pos, err, errlen) : 0;
		if (rc) {
			trees_undo(m, parts, i);
			return rc;
		}
		if (!p->parent)
			max_pos = len + p->n - 1 > max_pos ? len + p->n - 1 : max_pos;
		m->part_span[i] = n_tree + p->n;
		t += p->n;
		r += p->n_logits;
		m->part_t0[i + 1] = t;
		m->part_row[i] = p->seq;
	}
	if (t < 1 || r > (m->opt.max_logits > 0 ? m->opt.max_logits : 1)) {
		snprintf(err, errlen, "step of %d tokens and %d logits rows (at most %d)", t, r, m->opt.max_logits);
		trees_undo(m, parts, n_parts);
		return -EINVAL;
	}
	/* Only dynamic NTK depends on the step (through its longest sequence). */
	rope_freqs_compute(&m->hp->rope, max_pos + 1, &m->rope);
	if (m->hp->has_rope_local)
		rope_freqs_compute(&m->hp->rope_local, max_pos + 1, &m->rope_local);
	*T = t;
	*rows = r;
	return 0;
}
