/*
 * bench_cuda_matmul.c: cuda_matmul per weight format on Llama-70B-sized matrices (28672x8192 and 8192x28672)
 * against the floors measured in the same run.
 *
 * Matrix-vector path (T = 1, 4, 16): median time of 20 calls after warm-up, each call on the next of enough
 * copies of the weights to pass 4x the L2 cache, so every call reads its weights from HBM. GB/s of weight
 * bytes against the device-to-device cudaMemcpy rate (bytes read + written). GEMM path (T = 512, 4096):
 * TFLOP/s (2 N K T) of the whole call (x conversion, dequantization, cuBLAS, per chunk of gemm_rows) against
 * one plain cublasGemmEx of bf16 operands of the same shape. Weights are random bytes with finite f16 scales.
 * Usage: bench_cuda_matmul [FORMAT...] (default: the K-quants, the 32-blocks and the float formats).
 * Prints a line per case, then the two tables.
 *
 * bench_cuda_matmul --mma [FORMAT...] (default Q4_K Q5_K Q6_K Q8_0): the three kernels of cuda_matmul side by
 * side (cuda_ctx.mm_mode), at T = 1, 2, 4, 8, 16, 64, 256 on the two 70B shapes and an 8B one (14336x4096):
 * the f32 matrix-vector kernels (T <= 16), the tensor-core kernel with in-kernel dequantization, and
 * dequantize-then-cuBLAS; each against its floor, max(weight bytes / copy rate, 2 N K T / the plain bf16
 * cuBLAS rate of a 8192x8192x4096 GEMM), and the kernel the crossover table picks (auto). The table in
 * src/kernels/cuda/matmul.cu (mma_cross) is set from this output.
 *
 * bench_cuda_matmul --q8mma [FORMAT...] (default Q4_K Q5_K Q6_K Q8_0 Q4_0 Q5_0): as --mma with the int8
 * tensor-core kernel (matmul_q8mma.cu, x quantized in every call) beside the others, at T = 9, 16, 17, 32, 64,
 * 128, 256, 512; its column against the floor, and the table q8mma_cross of matmul.cu is set from it (the T
 * range per format where it beats the kernel auto picks otherwise).
 *
 * bench_cuda_matmul --mv [FORMAT...] (default: every format cuda_matmul takes): the default choice (the
 * 8-bit-activation kernel where the format has one) against the f32 matrix-vector one (FERRY_MATMUL=old) at
 * T = 1, 2, 4, 8 on the 8B shapes (4096x4096, 1024x4096, 14336x4096, 4096x14336, 128256x4096) and the 70B ones:
 * each row with its floor (weight bytes / device copy rate) and both kernels' ratio floor / time; then per
 * format the worst and best T = 1 ratio over the 8B and the 70B shapes.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FERRY_CUDA
int main(void)
{
	printf("bench_cuda_matmul: built without CUDA\n");
	return 77;
}
#else
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "base/xorshift.h"
#include "bench_util.h"
#include "kernels/cuda/cuda_exit.h"
#include "kernels/cuda/cuda_ops.h"
#include "layout/quant.h"
#include "layout/wfmt.h"

#define REPS 20
#define GEMM_ROWS 4096


static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return x < y ? -1 : x > y;
}

/* random bytes, every f16 scale finite (~1e-3), F16/BF16 values ~0.01..0.1 */
static void fill_weights(uint8_t *w, size_t bytes, int fmt)
{
#pragma omp parallel
	{
		uint64_t s = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)&s;
#pragma omp for schedule(static)
		for (size_t i = 0; i < bytes / 8; i++) {
			xorshift64(&s);
			memcpy(w + 8 * i, &s, 8);
		}
	}
	if (fmt == WFMT_F32) {
#pragma omp parallel for
		for (size_t i = 0; i < bytes / 4; i++)
			w[4 * i + 3] = (uint8_t)(0x3c + (w[4 * i + 3] & 0x80)); /* exponent ~2^-7 */
		return;
	}
	if (fmt == WFMT_F16 || fmt == WFMT_BF16) {
#pragma omp parallel for
		for (size_t i = 0; i < bytes / 2; i++)
			w[2 * i + 1] = (uint8_t)((fmt == WFMT_F16 ? 0x20 : 0x3c) | (w[2 * i + 1] & 0x81));
		return;
	}
	bench_set_scales(w, bytes, fmt, f32_to_f16(0.001f));
}

