/*
 * bench_util.h: what the CPU benchmark programs share (header-only: bench/cpu_peak.c is built alone by
 * bench/run_bench.sh): a monotonic clock and the machine's measured read bandwidth.
 */
#ifndef FERRY_BENCH_UTIL_H
#define FERRY_BENCH_UTIL_H

#include <stdlib.h>
#include <time.h>

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

#endif
