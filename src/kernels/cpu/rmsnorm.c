/* rmsnorm.c: y = x * rsqrt(mean(x^2) + eps) * w, the mean accumulated in double (this is the reference). */
#include <math.h>
#include <stddef.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_rmsnorm(float *y, const float *x, const void *w, int wfmt, int T, int D, float eps, float *scratch)
{
	float *wf = scratch;
	cpu_row_to_f32(wfmt, w, wf, D);
#pragma omp parallel for schedule(static) if ((int64_t)T * D >= CPU_PAR_MIN)
	for (int t = 0; t < T; t++) {
		const float *xr = x + (size_t)t * (size_t)D;
		float *yr = y + (size_t)t * (size_t)D;
		double ss = 0;
		for (int i = 0; i < D; i++)
			ss += (double)xr[i] * xr[i];
		float r = (float)(1.0 / sqrt(ss / D + eps));
		for (int i = 0; i < D; i++)
			yr[i] = xr[i] * r * wf[i];
	}
}
