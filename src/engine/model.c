/*
 * model.c: the forward pass of the Llama family and Gemma 3 as a list of backend ops on named tensors:
 *   x = embed(tokens) (* embed_scale)
 *   per layer: h = rmsnorm(x, attn_norm); q,k,v = h.Wq,Wk,Wv (+b); [q,k = rmsnorm per head (q_norm, k_norm)];
 *              rope(q,k); kv_store(k,v); o = attention(q, kv).Wo (+b); [o = rmsnorm(o, post_attention_norm)];
 *              x += o; h = rmsnorm(x, ffn_norm); d = (act(h.Wg) * h.Wu).Wd; [d = rmsnorm(d, post_ffw_norm)];
 *              x += d
 *   logits = rmsnorm(x, output_norm) . Wout  [softcap: cap * tanh(logits / cap)]
 * The bracketed steps run when the model has those tensors or hyper-parameters (Gemma 3 has them all).
 * A mixture of experts replaces the MLP (moe_range); gpt-oss adds attention sinks (a logit per head in the
 * softmax's denominator), biases on the router and the experts, and its clamped SwiGLU (ACT_SWIGLU_OAI).
 * Sliding-window layers pass their window to attention and use rope_local when the model has one;
 * GQA maps H/Hkv query heads to each kv head.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "engine/model.h"
#include "engine/moe_cpu.h"

/* The tensor of table row `row` (src/layout/arch.h) in unit u into *t, its shape checked against the
 * hyper-parameters; data NULL when an optional tensor is absent. */
static int bind(const struct layout_unit *u, void *const *ptrs, const struct layout_hparams *hp,
		const struct arch_tensor *row, struct tensor *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	int64_t shape[3];
	int ndim = arch_shape(hp, row, shape);
	for (int i = 0; i < u->n_tensors; i++) {
		const struct layout_tensor *lt = &u->tensors[i];
		if (strcmp(lt->name, row->name))
			continue;
		/* a vector of n is [n] or [1, n] */
		bool ok = lt->ndim == ndim || (ndim == 1 && lt->ndim == 2 && lt->shape[0] == 1);
		for (int d = 0; ok && d < ndim; d++)
			ok = lt->shape[lt->ndim - ndim + d] == shape[d];
		if (!ok) {
			snprintf(err, errlen, "tensor %s: shape does not match the hyper-parameters", row->name);
			return -EINVAL;
		}
		/* stacked experts: one expert's rows and cols (expert_of gives each) */
		*t = (struct tensor){ptrs[i], lt->fmt, ndim == 1 ? 1 : shape[ndim - 2], shape[ndim - 1], lt->stride};
		return 0;
	}
	if (row->need == ARCH_REQUIRED) {
		snprintf(err, errlen, "tensor %s missing from the model", row->name);
		return -EINVAL;
	}
	return 0;
}

/* The permutations of unit u's act-order linears (tensors "NAME.perm" beside "NAME.weight", F32 [cols]) into
 * w->perm by slot. */
static int bind_perms(const struct layout_unit *u, void *const *ptrs, const struct arch *a, struct layer_weights *w,
		      char *err, size_t errlen)
{
	for (int k = 0; k < a->n_layer; k++) {
		const struct arch_tensor *row = &a->layer[k];
		const struct tensor *W = &w->slot[row->slot];
		size_t ln = strlen(row->name);
		if (!W->data || ln < 7 || strcmp(row->name + ln - 7, ".weight"))
			continue;
		char name[LAYOUT_NAME_MAX];
		snprintf(name, sizeof(name), "%.*s.perm", (int)(ln - 7), row->name);
		for (int i = 0; i < u->n_tensors; i++) {
			const struct layout_tensor *lt = &u->tensors[i];
			if (strcmp(lt->name, name))
				continue;
			if (lt->fmt != WFMT_F32 || lt->ndim != 1 || lt->shape[0] != W->cols) {
				snprintf(err, errlen, "tensor %s: not F32 [%lld] (the column order of %s)", name,
					 (long long)W->cols, row->name);
				return -EINVAL;
			}
			w->perm[row->slot] = (struct tensor){ptrs[i], WFMT_F32, 1, W->cols, 0};
			/* xxh3 of equal bytes is equal; without one, only the tensor itself counts as equal */
			w->perm_key[row->slot] = lt->xxh3 ? lt->xxh3 : (uint64_t)(uintptr_t)ptrs[i];
		}
	}
	return 0;
}

static bool has_perms(const struct layout *lay)
{
	for (int l = 0; l <= lay->hp.n_layers; l++) { /* the layers and the head (EXL2 quantizes lm_head too) */
		const struct layout_unit *u = layout_unit_get(lay, l);
		for (int i = 0; i < u->n_tensors; i++) {
			size_t n = strlen(u->tensors[i].name);
			if (n > 5 && !strcmp(u->tensors[i].name + n - 5, ".perm"))
				return true;
		}
	}
	return false;
}

/* Layer l's tensors, the rows of its architecture, into their slots. */
static int bind_layer(const struct model *m, int l, void *const *p, struct layer_weights *w, char *err, size_t n)
{
	const struct arch *a = arch_find(ARCH_KEY_NAME, m->hp->arch); /* model_init checked it */
	const struct layout_unit *u = layout_unit_get(m->lay, l);
	memset(w, 0, sizeof(*w));
	int rc = 0;
	for (int k = 0; !rc && k < a->n_layer; k++)
		rc = bind(u, p, m->hp, &a->layer[k], &w->slot[a->layer[k].slot], err, n);
	rc = rc ? rc : bind_perms(u, p, a, w, err, n);
	if (!rc && w->attn_sinks.data && w->attn_sinks.fmt != WFMT_F32) {
		snprintf(err, n, "tensor attn_sinks.weight of layer %d: %s, the attention kernels read F32", l,
			 wfmt_name(w->attn_sinks.fmt));
		rc = -EINVAL;
	}
	return rc;
}

static const struct tensor *opt(const struct tensor *t)
{
	return t->data ? t : NULL;
}

/* Every weight format of the model must be supported by backend b before anything runs. The streamer
 * decodes lz4 tensors of layers and the head; embedding rows are read in place, so they must be raw. */
static int check_formats(const struct model *m, struct backend *b, char *err, size_t errlen)
{
	for (int u = -1; u <= m->hp->n_layers; u++) {
		const struct layout_unit *unit = layout_unit_get(m->lay, u);
		for (int i = 0; i < unit->n_tensors; i++) {
			const struct layout_tensor *t = &unit->tensors[i];
			bool ok = b->ops->supports(b, u < 0 ? OP_EMBED : OP_MATMUL, t->fmt);
			if (!ok || (u < 0 && t->comp != LAYOUT_COMP_NONE)) {
				snprintf(err, errlen, "tensor %s: format %s%s is not supported by the %s backend", t->name,
					 wfmt_name(t->fmt), t->comp ? " (compressed)" : "", b->ops->name);
				return -ENOTSUP;
			}
		}
	}
	return 0;
}

static int t_sub_of(const struct model_opts *o)
{
	return o->t_sub > 0 && o->t_sub < o->t_max ? o->t_sub : o->t_max;
}

static int page_of(const struct model_opts *o)
{
	return o->kv_page > 0 ? o->kv_page : 256;
}

static int seqs_of(const struct model_opts *o)
{
	return o->max_seqs > 0 ? o->max_seqs : 1;
}

static uint64_t al(uint64_t v)
{
	return (v + 255) / 256 * 256;
}

/* The page groups (one per distinct window, full attention first) and the pool sizes of each. */
static void groups_of(const struct layout_hparams *hp, const struct model_opts *o, struct model_mem *mm)
{
	mm->n_groups = 0;
	for (int pass = 0; pass < 2; pass++)
		for (int l = 0; l < hp->n_layers; l++) {
			int w = hp->window[l], g = 0;
			if ((pass == 0) != (w == 0))
				continue;
			while (g < mm->n_groups && mm->windows[g] != w)
				g++;
			if (g == mm->n_groups && g < KVC_GROUPS_MAX)
				mm->windows[mm->n_groups++] = w;
		}
	int page = page_of(o);
	for (int g = 0; g < mm->n_groups; g++)
		mm->n_pages[g] = mm->windows[g] == 0 && o->kv_pages > 0
					 ? o->kv_pages
					 : seqs_of(o) * kvc_window_pages(mm->windows[g], page, o->t_max, o->ctx);
}

static int group_of_layer(const struct model_mem *mm, int window)
{
	for (int g = 0; g < mm->n_groups; g++)
		if (mm->windows[g] == window)
			return g;
	return -1;
}

