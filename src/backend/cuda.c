/*
 * backend_cuda.c: the CUDA backend (built when nvcc exists). Everything it puts on the GPU comes from one
 * arena: at creation it measures what the CUDA context and cuBLAS took (cudaMemGetInfo), then takes the
 * rest of the --vram budget in a single cudaMalloc, and alloc()/free() are a first-fit allocator inside
 * it, so the budget cannot be exceeded by ferry's own allocations and peak use is exact.
 *
 * Two streams: compute (every op, in call order) and copy (weight uploads from pinned host buffers).
 * Fences are CUDA events (no timing) recorded on one stream and waited on by the other. Ops are launched
 * through src/kernels/cuda/cuda_ops.h and never synchronize; download() and sync() do.
 *
 * Step state: positions, page tables and the parts of every range go up in one copy per step (step_begin);
 * RoPE frequency
 * tables are cached on the device by content (they change only with dynamic NTK scaling).
 */
#ifdef FERRY_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_blas.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_probe.h"
#include "layout/layout.h"

#define ARENA_ALIGN 256
#define ROPE_CACHE 4
#define GRAPHS 8         /* step graphs kept: batch sizes x attention splits, the least recently replayed goes */
#define GRAPH_T_MAX CUDA_MATVEC_T_MAX /* the largest step graphed: decode batches, no cuBLAS inside */
#define GRAPH_REFUSALS 3 /* captures refused (an upload inside) before graphs are turned off */

struct arena_block {
	size_t off, size;
};

struct rope_cached {
	int n;
	double host[ROPE_MAX_FREQS];
	double *dev;
};

/* One attention call of a captured step: its arguments and the key splits it launched (its grid's depth,
 * which follows the step's host values max_pos and max_part: a graph is replayed only where every call would
 * launch the same splits, so replayed and plain steps compute the same sums in the same order). */
struct graph_att {
	float *out;
	const float *q;
	struct kv_layer kv;
	int H, window;
	float scale;
	const float *sinks;
	int64_t nsplit;
};

/* A step graph (FERRY_CUDA_GRAPH=1): the ops of a resident decode step's layers, captured once per owner,
 * step shape (T tokens in n_parts parts, the longest part) and attention splits, replayed after step_begin
 * has uploaded that step's positions and page tables (the kernels read them from device memory). */
struct step_graph {
	cudaGraphExec_t exec; /* NULL: a free entry */
	const void *owner;
	void *key; /* graph_begin's key, key_bytes */
	size_t key_bytes;
	int T, n_parts, max_part;
	struct graph_att *att;
	int n_att, cap_att;
	unsigned long long used; /* graph_clock at its latest replay */
};

struct cuda_state {
	cudaStream_t compute, copy;
	double pace_bps;             /* --h2d-limit (0: none) */
	unsigned long long *pace_mark; /* device: the clock noted before the latest paced chunk */
	cublasHandle_t blas;
	const struct cuda_blas *blas_fn;
	char *arena;
	size_t arena_bytes, used, peak;
	struct arena_block *blocks; /* allocated, sorted by offset */
	int n_blocks, cap_blocks;
	struct cuda_ctx ctx;
	void *blas_ws;
	float *d_topv;       /* top_k results [1024] */
	int *d_moe;          /* mixture of experts: ids [moe_cap], then weights (floats) [moe_cap] */
	int moe_cap;         /* t_ops x experts per token of the reservations */
	int *d_topi;
	/* the step's arrays, uploaded at once by step_begin: positions [T], the page tables of every group,
	 * then each range's parts (step_range_parts) for ranges starting at multiples of t_ops */
	int *d_step, *h_step;
	size_t step_cap;     /* ints */
	float *h_embed;      /* embedding rows converted on the host, [t_max * d_model] */
	size_t embed_cap;    /* floats */
	int t_max, t_ops;    /* of the reservations: the most tokens, the latest's tokens per op */
	int n_ranges_cap;    /* ranges[] entries */
	int step_t_ops;      /* the current step's tokens per op (step_desc.t_ops, else t_ops) */
	struct range_meta {
		int off, n_parts, max_pos, max_part;
	} *ranges;
	struct step_desc step;
	int tables_off;      /* ints, where the page tables start */
	int t0, T, range;    /* the current range */
	struct rope_cached rope[ROPE_CACHE];
	int rope_next;
	cudaEvent_t *fences;
	int n_fences;
	bool graph_on;       /* FERRY_CUDA_GRAPH=1 */
	int capturing;       /* 1 while a step graph is captured, 2 once an entry refused it */
	int refusals;
	struct step_graph graphs[GRAPHS], cap; /* cap: the one being captured */
	unsigned long long graph_clock;
	struct backend_mem mem;
};

static struct cuda_state *st(struct backend *b)
{
	return b->impl;
}

/* A failed CUDA runtime call: its name and the error into b->err, -EIO. */
static int cuda_fail(struct backend *b, const char *what, cudaError_t e)
{
	snprintf(b->err, sizeof(b->err), "%s: %s", what, cudaGetErrorString(e));
	return -EIO;
}