/* device-to-device copy rate in GB/s, bytes read + written, median of 10 copies of 1 GiB */
static double d2d_gbs(cudaStream_t s)
{
	size_t n = (size_t)1 << 30;
	void *a, *b;
	CU(cudaMalloc(&a, n));
	CU(cudaMalloc(&b, n));
	CU(cudaMemset(a, 1, n));
	cudaEvent_t e0, e1;
	CU(cudaEventCreate(&e0));
	CU(cudaEventCreate(&e1));
	float ms[10];
	CU(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, s));
	for (int i = 0; i < 10; i++) {
		CU(cudaEventRecord(e0, s));
		CU(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, s));
		CU(cudaEventRecord(e1, s));
		CU(cudaEventSynchronize(e1));
		CU(cudaEventElapsedTime(&ms[i], e0, e1));
	}
	qsort(ms, 10, sizeof(float), cmp_float);
	cudaFree(a), cudaFree(b);
	cudaEventDestroy(e0), cudaEventDestroy(e1);
	return 2.0 * (double)n / (ms[5] * 1e-3) / 1e9;
}

struct timing {
	cudaEvent_t e0[REPS], e1[REPS];
};

static double median_ms(struct timing *tm, cudaStream_t s)
{
	CU(cudaStreamSynchronize(s));
	float ms[REPS];
	for (int r = 0; r < REPS; r++)
		CU(cudaEventElapsedTime(&ms[r], tm->e0[r], tm->e1[r]));
	qsort(ms, REPS, sizeof(float), cmp_float);
	return ms[REPS / 2];
}

/* median ms of REPS cuda_matmul calls over the copies in turn, after 3 warm-up calls */
static double time_matmul(struct cuda_ctx *c, struct timing *tm, void **copies, int ncopy, int fmt, float *y,
			  const float *x, int N, int K, int T)
{
	cudaStream_t s = (cudaStream_t)c->stream;
	for (int i = 0; i < REPS + 3; i++) {
		int r = i - 3;
		if (r >= 0)
			CU(cudaEventRecord(tm->e0[r], s));
		int rc = cuda_matmul(c, y, x, copies[i % ncopy], fmt, N, K, NULL, 0, T);
		if (rc) {
			fprintf(stderr, "cuda_matmul %s %dx%d T=%d: %d %s\n", wfmt_name(fmt), N, K, T, rc, c->err);
			exit(1);
		}
		if (r >= 0)
			CU(cudaEventRecord(tm->e1[r], s));
	}
	return median_ms(tm, s);
}

/* median ms of REPS plain bf16 cublasGemmEx y^T[N,T] = A[N,K] . B[T,K]^T, f32 out, f32 compute */
static double time_cublas(cublasHandle_t h, struct timing *tm, cudaStream_t s, const void *A, const void *B, float *y,
			  int N, int K, int T)
{
	const float one = 1.0f, zero = 0.0f;
	for (int i = 0; i < REPS + 3; i++) {
		int r = i - 3;
		if (r >= 0)
			CU(cudaEventRecord(tm->e0[r], s));
		cublasStatus_t st = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &one, A, CUDA_R_16BF, K, B,
						 CUDA_R_16BF, K, &zero, y, CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
						 CUBLAS_GEMM_DEFAULT);
		if (st != CUBLAS_STATUS_SUCCESS) {
			fprintf(stderr, "cublasGemmEx: %s\n", cublasGetStatusString(st));
			exit(1);
		}
		if (r >= 0)
			CU(cudaEventRecord(tm->e1[r], s));
	}
	return median_ms(tm, s);
}

