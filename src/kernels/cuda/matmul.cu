/*
 * matmul.cu: cuda_matmul, y[T,N] = x[T,K] . W[N,K]^T (+ bias): argument checks, then one of five kernels
 * (cuda_matmul_kernel: c->mm_mode, else the 8-bit kernels of matvec_q8.cu up to CUDA_MVQ_T_MAX where the
 * format has one, then the crossover tables below): the int8 tensor-core kernel of matmul_q8mma.cu, the fused f32 kernels of matvec.cu
 * for T <= CUDA_MATVEC_T_MAX, the tensor-core kernel of matmul_mma.cu, or the GEMM path here: x converted once to bf16 (f16 below cc 80,
 * where tensor cores have no bf16), W dequantized gemm_rows rows at a time into the workspace in the same
 * type, each chunk multiplied by cuBLAS with f32 accumulation straight into its columns of y, the bias added
 * last. Weights already in the GEMM's type (BF16 from cc 80, F16 below) go to cuBLAS as they are, in one call.
 *
 * Workspace (c->ws): [x as bf16/f16: T*K, 256-byte aligned][dequantized rows: min(gemm_rows, N) * K].
 * cuBLAS works column-major: y^T[N,T] (ld N) = W[N,K] (column-major K x N, ld K, transposed) . x^T (K x T).
 */
#include "kernels/cuda/cuda_blas.h"
#include <type_traits>

#include "kernels/cuda/matmul.cuh"

#define WS_ALIGN 256

static size_t ws_align(size_t n)
{
	return (n + WS_ALIGN - 1) / WS_ALIGN * WS_ALIGN;
}

extern "C" size_t cuda_matmul_ws_bytes(int T_max, int64_t K_max, size_t gemm_rows)
{
	size_t mvq = cuda_mvq_ws_bytes(T_max, K_max); /* the int8 tensor-core kernel's codes of every token */
	if (T_max <= CUDA_MATVEC_T_MAX)
		return mvq;
	size_t gemm = ws_align((size_t)T_max * (size_t)K_max * 2) + ws_align(gemm_rows * (size_t)K_max * 2);
	return gemm > mvq ? gemm : mvq;
}

__device__ __forceinline__ void store_half(__nv_bfloat16 *p, float v)
{
	*p = __float2bfloat16_rn(v);
}

__device__ __forceinline__ void store_half(__half *p, float v)
{
	*p = __float2half_rn(v);
}

/* dst[rows, K] = rows of W as H, XV values per thread */
template <class F, int XV, typename H>
static __global__ void k_dequant_half(H *__restrict__ dst, const uint8_t *__restrict__ W, int64_t rows, int64_t K,
				      int64_t row_bytes)
{
	int64_t per_row = K / XV, n = rows * per_row;
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
		int64_t r = i / per_row, k = i % per_row * XV;
		float w[XV];
		F::template deq<XV>(W + r * row_bytes, k, w);
#pragma unroll
		for (int j = 0; j < XV; j++)
			store_half(dst + r * K + k + j, w[j]);
	}
}

template <typename H>
static __global__ void k_to_half(H *__restrict__ dst, const float *__restrict__ x, int64_t n)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
		store_half(dst + i, x[i]);
}

static __global__ void k_add_bias(float *__restrict__ y, const void *__restrict__ bias, int bias_fmt, int64_t N,
				  int64_t n)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
		y[i] += vec_elem_f32(bias, bias_fmt, i % N);
}

/* a grid-stride launch: enough blocks to fill the GPU several times, no more than the work needs */
static unsigned grid_for(const struct cuda_ctx *c, int64_t n, int threads)
{
	int64_t need = (n + threads - 1) / threads, cap = (int64_t)(c->n_sm > 0 ? c->n_sm : 16) * 32;
	return (unsigned)(need < cap ? (need > 0 ? need : 1) : cap);
}

template <class F, int XV, typename H>
static int dequant_launch(struct cuda_ctx *c, H *dst, const void *W, int64_t rows, int64_t K)
{
	const int threads = 256;
	k_dequant_half<F, XV, H><<<grid_for(c, rows * K / XV, threads), threads, 0, cuda_stream_of(c)>>>(
		dst, (const uint8_t *)W, rows, K, K / F::BLOCK * F::BYTES);
	CUDA_LAUNCH_CHECK(c, "k_dequant_half");
	return 0;
}

