/*
 * cpu_peak.c: the two ceilings of this machine's CPU side, measured rather than taken from a datasheet:
 *   read bandwidth: all threads sum a 1 GiB float array (bytes read / time), best of 5;
 *   f32 FMA rate: all threads run independent multiply-add chains in registers (flops / time), best of 5.
 * Prints "read_gbs X" and "fma_gflops Y" for bench/run_bench.sh.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(void)
{
	size_t n = (size_t)1 << 28; /* 1 GiB of floats */
	float *a = malloc(n * sizeof(float));
	if (!a)
		return 1;
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < n; i++)
		a[i] = (float)(i & 1023) * 1e-3f;
	double best = 1e9, sink = 0;
	for (int r = 0; r < 5; r++) {
		double t0 = now(), s = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : s)
		for (size_t i = 0; i < n; i++)
			s += a[i];
		double dt = now() - t0;
		best = dt < best ? dt : best;
		sink += s;
	}
	printf("read_gbs %.2f\n", (double)(n * sizeof(float)) / best / 1e9);
	free(a);

	long iters = 20000000;
	double fbest = 1e9;
	for (int r = 0; r < 5; r++) {
		double t0 = now();
#pragma omp parallel reduction(+ : sink)
		{
			float acc[64], m = 0.999999f, c = 1e-7f;
			for (int j = 0; j < 64; j++)
				acc[j] = (float)(j + omp_get_thread_num());
			for (long i = 0; i < iters; i++) {
#pragma omp simd
				for (int j = 0; j < 64; j++)
					acc[j] = acc[j] * m + c;
			}
			for (int j = 0; j < 64; j++)
				sink += acc[j];
		}
		double dt = now() - t0;
		fbest = dt < fbest ? dt : fbest;
	}
	printf("fma_gflops %.2f\n", 2.0 * 64 * (double)iters * omp_get_max_threads() / fbest / 1e9);
	if (sink == 42)
		puts("");
	return 0;
}