/* Random weights of fmt, copied to the device enough times (2..64) to pass 4x the L2 cache, so that calls on the
 * copies in turn read their weights from HBM; returns the number of copies. */
static int weight_copies(void **copies, uint8_t *host, size_t bytes, int fmt, const struct cudaDeviceProp *prop)
{
	fill_weights(host, bytes, fmt);
	int ncopy = (int)((4 * (size_t)prop->l2CacheSize + bytes - 1) / bytes);
	ncopy = ncopy < 2 ? 2 : ncopy > 64 ? 64 : ncopy;
	for (int i = 0; i < ncopy; i++) {
		CU(cudaMalloc(&copies[i], bytes));
		CU(cudaMemcpy(copies[i], host, bytes, cudaMemcpyHostToDevice));
	}
	return ncopy;
}

/* The bytes of the largest of the shapes in any of the formats */
static size_t max_weight_bytes(const int (*shapes)[2], int nshape, const int *fmts, int nf)
{
	size_t max_bytes = 0;
	for (int si = 0; si < nshape; si++)
		for (int fi = 0; fi < nf; fi++) {
			size_t by = wfmt_row_bytes(fmts[fi], (uint64_t)shapes[si][1]) * (size_t)shapes[si][0];
			max_bytes = by > max_bytes ? by : max_bytes;
		}
	return max_bytes;
}

static const char *const kern_name[] = {"matvec", "mma", "cuBLAS", "matvec-q8", "q8mma"};

/* --mv: per format, on the 8B model's matrices and the 70B ones, T = 1, 2, 4, 8: the floor (the weight bytes at
 * the device copy rate), the f32 matrix-vector kernels (FERRY_MATMUL=old) and the default choice (the
 * 8-bit-activation kernels where a format has one), each in us and as floor / time (the fraction of the copy
 * rate), the kernel the default ran and its speed-up. Then per format its T = 1 ratios, worst and best over the
 * shapes, on the 8B and the 70B shapes apart. */
#define MV_NSHAPE 7
static void bench_mv(struct cuda_ctx *c, struct timing *tm, const int *fmts, int nf, double copy_gbs, const float *x,
		     float *y, const struct cudaDeviceProp *prop)
{
	static const int shapes[MV_NSHAPE][2] = {{4096, 4096},   {1024, 4096}, {14336, 4096}, {4096, 14336},
						 {128256, 4096}, {28672, 8192}, {8192, 28672}};
	static const int Ts[] = {1, 2, 4, 8};
	static const int modes[2] = {CUDA_MM_OLD, CUDA_MM_AUTO};
	printf("floor: weight bytes / device copy rate %.0f GB/s (read + write); ratio = floor / time\n", copy_gbs);
	printf("| format | N x K | T | floor us | old us | old ratio | new us | new ratio | new kernel | speed-up |\n"
	       "|---|---|---|---|---|---|---|---|---|---|\n");
	double *ratio1 = malloc(sizeof(double) * (size_t)nf * MV_NSHAPE); /* new ratio at T = 1 */
	uint8_t *host = malloc(max_weight_bytes(shapes, MV_NSHAPE, fmts, nf));
	for (int fi = 0; fi < nf; fi++)
		for (int si = 0; si < MV_NSHAPE; si++) {
			int fmt = fmts[fi], N = shapes[si][0], K = shapes[si][1];
			size_t bytes = wfmt_row_bytes(fmt, (uint64_t)K) * (size_t)N;
			double floor_us = (double)bytes / (copy_gbs * 1e9) * 1e6;
			void *copies[64];
			int ncopy = weight_copies(copies, host, bytes, fmt, prop);
			for (size_t ti = 0; ti < sizeof(Ts) / sizeof(Ts[0]); ti++) {
				int T = Ts[ti], kern[2];
				double us[2];
				for (int m = 0; m < 2; m++) { /* the same kernel under both modes: timed once */
					c->mm_mode = modes[m];
					kern[m] = cuda_matmul_kernel(c, fmt, T);
					us[m] = m && kern[1] == kern[0] ? us[0]
									: time_matmul(c, tm, copies, ncopy, fmt, y, x, N, K, T) * 1e3;
				}
				c->mm_mode = CUDA_MM_AUTO;
				if (T == 1)
					ratio1[fi * MV_NSHAPE + si] = floor_us / us[1];
				printf("| %s | %dx%d | %d | %.1f | %.1f | %.2f | %.1f | %.2f | %s | %.2f |\n", wfmt_name(fmt), N, K,
				       T, floor_us, us[0], floor_us / us[0], us[1], floor_us / us[1], kern_name[kern[1]],
				       us[0] / us[1]);
				fflush(stdout);
			}
			for (int i = 0; i < ncopy; i++)
				CU(cudaFree(copies[i]));
		}
	printf("\nT = 1, new ratio (floor / time) per format: worst and best over the 8B shapes (first 5), the 70B ones\n"
	       "| format | 8B worst | 8B best | 70B worst | 70B best |\n|---|---|---|---|---|\n");
	for (int fi = 0; fi < nf; fi++) {
		double lo[2] = {1e9, 1e9}, hi[2] = {0, 0};
		for (int si = 0; si < MV_NSHAPE; si++) {
			double r = ratio1[fi * MV_NSHAPE + si];
			int g = si >= 5;
			lo[g] = r < lo[g] ? r : lo[g];
			hi[g] = r > hi[g] ? r : hi[g];
		}
		printf("| %s | %.2f | %.2f | %.2f | %.2f |\n", wfmt_name(fmts[fi]), lo[0], hi[0], lo[1], hi[1]);
	}
	free(ratio1), free(host);
}

