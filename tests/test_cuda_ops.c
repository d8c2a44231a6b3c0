/*
 * test_cuda_ops.c: every CUDA op other than matmul (kernels/cuda/cuda_ops.h) against its CPU op
 * (kernels/cpu/) or a host loop written here, on fresh random inputs (seed fixed, FERRY_SEED overrides) and
 * odd shapes, each output poisoned with NaN before the run. Error: sum((y - ref)^2) / sum(ref^2), NaN/inf
 * always failing; bounds 1e-6 for the f32 element-wise ops, norm and rope, 5e-4 for attention (its
 * reference reads the same f16-rounded cache, so what remains is q and the probabilities in f16); the KV
 * store, argmax and top-k must match exactly. Also the argument errors (-EINVAL) and a short workspace
 * (-ENOSPC). Prints a line per failing case, the worst error per op, exits 0/1; 77 without CUDA or a GPU.
 *
 *   test_cuda_ops            the tests
 *   test_cuda_ops --quick    three attention cases, argmax and top-k (for compute-sanitizer)
 *   test_cuda_ops --bench    timings: attention prefill (TFLOP/s), decode (GB/s of KV against a copy), top-k
 *
 * Dimension letters: T tokens, H heads, Hkv kv heads, Dh head dim, C cache rows, V vocab.
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
#include "cpu_ops.h"
#include "cuda_exit.h"
#include "cuda_ops.h"
#include "layout.h"
#include "wfmt.h"


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
enum { E_ADD, E_GLU, E_SOFTCAP, E_RMSNORM, E_ROPE, E_ATTN, E_N };
static const char *e_name[E_N] = {"add", "glu", "softcap", "rmsnorm", "rope", "attention"};
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

		for (int act = ACT_SILU; act <= ACT_GELU_TANH; act++) {
			(act == ACT_SILU ? cpu_swiglu : cpu_geglu)(ref, x, y, n);
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

enum pos_mode { POS_CONTIG, POS_GAPS, POS_RANDOM };

struct attn_case {
	int T, H, Hkv, Dh, window, C;
	enum pos_mode mode;
	int p0;    /* first position (CONTIG, GAPS) */
	float qamp; /* q magnitude: larger gives peakier softmax rows */
};

/* distinct positions < C for T tokens */
static void make_pos(int *pos, const struct attn_case *a)
{
	if (a->mode == POS_RANDOM) {
		int *all = malloc(a->C * sizeof(int));
		for (int i = 0; i < a->C; i++)
			all[i] = i;
		for (int t = 0; t < a->T; t++) {
			int j = t + irand(a->C - t), tmp = all[t];
			all[t] = all[j];
			all[j] = tmp;
			pos[t] = all[t];
		}
		free(all);
		return;
	}
	int gap = a->mode == POS_GAPS ? (a->C - a->p0) / a->T : 1;
	for (int t = 0, p = a->p0; t < a->T; t++, p += gap == 1 ? 1 : 1 + irand(gap))
		pos[t] = p;
}

/* One attention case: a history cache (NaN outside the rows any query may see), the step's k/v written by
 * cuda_kv_store (checked bit for bit against the host), then cuda_attention against cpu_attention on the
 * same f16 cache, once with the GPU's multiprocessor count (splits where few blocks) and once with one
 * (fewer or no splits). */