#define CK(b, call)                                                                                             \
	do {                                                                                                    \
		cudaError_t e_ = (call);                                                                        \
		if (e_ != cudaSuccess)                                                                          \
			return cuda_fail((b), #call, e_);                                               \
	} while (0)

/* An entry that cannot be recorded into a step graph, called while one is captured: the capture is refused
 * (graph_end says -EAGAIN and the caller issues the ops again plainly). */
static int refuse_capture(struct backend *b, const char *what)
{
	st(b)->capturing = 2;
	snprintf(b->err, sizeof(b->err), "%s inside a CUDA graph capture", what);
	return -EAGAIN;
}

#define NO_CAPTURE(b, what)                                                                                     \
	do {                                                                                                    \
		if (st(b)->capturing)                                                                           \
			return refuse_capture((b), (what));                                                     \
	} while (0)

/* A kernel launcher's result: its message into b->err. */
static int op_rc(struct backend *b, int rc)
{
	if (rc)
		snprintf(b->err, sizeof(b->err), "%s", st(b)->ctx.err);
	return rc;
}

static void sample_device_use(struct cuda_state *s)
{
	size_t fr = 0, tot = 0;
	if (cudaMemGetInfo(&fr, &tot) == cudaSuccess && (int64_t)(tot - fr) > s->mem.device_used_peak)
		s->mem.device_used_peak = (int64_t)(tot - fr);
}

static void *cu_alloc(struct backend *b, size_t bytes)
{
	struct cuda_state *s = st(b);
	size_t need = (bytes ? bytes : 1) + ARENA_ALIGN - 1;
	need -= need % ARENA_ALIGN;
	if (s->n_blocks == s->cap_blocks) {
		int cap = s->cap_blocks ? 2 * s->cap_blocks : 64;
		struct arena_block *nb = realloc(s->blocks, sizeof(*nb) * (size_t)cap);
		if (!nb)
			return NULL;
		s->blocks = nb;
		s->cap_blocks = cap;
	}
	size_t at = 0;
	int i = 0;
	for (; i < s->n_blocks; i++) { /* first gap that fits */
		if (s->blocks[i].off - at >= need)
			break;
		at = s->blocks[i].off + s->blocks[i].size;
	}
	if (at + need > s->arena_bytes) {
		snprintf(b->err, sizeof(b->err), "device arena of %zu bytes has no room for %zu more (%zu in use)",
			 s->arena_bytes, need, s->used);
		return NULL;
	}
	memmove(&s->blocks[i + 1], &s->blocks[i], sizeof(*s->blocks) * (size_t)(s->n_blocks - i));
	s->blocks[i] = (struct arena_block){at, need};
	s->n_blocks++;
	s->used += need;
	s->peak = s->used > s->peak ? s->used : s->peak;
	return s->arena + at;
}

static void cu_free(struct backend *b, void *p)
{
	struct cuda_state *s = st(b);
	if (!p)
		return;
	size_t off = (size_t)((char *)p - s->arena);
	for (int i = 0; i < s->n_blocks; i++)
		if (s->blocks[i].off == off) {
			s->used -= s->blocks[i].size;
			memmove(&s->blocks[i], &s->blocks[i + 1], sizeof(*s->blocks) * (size_t)(s->n_blocks - i - 1));
			s->n_blocks--;
			return;
		}
	FERRY_ASSERT(!"cu_free: pointer not from the arena");
}

/* Every step graph forgotten: the buffers they captured moved, or a table they read changed. */
static void graphs_drop(struct cuda_state *s)
{
	for (int i = 0; i < GRAPHS; i++) {
		if (s->graphs[i].exec)
			cudaGraphExecDestroy(s->graphs[i].exec);
		s->graphs[i].exec = NULL;
	}
}

static void cu_destroy(struct backend *b)
{
	struct cuda_state *s = st(b);
	if (s) {
		if (s->compute)
			cudaStreamSynchronize(s->compute);
		if (s->copy)
			cudaStreamSynchronize(s->copy);
		graphs_drop(s);
		free(s->cap.att);
		for (int i = 0; i < s->n_fences; i++)
			cudaEventDestroy(s->fences[i]);
		free(s->fences);
		if (s->blas)
			s->blas_fn->destroy(s->blas);
		if (s->arena)
			cudaFree(s->arena);
		if (s->compute)
			cudaStreamDestroy(s->compute);
		if (s->copy)
			cudaStreamDestroy(s->copy);
		free(s->blocks);
		free(s->h_step);
		free(s->h_embed);
		free(s->ranges);
		for (int i = 0; i < GRAPHS; i++)
			free(s->graphs[i].att), free(s->graphs[i].key);
		free(s->cap.key);
		free(s);
	}
	free(b);
}

static bool cu_supports(struct backend *b, enum op op, int fmt)
{
	(void)b;
	if (op == OP_MATMUL)
		return cuda_fmt_supported(fmt);
	if (op == OP_RMSNORM)
		return fmt == WFMT_F32 || fmt == WFMT_F16 || fmt == WFMT_BF16;
	if (op == OP_EMBED)
		return cpu_fmt_supported(fmt);
	return op < OP_COUNT;
}

/* Host -> device on the compute stream. From pageable memory the call returns once the source has been
 * staged, so the caller may reuse it at once (CUDA's documented behaviour for pageable copies). */
static int cu_upload(struct backend *b, void *dst, const void *src, size_t n)
{
	NO_CAPTURE(b, "an upload");
	cuda_xq_forget(&st(b)->ctx); /* dst may be the x whose 8-bit copy the matvec kept */
	CK(b, cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, st(b)->compute));
	return 0;
}

static int cu_download(struct backend *b, void *dst, const void *src, size_t n)
{
	NO_CAPTURE(b, "a download");
	CK(b, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, st(b)->compute));
	CK(b, cudaStreamSynchronize(st(b)->compute));
	sample_device_use(st(b));
	return 0;
}

static int cu_sync(struct backend *b)
{
	NO_CAPTURE(b, "a sync");
	CK(b, cudaStreamSynchronize(st(b)->compute));
	CK(b, cudaStreamSynchronize(st(b)->copy));
	sample_device_use(st(b));
	return 0;
}

/* The matmul's GEMM path dequantizes at least this many weight rows at a time (192 MiB of bf16 for the
 * widest rows; narrower matrices take more rows in the same space): a chunk of a few thousand rows gives
 * cuBLAS enough tiles to fill every multiprocessor, where ~1000 rows left half of an H200 idle. */
static size_t gemm_rows_for(int64_t max_row)
{
	size_t rows = (size_t)((192u << 20) / (2 * (size_t)(max_row > 0 ? max_row : 1)));
	rows = rows < 1024 ? 1024 : rows > 8192 ? 8192 : rows;
	return rows - rows % 64;
}

/* The kernels' workspace: the largest of the matmul's, the attention's and the top-k's (they never run at
 * once). FERRY_MATMUL=blas takes the GEMM path at every T, so its workspace whatever t_ops. */
