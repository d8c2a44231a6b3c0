/*
 * test_cuda_ops.c: every CUDA op other than matmul (src/kernels/cuda/cuda_ops.h) against its CPU op
 * (kernels/cpu/) or a host loop written here, on fresh random inputs (seed fixed, FERRY_SEED overrides) and
 * odd shapes, each output poisoned with NaN before the run. Error: sum((y - ref)^2) / sum(ref^2), NaN/inf
 * always failing; bounds 1e-6 for the f32 element-wise ops, norm and rope, 1e-12 for the Hadamard rotation
 * applied twice, 5e-4 for attention (its reference reads the same pages, f16 or quantized, so what remains
 * is q, the dequantized values and the probabilities in f16); the KV store (every byte of the pools), the
 * Hadamard rotation against cpu_hadamard32, argmax and top-k must match exactly. Attention and the KV store
 * run on batches of several sequences of different lengths and positions, in shuffled pages, in every KV
 * format; token trees (tree masks, depth positions, windows) and the move of an accepted path; the
 * mixture-of-experts routing (ids exactly, weights 1e-12), gather and weighted scatter-add. Also the
 * argument errors (-EINVAL) and a short workspace (-ENOSPC). Prints a line per failing
 * case, the worst error per op, exits 0/1; 77 without CUDA or a GPU.
 *
 *   test_cuda_ops            the tests
 *   test_cuda_ops --quick    four attention cases (one of a mixed KV format), argmax and top-k (for compute-sanitizer)
 *   test_cuda_ops --bench    timings: attention prefill (TFLOP/s), decode (GB/s of KV against a copy) per KV
 *                            format, top-k
 *
 * Dimension letters: T tokens, H heads, Hkv kv heads, Dh head dim, C positions of a sequence, V vocab.
 */
#include <stdio.h>

#ifndef FERRY_CUDA
int main(void)
{
	printf("skip: built without CUDA\n");
	return 77;
}
#else

#include <cuda_runtime_api.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tree_util.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_exit.h"
#include "kernels/cuda/cuda_ops.h"
#include "layout/layout.h"
#include "layout/wfmt.h"


/* a launcher's return code; on failure the message it left in ctx.err */
#define OP(call)                                                                                          \
	do {                                                                                              \
		int rc_ = (call);                                                                         \
		if (rc_) {                                                                                \
			fprintf(stderr, "%s:%d: %s = %d: %s\n", __FILE__, __LINE__, #call, rc_, ctx.err);  \
			exit(1);                                                                          \
		}                                                                                         \
	} while (0)

static struct cuda_ctx ctx;
static int real_n_sm;
static bool quick;

static uint64_t rng;

static uint64_t rnext(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* uniform in [-1, 1) */
static float urand(void)
{
	return (float)((double)(rnext() >> 11) * 0x1.0p-52 - 1.0);
}

static int irand(int n)
{
	return (int)(rnext() % (uint64_t)n);
}

static void fill(float *x, size_t n, float amp)
{
	for (size_t i = 0; i < n; i++)
		x[i] = amp * urand();
}

static void *dalloc(size_t bytes)
{
	void *p;
	CU(cudaMalloc(&p, bytes ? bytes : 1));
	return p;
}

static void *dupload(const void *h, size_t bytes)
{
	void *p = dalloc(bytes);
	CU(cudaMemcpy(p, h, bytes, cudaMemcpyHostToDevice));
	return p;
}

/* every byte 0xff: a NaN in f32 and f16, -1 as an int */
static void poison(void *d, size_t bytes)
{
	CU(cudaMemset(d, 0xff, bytes));
}

static void download(void *h, const void *d, size_t bytes)
{
	CU(cudaStreamSynchronize((cudaStream_t)ctx.stream));
	CU(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
}

/* sum((y - ref)^2) / sum(ref^2); infinity when y holds a NaN or an inf */
static double nmse(const float *y, const float *ref, size_t n)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++) {
		if (!isfinite(y[i]))
			return INFINITY;
		num += ((double)y[i] - ref[i]) * ((double)y[i] - ref[i]);
		den += (double)ref[i] * ref[i];
	}
	return den > 0 ? num / den : num;
}

/* the worst error seen per op, printed at the end */
enum { E_ADD, E_GLU, E_SOFTCAP, E_RMSNORM, E_ROPE, E_HADAMARD, E_ATTN, E_N };
static const char *e_name[E_N] = {"add", "glu", "softcap", "rmsnorm", "rope", "hadamard", "attention"};
static double e_worst[E_N];
static int e_cases[E_N];

/* compares device y[n] with ref under bound; a line when it fails */
static void expect(int op, const char *what, const float *dy, const float *ref, size_t n, double bound)
{
	float *y = malloc(n * sizeof(float));
	download(y, dy, n * sizeof(float));
	double e = nmse(y, ref, n);
	free(y);
	e_cases[op]++;
	if (!(e <= e_worst[op]))
		e_worst[op] = e;
	CHECK_MSG(e <= bound, "%s: error %.3g > %.3g", what, e, bound);
}

static void test_elementwise(void)
{
	const int64_t ns[] = {1, 17, 1001, 1000003};
	for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
		int64_t n = ns[k];
		size_t b = (size_t)n * sizeof(float);
		float *x = malloc(b), *y = malloc(b), *ref = malloc(b);
		fill(x, n, 4);
		fill(y, n, 4);
		char what[96];

		float *dx = dupload(x, b), *dy = dupload(y, b), *dout = dalloc(b);
		memcpy(ref, y, b);
		cpu_add(ref, x, n);
		OP(cuda_add(&ctx, dy, dx, n));
		snprintf(what, sizeof(what), "add n=%lld", (long long)n);
		expect(E_ADD, what, dy, ref, n, 1e-6);

		for (int act = ACT_SILU; act <= ACT_SWIGLU_OAI; act++) {
			if (act == ACT_SWIGLU_OAI) /* past gpt-oss's clamps (+-7) on both sides */
				for (int64_t i = 0; i < n; i++)
					x[i] *= 3, y[i] *= 3;
			CU(cudaMemcpy(dx, x, b, cudaMemcpyHostToDevice));
			(act == ACT_SILU ? cpu_swiglu : act == ACT_GELU_TANH ? cpu_geglu : cpu_swiglu_oai)(ref, x, y, n);
			CU(cudaMemcpy(dy, y, b, cudaMemcpyHostToDevice));
			poison(dout, b);
			OP(cuda_glu(&ctx, dout, dx, dy, n, act));
			snprintf(what, sizeof(what), "glu act=%d n=%lld", act, (long long)n);
			expect(E_GLU, what, dout, ref, n, 1e-6);
			/* y may equal gate */
			float *dg = dupload(x, b);
			OP(cuda_glu(&ctx, dg, dg, dy, n, act));
			snprintf(what, sizeof(what), "glu in place act=%d n=%lld", act, (long long)n);
			expect(E_GLU, what, dg, ref, n, 1e-6);
			CU(cudaFree(dg));
		}

		const float cap = 30.0f;
		for (int64_t i = 0; i < n; i++) {
			x[i] *= 20; /* some far past the cap */
			ref[i] = cap * tanhf(x[i] / cap);
		}
		CU(cudaMemcpy(dx, x, b, cudaMemcpyHostToDevice));
		OP(cuda_softcap(&ctx, dx, n, cap));
		snprintf(what, sizeof(what), "softcap n=%lld", (long long)n);
		expect(E_SOFTCAP, what, dx, ref, n, 1e-6);

		CU(cudaFree(dx));
		CU(cudaFree(dy));
		CU(cudaFree(dout));
		free(x);
		free(y);
		free(ref);
	}
}

