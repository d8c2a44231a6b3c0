/*
 * cpu.c: the CPU backend. Backend memory is host memory (64-byte aligned), uploads are copies,
 * and every op runs synchronously on OpenMP threads through kernels/cpu/.
 *
 * The emulated device (backend_cpu_device_create, FERRY_CPU_DEVICE=1): the same ops with host_memory
 * false, so the model takes the device path (plan with an arena, weights uploaded into device slots,
 * routed experts and the expert cache, host-KV staging) on a machine without a GPU. Its memory is a
 * budget of the heap (alloc fails past it), copies are memcpy at issue time and fences are always done:
 * every queue runs in call order, so the results are those of the CPU backend, byte for byte.
 */
#include <errno.h>
#include <omp.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/numa.h"
#include "base/threads.h"
#include "kernels/cpu/cpu_ops.h"
#include "layout/layout.h"

struct cpu_state {
	struct step_desc step;
	int t0, T;                      /* the current range */
	int *part_t0, *part_row, *tok_part; /* its parts, [step T + 1] each */
	int n_parts, max_pos, max_part, cap;
	float *scratch;     /* [n_threads][per_thread] */
	int64_t per_thread;
};

static struct cpu_state *st(struct backend *b)
{
	return b->impl;
}

static void cpu_destroy(struct backend *b)
{
	free(st(b)->scratch);
	free(st(b)->part_t0);
	free(st(b)->part_row);
	free(st(b)->tok_part);
	free(b->impl);
	free(b);
}

/* cpu_matmul's workspace (the quantized x) is the whole of scratch: this many floats per thread */
static int64_t matmul_per_thread(struct backend *b, int64_t K)
{
	return ((int64_t)cpu_matmul_ws_bytes(K) / 4 + b->n_threads - 1) / b->n_threads;
}

static int cpu_reserve(struct backend *b, const struct backend_reserve *r)
{
	int64_t att = cpu_attention_scratch(r->max_ctx, r->head_dim);
	int64_t per = r->max_row > att ? r->max_row : att;
	int64_t mm = matmul_per_thread(b, r->max_row);
	per = per > mm ? per : mm;
	if (per <= st(b)->per_thread)
		return 0;
	float *p = NULL;
	if (posix_memalign((void **)&p, 64, sizeof(float) * (size_t)per * (size_t)b->n_threads)) {
		snprintf(b->err, sizeof(b->err), "out of memory for %d x %lld floats of CPU workspace", b->n_threads,
			 (long long)per);
		return -ENOMEM;
	}
	free(st(b)->scratch);
	st(b)->scratch = p;
	st(b)->per_thread = per;
	return 0;
}

/* The workspace must hold n floats per thread; a step that needs more fails instead of overrunning it. */
static int need(struct backend *b, int64_t n)
{
	if (n <= st(b)->per_thread)
		return 0;
	snprintf(b->err, sizeof(b->err), "CPU workspace of %lld floats per thread is smaller than the %lld needed",
		 (long long)st(b)->per_thread, (long long)n);
	return -ENOSPC;
}

static bool cpu_supports(struct backend *b, enum op op, int fmt)
{
	(void)b;
	return op == OP_MATMUL || op == OP_RMSNORM || op == OP_EMBED ? cpu_fmt_supported(fmt) : op < OP_COUNT;
}

static void *cpu_alloc(struct backend *b, size_t bytes)
{
	(void)b;
	void *p = NULL;
	if (posix_memalign(&p, 64, bytes ? (bytes + 63) / 64 * 64 : 64))
		return NULL;
	return p;
}

static void cpu_free(struct backend *b, void *p)
{
	(void)b;
	free(p);
}

static int cpu_copy(struct backend *b, void *dst, const void *src, size_t n)
{
	(void)b;
	memcpy(dst, src, n);
	return 0;
}

static int cpu_sync(struct backend *b)
{
	(void)b;
	return 0;
}

static int cpu_step_range(struct backend *b, int t0, int n)
{
	struct cpu_state *s = st(b);
	if (t0 < 0 || n < 1 || t0 + n > s->step.T) {
		snprintf(b->err, sizeof(b->err), "token range %d+%d outside the step of %d", t0, n, s->step.T);
		return -EINVAL;
	}
	s->t0 = t0;
	s->T = n;
	s->n_parts = step_range_parts(&s->step, t0, n, s->part_t0, s->part_row, s->tok_part, &s->max_pos, &s->max_part);
	return 0;
}