/* The widest MLP activation: the dense ffn, one expert's, the shared expert's (g and u serve them all). */
static int64_t ffn_rows(const struct layout_hparams *hp)
{
	int64_t f = hp->ffn_dim;
	f = hp->n_experts && hp->expert_ffn > f ? hp->expert_ffn : f;
	return hp->n_experts && hp->shared_ffn > f ? hp->shared_ffn : f;
}

static void reserve_of(const struct layout_hparams *hp, const struct model_opts *o, int n_groups,
		       struct backend_reserve *r)
{
	int64_t D = hp->d_model, Q = (int64_t)hp->n_heads * hp->head_dim, F = ffn_rows(hp);
	int64_t max_row = D > F ? D : F;
	int page = page_of(o);
	*r = (struct backend_reserve){.t_max = o->t_max, .t_ops = t_sub_of(o), .max_row = max_row > Q ? max_row : Q,
				      .d_model = D, .max_ctx = o->ctx, .n_heads = hp->n_heads, .head_dim = hp->head_dim,
				      .max_seqs = seqs_of(o), .max_pages = (o->ctx + page - 1) / page,
				      .n_groups = n_groups, .n_experts_used = hp->n_experts ? hp->n_experts_used : 0};
}

void model_mem_plan(const struct layout_hparams *hp, struct backend *b, const struct model_opts *o, const bool *kv_host,
		    struct model_mem *mm)
{
	uint64_t T = (uint64_t)o->t_max, S = (uint64_t)t_sub_of(o), D = (uint64_t)hp->d_model,
		 Q = (uint64_t)hp->n_heads * (uint64_t)hp->head_dim, KV = (uint64_t)hp->n_kv_heads * (uint64_t)hp->head_dim,
		 F = (uint64_t)ffn_rows(hp), V = (uint64_t)hp->vocab, E = (uint64_t)hp->n_experts;
	uint64_t L = (uint64_t)(o->max_logits > 0 ? o->max_logits : 1);
	memset(mm, 0, sizeof(*mm));
	mm->act = al(T * D * 4) + al(S * D * 4) + 2 * al(S * Q * 4) + 2 * al(S * KV * 4) + 2 * al(S * F * 4) +
		  al(L * V * 4) + (E ? al(S * E * 4) + 2 * al(S * D * 4) : 0) +
		  (o->head_rows > 0 ? al((S < L ? S : L) * (uint64_t)o->head_rows * 4) : 0) +
		  (E ? al((uint64_t)o->moe_cpu_t * (uint64_t)hp->n_experts_used * D * 4) : 0);
	groups_of(hp, o, mm);
	uint64_t stage[2] = {0, 0};
	for (int l = 0; l < hp->n_layers; l++) {
		for (int i = 0; i < 2; i++) { /* the key pool, then the value pool (a mixed format's differ) */
			uint64_t pool = (uint64_t)mm->n_pages[group_of_layer(mm, hp->window[l])] *
					kv_pool_page_bytes(o->kv_fmt, i, hp->n_kv_heads, hp->head_dim, page_of(o));
			if (kv_host && kv_host[l]) {
				mm->kv_host += pool;
				stage[i] = pool > stage[i] ? pool : stage[i];
			} else {
				mm->kv += al(pool);
			}
		}
	}
	mm->kv += 2 * (al(stage[0]) + al(stage[1])); /* two staging pairs */
	struct backend_reserve r;
	reserve_of(hp, o, mm->n_groups, &r);
	mm->ws = b->ops->reserve_bytes ? b->ops->reserve_bytes(b, &r) : 0;
}

/* The run state on backend b for t_rows tokens per step, t_sub per op, head pieces of head_rows rows (0:
 * none); false when out of memory. */
static bool rs_alloc(struct model_rs *rs, struct backend *b, const struct layout_hparams *hp, int t_rows, int t_sub,
		     int max_logits, int64_t head_rows, bool xp)
{
	size_t T = (size_t)t_rows, S = (size_t)t_sub, D = (size_t)hp->d_model,
	       Q = (size_t)hp->n_heads * (size_t)hp->head_dim, KV = (size_t)hp->n_kv_heads * (size_t)hp->head_dim,
	       F = (size_t)ffn_rows(hp), V = (size_t)hp->vocab, E = (size_t)hp->n_experts;
	*rs = (struct model_rs){.b = b, .t_rows = t_rows, .t_sub = t_sub};
	rs->x = b->ops->alloc(b, T * D * 4);
	rs->h = rs->x ? b->ops->alloc(b, S * D * 4) : NULL;
	rs->q = rs->h ? b->ops->alloc(b, S * Q * 4) : NULL;
	rs->att = rs->q ? b->ops->alloc(b, S * Q * 4) : NULL;
	rs->k = rs->att ? b->ops->alloc(b, S * KV * 4) : NULL;
	rs->v = rs->k ? b->ops->alloc(b, S * KV * 4) : NULL;
	rs->g = rs->v ? b->ops->alloc(b, S * F * 4) : NULL;
	rs->u = rs->g ? b->ops->alloc(b, S * F * 4) : NULL;
	rs->logits = rs->u ? b->ops->alloc(b, (size_t)(max_logits > 0 ? max_logits : 1) * V * 4) : NULL;
	if (xp && rs->logits && !(rs->xp = b->ops->alloc(b, S * (D > Q ? D : Q) * 4)))
		return false;
	size_t lr = max_logits > 1 ? (size_t)max_logits : 1; /* a head piece's logits: min(S, max_logits) rows */
	lr = lr < S ? lr : S;
	if (head_rows > 0 && rs->logits && !(rs->lp = b->ops->alloc(b, lr * (size_t)head_rows * 4)))
		return false;
	if (!E || !rs->logits)
		return rs->logits;
	rs->rl = b->ops->alloc(b, S * E * 4);
	rs->xe = rs->rl ? b->ops->alloc(b, S * D * 4) : NULL;
	rs->ye = rs->xe ? b->ops->alloc(b, S * D * 4) : NULL;
	return rs->ye;
}

static void rs_free(struct model_rs *rs)
{
	struct backend *b = rs->b;
	void *bufs[] = {rs->x, rs->h, rs->q, rs->att, rs->k, rs->v, rs->g, rs->u, rs->logits, rs->rl, rs->xe, rs->ye,
			rs->xp, rs->lp};
	for (size_t i = 0; b && i < sizeof(bufs) / sizeof(bufs[0]); i++)
		if (bufs[i])
			b->ops->free(b, bufs[i]);
	memset(rs, 0, sizeof(*rs));
}

/* --moe-cpu's buffers: the device's for a range's expert rows, the host backend's for its experts. */
static int moe_cpu_init(struct model *m, struct backend *hb, char *err, size_t errlen)
{
	const struct layout_hparams *hp = m->hp;
	size_t T = (size_t)m->opt.moe_cpu_t, K = (size_t)hp->n_experts_used, D = (size_t)hp->d_model,
	       F = (size_t)hp->expert_ffn, E = (size_t)hp->n_experts;
	struct backend_reserve r;
	struct model_opts xo = m->opt;
	xo.t_max = xo.t_sub = (int)T;
	reserve_of(hp, &xo, 1, &r);
	m->xb = hb;
	m->xp_dev = m->b->ops->alloc(m->b, T * K * D * 4);
	m->xh_h = hb->ops->alloc(hb, T * D * 4);
	m->xh_xe = hb->ops->alloc(hb, T * D * 4);
	m->xh_g = hb->ops->alloc(hb, T * F * 4);
	m->xh_u = hb->ops->alloc(hb, T * F * 4);
	m->xh_p = hb->ops->alloc(hb, T * K * D * 4);
	m->x_host = calloc(E, sizeof(bool));
	m->x_present = calloc(E, sizeof(bool));
	m->x_base = calloc(E, sizeof(int));
	m->x_cnt = calloc(2 * E, sizeof(int));
	m->x_idx = calloc(T * K, sizeof(int));
	m->x_ident = calloc(T, sizeof(int));
	m->x_w = calloc(T * K, sizeof(float));
	if (!m->xp_dev || !m->xh_h || !m->xh_xe || !m->xh_g || !m->xh_u || !m->xh_p || !m->x_host || !m->x_present ||
	    !m->x_base || !m->x_cnt || !m->x_idx || !m->x_ident || !m->x_w) {
		snprintf(err, errlen, "--moe-cpu: out of memory for the buffers of %zu tokens' host experts%s%s", T,
			 m->b->err[0] ? ": " : "", m->b->err);
		return -ENOMEM;
	}
	if (hb->ops->reserve(hb, &r)) {
		snprintf(err, errlen, "--moe-cpu: %s", hb->err);
		return -ENOMEM;
	}
	return 0;
}