/* One GEMM dequantization per format with a decoder (src/layout/wfmt_list.h): float weights 4 values per thread
 * when rows allow vector loads, else 1; quantized weights 4. */
template <class F, typename H>
static int dequant_rows(struct cuda_ctx *c, H *dst, const void *W, int64_t rows, int64_t K)
{
	if constexpr (F::BLOCK == 1) {
		if (!(K % 4 == 0 && ((uintptr_t)W & 15) == 0))
			return dequant_launch<F, 1, H>(c, dst, W, rows, K);
	}
	return dequant_launch<F, 4, H>(c, dst, W, rows, K);
}

/* A format's entries of the GEMM path: its dequantization to bf16 and to f16, and the alignment its rows need */
struct gemm_fmt {
	int (*dequant_bf16)(struct cuda_ctx *c, __nv_bfloat16 *dst, const void *W, int64_t rows, int64_t K);
	int (*dequant_f16)(struct cuda_ctx *c, __half *dst, const void *W, int64_t rows, int64_t K);
	int align; /* 0: no decoder, the format is not supported */
};
template <class F> static constexpr gemm_fmt gemm_fmt_of()
{
	return {dequant_rows<F, __nv_bfloat16>, dequant_rows<F, __half>, F::ALIGN};
}
#define GEMM_ROW(id, code, block, bytes, ggml, kind, k) WFMT_RUNS_##kind(gemm_fmt_of<deq_##k>(), gemm_fmt{}),
static const gemm_fmt gemm_by_fmt[WFMT_COUNT] = {WFMT_LIST(GEMM_ROW)};
#undef GEMM_ROW

extern "C" bool cuda_fmt_supported(int fmt)
{
	return fmt >= 0 && fmt < WFMT_COUNT && gemm_by_fmt[fmt].align;
}

template <typename H>
static int dequant_fmt(struct cuda_ctx *c, H *dst, const void *W, int wfmt, int64_t rows, int64_t K)
{
	if constexpr (std::is_same<H, __nv_bfloat16>::value)
		return gemm_by_fmt[wfmt].dequant_bf16(c, dst, W, rows, K);
	else
		return gemm_by_fmt[wfmt].dequant_f16(c, dst, W, rows, K);
}

