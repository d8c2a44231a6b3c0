/*
 * bench_util.h: what the CPU benchmark programs share (header-only: bench/cpu_peak.c is built alone by
 * bench/run_bench.sh): a monotonic clock and the machine's measured read bandwidth.
 */
#ifndef FERRY_BENCH_UTIL_H
#define FERRY_BENCH_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layout/wfmt.h"

static double bench_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Read bandwidth in GB/s: all threads sum a 1 GiB float array (bytes read / time), best of 5; 0 without memory. */
static double bench_read_gbs(void)
{
	size_t n = (size_t)1 << 28;
	float *a = malloc(n * sizeof(float));
	if (!a)
		return 0;
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < n; i++)
		a[i] = (float)(i & 1023) * 1e-3f;
	double best = 1e9, sink = 0;
	for (int r = 0; r < 5; r++) {
		double t0 = bench_now(), s = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : s)
		for (size_t i = 0; i < n; i++)
			s += a[i];
		double dt = bench_now() - t0;
		best = dt < best ? dt : best;
		sink += s;
	}
	free(a);
	return sink == 42 ? 0 : (double)(n * sizeof(float)) / best / 1e9;
}

/* Byte offsets of a quantized block's f16 scale d and of its second f16 (dmin or min; -1: none), and (MXFP4)
 * -1 for d where the scale is one e8m0 byte at 0: what the benchmarks set so random blocks decode finite. */
static void bench_scale_fields(int fmt, int *d_at, int *m_at)
{
	*m_at = fmt == WFMT_Q4_K || fmt == WFMT_Q5_K || fmt == WFMT_Q4_1 || fmt == WFMT_Q5_1 ? 2
		: fmt == WFMT_Q2_K ? 82 : -1;
	*d_at = fmt == WFMT_Q6_K ? 208 : fmt == WFMT_Q2_K ? 80 : fmt == WFMT_Q3_K ? 108 : fmt == WFMT_TQ1_0 ? 52
		: fmt == WFMT_TQ2_0 ? 64 : fmt == WFMT_MXFP4 ? -1 : 0;
}

/* Sets every block's scale fields (bench_scale_fields) to d, MXFP4's exponent to 2^-10, Q4_Z/Q8_Z's zero points */
static void bench_set_scales(uint8_t *w, size_t bytes, int fmt, uint16_t d)
{
	size_t bb = wfmt_table[fmt].block_bytes;
	int d_at, m_at;
	bench_scale_fields(fmt, &d_at, &m_at);
#pragma omp parallel for
	for (size_t i = 0; i < bytes / bb; i++) {
		uint8_t *b = w + i * bb;
		if (d_at < 0)
			b[0] = 118;
		else
			memcpy(b + d_at, &d, 2);
		if (m_at >= 0)
			memcpy(b + m_at, &d, 2);
		if (fmt == WFMT_NF4 || fmt == WFMT_BNB_FP4) { /* its scale is an f32 absmax */
			float a = f16_to_f32(d);
			memcpy(b, &a, 4);
			continue;
		}
		if (fmt == WFMT_Q4_Z || fmt == WFMT_Q4_Z128) /* zero points as GPTQ v1 / AWQ store them: 0..16 */
			b[2] = (uint8_t)(i * 7 % 17), b[3] = 0;
		if (fmt == WFMT_Q8_Z || fmt == WFMT_Q8_Z128) /* -128..128 */
			b[2] = (uint8_t)(i * 37 % 257 - 128), b[3] = i * 37 % 257 < 128 ? 0xff : 0;
		for (int k = 0; fmt == WFMT_IQ1_M && k < 4; k++) /* its d: the top nibbles of the scale words at 48 */
			b[49 + 2 * k] = (uint8_t)((b[49 + 2 * k] & 15) | (d >> 4 * k & 15) << 4);
	}
}

#endif