static void test_rmsnorm(void)
{
	const int Ts[] = {1, 3, 17}, ns[] = {64, 1001, 2304, 8192};
	for (size_t a = 0; a < 3; a++)
		for (size_t b = 0; b < 4; b++)
			for (int fmt = WFMT_F32; fmt <= WFMT_BF16; fmt++) {
				int T = Ts[a], n = ns[b];
				size_t xb = (size_t)T * n * sizeof(float);
				float *x = malloc(xb), *ref = malloc(xb), *wf = malloc(n * sizeof(float));
				uint16_t *wh = malloc(n * sizeof(uint16_t));
				fill(x, (size_t)T * n, 3);
				fill(wf, n, 2);
				for (int i = 0; i < n; i++)
					wh[i] = fmt == WFMT_F16 ? f32_to_f16(wf[i]) : f32_to_bf16(wf[i]);
				const void *w = fmt == WFMT_F32 ? (const void *)wf : (const void *)wh;
				size_t wb = n * (fmt == WFMT_F32 ? 4 : 2);
				float *scratch = malloc(n * sizeof(float));
				cpu_rmsnorm(ref, x, w, fmt, T, n, 1e-6f, scratch);
				float *dx = dupload(x, xb), *dy = dalloc(xb);
				void *dw = dupload(w, wb);
				poison(dy, xb);
				OP(cuda_rmsnorm(&ctx, dy, dx, dw, fmt, T, n, 1e-6f));
				char what[96];
				snprintf(what, sizeof(what), "rmsnorm T=%d n=%d fmt=%d", T, n, fmt);
				expect(E_RMSNORM, what, dy, ref, (size_t)T * n, 1e-6);
				OP(cuda_rmsnorm(&ctx, dx, dx, dw, fmt, T, n, 1e-6f));
				snprintf(what, sizeof(what), "rmsnorm in place T=%d n=%d fmt=%d", T, n, fmt);
				expect(E_RMSNORM, what, dx, ref, (size_t)T * n, 1e-6);
				CU(cudaFree(dx));
				CU(cudaFree(dy));
				CU(cudaFree(dw));
				free(x);
				free(ref);
				free(wf);
				free(wh);
				free(scratch);
			}
}

static void test_rope(void)
{
	const int Ts[] = {1, 3, 17, 100}, Dhs[] = {64, 128, 256};
	for (size_t a = 0; a < 4; a++)
		for (size_t b = 0; b < 3; b++)
			for (int neox = 0; neox < 2; neox++) {
				int T = Ts[a], Dh = Dhs[b], nh = 1 + irand(8);
				double base = neox ? 1e6 : 1e4, mscale = neox ? 1.0 : 1.2;
				size_t n = (size_t)T * nh * Dh;
				float *x = malloc(n * sizeof(float));
				int *pos = malloc(T * sizeof(int));
				double *inv = malloc(Dh / 2 * sizeof(double));
				fill(x, n, 2);
				for (int t = 0; t < T; t++)
					pos[t] = irand(131072);
				for (int i = 0; i < Dh / 2; i++)
					inv[i] = pow(base, -2.0 * i / Dh);
				float *dx = dupload(x, n * sizeof(float));
				int *dpos = dupload(pos, T * sizeof(int));
				double *dinv = dupload(inv, Dh / 2 * sizeof(double));
				cpu_rope(x, T, nh, Dh, pos, inv, mscale, neox);
				OP(cuda_rope(&ctx, dx, dpos, T, nh, Dh, dinv, mscale, neox));
				char what[96];
				snprintf(what, sizeof(what), "rope T=%d heads=%d Dh=%d neox=%d", T, nh, Dh, neox);
				expect(E_ROPE, what, dx, x, n, 1e-6);
				CU(cudaFree(dx));
				CU(cudaFree(dpos));
				CU(cudaFree(dinv));
				free(x);
				free(pos);
				free(inv);
			}
}

/* A range of parts (struct kv_batch) over a layer's pages, host and device copies of everything. Each part is
 * its own sequence in its own page-table row (rows permuted, one row unused); its pages are a shuffle of
 * the pool's (one page spare); with a window, the pages no token of the part can see are unmapped (-1). */
struct tpart {
	int len, p0; /* tokens, first position */
};

struct tbatch {
	struct kv_batch h, d; /* host and device arrays */
	int *part_t0, *part_row, *tok_part, *pos, *pages;
	int n_pages;
};

static void *dcopy(const int *h, int n)
{
	return dupload(h, (size_t)n * sizeof(int));
}

static void tbatch_build(struct tbatch *b, const struct tpart *pt, int np, int page, int window)
{
	int T = 0, rows = np + 1, max_pages = 1, max_pos = 0, max_part = 0;
	for (int i = 0; i < np; i++) {
		T += pt[i].len;
		int last = pt[i].p0 + pt[i].len - 1, n = last / page + 1;
		max_pages = n > max_pages ? n : max_pages;
		max_pos = last > max_pos ? last : max_pos;
		max_part = pt[i].len > max_part ? pt[i].len : max_part;
	}
	b->part_t0 = malloc((np + 1) * sizeof(int));
	b->part_row = malloc(np * sizeof(int));
	b->tok_part = malloc(T * sizeof(int));
	b->pos = malloc(T * sizeof(int));
	b->pages = malloc((size_t)rows * max_pages * sizeof(int));
	int *perm = malloc(rows * sizeof(int));
	for (int i = 0; i < rows; i++)
		perm[i] = i;
	for (int i = rows - 1; i > 0; i--) {
		int j = irand(i + 1), x = perm[i];
		perm[i] = perm[j];
		perm[j] = x;
	}
	for (int i = 0; i < rows * max_pages; i++)
		b->pages[i] = -1;
	int n_pages = 0;
	for (int i = 0, t = 0; i < np; i++) {
		b->part_t0[i] = t;
		b->part_row[i] = perm[i];
		for (int k = 0; k < pt[i].len; k++, t++) {
			b->tok_part[t] = i;
			b->pos[t] = pt[i].p0 + k;
		}
		int first = window > 0 ? pt[i].p0 - window + 1 : 0, last = pt[i].p0 + pt[i].len - 1;
		for (int lp = 0; lp <= last / page; lp++)
			if ((lp + 1) * page - 1 >= first)
				b->pages[perm[i] * max_pages + lp] = n_pages++;
	}
	b->part_t0[np] = T;
	/* physical ids: a shuffle of 0 .. n_pages (one spare) */
	int *phys = malloc((n_pages + 1) * sizeof(int));
	for (int i = 0; i <= n_pages; i++)
		phys[i] = i;
	for (int i = n_pages; i > 0; i--) {
		int j = irand(i + 1), x = phys[i];
		phys[i] = phys[j];
		phys[j] = x;
	}
	for (int i = 0; i < rows * max_pages; i++)
		if (b->pages[i] >= 0)
			b->pages[i] = phys[b->pages[i]];
	b->n_pages = n_pages + 1;
	struct kv_batch h = {T, np, b->part_t0, b->part_row, b->tok_part, b->pos, b->pages, max_pages, max_pos, max_part, NULL, NULL, NULL};
	b->h = h;
	b->d = h;
	b->d.part_t0 = dcopy(b->part_t0, np + 1);
	b->d.part_row = dcopy(b->part_row, np);
	b->d.tok_part = dcopy(b->tok_part, T);
	b->d.pos = dcopy(b->pos, T);
	b->d.pages = dcopy(b->pages, rows * max_pages);
	free(perm);
	free(phys);
}

static void tbatch_free(struct tbatch *b)
{
	CU(cudaFree((void *)b->d.part_t0));
	CU(cudaFree((void *)b->d.part_row));
	CU(cudaFree((void *)b->d.tok_part));
	CU(cudaFree((void *)b->d.pos));
	CU(cudaFree((void *)b->d.pages));
	free(b->part_t0);
	free(b->part_row);
	free(b->tok_part);
	free(b->pos);
	free(b->pages);
}

