/*
 * backend_cpu.c: the CPU backend. Backend memory is host memory (64-byte aligned), uploads are copies,
 * and every op runs synchronously on OpenMP threads through kernels/cpu/.
 */
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu_ops.h"
#include "layout.h"

struct cpu_state {
	int T;
	const int *pos;      /* of the current range */
	const int *step_pos; /* of the step */
	int step_T;
	int max_pos; /* of the step */
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
	free(b->impl);
	free(b);
}

static int cpu_reserve(struct backend *b, const struct backend_reserve *r)
{
	int64_t per = r->max_row > r->max_ctx ? r->max_row : r->max_ctx;
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
	return op == OP_MATMUL || op == OP_RMSNORM ? cpu_fmt_supported(fmt) : op < OP_COUNT;
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
	if (t0 < 0 || n < 1 || t0 + n > s->step_T) {
		snprintf(b->err, sizeof(b->err), "token range %d+%d outside the step of %d", t0, n, s->step_T);
		return -EINVAL;
	}
	s->T = n;
	s->pos = s->step_pos + t0;
	s->max_pos = 0;
	for (int t = 0; t < n; t++)
		s->max_pos = s->pos[t] > s->max_pos ? s->pos[t] : s->max_pos;
	return 0;
}

static int cpu_step_begin(struct backend *b, int T, const int *pos)
{
	st(b)->step_T = T;
	st(b)->step_pos = pos;
	return cpu_step_range(b, 0, T);
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
	int rc = need(b, W->cols);
	if (!rc)
		cpu_matmul(y, x, W->data, W->fmt, bias ? bias->data : NULL, bias ? bias->fmt : 0, T, (int)W->rows,
			   (int)W->cols, st(b)->scratch, st(b)->per_thread);
	return rc;
}

static int cpu_rope_op(struct backend *b, float *x, int n_heads, int Dh, const struct rope_freqs *f)
{
	cpu_rope(x, st(b)->T, n_heads, Dh, st(b)->pos, f->inv_freq, f->mscale, f->neox);
	return 0;
}

static int cpu_kv_store_op(struct backend *b, struct kv_layer *kv, const float *k, const float *v, int kv_dim)
{
	for (int t = 0; t < st(b)->T; t++)
		if (st(b)->pos[t] < 0 || st(b)->pos[t] >= kv->capacity) {
			snprintf(b->err, sizeof(b->err), "position %d outside the KV cache (%d tokens)", st(b)->pos[t],
				 kv->capacity);
			return -ENOSPC;
		}
	cpu_kv_store((float *)kv->k, (float *)kv->v, k, v, st(b)->pos, st(b)->T, kv_dim);
	return 0;
}

static int cpu_attention_op(struct backend *b, float *out, const float *q, const struct kv_layer *kv, int H, int Hkv,
			    int Dh, int window, float scale)
{
	int rc = need(b, (int64_t)st(b)->max_pos + 1);
	if (!rc)
		cpu_attention(out, q, (const float *)kv->k, (const float *)kv->v, st(b)->pos, st(b)->T, H, Hkv, Dh, window, scale, st(b)->scratch,
			      st(b)->per_thread);
	return rc;
}

static int cpu_glu_op(struct backend *b, float *y, const float *gate, const float *up, int64_t n, int act)
{
	if (act == ACT_SILU) {
		cpu_swiglu(y, gate, up, n);
	} else if (act == ACT_GELU_TANH) {
		cpu_geglu(y, gate, up, n);
	} else {
		snprintf(b->err, sizeof(b->err), "activation %d is not supported by the cpu backend", act);
		return -ENOTSUP;
	}
	return 0;
}

static int cpu_add_op(struct backend *b, float *y, const float *x, int64_t n)
{
	(void)b;
	cpu_add(y, x, n);
	return 0;
}

static const struct backend_ops cpu_ops = {
	.name = "cpu",
	.host_memory = true,
	.kv_bytes = 4,
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
	.rmsnorm = cpu_rmsnorm_op,
	.matmul = cpu_matmul_op,
	.rope = cpu_rope_op,
	.kv_store = cpu_kv_store_op,
	.attention = cpu_attention_op,
	.glu = cpu_glu_op,
	.add = cpu_add_op,
};

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
	if (n_threads > 0)
		omp_set_num_threads(n_threads);
	b->n_threads = omp_get_max_threads();
	*bp = b;
	return 0;
}

void backend_destroy(struct backend *b)
{
	if (b)
		b->ops->destroy(b);
}

void backend_mem_get(struct backend *b, struct backend_mem *m)
{
	memset(m, 0, sizeof(*m));
	if (b && b->ops->mem)
		b->ops->mem(b, m);
}