static void moe_cpu_free(struct model *m)
{
	if (m->xp_dev)
		m->b->ops->free(m->b, m->xp_dev);
	float *h[] = {m->xh_h, m->xh_xe, m->xh_g, m->xh_u, m->xh_p};
	for (int i = 0; m->xb && i < 5; i++)
		if (h[i])
			m->xb->ops->free(m->xb, h[i]);
	free(m->x_host);
	free(m->x_present);
	free(m->x_base);
	free(m->x_cnt);
	free(m->x_idx);
	free(m->x_ident);
	free(m->x_w);
}

void model_moe_rates(struct model *m, const struct plan_rates *r)
{
	m->has_xr = r != NULL;
	if (r)
		m->xr = *r;
}

int model_init(struct model *m, const struct layout *lay, struct backend *b, struct backend *hb, struct plan *p,
	       const struct io_opts *io, char *err, size_t errlen)
{
	memset(m, 0, sizeof(*m));
	m->lay = lay;
	m->hp = &lay->hp;
	m->b = b;
	m->hb = p->n_on_host > 0 && p->hybrid_t_max > 0 ? hb : NULL;
	m->plan = *p;
	memset(p, 0, sizeof(*p));
	const struct model_opts *o = &m->plan.opt;
	m->opt = *o;
	m->opt.t_sub = t_sub_of(o);
	m->opt.kv_page = page_of(o);
	m->opt.max_seqs = seqs_of(o);
	const bool *kv_host = m->plan.kv_host;
	const struct layout_hparams *hp = m->hp;
	int rc = 0;
	if (!arch_find(ARCH_KEY_NAME, hp->arch)) {
		snprintf(err, errlen, "%s: architecture '%s' is not supported by this ferry", lay->dir, hp->arch);
		rc = -ENOTSUP;
		goto fail;
	}
	if (hp->rope.dim / 2 > ROPE_MAX_FREQS || hp->rope.dim != hp->head_dim) {
		snprintf(err, errlen, "%s: rope dim %d (head_dim %d) is not supported", lay->dir, hp->rope.dim, hp->head_dim);
		rc = -ENOTSUP;
		goto fail;
	}
	if (!b->ops->kv_supports(o->kv_fmt) || (kv_fmt_rotated(o->kv_fmt) && hp->head_dim % KV_GROUP)) {
		snprintf(err, errlen, "KV cache format %s is not supported by the %s backend (head dim %d)",
			 kv_fmt_name(o->kv_fmt), b->ops->name, hp->head_dim);
		rc = -ENOTSUP;
		goto fail;
	}
	if ((rc = check_formats(m, b, err, errlen)) || (m->hb && (rc = check_formats(m, m->hb, err, errlen))))
		goto fail;
	if (m->hb && !m->hb->ops->kv_supports(o->kv_fmt)) {
		snprintf(err, errlen, "KV cache format %s is not supported by the %s backend of the hybrid steps",
			 kv_fmt_name(o->kv_fmt), m->hb->ops->name);
		rc = -ENOTSUP;
		goto fail;
	}
	struct model_mem mm;
	model_mem_plan(hp, b, &m->opt, kv_host, &mm);
	rc = kvc_init(&m->kc, m->opt.kv_page, o->ctx, m->opt.max_seqs, mm.n_groups, mm.windows, mm.n_pages, err, errlen);
	if (rc)
		goto fail;
	memcpy(m->n_pages, mm.n_pages, sizeof(m->n_pages));
	m->kv_bytes = mm.kv;
	size_t T = (size_t)o->t_max, D = (size_t)hp->d_model;
	size_t pbk = kv_pool_page_bytes(o->kv_fmt, 0, hp->n_kv_heads, hp->head_dim, m->opt.kv_page);
	size_t pbv = kv_pool_page_bytes(o->kv_fmt, 1, hp->n_kv_heads, hp->head_dim, m->opt.kv_page);
	/* KV cache first: the largest long-lived blocks, so the arena stays unfragmented */
	m->kv = calloc((size_t)hp->n_layers, sizeof(*m->kv));
	bool ok = m->kv;
	size_t *pool = malloc(2 * sizeof(size_t) * (size_t)hp->n_layers); /* [L][2]: key, value pool bytes */
	ok = ok && pool;
	for (int l = 0; ok && l < hp->n_layers; l++) {
		int g = group_of_layer(&mm, hp->window[l]);
		m->kv[l] = (struct kv_layer){.fmt = o->kv_fmt, .page = m->opt.kv_page, .Hkv = hp->n_kv_heads,
					     .Dh = hp->head_dim, .n_pages = mm.n_pages[g], .group = g};
		pool[2 * l] = (size_t)mm.n_pages[g] * pbk;
		pool[2 * l + 1] = (size_t)mm.n_pages[g] * pbv;
		if (kv_host && kv_host[l])
			continue; /* pinned host pools, staged per step (kv_host.c) */
		m->kv[l].k = b->ops->alloc(b, pool[2 * l]);
		m->kv[l].v = b->ops->alloc(b, pool[2 * l + 1]);
		ok = m->kv[l].k && m->kv[l].v;
	}
	/* permuted linears gather their inputs into a buffer free at the call (matmul_in): g (F) for q, k, v; att
	 * (H*Dh) for gate, up; xp only where those are narrower than D */
	bool xp = has_perms(lay) && (ffn_rows(hp) < hp->d_model || (int64_t)hp->n_heads * hp->head_dim < hp->d_model);
	ok = ok && rs_alloc(&m->rs[0], b, hp, o->t_max, m->opt.t_sub, o->max_logits, m->opt.head_rows, xp);
	int t_h = m->plan.hybrid_t_max < o->t_max ? m->plan.hybrid_t_max : o->t_max;
	if (ok && m->hb && !rs_alloc(&m->rs[1], m->hb, hp, t_h, t_h, o->max_logits, 0, xp)) {
		snprintf(m->hb->err, sizeof(m->hb->err), "host memory for the hybrid steps' run state");
		ok = false;
	}
	m->embed_rows = malloc(T * D * 4);
	m->tokens = malloc(sizeof(int) * T);
	m->pos = malloc(sizeof(int) * T);
	m->part_t0 = malloc(sizeof(int) * (T + 1));
	m->part_row = malloc(sizeof(int) * T);
	m->part_span = malloc(sizeof(int) * T);
	m->lpos = malloc(sizeof(int) * T);
	m->tree_base = malloc(sizeof(int) * T);
	m->tree_mask = malloc(sizeof(uint32_t) * T * KV_TREE_WORDS);
	m->tree = calloc((size_t)m->opt.max_seqs, sizeof(*m->tree));
	if (hp->n_experts) {
		size_t R = (size_t)o->t_max * (size_t)hp->n_experts_used; /* either run state's range */
		m->moe_ids = malloc(sizeof(int) * R);
		m->moe_rows = malloc(sizeof(int) * R);
		m->moe_w = malloc(sizeof(float) * R);
		m->moe_rw = malloc(sizeof(float) * R);
		m->moe_start = malloc(sizeof(int) * ((size_t)hp->n_experts + 1));
		m->moe_used = calloc((size_t)hp->n_experts, sizeof(bool));
		m->pred_ids = malloc(sizeof(int) * R);
		m->pred_w = malloc(sizeof(float) * R);
		m->pred_used = calloc(2 * (size_t)hp->n_experts, sizeof(bool));
		ok = ok && m->moe_ids && m->moe_rows && m->moe_w && m->moe_rw && m->moe_start && m->moe_used && m->pred_ids &&
		     m->pred_w && m->pred_used;
		const char *routes = getenv("FERRY_ROUTES");
		if (ok && routes && routes[0] && !(m->routes = fopen(routes, "w"))) {
			snprintf(err, errlen, "FERRY_ROUTES=%s: cannot create: %s", routes, strerror(errno));
			free(pool);
			model_free(m);
			return -EIO;
		}
	}
	ok = ok && m->embed_rows && m->tokens && m->pos && m->part_t0 && m->part_row && m->part_span && m->lpos &&
	     m->tree_base && m->tree_mask && m->tree;
	if (!ok) {
		snprintf(err, errlen,
			 "out of %s memory for the run state (%d tokens per step, KV cache of %d sequences x %d positions)%s%s",
			 b->ops->host_memory ? "host" : "device", o->t_max, m->opt.max_seqs, o->ctx, b->err[0] ? ": " : "",
			 b->err);
		free(pool);
		model_free(m);
		return -ENOMEM;
	}
	struct backend_reserve r;
	reserve_of(hp, &m->opt, mm.n_groups, &r);
	rc = b->ops->reserve(b, &r);
	if (rc)
		snprintf(err, errlen, "%s", b->err);
	if (!rc && m->hb) {
		struct model_opts ho = m->opt;
		ho.t_max = ho.t_sub = t_h;
		reserve_of(hp, &ho, mm.n_groups, &r);
		if ((rc = m->hb->ops->reserve(m->hb, &r)))
			snprintf(err, errlen, "%s", m->hb->err);
	}
	/* layers read from disk bring only their trunk, and a device uploads only the experts the router chose
	 * (FERRY_MOE_WHOLE=1: whole layers read and uploaded, for comparison); the next layer's are guessed
	 * (FERRY_MOE_PREDICT=0: not) */
	if (!rc && hp->n_experts && hb && m->plan.moe_cpu != MOE_CPU_OFF && o->moe_cpu_t > 0 && !b->ops->host_memory)
		rc = moe_cpu_init(m, hb, err, errlen);
	const char *whole = getenv("FERRY_MOE_WHOLE"), *predict = getenv("FERRY_MOE_PREDICT");
	struct io_opts io_moe = *io;
	io_moe.experts_on_demand = hp->n_experts && !(whole && !strcmp(whole, "1"));
	if (!rc)
		rc = io_stream_open(&m->io, lay, &io_moe, err, errlen);
	if (!rc)
		rc = weights_init(&m->w, lay, b, m->io, m->plan.resident, m->plan.n_slots, m->plan.expert_cache,
				  m->opt.head_rows, err, errlen);
	m->w.routed = !rc && io_moe.experts_on_demand;
	m->w.hold_ok = !m->hb;
	m->predict = m->w.routed && !(predict && !strcmp(predict, "0"));
	m->pred_layer[0] = m->pred_layer[1] = -1;
	if (!rc)
		rc = kvh_init(&m->kvh, b, hp->n_layers, kv_host, pool, err, errlen);
	free(pool);
	if (rc)
		model_free(m);
	return rc;
fail:
	plan_free(&m->plan);
	return rc;
}

