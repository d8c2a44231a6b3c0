/*
 * matmul_q8mma.cu: y[T,N] = x[T,K] . W[N,K]^T (+ bias) on int8 tensor cores (cuda_matmul_q8mma), llama.cpp's
 * "MMQ" idea written for ferry's contract: x quantized to 8 bits per block of the weight format by the 8-bit
 * matvec's quantizer (cuda_xq_codes: the CPU's codes bit for bit, kept between calls over the same x), the
 * weights' integer codes unpacked into shared memory, mma.sync m16n8k32 (m16n8k16 for Q6_K's 16-value
 * sub-scales) s8 x s8 -> s32 per group, the groups' sums scaled in integers, each block's sum in f32: the
 * portable CPU qdot's expression in its order (matmul_q8mma.cuh), so each output equals the CPU's portable
 * 8-bit matmul bit for bit. Formats: Q4_K, Q5_K, Q6_K, Q8_0, Q4_0, Q5_0 (q8f_for in the header).
 *
 * Grid: x over token tiles (fastest, so the blocks that share a weight tile run together and read it from L2),
 * y over tiles of Q8_BM = 64 rows. A block's loop over tiles of 256 k: store the registers of this tile into
 * shared memory (unpacking the weights), sync, issue the global loads of the next tile into registers, then the
 * mma over this tile while they are in flight, sync. W's rows are 2-byte aligned for most formats, too little
 * for cp.async (4 bytes at least), hence the register staging.
 *
 * sm_80 and later (int8 mma.sync m16n8k32); the kernels compiled for older targets trap, and cuda_q8mma_runs
 * says whether this binary holds the sm_80+ code for the device in use.
 */
#include <type_traits>

#include "kernels/cuda/matmul_q8mma.cuh"

template <int KK> __device__ __forceinline__ void q8_mma(int d[4], const uint32_t a[4], const uint32_t b[2])
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	if (KK == 32)
		asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
			     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
			     : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
			     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
	else
		asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 "
			     "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
			     : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
			     : "r"(a[0]), "r"(a[1]), "r"(b[0]));
#else
	(void)d, (void)a, (void)b;
#endif
}

template <class F, int WN, int NT>
static __global__ void __launch_bounds__(128 * WN)
	k_matmul_q8mma(float *__restrict__ y, const int8_t *__restrict__ xq, const float *__restrict__ xd,
		       const uint8_t *__restrict__ W, int N, int K, int64_t row_bytes, const void *bias, int bias_fmt,
		       int T)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	typedef q8_shape<F, WN, NT> S;
	constexpr int GPB = F::BLOCK / F::G; /* groups per weight block */
	__shared__ q8_smem<F, S::BN> sm;
	const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, wr = warp % 4, wc = warp / 4;
	const int t0 = blockIdx.x * S::BN, n0 = blockIdx.y * Q8_BM, ntiles = (K + Q8_BK - 1) / Q8_BK;
	float acc[NT][4];
	int I[NT][4];
#pragma unroll
	for (int j = 0; j < NT; j++)
#pragma unroll
		for (int e = 0; e < 4; e++)
			acc[j][e] = 0.0f, I[j][e] = 0;
	q8_stage<F, WN, NT> st;
	q8_load<F, WN, NT>(st, W, xq, xd, N, K, row_bytes, T, n0, t0, 0, tid);
	for (int kt = 0; kt < ntiles; kt++) {
		q8_store<F, WN, NT>(st, sm, tid);
		__syncthreads();
		if (F::MIN)
			q8_xsums<F, WN, NT>(sm, tid);
		if (kt + 1 < ntiles)
			q8_load<F, WN, NT>(st, W, xq, xd, N, K, row_bytes, T, n0, t0, kt + 1, tid);
		if (F::MIN)
			__syncthreads();
		const int k0 = kt * Q8_BK;
#pragma unroll 1
		for (int b = 0; b < S::NBLK && k0 + b * F::BLOCK < K; b++) {
#pragma unroll
			for (int gi = 0; gi < GPB; gi++) {
				const int ko = b * F::BLOCK + gi * F::G;
				uint32_t a[4];
				q8_frag_a<F::G>(sm.w, wr, lane, ko, a);
				int Sg[NT][4];
#pragma unroll
				for (int j = 0; j < NT; j++) {
					uint32_t bf[2];
					q8_frag_b<F::G>(sm.x, 8 * NT * wc + 8 * j, lane, ko, bf);
					Sg[j][0] = Sg[j][1] = Sg[j][2] = Sg[j][3] = 0;
					q8_mma<F::G>(Sg[j], a, bf);
				}
				q8_group<F, S::BN, NT>(sm, wr, lane, ko / F::G, Sg, I);
			}
			q8_block_end<F, S::BN, NT>(sm, wr, wc, lane, b, I, acc);
		}
		__syncthreads();
	}
	q8_out<NT>(y, acc, wr, wc, lane, n0, t0, N, T, bias, bias_fmt);