static void attn_case(const struct attn_case *a)
{
	int T = a->T, H = a->H, Hkv = a->Hkv, Dh = a->Dh, C = a->C, kvd = Hkv * Dh;
	int *pos = malloc(T * sizeof(int));
	make_pos(pos, a);
	int pmin = C, pmax = 0;
	for (int t = 0; t < T; t++) {
		pmin = pos[t] < pmin ? pos[t] : pmin;
		pmax = pos[t] > pmax ? pos[t] : pmax;
	}
	int lo = a->window > 0 && pmin - a->window + 1 > 0 ? pmin - a->window + 1 : 0;
	size_t cn = (size_t)C * kvd;
	uint16_t *kh = malloc(cn * 2), *vh = malloc(cn * 2);
	for (size_t i = 0; i < cn; i++) {
		int row = (int)(i / kvd);
		bool live = row >= lo && row <= pmax;
		kh[i] = live ? f32_to_f16(urand()) : 0x7e00;
		vh[i] = live ? f32_to_f16(urand()) : 0x7e00;
	}
	size_t qn = (size_t)T * H * Dh, sn = (size_t)T * kvd;
	float *q = malloc(qn * sizeof(float)), *k = malloc(sn * sizeof(float)), *v = malloc(sn * sizeof(float));
	fill(q, qn, a->qamp);
	fill(k, sn, 1);
	fill(v, sn, 1);
	uint16_t *dkc = dupload(kh, cn * 2), *dvc = dupload(vh, cn * 2);
	float *dq = dupload(q, qn * sizeof(float)), *dk = dupload(k, sn * sizeof(float)),
	      *dv = dupload(v, sn * sizeof(float)), *dout = dalloc(qn * sizeof(float));
	int *dpos = dupload(pos, T * sizeof(int));
	char what[160];
	snprintf(what, sizeof(what), "attention T=%d H=%d Hkv=%d Dh=%d window=%d pos %d..%d", T, H, Hkv, Dh,
		 a->window, pmin, pmax);

	OP(cuda_kv_store(&ctx, dkc, dvc, dk, dv, dpos, T, kvd));
	for (int t = 0; t < T; t++)
		for (int i = 0; i < kvd; i++) {
			kh[(size_t)pos[t] * kvd + i] = f32_to_f16(k[(size_t)t * kvd + i]);
			vh[(size_t)pos[t] * kvd + i] = f32_to_f16(v[(size_t)t * kvd + i]);
		}
	uint16_t *back = malloc(cn * 2);
	download(back, dkc, cn * 2);
	CHECK_MSG(!memcmp(back, kh, cn * 2), "%s: kv_store keys differ from the host", what);
	download(back, dvc, cn * 2);
	CHECK_MSG(!memcmp(back, vh, cn * 2), "%s: kv_store values differ from the host", what);
	free(back);

	float *kf = malloc(cn * sizeof(float)), *vf = malloc(cn * sizeof(float)), *ref = malloc(qn * sizeof(float));
	cpu_row_to_f32(WFMT_F16, kh, kf, (int64_t)cn);
	cpu_row_to_f32(WFMT_F16, vh, vf, (int64_t)cn);
	float scale = 1.0f / sqrtf((float)Dh);
	int64_t per = pmax + 1;
	float *scratch = malloc((size_t)omp_get_max_threads() * per * sizeof(float));
	cpu_attention(ref, q, kf, vf, pos, T, H, Hkv, Dh, a->window, scale, scratch, per);

	size_t wsb = cuda_attention_ws_bytes(T, C, H, Dh);
	void *ws = wsb ? dalloc(wsb) : NULL;
	for (int pass = 0; pass < 2; pass++) {
		ctx.ws = ws;
		ctx.ws_bytes = wsb;
		ctx.n_sm = pass ? 1 : real_n_sm;
		poison(dout, qn * sizeof(float));
		OP(cuda_attention(&ctx, dout, dq, dkc, dvc, dpos, T, H, Hkv, Dh, a->window, scale, pmax));
		char w2[200];
		snprintf(w2, sizeof(w2), "%s (n_sm %d)", what, ctx.n_sm);
		expect(E_ATTN, w2, dout, ref, qn, 5e-4);
	}
	ctx.n_sm = real_n_sm;
	ctx.ws = NULL;
	ctx.ws_bytes = 0;
	if (ws)
		CU(cudaFree(ws));
	CU(cudaFree(dkc));
	CU(cudaFree(dvc));
	CU(cudaFree(dq));
	CU(cudaFree(dk));
	CU(cudaFree(dv));
	CU(cudaFree(dout));
	CU(cudaFree(dpos));
	free(pos);
	free(kh);
	free(vh);
	free(q);
	free(k);
	free(v);
	free(kf);
	free(vf);
	free(ref);
	free(scratch);
}