static int cpu_step_begin(struct backend *b, const struct step_desc *d)
{
	struct cpu_state *s = st(b);
	if (d->T + 1 > s->cap) {
		int cap = d->T + 1;
		int *a = realloc(s->part_t0, sizeof(int) * (size_t)cap), *r = a ? realloc(s->part_row, sizeof(int) * (size_t)cap) : NULL;
		if (a)
			s->part_t0 = a;
		if (r)
			s->part_row = r;
		int *t = r ? realloc(s->tok_part, sizeof(int) * (size_t)cap) : NULL;
		if (!t) {
			snprintf(b->err, sizeof(b->err), "out of memory for a step of %d tokens", d->T);
			return -ENOMEM;
		}
		s->tok_part = t;
		s->cap = cap;
	}
	s->step = *d;
	return cpu_step_range(b, 0, d->T);
}

/* The range as the KV kernels see it, with the page table of the layer's group. */
static struct kv_batch batch_of(struct backend *b, const struct kv_layer *kv)
{
	struct cpu_state *s = st(b);
	return (struct kv_batch){.T = s->T, .n_parts = s->n_parts, .part_t0 = s->part_t0, .part_row = s->part_row,
				 .tok_part = s->tok_part, .pos = s->step.pos + s->t0, .pages = s->step.pages[kv->group],
				 .max_pages = s->step.max_pages, .max_pos = s->max_pos, .max_part = s->max_part,
				 .lpos = s->step.lpos ? s->step.lpos + s->t0 : NULL,
				 .tree_base = s->step.tree_base ? s->step.tree_base + s->t0 : NULL,
				 .tree_mask = s->step.tree_mask ? s->step.tree_mask + (size_t)s->t0 * KV_TREE_WORDS : NULL};
}

static int cpu_rmsnorm_op(struct backend *b, float *y, const float *x, const struct tensor *w, int T, float eps)
{
	int rc = need(b, w->cols);
	if (!rc)
		cpu_rmsnorm(y, x, w->data, w->fmt, T, (int)w->cols, eps, st(b)->scratch);
	return rc;
}

static int cpu_matmul_op(struct backend *b, float *y, const float *x, const struct tensor *W, const struct tensor *bias,
			 int T)
{
	int rc = need(b, matmul_per_thread(b, W->cols));
	if (!rc)
		cpu_matmul(y, x, W->data, W->fmt, bias ? bias->data : NULL, bias ? bias->fmt : 0, T, (int)W->rows,
			   (int)W->cols, st(b)->scratch);
	return rc;
}

static int cpu_rope_op(struct backend *b, float *x, int n_heads, int Dh, const struct rope_freqs *f)
{
	const int *pos = st(b)->step.lpos ? st(b)->step.lpos : st(b)->step.pos;
	cpu_rope(x, st(b)->T, n_heads, Dh, pos + st(b)->t0, f->inv_freq, f->mscale, f->neox);
	return 0;
}

static int cpu_hadamard_op(struct backend *b, float *x, int64_t n)
{
	if (n % KV_GROUP) {
		snprintf(b->err, sizeof(b->err), "hadamard: %lld values are not whole groups of %d", (long long)n, KV_GROUP);
		return -EINVAL;
	}
	cpu_hadamard32(x, n);
	return 0;
}

static int cpu_kv_store_op(struct backend *b, const struct kv_layer *kv, const float *k, const float *v)
{
	struct kv_batch bt = batch_of(b, kv);
	cpu_kv_store(kv, k, v, &bt);
	return 0;
}

static int cpu_attention_op(struct backend *b, float *out, const float *q, const struct kv_layer *kv, int H,
			    int window, float scale, const float *sinks)
{
	struct kv_batch bt = batch_of(b, kv);
	int rc = need(b, cpu_attention_scratch(bt.max_pos + 1, kv->Dh));
	if (!rc)
		cpu_attention(out, q, kv, &bt, H, window, scale, sinks, st(b)->scratch, st(b)->per_thread);
	return rc;
}

static int cpu_kv_move_op(struct backend *b, const struct kv_layer *kv, const int *pages, int n, const int *from,
			  const int *to)
{
	(void)b;
	kv_rows_move(kv, pages, n, from, to);
	return 0;
}

static bool cpu_kv_supports(int fmt)
{
	return fmt >= 0 && fmt < KV_FMT_COUNT;
}

static int cpu_glu_op(struct backend *b, float *y, const float *gate, const float *up, int64_t n, int act)
{
	if (act == ACT_SILU) {
		cpu_swiglu(y, gate, up, n);
	} else if (act == ACT_GELU_TANH) {
		cpu_geglu(y, gate, up, n);
	} else if (act == ACT_SWIGLU_OAI) {
		cpu_swiglu_oai(y, gate, up, n);
	} else {
		snprintf(b->err, sizeof(b->err), "activation %d is not supported by the cpu backend", act);
		return -ENOTSUP;
	}
	return 0;
}

