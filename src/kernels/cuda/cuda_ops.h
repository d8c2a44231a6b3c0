/*
 * cuda_ops.h: the CUDA kernels (the .cu files of kernels/cuda) as C entry points, mirroring src/kernels/cpu/cpu_ops.h.
 * Host code (src/backend/cuda.c) calls only these; it never launches a kernel itself.
 *
 * Conventions:
 * - Every launcher enqueues its work on ctx->stream and returns at once (no synchronization), 0 or a
 *   negative errno: -EINVAL for a shape or format the kernel cannot do (checked before any launch, with a
 *   one-line reason in ctx->err), -ENOSPC when ctx's workspace is too small, -EIO when a launch or a CUDA
 *   call failed (the CUDA error string in ctx->err).
 * - Every pointer is device memory unless its comment says host. Activations are f32 row-major; the KV
 *   cache is paged, in F16, Q8 or Q4 (src/kernels/kv_pages.h); weights are in their stored format
 *   (src/layout/wfmt.h, blocks of src/layout/quant.h).
 * - Launchers allocate nothing: per-call temporaries come from ctx->ws (ws_bytes bytes, owned by the
 *   backend's arena); cuda_ws_bytes() says how much a configuration needs.
 * - Results must not depend on launch timing: no atomics on floats whose order changes the sum.
 *
 * Dimension letters: T tokens, D model, H heads, Hkv kv heads, Dh head dim, N/K a matmul's output/input
 * size, V vocab, C KV capacity.
 */
#ifndef FERRY_CUDA_OPS_H
#define FERRY_CUDA_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/kv_pages.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest T the fused dequantize-and-dot (matrix-vector) kernels take; larger steps use the GEMM path. */
#define CUDA_MATVEC_T_MAX 16
/* Largest T the 8-bit-activation matrix-vector kernels (matvec_q8.cu) take; T up to CUDA_MATVEC_T_MAX above
 * it runs the f32 ones. */
#define CUDA_MVQ_T_MAX 8

struct cuda_ctx {
	void *stream;      /* cudaStream_t: the compute stream */
	void *cublas;      /* cublasHandle_t bound to stream, its workspace set from the arena */
	int cc;            /* compute capability x 10 (75, 80, 86, 89, 90): bf16 tensor-core GEMM from 80 on */
	int n_sm;          /* multiprocessors */
	void *ws;          /* workspace */
	size_t ws_bytes;
	size_t gemm_rows;  /* GEMM path: rows of W dequantized at a time (a multiple of 64) */
	int mm_mode;       /* enum cuda_mm_mode: which matmul path (0: the crossover table) */
	int topk_mode;     /* enum cuda_topk_mode (0: grid-wide) */
	/* the 8-bit matvec also for the formats whose kernels have not yet run on a GPU (cuda_mvq_checked false;
	 * FERRY_MVQ_ALL=1; the tests and the bench set it): until then auto gives those the f32 matvec */
	bool mvq_all;
	unsigned long long launches; /* kernels launched on this context (CUDA_LAUNCH_CHECK counts each; cuBLAS's not) */
	/* The 8-bit x of the latest 8-bit matvec (codes and scales at the start of ws): the next one over the
	 * same x pointer, T, K and block size reuses it while no kernel has been launched since (launches ==
	 * xq_at: any op, and anything that used ws, launches one) and no upload wrote device memory
	 * (cuda_xq_forget). q, k, v share one quantization, gate and up another. xq_reuse false: never reused. */
	bool xq_reuse;
	const void *xq_x;
	int xq_T, xq_block;
	int64_t xq_K;
	unsigned long long xq_at;
	unsigned long long xq_reused; /* quantizations skipped */
	char err[256];
};

/* cuda_matmul's choice of kernel (the backend sets it from FERRY_MATMUL=auto|old|mma|blas|q8mma, for comparing):
 * AUTO the 8-bit-activation matrix-vector kernels up to CUDA_MVQ_T_MAX for the formats that have one, then the
 * crossover table of matmul.cu; OLD (as before the 8-bit kernels) the f32 matrix-vector kernels up to CUDA_MATVEC_T_MAX and the
 * dequantize-then-cuBLAS GEMM above; MMA the tensor-core kernel with in-kernel dequantization wherever it runs
 * (quantized formats from cc 80), else as OLD; BLAS dequantize-then-cuBLAS at every T (needs the workspace); Q8MMA
 * the int8 tensor-core kernel (matmul_q8mma.cu) wherever it runs (its formats, from cc 80), else as AUTO. */
enum cuda_mm_mode { CUDA_MM_AUTO, CUDA_MM_OLD, CUDA_MM_MMA, CUDA_MM_BLAS, CUDA_MM_Q8MMA };
/* The kernels cuda_matmul_kernel names: f32 matrix-vector, tensor-core with in-kernel dequantization,
 * bf16/f16 dequantization then cuBLAS, matrix-vector on 8-bit activations (integer dots), int8 tensor cores on
 * 8-bit activations */