/* --mma and --q8mma (q8): the kernels side by side per format, shape and T (see the top of the file) */
static void bench_mma(struct cuda_ctx *c, cublasHandle_t h, struct timing *tm, const int *fmts, int nf, double copy_gbs,
		      const float *x, float *y, const struct cudaDeviceProp *prop, bool q8)
{
	cudaStream_t s = (cudaStream_t)c->stream;
	static const int shapes[3][2] = {{28672, 8192}, {8192, 28672}, {14336, 4096}};
	static const int Ts_mma[] = {1, 2, 4, 8, 16, 64, 256}, Ts_q8[] = {9, 16, 17, 32, 64, 128, 256, 512};
	const int *Ts = q8 ? Ts_q8 : Ts_mma, nT = q8 ? 8 : 7, nm = q8 ? 4 : 3;
	/* the tensor-core rate: plain bf16 cuBLAS on a large square-ish GEMM */
	void *a, *b;
	CU(cudaMalloc(&a, (size_t)8192 * 8192 * 2));
	CU(cudaMalloc(&b, (size_t)4096 * 8192 * 2));
	CU(cudaMemset(a, 0x3c, (size_t)8192 * 8192 * 2));
	CU(cudaMemset(b, 0x3c, (size_t)4096 * 8192 * 2));
	float *yb;
	CU(cudaMalloc((void **)&yb, sizeof(float) * (size_t)8192 * 4096));
	double peak = 2.0 * 8192 * 8192 * 4096 / (time_cublas(h, tm, s, a, b, yb, 8192, 8192, 4096) * 1e-3) / 1e12;
	cudaFree(a), cudaFree(b), cudaFree(yb);
	printf("floors: weights at the device copy rate %.0f GB/s; FLOPs at plain bf16 cuBLAS %.0f TFLOP/s\n", copy_gbs,
	       peak);
	printf("| format | N x K | T | matvec us | mma us | cuBLAS-after-dequant us |%s floor us | %s / floor | auto "
	       "picks |\n|---|---|---|---|---|---|---|---|---|%s\n",
	       q8 ? " q8mma us |" : "", q8 ? "q8mma" : "mma", q8 ? "---|" : "");
	uint8_t *host = malloc(max_weight_bytes(shapes, 3, fmts, nf));
	for (int fi = 0; fi < nf; fi++)
		for (int si = 0; si < 3; si++) {
			int fmt = fmts[fi], N = shapes[si][0], K = shapes[si][1];
			size_t bytes = wfmt_row_bytes(fmt, (uint64_t)K) * (size_t)N;
			void *copies[64];
			int ncopy = weight_copies(copies, host, bytes, fmt, prop);
			for (int ti = 0; ti < nT; ti++) {
				int T = Ts[ti];
				double us[4] = {-1, -1, -1, -1};
				static const int modes[4] = {CUDA_MM_OLD, CUDA_MM_MMA, CUDA_MM_BLAS, CUDA_MM_Q8MMA};
				static const int kerns[4] = {CUDA_MMK_MATVEC, CUDA_MMK_MMA, CUDA_MMK_BLAS, CUDA_MMK_Q8MMA};
				for (int m = 0; m < nm; m++) {
					c->mm_mode = modes[m];
					if (cuda_matmul_kernel(c, fmt, T) == kerns[m]) /* the kernel this mode names runs here */
						us[m] = time_matmul(c, tm, copies, ncopy, fmt, y, x, N, K, T) * 1e3;
				}
				c->mm_mode = CUDA_MM_AUTO;
				double fl = 2.0 * N * K * T / (peak * 1e12), mem = (double)bytes / (copy_gbs * 1e9);
				double floor_us = (fl > mem ? fl : mem) * 1e6;
				char cell[5][32] = {"-", "-", "-", "-", "-"}; /* "-": the kernel does not run at this T */
				for (int m = 0; m < nm; m++)
					if (us[m] >= 0)
						snprintf(cell[m], sizeof(cell[m]), "%.1f", us[m]);
				int sel = q8 ? 3 : 1; /* the kernel measured against the floor */
				if (us[sel] >= 0)
					snprintf(cell[4], sizeof(cell[4]), "%.2f", us[sel] / floor_us);
				printf("| %s | %dx%d | %d | %s | %s | %s |", wfmt_name(fmt), N, K, T, cell[0], cell[1], cell[2]);
				if (q8)
					printf(" %s |", cell[3]);
				printf(" %.1f | %s | %s |\n", floor_us, cell[4], kern_name[cuda_matmul_kernel(c, fmt, T)]);
				fflush(stdout);
			}
			for (int i = 0; i < ncopy; i++)
				CU(cudaFree(copies[i]));
		}
	free(host);
}