void model_free(struct model *m)
{
	struct backend *b = m->b;
	if (!b)
		return;
	weights_free(&m->w);
	moe_cpu_free(m);
	for (int l = 0; m->kv && m->kvh.n_host && l < m->hp->n_layers; l++)
		if (m->kvh.host_idx[l] >= 0) /* staging, not pools of their own */
			m->kv[l].k = m->kv[l].v = NULL;
	kvh_free(&m->kvh);
	rs_free(&m->rs[0]);
	rs_free(&m->rs[1]);
	free(m->tap_host);
	for (int l = 0; m->kv && l < m->hp->n_layers; l++) {
		if (m->kv[l].k)
			b->ops->free(b, m->kv[l].k);
		if (m->kv[l].v)
			b->ops->free(b, m->kv[l].v);
	}
	free(m->kv);
	kvc_free(&m->kc);
	free(m->moe_ids);
	free(m->moe_rows);
	free(m->moe_w);
	free(m->moe_rw);
	free(m->moe_start);
	free(m->moe_used);
	free(m->pred_ids);
	free(m->pred_w);
	free(m->pred_used);
	if (m->routes)
		fclose(m->routes);
	free(m->tokens);
	free(m->pos);
	free(m->part_t0);
	free(m->part_row);
	free(m->part_span);
	free(m->lpos);
	free(m->tree_base);
	free(m->tree_mask);
	free(m->tree);
	free(m->embed_rows);
	io_stream_close(m->io);
	plan_free(&m->plan);
	memset(m, 0, sizeof(*m));
}

void model_stats(const struct model *m, struct model_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (!m->b)
		return;
	st->h2d_bytes = m->w.h2d_bytes;
	st->kv_h2d = m->kvh.h2d;
	st->kv_d2h = m->kvh.d2h;
	st->kv_bytes = m->kv_bytes;
	st->kv_host_layers = m->kvh.n_host;
	st->n_slots = m->w.n_slots;
	st->hyb = m->hyb;
	st->moe = m->moe;
	st->moe.uploads = m->w.exp_uploads;
	st->moe.routed_uploads = m->w.routed && !m->b->ops->host_memory;
	const struct expert_cache *ec = &m->w.ec;
	st->moe.cache_entries = ec->n;
	st->moe.cache_hits = ec->hits;
	st->moe.cache_misses = ec->misses;
	st->moe.cache_fills = ec->fills;
	st->moe.cache_evictions = ec->evictions;
	st->moe.cache_refused = ec->refused;
	st->moe.pred_uploads = m->w.pred_uploads;
	st->moe.expert_h2d = m->w.exp_h2d;
	st->moe.cpu_mode = m->xb ? m->plan.moe_cpu : MOE_CPU_OFF;
	io_stream_stats(m->io, &st->io);
}

int model_kv_groups(const struct model *m)
{
	return m->kc.n_groups;
}

int model_kv_pool(const struct model *m, int g)
{
	return m->kc.g[g].n_pages;
}

int model_kv_pages_for(const struct model *m, int g, int len)
{
	return kvc_pages_for(&m->kc, g, len, m->opt.t_max);
}

int model_set_tap(struct model *m, model_tap_fn fn, void *ctx)
{
	const struct layout_hparams *hp = m->hp;
	int64_t w = hp->d_model, a = (int64_t)hp->n_heads * hp->head_dim;
	w = a > w ? a : w;
	w = hp->ffn_dim > w ? hp->ffn_dim : w;
	free(m->tap_host);
	m->tap_host = NULL;
	int rows = m->rs[0].t_sub > m->rs[1].t_sub ? m->rs[0].t_sub : m->rs[1].t_sub;
	if (fn && !m->b->ops->host_memory && !(m->tap_host = malloc(sizeof(float) * (size_t)w * (size_t)rows)))
		return -ENOMEM;
	m->tap = fn;
	m->tap_ctx = ctx;
	return 0;
}

/* The tap's view of x [n, cols] on rs's backend (model_set_tap). */
static int tap_input(struct model *m, struct model_rs *rs, int l, enum model_tap which, const float *x, int n, int64_t cols)
{
	if (!m->tap)
		return 0;
	int rc = 0;
	if (!rs->b->ops->host_memory) {
		rc = rs->b->ops->download(rs->b, m->tap_host, x, sizeof(float) * (size_t)n * (size_t)cols);
		x = m->tap_host;
	}
	if (!rc && m->tap(m->tap_ctx, l, which, x, n, cols))
		rc = -EIO, snprintf(rs->b->err, sizeof(rs->b->err), "the matmul input tap failed");
	return rc;
}

/* Expert e's matrix of the stacked experts t: packed (a version 1 file), or expert-major (t->stride). */
static struct tensor expert_of(const struct tensor *t, int e)
{
	int64_t shape[2] = {t->rows, t->cols};
	uint64_t step = t->stride ? t->stride : layout_tensor_nbytes(t->fmt, 2, shape);
	return (struct tensor){(const char *)t->data + (uint64_t)e * step, t->fmt, t->rows, t->cols, 0};
}

/* Expert e's bias of the stacked biases t ([E, n]), NULL when the model has none. */
static const struct tensor *expert_bias(const struct tensor *t, int e, struct tensor *one)
{
	if (!t->data)
		return NULL;
	*one = (struct tensor){(const char *)t->data + (uint64_t)e * wfmt_row_bytes(t->fmt, (uint64_t)t->cols), t->fmt,
			       1, t->cols, 0};
	return one;
}

/* Qwen2-MoE's shared expert over the range's n tokens (normed in rs->h): x += sigmoid(h . g) * MLP(h), the
 * gate's n values taken to the host (the scatter-add weights them there, as it weights the experts). */
static int shared_expert(struct model *m, struct model_rs *rs, const struct layer_weights *w, float *x, int n)
{
	struct backend *b = rs->b;
	const struct backend_ops *op = b->ops;
	int64_t D = m->hp->d_model, Fs = m->hp->shared_ffn;
	float *gate = m->moe_rw;
	int *rows = m->moe_rows;
	int rc = op->matmul(b, rs->rl, rs->h, &w->shexp_gate_inp, NULL, n);
	rc = rc ? rc : op->download(b, gate, rs->rl, sizeof(float) * (size_t)n);
	for (int t = 0; !rc && t < n; t++) {
		gate[t] = 1.0f / (1.0f + expf(-gate[t]));
		rows[t] = t;
	}
	rc = rc ? rc : op->matmul(b, rs->g, rs->h, &w->w_gate_shexp, NULL, n);
	rc = rc ? rc : op->matmul(b, rs->u, rs->h, &w->w_up_shexp, NULL, n);
	rc = rc ? rc : op->glu(b, rs->g, rs->g, rs->u, n * Fs, m->hp->act);
	rc = rc ? rc : op->matmul(b, rs->ye, rs->g, &w->w_down_shexp, NULL, n);
	return rc ? rc : op->scatter_add(b, x, rs->ye, rows, gate, n, D);
}

/* Prediction: layer l's router (the copy kept on the device with the expert cache, or its trunk already in a
 * slot; else no guess) applied to the previous layer's MoE input (rs->h, n tokens), its experts uploaded into
 * the cache ahead of layer l's route. The route itself is always the real one: a guess changes which copies
 * happen when, never a result. */