static int cpu_embed_op(struct backend *b, float *x, const void *rows, int fmt, int64_t n, float scale)
{
	if (cpu_row_to_f32(fmt, rows, x, n)) {
		snprintf(b->err, sizeof(b->err), "embedding rows: format %s cannot be read on the host", wfmt_name(fmt));
		return -ENOTSUP;
	}
	if (scale > 0)
		for (int64_t i = 0; i < n; i++)
			x[i] *= scale;
	return 0;
}

static int cpu_add_op(struct backend *b, float *y, const float *x, int64_t n)
{
	(void)b;
	cpu_add(y, x, n);
	return 0;
}

/* a before b in the top-k order: larger value first, ties by lower id */
static bool topk_before(float va, int ia, float vb, int ib)
{
	return va > vb || (va == vb && ia < ib);
}

/* The k largest by a heap of the k best so far whose root is the worst of them, then sorted. */
static int cpu_top_k_op(struct backend *b, const float *logits, int V, int k, float *vals, int *idx)
{
	(void)b;
	int n = 0;
	for (int i = 0; i < V; i++) {
		float v = logits[i];
		if (n == k && !topk_before(v, i, vals[0], idx[0]))
			continue;
		int at;
		if (n < k) { /* sift up from the end */
			at = n++;
			while (at > 0 && topk_before(vals[(at - 1) / 2], idx[(at - 1) / 2], v, i)) {
				vals[at] = vals[(at - 1) / 2];
				idx[at] = idx[(at - 1) / 2];
				at = (at - 1) / 2;
			}
		} else { /* replace the root and sift down */
			at = 0;
			for (;;) {
				int c = 2 * at + 1;
				if (c >= n)
					break;
				if (c + 1 < n && topk_before(vals[c], idx[c], vals[c + 1], idx[c + 1]))
					c++;
				if (!topk_before(vals[c], idx[c], v, i))
					break;
				vals[at] = vals[c];
				idx[at] = idx[c];
				at = c;
			}
		}
		vals[at] = v;
		idx[at] = i;
	}
	for (int i = 1; i < n; i++) { /* insertion sort: k is at most 1024 */
		float v = vals[i];
		int id = idx[i], j = i;
		for (; j > 0 && topk_before(v, id, vals[j - 1], idx[j - 1]); j--) {
			vals[j] = vals[j - 1];
			idx[j] = idx[j - 1];
		}
		vals[j] = v;
		idx[j] = id;
	}
	return 0;
}

static int cpu_route_op(struct backend *b, int *ids, float *wts, const float *logits, int T, int E, int K, bool norm)
{
	(void)b;
	cpu_moe_route(ids, wts, logits, T, E, K, norm);
	return 0;
}

static int cpu_gather_rows_op(struct backend *b, float *dst, const float *src, const int *rows, int n, int64_t D)
{
	(void)b;
	cpu_gather_rows(dst, src, rows, n, D);
	return 0;
}

static int cpu_scatter_add_op(struct backend *b, float *y, const float *src, const int *rows, const float *w, int n,
			      int64_t D)
{
	(void)b;
	cpu_scatter_add(y, src, rows, w, n, D);
	return 0;
}

static int cpu_gather_cols_op(struct backend *b, float *dst, const float *src, const float *perm, int T, int64_t K)
{
	(void)b;
	cpu_gather_cols(dst, src, perm, T, K);
	return 0;
}

static int cpu_copy_cols_op(struct backend *b, float *dst, int64_t ld, const float *src, int64_t n, int T)
{
	(void)b;
	for (int t = 0; t < T; t++)
		memcpy(dst + (size_t)t * (size_t)ld, src + (size_t)t * (size_t)n, sizeof(float) * (size_t)n);
	return 0;
}

static const struct backend_ops cpu_ops = {
	.name = "cpu",
	.host_memory = true,
	.kv_supports = cpu_kv_supports,
	.destroy = cpu_destroy,
	.supports = cpu_supports,
	.alloc = cpu_alloc,
	.free = cpu_free,
	.upload = cpu_copy,
	.download = cpu_copy,
	.sync = cpu_sync,
	.reserve = cpu_reserve,
	.step_begin = cpu_step_begin,
	.step_range = cpu_step_range,
	.kv_move = cpu_kv_move_op,
	.embed = cpu_embed_op,
	.rmsnorm = cpu_rmsnorm_op,
	.matmul = cpu_matmul_op,
	.rope = cpu_rope_op,
	.hadamard = cpu_hadamard_op,
	.kv_store = cpu_kv_store_op,
	.attention = cpu_attention_op,
	.glu = cpu_glu_op,
	.add = cpu_add_op,
	.top_k = cpu_top_k_op,
	.route = cpu_route_op,
	.gather_rows = cpu_gather_rows_op,
	.scatter_add = cpu_scatter_add_op,
	.gather_cols = cpu_gather_cols_op,
	.copy_cols = cpu_copy_cols_op,
};

