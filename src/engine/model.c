/*
 * model.c: the forward pass of the Llama family and Gemma 3 as a list of backend ops on named tensors:
 *   x = embed(tokens) (* embed_scale)
 *   per layer: h = rmsnorm(x, attn_norm); q,k,v = h.Wq,Wk,Wv (+b); [q,k = rmsnorm per head (q_norm, k_norm)];
 *              rope(q,k); kv_store(k,v); o = attention(q, kv).Wo (+b); [o = rmsnorm(o, post_attention_norm)];
 *              x += o; h = rmsnorm(x, ffn_norm); d = (act(h.Wg) * h.Wu).Wd; [d = rmsnorm(d, post_ffw_norm)];
 *              x += d
 *   logits = rmsnorm(x, output_norm) . Wout  [softcap: cap * tanh(logits / cap)]
 * The bracketed steps run when the model has those tensors or hyper-parameters (Gemma 3 has them all).
 * A mixture of experts replaces the MLP (moe_range, moe.c); gpt-oss adds attention sinks (a logit per head in the
 * softmax's denominator), biases on the router and the experts, and its clamped SwiGLU (ACT_SWIGLU_OAI).
 * Sliding-window layers pass their window to attention and use rope_local when the model has one;
 * GQA maps H/Hkv query heads to each kv head. The memory plan and run state are model_mem.c's, the sequences,
 * token trees and a step's host arrays model_seq.c's (model_internal.h).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "engine/model_internal.h"
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

int model_bind_layer(const struct model *m, int l, void *const *p, struct layer_weights *w, char *err, size_t n)
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
	model_opts_fill(&m->opt);
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
		int g = model_mem_group(&mm, hp->window[l]);
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
	bool xp = has_perms(lay) && (model_ffn_rows(hp) < hp->d_model || (int64_t)hp->n_heads * hp->head_dim < hp->d_model);
	ok = ok && model_rs_alloc(&m->rs[0], b, hp, o->t_max, m->opt.t_sub, o->max_logits, m->opt.head_rows, xp);
	int t_h = m->plan.hybrid_t_max < o->t_max ? m->plan.hybrid_t_max : o->t_max;
	if (ok && m->hb && !model_rs_alloc(&m->rs[1], m->hb, hp, t_h, t_h, o->max_logits, 0, xp)) {
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
	if (ok && hp->n_experts && (rc = moe_init(m, err, errlen)) == -EIO) {
		free(pool);
		model_free(m);
		return rc;
	}
	ok = ok && !rc;
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
	model_mem_reserve(hp, &m->opt, mm.n_groups, &r);
	rc = b->ops->reserve(b, &r);
	if (rc)
		snprintf(err, errlen, "%s", b->err);
	if (!rc && m->hb) {
		struct model_opts ho = m->opt;
		ho.t_max = ho.t_sub = t_h;
		model_mem_reserve(hp, &ho, mm.n_groups, &r);
		if ((rc = m->hb->ops->reserve(m->hb, &r)))
			snprintf(err, errlen, "%s", m->hb->err);
	}
	/* layers read from disk bring only their trunk, and a device uploads only the experts the router chose
	 * (FERRY_MOE_WHOLE=1: whole layers read and uploaded, for comparison); the next layer's are guessed
	 * (FERRY_MOE_PREDICT=0: not) */
	if (!rc && hp->n_experts && hb && m->plan.moe_cpu != MOE_CPU_OFF && o->moe_cpu_t > 0 && !b->ops->host_memory)
		rc = moe_host_init(m, hb, err, errlen);
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
	moe_free(m);
	for (int l = 0; m->kv && m->kvh.n_host && l < m->hp->n_layers; l++)
		if (m->kvh.host_idx[l] >= 0) /* staging, not pools of their own */
			m->kv[l].k = m->kv[l].v = NULL;
	kvh_free(&m->kvh);
	model_rs_free(&m->rs[0]);
	model_rs_free(&m->rs[1]);
	free(m->tap_host);
	for (int l = 0; m->kv && l < m->hp->n_layers; l++) {
		if (m->kv[l].k)
			b->ops->free(b, m->kv[l].k);
		if (m->kv[l].v)
			b->ops->free(b, m->kv[l].v);
	}
	free(m->kv);
	kvc_free(&m->kc);
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
	moe_stats(m, &st->moe);
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
		return b->ops->matmul(b, y, x, W, model_opt(bias), n);
	}
	float *buf = scols >= W->cols ? scratch : rs->xp;
	int rc = 0;
	if (rs->px_src != x || rs->px_key != w->perm_key[slot] || rs->px_buf != buf) {
		rc = b->ops->gather_cols(b, buf, x, p->data, n, W->cols);
		rs->px_src = rc ? NULL : x, rs->px_key = w->perm_key[slot], rs->px_buf = buf;
	}
	return rc ? rc : b->ops->matmul(b, y, buf, W, model_opt(bias), n);
}

/* Tokens t0 .. t0+n-1 of the step through layer l (weights bound in w, KV pools kv) on the run state rs. */
static int layer_range(struct model *m, struct model_rs *rs, int l, const struct layer_weights *w,
		       const struct kv_layer *kv, int t0, int n)
{
	const struct layout_hparams *hp = m->hp;
	struct backend *b = rs->b;
	const struct backend_ops *op = b->ops;
	int H = hp->n_heads, Hkv = hp->n_kv_heads, Dh = hp->head_dim;
	int64_t D = hp->d_model, F = hp->ffn_dim, Q = (int64_t)H * Dh, Fb = model_ffn_rows(hp); /* Fb: g, u's width */
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
	rc = model_bind_layer(m, l, ptrs, &w, err, errlen);
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
 * floats). Rows that sit next to each other in the step go through the head together. The final norm
 * overwrites those rows of the residual x (nothing reads it after the head), once per step: a head streamed
 * in pieces (weights.h) runs every row per piece, its logits columns [r0, r0 + nr) through rs->lp, and the
 * pieces after the first read the rows the first normed. */
static int head(struct model *m, struct model_rs *rs, const struct model_part *parts, int n_parts,
		const struct model_out *out, const bool *host, char *err, size_t errlen)
{
	const struct layout_hparams *hp = m->hp;
	struct backend *b = rs->b;
	int L = hp->n_layers, S = rs->t_sub;
	bool on_host = rs == &m->rs[1];
	int64_t D = hp->d_model, V = hp->vocab, R = V;
	int n_pieces = on_host ? 1 : weights_pieces(&m->w, L, &R), rows = 0, rc = 0;
	float *hp_buf = model_ffn_rows(hp) >= D ? rs->g : rs->xp; /* free in the head; xp exists where g is narrower */
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
				float *x = rs->x + (size_t)(t_first + r) * (size_t)D;
				float *y = rs->logits + (size_t)(rows + r) * (size_t)V;
				if (k == 0) {
					rc = b->ops->rmsnorm(b, x, x, &norm, nr, (float)hp->rms_eps);
					rc = rc ? rc : tap_input(m, rs, L, MODEL_TAP_OUTPUT, x, nr, D);
				}
				if (!rc && perm) {
					rc = b->ops->gather_cols(b, hp_buf, x, perm, nr, D);
					rs->px_src = NULL; /* the buffer no longer holds matmul_in's last gather */
				}
				rc = rc ? rc : b->ops->matmul(b, n_pieces > 1 ? rs->lp : y, perm ? hp_buf : x, &w_out, NULL, nr);
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
	int T, rows, rc = model_seq_step(m, parts, n_parts, &T, &rows, err, errlen);
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