struct row {
	int fmt, N, K, T;
	double ms, a, b; /* matvec: GB/s, unused; GEMM: TFLOP/s, cuBLAS TFLOP/s */
};

int main(int argc, char **argv)
{
	int ndev = 0;
	if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev <= 0) {
		printf("bench_cuda_matmul: no CUDA device\n");
		return 77;
	}
	/* the formats named on the command line (e.g. IQ2_XS IQ3_S: issue 18's types), else these */
	static const int all_fmts[] = {WFMT_Q4_K, WFMT_Q5_K, WFMT_Q6_K, WFMT_Q8_0,   WFMT_Q4_0,   WFMT_Q5_0,
				       WFMT_Q4_1, WFMT_Q5_1, WFMT_Q2_K, WFMT_Q3_K,   WFMT_IQ4_NL, WFMT_IQ4_XS,
				       WFMT_MXFP4, WFMT_TQ1_0, WFMT_TQ2_0, WFMT_BF16, WFMT_F16,   WFMT_F32};
	int fmts[WFMT_COUNT], nf = 0, mma = argc > 1 && !strcmp(argv[1], "--mma"), q8 = argc > 1 && !strcmp(argv[1], "--mv");
	int q8mma = argc > 1 && !strcmp(argv[1], "--q8mma");
	for (int i = 1 + mma + q8 + q8mma; i < argc && nf < WFMT_COUNT; i++)
		if ((fmts[nf++] = wfmt_from_name(argv[i])) < 0 || !cuda_fmt_supported(fmts[nf - 1]))
			return fprintf(stderr, "bench_cuda_matmul: %s: not a format cuda_matmul takes\n", argv[i]), 2;
	static const int mma_fmts[] = {WFMT_Q4_K, WFMT_Q5_K, WFMT_Q6_K, WFMT_Q8_0};
	for (size_t i = 0; argc == 1 + mma && i < (mma ? 4 : sizeof(all_fmts) / sizeof(all_fmts[0])); i++)
		fmts[nf++] = mma ? mma_fmts[i] : all_fmts[i];
	static const int q8mma_fmts[] = {WFMT_Q4_K, WFMT_Q5_K, WFMT_Q6_K, WFMT_Q8_0, WFMT_Q4_0, WFMT_Q5_0};
	for (int i = 0; argc == 2 && q8mma && i < 6; i++)
		fmts[nf++] = q8mma_fmts[i];
	for (int f = 0; argc == 2 && q8 && f < WFMT_COUNT; f++) /* --mv: every format cuda_matmul takes */
		if (cuda_fmt_supported(f))
			fmts[nf++] = f;
	static const int shapes[2][2] = {{28672, 8192}, {8192, 28672}};
	static const int Tmv[] = {1, 4, 16}, Tgemm[] = {512, 4096};
	const int T_max = 4096, K_max = 28672;

	struct cudaDeviceProp prop;
	CU(cudaGetDeviceProperties(&prop, 0));
	cudaStream_t s;
	CU(cudaStreamCreate(&s));
	cublasHandle_t h;
	if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS || cublasSetStream(h, s) != CUBLAS_STATUS_SUCCESS)
		return fprintf(stderr, "cublasCreate failed\n"), 1;
	struct cuda_ctx c = {.stream = s, .cublas = h, .cc = prop.major * 10 + prop.minor,
			     .n_sm = prop.multiProcessorCount, .gemm_rows = GEMM_ROWS, .mvq_all = true};
	c.ws_bytes = cuda_matmul_ws_bytes(T_max, K_max, GEMM_ROWS);
	CU(cudaMalloc(&c.ws, c.ws_bytes));
	struct timing tm;
	for (int r = 0; r < REPS; r++) {
		CU(cudaEventCreate(&tm.e0[r]));
		CU(cudaEventCreate(&tm.e1[r]));
	}
	double floor_gbs = d2d_gbs(s);
	printf("%s, %d SMs, L2 %d MB; device-to-device copy %.0f GB/s (read + write)\n", prop.name,
	       prop.multiProcessorCount, prop.l2CacheSize >> 20, floor_gbs);

	size_t nel = (size_t)28672 * 8192;
	float *x, *y;
	CU(cudaMalloc((void **)&x, sizeof(float) * (size_t)T_max * K_max));
	CU(cudaMalloc((void **)&y, sizeof(float) * (size_t)T_max * 28672));
	{
		size_t nx = (size_t)T_max * K_max;
		float *hx = malloc(sizeof(float) * nx);
		for (size_t i = 0; i < nx; i++)
			hx[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
		CU(cudaMemcpy(x, hx, sizeof(float) * nx, cudaMemcpyHostToDevice));
		free(hx);
	}
	if (q8) {
		bench_mv(&c, &tm, fmts, nf, floor_gbs, x, y, &prop);
		cudaFree(x), cudaFree(y), cudaFree(c.ws);
		cublasDestroy(h);
		return 0;
	}
	if (mma || q8mma) {
		bench_mma(&c, h, &tm, fmts, nf, floor_gbs, x, y, &prop, q8mma);
		cudaFree(x), cudaFree(y), cudaFree(c.ws);
		cublasDestroy(h);
		return 0;
	}
	uint8_t *host = malloc(nel * 4);
	struct row *mv = calloc(64, sizeof(*mv)), *gm = calloc(64, sizeof(*gm));
	int nmv = 0, ngm = 0;
	void *bf16_w = NULL; /* the BF16 weights, kept for the plain cuBLAS reference */
	for (int fi = 0; fi < nf; fi++) {
		int fmt = fmts[fi];
		size_t bytes = wfmt_row_bytes(fmt, 8192) * 28672;
		void *copies[64];
		int ncopy = weight_copies(copies, host, bytes, fmt, &prop);
		for (int si = 0; si < 2; si++) {
			int N = shapes[si][0], K = shapes[si][1];
			for (int ti = 0; ti < 3; ti++) {
				int T = Tmv[ti];
				double ms = time_matmul(&c, &tm, copies, ncopy, fmt, y, x, N, K, T);
				struct row r = {fmt, N, K, T, ms, (double)bytes / (ms * 1e-3) / 1e9, 0};
				mv[nmv++] = r;
				printf("matvec %-5s %5dx%-5d T=%-2d %9.1f us %7.0f GB/s  %.2f of copy\n", wfmt_name(fmt), N,
				       K, T, ms * 1e3, r.a, r.a / floor_gbs);
			}
			for (int ti = 0; ti < 2; ti++) {
				int T = Tgemm[ti];
				double ms = time_matmul(&c, &tm, copies, ncopy, fmt, y, x, N, K, T);
				struct row r = {fmt, N, K, T, ms, 2.0 * N * K * T / (ms * 1e-3) / 1e12, 0};
				gm[ngm++] = r;
				printf("gemm   %-5s %5dx%-5d T=%-4d %9.3f ms %6.1f TFLOP/s\n", wfmt_name(fmt), N, K, T, ms,
				       r.a);
			}
		}
		for (int i = 0; i < ncopy; i++) {
			if (fmt == WFMT_BF16 && i == 0)
				bf16_w = copies[i];
			else
				CU(cudaFree(copies[i]));
		}
	}
	/* the plain GEMM: A the BF16 weights, B the first T*K bf16 values of the same buffer */
	if (!bf16_w) { /* BF16 not among the formats run: a buffer of bf16 0x3c3c (~0.0115) of the same size */
		CU(cudaMalloc(&bf16_w, nel * 2));
		CU(cudaMemset(bf16_w, 0x3c, nel * 2));
	}
	for (int g = 0; g < ngm; g++) {
		double ms = time_cublas(h, &tm, s, bf16_w, bf16_w, y, gm[g].N, gm[g].K, gm[g].T);
		gm[g].b = 2.0 * gm[g].N * gm[g].K * gm[g].T / (ms * 1e-3) / 1e12;
	}

	printf("\nmatrix-vector path: floor = device copy %.0f GB/s\n", floor_gbs);
	printf("| format | N x K | T | us | GB/s | ratio |\n|---|---|---|---|---|---|\n");
	for (int i = 0; i < nmv; i++)
		printf("| %s | %dx%d | %d | %.1f | %.0f | %.2f |\n", wfmt_name(mv[i].fmt), mv[i].N, mv[i].K, mv[i].T,
		       mv[i].ms * 1e3, mv[i].a, mv[i].a / floor_gbs);
	printf("\nGEMM path (gemm_rows %d): whole cuda_matmul vs plain bf16 cublasGemmEx\n", GEMM_ROWS);
	printf("| format | N x K | T | ms | TFLOP/s | cuBLAS TFLOP/s | ratio |\n|---|---|---|---|---|---|---|\n");
	for (int i = 0; i < ngm; i++)
		printf("| %s | %dx%d | %d | %.3f | %.1f | %.1f | %.2f |\n", wfmt_name(gm[i].fmt), gm[i].N, gm[i].K,
		       gm[i].T, gm[i].ms, gm[i].a, gm[i].b, gm[i].a / gm[i].b);
	free(host), free(mv), free(gm);
	cudaFree(bf16_w), cudaFree(x), cudaFree(y), cudaFree(c.ws);
	cublasDestroy(h);
	return 0;
}
#endif
