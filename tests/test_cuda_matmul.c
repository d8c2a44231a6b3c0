/*
 * test_cuda_matmul.c: cuda_matmul (src/kernels/cuda/matmul.cu, matvec.cu) against the CPU's dequantization
 * (cpu_row_to_f32, bit-identical with ggml) and double dots with the f32 x (cpu_matmul itself quantizes x to
 * 8 bits, which the CUDA kernels do not), for every
 * weight format cuda_fmt_supported takes, odd and even shapes, T on both sides of CUDA_MATVEC_T_MAX, with
 * and without a bias (F32/F16/BF16 in turn). Fresh random inputs per case (fixed seed; FERRY_SEED overrides):
 * quantized blocks are random bytes whose f16 scales are set to finite values (the grid IQ formats: any
 * bytes are a valid block), float weights uniform.
 * Each case runs under the default kernel choice (the 8-bit-activation kernels at T <= CUDA_MVQ_T_MAX for the
 * formats that have one, else the crossover table); the quantized formats with an 8-bit kernel also under
 * CUDA_MM_OLD at T <= CUDA_MVQ_T_MAX (the f32 kernels it replaced, still selectable); the quantized formats also under
 * CUDA_MM_MMA, the tensor-core kernel with in-kernel dequantization, at T in {1,2,3,8,16,17,64,100,256}
 * (K an odd multiple of 32 for the 32-blocks: half a tile of k; N off every tile), once with no workspace
 * at all, and a few cases under CUDA_MM_BLAS (cuBLAS at T <= 16, the bench's comparison). The int8 tensor-core
 * kernel (CUDA_MM_Q8MMA, matmul_q8mma.cu) on its formats at T in {1,16,17,64,100,256} (N 7, 33, 1000; K 640 for
 * the 32-blocks: two and a half tiles of 256) and T 512 (N 33): bit for bit cpu_matmul with the portable
 * kernels forced (the same codes, the same f32 expression in the same order), and within 5e-4 of the f32
 * reference.
 * The output is poisoned with NaN before each call. Error: normalized MSE sum((y-ref)^2)/sum(ref^2), at most
 * 1e-10 for the f32 matrix-vector kernels and 5e-4 for the bf16/f16 kernels (tensor-core or cuBLAS), as
 * cuda_matmul_kernel names the one that ran; NaN or inf fails. The 8-bit kernels: at most 5e-4 against the f32
 * reference (x's 8-bit quantization: |x - dx a| <= dx/2 per value) and at most 1e-9 against cpu_matmul, which
 * quantizes x the same way (bit for bit, tests/test_cuda_mvq_host.cpp) and sums the same exact integer dots in
 * another f32 order (a few 2^-24 relative per block: ~1e-13 expected); x has a zero block (amax 0). On a device of cc >= 80 the tensor-core
 * kernel must have run (a build without sm_80+ code fails here rather than test nothing).
 * Every QUANT/QMIN format must have an 8-bit kernel (cuda_mvq_runs).
 * The 8-bit x kept from one call to the next (q, k, v over one x): bytes identical to fresh quantizations, fewer
 * launches, quantized again after a kernel or an upload wrote x or T changed (check_xq_reuse).
 * Also: a K that is not a multiple of the block gives -EINVAL, a workspace one byte short gives -ENOSPC (the
 * GEMM path's and the 8-bit kernels').
 * `--quick` (for compute-sanitizer): the tensor-core sweep of Q4_K and Q8_0, the error cases and the cuBLAS ones.
 * Exit 0 pass, 1 fail, 77 without CUDA or a device.
 */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FERRY_CUDA
int main(void)
{
	printf("test_cuda_matmul: built without CUDA, skipped\n");
	return 77;
}
#else
#include "host_rand.h"
#include "kernels/cuda/cuda_blas.h"
#include <cuda_runtime_api.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/qdot.h"
#include "kernels/cuda/cuda_exit.h"
#include "kernels/cuda/cuda_ops.h"
#include "layout/quant.h"
#include "layout/wfmt.h"

#define GEMM_ROWS 256 /* small, so that N = 640 and 1000 take several chunks */

