/* swiglu.c: the gated MLP activation of Llama-family models, silu(gate) * up, and gpt-oss's clamped form. */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"
#include "layout/layout.h"

void cpu_swiglu(float *y, const float *gate, const float *up, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN / 8)
	for (int64_t i = 0; i < n; i++)
		y[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void cpu_swiglu_oai(float *y, const float *gate, const float *up, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN / 8)
	for (int64_t i = 0; i < n; i++) {
		float g = fminf(gate[i], ACT_OAI_LIMIT), u = fminf(fmaxf(up[i], -ACT_OAI_LIMIT), ACT_OAI_LIMIT);
		y[i] = g / (1.0f + expf(-ACT_OAI_ALPHA * g)) * (u + 1.0f);
	}
}