static void test_attention(void)
{
	static const struct attn_case cases[] = {
		{300, 8, 2, 128, 0, 512, POS_CONTIG, 0, 1},        /* prefill from 0, 4 query heads per kv head */
		{300, 8, 2, 128, 0, 1024, POS_CONTIG, 337, 1},     /* a chunk after some context */
		{100, 4, 1, 256, 0, 256, POS_CONTIG, 0, 1},        /* Gemma 3 270M heads */
		{100, 4, 1, 256, 32, 1024, POS_CONTIG, 600, 1},    /* its sliding-window layers */
		{17, 8, 8, 64, 5, 64, POS_CONTIG, 3, 1},           /* H == Hkv, a tiny window */
		{1, 64, 8, 128, 0, 8192, POS_CONTIG, 5000, 1},     /* decode, Llama-70B heads */
		{1, 4, 1, 256, 512, 8192, POS_CONTIG, 5000, 1},    /* decode, Gemma window layer */
		{3, 32, 8, 128, 0, 6000, POS_GAPS, 10, 1},         /* positions with gaps */
		{17, 16, 2, 64, 100, 4096, POS_RANDOM, 0, 1},      /* unsorted, 8 per kv head, window */
		{3, 6, 2, 96, 0, 300, POS_GAPS, 0, 1},             /* Dh 96 */
		{17, 10, 5, 160, 7, 400, POS_CONTIG, 50, 1},       /* Dh 160 */
		{1024, 8, 1, 64, 0, 1024, POS_CONTIG, 0, 3},       /* longer prefill, peaky rows */
		{300, 16, 16, 128, 64, 2048, POS_CONTIG, 1000, 2}, /* H == Hkv, window 64 */
		{1, 8, 8, 32, 0, 20000, POS_CONTIG, 19999, 1},     /* Dh 32 at a long position */
		{8, 64, 8, 128, 0, 4096, POS_CONTIG, 4000, 1},     /* a few draft tokens */
		{17, 8, 1, 256, 0, 3000, POS_RANDOM, 0, 1},
	};
	size_t n = sizeof(cases) / sizeof(cases[0]);
	for (size_t i = 0; i < (quick ? 3 : n); i++)
		attn_case(&cases[quick ? 4 + i : i]);
}