enum cuda_mm_kernel { CUDA_MMK_MATVEC, CUDA_MMK_MMA, CUDA_MMK_BLAS, CUDA_MMK_MVQ, CUDA_MMK_Q8MMA, CUDA_MMK_COUNT };
/* cuda_topk's kernel (FERRY_TOPK=grid|block): GRID several blocks over the row then one for the candidates
 * (needs cuda_topk_ws_bytes of workspace), BLOCK the single-block radix select (no workspace) */
enum cuda_topk_mode { CUDA_TOPK_GRID, CUDA_TOPK_BLOCK };

/* Forget the cached 8-bit x (c->xq_*): called by whoever writes device memory without a kernel launch. */
static inline void cuda_xq_forget(struct cuda_ctx *c)
{
	c->xq_x = NULL;
}

/* Workspace bytes cuda_matmul needs for up to T_max tokens over K_max inputs: the larger of the GEMM path's (the
 * activations converted to bf16/f16 plus gemm_rows x K_max dequantized weights; none when T_max <=
 * CUDA_MATVEC_T_MAX) and the 8-bit kernels' (T_max rows of codes and their scales: the int8 tensor-core kernel
 * takes any T). */
size_t cuda_matmul_ws_bytes(int T_max, int64_t K_max, size_t gemm_rows);
/* Workspace bytes cuda_attention needs for up to T_max queries of H heads of Dh over up to C keys (the
 * partial results of a split key range). The backend gives the larger of the two. */
size_t cuda_attention_ws_bytes(int T_max, int C, int H, int Dh);

/* Copy pacing on stream (cudaStream_t), pace.cu: after = 0 notes the GPU clock in *mark (device memory);
 * after = 1 waits until ns have passed since the note. 0 or -EIO. */
int cuda_pace(void *stream, unsigned long long *mark, int after, unsigned long long ns);

/* true when cuda_matmul takes weights of this format (every row of src/layout/wfmt_list.h with kernels). */
bool cuda_fmt_supported(int fmt);

/* true when the format has an 8-bit-activation matrix-vector kernel (matvec_q8.cu: Q4_K, Q5_K, Q6_K, Q8_0, Q4_0,
 * Q5_0, Q4_1, Q5_1, IQ4_NL), which cuda_matmul runs at T <= CUDA_MVQ_T_MAX unless c->mm_mode says otherwise. */
bool cuda_mvq_runs(int wfmt);
/* true for the formats whose 8-bit matvec has passed test_cuda_matmul on a GPU (the list in matvec_q8.cu); the
 * others' kernels (Q4_Z128, Q8_Z128: wrong on an H100) run under auto only with c->mvq_all. */
bool cuda_mvq_checked(int wfmt);
/* Workspace bytes of the 8-bit kernels' x for T tokens of K: codes, then scales (matvec_q8.cu, matmul_q8mma.cu). */
size_t cuda_mvq_ws_bytes(int T, int64_t K);
/* true when the int8 tensor-core kernel (matmul_q8mma.cu: Q4_K, Q5_K, Q6_K, Q8_0, Q4_0, Q5_0) runs on this
 * device (cc >= 80) and this binary holds its sm_80+ code. */
bool cuda_q8mma_runs(const struct cuda_ctx *c, int wfmt);

/* The kernel (enum cuda_mm_kernel) cuda_matmul runs for this format and T under c->mm_mode; tests take the
 * error bound of its precision from it. */
int cuda_matmul_kernel(const struct cuda_ctx *c, int wfmt, int T);

/* y[T,N] = x[T,K] . W[N,K]^T (+ bias[N], bias in F32/F16/BF16, or NULL), by one of four kernels
 * (cuda_matmul_kernel): for T <= CUDA_MVQ_T_MAX and the formats with one, x quantized to 8 bits per block as
 * the CPU does and integer dots (cpu_matmul's result up to f32 rounding order; needs the workspace);
 * the same 8-bit x on int8 tensor cores (Q4_K, Q5_K, Q6_K, Q8_0, Q4_0, Q5_0 from cc 80: cpu_matmul's portable
 * result bit for bit; needs the workspace); fused dequantize-and-dot in f32 (x never quantized, T <=
 * CUDA_MATVEC_T_MAX); tensor
 * cores with the weights dequantized inside the kernel, x and W rounded to bf16, f32 accumulation (quantized
 * formats, cc >= 80, no workspace); W dequantized gemm_rows at a time to bf16 (f16 below cc 80) and
 * multiplied on tensor cores by cuBLAS with f32 accumulation, x converted likewise.
 * K is a multiple of the format's block. y must not alias x. */
int cuda_matmul(struct cuda_ctx *c, float *y, const float *x, const void *W, int wfmt, int64_t N, int64_t K,
		const void *bias, int bias_fmt, int T);

/* y[T,n] = x * rsqrt(mean(x^2) + eps) * w, w[n] in F32/F16/BF16; y may equal x. */
int cuda_rmsnorm(struct cuda_ctx *c, float *y, const float *x, const void *w, int wfmt, int T, int n, float eps);

/* Rotates x[T, n_heads*Dh] in place at positions pos[T] (device). inv_freq[Dh/2] (device, double),
 * angles in double like cpu_rope, cos and sin scaled by mscale. neox: pairs (i, i + Dh/2), else (2i, 2i+1). */