/* the q bytes and the s part of row (h, r) of page pid of pool w (0 keys, 1 values; its row format rf) */
static uint8_t *row_q(uint8_t *pool, const struct kv_layer *kv, int rf, int pid, int h, int r)
{
	return pool + (size_t)pid * kv_page_bytes(rf, kv->Hkv, kv->Dh, kv->page) +
	       ((size_t)h * kv->page + r) * kv_qrow_bytes(rf, kv->Dh);
}

static uint8_t *row_s(uint8_t *pool, const struct kv_layer *kv, int rf, int pid, int h, int r)
{
	return pool + (size_t)pid * kv_page_bytes(rf, kv->Hkv, kv->Dh, kv->page) +
	       (size_t)kv->Hkv * kv->page * kv_qrow_bytes(rf, kv->Dh) + ((size_t)h * kv->page + r) * kv_srow_bytes(rf, kv->Dh);
}

/* the first byte where a and b differ, -1 when none */
static long first_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (a[i] != b[i])
			return (long)i;
	return -1;
}

struct attn_case {
	int fmt, Dh, H, Hkv, window, page;
	float qamp; /* q magnitude: larger gives peakier softmax rows */
	int np;
	struct tpart part[8];
};

/* One case: pools poisoned (0xff: NaN scales and f16 values), the history each part's first token may see
 * written by cpu_kv_row_quant (keys and values each in their pool's row format), the step's k and v (with
 * an all-zero group, a Q4/Q5 magnitude tie and an outlier) written by cuda_kv_store and cpu_kv_store and the
 * pools compared byte for byte, then
 * cuda_attention against cpu_attention on those pages, once with the GPU's multiprocessor count (splits
 * where few blocks) and once with one (no splits). */
static void attn_case(const struct attn_case *c)
{
	struct tbatch b;
	tbatch_build(&b, c->part, c->np, c->page, c->window);
	int T = b.h.T, H = c->H, Hkv = c->Hkv, Dh = c->Dh, kvd = Hkv * Dh;
	struct kv_layer kh = {NULL, NULL, c->fmt, c->page, Hkv, Dh, b.n_pages, 0}, kd = kh;
	size_t pool[2]; /* bytes of the key and the value pool */
	for (int w = 0; w < 2; w++)
		pool[w] = (size_t)b.n_pages * kv_pool_page_bytes(c->fmt, w, Hkv, Dh, c->page);
	uint8_t *hk = malloc(pool[0]), *hv = malloc(pool[1]), *back = malloc(pool[0] > pool[1] ? pool[0] : pool[1]);
	memset(hk, 0xff, pool[0]);
	memset(hv, 0xff, pool[1]);
	float *x = malloc(Dh * sizeof(float));
	for (int i = 0; i < c->np; i++) {
		const struct tpart *p = &c->part[i];
		int row = b.part_row[i];
		for (int j = c->window > 0 && p->p0 - c->window + 1 > 0 ? p->p0 - c->window + 1 : 0; j < p->p0; j++) {
			int pid = b.pages[row * b.h.max_pages + j / c->page];
			for (int h = 0; h < Hkv; h++)
				for (int kv = 0; kv < 2; kv++) {
					uint8_t *pl = kv ? hv : hk;
					int rf = kv_pool_fmt(c->fmt, kv);
					fill(x, Dh, 1);
					cpu_kv_row_quant(rf, x, row_q(pl, &kh, rf, pid, h, j % c->page),
							 row_s(pl, &kh, rf, pid, h, j % c->page), Dh);
				}
		}
	}
	size_t qn = (size_t)T * H * Dh, sn = (size_t)T * kvd;
	float *q = malloc(qn * sizeof(float)), *k = malloc(sn * sizeof(float)), *v = malloc(sn * sizeof(float));
	fill(q, qn, c->qamp);
	fill(k, sn, 1);
	fill(v, sn, 1);
	memset(k, 0, 32 * sizeof(float));
	for (int i = 32; i < 64 && i < kvd; i++)
		v[i] *= 0.1f;
	if (kvd >= 64) {
		v[32 + 3] = -2.0f;
		v[32 + 9] = 2.0f;
	}
	k[sn - 1] = 30.0f;
	kd.k = dupload(hk, pool[0]);
	kd.v = dupload(hv, pool[1]);
	float *dq = dupload(q, qn * sizeof(float)), *dk = dupload(k, sn * sizeof(float)),
	      *dv = dupload(v, sn * sizeof(float)), *dout = dalloc(qn * sizeof(float));
	char what[200];
	int n = snprintf(what, sizeof(what), "attention %s Dh=%d H=%d Hkv=%d window=%d page=%d parts", kv_fmt_name(c->fmt),
			 Dh, H, Hkv, c->window, c->page);
	for (int i = 0; i < c->np && n < (int)sizeof(what); i++)
		n += snprintf(what + n, sizeof(what) - n, " %d@%d", c->part[i].len, c->part[i].p0);

	OP(cuda_kv_store(&ctx, &kd, dk, dv, &b.d));
	kh.k = hk;
	kh.v = hv;
	cpu_kv_store(&kh, k, v, &b.h);
	download(back, kd.k, pool[0]);
	long dk_at = first_diff(back, hk, pool[0]);
	CHECK_MSG(dk_at < 0, "%s: kv_store keys differ from cpu_kv_store at byte %ld", what, dk_at);
	download(back, kd.v, pool[1]);
	long dv_at = first_diff(back, hv, pool[1]);
	CHECK_MSG(dv_at < 0, "%s: kv_store values differ from cpu_kv_store at byte %ld", what, dv_at);
	/* attention reads the same bytes on both sides */
	CU(cudaMemcpy(kd.k, hk, pool[0], cudaMemcpyHostToDevice));
	CU(cudaMemcpy(kd.v, hv, pool[1], cudaMemcpyHostToDevice));

	float *ref = malloc(qn * sizeof(float)), scale = 1.0f / sqrtf((float)Dh);
	int64_t per = cpu_attention_scratch(b.h.max_pos + 1, Dh);
	float *scratch = malloc((size_t)omp_get_max_threads() * per * sizeof(float));
	/* gpt-oss's sinks: logits in [-2, 6), from no share of the mass to most of it */
	float *ref_s = malloc(qn * sizeof(float)), sinks[64];
	for (int h = 0; h < H && h < 64; h++)
		sinks[h] = (float)(8.0 * rand() / RAND_MAX - 2.0);
	float *dsinks = dupload(sinks, sizeof(sinks));
	cpu_attention(ref, q, &kh, &b.h, H, c->window, scale, NULL, scratch, per);
	cpu_attention(ref_s, q, &kh, &b.h, H, c->window, scale, sinks, scratch, per);

	size_t wsb = cuda_attention_ws_bytes(T, b.h.max_pos + 1, H, Dh);
	void *ws = wsb ? dalloc(wsb) : NULL;
	for (int pass = 0; pass < 4; pass++) { /* with and without splits of the keys, with and without sinks */
		ctx.ws = ws;
		ctx.ws_bytes = wsb;
		ctx.n_sm = pass & 1 ? 1 : real_n_sm;
		poison(dout, qn * sizeof(float));
		OP(cuda_attention(&ctx, dout, dq, &kd, &b.d, H, c->window, scale, pass & 2 ? dsinks : NULL));
		char w2[240];
		snprintf(w2, sizeof(w2), "%s (n_sm %d%s)", what, ctx.n_sm, pass & 2 ? ", sinks" : "");
		expect(E_ATTN, w2, dout, pass & 2 ? ref_s : ref, qn, 5e-4);
	}
	CU(cudaFree(dsinks));
	free(ref_s);
	ctx.n_sm = real_n_sm;
	ctx.ws = NULL;
	ctx.ws_bytes = 0;
	if (ws)
		CU(cudaFree(ws));
	CU(cudaFree(kd.k));
	CU(cudaFree(kd.v));
	CU(cudaFree(dq));
	CU(cudaFree(dk));
	CU(cudaFree(dv));
	CU(cudaFree(dout));
	tbatch_free(&b);
	free(hk);
	free(hv);
	free(back);
	free(x);
	free(q);
	free(k);
	free(v);
	free(ref);
	free(scratch);
}

