/*
 * model.c: the forward pass of the Llama family and Gemma 3 as a list of backend ops on named tensors:
 *   x = embed(tokens) (* embed_scale)
 *   per layer: h = rmsnorm(x, attn_norm); q,k,v = h.Wq,Wk,Wv (+b); [q,k = rmsnorm per head (q_norm, k_norm)];
 *              rope(q,k); kv_store(k,v); o = attention(q, kv).Wo (+b); [o = rmsnorm(o, post_attention_norm)];
 *              x += o; h = rmsnorm(x, ffn_norm); d = (act(h.Wg) * h.Wu).Wd; [d = rmsnorm(d, post_ffw_norm)];
 *              x += d
 *   logits = rmsnorm(x, output_norm) . Wout  [softcap: cap * tanh(logits / cap)]
 * The bracketed steps run when the model has those tensors or hyper-parameters (Gemma 3 has them all).
 * Sliding-window layers pass their window to attention and use rope_local when the model has one;
 * GQA maps H/Hkv query heads to each kv head.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "model.h"

static int bind(const struct layout_unit *u, void *const *ptrs, const char *name, bool required, int64_t rows,
		int64_t cols, struct tensor *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	for (int i = 0; i < u->n_tensors; i++) {
		const struct layout_tensor *lt = &u->tensors[i];
		if (strcmp(lt->name, name))
			continue;
		int64_t r = lt->ndim == 2 ? lt->shape[0] : 1, c = lt->shape[lt->ndim - 1];
		if (r != rows || c != cols || lt->ndim > 2) {
			snprintf(err, errlen, "tensor %s: shape does not match the hyper-parameters", name);
			return -EINVAL;
		}
		*t = (struct tensor){ptrs[i], lt->fmt, r, c};
		return 0;
	}
	if (required) {
		snprintf(err, errlen, "tensor %s missing from the model", name);
		return -EINVAL;
	}
	return 0;
}

static int bind_layer(const struct model *m, int l, void *const *p, struct layer_weights *w, char *err, size_t n)
{
	const struct layout_hparams *hp = m->hp;
	const struct layout_unit *u = layout_unit_get(m->lay, l);
	int64_t D = hp->d_model, Q = (int64_t)hp->n_heads * hp->head_dim, KV = (int64_t)hp->n_kv_heads * hp->head_dim,
		F = hp->ffn_dim;
	int rc = bind(u, p, "attn_norm.weight", true, 1, D, &w->attn_norm, err, n);
	rc = rc ? rc : bind(u, p, "attn_q.weight", true, Q, D, &w->wq, err, n);
	rc = rc ? rc : bind(u, p, "attn_k.weight", true, KV, D, &w->wk, err, n);
	rc = rc ? rc : bind(u, p, "attn_v.weight", true, KV, D, &w->wv, err, n);
	rc = rc ? rc : bind(u, p, "attn_output.weight", true, D, Q, &w->wo, err, n);
	rc = rc ? rc : bind(u, p, "attn_q.bias", false, 1, Q, &w->bq, err, n);
	rc = rc ? rc : bind(u, p, "attn_k.bias", false, 1, KV, &w->bk, err, n);
	rc = rc ? rc : bind(u, p, "attn_v.bias", false, 1, KV, &w->bv, err, n);
	rc = rc ? rc : bind(u, p, "attn_output.bias", false, 1, D, &w->bo, err, n);
	rc = rc ? rc : bind(u, p, "attn_q_norm.weight", false, 1, hp->head_dim, &w->q_norm, err, n);
	rc = rc ? rc : bind(u, p, "attn_k_norm.weight", false, 1, hp->head_dim, &w->k_norm, err, n);
	rc = rc ? rc : bind(u, p, "post_attention_norm.weight", false, 1, D, &w->post_attn_norm, err, n);
	rc = rc ? rc : bind(u, p, "post_ffw_norm.weight", false, 1, D, &w->post_ffw_norm, err, n);
	rc = rc ? rc : bind(u, p, "ffn_norm.weight", true, 1, D, &w->ffn_norm, err, n);
	rc = rc ? rc : bind(u, p, "ffn_gate.weight", true, F, D, &w->w_gate, err, n);
	rc = rc ? rc : bind(u, p, "ffn_up.weight", true, F, D, &w->w_up, err, n);
	rc = rc ? rc : bind(u, p, "ffn_down.weight", true, D, F, &w->w_down, err, n);
	rc = rc ? rc : bind(u, p, "ffn_gate.bias", false, 1, F, &w->b_gate, err, n);
	rc = rc ? rc : bind(u, p, "ffn_up.bias", false, 1, F, &w->b_up, err, n);
	rc = rc ? rc : bind(u, p, "ffn_down.bias", false, 1, D, &w->b_down, err, n);
	return rc;
}

static const struct tensor *opt(const struct tensor *t)
{
	return t->data ? t : NULL;
}

/* Every weight format of the model must be supported by the backend before anything runs. The streamer
 * decodes lz4 tensors of layers and the head; embedding rows are read in place, so they must be raw. */