/* The emulated device's memory: a 64-byte header before each block holds its size, counted against the
 * budget. */
struct emu_state {
	struct cpu_state cpu; /* first: st() reads it */
	int64_t budget, used, peak;
	int n_fences;
};

static struct emu_state *emu(struct backend *b)
{
	return b->impl;
}

static void *emu_alloc(struct backend *b, size_t bytes)
{
	size_t n = (bytes ? (bytes + 63) / 64 * 64 : 64) + 64;
	if (emu(b)->used + (int64_t)n > emu(b)->budget) {
		snprintf(b->err, sizeof(b->err), "emulated device: %zu bytes over the %lld-byte budget (%lld used)", bytes,
			 (long long)emu(b)->budget, (long long)emu(b)->used);
		return NULL;
	}
	char *p = NULL;
	if (posix_memalign((void **)&p, 64, n))
		return NULL;
	*(size_t *)p = n;
	emu(b)->used += (int64_t)n;
	emu(b)->peak = emu(b)->used > emu(b)->peak ? emu(b)->used : emu(b)->peak;
	return p + 64;
}

static void emu_free(struct backend *b, void *p)
{
	if (!p)
		return;
	char *h = (char *)p - 64;
	emu(b)->used -= (int64_t)*(size_t *)h;
	free(h);
}

static int emu_fence_alloc(struct backend *b, int n)
{
	int f = emu(b)->n_fences;
	emu(b)->n_fences += n;
	return f;
}

static int emu_fence_queue(struct backend *b, enum backend_queue q, int fence)
{
	(void)b, (void)q, (void)fence;
	return 0;
}

static bool emu_fence_done(struct backend *b, int fence)
{
	(void)b, (void)fence;
	return true;
}

static void *emu_host_alloc(struct backend *b, size_t bytes)
{
	return cpu_alloc(b, bytes);
}

static void emu_mem(struct backend *b, struct backend_mem *m)
{
	m->budget = m->arena = emu(b)->budget;
	m->arena_used = emu(b)->used;
	m->arena_peak = m->device_used_peak = emu(b)->peak;
	snprintf(m->gpu, sizeof(m->gpu), "emulated by the CPU");
}

static struct backend_ops emu_ops;

int backend_cpu_device_create(struct backend **bp, int64_t vram, int n_threads, char *err, size_t errlen)
{
	struct emu_state *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	int rc = backend_cpu_create(bp, n_threads, err, errlen);
	if (rc) {
		free(s);
		return rc;
	}
	free((*bp)->impl);
	(*bp)->impl = s;
	s->budget = vram > 0 ? vram : (int64_t)4 << 30;
	emu_ops = cpu_ops;
	emu_ops.name = "cpu-device";
	emu_ops.host_memory = false;
	emu_ops.alloc = emu_alloc;
	emu_ops.free = emu_free;
	emu_ops.fence_alloc = emu_fence_alloc;
	emu_ops.fence_record = emu_fence_queue;
	emu_ops.fence_wait = emu_fence_queue;
	emu_ops.fence_done = emu_fence_done;
	emu_ops.copy_async = cpu_copy;
	emu_ops.copy_d2h_async = cpu_copy;
	emu_ops.host_alloc = emu_host_alloc;
	emu_ops.host_free = cpu_free;
	emu_ops.mem = emu_mem;
	(*bp)->ops = &emu_ops;
	return 0;
}

/* Several NUMA nodes: the worker threads spread over them in turn (numa.c: memory is interleaved over the
 * nodes, so each node's bus serves its share); the calling thread stays unpinned, as do the threads it makes
 * later (I/O), which would inherit its mask. Once per process; one node (or no sysfs): nothing. */
static void pin_threads(void)
{
	static bool done;
	struct numa n;
	char err[256];
	if (done || numa_read(&n, err, sizeof(err)) || n.n_nodes < 2)
		return;
	done = true;
#pragma omp parallel
	{
		int t = omp_get_thread_num(), c = numa_thread_cpu(&n, t);
		if (t > 0 && c >= 0) {
			cpu_set_t set;
			CPU_ZERO(&set);
			CPU_SET(c, &set);
			sched_setaffinity(0, sizeof(set), &set);
		}
	}
}

int backend_cpu_create(struct backend **bp, int n_threads, char *err, size_t errlen)
{
	struct backend *b = calloc(1, sizeof(*b));
	struct cpu_state *s = calloc(1, sizeof(*s));
	if (!b || !s) {
		free(b);
		free(s);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	b->ops = &cpu_ops;
	b->impl = s;
	if (n_threads <= 0 && !getenv("OMP_NUM_THREADS"))
		n_threads = threads_available();
	if (n_threads > 0)
		omp_set_num_threads(n_threads);
	b->n_threads = omp_get_max_threads();
	pin_threads();
	*bp = b;
	return 0;
}
