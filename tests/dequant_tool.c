/*
 * dequant_tool.c: ferry's CPU dequantization and matmul behind stdin/stdout, for tests/test_dequant.py to
 * compare with gguf-py (a helper, not a test: run_tests.sh runs only test_* programs).
 *   dequant_tool dequant FMT N        stdin: the bytes of N values in format FMT; stdout: N f32
 *   dequant_tool matmul FMT N K T     stdin: W (N rows of K values in FMT), then x as T*K f32;
 *                                     stdout: y = x . W^T as T*N f32 (cpu_matmul, all threads)
 *   dequant_tool quant FMT N K [imp]  stdin: N rows of K f32, then (imp) K f32 importance values of the
 *                                     columns; stdout: the rows quantized to FMT by `ferry convert --quant`'s
 *                                     quantizers (quant_rows, all threads)
 *   dequant_tool quant-dense FMT N K [imp]  as quant, with IQ1_S/IQ1_M searched by the dense candidate search
 *                                     (quant_iq_dense: the reference test_quant_iq.py compares against)
 * FMT is a format name of src/layout/wfmt_list.h (Q8_0, Q4_K, F32...). Exit 0, or 1 with a message on stderr.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/quantize.h"
#include "convert/quantize_iq.h"
#include "kernels/cpu/cpu_ops.h"
#include "layout/wfmt.h"

static void *read_all(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p && fread(p, 1, n, stdin) != n) {
		free(p);
		return NULL;
	}
	return p;
}

static int write_all(const float *y, size_t n)
{
	return fwrite(y, sizeof(float), n, stdout) == n && fflush(stdout) == 0 ? 0 : 1;
}

static int fail(const char *msg)
{
	fprintf(stderr, "dequant_tool: %s\n", msg);
	return 1;
}

static int run_dequant(int fmt, long long n)
{
	size_t bytes = wfmt_row_bytes(fmt, (uint64_t)n);
	if (n <= 0 || !bytes)
		return fail("N must be a positive multiple of the format's block");
	void *src = read_all(bytes);
	float *y = malloc(sizeof(float) * (size_t)n);
	int rc = !src || !y ? fail("short input") : cpu_row_to_f32(fmt, src, y, n) ? fail("unsupported format")
										      : write_all(y, (size_t)n);
	free(src);
	free(y);
	return rc;
}

static int run_matmul(int fmt, int N, int K, int T)
{
	size_t row = wfmt_row_bytes(fmt, (uint64_t)K);
	if (N <= 0 || K <= 0 || T <= 0 || !row || !cpu_fmt_supported(fmt))
		return fail("bad N, K, T or format");
	void *W = read_all(row * (size_t)N);
	float *x = read_all(sizeof(float) * (size_t)T * (size_t)K);
	float *y = malloc(sizeof(float) * (size_t)T * (size_t)N);
	void *ws = aligned_alloc(64, (cpu_matmul_ws_bytes(K) + 63) / 64 * 64);
	int rc = 1;
	if (!W || !x || !y || !ws) {
		rc = fail("short input");
	} else {
		cpu_matmul(y, x, W, fmt, NULL, 0, T, N, K, ws);
		rc = write_all(y, (size_t)T * (size_t)N);
	}
	free(W), free(x), free(y), free(ws);
	return rc;
}

struct rows {
	const float *x;
	int64_t K;
};

static void row_of(int64_t r, float *x, void *ctx)
{
	const struct rows *s = ctx;
	memcpy(x, s->x + r * s->K, sizeof(float) * (size_t)s->K);
}

static int run_quant(int fmt, long long N, long long K, int with_imp)
{
	size_t row = wfmt_row_bytes(fmt, (uint64_t)K);
	if (N <= 0 || !row || !quant_supported(fmt))
		return fail("bad N, K or format");
	float *x = read_all(sizeof(float) * (size_t)N * (size_t)K);
	float *imp = with_imp ? read_all(sizeof(float) * (size_t)K) : NULL;
	void *out = malloc(row * (size_t)N);
	struct rows s = {x, K};
	int rc = !x || (with_imp && !imp) || !out ? fail("short input")
		 : quant_rows(fmt, N, K, imp, row_of, &s, out) ? fail("quant_rows failed")
		 : fwrite(out, 1, row * (size_t)N, stdout) == row * (size_t)N && fflush(stdout) == 0 ? 0 : 1;
	free(x), free(imp), free(out);
	return rc;
}

int main(int argc, char **argv)
{
	int fmt = argc > 2 ? wfmt_from_name(argv[2]) : -1;
	if (argc == 4 && strcmp(argv[1], "dequant") == 0 && fmt >= 0)
		return run_dequant(fmt, atoll(argv[3]));
	if (argc == 6 && strcmp(argv[1], "matmul") == 0 && fmt >= 0)
		return run_matmul(fmt, atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
	quant_iq_dense(argc > 1 && strcmp(argv[1], "quant-dense") == 0);
	if ((argc == 5 || argc == 6) && (strcmp(argv[1], "quant") == 0 || strcmp(argv[1], "quant-dense") == 0) && fmt >= 0)
		return run_quant(fmt, atoll(argv[3]), atoll(argv[4]), argc == 6 && !strcmp(argv[5], "imp"));
	fprintf(stderr, "usage: dequant_tool dequant FMT N | matmul FMT N K T | quant[-dense] FMT N K [imp]  (FMT a format name: Q8_0, Q4_K, ...)\n");
	return 1;
}
