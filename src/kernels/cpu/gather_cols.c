/*
 * gather_cols.c: the activation permutation of act-order weights (issue 19): a linear whose columns are
 * stored sorted by quantization group (src/convert/hf_quant.h) multiplies x gathered into the same order,
 * dst[t, j] = src[t, perm[j]]. perm holds the indices as f32 (exact below 2^24, the converter checks).
 * src/kernels/cuda/gather_cols.cu mirrors it. Letters: T rows, K row width.
 */
#include "kernels/cpu/cpu_ops.h"

void cpu_gather_cols(float *dst, const float *src, const float *perm, int T, int64_t K)
{
#pragma omp parallel for schedule(static) if ((int64_t)T * K >= CPU_PAR_MIN)
	for (int t = 0; t < T; t++) {
		const float *s = src + (size_t)t * (size_t)K;
		float *d = dst + (size_t)t * (size_t)K;
		for (int64_t j = 0; j < K; j++)
			d[j] = s[(int64_t)perm[j]];
	}
}
