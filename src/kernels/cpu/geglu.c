/* geglu.c: the gated MLP activation of Gemma, gelu_tanh(gate) * up (PyTorch's gelu(approximate="tanh")). */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_geglu(float *y, const float *gate, const float *up, int64_t n)
{
	const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN / 8)
	for (int64_t i = 0; i < n; i++) {
		float x = gate[i];
		y[i] = 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x))) * up[i];
	}
}