/* the errors a launcher must return before launching anything */
static void test_arg_errors(void)
{
	float *d = dalloc(1 << 20);
	uint16_t *c16 = dalloc(1 << 20);
	int *dpos = dalloc(64);
	CU(cudaMemset(dpos, 0, 64));
	CHECK(cuda_attention(&ctx, d, d, c16, c16, dpos, 1, 8, 8, 48, 0, 1, 0) == -EINVAL);
	CHECK(cuda_attention(&ctx, d, d, c16, c16, dpos, 1, 8, 8, 288, 0, 1, 0) == -EINVAL);
	CHECK(cuda_attention(&ctx, d, d, c16, c16, dpos, 1, 6, 4, 64, 0, 1, 0) == -EINVAL);
	CHECK(cuda_attention(&ctx, d, d, c16, c16, dpos, 1, 8, 8, 64, -1, 1, 0) == -EINVAL);
	/* a decode over 2048 keys wants to split them: without room for the partial results, -ENOSPC */
	ctx.ws = d;
	ctx.ws_bytes = 16;
	CHECK(cuda_attention(&ctx, d, d, c16, c16, dpos, 1, 4, 1, 64, 0, 1, 2047) == -ENOSPC);
	ctx.ws = NULL;
	ctx.ws_bytes = 0;
	CHECK(cuda_glu(&ctx, d, d, d, 16, 7) == -EINVAL);
	CHECK(cuda_rmsnorm(&ctx, d, d, d, 9, 1, 16, 1e-6f) == -EINVAL);
	CHECK(cuda_topk(&ctx, d, dpos, d, 1000, 0) == -EINVAL);
	CHECK(cuda_topk(&ctx, d, dpos, d, 4000, 1025) == -EINVAL);
	CHECK(cuda_topk(&ctx, d, dpos, d, 10, 11) == -EINVAL);
	CHECK(cudaStreamSynchronize((cudaStream_t)ctx.stream) == cudaSuccess);
	CU(cudaFree(d));
	CU(cudaFree(c16));
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

static const float *topk_row;

static int topk_cmp(const void *pa, const void *pb)
{
	int a = *(const int *)pa, b = *(const int *)pb;
	if (topk_row[a] != topk_row[b])
		return topk_row[a] > topk_row[b] ? -1 : 1;
	return a < b ? -1 : a > b;
}

static void test_topk(void)
{
	const int Vs[] = {5, 1000, 32000, 262144}, ks[] = {1, 5, 40, 1000, 1024};
	for (int a = 0; a < 4; a++)
		for (int b = 0; b < 5; b++)
			for (int ties = 0; ties < 2; ties++) {
				int V = Vs[a], k = ks[b];
				if (k > V)
					continue;
				float *x = malloc(V * sizeof(float));
				int *order = malloc(V * sizeof(int));
				if (ties)
					fill_logits(x, V, 64);
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
				CHECK_MSG(bad < 0, "topk V=%d k=%d ties=%d: rank %d is %d (%g), expected %d (%g)", V, k, ties,
					  bad, bad < 0 ? 0 : idx[bad], bad < 0 ? 0 : vals[bad], bad < 0 ? 0 : order[bad],
					  bad < 0 ? 0 : x[order[bad]]);
				CU(cudaFree(dx));
				CU(cudaFree(dv));
				CU(cudaFree(di));
				free(x);
				free(order);
				free(vals);
				free(idx);
			}
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

/* attention over L layers' caches in turn, so that a decode's KV bytes come from memory, not L2 */
struct bench_attn {
	float *out, *q;
	uint16_t *kc, *vc;
	int *pos;
	int T, H, Hkv, Dh, window, C, L, next;
};

static void run_attn(void *p)
{
	struct bench_attn *b = p;
	size_t layer = (size_t)(b->next++ % b->L) * b->C * b->Hkv * b->Dh;
	OP(cuda_attention(&ctx, b->out, b->q, b->kc + layer, b->vc + layer, b->pos, b->T, b->H, b->Hkv, b->Dh,
			  b->window, 1.0f / sqrtf((float)b->Dh), b->C - 1));
}

static void bench_attn_setup(struct bench_attn *b)
{
	size_t cn = (size_t)b->L * b->C * b->Hkv * b->Dh, qn = (size_t)b->T * b->H * b->Dh;
	uint16_t *h = malloc(cn * 2);
	for (size_t i = 0; i < cn; i++)
		h[i] = f32_to_f16(urand());
	b->kc = dupload(h, cn * 2);
	b->vc = dupload(h, cn * 2);
	free(h);
	float *q = malloc(qn * sizeof(float));
	fill(q, qn, 1);
	b->q = dupload(q, qn * sizeof(float));
	free(q);
	b->out = dalloc(qn * sizeof(float));
	int *pos = malloc(b->T * sizeof(int));
	for (int t = 0; t < b->T; t++)
		pos[t] = b->C - b->T + t;
	b->pos = dupload(pos, b->T * sizeof(int));
	free(pos);
	size_t wsb = cuda_attention_ws_bytes(b->T, b->C, b->H, b->Dh);
	ctx.ws = wsb ? dalloc(wsb) : NULL;
	ctx.ws_bytes = wsb;
}

static void bench_attn_free(struct bench_attn *b)
{
	CU(cudaFree(b->kc));
	CU(cudaFree(b->vc));
	CU(cudaFree(b->q));
	CU(cudaFree(b->out));
	CU(cudaFree(b->pos));
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
	for (int i = 0; i < 3; i++) {
		struct bench_attn b = {NULL, NULL, NULL, NULL, NULL, pf[i].T, pf[i].H, pf[i].Hkv, pf[i].Dh, pf[i].window,
				       pf[i].T, 1, 0};
		bench_attn_setup(&b);
		float ms = time_ms(run_attn, &b, 10);
		double keys = pf[i].window ? (double)pf[i].window : pf[i].T / 2.0;
		double flops = 4.0 * pf[i].T * keys * pf[i].H * pf[i].Dh;
		printf("attention prefill T=%d H=%d Hkv=%d Dh=%d window=%d (%s): %.3f ms, %.1f TFLOP/s\n", pf[i].T,
		       pf[i].H, pf[i].Hkv, pf[i].Dh, pf[i].window, pf[i].name, ms, flops / (ms * 1e-3) / 1e12);
		bench_attn_free(&b);
	}

	/* decode: one query at position C-1 over C keys, caches of 4 layers in turn (past L2) */
	const struct { int H, Hkv, Dh; const char *name; } dc[] = {{64, 8, 128, "70B heads"}, {4, 1, 256, "Gemma 270M heads"}};
	for (int i = 0; i < 2; i++) {
		struct bench_attn b = {NULL, NULL, NULL, NULL, NULL, 1, dc[i].H, dc[i].Hkv, dc[i].Dh, 0, 32768, 4, 0};
		bench_attn_setup(&b);
		float ms = time_ms(run_attn, &b, 21);
		double bytes = 2.0 * b.C * b.Hkv * b.Dh * 2, gbs = bytes / (ms * 1e-3) / 1e9;
		printf("attention decode C=%d H=%d Hkv=%d Dh=%d (%s): %.1f us, KV %.1f MB, %.0f GB/s, %.2f of copy\n", b.C,
		       b.H, b.Hkv, b.Dh, dc[i].name, ms * 1e3, bytes / 1e6, gbs, gbs / copy_gbs);
		bench_attn_free(&b);
	}

	struct bench_topk tk = {NULL, NULL, NULL, 262144, 1024};
	float *x = malloc(tk.V * sizeof(float));
	fill(x, tk.V, 30);
	tk.x = dupload(x, tk.V * sizeof(float));
	tk.vals = dalloc(tk.k * sizeof(float));
	tk.idx = dalloc(tk.k * sizeof(int));
	printf("topk V=%d k=%d: %.1f us\n", tk.V, tk.k, time_ms(run_topk, &tk, 21) * 1e3);
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
	test_attention();
	test_argmax();
	test_topk();
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
