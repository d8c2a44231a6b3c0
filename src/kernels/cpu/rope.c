/* rope.c: rotary position embedding in place; angles in double so long positions stay exact. */
#include <math.h>
#include <stddef.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_rope(float *x, int T, int n_heads, int Dh, const int *pos, const double *inv_freq, double mscale, bool neox)
{
	int half = Dh / 2;
#pragma omp parallel for schedule(static) if ((int64_t)T * n_heads * Dh >= CPU_PAR_MIN)
	for (int t = 0; t < T; t++) {
		for (int i = 0; i < half; i++) {
			double a = (double)pos[t] * inv_freq[i];
			float c = (float)(cos(a) * mscale), s = (float)(sin(a) * mscale);
			for (int h = 0; h < n_heads; h++) {
				float *v = x + ((size_t)t * (size_t)n_heads + (size_t)h) * (size_t)Dh;
				int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
				float x0 = v[i0], x1 = v[i1];
				v[i0] = x0 * c - x1 * s;
				v[i1] = x1 * c + x0 * s;
			}
		}
	}
}
