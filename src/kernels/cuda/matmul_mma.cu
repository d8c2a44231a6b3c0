/*
 * matmul_mma.cu: y[T,N] = x[T,K] . W[N,K]^T (+ bias) on tensor cores with the weights dequantized inside the
 * kernel (cuda_matmul_mma), for every quantized format (kinds QUANT and QMIN of src/layout/wfmt_list.h: blocks
 * of 32 or 256 values, so K is a multiple of 32). W is read once per BN tokens in its stored form: no
 * dequantized copy of the matrix in memory, no workspace.
 *
 * A block of WARPS warps owns BM = 16 WARPS rows of W and BN tokens; per tile of BK values of k it decodes
 * its BM x BK weights with the format's decoder (matmul.cuh: the values of src/kernels/cpu/dequant.c, bit
 * for bit) and its BN x BK activations, both rounded to bf16 as the GEMM path rounds them, into shared
 * memory; warp w then multiplies rows 16w..16w+15 against all BN tokens with mma.sync m16n8k16 (bf16 in, f32
 * accumulate), k in increasing order: the result does not depend on timing. The per-thread parts (tile
 * loads, fragments, stores; shapes and the fragment layout) are in matmul_mma.cuh, which a host test runs.
 *
 * sm_80 and later only (m16n8k16 with bf16); the kernels compiled for older targets trap, and cuda_mma_runs
 * says whether this binary holds the sm_80+ code for the device in use.
 */
#include "kernels/cuda/matmul_mma.cuh"

template <class F, int WARPS, int BN, int BK>
static __global__ void __launch_bounds__(WARPS * 32) k_matmul_mma(float *__restrict__ y, const float *__restrict__ x,
								  const uint8_t *__restrict__ W, int N, int K,
								  int64_t row_bytes, const void *bias, int bias_fmt,
								  int T)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	typedef mma_shape<WARPS, BN, BK> S;
	__shared__ __align__(16) uint16_t As[S::BM * S::LD];
	__shared__ __align__(16) uint16_t Bs[BN * S::LD];
	const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
	const int n0 = blockIdx.x * S::BM, t0 = blockIdx.y * BN;
	float acc[S::NB][4];
#pragma unroll
	for (int j = 0; j < S::NB; j++)
		acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

	for (int k0 = 0; k0 < K; k0 += BK) {
		mma_load_tile<F, WARPS, BN, BK>(As, Bs, W, x, N, K, row_bytes, T, n0, t0, k0, tid);
		__syncthreads();
#pragma unroll
		for (int ks = 0; ks < BK; ks += 16) {
			uint32_t a[4];
			mma_frag_a<S::LD>(As, warp, lane, ks, a);
#pragma unroll
			for (int j = 0; j < S::NB; j++) {
				uint32_t b[2];
				mma_frag_b<S::LD>(Bs, j, lane, ks, b);
				asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
					     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
					     : "+f"(acc[j][0]), "+f"(acc[j][1]), "+f"(acc[j][2]), "+f"(acc[j][3])
					     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
			}
		}
		__syncthreads();
	}
	mma_store<BN>(y, acc, warp, lane, n0, t0, N, T, bias, bias_fmt);
#else
	__trap();
#endif
}

/* Tokens per block by T: the smallest of 8..128 that holds them (a decode batch wastes at most half its
 * columns), 128 above. Up to 16 tokens, where reading W dominates: 2 warps (32 rows) per block, so more
 * blocks keep more multiprocessors loading, and tiles of 128 k, so each thread has 16 decodes' loads to put
 * in flight per tile (a 4096-row matrix makes only 128 blocks; tiles of 256 took 255 registers and
 * spilled). Above: 8 warps (128 rows), tiles of 64 k, where every block reads its tokens' x tile (f32,
 * from L2): at T = 64 on a 28672 x 8192 Q4_K matrix the x tiles are N / BM * T * K * 4 =
 * 470 MB against the weights' 132 MB, twice that with 64 rows. */
template <class F>
static int mma_launch(struct cuda_ctx *c, float *y, const float *x, const void *W, int64_t N, int64_t K,
		      const void *bias, int bias_fmt, int T)
{
	int64_t row_bytes = K / F::BLOCK * F::BYTES;
	cudaStream_t s = cuda_stream_of(c);
	const uint8_t *w = (const uint8_t *)W;
#define MMA_CASE(WARPS, BN, BK)                                                                                 \
	do {                                                                                                    \
		dim3 grid((unsigned)((N + 16 * WARPS - 1) / (16 * WARPS)), (unsigned)((T + BN - 1) / BN));      \
		k_matmul_mma<F, WARPS, BN, BK><<<grid, WARPS * 32, 0, s>>>(y, x, w, (int)N, (int)K, row_bytes, bias, \
								       bias_fmt, T);                    \
	} while (0)
	if (T <= 8)
		MMA_CASE(2, 8, 128);
	else if (T <= 16)
		MMA_CASE(2, 16, 128);
	else if (T <= 32)
		MMA_CASE(8, 32, 64);
	else if (T <= 64)
		MMA_CASE(8, 64, 64);
	else
		MMA_CASE(8, 128, 64);
#undef MMA_CASE
	CUDA_LAUNCH_CHECK(c, "k_matmul_mma");
	return 0;
}

typedef int (*mma_fn)(struct cuda_ctx *c, float *y, const float *x, const void *W, int64_t N, int64_t K,
		      const void *bias, int bias_fmt, int T);
#define MMA_ROW(id, code, block, bytes, ggml, kind, k) WFMT_QDOT_##kind(mma_launch<deq_##k>, nullptr),
static const mma_fn mma_by_fmt[WFMT_COUNT] = {WFMT_LIST(MMA_ROW)};
#undef MMA_ROW

/* Whether the kernels of this binary for the current device are the sm_80+ code (a build for sm_75 only,
 * run on a newer GPU through its PTX, has the trapping body): asked once. */
static bool mma_binary_ok(void)
{
	static const bool ok = [] {
		cudaFuncAttributes a;
		return cudaFuncGetAttributes(&a, k_matmul_mma<deq_q8_0, 2, 8, 128>) == cudaSuccess && a.ptxVersion >= 80;
	}();
	return ok;
}

bool cuda_mma_runs(const struct cuda_ctx *c, int wfmt)
{
	return c->cc >= 80 && wfmt >= 0 && wfmt < WFMT_COUNT && mma_by_fmt[wfmt] && mma_binary_ok();
}

int cuda_matmul_mma(struct cuda_ctx *c, float *y, const float *x, const void *W, int wfmt, int64_t N, int64_t K,
		    const void *bias, int bias_fmt, int T)
{
	CUDA_ARG_CHECK(c, cuda_mma_runs(c, wfmt), "cuda_matmul_mma: format %d on cc %d has no tensor-core kernel",
		       wfmt, c->cc);
	CUDA_ARG_CHECK(c, T <= 65535 * 128, "cuda_matmul_mma: T=%d", T);
	return mma_by_fmt[wfmt](c, y, x, W, N, K, bias, bias_fmt, T);
}