static int moe_predict(struct model *m, struct model_rs *rs, int l, int n)
{
	const struct layout_hparams *hp = m->hp;
	struct backend *b = rs->b;
	void *const *p;
	struct layer_weights nw;
	if (weights_router(&m->w, l, &p) && weights_peek(&m->w, l, &p))
		return 0;
	int rc = bind_layer(m, l, p, &nw, b->err, sizeof(b->err));
	if (rc || !nw.router.data)
		return rc;
	int E = hp->n_experts, K = hp->n_experts_used;
	rc = b->ops->matmul(b, rs->rl, rs->h, &nw.router, opt(&nw.b_router), n);
	rc = rc ? rc : b->ops->route(b, m->pred_ids, m->pred_w, rs->rl, n, E, K, hp->moe_norm_topk);
	if (rc)
		return rc;
	bool *guess = m->pred_used + (size_t)(l % 2) * (size_t)E;
	memset(guess, 0, sizeof(bool) * (size_t)E);
	for (int i = 0; i < n * K; i++)
		guess[m->pred_ids[i]] = true;
	m->pred_layer[l % 2] = l;
	return weights_predict(&m->w, l, guess, b->err, sizeof(b->err));
}

/* One expert's bytes (its gate, up and down) in layer l. */
static uint64_t expert_bytes(const struct model *m, int l)
{
	const struct layout_unit *u = layout_unit_get(m->lay, l);
	uint64_t one = 0;
	for (int i = 0; i < u->n_tensors; i++)
		if (u->tensors[i].ndim == 3)
			one += u->tensors[i].bytes / (uint64_t)m->hp->n_experts;
	return one;
}

/* --moe-cpu: which of the range's experts (start[E + 1]) the host computes, into m->x_host; how many. Only a
 * device unit's range of at most opt.moe_cpu_t tokens is weighed; the device keeps what it holds. */
static int moe_split(struct model *m, struct model_rs *rs, int l, const int *start, int n)
{
	int E = m->hp->n_experts, n_hit = 0, n_miss = 0;
	if (!m->xb || rs != &m->rs[0] || n > m->opt.moe_cpu_t)
		return 0;
	bool *used = m->x_host, *present = m->x_present;
	for (int e = 0; e < E; e++)
		used[e] = start[e + 1] > start[e];
	weights_experts_present(&m->w, l, used, present);
	int *hit = m->x_cnt, *miss = m->x_cnt + E, *miss_e = m->x_base;
	for (int e = 0; e < E; e++) {
		if (present[e])
			hit[n_hit++] = start[e + 1] - start[e];
		else if (used[e])
			miss_e[n_miss] = e, miss[n_miss++] = start[e + 1] - start[e];
	}
	bool take[E > 0 ? E : 1];
	int k = moe_cpu_split(m->plan.moe_cpu, m->has_xr ? &m->xr : NULL, (double)expert_bytes(m, l), hit, n_hit, miss,
			      n_miss, take, NULL);
	memset(m->x_host, 0, sizeof(bool) * (size_t)E);
	for (int i = 0; i < n_miss; i++)
		m->x_host[miss_e[i]] = take[i];
	m->moe.cpu_ranges++;
	m->moe.cpu_split_ranges += k > 0;
	m->moe.host_experts += (uint64_t)k;
	return k;
}

/* The experts x_host marks of layer l on the host backend, from the streamer's buffer, over the range's n
 * normed rows (xh_h, downloaded): each expert's output rows at x_base[e] of xh_p, then the n_rows of them to
 * the device's buffer. The device computes its experts meanwhile (its ops were issued before). */
static int moe_host(struct model *m, int l, const int *start, int n_rows, char *err, size_t errlen)
{
	const struct layout_hparams *hp = m->hp;
	struct backend *xb = m->xb;
	const struct backend_ops *op = xb->ops;
	int64_t D = hp->d_model, Fe = hp->expert_ffn;
	void *const *p;
	struct layer_weights w;
	int rc = weights_host_experts(&m->w, l, m->x_host, &p, err, errlen);
	if (rc)
		return rc;
	rc = bind_layer(m, l, p, &w, err, errlen);
	for (int e = 0; !rc && e < hp->n_experts; e++) {
		int c = start[e + 1] - start[e];
		if (!m->x_host[e])
			continue;
		struct tensor gate = expert_of(&w.w_gate_exps, e), up = expert_of(&w.w_up_exps, e),
			      down = expert_of(&w.w_down_exps, e), bg, bu, bd;
		const int *rows = m->moe_rows + start[e];
		rc = op->gather_rows(xb, m->xh_xe, m->xh_h, rows, c, D);
		rc = rc ? rc : op->matmul(xb, m->xh_g, m->xh_xe, &gate, expert_bias(&w.b_gate_exps, e, &bg), c);
		rc = rc ? rc : op->matmul(xb, m->xh_u, m->xh_xe, &up, expert_bias(&w.b_up_exps, e, &bu), c);
		rc = rc ? rc : op->glu(xb, m->xh_g, m->xh_g, m->xh_u, c * Fe, hp->act);
		rc = rc ? rc : op->matmul(xb, m->xh_p + (size_t)m->x_base[e] * (size_t)D, m->xh_g, &down,
					  expert_bias(&w.b_down_exps, e, &bd), c);
		if (rc && !err[0])
			snprintf(err, errlen, "layer %d: expert %d on the host: %.400s", l, e, xb->err);
	}
	weights_host_put(&m->w, l);
	/* the backend's error names the failed upload */
	return rc ? rc : m->b->ops->upload(m->b, m->xp_dev, m->xh_p, sizeof(float) * (size_t)n_rows * (size_t)D);
}

/* A split range's sum: every token's K expert rows (in xp_dev) added to x in ascending expert order with
 * their weights, as the per-expert scatter-adds of an unsplit range add them, so a split never changes a
 * result. x_idx/x_w [K][n]: token t's k-th row and weight. */
static int moe_sum(struct model *m, struct model_rs *rs, float *x, const int *start, int n)
{
	struct backend *b = rs->b;
	int E = m->hp->n_experts, K = m->hp->n_experts_used;
	int64_t D = m->hp->d_model;
	int *fill = m->x_ident; /* rows filled per token, then the identity */
	memset(fill, 0, sizeof(int) * (size_t)n);
	for (int e = 0; e < E; e++)
		for (int at = start[e]; at < start[e + 1]; at++) {
			int t = m->moe_rows[at], k = fill[t]++;
			m->x_idx[k * n + t] = m->x_base[e] + (at - start[e]);
			m->x_w[k * n + t] = m->moe_rw[at];
		}
	for (int t = 0; t < n; t++)
		fill[t] = t;
	int rc = 0;
	for (int k = 0; !rc && k < K; k++) {
		rc = b->ops->gather_rows(b, rs->xe, m->xp_dev, m->x_idx + k * n, n, D);
		rc = rc ? rc : b->ops->scatter_add(b, x, rs->xe, fill, m->x_w + k * n, n, D);
	}
	return rc;
}

/* The mixture of experts of layer l for tokens t0 .. t0+n-1 (normed in rs->h, residual x): the router's
 * K experts per token, on a device the chosen experts uploaded (weights_experts), then expert by expert (in
 * expert order, so the sums are the same whatever the step) the MLP over its tokens gathered, its output
 * added to their rows of x with their weights. --moe-cpu: the experts the device lacks may be computed by
 * the host instead (moe_split), beside the device's; every expert's rows then go into one buffer and
 * moe_sum adds them in the same order. */
