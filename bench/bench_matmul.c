/*
 * bench_matmul.c: cpu_matmul throughput per weight format against this machine's read bandwidth
 * (`make bench-matmul`, or build/bench/bench_matmul [T [FORMAT [CASE]]]: CASE a prefix of the cases' names, e.g.
 * "qwen"; results in bench/RESULTS.md).
 *
 * Decode (T = 1) reads every weight byte once per token, so its floor is weight bytes / read bandwidth.
 * The bandwidth is measured as bench/cpu_peak.c does (bench_util.h), right before and right after the
 * matmuls; the floor uses their mean. Each matrix is cycled through enough copies to pass 256 MiB, so
 * every call reads its weights from RAM as a streamed layer does ("cold"); "hot" repeats one copy (the
 * small Gemma matrices then sit in the caches).
 * Prints per case: GB/s of weight bytes, the floor in GB/s, ratio = measured / floor, and GFLOP/s (2 N K T).
 * Weights are random bytes with valid f16 scales; values do not change the work. A FORMAT none of the cases
 * below names runs the large 16384x4096 shape.
 */
#include <omp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "kernels/cpu/cpu_ops.h"
#include "layout/wfmt.h"

struct bench_case {
	const char *what;
	int fmt, N, K;
};

static const struct bench_case cases[] = {
	{"large 16384x4096", WFMT_Q8_0, 16384, 4096},
	{"large 16384x4096", WFMT_Q4_0, 16384, 4096},
	{"large 16384x4096", WFMT_Q5_0, 16384, 4096},
	{"large 16384x4096", WFMT_Q4_K, 16384, 4096},
	{"large 16384x4096", WFMT_Q5_K, 16384, 4096},
	{"large 16384x4096", WFMT_Q6_K, 16384, 4096},
	{"large 16384x4096", WFMT_Q4_1, 16384, 4096},
	{"large 16384x4096", WFMT_Q5_1, 16384, 4096},
	{"large 16384x4096", WFMT_Q2_K, 16384, 4096},
	{"large 16384x4096", WFMT_Q3_K, 16384, 4096},
	{"large 16384x4096", WFMT_IQ4_NL, 16384, 4096},
	{"large 16384x4096", WFMT_IQ4_XS, 16384, 4096},
	{"large 16384x4096", WFMT_MXFP4, 16384, 4096},
	{"large 16384x4096", WFMT_TQ1_0, 16384, 4096},
	{"large 16384x4096", WFMT_TQ2_0, 16384, 4096},
	{"large 16384x4096", WFMT_BF16, 16384, 4096},
	{"large 65536x640", WFMT_Q8_0, 65536, 640},
	{"large 65536x640", WFMT_Q5_0, 65536, 640},
	{"gemma attn_q", WFMT_Q5_0, 1024, 640},
	{"gemma attn_k/v", WFMT_Q5_0, 256, 640},
	{"gemma attn_k/v", WFMT_Q8_0, 256, 640},
	{"gemma attn_output", WFMT_Q4_K, 640, 1024},
	{"gemma ffn_gate/up", WFMT_Q5_0, 2048, 640},
	{"gemma ffn_down", WFMT_Q4_K, 640, 2048},
	{"gemma ffn_down", WFMT_Q6_K, 640, 2048},
	{"gemma output head", WFMT_Q8_0, 262144, 640},
	{"qwen1.5b attn_q/output", WFMT_Q4_K, 1536, 1536},
	{"qwen1.5b attn_k/v", WFMT_Q4_K, 256, 1536},
	{"qwen1.5b attn_v", WFMT_Q6_K, 256, 1536},
	{"qwen1.5b ffn_gate/up", WFMT_Q4_K, 8960, 1536},
	{"qwen1.5b ffn_down", WFMT_Q4_K, 1536, 8960},
	{"qwen1.5b ffn_down", WFMT_Q6_K, 1536, 8960},
	{"qwen1.5b ffn_down", WFMT_Q5_K, 1536, 8960},
};

/* Random weight bytes; every block's f16 scale fields set to small normal values. */
static void fill_weights(uint8_t *w, size_t bytes, int fmt, unsigned *seed)
{
	for (size_t i = 0; i < bytes; i++)
		w[i] = (uint8_t)rand_r(seed);
	if (fmt == WFMT_BF16 || fmt == WFMT_F16) {
		for (size_t i = 0; i + 1 < bytes; i += 2)
			w[i + 1] = (uint8_t)(0x3c + (w[i + 1] & 1)); /* bf16 ~1e-2 .. 1e-1 magnitudes, no nan */
		return;
	}
	bench_set_scales(w, bytes, fmt, f32_to_f16(0.01f));
}