/* Every format x head dim x group size x window x page on one mix of parts: a decode token at a long
 * position, a prefill from 0, a chunk cut in the middle of its sequence, another decode token, a short
 * prompt; then shapes of real models and edge cases. */
static void test_attention(void)
{
	static const struct attn_case special[] = {
		{KV_F16, 32, 8, 8, 0, 64, 1, 2, {{1, 19999}, {3, 7000}}},                  /* Dh 32, long positions */
		{KV_Q8, 160, 10, 5, 7, 64, 1, 2, {{17, 50}, {1, 400}}},                     /* Dh 160, tiny window */
		{KV_Q4, 128, 64, 1, 0, 256, 1, 2, {{100, 0}, {1, 1500}}},                   /* 64 query heads per kv head */
		{KV_F16, 64, 8, 1, 0, 256, 3, 1, {{1024, 0}}},                              /* longer prefill, peaky rows */
		{KV_Q8, 128, 16, 16, 64, 64, 2, 2, {{300, 1000}, {1, 5000}}},               /* H == Hkv, window 64 */
		{KV_Q8, 128, 64, 8, 0, 256, 1, 8,                                           /* Llama-70B decode batch */
		 {{1, 5000}, {1, 17}, {1, 4095}, {1, 256}, {1, 3333}, {1, 0}, {1, 64}, {1, 1200}}},
		{KV_Q4, 256, 4, 1, 512, 256, 1, 3, {{1, 5000}, {1, 511}, {64, 600}}},       /* Gemma window layer */
		{KV_F16, 128, 64, 8, 0, 64, 1, 1, {{8, 4000}}},                             /* a few draft tokens */
		{KV_F16, 64, 64, 8, 128, 64, 1, 2, {{300, 0}, {1, 2000}}},                  /* gpt-oss sliding layer */
		{KV_K8V5, 256, 4, 1, 512, 256, 1, 3, {{1, 5000}, {1, 511}, {64, 600}}},     /* Gemma window, k8v5 */
		{KV_K8V5, 128, 64, 8, 0, 256, 1, 4, {{1, 5000}, {1, 17}, {300, 0}, {1, 64}}}, /* 70B decode, prefill */
		{KV_Q5, 160, 10, 5, 7, 64, 1, 2, {{17, 50}, {1, 400}}},                     /* Dh 160 (5 groups), q5 */
		{KV_K8V4, 64, 8, 1, 0, 256, 3, 1, {{1024, 0}}},                             /* longer prefill, k8v4 */
		{KV_KA5V4, 256, 4, 1, 512, 256, 1, 3, {{1, 5000}, {1, 511}, {64, 600}}},    /* Gemma window, ka5v4 */
		{KV_A4, 160, 10, 5, 7, 64, 1, 2, {{17, 50}, {1, 400}}},                     /* Dh 160 (5 groups), a4 */
	};
	static const int fmts[] = {KV_F16, KV_Q8, KV_Q4, KV_Q5, KV_A4, KV_A5, KV_K8V5, KV_K8V4, KV_KA5V4}, dhs[] = {64, 128, 256, 96},
			 gs[] = {1, 4, 8},
			 windows[] = {0, 100}, pages[] = {64, 256};
	size_t ns = sizeof(special) / sizeof(special[0]);
	if (quick) {
		for (size_t i = 0; i < 3; i++)
			attn_case(&special[i]);
		attn_case(&special[8]); /* a mixed format */
		return;
	}
	for (size_t i = 0; i < ns; i++)
		attn_case(&special[i]);
	for (int f = 0; f < (int)(sizeof(fmts) / sizeof(fmts[0])); f++)
		for (int d = 0; d < 4; d++)
			for (int gi = 0; gi < 3; gi++)
				for (int w = 0; w < 2; w++)
					for (int p = 0; p < 2; p++) {
						struct attn_case c = {fmts[f], dhs[d], 2 * gs[gi], 2, windows[w], pages[p], 1, 5,
								      {{1, 3000 + irand(200)},
								       {150 + irand(100), 0},
								       {37, 300 + irand(700)},
								       {1, 1000 + irand(1000)},
								       {5, 0}}};
						attn_case(&c);
					}
}

/* cuda_hadamard32 bit for bit cpu_hadamard32, and its own inverse */
/* Token trees (src/kernels/kv_pages.h): sequence 0 holds C committed positions and a random tree of n tokens
 * after them, sequence 1 a plain part; the pools are written by the CPU and uploaded, cuda_attention with the
 * tree fields runs against cpu_attention on the same pages (5e-4), windows on and off (trees shallower than
 * the window); then cuda_kv_move of the path to the deepest token leaves the pools byte-equal to kv_rows_move's. */
