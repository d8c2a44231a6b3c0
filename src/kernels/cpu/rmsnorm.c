/* rmsnorm.c: y = x * rsqrt(mean(x^2) + eps) * w, the mean accumulated in double (this is the reference).
 * The squares (exact in double) go into RMS_ACC sums by index mod RMS_ACC, added in a fixed tree at the end:
 * the same result whether or not the compiler vectorizes it, with RMS_ACC chains instead of one serial chain
 * of dependent adds (one chain of 640 took 3% of a Gemma 3 270M prefill). */
#include <math.h>
#include <stddef.h>

#include "kernels/cpu/cpu_ops.h"

#define RMS_ACC 8

void cpu_rmsnorm(float *y, const float *x, const void *w, int wfmt, int T, int D, float eps, float *scratch)
{
	float *wf = scratch;
	cpu_row_to_f32(wfmt, w, wf, D);
#pragma omp parallel for schedule(static) if ((int64_t)T * D >= CPU_PAR_MIN)
	for (int t = 0; t < T; t++) {
		const float *xr = x + (size_t)t * (size_t)D;
		float *yr = y + (size_t)t * (size_t)D;
		double acc[RMS_ACC] = {0};
		int i = 0;
		for (; i + RMS_ACC <= D; i += RMS_ACC)
			for (int j = 0; j < RMS_ACC; j++)
				acc[j] += (double)xr[i + j] * xr[i + j];
		for (int j = 0; i < D; i++, j++)
			acc[j] += (double)xr[i] * xr[i];
		double ss = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
		float r = (float)(1.0 / sqrt(ss / D + eps));
		for (int i = 0; i < D; i++)
			yr[i] = xr[i] * r * wf[i];
	}
}