static size_t ws_bytes(const struct cuda_state *s, const struct backend_reserve *r)
{
	int t_mm = s->ctx.mm_mode == CUDA_MM_BLAS && r->t_ops <= CUDA_MATVEC_T_MAX ? CUDA_MATVEC_T_MAX + 1 : r->t_ops;
	size_t mm = cuda_matmul_ws_bytes(t_mm, r->max_row, gemm_rows_for(r->max_row));
	size_t at = cuda_attention_ws_bytes(r->t_ops, r->max_ctx, r->n_heads, r->head_dim);
	size_t tk = cuda_topk_ws_bytes();
	mm = mm > at ? mm : at;
	return mm > tk ? mm : tk;
}

/* Ints of the step arrays: positions, page tables, and per range at most 3 per token plus one. */
static size_t step_ints(const struct backend_reserve *r)
{
	int n_ranges = (r->t_max + r->t_ops - 1) / r->t_ops;
	return (size_t)r->t_max * (6 + KV_TREE_WORDS) + (size_t)n_ranges + 2 +
	       (size_t)r->n_groups * (size_t)r->max_seqs * (size_t)r->max_pages;
}

static size_t cu_reserve_bytes(struct backend *b, const struct backend_reserve *r)
{
	size_t moe = r->n_experts_used ? 2 * sizeof(int) * (size_t)r->t_ops * (size_t)r->n_experts_used + ARENA_ALIGN : 0;
	return ws_bytes(st(b), r) + step_ints(r) * sizeof(int) + 2 * ARENA_ALIGN + moe;
}

static int cu_reserve(struct backend *b, const struct backend_reserve *r)
{
	struct cuda_state *s = st(b);
	size_t ws = ws_bytes(s, r), ints = step_ints(r);
	int n_ranges = (r->t_max + r->t_ops - 1) / r->t_ops;
	/* Grows only: models sharing the backend (a resident draft beside its target) reserve in turn, and
	 * each step names its own tokens per op (step_desc.t_ops). */
	if (ws > s->ctx.ws_bytes || ints > s->step_cap)
		graphs_drop(s); /* the workspace or the step arrays move */
	if (ws > s->ctx.ws_bytes) {
		cu_free(b, s->ctx.ws);
		s->ctx.ws = cu_alloc(b, ws);
		s->ctx.ws_bytes = s->ctx.ws ? ws : 0;
	}
	if (ints > s->step_cap) {
		cu_free(b, s->d_step);
		free(s->h_step);
		s->d_step = cu_alloc(b, ints * sizeof(int));
		s->h_step = malloc(ints * sizeof(int));
		s->step_cap = s->d_step && s->h_step ? ints : 0;
	}
	int moe = r->t_ops * r->n_experts_used;
	if (moe > s->moe_cap) {
		cu_free(b, s->d_moe);
		s->d_moe = cu_alloc(b, 2 * sizeof(int) * (size_t)moe);
		s->moe_cap = s->d_moe ? moe : 0;
		if (!s->d_moe) {
			snprintf(b->err, sizeof(b->err), "device routing buffer of %d tokens x experts does not fit", moe);
			return -ENOMEM;
		}
	}
	if (n_ranges > s->n_ranges_cap) {
		free(s->ranges);
		s->ranges = malloc(sizeof(*s->ranges) * (size_t)n_ranges);
		s->n_ranges_cap = s->ranges ? n_ranges : 0;
	}
	if ((ws && !s->ctx.ws) || !s->d_step || !s->h_step || !s->ranges) {
		snprintf(b->err, sizeof(b->err), "device workspace of %zu bytes does not fit the arena", ws);
		return -ENOMEM;
	}
	s->t_max = r->t_max > s->t_max ? r->t_max : s->t_max;
	s->t_ops = r->t_ops;
	size_t embed = (size_t)r->t_max * (size_t)r->d_model;
	if (embed > s->embed_cap) {
		float *e = malloc(sizeof(float) * embed);
		if (!e) {
			snprintf(b->err, sizeof(b->err), "out of host memory for %zu embedding values", embed);
			return -ENOMEM;
		}
		free(s->h_embed);
		s->h_embed = e;
		s->embed_cap = embed;
	}
	s->ctx.gemm_rows = gemm_rows_for(r->max_row);
	return 0;
}

static int cu_step_range(struct backend *b, int t0, int n)
{
	struct cuda_state *s = st(b);
	int to = s->step_t_ops, last = s->step.T - t0 < to ? s->step.T - t0 : to;
	if (t0 < 0 || t0 >= s->step.T || t0 % to || n != last) {
		snprintf(b->err, sizeof(b->err), "token range %d+%d is not a range of %d of the step of %d", t0, n, to,
			 s->step.T);
		return -EINVAL;
	}
	s->t0 = t0;
	s->T = n;
	s->range = t0 / to;
	return 0;
}

static int cu_step_begin(struct backend *b, const struct step_desc *d)
{
	struct cuda_state *s = st(b);
	NO_CAPTURE(b, "a step");
	size_t tables = (size_t)d->n_groups * (size_t)d->n_rows * (size_t)d->max_pages;
	int to = d->t_ops > 0 ? d->t_ops : s->t_ops, n_ranges = (d->T + to - 1) / to;
	if (d->T > s->t_max || n_ranges > s->n_ranges_cap ||
	    (size_t)d->T * (6 + KV_TREE_WORDS) + (size_t)n_ranges + 2 + tables > s->step_cap) {
		snprintf(b->err, sizeof(b->err), "step of %d tokens (%zu page-table entries) exceeds the reservation of %d",
			 d->T, tables, s->t_max);
		return -ENOSPC;
	}
	s->step = *d;
	s->step_t_ops = to;
	int *h = s->h_step;
	/* positions [T], logical positions [T], tree bases [T], ancestor masks [T * KV_TREE_WORDS] */
	size_t T = (size_t)d->T;
	memcpy(h, d->pos, sizeof(int) * T);
	memcpy(h + T, d->lpos ? d->lpos : d->pos, sizeof(int) * T);
	for (size_t t = 0; t < T; t++)
		h[2 * T + t] = d->tree_base ? d->tree_base[t] : KV_TREE_NONE;
	if (d->tree_mask)
		memcpy(h + 3 * T, d->tree_mask, sizeof(int) * T * KV_TREE_WORDS);
	else
		memset(h + 3 * T, 0, sizeof(int) * T * KV_TREE_WORDS);
	size_t at = T * (3 + KV_TREE_WORDS);
	s->tables_off = (int)at;
	for (int g = 0; g < d->n_groups; g++, at += (size_t)d->n_rows * (size_t)d->max_pages)
		memcpy(h + at, d->pages[g], sizeof(int) * (size_t)d->n_rows * (size_t)d->max_pages);
	for (int r = 0; r < n_ranges; r++) {
		int t0 = r * to, n = d->T - t0 < to ? d->T - t0 : to;
		struct range_meta *m = &s->ranges[r];
		m->off = (int)at;
		int *pt = h + at, *pr = pt + n + 1, *tp = pr + n + 1;
		m->n_parts = step_range_parts(d, t0, n, pt, pr, tp, &m->max_pos, &m->max_part);
		/* packed: part_t0 [n_parts + 1], part_row [n_parts], tok_part [n] */
		memmove(pt + m->n_parts + 1, pr, sizeof(int) * (size_t)m->n_parts);
		memmove(pt + 2 * m->n_parts + 1, tp, sizeof(int) * (size_t)n);
		at += (size_t)(2 * m->n_parts + 1 + n);
	}
	int rc = cu_upload(b, s->d_step, h, sizeof(int) * at);
	return rc ? rc : cu_step_range(b, 0, d->T < to ? d->T : to);
}