static int moe_range(struct model *m, struct model_rs *rs, int l, const struct layer_weights *w, float *x, int t0,
		     int n)
{
	const struct layout_hparams *hp = m->hp;
	struct backend *b = rs->b;
	const struct backend_ops *op = b->ops;
	int E = hp->n_experts, K = hp->n_experts_used;
	int64_t D = hp->d_model, Fe = hp->expert_ffn;
	int rc = op->matmul(b, rs->rl, rs->h, &w->router, opt(&w->b_router), n);
	rc = rc ? rc : op->route(b, m->moe_ids, m->moe_w, rs->rl, n, E, K, hp->moe_norm_topk);
	if (rc)
		return rc;
	int *start = m->moe_start;
	memset(start, 0, sizeof(int) * ((size_t)E + 1));
	for (int i = 0; i < n * K; i++)
		start[m->moe_ids[i] + 1]++;
	for (int e = 0; e < E; e++)
		start[e + 1] += start[e];
	for (int i = 0; i < n * K; i++) { /* tokens in order within each expert; start[e] ends at e's end */
		int at = start[m->moe_ids[i]]++;
		m->moe_rows[at] = i / K;
		m->moe_rw[at] = m->moe_w[i];
	}
	for (int e = E; e > 0; e--)
		start[e] = start[e - 1];
	start[0] = 0;
	if (m->routes)
		for (int t = 0; t < n; t++) {
			fprintf(m->routes, "%d %d", l, m->pos[t0 + t]);
			for (int k = 0; k < K; k++)
				fprintf(m->routes, " %d", m->moe_ids[t * K + k]);
			fputc('\n', m->routes);
		}
	for (int e = 0; e < E; e++)
		m->moe_used[e] |= start[e + 1] > start[e];
	int n_host = moe_split(m, rs, l, start, n), n_rows = 0;
	const bool *dev_used = m->moe_used;
	bool dev_only[E > 0 ? E : 1];
	if (n_host) { /* rows: the host's experts' first, then the device's, each in expert order */
		for (int e = 0; e < E; e++)
			if (m->x_host[e])
				m->x_base[e] = n_rows, n_rows += start[e + 1] - start[e];
		for (int e = 0, at = n_rows; e < E; e++) {
			dev_only[e] = start[e + 1] > start[e] && !m->x_host[e];
			if (dev_only[e])
				m->x_base[e] = at, at += start[e + 1] - start[e];
		}
		dev_used = dev_only;
		/* the host's input rows now: a download waits for the device's queue, so before its experts */
		rc = op->download(b, m->xh_h, rs->h, sizeof(float) * (size_t)n * (size_t)D);
	}
	if (!rc && (rc = weights_experts(&m->w, l, rs == &m->rs[1], dev_used, b->err, sizeof(b->err))))
		return rc;
	if (!rc && rs == &m->rs[0] && t0 == 0 && m->predict && l + 1 < hp->n_layers && (rc = moe_predict(m, rs, l + 1, n)))
		return rc;
	for (int e = 0; !rc && e < E; e++) {
		int c = start[e + 1] - start[e];
		if (!c || (n_host && m->x_host[e]))
			continue;
		struct tensor gate = expert_of(&w->w_gate_exps, e), up = expert_of(&w->w_up_exps, e),
			      down = expert_of(&w->w_down_exps, e);
		if (rs == &m->rs[0] && weights_expert_ptr(&m->w, l, e, w->w_gate_exps.data)) { /* the cache or the image */
			gate.data = weights_expert_ptr(&m->w, l, e, w->w_gate_exps.data);
			up.data = weights_expert_ptr(&m->w, l, e, w->w_up_exps.data);
			down.data = weights_expert_ptr(&m->w, l, e, w->w_down_exps.data);
		}
		struct tensor bg, bu, bd;
		const int *rows = m->moe_rows + start[e];
		float *ye = n_host ? m->xp_dev + (size_t)m->x_base[e] * (size_t)D : rs->ye;
		rc = op->gather_rows(b, rs->xe, rs->h, rows, c, D);
		rc = rc ? rc : op->matmul(b, rs->g, rs->xe, &gate, expert_bias(&w->b_gate_exps, e, &bg), c);
		rc = rc ? rc : op->matmul(b, rs->u, rs->xe, &up, expert_bias(&w->b_up_exps, e, &bu), c);
		rc = rc ? rc : op->glu(b, rs->g, rs->g, rs->u, c * Fe, hp->act);
		rc = rc ? rc : op->matmul(b, ye, rs->g, &down, expert_bias(&w->b_down_exps, e, &bd), c);
		if (!n_host)
			rc = rc ? rc : op->scatter_add(b, x, rs->ye, rows, m->moe_rw + start[e], c, D);
	}
	if (!rc && n_host) {
		rc = moe_host(m, l, start, n_rows, b->err, sizeof(b->err));
		rc = rc ? rc : moe_sum(m, rs, x, start, n);
	}
	m->moe.routed += (uint64_t)n * (uint64_t)K;
	return rc || !w->shexp_gate_inp.data ? rc : shared_expert(m, rs, w, x, n);
}

/* op->matmul of layer slot `slot` on x. A linear stored with permuted columns (w->perm) multiplies x gathered
 * into its column order, in `scratch` (scols wide, a buffer free at this call) or rs->xp; consecutive calls on
 * the same x with the same permutation (q, k, v; gate, up) gather once. */
static int matmul_in(struct model_rs *rs, const struct layer_weights *w, int slot, float *y, const float *x,
		     const struct tensor *bias, int n, float *scratch, int64_t scols)
{
	struct backend *b = rs->b;
	const struct tensor *W = &w->slot[slot], *p = &w->perm[slot];
	if (!p->data) {
		rs->px_src = NULL;
		return b->ops->matmul(b, y, x, W, opt(bias), n);
	}
	float *buf = scols >= W->cols ? scratch : rs->xp;
	int rc = 0;
	if (rs->px_src != x || rs->px_key != w->perm_key[slot] || rs->px_buf != buf) {
		rc = b->ops->gather_cols(b, buf, x, p->data, n, W->cols);
		rs->px_src = rc ? NULL : x, rs->px_key = w->perm_key[slot], rs->px_buf = buf;
	}
	return rc ? rc : b->ops->matmul(b, y, buf, W, opt(bias), n);
}

/* Tokens t0 .. t0+n-1 of the step through layer l (weights bound in w, KV pools kv) on the run state rs. */
static int layer_range(struct model *m, struct model_rs *rs, int l, const struct layer_weights *w,
		       const struct kv_layer *kv, int t0, int n)
{
	const struct layout_hparams *hp = m->hp;
	struct backend *b = rs->b;
	const struct backend_ops *op = b->ops;
	int H = hp->n_heads, Hkv = hp->n_kv_heads, Dh = hp->head_dim;
	int64_t D = hp->d_model, F = hp->ffn_dim, Q = (int64_t)H * Dh, Fb = ffn_rows(hp); /* Fb: g, u's width */
	float eps = (float)hp->rms_eps, *x = rs->x + (size_t)t0 * (size_t)D;
	int rc = op->step_range(b, t0, n);
	rc = rc ? rc : op->rmsnorm(b, rs->h, x, &w->attn_norm, n, eps);
	rc = rc ? rc : tap_input(m, rs, l, MODEL_TAP_ATTN_IN, rs->h, n, D);
	rc = rc ? rc : matmul_in(rs, w, ARCH_SLOT_WQ, rs->q, rs->h, &w->bq, n, rs->g, Fb);
	rc = rc ? rc : matmul_in(rs, w, ARCH_SLOT_WK, rs->k, rs->h, &w->bk, n, rs->g, Fb);
	rc = rc ? rc : matmul_in(rs, w, ARCH_SLOT_WV, rs->v, rs->h, &w->bv, n, rs->g, Fb);
	if (!rc && w->q_norm.data)
		rc = op->rmsnorm(b, rs->q, rs->q, &w->q_norm, n * H, eps);
	if (!rc && w->k_norm.data)
		rc = op->rmsnorm(b, rs->k, rs->k, &w->k_norm, n * Hkv, eps);
	const struct rope_freqs *rope = hp->window[l] > 0 && hp->has_rope_local ? &m->rope_local : &m->rope;
	float scale = hp->attn_scale > 0 ? (float)hp->attn_scale : 1.0f / sqrtf((float)Dh);
	rc = rc ? rc : op->rope(b, rs->q, H, Dh, rope);
	rc = rc ? rc : op->rope(b, rs->k, Hkv, Dh, rope);
	bool rot = kv_fmt_rotated(kv->fmt); /* q.k and p.v are unchanged; the output is rotated back */
	if (rot) {
		rc = rc ? rc : op->hadamard(b, rs->q, (int64_t)n * H * Dh);
		rc = rc ? rc : op->hadamard(b, rs->k, (int64_t)n * Hkv * Dh);
		rc = rc ? rc : op->hadamard(b, rs->v, (int64_t)n * Hkv * Dh);
	}
	rc = rc ? rc : op->kv_store(b, kv, rs->k, rs->v);
	rc = rc ? rc : op->attention(b, rs->att, rs->q, kv, H, hp->window[l], scale, w->attn_sinks.data);
	if (rot)
		rc = rc ? rc : op->hadamard(b, rs->att, (int64_t)n * H * Dh);
	rc = rc ? rc : tap_input(m, rs, l, MODEL_TAP_ATTN_OUT, rs->att, n, (int64_t)H * Dh);
	rc = rc ? rc : matmul_in(rs, w, ARCH_SLOT_WO, rs->h, rs->att, &w->bo, n, rs->q, Q);
	if (!rc && w->post_attn_norm.data)
		rc = op->rmsnorm(b, rs->h, rs->h, &w->post_attn_norm, n, eps);
	rc = rc ? rc : op->add(b, x, rs->h, n * D);
	rc = rc ? rc : op->rmsnorm(b, rs->h, x, &w->ffn_norm, n, eps);
	rc = rc ? rc : tap_input(m, rs, l, MODEL_TAP_FFN_IN, rs->h, n, D);
	if (w->router.data) { /* the experts add their weighted outputs to x themselves */
		return rc ? rc : moe_range(m, rs, l, w, x, t0, n);
	}
	rc = rc ? rc : matmul_in(rs, w, ARCH_SLOT_W_GATE, rs->g, rs->h, &w->b_gate, n, rs->att, Q);
	rc = rc ? rc : matmul_in(rs, w, ARCH_SLOT_W_UP, rs->u, rs->h, &w->b_up, n, rs->att, Q);
	rc = rc ? rc : op->glu(b, rs->g, rs->g, rs->u, n * F, hp->act);
	rc = rc ? rc : tap_input(m, rs, l, MODEL_TAP_FFN_DOWN, rs->g, n, F);
	rc = rc ? rc : matmul_in(rs, w, ARCH_SLOT_W_DOWN, rs->h, rs->g, &w->b_down, n, rs->u, Fb);
	if (!rc && w->post_ffw_norm.data)
		rc = op->rmsnorm(b, rs->h, rs->h, &w->post_ffw_norm, n, eps);
	rc = rc ? rc : op->add(b, x, rs->h, n * D);
	return rc;
}