int cuda_rope(struct cuda_ctx *c, float *x, const int *pos, int T, int n_heads, int Dh, const double *inv_freq,
	      double mscale, bool neox);

/* x[n] (n a multiple of 32) in place, each group of 32 times H32: bit for bit cpu_hadamard32 (same butterfly
 * order, same final scale). */
int cuda_hadamard32(struct cuda_ctx *c, float *x, int64_t n);

/* Writes k, v [T, Hkv*Dh] (f32) of the range bt (device arrays) into the layer's pages in kv->fmt (F16, Q8,
 * Q4; src/kernels/kv_pages.h), byte for byte what cpu_kv_store writes. */
int cuda_kv_store(struct cuda_ctx *c, const struct kv_layer *kv, const float *k, const float *v,
		  const struct kv_batch *bt);

/* The accepted path of a token tree: K and V rows of positions from[i] to to[i] (host arrays, kv_rows_move's
 * order, at most KV_TREE_MAX) through the host page-table row `pages`, on the compute stream. */
int cuda_kv_move(struct cuda_ctx *c, const struct kv_layer *kv, const int *pages, int n, const int *from,
		 const int *to);

/* out[T, H*Dh]: attention of q[T, H*Dh] (f32) over the paged cache of each token's own sequence, with the
 * visibility of src/kernels/kv_pages.h (window 0: causal over the whole sequence), as cpu_attention. kv->fmt
 * F16, Q8 or Q4, dequantized to f16 as tiles are loaded. GQA: H/Hkv query heads per kv head. Flash-style:
 * online softmax in f32, never a T x C score matrix; small T (decode) splits the key range over blocks and
 * combines the partial results. Dh: any multiple of 32 up to 256. Parts of any lengths mix in one call
 * (prefill chunks and decode tokens of different sequences). sinks: [H] f32 in device memory, or NULL (as
 * cpu_attention). */
int cuda_attention(struct cuda_ctx *c, float *out, const float *q, const struct kv_layer *kv,
		   const struct kv_batch *bt, int H, int window, float scale, const float *sinks);

/* What cuda_attention would launch with these arguments, launching nothing: *nsplit, the key splits (its
 * grid's depth; 1: no combine; 0: T = 0), which follows the batch's host values max_pos and max_part. A CUDA
 * graph captured with one split count is replayed only for steps that give the same (backend cuda.c). */
int cuda_attention_splits(struct cuda_ctx *c, int64_t *nsplit, float *out, const float *q, const struct kv_layer *kv,
			  const struct kv_batch *bt, int H, int window, float scale, const float *sinks);

/* y[n] = act(gate[n]) * up[n], act an enum act (src/layout/layout.h): ACT_SILU, ACT_GELU_TANH (tanh form,
 * as cpu_geglu) or ACT_SWIGLU_OAI (as cpu_swiglu_oai). y may equal gate. */
int cuda_glu(struct cuda_ctx *c, float *y, const float *gate, const float *up, int64_t n, int act);

/* y[n] += x[n] */
int cuda_add(struct cuda_ctx *c, float *y, const float *x, int64_t n);

/* Mixture of experts (moe.cu, as src/kernels/cpu/moe.c): ids, wts [T, K] (device) the K experts of each
 * token's router logits [T, E] and their softmax weights (over all E, over the K when norm);
 * dst[i] = src[rows[i]] and y[rows[i]] += w[i] * src[i] for rows of D (rows, w device [n], rows without
 * repeats). */
int cuda_moe_route(struct cuda_ctx *c, int *ids, float *wts, const float *logits, int T, int E, int K, bool norm);
int cuda_gather_rows(struct cuda_ctx *c, float *dst, const float *src, const int *rows, int n, int64_t D);
int cuda_scatter_add(struct cuda_ctx *c, float *y, const float *src, const int *rows, const float *w, int n,
		     int64_t D);
/* dst[t, j] = src[t, perm[j]] for T rows of K (gather_cols.cu, as src/kernels/cpu/gather_cols.c; perm device
 * f32 indices, dst not src) */
int cuda_gather_cols(struct cuda_ctx *c, float *dst, const float *src, const float *perm, int T, int64_t K);

/* logits[T, V] = cap * tanh(logits / cap) in place (Gemma's final softcap), in that op order. */
int cuda_softcap(struct cuda_ctx *c, float *logits, int64_t n, float cap);

/* Greedy: idx[t] = argmax over logits[t, 0..V) (lowest index on ties), for T rows. idx device. */
int cuda_argmax(struct cuda_ctx *c, int *idx, const float *logits, int T, int V);

/* The k largest of logits[V] (one row), sorted descending (ties: lower index first): vals[k], idx[k]
 * (device). k <= 1024. The sampler applies temperature / top-p / min-p on these k on the host.
 * c->topk_mode CUDA_TOPK_GRID needs cuda_topk_ws_bytes() of workspace (-ENOSPC without). */
int cuda_topk(struct cuda_ctx *c, float *vals, int *idx, const float *logits, int V, int k);
size_t cuda_topk_ws_bytes(void);

#ifdef __cplusplus
}
#endif

#endif