static int check_formats(const struct model *m, char *err, size_t errlen)
{
	for (int u = -1; u <= m->hp->n_layers; u++) {
		const struct layout_unit *unit = layout_unit_get(m->lay, u);
		for (int i = 0; i < unit->n_tensors; i++) {
			const struct layout_tensor *t = &unit->tensors[i];
			bool ok = u < 0 ? cpu_fmt_supported(t->fmt) : m->b->ops->supports(m->b, OP_MATMUL, t->fmt);
			if (!ok || (u < 0 && t->comp != LAYOUT_COMP_NONE)) {
				snprintf(err, errlen, "tensor %s: format %s%s is not supported by the %s backend", t->name,
					 wfmt_name(t->fmt), t->comp ? " (compressed)" : "", m->b->ops->name);
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

static uint64_t al(uint64_t v)
{
	return (v + 255) / 256 * 256;
}

static void reserve_of(const struct layout_hparams *hp, const struct model_opts *o, struct backend_reserve *r)
{
	int64_t D = hp->d_model, Q = (int64_t)hp->n_heads * hp->head_dim, F = hp->ffn_dim;
	int64_t max_row = D > F ? D : F;
	*r = (struct backend_reserve){.t_max = o->t_max, .t_ops = t_sub_of(o), .max_row = max_row > Q ? max_row : Q,
				      .max_ctx = o->capacity, .n_heads = hp->n_heads, .head_dim = hp->head_dim};
}

void model_mem_plan(const struct layout_hparams *hp, struct backend *b, const struct model_opts *o, struct model_mem *mm)
{
	uint64_t T = (uint64_t)o->t_max, S = (uint64_t)t_sub_of(o), D = (uint64_t)hp->d_model,
		 Q = (uint64_t)hp->n_heads * (uint64_t)hp->head_dim, KV = (uint64_t)hp->n_kv_heads * (uint64_t)hp->head_dim,
		 F = (uint64_t)hp->ffn_dim, V = (uint64_t)hp->vocab;
	uint64_t L = (uint64_t)(o->max_logits > 0 ? o->max_logits : 1);
	mm->act = al(T * D * 4) + al(S * D * 4) + 2 * al(S * Q * 4) + 2 * al(S * KV * 4) + 2 * al(S * F * 4) +
		  al(L * V * 4);
	mm->kv = 2 * (uint64_t)hp->n_layers * al((uint64_t)o->capacity * KV * (uint64_t)b->ops->kv_bytes);
	struct backend_reserve r;
	reserve_of(hp, o, &r);
	mm->ws = b->ops->reserve_bytes ? b->ops->reserve_bytes(b, &r) : 0;
}

int model_init(struct model *m, const struct layout *lay, struct backend *b, const struct model_opts *o, char *err,
	       size_t errlen)
{
	memset(m, 0, sizeof(*m));
	m->lay = lay;
	m->hp = &lay->hp;
	m->b = b;
	m->opt = *o;
	m->opt.t_sub = t_sub_of(o);
	const struct layout_hparams *hp = m->hp;
	if (strcmp(hp->arch, "llama") && strcmp(hp->arch, "mistral") && strcmp(hp->arch, "qwen2") &&
	    strcmp(hp->arch, "gemma3")) {
		snprintf(err, errlen, "%s: architecture '%s' is not supported by this ferry", lay->dir, hp->arch);
		return -ENOTSUP;
	}
	if (hp->rope.dim / 2 > ROPE_MAX_FREQS || hp->rope.dim != hp->head_dim) {
		snprintf(err, errlen, "%s: rope dim %d (head_dim %d) is not supported", lay->dir, hp->rope.dim, hp->head_dim);
		return -ENOTSUP;
	}
	int rc = check_formats(m, err, errlen);
	if (rc)
		return rc;
	size_t T = (size_t)o->t_max, S = (size_t)m->opt.t_sub, D = (size_t)hp->d_model,
	       Q = (size_t)hp->n_heads * (size_t)hp->head_dim, KV = (size_t)hp->n_kv_heads * (size_t)hp->head_dim,
	       F = (size_t)hp->ffn_dim, V = (size_t)hp->vocab, kvb = (size_t)b->ops->kv_bytes;
	/* KV cache first: the largest long-lived blocks, so the arena stays unfragmented */
	m->kv = calloc((size_t)hp->n_layers, sizeof(*m->kv));
	bool ok = m->kv;
	for (int l = 0; ok && l < hp->n_layers; l++) {
		m->kv[l].capacity = o->capacity;
		m->kv[l].k = b->ops->alloc(b, (size_t)o->capacity * KV * kvb);
		m->kv[l].v = b->ops->alloc(b, (size_t)o->capacity * KV * kvb);
		ok = m->kv[l].k && m->kv[l].v;
	}
	m->x = ok ? b->ops->alloc(b, T * D * 4) : NULL;
	m->h = ok ? b->ops->alloc(b, S * D * 4) : NULL;
	m->q = ok ? b->ops->alloc(b, S * Q * 4) : NULL;
	m->att = ok ? b->ops->alloc(b, S * Q * 4) : NULL;
	m->k = ok ? b->ops->alloc(b, S * KV * 4) : NULL;
	m->v = ok ? b->ops->alloc(b, S * KV * 4) : NULL;
	m->g = ok ? b->ops->alloc(b, S * F * 4) : NULL;
	m->u = ok ? b->ops->alloc(b, S * F * 4) : NULL;
	m->logits = ok ? b->ops->alloc(b, (size_t)(o->max_logits > 0 ? o->max_logits : 1) * V * 4) : NULL;
	m->embed_rows = malloc(T * D * 4);
	m->embed_f32 = malloc(T * D * 4);
	ok = ok && m->x && m->h && m->q && m->att && m->k && m->v && m->g && m->u && m->logits && m->embed_rows &&
	     m->embed_f32;
	if (!ok) {
		snprintf(err, errlen, "out of %s memory for the run state (%d tokens per step, KV cache of %d tokens)%s%s",
			 b->ops->host_memory ? "host" : "device", o->t_max, o->capacity, b->err[0] ? ": " : "", b->err);
		model_free(m);
		return -ENOMEM;
	}
	struct backend_reserve r;
	reserve_of(hp, &m->opt, &r);
	rc = b->ops->reserve(b, &r);
	if (rc)
		snprintf(err, errlen, "%s", b->err);
	else
		rc = io_stream_open(&m->io, lay, &o->io, err, errlen);
	if (!rc)
		rc = weights_init(&m->w, lay, b, m->io, o->resident, o->n_slots, err, errlen);
	if (rc)
		model_free(m);
	return rc;
}

void model_free(struct model *m)
{
	struct backend *b = m->b;
	if (!b)
		return;
	weights_free(&m->w);
	void *bufs[] = {m->x, m->h, m->q, m->att, m->k, m->v, m->g, m->u, m->logits};
	for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
		if (bufs[i])
			b->ops->free(b, bufs[i]);
	for (int l = 0; m->kv && l < m->hp->n_layers; l++) {
		if (m->kv[l].k)
			b->ops->free(b, m->kv[l].k);
		if (m->kv[l].v)
			b->ops->free(b, m->kv[l].v);
	}
	free(m->kv);
	free(m->embed_rows);
	free(m->embed_f32);
	io_stream_close(m->io);
	memset(m, 0, sizeof(*m));
}

/* Tokens t0 .. t0+n-1 of the step through layer l (weights bound in w). */
static int layer_range(struct model *m, int l, const struct layer_weights *w, int t0, int n)
{
	const struct layout_hparams *hp = m->hp;
	struct backend *b = m->b;
	const struct backend_ops *op = b->ops;
	int H = hp->n_heads, Hkv = hp->n_kv_heads, Dh = hp->head_dim;
	int64_t D = hp->d_model, F = hp->ffn_dim;
	float eps = (float)hp->rms_eps, *x = m->x + (size_t)t0 * (size_t)D;
	int rc = op->step_range(b, t0, n);
	rc = rc ? rc : op->rmsnorm(b, m->h, x, &w->attn_norm, n, eps);
	rc = rc ? rc : op->matmul(b, m->q, m->h, &w->wq, opt(&w->bq), n);
	rc = rc ? rc : op->matmul(b, m->k, m->h, &w->wk, opt(&w->bk), n);
	rc = rc ? rc : op->matmul(b, m->v, m->h, &w->wv, opt(&w->bv), n);
	if (!rc && w->q_norm.data)
		rc = op->rmsnorm(b, m->q, m->q, &w->q_norm, n * H, eps);
	if (!rc && w->k_norm.data)
		rc = op->rmsnorm(b, m->k, m->k, &w->k_norm, n * Hkv, eps);
	const struct rope_freqs *rope = hp->window[l] > 0 && hp->has_rope_local ? &m->rope_local : &m->rope;
	float scale = hp->attn_scale > 0 ? (float)hp->attn_scale : 1.0f / sqrtf((float)Dh);
	rc = rc ? rc : op->rope(b, m->q, H, Dh, rope);
	rc = rc ? rc : op->rope(b, m->k, Hkv, Dh, rope);
	rc = rc ? rc : op->kv_store(b, &m->kv[l], m->k, m->v, Hkv * Dh);
	rc = rc ? rc : op->attention(b, m->att, m->q, &m->kv[l], H, Hkv, Dh, hp->window[l], scale);
	rc = rc ? rc : op->matmul(b, m->h, m->att, &w->wo, opt(&w->bo), n);
	if (!rc && w->post_attn_norm.data)
		rc = op->rmsnorm(b, m->h, m->h, &w->post_attn_norm, n, eps);
	rc = rc ? rc : op->add(b, x, m->h, n * D);
	rc = rc ? rc : op->rmsnorm(b, m->h, x, &w->ffn_norm, n, eps);
	rc = rc ? rc : op->matmul(b, m->g, m->h, &w->w_gate, opt(&w->b_gate), n);
	rc = rc ? rc : op->matmul(b, m->u, m->h, &w->w_up, opt(&w->b_up), n);
	rc = rc ? rc : op->glu(b, m->g, m->g, m->u, n * F, hp->act);
	rc = rc ? rc : op->matmul(b, m->h, m->g, &w->w_down, opt(&w->b_down), n);
	if (!rc && w->post_ffw_norm.data)
		rc = op->rmsnorm(b, m->h, m->h, &w->post_ffw_norm, n, eps);
	rc = rc ? rc : op->add(b, x, m->h, n * D);
	return rc;
}

/* Layer l for the whole step, t_sub tokens at a time: the weights are bound once, and the ranges run in
 * order, so each range's queries find the keys of the ranges before it in the cache. */
static int layer_forward(struct model *m, int l, int T, char *err, size_t errlen)
{
	void *const *ptrs;
	struct layer_weights w;
	int rc = weights_get(&m->w, l, &ptrs, err, errlen);
	if (rc)
		return rc;
	rc = bind_layer(m, l, ptrs, &w, err, errlen);
	for (int t0 = 0; !rc && t0 < T; t0 += m->opt.t_sub)
		rc = layer_range(m, l, &w, t0, T - t0 < m->opt.t_sub ? T - t0 : m->opt.t_sub);
	if (rc && !err[0])
		snprintf(err, errlen, "layer %d: %s", l, m->b->err);
	weights_put(&m->w, l);
	if (!rc)
		rc = weights_prefetch(&m->w, l, err, errlen);
	return rc;
}

static int embed(struct model *m, const int *tokens, int T, char *err, size_t errlen)
{
	const struct layout_tensor *t = layout_tensor_find(&m->lay->embed, "token_embd.weight");
	int64_t D = m->hp->d_model;
	if (!t || t->ndim != 2 || t->shape[1] != D || t->shape[0] != m->hp->vocab) {
		snprintf(err, errlen, "%s: token_embd.weight missing or not [vocab, d_model]", m->lay->dir);
		return -EINVAL;
	}
	int rc = io_read_rows(m->io, t, tokens, T, m->embed_rows, err, errlen);
	if (rc)
		return rc;
	if (cpu_row_to_f32(t->fmt, m->embed_rows, m->embed_f32, T * D)) {
		snprintf(err, errlen, "token_embd.weight: format %s cannot be read on the host", wfmt_name(t->fmt));
		return -ENOTSUP;
	}
	if (m->hp->embed_scale > 0) { /* in f32, as transformers scales in the model's dtype */
		float s = (float)m->hp->embed_scale;
		for (int64_t i = 0; i < T * D; i++)
			m->embed_f32[i] *= s;
	}
	return m->b->ops->upload(m->b, m->x, m->embed_f32, sizeof(float) * (size_t)(T * D));
}

/* The logits of the last n_logits tokens into the host array logits, or, with k > 0 (n_logits 1), only
 * the k largest into vals/idx (the backend's top_k: a few bytes instead of V floats). */
static int head(struct model *m, int T, int n_logits, float *logits, int k, float *vals, int *idx, char *err,
		size_t errlen)
{
	const struct layout_hparams *hp = m->hp;
	struct backend *b = m->b;
	int L = hp->n_layers, S = m->opt.t_sub;
	int64_t D = hp->d_model, V = hp->vocab;
	void *const *ptrs;
	struct tensor norm, out;
	int rc = weights_get(&m->w, L, &ptrs, err, errlen);
	if (rc)
		return rc;
	const struct layout_unit *u = layout_unit_get(m->lay, L);
	rc = bind(u, ptrs, "output_norm.weight", true, 1, D, &norm, err, errlen);
	rc = rc ? rc : bind(u, ptrs, "output.weight", true, V, D, &out, err, errlen);
	for (int i = 0; !rc && i < n_logits; i += S) {
		int n = n_logits - i < S ? n_logits - i : S;
		const float *x = m->x + (size_t)(T - n_logits + i) * (size_t)D;
		rc = b->ops->rmsnorm(b, m->h, x, &norm, n, (float)hp->rms_eps);
		rc = rc ? rc : b->ops->matmul(b, m->logits + (size_t)i * (size_t)V, m->h, &out, NULL, n);
	}
	weights_put(&m->w, L);
	if (!rc)
		rc = weights_prefetch(&m->w, L, err, errlen);
	if (k > 0) {
		rc = rc ? rc : b->ops->top_k(b, m->logits, (int)V, k, vals, idx);
		logits = vals; /* softcap is monotonic: the order stays, the values change */
		n_logits = 1;
		V = k;
	} else {
		rc = rc ? rc : b->ops->download(b, logits, m->logits, sizeof(float) * (size_t)(n_logits * V));
	}
	if (!rc && hp->final_softcap > 0) { /* the op order of transformers: divide, tanh, multiply */
		float cap = (float)hp->final_softcap;
		for (int64_t i = 0; i < n_logits * V; i++)
			logits[i] = tanhf(logits[i] / cap) * cap;
	}
	if (rc && !err[0])
		snprintf(err, errlen, "head: %s", b->err);
	return rc;
}

static int forward(struct model *m, const int *tokens, const int *pos, int T, int n_logits, float *logits, int k,
		   float *vals, int *idx, char *err, size_t errlen)
{
	err[0] = 0;
	if (T < 1 || T > m->opt.t_max || n_logits < 0 || n_logits > T || n_logits > m->opt.max_logits) {
		snprintf(err, errlen, "step of %d tokens (%d logits) outside 1..%d (%d logits)", T, n_logits, m->opt.t_max,
			 m->opt.max_logits);
		return -EINVAL;
	}
	int max_pos = 0;
	for (int t = 0; t < T; t++) {
		if (pos[t] < 0 || pos[t] >= m->opt.capacity) {
			snprintf(err, errlen, "position %d does not fit the context of %d tokens", pos[t], m->opt.capacity);
			return -ENOSPC;
		}
		max_pos = pos[t] > max_pos ? pos[t] : max_pos;
	}
	/* Only dynamic NTK depends on the step (through its sequence length). */
	rope_freqs_compute(&m->hp->rope, max_pos + 1, &m->rope);
	if (m->hp->has_rope_local)
		rope_freqs_compute(&m->hp->rope_local, max_pos + 1, &m->rope_local);
	int rc = m->b->ops->step_begin(m->b, T, pos);
	rc = rc ? rc : embed(m, tokens, T, err, errlen);
	for (int l = 0; !rc && l < m->hp->n_layers; l++)
		rc = layer_forward(m, l, T, err, errlen);
	if (!rc && n_logits > 0)
		rc = head(m, T, n_logits, logits, k, vals, idx, err, errlen);
	if (rc && !err[0])
		snprintf(err, errlen, "%s", m->b->err[0] ? m->b->err : "forward failed");
	return rc;
}

int model_forward(struct model *m, const int *tokens, const int *pos, int T, int n_logits, float *logits, char *err,
		  size_t errlen)
{
	return forward(m, tokens, pos, T, n_logits, logits, 0, NULL, NULL, err, errlen);
}

int model_forward_top(struct model *m, const int *tokens, const int *pos, int T, int k, float *vals, int *idx,
		      char *err, size_t errlen)
{
	if (!m->b->ops->top_k || k < 1 || k > 1024 || k > m->hp->vocab) {
		snprintf(err, errlen, "top-%d logits are not available from the %s backend", k, m->b->ops->name);
		return -ENOTSUP;
	}
	return forward(m, tokens, pos, T, 1, NULL, k, vals, idx, err, errlen);
}