static int gemm_chunk(struct cuda_ctx *c, float *y, const void *Wh, const void *xh, cudaDataType_t ht, int64_t rows,
		      int64_t N, int64_t K, int T)
{
	const float one = 1.0f, zero = 0.0f;
	const struct cuda_blas *bl = cuda_blas_get(c->err, sizeof(c->err));
	if (!bl)
		return -EIO;
	cublasStatus_t st = bl->gemm_ex((cublasHandle_t)c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, T, (int)K,
					 &one, Wh, ht, (int)K, xh, ht, (int)K, &zero, y, CUDA_R_32F, (int)N,
					 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
	if (st != CUBLAS_STATUS_SUCCESS) {
		snprintf(c->err, sizeof(c->err), "%s:%d: cublasGemmEx (%lld x %d x %lld): %s", __FILE__, __LINE__,
			 (long long)rows, T, (long long)K, bl->status_string(st));
		return -EIO;
	}
	return 0;
}

template <typename H>
static int gemm_path(struct cuda_ctx *c, float *y, const float *x, const void *W, int wfmt, int64_t N, int64_t K,
		     const void *bias, int bias_fmt, int T, bool direct)
{
	const cudaDataType_t ht = std::is_same<H, __nv_bfloat16>::value ? CUDA_R_16BF : CUDA_R_16F;
	cudaStream_t s = cuda_stream_of(c);
	int64_t chunk = (int64_t)c->gemm_rows < N ? (int64_t)c->gemm_rows : N;
	size_t x_bytes = ws_align((size_t)T * (size_t)K * sizeof(H));
	/* Chunks as large as the workspace allows (it is sized for the widest K and the most tokens): few large
	 * GEMMs fill the GPU's multiprocessors, many small ones leave a partial last wave each. */
	if (!direct && c->ws_bytes > x_bytes) {
		int64_t fit = (int64_t)((c->ws_bytes - x_bytes) / ((size_t)K * sizeof(H))) / 64 * 64;
		fit = fit < N ? fit : N;
		chunk = fit > chunk ? fit : chunk;
	}
	size_t need = x_bytes + (direct ? 0 : ws_align((size_t)chunk * (size_t)K * sizeof(H)));
	if (need > c->ws_bytes) {
		snprintf(c->err, sizeof(c->err), "cuda_matmul: workspace of %zu bytes, T=%d K=%lld needs %zu", c->ws_bytes,
			 T, (long long)K, need);
		return -ENOSPC;
	}
	H *xh = (H *)c->ws, *wh = (H *)((char *)c->ws + x_bytes);
	int64_t n = (int64_t)T * K;
	k_to_half<H><<<grid_for(c, n, 256), 256, 0, s>>>(xh, x, n);
	CUDA_LAUNCH_CHECK(c, "k_to_half");
	int rc;
	if (direct) {
		if ((rc = gemm_chunk(c, y, W, xh, ht, N, N, K, T)))
			return rc;
	} else {
		int64_t row_bytes = K / wfmt_table[wfmt].block * wfmt_table[wfmt].block_bytes;
		for (int64_t r0 = 0; r0 < N; r0 += chunk) {
			int64_t rows = N - r0 < chunk ? N - r0 : chunk;
			if ((rc = dequant_fmt<H>(c, wh, (const uint8_t *)W + r0 * row_bytes, wfmt, rows, K)))
				return rc;
			if ((rc = gemm_chunk(c, y + r0, wh, xh, ht, rows, N, K, T)))
				return rc;
		}
	}
	if (bias) {
		n = (int64_t)T * N;
		k_add_bias<<<grid_for(c, n, 256), 256, 0, s>>>(y, bias, bias_fmt, N, n);
		CUDA_LAUNCH_CHECK(c, "k_add_bias");
	}
	return 0;
}

/* Where the tensor-core kernel (in-kernel dequantization) replaces the other two, per format: T in
 * [t_lo, t_hi]; formats not listed take the default row. Tuned with `bench_cuda_matmul --mma`, which prints
 * the three kernels side by side at T = 1..256 per format. The defaults keep the f32 matrix-vector kernels
 * up to CUDA_MATVEC_T_MAX (decode batches and speculative trees of up to 16 tokens then compute exactly as a
 * single decode token does) and cuBLAS on dequantized tiles above 256 tokens, where a prefill chunk spreads
 * the dequantization over many tokens: unmeasured guesses until the bench has run on the GPU. */
struct mma_cross {
	int fmt, t_lo, t_hi;
};
/* Measured on an H100 (bench_cuda_matmul --mma, bench/RESULTS.md 2026-12-07, third session): the tensor-core
 * kernel was 1.1-4.6x slower than dequantize-then-cuBLAS at every T from 17 to 256 on the 70B and 8B shapes, so
 * auto picks it nowhere yet (an empty range); FERRY_MATMUL=mma runs it. Rows: {format, first T, last T}. */
static const struct mma_cross mma_cross_tab[] = {
	{-1, 1, 0}, /* default: last */
};

/* Where the int8 tensor-core kernel (matmul_q8mma.cu) replaces the others, rows as above: empty until
 * `bench_cuda_matmul --q8mma` has measured it on an H100 (bench/RESULTS.md lists the run owed); until then
 * FERRY_MATMUL=q8mma runs it. */
static const struct mma_cross q8mma_cross_tab[] = {
	{-1, 1, 0}, /* default: last */
};

static bool cross_wins(const struct mma_cross *r, int wfmt, int T)
{
	while (r->fmt >= 0 && r->fmt != wfmt)
		r++;
	return T >= r->t_lo && T <= r->t_hi;
}

extern "C" int cuda_matmul_kernel(const struct cuda_ctx *c, int wfmt, int T)
{
	bool mma = cuda_mma_runs(c, wfmt), q8mma = cuda_q8mma_runs(c, wfmt);
	switch (c->mm_mode) {
	case CUDA_MM_Q8MMA:
		if (q8mma)
			return CUDA_MMK_Q8MMA;
		if (T <= CUDA_MVQ_T_MAX && cuda_mvq_runs(wfmt))
			return CUDA_MMK_MVQ;
		break;
	case CUDA_MM_MMA:
		if (mma)
			return CUDA_MMK_MMA;
		break;
	case CUDA_MM_BLAS:
		return CUDA_MMK_BLAS;
	case CUDA_MM_OLD:
		break;
	default:
		if (T <= CUDA_MVQ_T_MAX && (c->mvq_all ? cuda_mvq_runs(wfmt) : cuda_mvq_checked(wfmt)))
			return CUDA_MMK_MVQ;
		if (q8mma && cross_wins(q8mma_cross_tab, wfmt, T))
			return CUDA_MMK_Q8MMA;
		if (mma && cross_wins(mma_cross_tab, wfmt, T))
			return CUDA_MMK_MMA;
	}
	return T <= CUDA_MATVEC_T_MAX ? CUDA_MMK_MATVEC : CUDA_MMK_BLAS;
}

extern "C" int cuda_matmul(struct cuda_ctx *c, float *y, const float *x, const void *W, int wfmt, int64_t N, int64_t K,
			   const void *bias, int bias_fmt, int T)
{
	CUDA_ARG_CHECK(c, cuda_fmt_supported(wfmt), "cuda_matmul: weight format %d not supported", wfmt);
	CUDA_ARG_CHECK(c, N > 0 && K > 0 && T > 0 && N <= INT32_MAX && K <= INT32_MAX,
		       "cuda_matmul: bad shape N=%lld K=%lld T=%d", (long long)N, (long long)K, T);
	CUDA_ARG_CHECK(c, K % wfmt_table[wfmt].block == 0, "cuda_matmul: K=%lld is not a multiple of %s's block of %u",
		       (long long)K, wfmt_table[wfmt].name, wfmt_table[wfmt].block);
	CUDA_ARG_CHECK(c, !bias || bias_fmt == WFMT_F32 || bias_fmt == WFMT_F16 || bias_fmt == WFMT_BF16,
		       "cuda_matmul: bias format %d is not F32/F16/BF16", bias_fmt);
	CUDA_ARG_CHECK(c, y && x && W, "cuda_matmul: NULL pointer");
	bool quant = wfmt_table[wfmt].block > 1;
	CUDA_ARG_CHECK(c, !quant || ((uintptr_t)x & 15) == 0, "cuda_matmul: x not 16-byte aligned");
	CUDA_ARG_CHECK(c, (uintptr_t)W % gemm_by_fmt[wfmt].align == 0, "cuda_matmul: %s weights misaligned",
		       wfmt_table[wfmt].name);
	int kern = cuda_matmul_kernel(c, wfmt, T);
	if (kern == CUDA_MMK_MVQ)
		return cuda_matvec_q8(c, y, x, W, wfmt, N, K, bias, bias_fmt, T);
	if (kern == CUDA_MMK_MATVEC)
		return cuda_matvec(c, y, x, W, wfmt, N, K, bias, bias_fmt, T);
	if (kern == CUDA_MMK_MMA)
		return cuda_matmul_mma(c, y, x, W, wfmt, N, K, bias, bias_fmt, T);
	if (kern == CUDA_MMK_Q8MMA)
		return cuda_matmul_q8mma(c, y, x, W, wfmt, N, K, bias, bias_fmt, T);
	CUDA_ARG_CHECK(c, c->cublas && c->gemm_rows > 0, "cuda_matmul: T=%d needs a cuBLAS handle and gemm_rows", T);
	if (c->cc >= 80)
		return gemm_path<__nv_bfloat16>(c, y, x, W, wfmt, N, K, bias, bias_fmt, T, wfmt == WFMT_BF16);
	return gemm_path<__half>(c, y, x, W, wfmt, N, K, bias, bias_fmt, T, wfmt == WFMT_F16);
}