static void test_tree(void)
{
	for (int fmt = KV_F16; fmt < KV_FMT_COUNT; fmt++)
		for (int rep = 0; rep < (quick ? 1 : 4); rep++) {
			int Hkv = 2, g = 4, H = Hkv * g, Dh = rep % 2 ? 128 : 64, page = 64, window = rep >= 2 ? 48 : 0;
			int C = 30 + irand(200), n = 2 + irand(60), C1 = 7, n1 = 5, max_pages = 8, rows = 2;
			n = window && n > window ? window : n;
			int T = n + n1, kvd = Hkv * Dh;
			struct kv_layer kh = {.fmt = fmt, .page = page, .Hkv = Hkv, .Dh = Dh, .n_pages = rows * max_pages};
			size_t pool[2]; /* key, value pool bytes */
			for (int w = 0; w < 2; w++)
				pool[w] = kv_pool_page_bytes(fmt, w, Hkv, Dh, page) * (size_t)kh.n_pages;
			kh.k = calloc(1, pool[0]);
			kh.v = calloc(1, pool[1]);
			int table[16], perm[16];
			for (int i = 0; i < 16; i++)
				perm[i] = i;
			for (int i = 15; i > 0; i--) {
				int j = irand(i + 1), x = perm[i];
				perm[i] = perm[j];
				perm[j] = x;
			}
			memcpy(table, perm, sizeof(table));
			/* the committed history, plain */
			int hn = C + C1, *hpos = malloc(sizeof(int) * (size_t)hn), *htp = malloc(sizeof(int) * (size_t)hn);
			float *hk = malloc(sizeof(float) * (size_t)hn * kvd), *hv = malloc(sizeof(float) * (size_t)hn * kvd);
			for (int t = 0; t < hn; t++) {
				hpos[t] = t < C ? t : t - C;
				htp[t] = t >= C;
			}
			fill(hk, (size_t)hn * kvd, 1);
			fill(hv, (size_t)hn * kvd, 1);
			int ht0[3] = {0, C, hn}, prow[2] = {0, 1};
			struct kv_batch hb = {.T = hn, .n_parts = 2, .part_t0 = ht0, .part_row = prow, .tok_part = htp,
					      .pos = hpos, .pages = table, .max_pages = max_pages, .max_pos = C, .max_part = C};
			cpu_kv_store(&kh, hk, hv, &hb);
			/* the step: the tree, then the plain part */
			int pos[128], lpos[128], tb[128], tp[128], depth[128], parent[128];
			uint32_t mask[128 * KV_TREE_WORDS];
			for (int j = 0; j < n; j++)
				parent[j] = j == 0 ? -1 : irand(j + 1) - 1;
			tree_fields(n, parent, C, depth, pos, lpos, tb, tp, mask);
			for (int j = n; j < T; j++) {
				pos[j] = lpos[j] = C1 + j - n;
				tb[j] = KV_TREE_NONE;
				tp[j] = 1;
			}
			int st0[3] = {0, n, T};
			struct kv_batch bt = {.T = T, .n_parts = 2, .part_t0 = st0, .part_row = prow, .tok_part = tp, .pos = pos,
					      .pages = table, .max_pages = max_pages, .max_pos = C + n - 1, .max_part = n,
					      .lpos = lpos, .tree_base = tb, .tree_mask = mask};
			float *k = malloc(sizeof(float) * (size_t)T * kvd), *v = malloc(sizeof(float) * (size_t)T * kvd);
			size_t qn = (size_t)T * H * Dh;
			float *q = malloc(sizeof(float) * qn), *ref = malloc(sizeof(float) * qn);
			fill(k, (size_t)T * kvd, 1);
			fill(v, (size_t)T * kvd, 1);
			fill(q, qn, 1);
			cpu_kv_store(&kh, k, v, &bt);
			int64_t per = cpu_attention_scratch(bt.max_pos + 1, Dh);
			float *scratch = malloc((size_t)omp_get_max_threads() * per * sizeof(float));
			float scale = 1 / sqrtf((float)Dh);
			cpu_attention(ref, q, &kh, &bt, H, window, scale, NULL, scratch, per);

			struct kv_layer kd = kh;
			kd.k = dupload(kh.k, pool[0]);
			kd.v = dupload(kh.v, pool[1]);
			struct kv_batch db = bt;
			db.part_t0 = dcopy(st0, 3);
			db.part_row = dcopy(prow, 2);
			db.tok_part = dcopy(tp, T);
			db.pos = dcopy(pos, T);
			db.pages = dcopy(table, 16);
			db.lpos = dcopy(lpos, T);
			db.tree_base = dcopy(tb, T);
			db.tree_mask = dupload(mask, sizeof(uint32_t) * (size_t)T * KV_TREE_WORDS);
			float *dq = dupload(q, qn * sizeof(float)), *dout = dalloc(qn * sizeof(float));
			poison(dout, qn * sizeof(float));
			size_t wsb = cuda_attention_ws_bytes(T, bt.max_pos + 1, H, Dh);
			ctx.ws = wsb ? dalloc(wsb) : NULL;
			ctx.ws_bytes = wsb;
			OP(cuda_attention(&ctx, dout, dq, &kd, &db, H, window, scale, NULL));
			char what[96];
			snprintf(what, sizeof(what), "tree %s Dh %d window %d C %d n %d", kv_fmt_name(fmt), Dh, window, C, n);
			expect(E_ATTN, what, dout, ref, qn, 5e-4);
			if (ctx.ws)
				CU(cudaFree(ctx.ws));
			ctx.ws = NULL;
			ctx.ws_bytes = 0;

			/* the accepted path: the deepest token's ancestors, moved to C, C + 1, ... */
			int deep = 0, path[128], np = 0, from[128], to[128];
			for (int j = 0; j < n; j++)
				deep = depth[j] > depth[deep] ? j : deep;
			for (int a = deep; a >= 0; a = parent[a])
				path[np++] = a;
			for (int i = 0; i < np; i++) {
				from[i] = C + path[np - 1 - i];
				to[i] = C + i;
			}
			kv_rows_move(&kh, table, np, from, to);
			OP(cuda_kv_move(&ctx, &kd, table, np, from, to));
			uint8_t *back = malloc(pool[0] > pool[1] ? pool[0] : pool[1]);
			download(back, kd.k, pool[0]);
			CHECK_MSG(memcmp(back, kh.k, pool[0]) == 0, "%s: K pool after cuda_kv_move differs", what);
			download(back, kd.v, pool[1]);
			CHECK_MSG(memcmp(back, kh.v, pool[1]) == 0, "%s: V pool after cuda_kv_move differs", what);
			free(back);
			CU(cudaFree(kd.k));
			CU(cudaFree(kd.v));
			CU(cudaFree((void *)db.part_t0));
			CU(cudaFree((void *)db.part_row));
			CU(cudaFree((void *)db.tok_part));
			CU(cudaFree((void *)db.pos));
			CU(cudaFree((void *)db.pages));
			CU(cudaFree((void *)db.lpos));
			CU(cudaFree((void *)db.tree_base));
			CU(cudaFree((void *)db.tree_mask));
			CU(cudaFree(dq));
			CU(cudaFree(dout));
			free(kh.k), free(kh.v), free(hpos), free(htp), free(hk), free(hv), free(k), free(v), free(q), free(ref);
			free(scratch);
		}
}

static void test_hadamard(void)
{
	const int64_t ns[] = {32, 32 * 1001, 32 * 65536};
	for (int i = 0; i < 3; i++) {
		int64_t n = ns[i];
		size_t b = (size_t)n * sizeof(float);
		float *x = malloc(b), *ref = malloc(b), *y = malloc(b);
		fill(x, n, 4);
		x[n / 2] = 1000.0f; /* an outlier */
		memcpy(ref, x, b);
		cpu_hadamard32(ref, n);
		float *dx = dupload(x, b);
		OP(cuda_hadamard32(&ctx, dx, n));
		download(y, dx, b);
		long at = first_diff((const uint8_t *)y, (const uint8_t *)ref, b);
		CHECK_MSG(at < 0, "hadamard n=%lld: differs from cpu_hadamard32 at value %ld", (long long)n,
			  at < 0 ? at : at / 4);
		OP(cuda_hadamard32(&ctx, dx, n));
		char what[64];
		snprintf(what, sizeof(what), "hadamard twice n=%lld", (long long)n);
		expect(E_HADAMARD, what, dx, x, n, 1e-12);
		CU(cudaFree(dx));
		free(x);
		free(ref);
		free(y);
	}
}

/* the errors a launcher must return before launching anything */
static void test_arg_errors(void)
{
	float *d = dalloc(1 << 20);
	uint8_t *pool = dalloc(1 << 20);
	int *di = dalloc(256);
	int h0[2] = {0, 1}, p2047[1] = {2047};
	CU(cudaMemset(di, 0, 256));
	int *dt0 = dupload(h0, sizeof(h0)), *dpos = dupload(p2047, sizeof(p2047));
	struct kv_batch bt = {1, 1, dt0, di, di, dpos, di, 32, 2047, 1, NULL, NULL, NULL};
	struct kv_layer kv = {pool, pool, KV_F16, 64, 8, 64, 4, 0};
	kv.Dh = 48;
	CHECK(cuda_attention(&ctx, d, d, &kv, &bt, 8, 0, 1, NULL) == -EINVAL);
	kv.Dh = 288;
	CHECK(cuda_attention(&ctx, d, d, &kv, &bt, 8, 0, 1, NULL) == -EINVAL);
	kv.Dh = 64;
	kv.Hkv = 4;
	CHECK(cuda_attention(&ctx, d, d, &kv, &bt, 6, 0, 1, NULL) == -EINVAL);
	kv.Hkv = 8;
	CHECK(cuda_attention(&ctx, d, d, &kv, &bt, 8, -1, 1, NULL) == -EINVAL);
	CHECK(cuda_attention(&ctx, d, d + 1, &kv, &bt, 8, 0, 1, NULL) == -EINVAL);
	kv.page = 100;
	CHECK(cuda_attention(&ctx, d, d, &kv, &bt, 8, 0, 1, NULL) == -EINVAL);
	CHECK(cuda_kv_store(&ctx, &kv, d, d, &bt) == -EINVAL);
	kv.page = 64;
	kv.fmt = KV_F32;
	CHECK(cuda_attention(&ctx, d, d, &kv, &bt, 8, 0, 1, NULL) == -EINVAL);
	CHECK(cuda_kv_store(&ctx, &kv, d, d, &bt) == -EINVAL);
	kv.fmt = KV_Q8;
	CHECK(cuda_hadamard32(&ctx, d, 48) == -EINVAL);
	/* a decode over 2048 keys wants to split them: without room for the partial results, -ENOSPC */
	kv.Hkv = 1;
	ctx.ws = d;
	ctx.ws_bytes = 16;
	CHECK(cuda_attention(&ctx, d, d, &kv, &bt, 4, 0, 1, NULL) == -ENOSPC);
	ctx.ws = NULL;
	ctx.ws_bytes = 0;
	CHECK(cuda_glu(&ctx, d, d, d, 16, 7) == -EINVAL);
	CHECK(cuda_rmsnorm(&ctx, d, d, d, 9, 1, 16, 1e-6f) == -EINVAL);
	CHECK(cuda_topk(&ctx, d, di, d, 1000, 0) == -EINVAL);
	CHECK(cuda_topk(&ctx, d, di, d, 4000, 1025) == -EINVAL);
	CHECK(cuda_topk(&ctx, d, di, d, 10, 11) == -EINVAL);
	CHECK(cuda_topk(&ctx, d, di, d, 1000, 10) == -ENOSPC); /* the grid-wide kernel, no workspace */
	CHECK(cuda_moe_route(&ctx, di, d, d, 4, 8, 9, true) == -EINVAL);
	CHECK(cuda_moe_route(&ctx, di, d, d, 4, 8, 0, true) == -EINVAL);
	CHECK(cuda_gather_rows(&ctx, d, d, di, -1, 16) == -EINVAL);
	CHECK(cudaStreamSynchronize((cudaStream_t)ctx.stream) == cudaSuccess);
	CU(cudaFree(d));
	CU(cudaFree(pool));
	CU(cudaFree(di));
	CU(cudaFree(dt0));
	CU(cudaFree(dpos));
}

