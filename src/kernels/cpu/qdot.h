/*
 * qdot.h: the quantized-row kernels behind cpu_row_to_f32 and cpu_matmul (internal to kernels/cpu and
 * the tests), one of each family per format of src/layout/wfmt_list.h that has it (its kind):
 *   dequant (dequant.c): nb blocks -> f32 (element formats: nb values), bit-identical with ggml / gguf-py.
 *   fused dot (qdot.c portable, qdot_avx2.c AVX2+FMA): out[t] = sum_k w[k] x[t*ldx + k] for t < T <=
 *   QDOT_MAX_T, w one quantized row of K values, dequantized block by block in registers and never
 *   written out. Activations stay f32 (nothing like llama.cpp's Q8 activations): the result is an f32
 *   dot product of the dequantized weights with x, differing from it only by f32 rounding (the scale
 *   of a block or sub-block multiplies its partial sum instead of each weight).
 * xs[t * (K/32) + j] = sum of x[t*ldx + 32j .. 32j+31] (cpu_qdot_xsums), used by the formats with a
 * min (Q4_K, Q5_K): sum (d q - m) x = d sum q x - m sum x.
 */
#ifndef FERRY_QDOT_H
#define FERRY_QDOT_H

#include <stdbool.h>
#include <stdint.h>

#include "layout/wfmt.h"

#define QDOT_MAX_T 4

typedef void (*cpu_dequant_fn)(const void *src, float *y, int64_t nb);
typedef void (*cpu_qdot_fn)(const void *w, const float *x, int64_t ldx, const float *xs, int T, int K,
			    float *out);

#define CPU_DEQUANT_DECL(id, code, block, bytes, ggml, kind, k) \
	WFMT_RUNS_##kind(void cpu_dequant_##k(const void *src, float *y, int64_t nb);, )
WFMT_LIST(CPU_DEQUANT_DECL)
#undef CPU_DEQUANT_DECL

/* simd: the AVX2 kernel (NULL when not built in: no AVX2/FMA, or FERRY_NO_SIMD), else the portable C one.
 * NULL for a format without a fused dot. */
cpu_qdot_fn cpu_qdot_find(int fmt, bool simd);
/* AVX2 kernels, qdot_avx2.c; NULL when not built in */
cpu_qdot_fn cpu_qdot_find_avx2(int fmt);
/* Whether fmt's fused dots read xs (the formats with mins) */
bool cpu_qdot_reads_xsums(int fmt);
/* xs[T, K/32] as above */
void cpu_qdot_xsums(const float *x, int64_t ldx, int T, int K, float *xs);

#endif
