/*
 * gpu_peak.c: the GPU machine's ceilings, measured rather than taken from a datasheet, as the floors of
 * bench/bench_decode.py. Prints one JSON object on stdout (notes on stderr):
 *   h2d_gbps           pinned host -> device: 4 cudaMemcpyAsync of 256 MiB chunks from a cudaHostAlloc'd
 *                      1 GiB buffer, bytes / time, median of REPS; h2d_2stream_gbps: the same bytes as two
 *                      streams of 2 chunks each in flight together (does a second copy add anything?);
 *                      d2h_gbps the other way
 *   d2d_gbps           device -> device copy of 1 GiB, bytes read + bytes written / time, median of REPS
 *   bf16_tflops        cublasGemmEx, bf16 inputs and output, f32 compute, on random data: the better of the
 *                      shapes T x N x K = 4096 x 8192 x 8192 and 4096 x 28672 x 8192 (2 T N K flops; each the
 *                      median of 10 after 3 warm-ups); per shape in "gemm"
 * Times are CUDA events around the work. Exits 77 when there is no GPU, 1 when a CUDA call fails (the
 * call, file and line on stderr). Build: `make` builds $(BUILD)/bench/gpu_peak when nvcc is found.
 */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_exit.h"
#include "layout/wfmt.h"


#define CKB(call)                                                                                             \
	do {                                                                                                  \
		cublasStatus_t s_ = (call);                                                                   \
		if (s_ != CUBLAS_STATUS_SUCCESS) {                                                            \
			fprintf(stderr, "gpu_peak: %s failed at %s:%d: cuBLAS status %d\n", #call, __FILE__,   \
				__LINE__, (int)s_);                                                           \
			exit(1);                                                                              \
		}                                                                                             \
	} while (0)

