/* swiglu.c: the gated MLP activation of Llama-family models, silu(gate) * up. */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_swiglu(float *y, const float *gate, const float *up, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN / 8)
	for (int64_t i = 0; i < n; i++)
		y[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}
