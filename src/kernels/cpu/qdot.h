/*
 * qdot.h: the quantized-row kernels behind cpu_row_to_f32 and cpu_matmul (internal to kernels/cpu and
 * the tests). Two families:
 *   dequant (dequant.c): nb blocks -> f32, bit-identical with ggml / gguf-py.
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

#define QDOT_MAX_T 4

typedef void (*cpu_dequant_fn)(const void *src, float *y, int64_t nb);
typedef void (*cpu_qdot_fn)(const void *w, const float *x, int64_t ldx, const float *xs, int T, int K,
			    float *out);

void cpu_dequant_q8_0(const void *src, float *y, int64_t nb);
void cpu_dequant_q4_0(const void *src, float *y, int64_t nb);
void cpu_dequant_q5_0(const void *src, float *y, int64_t nb);
void cpu_dequant_q4_k(const void *src, float *y, int64_t nb);
void cpu_dequant_q5_k(const void *src, float *y, int64_t nb);
void cpu_dequant_q6_k(const void *src, float *y, int64_t nb);
/* NULL for a format that is not a quantized block format */
cpu_dequant_fn cpu_dequant_find(int fmt);

/* simd: the AVX2 kernel (NULL when not built in: no AVX2/FMA, or FERRY_NO_SIMD), else the portable C one.
 * NULL for a format without a fused dot. */
cpu_qdot_fn cpu_qdot_find(int fmt, bool simd);
/* AVX2 kernels, qdot_avx2.c; NULL when not built in */
cpu_qdot_fn cpu_qdot_find_avx2(int fmt);
/* xs[T, K/32] as above */
void cpu_qdot_xsums(const float *x, int64_t ldx, int T, int K, float *xs);

#endif