/* uniform in [-1, 1) */
static float rng_unit(void)
{
	return (float)(rng_next() >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

static void put_f16(uint8_t *p, float v)
{
	uint16_t h = f32_to_f16(v);
	memcpy(p, &h, 2);
}

/* n values of format fmt at w: random, finite, O(1) once dequantized */
static void fill_weights(uint8_t *w, int fmt, size_t n)
{
	size_t bb = wfmt_table[fmt].block_bytes, nb = n / wfmt_table[fmt].block;
	if (fmt == WFMT_F32) {
		for (size_t i = 0; i < n; i++) {
			float v = rng_unit();
			memcpy(w + 4 * i, &v, 4);
		}
		return;
	}
	if (fmt == WFMT_F16 || fmt == WFMT_BF16) {
		for (size_t i = 0; i < n; i++) {
			uint16_t h = fmt == WFMT_F16 ? f32_to_f16(rng_unit()) : f32_to_bf16(rng_unit());
			memcpy(w + 2 * i, &h, 2);
		}
		return;
	}
	for (size_t i = 0; i < nb * bb; i++)
		w[i] = (uint8_t)(rng_next() >> 56);
	for (size_t b = 0; b < nb; b++) {
		uint8_t *p = w + b * bb;
		float d = 0.05f + 0.05f * rng_unit(); /* the scales: a spread, positive and negative for the 0 formats */
		switch (fmt) {
		case WFMT_Q8_0:
			put_f16(p, d * 0.1f);
			break;
		case WFMT_Q4_0:
		case WFMT_Q5_0:
			put_f16(p, rng_unit() * 0.2f);
			break;
		case WFMT_Q4_K:
		case WFMT_Q5_K:
			put_f16(p, d * 0.1f);
			put_f16(p + 2, d * 0.2f);
			break;
		case WFMT_Q6_K:
			put_f16(p + 208, d * 0.01f);
			break;
		case WFMT_IQ2_XXS:
		case WFMT_IQ2_XS:
		case WFMT_IQ2_S:
		case WFMT_IQ3_XXS:
		case WFMT_IQ3_S:
		case WFMT_IQ1_S:
			put_f16(p, d * 0.01f);
			break;
		case WFMT_IQ1_M: { /* d in the top nibbles of the 4 scale words at 48 (quant_iq.h) */
			uint16_t h = f32_to_f16(d * 0.01f);
			for (int i = 0; i < 4; i++)
				p[49 + 2 * i] = (uint8_t)((p[49 + 2 * i] & 15) | (h >> 4 * i & 15) << 4);
			break;
		}
		case WFMT_Q4_1:
		case WFMT_Q5_1:
			put_f16(p, d * 0.1f);
			put_f16(p + 2, -d); /* the min: values on both sides of 0 */
			break;
		case WFMT_NF4:
		case WFMT_BNB_FP4: { /* f32 absmax */
			float a = 0.05f + d;
			memcpy(p, &a, 4);
			break;
		}
		case WFMT_Q4_Z:
		case WFMT_Q8_Z:
		case WFMT_Q4_Z128:
		case WFMT_Q8_Z128: { /* zero points as GPTQ/AWQ give them: 0..16, -128..128 */
			bool four = fmt == WFMT_Q4_Z || fmt == WFMT_Q4_Z128;
			int16_t z = (int16_t)(four ? (int)(rng_next() >> 59) % 17 : (int)(rng_next() >> 55) - 128);
			put_f16(p, d * (four ? 0.1f : 0.01f));
			memcpy(p + 2, &z, 2);
			break;
		}
		case WFMT_Q2_K:
			put_f16(p + 80, d * 0.1f);
			put_f16(p + 82, d * 0.1f);
			break;
		case WFMT_Q3_K:
			put_f16(p + 108, d * 0.01f);
			break;
		case WFMT_IQ4_NL:
			put_f16(p, d * 0.01f);
			break;
		case WFMT_IQ4_XS:
			put_f16(p, d * 0.001f);
			break;
		case WFMT_MXFP4: /* e8m0: 2^(e - 128), here 2^-6 .. 2^-3 */
			p[0] = (uint8_t)(122 + (rng_next() >> 62));
			break;
		case WFMT_TQ1_0:
			put_f16(p + 52, d);
			break;
		case WFMT_TQ2_0:
			put_f16(p + 64, d);
			break;
		default: /* a new quantized format needs its scales set here */
			fprintf(stderr, "test_cuda_matmul: no scales for %s\n", wfmt_name(fmt));
			exit(1);
		}
	}
}

static int failures, cases, kern_cases[CUDA_MMK_COUNT]; /* by enum cuda_mm_kernel */
static double mvq_worst; /* the 8-bit kernels' largest normalized MSE against cpu_matmul */
static int q8_inexact;   /* int8 tensor-core outputs not bit-identical with the portable cpu_matmul */

/* y on the GPU, ref on the CPU; returns the normalized MSE, or INFINITY for a NaN/inf. The normalization is
 * the larger of sum ref^2 and sum sq (each output's sum of squared terms w_k x_k, what ref^2 is on average for
 * terms of random sign): a few outputs whose sums nearly cancel (N = 1: one) do not make the bound meant for
 * rounding a bound on a cancelled value. */
static double nmse(const float *y, const float *ref, const double *sq, size_t n)
{
	double e = 0, r = 0, q = 0;
	for (size_t i = 0; i < n; i++) {
		if (!isfinite(y[i]))
			return INFINITY;
		double d = (double)y[i] - (double)ref[i];
		e += d * d;
		r += (double)ref[i] * (double)ref[i];
		q += sq[i];
	}
	r = r > q ? r : q;
	return r > 0 ? e / r : e;
}


struct bufs {
	uint8_t *hw, *hb;                /* host weights, bias */
	float *hx, *hy, *href, *wf; /* host x, GPU result, reference, the weights dequantized */
	float *hq8;                 /* cpu_matmul's result (x quantized to 8 bits as the 8-bit kernels do) */
	void *cpu_ws;               /* its workspace */
	double *hsq;                /* per output: the sum of its squared terms (nmse) */
	void *dw, *db;
	float *dx, *dy;
};

static void run_case(struct cuda_ctx *c, struct bufs *b, int fmt, int N, int K, int T, int bias_fmt)
{
	size_t wbytes = wfmt_row_bytes(fmt, (uint64_t)K) * (size_t)N;
	fill_weights(b->hw, fmt, (size_t)N * (size_t)K);
	for (size_t i = 0; i < (size_t)T * (size_t)K; i++)
		b->hx[i] = K >= 64 && i >= 32 && i < 64 ? 0.0f : rng_unit(); /* token 0's second 32 values: a zero block */
	if (bias_fmt >= 0)
		fill_weights(b->hb, bias_fmt, (size_t)N);
	const void *bias = bias_fmt >= 0 ? b->hb : NULL;
	size_t rb = wfmt_row_bytes(fmt, (uint64_t)K), bb = bias ? wfmt_row_bytes(bias_fmt, 1) : 0;
#pragma omp parallel for schedule(dynamic, 8)
	for (int n = 0; n < N; n++) {
		float bv = 0, *row = b->wf + (size_t)n * (size_t)K;
		if (bias)
			cpu_row_to_f32(bias_fmt, b->hb + (size_t)n * bb, &bv, 1);
		cpu_row_to_f32(fmt, b->hw + (size_t)n * rb, row, K);
		for (int t = 0; t < T; t++) {
			double acc = bv, sq = bv * (double)bv;
			for (int k = 0; k < K; k++) {
				double v = (double)row[k] * b->hx[(size_t)t * (size_t)K + (size_t)k];
				acc += v;
				sq += v * v;
			}
			b->href[(size_t)t * (size_t)N + (size_t)n] = (float)acc;
			b->hsq[(size_t)t * (size_t)N + (size_t)n] = sq;
		}
	}

	CU(cudaMemcpy(b->dw, b->hw, wbytes, cudaMemcpyHostToDevice));
	CU(cudaMemcpy(b->dx, b->hx, sizeof(float) * (size_t)T * (size_t)K, cudaMemcpyHostToDevice));
	CU(cudaMemcpy(b->db, b->hb, 4 * (size_t)N, cudaMemcpyHostToDevice));
	CU(cudaMemset(b->dy, 0xff, sizeof(float) * (size_t)T * (size_t)N)); /* all ones: NaN */
	int kern = cuda_matmul_kernel(c, fmt, T);
	int rc = cuda_matmul(c, b->dy, b->dx, b->dw, fmt, N, K, bias_fmt >= 0 ? b->db : NULL, bias_fmt, T);
	cases++;
	kern_cases[kern]++;
	if (rc) {
		fprintf(stderr, "FAIL %s N=%d K=%d T=%d bias=%d mode %d: rc %d: %s\n", wfmt_name(fmt), N, K, T, bias_fmt,
			c->mm_mode, rc, c->err);
		failures++;
		return;
	}
	CU(cudaStreamSynchronize((cudaStream_t)c->stream));
	CU(cudaMemcpy(b->hy, b->dy, sizeof(float) * (size_t)T * (size_t)N, cudaMemcpyDeviceToHost));
	double e = nmse(b->hy, b->href, b->hsq, (size_t)T * (size_t)N), lim = kern == CUDA_MMK_MATVEC ? 1e-10 : 5e-4;
	if (!(e <= lim)) {
		fprintf(stderr, "FAIL %s N=%d K=%d T=%d bias=%d mode %d kernel %d: normalized MSE %.3g > %.0e\n",
			wfmt_name(fmt), N, K, T, bias_fmt, c->mm_mode, kern, e, lim);
		failures++;
	}
	if (kern == CUDA_MMK_MVQ) { /* against the CPU's matmul on the same 8-bit codes */
		cpu_matmul(b->hq8, b->hx, b->hw, fmt, bias, bias_fmt, T, N, K, b->cpu_ws);
		double e8 = nmse(b->hy, b->hq8, b->hsq, (size_t)T * (size_t)N);
		if (!(e8 <= 1e-9)) {
			fprintf(stderr, "FAIL %s N=%d K=%d T=%d bias=%d 8-bit kernel: normalized MSE %.3g vs cpu_matmul > 1e-9\n",
				wfmt_name(fmt), N, K, T, bias_fmt, e8);
			failures++;
		}
		mvq_worst = e8 > mvq_worst ? e8 : mvq_worst;
	}
	if (kern == CUDA_MMK_Q8MMA) { /* the portable CPU kernels' bytes */
		cpu_qdot_force_isa(CPU_ISA_PORTABLE);
		cpu_matmul(b->hq8, b->hx, b->hw, fmt, bias, bias_fmt, T, N, K, b->cpu_ws);
		cpu_qdot_force_isa(-1);
		int off = 0;
		for (size_t i = 0; i < (size_t)T * (size_t)N; i++)
			if (memcmp(&b->hy[i], &b->hq8[i], 4) && off++ < 2)
				fprintf(stderr, "FAIL %s N=%d K=%d T=%d bias=%d int8 tensor cores: y[%zu] = %.9g, portable "
						"cpu_matmul %.9g\n",
					wfmt_name(fmt), N, K, T, bias_fmt, i, b->hy[i], b->hq8[i]);
		failures += off > 0;
		q8_inexact += off;
	}
}

/* -EINVAL for a K off the block, -ENOSPC for a workspace one byte short; nothing launched either way */
static void check_errors(struct cuda_ctx *c, struct bufs *b)
{
	int rc = cuda_matmul(c, b->dy, b->dx, b->dw, WFMT_Q4_K, 8, 300, NULL, 0, 1);
	cases++;
	if (rc != -EINVAL) {
		fprintf(stderr, "FAIL Q4_K K=300: rc %d, expected -EINVAL\n", rc);
		failures++;
	}
	rc = cuda_matmul(c, b->dy, b->dx, b->dw, WFMT_BF16, 8, 32, NULL, 0, 0);
	cases++;
	if (rc != -EINVAL) {
		fprintf(stderr, "FAIL T=0: rc %d, expected -EINVAL\n", rc);
		failures++;
	}
	size_t keep = c->ws_bytes;
	int T = 40, K = 2048, N = 300;
	size_t need = cuda_matmul_ws_bytes(T, K, (size_t)(N < GEMM_ROWS ? N : GEMM_ROWS));
	c->ws_bytes = need - 1;
	c->mm_mode = CUDA_MM_OLD; /* the cuBLAS path: the tensor-core kernel needs no workspace */
	rc = cuda_matmul(c, b->dy, b->dx, b->dw, WFMT_Q4_K, N, K, NULL, 0, T);
	c->mm_mode = CUDA_MM_AUTO;
	cases++;
	if (rc != -ENOSPC) {
		fprintf(stderr, "FAIL workspace %zu of %zu: rc %d, expected -ENOSPC\n", need - 1, need, rc);
		failures++;
	}
	/* the 8-bit kernels: codes and scales of T = 8 tokens of K = 2048 */
	need = cuda_matmul_ws_bytes(CUDA_MVQ_T_MAX, K, 0);
	c->ws_bytes = need - 1;
	rc = cuda_matmul(c, b->dy, b->dx, b->dw, WFMT_Q4_K, N, K, NULL, 0, CUDA_MVQ_T_MAX);
	cases++;
	if (rc != -ENOSPC) {
		fprintf(stderr, "FAIL 8-bit kernel, workspace %zu of %zu: rc %d, expected -ENOSPC\n", need - 1, need, rc);
		failures++;
	}
	/* the int8 tensor-core kernel: codes and scales of T = 40 tokens */
	if (cuda_q8mma_runs(c, WFMT_Q4_K)) {
		c->ws_bytes = cuda_mvq_ws_bytes(T, K) - 1;
		c->mm_mode = CUDA_MM_Q8MMA;
		rc = cuda_matmul(c, b->dy, b->dx, b->dw, WFMT_Q4_K, N, K, NULL, 0, T);
		c->mm_mode = CUDA_MM_AUTO;
		cases++;
		if (rc != -ENOSPC) {
			fprintf(stderr, "FAIL int8 tensor cores, workspace %zu short by one: rc %d, expected -ENOSPC\n",
				c->ws_bytes, rc);
			failures++;
		}
	}
	c->ws_bytes = keep;
	CU(cudaStreamSynchronize((cudaStream_t)c->stream));
}

/* The 8-bit x kept between calls (matvec_q8.cu, c->xq_*): q, k, v-like calls over one x (Q4_K, Q6_K, Q4_K: one
 * 256-block quantization; then Q8_0: a 32-block one) give bytes identical to calls that each quantize, with 2
 * quantize launches instead of 4; x changed by a kernel, a new T, or an upload announced by cuda_xq_forget
 * quantize again (the result equals a fresh call on the new x, never the stale codes). */
static int xq_calls(struct cuda_ctx *c, struct bufs *b, const int *fmt, const int *N, const size_t *off, int n,
		    int K, int T, float *host)
{
	size_t at = 0;
	for (int i = 0; i < n; i++) {
		int rc = cuda_matmul(c, b->dy + at, b->dx, (char *)b->dw + off[i], fmt[i], N[i], K, NULL, 0, T);
		if (rc) {
			fprintf(stderr, "FAIL xq reuse: cuda_matmul %s rc %d: %s\n", wfmt_name(fmt[i]), rc, c->err);
			failures++;
			return -1;
		}
		at += (size_t)T * (size_t)N[i];
	}
	CU(cudaMemcpy(host, b->dy, sizeof(float) * at, cudaMemcpyDeviceToHost));
	return (int)at;
}

static void xq_expect(bool ok, const char *what)
{
	cases++;
	if (!ok) {
		fprintf(stderr, "FAIL xq reuse: %s\n", what);
		failures++;
	}
}

/* The first call of fmt/N/off over x at T must quantize again (what: the case), and give a fresh call's bytes;
 * leaves reuse on. */
static void xq_fresh(struct cuda_ctx *c, struct bufs *b, const int *fmt, const int *N, const size_t *off, int K, int T,
		     const char *what)
{
	char msg[128];
	unsigned long long r0 = c->xq_reused;
	c->xq_reuse = true;
	xq_calls(c, b, fmt, N, off, 1, K, T, b->hy);
	snprintf(msg, sizeof(msg), "codes kept %s", what);
	xq_expect(c->xq_reused == r0, msg);
	c->xq_reuse = false;
	xq_calls(c, b, fmt, N, off, 1, K, T, b->href);
	snprintf(msg, sizeof(msg), "stale codes %s", what);
	xq_expect(!memcmp(b->hy, b->href, sizeof(float) * (size_t)T * N[0]), msg);
	c->xq_reuse = true;
}

static void check_xq_reuse(struct cuda_ctx *c, struct bufs *b)
{
	enum { NC = 4 };
	const int T = 3, K = 2048, fmt[NC] = {WFMT_Q4_K, WFMT_Q6_K, WFMT_Q4_K, WFMT_Q8_0}, N[NC] = {257, 100, 64, 33};
	size_t off[NC + 1] = {0};
	for (int i = 0; i < NC; i++) {
		size_t bytes = wfmt_row_bytes(fmt[i], (uint64_t)K) * (size_t)N[i];
		fill_weights(b->hw + off[i], fmt[i], (size_t)N[i] * (size_t)K);
		off[i + 1] = off[i] + (bytes + 255) / 256 * 256;
	}
	for (size_t i = 0; i < 2 * (size_t)T * K; i++) /* x, then what the kernel adds to it */
		b->hx[i] = rng_unit();
	float *dx2 = b->dx + (size_t)T * K;
	CU(cudaMemcpy(b->dw, b->hw, off[NC], cudaMemcpyHostToDevice));
	CU(cudaMemcpy(b->dx, b->hx, sizeof(float) * 2 * (size_t)T * K, cudaMemcpyHostToDevice));

	c->xq_reuse = false;
	int n = xq_calls(c, b, fmt, N, off, NC, K, T, b->href);
	c->xq_reuse = true;
	cuda_xq_forget(c);
	unsigned long long l0 = c->launches, r0 = c->xq_reused;
	if (n < 0 || xq_calls(c, b, fmt, N, off, NC, K, T, b->hy) != n)
		return;
	xq_expect(!memcmp(b->hy, b->href, sizeof(float) * (size_t)n), "kept codes give other bytes than fresh ones");
	xq_expect(c->launches - l0 == NC + 2 && c->xq_reused - r0 == 2, "expected 6 launches and 2 quantizations kept");

	/* x changed by a kernel in between: the Q4_K call quantizes again */
	xq_calls(c, b, fmt, N, off, 1, K, T, b->hy);
	xq_expect(cuda_add(c, b->dx, dx2, (int64_t)T * K) == 0, "cuda_add");
	xq_fresh(c, b, fmt, N, off, K, T, "after a kernel wrote x");
	/* the same x at another T */
	xq_calls(c, b, fmt, N, off, 1, K, T, b->hy);
	xq_fresh(c, b, fmt, N, off, K, T - 1, "for T=2 after T=3");
	/* x rewritten by a copy (no launch), announced as the backend's upload does */
	xq_calls(c, b, fmt, N, off, 1, K, T, b->hy);
	CU(cudaMemcpy(b->dx, dx2, sizeof(float) * (size_t)T * K, cudaMemcpyDeviceToDevice));
	cuda_xq_forget(c);
	xq_fresh(c, b, fmt, N, off, K, T, "after an upload");
	c->xq_reuse = false;
}

int main(int argc, char **argv)
{
	int ndev = 0;
	/* --quick (for compute-sanitizer): the tensor-core sweep of Q4_K and Q8_0 alone */
	bool quick = argc > 1 && !strcmp(argv[1], "--quick");
	if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev <= 0) {
		printf("test_cuda_matmul: no CUDA device, skipped\n");
		return 77;
	}
	const char *seed_env = getenv("FERRY_SEED");
	rng_state = seed_env ? strtoull(seed_env, NULL, 0) : 0x9e3779b97f4a7c15ull;
	if (!rng_state)
		rng_state = 1;

	static const int Ns[] = {1, 7, 33, 640, 1000};
	static const int Ts[] = {1, 2, 3, 5, 8, 16, 17, 33, 100};
	static const int Ns_mma[] = {7, 33, 1000}, Ts_mma[] = {1, 2, 3, 8, 16, 17, 64, 100, 256};
	static const int Ts_q8[] = {1, 16, 17, 64, 100, 256};
	static const int K_float[] = {7, 33, 640, 1000}, K_q32[] = {32, 96, 640}, K_k[] = {256, 2048, 5120};
	const int T_max = 512, K_max = 5120, N_max = 1000;

	struct cudaDeviceProp prop;
	CU(cudaGetDeviceProperties(&prop, 0));
	cudaStream_t stream;
	CU(cudaStreamCreate(&stream));
	cublasHandle_t h;
	char berr[256];
	const struct cuda_blas *bl = cuda_blas_get(berr, sizeof(berr));
	if (!bl || bl->create(&h) != CUBLAS_STATUS_SUCCESS || bl->set_stream(h, stream) != CUBLAS_STATUS_SUCCESS) {
		fprintf(stderr, "cuBLAS: %s\n", bl ? "create failed" : berr);
		return 1;
	}
	struct cuda_ctx c = {.stream = stream, .cublas = h, .cc = prop.major * 10 + prop.minor,
			     .n_sm = prop.multiProcessorCount, .gemm_rows = GEMM_ROWS, .mvq_all = true};
	c.ws_bytes = cuda_matmul_ws_bytes(T_max, K_max, GEMM_ROWS);
	CU(cudaMalloc(&c.ws, c.ws_bytes));

	struct bufs b;
	size_t wmax = (size_t)N_max * (size_t)K_max * 4;
	b.hw = malloc(wmax);
	b.hb = malloc(4 * (size_t)N_max);
	b.hx = malloc(sizeof(float) * (size_t)T_max * K_max);
	b.hy = malloc(sizeof(float) * (size_t)T_max * N_max);
	b.href = malloc(sizeof(float) * (size_t)T_max * N_max);
	b.hsq = malloc(sizeof(double) * (size_t)T_max * N_max);
	b.wf = malloc(sizeof(float) * (size_t)N_max * (size_t)K_max);
	b.hq8 = malloc(sizeof(float) * (size_t)T_max * N_max);
	b.cpu_ws = aligned_alloc(64, (cpu_matmul_ws_bytes(K_max) + 63) / 64 * 64);
	if (!b.hw || !b.hb || !b.hx || !b.hy || !b.href || !b.hsq || !b.wf || !b.hq8 || !b.cpu_ws) {
		fprintf(stderr, "out of host memory\n");
		return 1;
	}
	CU(cudaMalloc(&b.dw, wmax));
	CU(cudaMalloc(&b.db, 4 * (size_t)N_max));
	CU(cudaMalloc((void **)&b.dx, sizeof(float) * (size_t)T_max * K_max));
	CU(cudaMalloc((void **)&b.dy, sizeof(float) * (size_t)T_max * N_max));

	check_errors(&c, &b);
	check_xq_reuse(&c, &b);
	int turn = 0;
	int fmts[WFMT_COUNT], n_fmts = wfmt_sorted(fmts, 0);
	for (int fi = 0; fi < n_fmts && !quick; fi++) {
		int fmt = fmts[fi];
		if (!cuda_fmt_supported(fmt))
			continue;
		const int *Ks = wfmt_table[fmt].block == 1 ? K_float : wfmt_table[fmt].block == QK ? K_q32 : K_k;
		int nK = wfmt_table[fmt].block == 1 ? 4 : 3;
		for (int ki = 0; ki < nK; ki++)
			for (size_t ni = 0; ni < sizeof(Ns) / sizeof(Ns[0]); ni++)
				for (size_t ti = 0; ti < sizeof(Ts) / sizeof(Ts[0]); ti++) {
					/* no bias, F32, F16, BF16 in turn */
					int bias_fmt = turn % 4 == 0 ? -1 : turn % 4 - 1;
					turn++;
					run_case(&c, &b, fmt, Ns[ni], Ks[ki], Ts[ti], bias_fmt);
				}
	}
	/* the f32 matrix-vector kernels where the 8-bit ones replaced them (FERRY_MATMUL=old) */
	c.mm_mode = CUDA_MM_OLD;
	for (int fi = 0; fi < n_fmts && !quick; fi++) {
		int fmt = fmts[fi];
		if (!cuda_fmt_supported(fmt) || !cuda_mvq_runs(fmt))
			continue;
		int K = wfmt_table[fmt].block == QK ? 640 : 2048;
		for (int T = 1; T <= CUDA_MVQ_T_MAX; T *= 2)
			run_case(&c, &b, fmt, 33, K, T, turn++ % 2 ? -1 : 0);
	}
	/* the 8-bit kernels once more on rows of the 8B model's shape at every T up to CUDA_MVQ_T_MAX */
	c.mm_mode = CUDA_MM_AUTO;
	for (int fi = 0; fi < n_fmts; fi++) {
		int fmt = fmts[fi];
		if (!cuda_fmt_supported(fmt) || !cuda_mvq_runs(fmt) || (quick && fmt != WFMT_Q4_K && fmt != WFMT_Q6_K))
			continue;
		for (int T = 1; T <= CUDA_MVQ_T_MAX; T++)
			run_case(&c, &b, fmt, 257, 4096, T, -1);
	}
	/* the tensor-core kernel wherever it runs; then cuBLAS at small T */
	c.mm_mode = CUDA_MM_MMA;
	for (int fi = 0; fi < n_fmts; fi++) {
		int fmt = fmts[fi];
		if (!cuda_fmt_supported(fmt) || wfmt_table[fmt].block == 1 ||
		    (quick && fmt != WFMT_Q4_K && fmt != WFMT_Q8_0))
			continue;
		const int *Ks = wfmt_table[fmt].block == QK ? K_q32 : K_k;
		for (int ki = 0; ki < 3; ki++)
			for (size_t ni = 0; ni < sizeof(Ns_mma) / sizeof(Ns_mma[0]); ni++)
				for (size_t ti = 0; ti < sizeof(Ts_mma) / sizeof(Ts_mma[0]); ti++) {
					int bias_fmt = turn % 4 == 0 ? -1 : turn % 4 - 1;
					turn++;
					run_case(&c, &b, fmt, Ns_mma[ni], Ks[ki], Ts_mma[ti], bias_fmt);
				}
	}
	/* the int8 tensor-core kernel on its formats */
	c.mm_mode = CUDA_MM_Q8MMA;
	for (int fi = 0; fi < n_fmts; fi++) {
		int fmt = fmts[fi];
		if (!cuda_q8mma_runs(&c, fmt) || (quick && fmt != WFMT_Q4_K && fmt != WFMT_Q8_0))
			continue;
		const int *Ks = wfmt_table[fmt].block == QK ? K_q32 : K_k;
		for (int ki = 0; ki < 3; ki++) {
			for (size_t ni = 0; ni < sizeof(Ns_mma) / sizeof(Ns_mma[0]); ni++)
				for (size_t ti = 0; ti < sizeof(Ts_q8) / sizeof(Ts_q8[0]); ti++) {
					int bias_fmt = turn % 4 == 0 ? -1 : turn % 4 - 1;
					turn++;
					run_case(&c, &b, fmt, Ns_mma[ni], Ks[ki], Ts_q8[ti], bias_fmt);
				}
			run_case(&c, &b, fmt, 33, Ks[ki], 512, turn++ % 2 ? -1 : 0);
		}
	}
	void *ws = c.ws;
	size_t ws_bytes = c.ws_bytes;
	c.ws = NULL, c.ws_bytes = 0; /* the (bf16) tensor-core kernel takes no workspace; the int8 one does */
	c.mm_mode = CUDA_MM_MMA;
	run_case(&c, &b, WFMT_Q4_K, 1000, 2048, 100, -1);
	c.ws = ws, c.ws_bytes = ws_bytes;
	c.mm_mode = CUDA_MM_BLAS;
	static const int blas_fmts[] = {WFMT_Q4_K, WFMT_Q8_0, WFMT_BF16};
	for (int fi = 0; fi < 3; fi++)
		for (int T = 1; T <= 16; T *= 4)
			run_case(&c, &b, blas_fmts[fi], 33, wfmt_table[blas_fmts[fi]].block == QK ? 96 : 256, T, -1);
	c.mm_mode = CUDA_MM_AUTO;
	if (c.cc >= 80 && !kern_cases[CUDA_MMK_MMA]) {
		fprintf(stderr, "FAIL: cc %d but the tensor-core kernel never ran: this build has no sm_80+ code "
				"(make CUDA_ARCHS=\"80 90\")\n", c.cc);
		failures++;
	}
	if (c.cc >= 80 && !kern_cases[CUDA_MMK_Q8MMA]) {
		fprintf(stderr, "FAIL: cc %d but the int8 tensor-core kernel never ran: this build has no sm_80+ code "
				"(make CUDA_ARCHS=\"80 90\")\n", c.cc);
		failures++;
	}
	/* issue 23: every QUANT and QMIN format (8-bit dots on the CPU) has an 8-bit kernel */
#define QDOT_ROW(id, code, block, bytes, ggml, kind, k) WFMT_QDOT_##kind(true, false),
	static const bool qdot_fmt[WFMT_COUNT] = {WFMT_LIST(QDOT_ROW)};
#undef QDOT_ROW
	for (int f = 0; f < WFMT_COUNT; f++) {
		if (qdot_fmt[f] && !cuda_mvq_runs(f)) {
			fprintf(stderr, "FAIL: %s has no 8-bit matrix-vector kernel\n", wfmt_name(f));
			failures++;
		}
	}
	if (!kern_cases[CUDA_MMK_MVQ]) {
		fprintf(stderr, "FAIL: the 8-bit matrix-vector kernels never ran\n");
		failures++;
	}
	printf("test_cuda_matmul: %s, %d cases (matvec %d, 8-bit matvec %d, tensor-core %d, int8 tensor-core %d, "
	       "cuBLAS %d), %d failed (8-bit vs cpu_matmul: worst normalized MSE %.2g; int8 tensor-core outputs not "
	       "bit-identical with the portable cpu_matmul: %d; seed %s)\n",
	       prop.name, cases, kern_cases[CUDA_MMK_MATVEC], kern_cases[CUDA_MMK_MVQ], kern_cases[CUDA_MMK_MMA],
	       kern_cases[CUDA_MMK_Q8MMA], kern_cases[CUDA_MMK_BLAS], failures, mvq_worst, q8_inexact,
	       seed_env ? seed_env : "default");
	cudaFree(b.dw), cudaFree(b.db), cudaFree(b.dx), cudaFree(b.dy), cudaFree(c.ws);
	bl->destroy(h);
	cudaStreamDestroy(stream);
	free(b.hw), free(b.hb), free(b.hx), free(b.hy), free(b.href), free(b.hsq), free(b.wf), free(b.hq8), free(b.cpu_ws);
	return failures ? 1 : 0;
}
#endif