/* The step's union of layer l's experts (moe_used) into the figures of struct model_moe_stats. */
static void moe_count(struct model *m, int l, int T)
{
	const struct layout_unit *u = layout_unit_get(m->lay, l);
	uint64_t one = 0, E = (uint64_t)m->hp->n_experts, n = 0;
	for (int i = 0; i < u->n_tensors; i++)
		if (u->tensors[i].ndim == 3)
			one += u->tensors[i].bytes / E;
	for (uint64_t e = 0; e < E; e++)
		n += m->moe_used[e];
	m->moe.tokens += l == 0 ? (uint64_t)T : 0;
	m->moe.layer_steps++;
	m->moe.union_experts += n;
	if (m->pred_layer[l % 2] == l) { /* how good the guess made during layer l - 1 was */
		const bool *guess = m->pred_used + (size_t)(l % 2) * E;
		m->moe.pred_layers++;
		m->moe.pred_routed += n;
		for (uint64_t e = 0; e < E; e++) {
			m->moe.pred_right += m->moe_used[e] && guess[e];
			m->moe.pred_guessed += guess[e];
		}
		m->pred_layer[l % 2] = -1;
	}
	m->moe.union_bytes += n * one;
	m->moe.all_bytes += E * one;
}

/* Layer l for the whole step on rs, t_sub tokens at a time: the weights are bound once, and the ranges run
 * in order, so each range's queries find the keys of the ranges before it in the cache. host: the step's
 * host units (NULL: none), for the prefetch. A layer the host backend runs reads its KV pools in place. */
static int layer_forward(struct model *m, struct model_rs *rs, int l, int T, const bool *host, char *err,
			 size_t errlen)
{
	void *const *ptrs;
	struct layer_weights w;
	bool on_host = rs == &m->rs[1];
	int rc = weights_get(&m->w, l, on_host, &ptrs, err, errlen);
	if (rc)
		return rc;
	rc = bind_layer(m, l, ptrs, &w, err, errlen);
	struct kv_layer kv = m->kv[l];
	if (on_host)
		kvh_host_view(&m->kvh, l, m->kv, &kv);
	else if (!rc && !(rc = kvh_acquire(&m->kvh, l, m->kv)))
		kv = m->kv[l];
	if (m->moe_used)
		memset(m->moe_used, 0, sizeof(bool) * (size_t)m->hp->n_experts);
	for (int t0 = 0; !rc && t0 < T; t0 += rs->t_sub)
		rc = layer_range(m, rs, l, &w, &kv, t0, T - t0 < rs->t_sub ? T - t0 : rs->t_sub);
	if (!rc && m->moe_used)
		moe_count(m, l, T);
	if (rc && !err[0])
		snprintf(err, errlen, "layer %d: %s", l, rs->b->err);
	weights_put(&m->w, l, on_host);
	if (!rc)
		rc = weights_prefetch(&m->w, l, host, err, errlen);
	if (!rc && !on_host && (rc = kvh_release(&m->kvh, l, m->kv, &m->kc, m->n_parts, m->part_row, m->part_span)))
		snprintf(err, errlen, "layer %d: KV pages to host memory: %s", l, m->b->err);
	return rc;
}

static int embed(struct model *m, struct model_rs *rs, const int *tokens, int T, char *err, size_t errlen)
{
	const char *name = arch_token_embd.name;
	const struct layout_tensor *t = layout_tensor_find(&m->lay->embed, name);
	int64_t D = m->hp->d_model;
	if (!t || t->ndim != 2 || t->shape[1] != D || t->shape[0] != m->hp->vocab) {
		snprintf(err, errlen, "%s: %s missing or not [vocab, d_model]", m->lay->dir, name);
		return -EINVAL;
	}
	int rc = io_read_rows(m->io, t, tokens, T, m->embed_rows, err, errlen);
	if (rc)
		return rc;
	/* scaled in f32, as transformers scales in the model's dtype */
	float scale = m->hp->embed_scale > 0 ? (float)m->hp->embed_scale : 0;
	return rs->b->ops->embed(rs->b, rs->x, m->embed_rows, t->fmt, T * D, scale);
}

/* The logits rows the parts ask for (each part's last n_logits tokens, in part order) into out: all V
 * values, or, with out->k > 0, the k largest of each row (the backend's top_k: a few bytes instead of V
 * floats). Rows that sit next to each other in the step go through the head together. A head streamed in
 * pieces (weights.h) runs them all per piece, its logits columns [r0, r0 + nr) through rs->lp, the norm
 * computed again with each piece (a few D-wide rows against a slot of weights). */
static int head(struct model *m, struct model_rs *rs, const struct model_part *parts, int n_parts,
		const struct model_out *out, const bool *host, char *err, size_t errlen)
{
	const struct layout_hparams *hp = m->hp;
	struct backend *b = rs->b;
	int L = hp->n_layers, S = rs->t_sub;
	bool on_host = rs == &m->rs[1];
	int64_t D = hp->d_model, V = hp->vocab, R = V;
	int n_pieces = on_host ? 1 : weights_pieces(&m->w, L, &R), rows = 0, rc = 0;
	float *hp_buf = ffn_rows(hp) >= D ? rs->g : rs->xp; /* free in the head; xp exists where g is narrower */
	for (int k = 0; !rc && k < n_pieces; k++) {
		void *const *ptrs;
		struct tensor norm, w_out;
		int64_t r0 = k * R, nr_out = n_pieces > 1 && V - r0 > R ? R : V - r0;
		if ((rc = weights_get(&m->w, L + k, on_host, &ptrs, err, errlen)))
			return rc;
		const struct layout_unit *u = layout_unit_get(m->lay, L);
		rc = bind(u, ptrs, hp, &arch_output_norm, &norm, err, errlen);
		rc = rc ? rc : bind(u, ptrs, hp, &arch_output, &w_out, err, errlen);
		w_out.rows = nr_out; /* a piece: its rows from r0 */
		const float *perm = NULL; /* an act-order output projection: its input gathered as matmul_in does */
		for (int i = 0; !rc && i < u->n_tensors; i++) {
			const struct layout_tensor *lt = &u->tensors[i];
			if (strcmp(lt->name, "output.perm"))
				continue;
			if (lt->fmt != WFMT_F32 || lt->ndim != 1 || lt->shape[0] != D) {
				snprintf(err, errlen, "tensor output.perm: not F32 [%lld] (the column order of output.weight)",
					 (long long)D);
				rc = -EINVAL;
			}
			perm = ptrs[i];
		}
		rows = 0;
		for (int i = 0; !rc && i < n_parts;) {
			/* a run: parts whose logits rows are consecutive tokens of the step */
			int t_first = m->part_t0[i + 1] - parts[i].n_logits, n = parts[i].n_logits;
			while (++i < n_parts && parts[i].n_logits == parts[i].n &&
			       m->part_t0[i] == t_first + n)
				n += parts[i].n;
			/* a piece's rows go through rs->lp, (min(S, max_logits), R) */
			int lr = m->opt.max_logits > 1 ? m->opt.max_logits : 1, step = n_pieces > 1 && lr < S ? lr : S;
			for (int r = 0; !rc && r < n; r += step) {
				int nr = n - r < step ? n - r : step;
				const float *x = rs->x + (size_t)(t_first + r) * (size_t)D;
				float *y = rs->logits + (size_t)(rows + r) * (size_t)V;
				rc = b->ops->rmsnorm(b, rs->h, x, &norm, nr, (float)hp->rms_eps);
				rc = rc || k ? rc : tap_input(m, rs, L, MODEL_TAP_OUTPUT, rs->h, nr, D);
				if (!rc && perm) {
					rc = b->ops->gather_cols(b, hp_buf, rs->h, perm, nr, D);
					rs->px_src = NULL; /* the buffer no longer holds matmul_in's last gather */
				}
				rc = rc ? rc : b->ops->matmul(b, n_pieces > 1 ? rs->lp : y, perm ? hp_buf : rs->h, &w_out, NULL, nr);
				if (!rc && n_pieces > 1)
					rc = b->ops->copy_cols(b, y + r0, V, rs->lp, nr_out, nr);
			}
			rows += n;
		}
		weights_put(&m->w, L + k, on_host);
		if (!rc)
			rc = weights_prefetch(&m->w, L + k, host, err, errlen);
	}
	float *dst = out->logits;
	int64_t nv = V;
	if (out->k > 0) {
		for (int r = 0; !rc && r < rows; r++)
			rc = b->ops->top_k(b, rs->logits + (size_t)r * (size_t)V, (int)V, out->k, out->top_vals + (size_t)r * out->k,
					   out->top_idx + (size_t)r * out->k);
		dst = out->top_vals; /* softcap is monotonic: the order stays, the values change */
		nv = out->k;
	} else {
		rc = rc ? rc : b->ops->download(b, dst, rs->logits, sizeof(float) * (size_t)rows * (size_t)V);
	}
	if (!rc && hp->final_softcap > 0) { /* the op order of transformers: divide, tanh, multiply */
		float cap = (float)hp->final_softcap;
		for (int64_t i = 0; i < rows * nv; i++)
			dst[i] = tanhf(dst[i] / cap) * cap;
	}
	if (rc && !err[0])
		snprintf(err, errlen, "head: %s", b->err);
	return rc;
}

