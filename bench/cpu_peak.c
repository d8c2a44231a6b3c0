/*
 * cpu_peak.c: the two ceilings of this machine's CPU side, measured rather than taken from a datasheet:
 *   read bandwidth: all threads sum a 1 GiB float array (bytes read / time), best of 5;
 *   f32 FMA rate: all threads run independent multiply-add chains in registers (flops / time), best of 5.
 * Prints "read_gbs X" and "fma_gflops Y" for bench/run_bench.sh.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_util.h"

int main(void)
{
	double gbs = bench_read_gbs();
	if (gbs == 0)
		return 1;
	printf("read_gbs %.2f\n", gbs);

	long iters = 20000000;
	double fbest = 1e9, sink = 0;
	for (int r = 0; r < 5; r++) {
		double t0 = bench_now();
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
		double dt = bench_now() - t0;
		fbest = dt < fbest ? dt : fbest;
	}
	printf("fma_gflops %.2f\n", 2.0 * 64 * (double)iters * omp_get_max_threads() / fbest / 1e9);
	if (sink == 42)
		puts("");
	return 0;
}
