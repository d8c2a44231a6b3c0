/* add.c: the residual connection, y += x. */
#include "kernels/cpu/cpu_ops.h"

void cpu_add(float *y, const float *x, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN)
	for (int64_t i = 0; i < n; i++)
		y[i] += x[i];
}