/* The residual stream's T rows into run state `to` from the other (one of them is on the host backend, so b's
 * upload or download moves them). */
static int cross(struct model *m, int to, int T)
{
	size_t n = sizeof(float) * (size_t)T * (size_t)m->hp->d_model;
	struct backend *b = m->b;
	return to == 1 ? b->ops->download(b, m->rs[1].x, m->rs[0].x, n) : b->ops->upload(b, m->rs[0].x, m->rs[1].x, n);
}

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

/* Undoes what step_build added to the trees of parts 0 .. n-1. */
static void trees_undo(struct model *m, const struct model_part *parts, int n)
{
	for (int k = 0; k < n; k++)
		if (parts[k].parent)
			m->tree[parts[k].seq].n -= parts[k].n;
}

/* The step's host arrays from the parts; checks them (a refused step leaves the trees as they were). */
static int step_build(struct model *m, const struct model_part *parts, int n_parts, int *T, int *rows, char *err,
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

/* Layers 0..L-1 of a decode step (one token per part) of a model wholly resident on the device, dense, with no
 * tap and no tree, as one backend graph (backend.h graph_begin; CUDA: FERRY_CUDA_GRAPH=1): replayed, or
 * captured as they are issued. *done false: issue them plainly (no graph for this step, or its capture
 * refused: nothing ran). */
static int layers_graph(struct model *m, int T, bool *done, char *err, size_t errlen)
{
	struct backend *b = m->b;
	*done = false;
	if (!b->ops->graph_begin || T != m->n_parts || m->tap || m->has_tree || m->moe_used ||
	    m->plan.n_resident < m->plan.n_units || m->plan.n_kv_host > 0)
		return 0;
	/* the RoPE tables: their values and mscale are the ops' arguments, and a long context changes them */
	double key[2 * (ROPE_MAX_FREQS + 3)];
	size_t n = 0;
	for (int i = 0; i < (m->hp->has_rope_local ? 2 : 1); i++) {
		const struct rope_freqs *r = i ? &m->rope_local : &m->rope;
		key[n++] = r->n, key[n++] = r->mscale, key[n++] = r->neox;
		for (int j = 0; j < r->n; j++)
			key[n++] = r->inv_freq[j];
	}
	int g = b->ops->graph_begin(b, m, key, n * sizeof(double)), rc = 0;
	if (g <= 0) {
		if (g < 0)
			snprintf(err, errlen, "step graph: %s", b->err);
		return g;
	}
	*done = true;
	if (g == BACKEND_GRAPH_REPLAYED)
		return 0;
	for (int l = 0; !rc && l < m->hp->n_layers; l++)
		rc = layer_forward(m, &m->rs[0], l, T, NULL, err, errlen);
	int e = b->ops->graph_end(b, rc);
	if (e == -EAGAIN) {
		err[0] = 0;
		*done = false;
		return 0;
	}
	if (!rc && e)
		snprintf(err, errlen, "step graph: %s", b->err);
	return rc ? rc : e;
}

int model_step(struct model *m, const struct model_part *parts, int n_parts, const struct model_out *out,
	       char *err, size_t errlen)
{
	err[0] = 0;
	int T, rows, rc = step_build(m, parts, n_parts, &T, &rows, err, errlen);
	if (rc)
		return rc;
	if (out->k > 0 && (!m->b->ops->top_k || out->k > 1024 || out->k > m->hp->vocab)) {
		snprintf(err, errlen, "top-%d logits are not available from the %s backend", out->k, m->b->ops->name);
		return -ENOTSUP;
	}
	int grown = 0;
	for (; grown < n_parts && !rc; grown++)
		rc = kvc_grow(&m->kc, parts[grown].seq, m->part_span[grown], err, errlen);
	if (rc) {
		for (int i = 0; i < n_parts; i++) {
			if (i < grown - 1)
				kvc_shrink(&m->kc, parts[i].seq, m->kc.seqs[parts[i].seq].len);
			if (parts[i].parent)
				m->tree[parts[i].seq].n = 0;
		}
		return rc;
	}
	const int *tables[KVC_GROUPS_MAX];
	for (int g = 0; g < m->kc.n_groups; g++)
		tables[g] = m->kc.tables[g];
	struct step_desc d = {.T = T, .pos = m->pos, .n_parts = n_parts, .part_t0 = m->part_t0, .part_row = m->part_row,
			      .n_groups = m->kc.n_groups, .n_rows = m->kc.max_seqs, .max_pages = m->kc.max_pages,
			      .pages = tables, .lpos = m->has_tree ? m->lpos : NULL,
			      .tree_base = m->has_tree ? m->tree_base : NULL, .tree_mask = m->has_tree ? m->tree_mask : NULL,
			      .t_ops = m->rs[0].t_sub};
	m->n_parts = n_parts;
	/* hybrid_t_max may fall below the host run state's rows when the placement is corrected (place.c) */
	bool hyb = m->hb && T <= m->plan.hybrid_t_max && T <= m->rs[1].t_rows;
	const bool *host = hyb ? m->plan.on_host : NULL;
	int L = m->hp->n_layers;
	double t_start = now_sec(), t_host = 0;
	/* the write-backs of the last device step's KV pages land before the host reads its pools */
	if (hyb && !m->last_hybrid)
		rc = m->b->ops->sync(m->b);
	m->last_hybrid = hyb;
	rc = rc ? rc : m->b->ops->step_begin(m->b, &d);
	if (hyb)
		rc = rc ? rc : m->hb->ops->step_begin(m->hb, &d);
	rc = rc ? rc : kvh_step_begin(&m->kvh, &m->kc, m->kv, host);
	int side = host && host[0];
	rc = rc ? rc : embed(m, &m->rs[side], m->tokens, T, err, errlen);
	bool graphed = false;
	if (!rc && !host)
		rc = layers_graph(m, T, &graphed, err, errlen);
	for (int l = graphed ? L : 0; !rc && l <= L && (l < L || rows > 0); l++) {
		int to = host && host[l];
		if (to != side) {
			rc = cross(m, to, T);
			side = to;
		}
		double t0 = now_sec();
		if (!rc && l < L)
			rc = layer_forward(m, &m->rs[side], l, T, host, err, errlen);
		else if (!rc)
			rc = head(m, &m->rs[side], parts, n_parts, out, host, err, errlen);
		if (side)
			t_host += now_sec() - t0;
	}
	if (!rc && hyb) {
		m->hyb.steps++;
		m->hyb.tokens += (uint64_t)T;
		m->hyb.sec += now_sec() - t_start;
		m->hyb.host_sec += t_host;
	}
	if (rc && !err[0])
		snprintf(err, errlen, "%s", m->b->err[0] ? m->b->err : "forward failed");
	for (int i = 0; i < n_parts; i++) {
		if (rc)
			kvc_shrink(&m->kc, parts[i].seq, m->kc.seqs[parts[i].seq].len);
		else if (!parts[i].parent)
			kvc_advance(&m->kc, parts[i].seq, parts[i].n);
		if (rc && parts[i].parent)
			m->tree[parts[i].seq].n = 0;
	}
	return rc;
}
