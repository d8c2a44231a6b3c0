/*
 * matmul.c: y[T,N] = x[T,K] . W[N,K]^T + bias. Threads split the N output rows; each thread converts one
 * weight row to f32 (once for all T tokens) and takes T dot products with it, so the weight matrix is
 * read once per step: decode (T=1) is bound by the weight bytes, prefill reuses each row T times.
 * Decode of a quantized matrix (T <= QDOT_MAX_T) skips the row buffer: the fused kernels of qdot.h
 * dequantize each block in registers and dot it with every token's x; their per-32 sums of x (Q4_K,
 * Q5_K mins) are computed by every thread in the same order, so they are the same whatever the threads.
 */
#include <omp.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/qdot.h"
#include "layout/wfmt.h"

static inline float dot(const float *a, const float *b, int n)
{
	float s = 0;
#pragma omp simd reduction(+ : s)
	for (int i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

/* A bf16 row is the high half of f32: convert in registers instead of through a row buffer. */
static inline float dot_bf16(const uint16_t *w, const float *x, int n)
{
	float s = 0;
#pragma omp simd reduction(+ : s)
	for (int i = 0; i < n; i++) {
		uint32_t b = (uint32_t)w[i] << 16;
		float f;
		memcpy(&f, &b, 4);
		s += f * x[i];
	}
	return s;
}

void cpu_matmul(float *y, const float *x, const void *W, int wfmt, const void *bias, int bias_fmt, int T, int N, int K,
		float *scratch, int64_t per_thread)
{
	uint64_t row_bytes = wfmt_row_bytes(wfmt, (uint64_t)K);
	cpu_qdot_fn qdot = NULL;
	if (T <= QDOT_MAX_T) {
		qdot = cpu_qdot_find(wfmt, true);
		qdot = qdot ? qdot : cpu_qdot_find(wfmt, false);
	}
#pragma omp parallel
	{
		float *row = wfmt == WFMT_F32 ? NULL : scratch + (size_t)omp_get_thread_num() * (size_t)per_thread;
		/* the row buffer holds the sums of x instead (T * K/32 <= K floats); only the formats with a min use them */
		if (qdot && cpu_qdot_reads_xsums(wfmt))
			cpu_qdot_xsums(x, K, T, K, row);
#pragma omp for schedule(static)
		for (int n = 0; n < N; n++) {
			float b = 0;
			if (bias)
				cpu_row_to_f32(bias_fmt, (const char *)bias + (size_t)n * wfmt_row_bytes(bias_fmt, 1), &b, 1);
			const char *wr = (const char *)W + (size_t)n * row_bytes;
			if (qdot) {
				float out[QDOT_MAX_T];
				qdot(wr, x, K, row, T, K, out);
				for (int t = 0; t < T; t++)
					y[(size_t)t * (size_t)N + (size_t)n] = out[t] + b;
				continue;
			}
			if (wfmt == WFMT_BF16 && T < 4) { /* decode: the weight row is read once either way */
				for (int t = 0; t < T; t++)
					y[(size_t)t * (size_t)N + (size_t)n] =
						dot_bf16((const uint16_t *)wr, x + (size_t)t * (size_t)K, K) + b;
				continue;
			}
			const float *w = (const float *)wr;
			if (row) {
				cpu_row_to_f32(wfmt, wr, row, K);
				w = row;
			}
			for (int t = 0; t < T; t++)
				y[(size_t)t * (size_t)N + (size_t)n] = dot(w, x + (size_t)t * (size_t)K, K) + b;
		}
	}
}
