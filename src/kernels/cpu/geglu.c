/* geglu.c: the gated MLP activation of Gemma, gelu_tanh(gate) * up (PyTorch's gelu(approximate="tanh")),
 * written as x sigmoid(2u) = x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3): the same function as
 * 0.5 x (1 + tanh(u)), one expf instead of tanhf (which takes an expm1f and more: a tenth of a prefill). */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_geglu(float *y, const float *gate, const float *up, int64_t n)
{
	const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN / 8)
	for (int64_t i = 0; i < n; i++) {
		float x = gate[i];
		y[i] = x / (1.0f + expf(-2.0f * k * (x + 0.044715f * x * x * x))) * up[i];
	}
}