#else
	__trap();
#endif
}

/* Tokens per block by T: 16 (4 warps, 2 n-tiles each) up to 16 tokens, 32 (8 warps x 2) up to 32, else 64
 * (8 warps x 4). A weight tile is read once per BN tokens from L2; past 64 tokens the blocks of one row tile
 * run side by side (grid x), so W comes from memory about once. */
template <class F>
static int q8mma_launch(struct cuda_ctx *c, float *y, const float *x, const void *W, int64_t N, int64_t K,
			const void *bias, int bias_fmt, int T)
{
	int8_t *xq;
	float *xd;
	int rc = cuda_xq_codes(c, x, T, K, F::BLOCK, &xq, &xd);
	if (rc)
		return rc;
	const int64_t row_bytes = K / F::BLOCK * F::BYTES;
	cudaStream_t s = cuda_stream_of(c);
	const uint8_t *w = (const uint8_t *)W;
#define Q8_CASE(WN, NT)                                                                                       \
	do {                                                                                                  \
		dim3 grid((unsigned)((T + 8 * NT * WN - 1) / (8 * NT * WN)), (unsigned)((N + Q8_BM - 1) / Q8_BM)); \
		k_matmul_q8mma<F, WN, NT><<<grid, 128 * WN, 0, s>>>(y, xq, xd, w, (int)N, (int)K, row_bytes, bias, \
								   bias_fmt, T);                      \
	} while (0)
	if (T <= 16)
		Q8_CASE(1, 2);
	else if (T <= 32)
		Q8_CASE(2, 2);
	else
		Q8_CASE(2, 4);
#undef Q8_CASE
	CUDA_LAUNCH_CHECK(c, "k_matmul_q8mma");
	cuda_xq_keep(c, y, x, T, N, K, F::BLOCK);
	return 0;
}

typedef int (*q8mma_fn)(struct cuda_ctx *c, float *y, const float *x, const void *W, int64_t N, int64_t K,
			const void *bias, int bias_fmt, int T);
template <class F> static constexpr q8mma_fn q8mma_entry()
{
	if constexpr (std::is_void<F>::value)
		return nullptr;
	else
		return q8mma_launch<F>;
}
#define Q8_ROW(id, code, block, bytes, ggml, kind, k) q8mma_entry<q8f_for<WFMT_##id>::type>(),
static const q8mma_fn q8mma_by_fmt[WFMT_COUNT] = {WFMT_LIST(Q8_ROW)};
#undef Q8_ROW

/* Whether this binary's kernels for the current device are the sm_80+ code (a build for sm_75 only, run on a
 * newer GPU through its PTX, has the trapping body): asked once. */
static bool q8mma_binary_ok(void)
{
	static const bool ok = [] {
		cudaFuncAttributes a;
		return cudaFuncGetAttributes(&a, k_matmul_q8mma<q8f_q8_0, 1, 2>) == cudaSuccess && a.ptxVersion >= 80;
	}();
	return ok;
}

bool cuda_q8mma_runs(const struct cuda_ctx *c, int wfmt)
{
	return c->cc >= 80 && wfmt >= 0 && wfmt < WFMT_COUNT && q8mma_by_fmt[wfmt] && q8mma_binary_ok();
}

int cuda_matmul_q8mma(struct cuda_ctx *c, float *y, const float *x, const void *W, int wfmt, int64_t N, int64_t K,
		      const void *bias, int bias_fmt, int T)
{
	CUDA_ARG_CHECK(c, cuda_q8mma_runs(c, wfmt), "cuda_matmul_q8mma: format %d on cc %d has no 8-bit tensor-core kernel",
		       wfmt, c->cc);
	CUDA_ARG_CHECK(c, (N + Q8_BM - 1) / Q8_BM <= 65535, "cuda_matmul_q8mma: N=%lld", (long long)N);
	return q8mma_by_fmt[wfmt](c, y, x, W, N, K, bias, bias_fmt, T);
}