/* The current range as the KV kernels see it (device arrays), with the page table of the layer's group. */
static struct kv_batch batch_of(struct backend *b, const struct kv_layer *kv)
{
	struct cuda_state *s = st(b);
	const struct range_meta *m = &s->ranges[s->range];
	const int *base = s->d_step + m->off;
	return (struct kv_batch){.T = s->T, .n_parts = m->n_parts, .part_t0 = base, .part_row = base + m->n_parts + 1,
				 .tok_part = base + 2 * m->n_parts + 1, .pos = s->d_step + s->t0,
				 .pages = s->d_step + s->tables_off + (size_t)kv->group * (size_t)s->step.n_rows * (size_t)s->step.max_pages,
				 .max_pages = s->step.max_pages, .max_pos = m->max_pos, .max_part = m->max_part,
				 .lpos = s->d_step + s->step.T + s->t0, .tree_base = s->d_step + 2 * s->step.T + s->t0,
				 .tree_mask = (const uint32_t *)(s->d_step + 3 * s->step.T) + (size_t)s->t0 * KV_TREE_WORDS};
}

static int cu_rmsnorm(struct backend *b, float *y, const float *x, const struct tensor *w, int T, float eps)
{
	return op_rc(b, cuda_rmsnorm(&st(b)->ctx, y, x, w->data, w->fmt, T, (int)w->cols, eps));
}

static int cu_matmul(struct backend *b, float *y, const float *x, const struct tensor *W, const struct tensor *bias,
		     int T)
{
	return op_rc(b, cuda_matmul(&st(b)->ctx, y, x, W->data, W->fmt, W->rows, W->cols, bias ? bias->data : NULL,
				    bias ? bias->fmt : 0, T));
}

/* The device copy of a frequency table, uploaded when its content is new (a cache of a few tables, so
 * the global and the sliding-window rope of a step never evict each other). */
static const double *rope_table(struct backend *b, const struct rope_freqs *f)
{
	struct cuda_state *s = st(b);
	for (int i = 0; i < ROPE_CACHE; i++)
		if (s->rope[i].dev && s->rope[i].n == f->n && !memcmp(s->rope[i].host, f->inv_freq, sizeof(double) * (size_t)f->n))
			return s->rope[i].dev;
	struct rope_cached *c = &s->rope[s->rope_next];
	if (s->capturing) { /* a new table: taking a slot would change what a kept graph reads */
		refuse_capture(b, "a new RoPE table");
		return NULL;
	}
	graphs_drop(s);
	s->rope_next = (s->rope_next + 1) % ROPE_CACHE;
	if (!c->dev && !(c->dev = cu_alloc(b, sizeof(double) * ROPE_MAX_FREQS)))
		return NULL;
	c->n = f->n;
	memcpy(c->host, f->inv_freq, sizeof(double) * (size_t)f->n);
	if (cu_upload(b, c->dev, c->host, sizeof(double) * (size_t)f->n)) {
		c->n = 0;
		return NULL;
	}
	return c->dev;
}

static int cu_rope(struct backend *b, float *x, int n_heads, int Dh, const struct rope_freqs *f)
{
	const double *inv = rope_table(b, f);
	if (!inv)
		return -ENOMEM;
	struct cuda_state *s = st(b);
	return op_rc(b, cuda_rope(&s->ctx, x, s->d_step + s->step.T + s->t0, s->T, n_heads, Dh, inv, f->mscale, f->neox));
}

static int cu_hadamard(struct backend *b, float *x, int64_t n)
{
	return op_rc(b, cuda_hadamard32(&st(b)->ctx, x, n));
}

static int cu_kv_store(struct backend *b, const struct kv_layer *kv, const float *k, const float *v)
{
	struct kv_batch bt = batch_of(b, kv);
	return op_rc(b, cuda_kv_store(&st(b)->ctx, kv, k, v, &bt));
}

static int cu_attention(struct backend *b, float *out, const float *q, const struct kv_layer *kv, int H, int window,
			float scale, const float *sinks)
{
	struct cuda_state *s = st(b);
	struct kv_batch bt = batch_of(b, kv);
	if (s->capturing == 1) { /* what a replay must find again */
		struct step_graph *g = &s->cap;
		if (g->n_att == g->cap_att) {
			int cap = g->cap_att ? 2 * g->cap_att : 64;
			struct graph_att *na = realloc(g->att, sizeof(*na) * (size_t)cap);
			if (!na)
				return refuse_capture(b, "out of host memory for the attention calls");
			g->att = na, g->cap_att = cap;
		}
		struct graph_att *a = &g->att[g->n_att++];
		*a = (struct graph_att){out, q, *kv, H, window, scale, sinks, 0};
		int rc = cuda_attention_splits(&s->ctx, &a->nsplit, out, q, kv, &bt, H, window, scale, sinks);
		if (rc)
			return op_rc(b, rc);
	}
	return op_rc(b, cuda_attention(&s->ctx, out, q, kv, &bt, H, window, scale, sinks));
}