/* seconds per call, best of 5 passes over the copies */
static double time_calls(uint8_t **copies, int ncopy, const struct bench_case *c, float *y, const float *x, int T,
			 void *ws)
{
	double best = 1e9;
	for (int r = 0; r < 5; r++) {
		double t0 = bench_now();
		for (int i = 0; i < ncopy; i++)
			cpu_matmul(y, x, copies[i], c->fmt, NULL, 0, T, c->N, c->K, ws);
		double dt = (bench_now() - t0) / ncopy;
		best = dt < best ? dt : best;
	}
	return best;
}

int main(int argc, char **argv)
{
	int T = argc > 1 ? atoi(argv[1]) : 1, only = argc > 2 && strcmp(argv[2], "all") ? wfmt_from_name(argv[2]) : -1;
	const char *prefix = argc > 3 ? argv[3] : "";
	if (T < 1 || (argc > 2 && strcmp(argv[2], "all") && only < 0))
		return fprintf(stderr, "usage: bench_matmul [T [FORMAT|all [CASE]]]\n"), 2;
	/* a format with no case of its own (the grid IQ types, issue 18) runs the large 16384x4096 shape */
	struct bench_case own = {"large 16384x4096", only, 16384, 4096};
	const struct bench_case *list = cases;
	size_t ncase = sizeof(cases) / sizeof(cases[0]);
	bool listed = false;
	for (size_t ci = 0; ci < ncase; ci++)
		listed |= cases[ci].fmt == only;
	if (only >= 0 && !listed)
		list = &own, ncase = 1;
	int threads = omp_get_max_threads();
	double bw0 = bench_read_gbs();
	unsigned seed = 1;
	double *cold = calloc(ncase, sizeof(double)), *hot = calloc(ncase, sizeof(double));
	for (size_t ci = 0; ci < ncase; ci++) {
		const struct bench_case *c = &list[ci];
		if ((only >= 0 && c->fmt != only) || strncmp(c->what, prefix, strlen(prefix)))
			continue;
		size_t bytes = wfmt_row_bytes(c->fmt, (uint64_t)c->K) * (size_t)c->N;
		int ncopy = (int)(((size_t)256 << 20) / bytes + 1);
		uint8_t **copies = malloc(sizeof(*copies) * (size_t)ncopy);
		for (int i = 0; i < ncopy; i++) {
			copies[i] = aligned_alloc(64, (bytes + 63) / 64 * 64);
			fill_weights(copies[i], bytes, c->fmt, &seed);
		}
		float *x = malloc(sizeof(float) * (size_t)T * (size_t)c->K);
		float *y = malloc(sizeof(float) * (size_t)T * (size_t)c->N);
		void *ws = aligned_alloc(64, (cpu_matmul_ws_bytes(c->K) + 63) / 64 * 64);
		for (int i = 0; i < T * c->K; i++)
			x[i] = (float)rand_r(&seed) / (float)RAND_MAX - 0.5f;
		cold[ci] = time_calls(copies, ncopy, c, y, x, T, ws);
		hot[ci] = time_calls(copies, 1, c, y, x, T, ws);
		for (int i = 0; i < ncopy; i++)
			free(copies[i]);
		free(copies), free(x), free(y), free(ws);
	}
	double bw1 = bench_read_gbs(), bw = (bw0 + bw1) / 2;
	printf("threads %d, T %d; read bandwidth %.2f GB/s before, %.2f after: floor %.2f GB/s\n\n", threads, T, bw0,
	       bw1, bw);
	printf("| case | format | N x K | MB | cold GB/s | floor GB/s | ratio | cold GFLOP/s | hot GB/s | hot GFLOP/s |\n");
	printf("|---|---|---|---|---|---|---|---|---|---|\n");
	for (size_t ci = 0; ci < ncase; ci++) {
		const struct bench_case *c = &list[ci];
		if ((only >= 0 && c->fmt != only) || strncmp(c->what, prefix, strlen(prefix)))
			continue;
		double bytes = (double)wfmt_row_bytes(c->fmt, (uint64_t)c->K) * c->N, flops = 2.0 * c->N * c->K * T;
		printf("| %s | %s | %dx%d | %.2f | %.2f | %.2f | %.2f | %.1f | %.2f | %.1f |\n", c->what, wfmt_name(c->fmt),
		       c->N, c->K, bytes / 1e6, bytes / cold[ci] / 1e9, bw, bytes / cold[ci] / 1e9 / bw,
		       flops / cold[ci] / 1e9, bytes / hot[ci] / 1e9, flops / hot[ci] / 1e9);
	}
	free(cold), free(hot);
	return 0;
}