/* logits with many ties: few distinct values, and -0 beside +0 */
static void fill_logits(float *x, size_t n, int levels)
{
	for (size_t i = 0; i < n; i++) {
		x[i] = (float)(irand(levels) - levels / 2) * 0.25f;
		if (x[i] == 0 && irand(2))
			x[i] = -0.0f;
	}
}

static void test_argmax(void)
{
	const int Ts[] = {1, 3, 17}, Vs[] = {1, 1000, 151936, 262144};
	for (int a = 0; a < 3; a++)
		for (int b = 0; b < 4; b++) {
			int T = Ts[a], V = Vs[b];
			size_t n = (size_t)T * V;
			float *x = malloc(n * sizeof(float));
			fill_logits(x, n, b & 1 ? 50 : 1000000);
			if (T > 1) /* one row all equal: index 0 */
				for (int i = 0; i < V; i++)
					x[i] = 1.5f;
			float *dx = dupload(x, n * sizeof(float));
			int *di = dalloc(T * sizeof(int)), *idx = malloc(T * sizeof(int));
			poison(di, T * sizeof(int));
			OP(cuda_argmax(&ctx, di, dx, T, V));
			download(idx, di, T * sizeof(int));
			for (int t = 0; t < T; t++) {
				const float *r = x + (size_t)t * V;
				int best = 0;
				for (int i = 1; i < V; i++)
					if (r[i] > r[best])
						best = i;
				CHECK_MSG(idx[t] == best, "argmax T=%d V=%d row %d: %d, expected %d", T, V, t, idx[t], best);
			}
			CU(cudaFree(dx));
			CU(cudaFree(di));
			free(x);
			free(idx);
		}
}

/* The mixture-of-experts ops against the CPU's: the routing (ids exactly, ties among the logits included;
 * weights within f32 rounding), a gather and a weighted scatter-add of an expert's rows. */