static int cu_kv_move(struct backend *b, const struct kv_layer *kv, const int *pages, int n, const int *from,
		      const int *to)
{
	NO_CAPTURE(b, "a KV move");
	return op_rc(b, cuda_kv_move(&st(b)->ctx, kv, pages, n, from, to));
}

/* The affine key rows (a4, a5, ka5v4; issue 23, branch kv4) have not yet run on a GPU: their CUDA store and
 * attention are taken only with FERRY_KV_UNVERIFIED=1 (the GPU tests set it) until test_cuda_ops and
 * test_cuda_model pass there */
static bool cu_kv_supports(int fmt)
{
	if (fmt == KV_A4 || fmt == KV_A5 || fmt == KV_KA5V4) {
		const char *v = getenv("FERRY_KV_UNVERIFIED");
		if (!v || strcmp(v, "1"))
			return false;
	}
	return kv_fmt_on_cuda(fmt);
}

static int cu_glu(struct backend *b, float *y, const float *gate, const float *up, int64_t n, int act)
{
	return op_rc(b, cuda_glu(&st(b)->ctx, y, gate, up, n, act));
}

static int cu_embed(struct backend *b, float *x, const void *rows, int fmt, int64_t n, float scale)
{
	struct cuda_state *s = st(b);
	if ((size_t)n > s->embed_cap) {
		snprintf(b->err, sizeof(b->err), "%lld embedding values exceed the reservation of %zu", (long long)n,
			 s->embed_cap);
		return -ENOSPC;
	}
	if (cpu_row_to_f32(fmt, rows, s->h_embed, n)) {
		snprintf(b->err, sizeof(b->err), "embedding rows: format %s cannot be read on the host", wfmt_name(fmt));
		return -ENOTSUP;
	}
	if (scale > 0)
		for (int64_t i = 0; i < n; i++)
			s->h_embed[i] *= scale;
	return cu_upload(b, x, s->h_embed, sizeof(float) * (size_t)n);
}

static int cu_add(struct backend *b, float *y, const float *x, int64_t n)
{
	return op_rc(b, cuda_add(&st(b)->ctx, y, x, n));
}

static int moe_fits(struct backend *b, int n)
{
	if (n > st(b)->moe_cap) {
		snprintf(b->err, sizeof(b->err), "%d routed rows exceed the reservation of %d", n, st(b)->moe_cap);
		return -ENOSPC;
	}
	return 0;
}

static int cu_route(struct backend *b, int *ids, float *wts, const float *logits, int T, int E, int K, bool norm)
{
	NO_CAPTURE(b, "routing");
	struct cuda_state *s = st(b);
	int n = T * K, rc = moe_fits(b, n);
	float *d_w = (float *)(s->d_moe + s->moe_cap);
	rc = rc ? rc : op_rc(b, cuda_moe_route(&s->ctx, s->d_moe, d_w, logits, T, E, K, norm));
	if (rc)
		return rc;
	CK(b, cudaMemcpyAsync(ids, s->d_moe, sizeof(int) * (size_t)n, cudaMemcpyDeviceToHost, s->compute));
	CK(b, cudaMemcpyAsync(wts, d_w, sizeof(float) * (size_t)n, cudaMemcpyDeviceToHost, s->compute));
	CK(b, cudaStreamSynchronize(s->compute));
	return 0;
}

/* The host rows (and weights) go up into the routing buffer first; a later upload into it is queued after
 * the kernel that reads this one. */
static int cu_gather_rows(struct backend *b, float *dst, const float *src, const int *rows, int n, int64_t D)
{
	NO_CAPTURE(b, "a row gather");
	struct cuda_state *s = st(b);
	int rc = moe_fits(b, n);
	if (rc || n == 0)
		return rc;
	CK(b, cudaMemcpyAsync(s->d_moe, rows, sizeof(int) * (size_t)n, cudaMemcpyHostToDevice, s->compute));
	return op_rc(b, cuda_gather_rows(&s->ctx, dst, src, s->d_moe, n, D));
}

static int cu_scatter_add(struct backend *b, float *y, const float *src, const int *rows, const float *w, int n,
			  int64_t D)
{
	NO_CAPTURE(b, "a scatter-add");
	struct cuda_state *s = st(b);
	int rc = moe_fits(b, n);
	if (rc || n == 0)
		return rc;
	float *d_w = (float *)(s->d_moe + s->moe_cap);
	CK(b, cudaMemcpyAsync(s->d_moe, rows, sizeof(int) * (size_t)n, cudaMemcpyHostToDevice, s->compute));
	CK(b, cudaMemcpyAsync(d_w, w, sizeof(float) * (size_t)n, cudaMemcpyHostToDevice, s->compute));
	return op_rc(b, cuda_scatter_add(&s->ctx, y, src, s->d_moe, d_w, n, D));
}

static int cu_gather_cols(struct backend *b, float *dst, const float *src, const float *perm, int T, int64_t K)
{
	return op_rc(b, cuda_gather_cols(&st(b)->ctx, dst, src, perm, T, K));
}

static int cu_copy_cols(struct backend *b, float *dst, int64_t ld, const float *src, int64_t n, int T)
{
	if (T <= 0 || n <= 0)
		return 0;
	CK(b, cudaMemcpy2DAsync(dst, sizeof(float) * (size_t)ld, src, sizeof(float) * (size_t)n, sizeof(float) * (size_t)n,
				(size_t)T, cudaMemcpyDeviceToDevice, st(b)->compute));
	return 0;
}

static int cu_fence_alloc(struct backend *b, int n)
{
	struct cuda_state *s = st(b);
	int first = s->n_fences;
	if (n < 0)
		return -EINVAL;
	cudaEvent_t *f = realloc(s->fences, sizeof(*f) * (size_t)(first + n > 0 ? first + n : 1));
	if (!f)
		return -ENOMEM;
	s->fences = f;
	for (; s->n_fences < first + n; s->n_fences++) {
		CK(b, cudaEventCreateWithFlags(&s->fences[s->n_fences], cudaEventDisableTiming));
		/* recorded once so that a wait on a fence nothing has recorded yet passes at once */
		CK(b, cudaEventRecord(s->fences[s->n_fences], s->compute));
	}
	return first;
}