#define MIB (1ull << 20)
#define CHUNK (256 * MIB)
#define TOTAL (4 * CHUNK)
#define REPS 10

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rng_next(void)
{
	uint64_t x = rng_state; /* xorshift64* */
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* Seconds of GPU time between two events. */
static double event_sec(cudaEvent_t a, cudaEvent_t b)
{
	float ms;
	CU(cudaEventElapsedTime(&ms, a, b));
	return ms / 1e3;
}

/* Copies TOTAL bytes as 256 MiB chunks, on one stream or split over two; returns GB/s (median). */
static double copy_rate(void *dst, const void *src, enum cudaMemcpyKind kind, int streams, uint64_t counted,
			cudaStream_t s[2], cudaEvent_t ev[3])
{
	double rate[REPS];
	for (int r = -1; r < REPS; r++) { /* r = -1: warm-up */
		CU(cudaEventRecord(ev[0], s[0]));
		if (streams == 2)
			CU(cudaStreamWaitEvent(s[1], ev[0], 0));
		for (uint64_t off = 0; off < TOTAL; off += CHUNK) {
			int k = streams == 2 && off >= TOTAL / 2;
			CU(cudaMemcpyAsync((char *)dst + off, (const char *)src + off, CHUNK, kind, s[k]));
		}
		if (streams == 2) {
			CU(cudaEventRecord(ev[2], s[1]));
			CU(cudaStreamWaitEvent(s[0], ev[2], 0));
		}
		CU(cudaEventRecord(ev[1], s[0]));
		CU(cudaEventSynchronize(ev[1]));
		if (r >= 0)
			rate[r] = (double)counted / event_sec(ev[0], ev[1]) / 1e9;
	}
	return median(rate, REPS);
}

/* C[T, N] = X[T, K] . W[N, K]^T, row-major (as a Linear layer), bf16 in and out, f32 accumulation. TFLOP/s. */
static double gemm_rate(cublasHandle_t h, int T, int N, int K, cudaStream_t s, cudaEvent_t ev[3])
{
	size_t nw = (size_t)N * K, nx = (size_t)T * K, nc = (size_t)T * N;
	uint16_t *host = malloc(sizeof(uint16_t) * (nw > nx ? nw : nx));
	void *w, *x, *c;
	if (!host) {
		fprintf(stderr, "gpu_peak: out of host memory\n");
		exit(1);
	}
	CU(cudaMalloc(&w, nw * 2));
	CU(cudaMalloc(&x, nx * 2));
	CU(cudaMalloc(&c, nc * 2));
	/* random, not zeros (zeros run faster than real data): x uniform in [-1, 1), W that over sqrt(K) */
	float u = 0x1p-31f, ws = u / sqrtf((float)K);
	for (size_t i = 0; i < nw; i++)
		host[i] = f32_to_bf16((float)(int32_t)(uint32_t)rng_next() * ws);
	CU(cudaMemcpy(w, host, nw * 2, cudaMemcpyHostToDevice));
	for (size_t i = 0; i < nx; i++)
		host[i] = f32_to_bf16((float)(int32_t)(uint32_t)rng_next() * u);
	CU(cudaMemcpy(x, host, nx * 2, cudaMemcpyHostToDevice));
	free(host);
	CKB(cublasSetStream(h, s));
	const float alpha = 1.0f, beta = 0.0f;
	double t[10];
	for (int r = -3; r < 10; r++) {
		CU(cudaEventRecord(ev[0], s));
		/* column-major view: C^T [N, T] = W [N, K] (stored as K x N, transposed) . X^T [K, T] */
		CKB(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &alpha, w, CUDA_R_16BF, K, x, CUDA_R_16BF, K, &beta,
				 c, CUDA_R_16BF, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
		CU(cudaGetLastError());
		CU(cudaEventRecord(ev[1], s));
		CU(cudaEventSynchronize(ev[1]));
		if (r >= 0)
			t[r] = event_sec(ev[0], ev[1]);
	}
	CU(cudaFree(w));
	CU(cudaFree(x));
	CU(cudaFree(c));
	return 2.0 * T * (double)N * K / median(t, 10) / 1e12;
}

int main(void)
{
	int n = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
		fprintf(stderr, "gpu_peak: no CUDA device; skipping\n");
		return 77;
	}
	struct cudaDeviceProp prop;
	CU(cudaGetDeviceProperties(&prop, 0));
	CU(cudaSetDevice(0));
	fprintf(stderr, "gpu_peak: %s, %.1f GiB\n", prop.name, prop.totalGlobalMem / (double)(1ull << 30));

	cudaStream_t s[2];
	cudaEvent_t ev[3];
	for (int i = 0; i < 2; i++)
		CU(cudaStreamCreateWithFlags(&s[i], cudaStreamNonBlocking));
	for (int i = 0; i < 3; i++)
		CU(cudaEventCreate(&ev[i]));

	void *host, *dev, *dev2;
	CU(cudaHostAlloc(&host, TOTAL, cudaHostAllocDefault));
	for (size_t i = 0; i < TOTAL / 8; i++) /* touch every page; random so nothing can be compressed away */
		((uint64_t *)host)[i] = rng_next();
	CU(cudaMalloc(&dev, TOTAL));
	CU(cudaMalloc(&dev2, TOTAL));
	double h2d = copy_rate(dev, host, cudaMemcpyHostToDevice, 1, TOTAL, s, ev);
	double h2d2 = copy_rate(dev, host, cudaMemcpyHostToDevice, 2, TOTAL, s, ev);
	double d2h = copy_rate(host, dev, cudaMemcpyDeviceToHost, 1, TOTAL, s, ev);
	double d2d = copy_rate(dev2, dev, cudaMemcpyDeviceToDevice, 1, 2 * TOTAL, s, ev);
	CU(cudaFree(dev));
	CU(cudaFree(dev2));
	CU(cudaFreeHost(host));
	fprintf(stderr, "gpu_peak: h2d %.2f GB/s (2 streams %.2f), d2h %.2f, d2d %.1f GB/s\n", h2d, h2d2, d2h, d2d);

	cublasHandle_t h;
	CKB(cublasCreate(&h));
	static const int shapes[2][3] = {{4096, 8192, 8192}, {4096, 28672, 8192}};
	double tf[2], best = 0;
	for (int i = 0; i < 2; i++) {
		tf[i] = gemm_rate(h, shapes[i][0], shapes[i][1], shapes[i][2], s[0], ev);
		best = tf[i] > best ? tf[i] : best;
		fprintf(stderr, "gpu_peak: bf16 GEMM %dx%dx%d: %.1f TFLOP/s\n", shapes[i][0], shapes[i][1], shapes[i][2], tf[i]);
	}
	CKB(cublasDestroy(h));

	printf("{\"gpu\": \"%s\", \"h2d_gbps\": %.3f, \"h2d_2stream_gbps\": %.3f, \"d2h_gbps\": %.3f, \"d2d_gbps\": %.3f, "
	       "\"bf16_tflops\": %.2f, \"gemm\": [",
	       prop.name, h2d, h2d2, d2h, d2d, best);
	for (int i = 0; i < 2; i++)
		printf("%s{\"tokens\": %d, \"out\": %d, \"in\": %d, \"tflops\": %.2f}", i ? ", " : "", shapes[i][0],
		       shapes[i][1], shapes[i][2], tf[i]);
	printf("], \"chunk_mib\": %llu, \"copy_mib\": %llu, \"reps\": %d}\n", CHUNK / MIB, TOTAL / MIB, REPS);
	return 0;
}
