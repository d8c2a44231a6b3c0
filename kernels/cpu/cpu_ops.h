/*
 * cpu_ops.h: the CPU kernels, one op per file, mirrored later by kernels/cuda/. All activations are f32
 * row-major; weights are in their stored format (layout/wfmt.h) and converted to f32 on the fly. Work is
 * split over OpenMP threads by output rows (or by token x head), and each output element is computed by
 * one thread in a fixed order, so results do not depend on the thread count.
 *
 * Kernels allocate nothing: those that need temporary rows take `scratch`, per_thread floats for each
 * OpenMP thread (thread i uses scratch + i * per_thread); the backend reserves it once.
 *
 * Dimension letters: T tokens of the step, D model dim, H heads, Hkv kv heads, Dh head dim, N/K a matmul's
 * output/input size, C context (KV cache capacity).
 */
#ifndef FERRY_CPU_OPS_H
#define FERRY_CPU_OPS_H

#include <stdbool.h>
#include <stdint.h>

/* Converts n values of a row in format fmt to f32; quantized blocks bit-identical with ggml's dequantization.
 * Returns -1 for a format the CPU cannot read, or n not a whole number of the format's blocks. */
int cpu_row_to_f32(int fmt, const void *src, float *dst, int64_t n);
bool cpu_fmt_supported(int fmt);

/* y[T,N] = x[T,K] . W[N,K]^T (+ bias[N] when bias != NULL); scratch: K floats per thread. K is a multiple of
 * the weight format's block. Quantized weights are dequantized to f32 (x is never quantized): T <= 4 in
 * registers block by block (kernels/cpu/qdot.h), larger T a row at a time into scratch. */
void cpu_matmul(float *y, const float *x, const void *W, int wfmt, const void *bias, int bias_fmt, int T, int N,
		int K, float *scratch, int64_t per_thread);

/* y[T,D] = x * rsqrt(mean(x^2) + eps) * w   (y may equal x); scratch: D floats (thread 0's) */
void cpu_rmsnorm(float *y, const float *x, const void *w, int wfmt, int T, int D, float eps, float *scratch);

/* Rotates x[T, n_heads*Dh] in place. inv_freq[Dh/2] (radians per position), scaled by mscale.
 * neox: pairs (i, i + Dh/2) (HF rotate-half); otherwise pairs (2i, 2i+1). */
void cpu_rope(float *x, int T, int n_heads, int Dh, const int *pos, const double *inv_freq, double mscale, bool neox);

/* Writes k, v [T, Hkv*Dh] into the caches [C, Hkv*Dh] at rows pos[t]. */
void cpu_kv_store(float *kc, float *vc, const float *k, const float *v, const int *pos, int T, int kv_dim);

/* out[T, H*Dh]: causal attention of q[T, H*Dh] over cache rows 0..pos[t] (only the last `window` rows when
 * window > 0), GQA with H/Hkv query heads per kv head, softmax in f32. scratch: max(pos) + 1 floats per thread */
void cpu_attention(float *out, const float *q, const float *kc, const float *vc, const int *pos, int T, int H,
		   int Hkv, int Dh, int window, float scale, float *scratch, int64_t per_thread);

/* y[n] = silu(gate[n]) * up[n] */
void cpu_swiglu(float *y, const float *gate, const float *up, int64_t n);

/* y[n] = gelu_tanh(gate[n]) * up[n], gelu_tanh(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
void cpu_geglu(float *y, const float *gate, const float *up, int64_t n);

/* y[n] += x[n] */
void cpu_add(float *y, const float *x, int64_t n);

#endif