static cudaStream_t queue(struct cuda_state *s, enum backend_queue q)
{
	return q == BQ_COPY ? s->copy : s->compute;
}

static int cu_fence_record(struct backend *b, enum backend_queue q, int fence)
{
	NO_CAPTURE(b, "a fence");
	FERRY_ASSERT(fence >= 0 && fence < st(b)->n_fences);
	CK(b, cudaEventRecord(st(b)->fences[fence], queue(st(b), q)));
	return 0;
}

static int cu_fence_wait(struct backend *b, enum backend_queue q, int fence)
{
	FERRY_ASSERT(fence >= 0 && fence < st(b)->n_fences);
	/* The compute queue waiting for the copy queue inside a capture: the copy queue was idle when it began
	 * and records nothing during it (fence_record and copies refuse it), so the fence has passed. */
	if (st(b)->capturing)
		return q == BQ_COMPUTE ? 0 : refuse_capture(b, "a wait on the copy queue");
	CK(b, cudaStreamWaitEvent(queue(st(b), q), st(b)->fences[fence], 0));
	return 0;
}

static bool cu_fence_done(struct backend *b, int fence)
{
	cudaError_t e = cudaEventQuery(st(b)->fences[fence]);
	if (e == cudaErrorNotReady)
		return false;
	return true; /* done, or failed: a failed copy is reported by the next synchronizing call */
}

/* --h2d-limit: copies in chunks, each chunk held to its bytes at the paced rate (pace.cu) */
#define PACE_CHUNK (8u << 20)

static int cu_copy_async(struct backend *b, void *dst, const void *src, size_t n)
{
	NO_CAPTURE(b, "a copy");
	struct cuda_state *s = st(b);
	if (s->pace_bps <= 0) {
		CK(b, cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, s->copy));
		return 0;
	}
	for (size_t at = 0; at < n; at += PACE_CHUNK) {
		size_t c = n - at < PACE_CHUNK ? n - at : PACE_CHUNK;
		int rc = cuda_pace(s->copy, s->pace_mark, 0, 0);
		CK(b, cudaMemcpyAsync((char *)dst + at, (const char *)src + at, c, cudaMemcpyHostToDevice, s->copy));
		rc = rc ? rc : cuda_pace(s->copy, s->pace_mark, 1, (unsigned long long)((double)c / s->pace_bps * 1e9));
		if (rc) {
			snprintf(b->err, sizeof(b->err), "copy pacing: %s", cudaGetErrorString(cudaGetLastError()));
			return -EIO;
		}
	}
	return 0;
}

static int cu_pace(struct backend *b, double bytes_per_s)
{
	struct cuda_state *s = st(b);
	if (!s->pace_mark && !(s->pace_mark = cu_alloc(b, sizeof(unsigned long long))))
		return -ENOMEM;
	s->pace_bps = bytes_per_s;
	return 0;
}

static int cu_copy_d2h_async(struct backend *b, void *dst, const void *src, size_t n)
{
	NO_CAPTURE(b, "a copy");
	CK(b, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, st(b)->copy));
	return 0;
}

static void *cu_host_alloc(struct backend *b, size_t bytes)
{
	void *p = NULL;
	if (cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault) != cudaSuccess) {
		snprintf(b->err, sizeof(b->err), "cudaHostAlloc of %zu bytes failed", bytes);
		return NULL;
	}
	return p;
}

static void cu_host_free(struct backend *b, void *p)
{
	(void)b;
	if (p)
		cudaFreeHost(p);
}

static int cu_top_k(struct backend *b, const float *logits, int V, int k, float *vals, int *idx)
{
	NO_CAPTURE(b, "a top-k");
	struct cuda_state *s = st(b);
	int rc = op_rc(b, cuda_topk(&s->ctx, s->d_topv, s->d_topi, logits, V, k));
	if (rc)
		return rc;
	CK(b, cudaMemcpyAsync(vals, s->d_topv, sizeof(float) * (size_t)k, cudaMemcpyDeviceToHost, s->compute));
	CK(b, cudaMemcpyAsync(idx, s->d_topi, sizeof(int) * (size_t)k, cudaMemcpyDeviceToHost, s->compute));
	CK(b, cudaStreamSynchronize(s->compute));
	sample_device_use(s);
	return 0;
}

static void cu_mem(struct backend *b, struct backend_mem *m)
{
	struct cuda_state *s = st(b);
	*m = s->mem;
	m->arena = (int64_t)s->arena_bytes;
	m->arena_used = (int64_t)s->used;
	m->arena_peak = (int64_t)s->peak;
	m->launches = s->ctx.launches;
}

/* Whether graph g may run the current step: every attention call it holds would split its keys as it did. */
static bool graph_fits(struct backend *b, const struct step_graph *g)
{
	struct cuda_state *s = st(b);
	for (int i = 0; i < g->n_att; i++) {
		const struct graph_att *a = &g->att[i];
		struct kv_batch bt = batch_of(b, &a->kv);
		int64_t n = -1;
		if (cuda_attention_splits(&s->ctx, &n, a->out, a->q, &a->kv, &bt, a->H, a->window, a->scale, a->sinks) ||
		    n != a->nsplit)
			return false;
	}
	return true;
}

