/*
 * model_mem.c: the memory a model needs before it is made (model_mem_plan: activations, the KV pools by page
 * group, the backend's workspace; the planner weighs it against --vram) and the run state model_init makes
 * (model_rs_alloc), and the defaults of the options both read.
 * T tokens per step, S per op (t_sub), D model dim, Q = H*Dh, KV = Hkv*Dh, F the widest MLP, V vocab,
 * E experts, L logits rows.
 */
#include <string.h>

#include "engine/model_internal.h"

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

void model_opts_fill(struct model_opts *o)
{
	o->t_sub = t_sub_of(o);
	o->kv_page = page_of(o);
	o->max_seqs = seqs_of(o);
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

int model_mem_group(const struct model_mem *mm, int window)
{
	for (int g = 0; g < mm->n_groups; g++)
		if (mm->windows[g] == window)
			return g;
	return -1;
}

int64_t model_ffn_rows(const struct layout_hparams *hp)
{
	int64_t f = hp->ffn_dim;
	f = hp->n_experts && hp->expert_ffn > f ? hp->expert_ffn : f;
	return hp->n_experts && hp->shared_ffn > f ? hp->shared_ffn : f;
}

void model_mem_reserve(const struct layout_hparams *hp, const struct model_opts *o, int n_groups,
		       struct backend_reserve *r)
{
	int64_t D = hp->d_model, Q = (int64_t)hp->n_heads * hp->head_dim, F = model_ffn_rows(hp);
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
		 F = (uint64_t)model_ffn_rows(hp), V = (uint64_t)hp->vocab, E = (uint64_t)hp->n_experts;
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
			uint64_t pool = (uint64_t)mm->n_pages[model_mem_group(mm, hp->window[l])] *
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
	model_mem_reserve(hp, o, mm->n_groups, &r);
	mm->ws = b->ops->reserve_bytes ? b->ops->reserve_bytes(b, &r) : 0;
}

/* The run state on backend b for t_rows tokens per step, t_sub per op, head pieces of head_rows rows (0:
 * none); false when out of memory. */
bool model_rs_alloc(struct model_rs *rs, struct backend *b, const struct layout_hparams *hp, int t_rows, int t_sub,
		    int max_logits, int64_t head_rows, bool xp)
{
	size_t T = (size_t)t_rows, S = (size_t)t_sub, D = (size_t)hp->d_model,
	       Q = (size_t)hp->n_heads * (size_t)hp->head_dim, KV = (size_t)hp->n_kv_heads * (size_t)hp->head_dim,
	       F = (size_t)model_ffn_rows(hp), V = (size_t)hp->vocab, E = (size_t)hp->n_experts;
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

void model_rs_free(struct model_rs *rs)
{
	struct backend *b = rs->b;
	void *bufs[] = {rs->x, rs->h, rs->q, rs->att, rs->k, rs->v, rs->g, rs->u, rs->logits, rs->rl, rs->xe, rs->ye,
			rs->xp, rs->lp};
	for (size_t i = 0; b && i < sizeof(bufs) / sizeof(bufs[0]); i++)
		if (bufs[i])
			b->ops->free(b, bufs[i]);
	memset(rs, 0, sizeof(*rs));
}