static void test_moe(void)
{
	const int cases[][3] = {{1, 8, 2}, {7, 128, 8}, {33, 60, 4}, {257, 16, 16}, {5, 4, 4}};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
		for (int norm = 0; norm < 2; norm++)
			for (int ties = 0; ties < 2; ties++) {
				int T = cases[c][0], E = cases[c][1], K = cases[c][2];
				size_t n = (size_t)T * E, nk = (size_t)T * K;
				float *l = malloc(n * sizeof(float)), *w = malloc(nk * sizeof(float)),
				      *gw = malloc(nk * sizeof(float));
				int *id = malloc(nk * sizeof(int)), *gid = malloc(nk * sizeof(int));
				if (ties)
					fill_logits(l, n, 8);
				else
					fill(l, n, 4);
				cpu_moe_route(id, w, l, T, E, K, norm);
				float *dl = dupload(l, n * sizeof(float)), *dw = dalloc(nk * sizeof(float));
				int *di = dalloc(nk * sizeof(int));
				poison(dw, nk * sizeof(float));
				poison(di, nk * sizeof(int));
				OP(cuda_moe_route(&ctx, di, dw, dl, T, E, K, norm));
				download(gid, di, nk * sizeof(int));
				download(gw, dw, nk * sizeof(float));
				CHECK_MSG(!memcmp(id, gid, nk * sizeof(int)), "moe route T=%d E=%d K=%d norm=%d ties=%d: ids differ",
					  T, E, K, norm, ties);
				double e = nmse(gw, w, nk);
				CHECK_MSG(e <= 1e-12, "moe route T=%d E=%d K=%d: weights error %.3g", T, E, K, e);
				CU(cudaFree(dl));
				CU(cudaFree(dw));
				CU(cudaFree(di));
				free(l);
				free(w);
				free(gw);
				free(id);
				free(gid);
			}
	const int T = 300, D = 2048 + 37, n = 111;
	float *x = malloc((size_t)T * D * sizeof(float)), *y = malloc((size_t)T * D * sizeof(float));
	float *src = malloc((size_t)n * D * sizeof(float)), *out = malloc((size_t)T * D * sizeof(float));
	float *w = malloc(n * sizeof(float));
	int *rows = malloc(n * sizeof(int)), *perm = malloc(T * sizeof(int));
	for (int i = 0; i < T; i++)
		perm[i] = i;
	for (int i = T - 1; i > 0; i--) { /* distinct rows in a random order */
		int j = irand(i + 1), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	memcpy(rows, perm, n * sizeof(int));
	fill(x, (size_t)T * D, 2);
	fill(y, (size_t)T * D, 2);
	fill(src, (size_t)n * D, 2);
	fill(w, n, 1);
	float *dx = dupload(x, (size_t)T * D * sizeof(float)), *dy = dupload(y, (size_t)T * D * sizeof(float));
	float *dsrc = dupload(src, (size_t)n * D * sizeof(float)), *dg = dalloc((size_t)n * D * sizeof(float));
	float *dw = dupload(w, n * sizeof(float));
	int *drows = dupload(rows, n * sizeof(int));
	poison(dg, (size_t)n * D * sizeof(float));
	OP(cuda_gather_rows(&ctx, dg, dx, drows, n, D));
	cpu_gather_rows(out, x, rows, n, D);
	float *got = malloc((size_t)T * D * sizeof(float));
	download(got, dg, (size_t)n * D * sizeof(float));
	CHECK_MSG(!memcmp(got, out, (size_t)n * D * sizeof(float)), "gather_rows differs");
	OP(cuda_scatter_add(&ctx, dy, dsrc, drows, dw, n, D));
	cpu_scatter_add(y, src, rows, w, n, D);
	download(got, dy, (size_t)T * D * sizeof(float));
	double e = nmse(got, y, (size_t)T * D);
	CHECK_MSG(e <= 1e-12, "scatter_add error %.3g", e);
	printf("moe        route %zu shapes x norm x ties, gather and scatter-add of %d of %d rows: scatter error %.3g\n",
	       sizeof(cases) / sizeof(cases[0]), n, T, e);
	CU(cudaFree(dx));
	CU(cudaFree(dy));
	CU(cudaFree(dsrc));
	CU(cudaFree(dg));
	CU(cudaFree(dw));
	CU(cudaFree(drows));
	free(x);
	free(y);
	free(src);
	free(out);
	free(w);
	free(rows);
	free(perm);
	free(got);
}

/* cuda_gather_cols (act-order weights' input order) against direct indexing: a random permutation of K
 * columns (f32 indices) over T rows, bit-exact (a copy). */
static void test_gather_cols(void)
{
	const int T = 37, K = 2048 + 37;
	float *x = malloc((size_t)T * K * sizeof(float)), *got = malloc((size_t)T * K * sizeof(float));
	float *pf = malloc(K * sizeof(float));
	int *perm = malloc(K * sizeof(int));
	for (int i = 0; i < K; i++)
		perm[i] = i;
	for (int i = K - 1; i > 0; i--) {
		int j = irand(i + 1), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (int i = 0; i < K; i++)
		pf[i] = (float)perm[i];
	fill(x, (size_t)T * K, 2);
	float *dx = dupload(x, (size_t)T * K * sizeof(float)), *dp = dupload(pf, K * sizeof(float));
	float *dy = dalloc((size_t)T * K * sizeof(float));
	poison(dy, (size_t)T * K * sizeof(float));
	OP(cuda_gather_cols(&ctx, dy, dx, dp, T, K));
	download(got, dy, (size_t)T * K * sizeof(float));
	int bad = 0;
	for (int t = 0; t < T; t++)
		for (int j = 0; j < K; j++)
			bad += memcmp(&got[(size_t)t * K + j], &x[(size_t)t * K + perm[j]], sizeof(float)) != 0;
	CHECK_MSG(bad == 0, "gather_cols: %d of %d values differ", bad, T * K);
	CHECK(cuda_gather_cols(&ctx, dx, dx, dp, T, K) == -EINVAL);
	printf("gather_cols %d rows of %d permuted: %d differ\n", T, K, bad);
	CU(cudaFree(dx));
	CU(cudaFree(dp));
	CU(cudaFree(dy));
	free(x);
	free(got);
	free(pf);
	free(perm);
}

static const float *topk_row;

static int topk_cmp(const void *pa, const void *pb)
{
	int a = *(const int *)pa, b = *(const int *)pb;
	if (topk_row[a] != topk_row[b])
		return topk_row[a] > topk_row[b] ? -1 : 1;
	return a < b ? -1 : a > b;
}

/* Both kernels (grid-wide, then the single block) on three kinds of rows: distinct values, 64 levels with
 * ties (the candidates of the grid kernel near its TOPK_CAP of 4096: either side), every value equal (+0 and
 * -0: the grid kernel falls back to the single block's selection). */
static void test_topk(void)
{
	const int Vs[] = {5, 1000, 32000, 262144}, ks[] = {1, 5, 40, 1000, 1024};
	size_t wsb = cuda_topk_ws_bytes();
	ctx.ws = dalloc(wsb);
	ctx.ws_bytes = wsb;
	for (int mode = CUDA_TOPK_GRID; mode <= CUDA_TOPK_BLOCK; mode++)
	for (int a = 0; a < 4; a++)
		for (int b = 0; b < 5; b++)
			for (int ties = 0; ties < 3; ties++) {
				int V = Vs[a], k = ks[b];
				if (k > V)
					continue;
				ctx.topk_mode = mode;
				float *x = malloc(V * sizeof(float));
				int *order = malloc(V * sizeof(int));
				if (ties)
					fill_logits(x, V, ties == 1 ? 64 : 1);
				else
					fill(x, V, 30);
				for (int i = 0; i < V; i++)
					order[i] = i;
				topk_row = x;
				qsort(order, V, sizeof(int), topk_cmp);
				float *dx = dupload(x, V * sizeof(float)), *dv = dalloc(k * sizeof(float));
				int *di = dalloc(k * sizeof(int));
				poison(dv, k * sizeof(float));
				poison(di, k * sizeof(int));
				OP(cuda_topk(&ctx, dv, di, dx, V, k));
				float *vals = malloc(k * sizeof(float));
				int *idx = malloc(k * sizeof(int)), bad = -1;
				download(vals, dv, k * sizeof(float));
				download(idx, di, k * sizeof(int));
				for (int r = 0; r < k && bad < 0; r++)
					if (idx[r] != order[r] || memcmp(&vals[r], &x[order[r]], sizeof(float)))
						bad = r;
				CHECK_MSG(bad < 0, "topk %s V=%d k=%d ties=%d: rank %d is %d (%g), expected %d (%g)",
					  mode == CUDA_TOPK_GRID ? "grid" : "block", V, k, ties, bad, bad < 0 ? 0 : idx[bad], bad < 0 ? 0 : vals[bad], bad < 0 ? 0 : order[bad],
					  bad < 0 ? 0 : x[order[bad]]);
				CU(cudaFree(dx));
				CU(cudaFree(dv));
				CU(cudaFree(di));
				free(x);
				free(order);
				free(vals);
				free(idx);
			}
	ctx.topk_mode = CUDA_TOPK_GRID;
	CU(cudaFree(ctx.ws));
	ctx.ws = NULL;
	ctx.ws_bytes = 0;
}

/* median of n timings of fn (ms), by events on the stream after a warm-up call */
static float time_ms(void (*fn)(void *), void *arg, int n)
{
	cudaStream_t s = (cudaStream_t)ctx.stream;
	cudaEvent_t e0, e1;
	CU(cudaEventCreate(&e0));
	CU(cudaEventCreate(&e1));
	fn(arg);
	float t[64];
	for (int i = 0; i < n; i++) {
		CU(cudaEventRecord(e0, s));
		fn(arg);
		CU(cudaEventRecord(e1, s));
		CU(cudaEventSynchronize(e1));
		CU(cudaEventElapsedTime(&t[i], e0, e1));
	}
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
			float x = t[j];
			t[j] = t[j - 1];
			t[j - 1] = x;
		}
	CU(cudaEventDestroy(e0));
	CU(cudaEventDestroy(e1));
	return t[n / 2];
}

struct bench_copy {
	void *dst, *src;
	size_t bytes;
};

static void run_copy(void *p)
{
	struct bench_copy *b = p;
	CU(cudaMemcpyAsync(b->dst, b->src, b->bytes, cudaMemcpyDeviceToDevice, (cudaStream_t)ctx.stream));
}

/* attention over L layers' pools in turn, so that a decode's KV bytes come from memory, not L2 */
struct bench_attn {
	float *out, *q;
	struct kv_layer kv[4];
	struct tbatch b;
	int H, window, L, next;
};

static void run_attn(void *p)
{
	struct bench_attn *b = p;
	const struct kv_layer *kv = &b->kv[b->next++ % b->L];
	OP(cuda_attention(&ctx, b->out, b->q, kv, &b->b.d, b->H, b->window, 1.0f / sqrtf((float)kv->Dh), NULL));
}

/* pools of 0x11 bytes (small finite f16 values and scales), one batch of the given parts, page 256 */
static void bench_attn_setup(struct bench_attn *b, int fmt, int Hkv, int Dh, const struct tpart *pt, int np)
{
	tbatch_build(&b->b, pt, np, 256, b->window);
	size_t pk = (size_t)b->b.n_pages * kv_pool_page_bytes(fmt, 0, Hkv, Dh, 256),
	       pv = (size_t)b->b.n_pages * kv_pool_page_bytes(fmt, 1, Hkv, Dh, 256), qn = (size_t)b->b.h.T * b->H * Dh;
	for (int l = 0; l < b->L; l++) {
		struct kv_layer kv = {dalloc(pk), dalloc(pv), fmt, 256, Hkv, Dh, b->b.n_pages, 0};
		CU(cudaMemset(kv.k, 0x11, pk));
		CU(cudaMemset(kv.v, 0x11, pv));
		b->kv[l] = kv;
	}
	float *q = malloc(qn * sizeof(float));
	fill(q, qn, 1);
	b->q = dupload(q, qn * sizeof(float));
	free(q);
	b->out = dalloc(qn * sizeof(float));
	size_t wsb = cuda_attention_ws_bytes(b->b.h.T, b->b.h.max_pos + 1, b->H, Dh);
	ctx.ws = wsb ? dalloc(wsb) : NULL;
	ctx.ws_bytes = wsb;
}

static void bench_attn_free(struct bench_attn *b)
{
	for (int l = 0; l < b->L; l++) {
		CU(cudaFree(b->kv[l].k));
		CU(cudaFree(b->kv[l].v));
	}
	CU(cudaFree(b->q));
	CU(cudaFree(b->out));
	tbatch_free(&b->b);
	if (ctx.ws)
		CU(cudaFree(ctx.ws));
	ctx.ws = NULL;
	ctx.ws_bytes = 0;
}

struct bench_topk {
	float *x, *vals;
	int *idx, V, k;
};

static void run_topk(void *p)
{
	struct bench_topk *b = p;
	OP(cuda_topk(&ctx, b->vals, b->idx, b->x, b->V, b->k));
}

static void bench(void)
{
	struct bench_copy cp = {NULL, NULL, (size_t)1 << 30};
	cp.src = dalloc(cp.bytes);
	cp.dst = dalloc(cp.bytes);
	CU(cudaMemset(cp.src, 1, cp.bytes));
	double copy_gbs = 2.0 * cp.bytes / (time_ms(run_copy, &cp, 10) * 1e-3) / 1e9;
	CU(cudaFree(cp.src));
	CU(cudaFree(cp.dst));
	printf("device-to-device copy: %.0f GB/s (read + write)\n", copy_gbs);

	/* prefill: T queries at positions 0..T-1, causal; flops 4 * T * T / 2 * H * Dh (QK^T and PV) */
	const struct { int T, H, Hkv, Dh, window; const char *name; } pf[] = {
		{4096, 64, 8, 128, 0, "70B heads"},
		{4096, 4, 1, 256, 0, "Gemma 270M heads"},
		{4096, 4, 1, 256, 512, "Gemma 270M heads, window 512"},
	};
	for (int i = 0; i < 3; i++)
		for (int fmt = KV_F16; fmt < KV_FMT_COUNT; fmt++) {
			struct bench_attn b = {.H = pf[i].H, .window = pf[i].window, .L = 1};
			struct tpart pt = {pf[i].T, 0};
			bench_attn_setup(&b, fmt, pf[i].Hkv, pf[i].Dh, &pt, 1);
			float ms = time_ms(run_attn, &b, 10);
			double keys = pf[i].window ? (double)pf[i].window : pf[i].T / 2.0;
			double flops = 4.0 * pf[i].T * keys * pf[i].H * pf[i].Dh;
			printf("attention prefill %s T=%d H=%d Hkv=%d Dh=%d window=%d (%s): %.3f ms, %.1f TFLOP/s\n",
			       kv_fmt_name(fmt), pf[i].T, pf[i].H, pf[i].Hkv, pf[i].Dh, pf[i].window, pf[i].name, ms,
			       flops / (ms * 1e-3) / 1e12);
			bench_attn_free(&b);
		}

	/* decode: np sequences of C positions, a token each at C-1, the pools of 4 layers in turn (past L2) */
	const struct { int H, Hkv, Dh, np, C; const char *name; } dc[] = {
		{64, 8, 128, 1, 32768, "70B heads"},
		{4, 1, 256, 1, 32768, "Gemma 270M heads"},
		{64, 8, 128, 8, 4096, "70B heads, 8 sequences"},
	};
	for (int i = 0; i < 3; i++)
		for (int fmt = KV_F16; fmt < KV_FMT_COUNT; fmt++) {
			struct bench_attn b = {.H = dc[i].H, .L = 4};
			struct tpart pt[8];
			for (int s = 0; s < dc[i].np; s++)
				pt[s] = (struct tpart){1, dc[i].C - 1};
			bench_attn_setup(&b, fmt, dc[i].Hkv, dc[i].Dh, pt, dc[i].np);
			float ms = time_ms(run_attn, &b, 21);
			double bytes = (double)dc[i].np * dc[i].C *
				       (kv_pool_page_bytes(fmt, 0, dc[i].Hkv, dc[i].Dh, 1) +
					kv_pool_page_bytes(fmt, 1, dc[i].Hkv, dc[i].Dh, 1));
			double gbs = bytes / (ms * 1e-3) / 1e9;
			printf("attention decode %s C=%d H=%d Hkv=%d Dh=%d (%s): %.1f us, KV %.1f MB, %.0f GB/s, %.2f of "
			       "copy\n",
			       kv_fmt_name(fmt), dc[i].C, dc[i].H, dc[i].Hkv, dc[i].Dh, dc[i].name, ms * 1e3, bytes / 1e6, gbs,
			       gbs / copy_gbs);
			bench_attn_free(&b);
		}

	struct bench_topk tk = {NULL, NULL, NULL, 262144, 1024};
	float *x = malloc(tk.V * sizeof(float));
	fill(x, tk.V, 30);
	tk.x = dupload(x, tk.V * sizeof(float));
	tk.vals = dalloc(tk.k * sizeof(float));
	tk.idx = dalloc(tk.k * sizeof(int));
	size_t wsb = cuda_topk_ws_bytes();
	ctx.ws = dalloc(wsb);
	ctx.ws_bytes = wsb;
	/* the floor: reading the row once at the copy rate (half its read + write figure) */
	double floor_us = tk.V * 4.0 / (copy_gbs / 2 * 1e9) * 1e6;
	static const int tks[] = {40, 1024};
	for (int i = 0; i < 2; i++) {
		tk.k = tks[i];
		ctx.topk_mode = CUDA_TOPK_GRID;
		double grid_us = time_ms(run_topk, &tk, 21) * 1e3;
		ctx.topk_mode = CUDA_TOPK_BLOCK;
		double block_us = time_ms(run_topk, &tk, 21) * 1e3;
		printf("topk V=%d k=%d: grid %.1f us, single block %.1f us; floor (reading the row) %.2f us, grid %.0fx "
		       "the floor\n",
		       tk.V, tk.k, grid_us, block_us, floor_us, grid_us / floor_us);
	}
	ctx.topk_mode = CUDA_TOPK_GRID;
	CU(cudaFree(ctx.ws));
	ctx.ws = NULL;
	ctx.ws_bytes = 0;
	CU(cudaFree(tk.x));
	CU(cudaFree(tk.vals));
	CU(cudaFree(tk.idx));
	free(x);
}

int main(int argc, char **argv)
{
	bool do_bench = argc > 1 && !strcmp(argv[1], "--bench");
	quick = argc > 1 && !strcmp(argv[1], "--quick");
	int ndev = 0;
	if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
		printf("skip: no CUDA device\n");
		return 77;
	}
	struct cudaDeviceProp prop;
	CU(cudaGetDeviceProperties(&prop, 0));
	cudaStream_t s;
	CU(cudaStreamCreate(&s));
	ctx.stream = s;
	ctx.cc = prop.major * 10 + prop.minor;
	ctx.n_sm = real_n_sm = prop.multiProcessorCount;
	const char *seed = getenv("FERRY_SEED");
	rng = seed ? strtoull(seed, NULL, 0) : 20240611;
	printf("%s, sm_%d, %d SMs, seed %llu\n", prop.name, ctx.cc, ctx.n_sm, (unsigned long long)rng);

	if (do_bench) {
		bench();
		return 0;
	}
	test_arg_errors();
	test_hadamard();
	test_attention();
	test_tree();
	test_argmax();
	test_topk();
	test_moe();
	test_gather_cols();
	if (!quick) {
		test_elementwise();
		test_rmsnorm();
		test_rope();
	}
	for (int i = 0; i < E_N; i++)
		if (e_cases[i])
			printf("%-10s %3d cases, worst error %.3g\n", e_name[i], e_cases[i], e_worst[i]);
	CHECK_DONE();
}

#endif