static int cu_graph_begin(struct backend *b, const void *owner, const void *key, size_t key_bytes)
{
	struct cuda_state *s = st(b);
	const struct range_meta *m = &s->ranges[0];
	/* one range of at most GRAPH_T_MAX tokens, no tree, the copy queue idle (its fences passed) */
	if (!s->graph_on || s->capturing || s->step.T > s->step_t_ops || s->step.T > GRAPH_T_MAX || s->step.tree_base ||
	    cudaStreamQuery(s->copy) != cudaSuccess)
		return 0;
	cuda_xq_forget(&s->ctx); /* the codes of a replay's last matvec are not the host's to know */
	s->graph_clock++;
	for (int i = 0; i < GRAPHS; i++) {
		struct step_graph *g = &s->graphs[i];
		if (g->exec && g->owner == owner && g->T == s->step.T && g->n_parts == m->n_parts &&
		    g->max_part == m->max_part && g->key_bytes == key_bytes && !memcmp(g->key, key, key_bytes) &&
		    graph_fits(b, g)) {
			CK(b, cudaGraphLaunch(g->exec, s->compute));
			g->used = s->graph_clock;
			s->mem.graph_replays++;
			return BACKEND_GRAPH_REPLAYED;
		}
	}
	s->cap.owner = owner, s->cap.T = s->step.T, s->cap.n_parts = m->n_parts, s->cap.max_part = m->max_part;
	s->cap.n_att = 0;
	void *k = realloc(s->cap.key, key_bytes ? key_bytes : 1);
	if (!k) {
		snprintf(b->err, sizeof(b->err), "out of host memory for a graph key of %zu bytes", key_bytes);
		return -ENOMEM;
	}
	memcpy(k, key, key_bytes);
	s->cap.key = k, s->cap.key_bytes = key_bytes;
	CK(b, cudaStreamBeginCapture(s->compute, cudaStreamCaptureModeThreadLocal));
	s->capturing = 1;
	return BACKEND_GRAPH_CAPTURING;
}

static int cu_graph_end(struct backend *b, int rc)
{
	struct cuda_state *s = st(b);
	cudaGraph_t graph = NULL;
	cudaGraphExec_t exec = NULL;
	cudaError_t e = cudaStreamEndCapture(s->compute, &graph);
	bool refused = s->capturing == 2;
	s->capturing = 0;
	cuda_xq_forget(&s->ctx);
	if (e == cudaSuccess && !refused && !rc)
		e = cudaGraphInstantiateWithFlags(&exec, graph, 0);
	if (graph)
		cudaGraphDestroy(graph);
	if (e != cudaSuccess || refused) {
		(void)cudaGetLastError(); /* a capture error is not the next launch's */
		if (e != cudaSuccess || ++s->refusals >= GRAPH_REFUSALS) {
			fprintf(stderr, "ferry: CUDA graphs off: %s\n",
				e != cudaSuccess ? cudaGetErrorString(e) : "steps keep refusing capture");
			s->graph_on = false;
		}
		return -EAGAIN;
	}
	if (rc)
		return 0;
	struct step_graph *g = &s->graphs[0];
	for (int i = 1; i < GRAPHS && g->exec; i++)
		if (!s->graphs[i].exec || s->graphs[i].used < g->used)
			g = &s->graphs[i];
	if (g->exec)
		cudaGraphExecDestroy(g->exec);
	struct step_graph keep = *g; /* its arrays are the next capture's */
	*g = s->cap;
	g->exec = exec;
	g->used = s->graph_clock;
	s->cap.att = keep.att, s->cap.cap_att = keep.cap_att, s->cap.n_att = 0;
	s->cap.key = keep.key, s->cap.key_bytes = 0;
	s->refusals = 0;
	s->mem.graph_captures++;
	CK(b, cudaGraphLaunch(exec, s->compute));
	return 0;
}

static const struct backend_ops cuda_backend_ops = {
	.name = "cuda",
	.host_memory = false,
	.kv_supports = cu_kv_supports,
	.destroy = cu_destroy,
	.supports = cu_supports,
	.alloc = cu_alloc,
	.free = cu_free,
	.upload = cu_upload,
	.download = cu_download,
	.sync = cu_sync,
	.reserve = cu_reserve,
	.reserve_bytes = cu_reserve_bytes,
	.fence_alloc = cu_fence_alloc,
	.fence_record = cu_fence_record,
	.fence_wait = cu_fence_wait,
	.fence_done = cu_fence_done,
	.copy_async = cu_copy_async,
	.copy_d2h_async = cu_copy_d2h_async,
	.host_alloc = cu_host_alloc,
	.host_free = cu_host_free,
	.pinned_name = "cudaHostAlloc",
	.pinned_alloc = cuda_host_alloc,
	.pinned_free = cuda_host_free,
	.mem = cu_mem,
	.top_k = cu_top_k,
	.pace = cu_pace,
	.step_begin = cu_step_begin,
	.step_range = cu_step_range,
	.kv_move = cu_kv_move,
	.embed = cu_embed,
	.rmsnorm = cu_rmsnorm,
	.matmul = cu_matmul,
	.rope = cu_rope,
	.hadamard = cu_hadamard,
	.kv_store = cu_kv_store,
	.attention = cu_attention,
	.glu = cu_glu,
	.add = cu_add,
	.route = cu_route,
	.gather_rows = cu_gather_rows,
	.scatter_add = cu_scatter_add,
	.gather_cols = cu_gather_cols,
	.copy_cols = cu_copy_cols,
	.graph_begin = cu_graph_begin,
	.graph_end = cu_graph_end,
};

#define LAZY_MARGIN ((int64_t)192 << 20)

/* cuBLAS gets its workspace from the arena (it would otherwise allocate its own outside the budget). */
#define BLAS_WS (32u << 20)

/* The kernel choices FERRY_MATMUL and FERRY_TOPK name (unset: the defaults), FERRY_XQ_REUSE=0 (the 8-bit
 * matvec quantizes x at every call, as before the reuse) and FERRY_MVQ_ALL=1 (the 8-bit matvec also for the
 * formats whose kernels have not run on a GPU yet: cuda_mvq_checked), for comparing the paths on one build: 0, or -EINVAL
 * with the one-line reason in err. */
