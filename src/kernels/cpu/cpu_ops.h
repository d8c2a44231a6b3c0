/*
 * cpu_ops.h: the CPU kernels, one op per file, mirrored later by kernels/cuda/. All activations are f32
 * row-major; weights are in their stored format (src/layout/wfmt.h), read in place (matmul: src/kernels/cpu/qdot.h). Work is
 * split over OpenMP threads by output rows (or by token x head), and each output element is computed by
 * one thread in a fixed order, so results do not depend on the thread count.
 *
 * Kernels allocate nothing: those that need temporary rows take `scratch`, per_thread floats for each
 * OpenMP thread (thread i uses scratch + i * per_thread); the backend reserves it once.
 *
 * Ops with less work than about CPU_PAR_MIN floats (a decode step's norms, RoPE, residual adds; an eighth of
 * that for the gated activations, an expf or a double-precision tanh per element) run on the calling thread: starting a
 * parallel region costs more than that work (tens of microseconds to wake a thread that sleeps, as threads
 * do on a loaded machine: base/threads.c), and every region waits for its slowest thread, which on a busy
 * machine may be waiting for a core.
 *
 * Dimension letters: T tokens of the step, D model dim, H heads, Hkv kv heads, Dh head dim, N/K a matmul's
 * output/input size, C context (KV cache capacity).
 */
#ifndef FERRY_CPU_OPS_H
#define FERRY_CPU_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/kv_pages.h"

#define CPU_PAR_MIN 16384

/* Converts n values of a row in format fmt to f32; quantized blocks bit-identical with ggml's dequantization.
 * Returns -1 for a format the CPU cannot read, or n not a whole number of the format's blocks. */
int cpu_row_to_f32(int fmt, const void *src, float *dst, int64_t n);
bool cpu_fmt_supported(int fmt);

/* y[T,N] = x[T,K] . W[N,K]^T (+ bias[N] when bias != NULL). K is a multiple of the weight format's block.
 * Quantized weights: x is quantized to 8 bits per block and the dots are integer (src/kernels/cpu/qdot.h says
 * exactly what they compute); F32/F16/BF16 weights take f32 x. ws: cpu_matmul_ws_bytes(K) bytes, 64-aligned,
 * for the quantized x. */
size_t cpu_matmul_ws_bytes(int64_t K);
void cpu_matmul(float *y, const float *x, const void *W, int wfmt, const void *bias, int bias_fmt, int T, int N,
		int K, void *ws);

/* y[T,D] = x * rsqrt(mean(x^2) + eps) * w   (y may equal x); scratch: D floats (thread 0's) */
void cpu_rmsnorm(float *y, const float *x, const void *w, int wfmt, int T, int D, float eps, float *scratch);

/* Rotates x[T, n_heads*Dh] in place. inv_freq[Dh/2] (radians per position), scaled by mscale.
 * neox: pairs (i, i + Dh/2) (HF rotate-half); otherwise pairs (2i, 2i+1). */
void cpu_rope(float *x, int T, int n_heads, int Dh, const int *pos, const double *inv_freq, double mscale, bool neox);

/* x[n] (n a multiple of 32) in place: each group of 32 times the orthonormal Walsh-Hadamard matrix H32
 * (src/kernels/kv_pages.h): butterflies (a + b, a - b) over pairs (i, i + h) for h = 1, 2, 4, 8, 16 in that
 * order, then each value times 0.17677669529663687f (1/sqrt(32)). Its own inverse. */
void cpu_hadamard32(float *x, int64_t n);

/* One row of Dh values (Dh a multiple of 32) into row format rfmt (src/kernels/kv_pages.h: KV_ROW_LIST): q
 * gets kv_qrow_bytes, s kv_srow_bytes (unused for F32/F16), and back. */
void cpu_kv_row_quant(int rfmt, const float *x, void *q, void *s, int Dh);
void cpu_kv_row_dequant(int rfmt, const void *q, const void *s, float *x, int Dh);

/* Writes k, v [T, Hkv*Dh] (f32, already rotated when kv_fmt_rotated) of the range bt into the layer's pages
 * at each token's position, keys and values each in their pool's row format (kv_pool_fmt(kv->fmt, pool)).
 * The page of every written position must be mapped (not -1). */
void cpu_kv_store(const struct kv_layer *kv, const float *k, const float *v, const struct kv_batch *bt);

/* out[T, H*Dh]: attention of q[T, H*Dh] over the cached keys of each token's own sequence that its position
 * sees (src/kernels/kv_pages.h: j <= p, and p - j < window when window > 0), GQA with H/Hkv query heads per kv
 * head, rows dequantized to f32, softmax in f32 (max subtracted), fixed order. scratch: cpu_attention_scratch
 * floats per thread, max_ctx the most keys one query sees (max_pos + 1, or less with a window). sinks [H]
 * (NULL: none): head h's softmax denominator also holds exp(sinks[h]) (gpt-oss), a logit no value goes with. */
void cpu_attention(float *out, const float *q, const struct kv_layer *kv, const struct kv_batch *bt, int H,
		   int window, float scale, const float *sinks, float *scratch, int64_t per_thread);
int64_t cpu_attention_scratch(int max_ctx, int Dh);

/* y[n] = silu(gate[n]) * up[n] */
void cpu_swiglu(float *y, const float *gate, const float *up, int64_t n);

/* y[n] = gelu_tanh(gate[n]) * up[n], gelu_tanh(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in f32
 * with tanh correctly rounded (geglu_simd.h says exactly what), bit-identical on every isa */
void cpu_geglu(float *y, const float *gate, const float *up, int64_t n);
/* One thread's geglu on isa (enum cpu_isa, qdot.h); NULL when isa is not built in or this CPU lacks it */
typedef void (*cpu_geglu_fn)(float *y, const float *gate, const float *up, int64_t n);
cpu_geglu_fn cpu_geglu_find(int isa);
cpu_geglu_fn cpu_geglu_find_avx2(void);
cpu_geglu_fn cpu_geglu_find_avx512(void);

/* y[n] = g sigmoid(1.702 g) (u + 1), g = min(gate, 7), u = clamp(up, -7, 7): gpt-oss's clamped SwiGLU
 * (layout.h ACT_SWIGLU_OAI) */
void cpu_swiglu_oai(float *y, const float *gate, const float *up, int64_t n);

/* y[n] += x[n] */
void cpu_add(float *y, const float *x, int64_t n);

/* Mixture of experts (moe.c): ids, wts [T, K] the K experts of each token's router logits [T, E] (largest
 * first, ties by lower id) and their softmax weights (over all E, or over the K chosen when norm). */
void cpu_moe_route(int *ids, float *wts, const float *logits, int T, int E, int K, bool norm);
/* dst[i] = src[rows[i]], rows of D values, i < n */
void cpu_gather_rows(float *dst, const float *src, const int *rows, int n, int64_t D);
/* y[rows[i]] += w[i] * src[i]; rows without repeats */
void cpu_scatter_add(float *y, const float *src, const int *rows, const float *w, int n, int64_t D);

/* dst[t, j] = src[t, perm[j]] for T rows of K, perm f32 indices (gather_cols.c: act-order weights) */
void cpu_gather_cols(float *dst, const float *src, const float *perm, int T, int64_t K);

#endif
