/*
 * moe.c: the mixture of experts of model.c's layers (DESIGN.md, "Mixture of experts"), per range of t_sub tokens:
 * the router and its K experts per token (src/kernels/moe_route.h), the (token, expert) pairs grouped by expert,
 * on a device the routed experts uploaded (weights_experts) and the next layer's guessed (moe_predict), each
 * expert's MLP over its tokens, added to x in ascending expert order with the tokens' weights; Qwen2-MoE's
 * shared expert; --moe-cpu's split of a device range's missing experts onto the host (moe_split, moe_host,
 * moe_sum: the same additions in the same order, so a split changes no result); the figures of
 * struct model_moe_stats. E experts, K used per token, D model dim, Fe one expert's ffn dim.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model_internal.h"
#include "engine/moe_cpu.h"

int moe_init(struct model *m, char *err, size_t errlen)
{
	const struct layout_hparams *hp = m->hp;
	size_t R = (size_t)m->opt.t_max * (size_t)hp->n_experts_used; /* either run state's range */
	m->moe_ids = malloc(sizeof(int) * R);
	m->moe_rows = malloc(sizeof(int) * R);
	m->moe_w = malloc(sizeof(float) * R);
	m->moe_rw = malloc(sizeof(float) * R);
	m->moe_start = malloc(sizeof(int) * ((size_t)hp->n_experts + 1));
	m->moe_used = calloc((size_t)hp->n_experts, sizeof(bool));
	m->pred_ids = malloc(sizeof(int) * R);
	m->pred_w = malloc(sizeof(float) * R);
	m->pred_used = calloc(2 * (size_t)hp->n_experts, sizeof(bool));
	if (!m->moe_ids || !m->moe_rows || !m->moe_w || !m->moe_rw || !m->moe_start || !m->moe_used || !m->pred_ids ||
	    !m->pred_w || !m->pred_used)
		return -ENOMEM;
	const char *routes = getenv("FERRY_ROUTES");
	if (routes && routes[0] && !(m->routes = fopen(routes, "w"))) {
		snprintf(err, errlen, "FERRY_ROUTES=%s: cannot create: %s", routes, strerror(errno));
		return -EIO;
	}
	return 0;
}

int moe_host_init(struct model *m, struct backend *hb, char *err, size_t errlen)
{
	const struct layout_hparams *hp = m->hp;
	size_t T = (size_t)m->opt.moe_cpu_t, K = (size_t)hp->n_experts_used, D = (size_t)hp->d_model,
	       F = (size_t)hp->expert_ffn, E = (size_t)hp->n_experts;
	struct backend_reserve r;
	struct model_opts xo = m->opt;
	xo.t_max = xo.t_sub = (int)T;
	model_mem_reserve(hp, &xo, 1, &r);
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

void moe_free(struct model *m)
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
	int rc = model_bind_layer(m, l, p, &nw, b->err, sizeof(b->err));
	if (rc || !nw.router.data)
		return rc;
	int E = hp->n_experts, K = hp->n_experts_used;
	rc = b->ops->matmul(b, rs->rl, rs->h, &nw.router, model_opt(&nw.b_router), n);
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
	if (!m->xb || rs != &m->rs[0] || n > m->opt.moe_cpu_t || E < 1)
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
	rc = model_bind_layer(m, l, p, &w, err, errlen);
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
int moe_range(struct model *m, struct model_rs *rs, int l, const struct layer_weights *w, float *x, int t0, int n)
{
	const struct layout_hparams *hp = m->hp;
	struct backend *b = rs->b;
	const struct backend_ops *op = b->ops;
	int E = hp->n_experts, K = hp->n_experts_used;
	int64_t D = hp->d_model, Fe = hp->expert_ffn;
	int rc = op->matmul(b, rs->rl, rs->h, &w->router, model_opt(&w->b_router), n);
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

void moe_count(struct model *m, int l, int T)
{
	uint64_t one = expert_bytes(m, l), E = (uint64_t)m->hp->n_experts, n = 0;
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

void moe_stats(const struct model *m, struct model_moe_stats *st)
{
	const struct expert_cache *ec = &m->w.ec;
	*st = m->moe;
	st->uploads = m->w.exp_uploads;
	st->routed_uploads = m->w.routed && !m->b->ops->host_memory;
	st->cache_entries = ec->n;
	st->cache_hits = ec->hits;
	st->cache_misses = ec->misses;
	st->cache_fills = ec->fills;
	st->cache_evictions = ec->evictions;
	st->cache_refused = ec->refused;
	st->pred_uploads = m->w.pred_uploads;
	st->expert_h2d = m->w.exp_h2d;
	st->cpu_mode = m->xb ? m->plan.moe_cpu : MOE_CPU_OFF;
}