static int env_modes(struct cuda_ctx *c, char *err, size_t errlen)
{
	static const char *const mm[] = {"auto", "old", "mma", "blas", "q8mma"}, *const tk[] = {"grid", "block"};
	const char *v = getenv("FERRY_MATMUL");
	c->mm_mode = CUDA_MM_AUTO;
	if (v && *v) {
		int i = 0;
		while (i < 5 && strcmp(v, mm[i]))
			i++;
		if (i == 5) {
			snprintf(err, errlen, "FERRY_MATMUL=%s: expected auto, old, mma, blas or q8mma", v);
			return -EINVAL;
		}
		c->mm_mode = i; /* the names in enum cuda_mm_mode order */
	}
	v = getenv("FERRY_TOPK");
	c->topk_mode = CUDA_TOPK_GRID;
	if (v && *v) {
		if (strcmp(v, tk[0]) && strcmp(v, tk[1])) {
			snprintf(err, errlen, "FERRY_TOPK=%s: expected grid or block", v);
			return -EINVAL;
		}
		c->topk_mode = strcmp(v, tk[0]) ? CUDA_TOPK_BLOCK : CUDA_TOPK_GRID;
	}
	v = getenv("FERRY_XQ_REUSE");
	if (v && *v && strcmp(v, "0") && strcmp(v, "1")) {
		snprintf(err, errlen, "FERRY_XQ_REUSE=%s: expected 0 or 1", v);
		return -EINVAL;
	}
	c->xq_reuse = !(v && !strcmp(v, "0"));
	v = getenv("FERRY_MVQ_ALL");
	c->mvq_all = v && !strcmp(v, "1");
	return 0;
}

/* FERRY_CUDA_GRAPH=1: resident decode steps replay captured graphs (off by default) */
static int env_graph(struct cuda_state *s, char *err, size_t errlen)
{
	const char *v = getenv("FERRY_CUDA_GRAPH");
	if (v && *v && strcmp(v, "0") && strcmp(v, "1")) {
		snprintf(err, errlen, "FERRY_CUDA_GRAPH=%s: expected 0 or 1", v);
		return -EINVAL;
	}
	s->graph_on = v && !strcmp(v, "1");
	return 0;
}

static int create(struct backend *b, int64_t vram, char *err, size_t errlen)
{
	struct cuda_state *s = st(b);
	struct cudaDeviceProp p;
	cudaError_t e = cudaSetDevice(0);
	e = e ? e : cudaGetDeviceProperties(&p, 0);
	e = e ? e : cudaFree(NULL); /* creates the context now, so its memory is counted below */
	e = e ? e : cudaStreamCreateWithFlags(&s->compute, cudaStreamNonBlocking);
	e = e ? e : cudaStreamCreateWithFlags(&s->copy, cudaStreamNonBlocking);
	if (e) {
		snprintf(err, errlen, "CUDA device 0: %s", cudaGetErrorString(e));
		return -ENODEV;
	}
	if (!(s->blas_fn = cuda_blas_get(err, errlen)))
		return -ENODEV;
	if (s->blas_fn->create(&s->blas) != CUBLAS_STATUS_SUCCESS || s->blas_fn->set_stream(s->blas, s->compute)) {
		snprintf(err, errlen, "cuBLAS could not be initialized on %s", p.name);
		return -ENODEV;
	}
	snprintf(s->mem.gpu, sizeof(s->mem.gpu), "%.80s (sm_%d%d, %d SMs, %.1f GiB)", p.name, p.major, p.minor,
		 p.multiProcessorCount, (double)p.totalGlobalMem / (1 << 30));
	size_t fr = 0, tot = 0;
	cudaMemGetInfo(&fr, &tot);
	if (vram <= 0) /* default: all the device memory that is free now, less a margin for the driver */
		vram = (int64_t)(tot - fr) + (int64_t)fr - (int64_t)(256u << 20);
	s->mem.budget = vram;
	s->mem.context = (int64_t)(tot - fr);
	s->mem.device_used_peak = s->mem.context;
	/* Not all of the rest: CUDA loads kernels lazily (cuBLAS's on their first GEMM) into device memory
	 * outside any allocation; 77 MB were seen on an H200 with a 70B-shaped model. */
	int64_t arena = vram - s->mem.context - LAZY_MARGIN;
	arena -= arena % (1 << 20);
	if (arena < (64 << 20) || (size_t)arena > fr) {
		snprintf(err, errlen,
			 "--vram %.2f GiB: the CUDA context already takes %.2f GiB and %.2f GiB are free on %s; "
			 "nothing is left for the model",
			 (double)vram / (1 << 30), (double)s->mem.context / (1 << 30), (double)fr / (1 << 30), p.name);
		if ((size_t)arena > fr)
			snprintf(err, errlen, "--vram %.2f GiB is more than the %.2f GiB free on %s", (double)vram / (1 << 30),
				 (double)(fr + (size_t)s->mem.context) / (1 << 30), p.name);
		return -ENOMEM;
	}
	if ((e = cudaMalloc((void **)&s->arena, (size_t)arena))) {
		snprintf(err, errlen, "cudaMalloc of the %.2f GiB arena: %s", (double)arena / (1 << 30), cudaGetErrorString(e));
		s->arena = NULL;
		return -ENOMEM;
	}
	s->arena_bytes = (size_t)arena;
	s->d_topv = cu_alloc(b, 1024 * sizeof(float));
	s->d_topi = cu_alloc(b, 1024 * sizeof(int));
	s->blas_ws = cu_alloc(b, BLAS_WS);
	if (!s->d_topv || !s->d_topi || !s->blas_ws || s->blas_fn->set_workspace(s->blas, s->blas_ws, BLAS_WS)) {
		snprintf(err, errlen, "cuBLAS workspace: %s", b->err);
		return -ENOMEM;
	}
	s->ctx = (struct cuda_ctx){.stream = s->compute, .cublas = s->blas, .cc = p.major * 10 + p.minor,
				   .n_sm = p.multiProcessorCount};
	if (env_modes(&s->ctx, err, errlen) || env_graph(s, err, errlen))
		return -EINVAL;
	sample_device_use(s);
	return 0;
}

int backend_cuda_create(struct backend **bp, int64_t vram, char *err, size_t errlen)
{
	struct backend *b = calloc(1, sizeof(*b));
	struct cuda_state *s = calloc(1, sizeof(*s));
	if (!b || !s) {
		free(b);
		free(s);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	b->ops = &cuda_backend_ops;
	b->impl = s;
	b->n_threads = 1;
	int rc = create(b, vram, err, errlen);
	if (rc) {
		cu_destroy(b);
		return rc;
	}
	*bp = b;
	return 0;
}
#endif
