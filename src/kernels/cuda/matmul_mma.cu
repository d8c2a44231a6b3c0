/*
 * matmul_mma.cu: y[T,N] = x[T,K] . W[N,K]^T (+ bias) on tensor cores with the weights dequantized inside the
 * kernel (cuda_matmul_mma), for every quantized format (kinds QUANT and QMIN of src/layout/wfmt_list.h: blocks
 * of 32 or 256 values, so K is a multiple of 32). W is read once per BN tokens in its stored form: no
 * dequantized copy of the matrix in memory, no workspace.
 *
 * A block of WARPS warps owns BM = 16 WARPS rows of W and BN tokens; per tile of MMA_BK values of k it decodes
 * its BM x MMA_BK weights with the format's decoder (matmul.cuh: the values of src/kernels/cpu/dequant.c, bit
 * for bit) and its BN x MMA_BK activations, both rounded to bf16 as the GEMM path rounds them, into shared
 * memory; warp w then multiplies rows 16w..16w+15 against all BN tokens with mma.sync m16n8k16 (bf16 in, f32
 * accumulate), k in increasing order: the result does not depend on timing. Values past K (the second half of
 * the last tile when K is an odd multiple of 32) and tokens past T are zeros; rows past N decode row N-1 and
 * are not written.
 *
 * Fragments (PTX ISA, mma.m16n8k16 .bf16; g = lane / 4, q = lane % 4): A regs {row g, k 2q..2q+1},
 * {row g+8, k 2q..}, {row g, k 2q+8..}, {row g+8, k 2q+8..}; B regs {k 2q..2q+1, col g}, {k 2q+8.., col g};
 * C {row g, cols 2q, 2q+1}, {row g+8, cols 2q, 2q+1}. Shared rows are MMA_LD bf16 (144 bytes) apart: the 32
 * lanes' 4-byte fragment loads land in 32 distinct banks (36 g + q mod 32).
 *
 * sm_80 and later only (m16n8k16 with bf16); the kernels compiled for older targets trap, and cuda_mma_runs
 * says whether this binary holds the sm_80+ code for the device in use.
 */
#include "kernels/cuda/matmul.cuh"

#define MMA_BK 64
#define MMA_LD (MMA_BK + 8)

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi)
{
	__nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
	return *(uint32_t *)&v;
}

__device__ __forceinline__ void store_bf16x4(__nv_bfloat16 *p, float a, float b, float c, float d)
{
	*(uint2 *)p = make_uint2(pack_bf16x2(a, b), pack_bf16x2(c, d));
}

__device__ __forceinline__ uint32_t lds32(const __nv_bfloat16 *p)
{
	return *(const uint32_t *)p;
}

template <class F, int WARPS, int BN>
static __global__ void __launch_bounds__(WARPS * 32) k_matmul_mma(float *__restrict__ y, const float *__restrict__ x,
								  const uint8_t *__restrict__ W, int N, int K,
								  int64_t row_bytes, const void *bias, int bias_fmt,
								  int T)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	constexpr int BM = 16 * WARPS, NT = WARPS * 32, NB = BN / 8, KV = MMA_BK / 4;
	static_assert(BM * KV % NT == 0 && BN * KV % NT == 0 && BN % 8 == 0, "whole tiles per thread");
	__shared__ __align__(16) __nv_bfloat16 As[BM * MMA_LD];
	__shared__ __align__(16) __nv_bfloat16 Bs[BN * MMA_LD];
	const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, q = lane % 4;
	const int n0 = blockIdx.x * BM, t0 = blockIdx.y * BN;
	float acc[NB][4];
#pragma unroll
	for (int j = 0; j < NB; j++)
		acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

	for (int k0 = 0; k0 < K; k0 += MMA_BK) {
#pragma unroll
		for (int it = 0; it < BM * KV / NT; it++) {
			int i = tid + it * NT, r = i / KV, kk = i % KV * 4, n = n0 + r < N ? n0 + r : N - 1;
			float w[4] = {0.0f, 0.0f, 0.0f, 0.0f};
			if (k0 + kk < K)
				F::template deq<4>(W + (int64_t)n * row_bytes, k0 + kk, w);
			store_bf16x4(As + r * MMA_LD + kk, w[0], w[1], w[2], w[3]);
		}
#pragma unroll
		for (int it = 0; it < BN * KV / NT; it++) {
			int i = tid + it * NT, t = i / KV, kk = i % KV * 4;
			float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
			if (t0 + t < T && k0 + kk < K)
				v = __ldg((const float4 *)(x + (int64_t)(t0 + t) * K + k0 + kk));
			store_bf16x4(Bs + t * MMA_LD + kk, v.x, v.y, v.z, v.w);
		}
		__syncthreads();
		const __nv_bfloat16 *a = As + (warp * 16 + g) * MMA_LD + 2 * q;
#pragma unroll
		for (int ks = 0; ks < MMA_BK; ks += 16) {
			uint32_t a0 = lds32(a + ks), a1 = lds32(a + 8 * MMA_LD + ks);
			uint32_t a2 = lds32(a + ks + 8), a3 = lds32(a + 8 * MMA_LD + ks + 8);
#pragma unroll
			for (int j = 0; j < NB; j++) {
				const __nv_bfloat16 *b = Bs + (8 * j + g) * MMA_LD + 2 * q + ks;
				uint32_t b0 = lds32(b), b1 = lds32(b + 8);
				asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
					     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
					     : "+f"(acc[j][0]), "+f"(acc[j][1]), "+f"(acc[j][2]), "+f"(acc[j][3])
					     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
			}
		}
		__syncthreads();
	}

	const int nr = n0 + warp * 16 + g;
	const float bv0 = bias && nr < N ? vec_elem_f32(bias, bias_fmt, nr) : 0.0f;
	const float bv1 = bias && nr + 8 < N ? vec_elem_f32(bias, bias_fmt, nr + 8) : 0.0f;
#pragma unroll
	for (int j = 0; j < NB; j++)
#pragma unroll
		for (int e = 0; e < 4; e++) {
			int n = nr + (e >= 2 ? 8 : 0), t = t0 + 8 * j + 2 * q + (e & 1);
			if (n < N && t < T)
				y[(int64_t)t * N + n] = acc[j][e] + (e >= 2 ? bv1 : bv0);
		}
#else
	__trap();
#endif
}

/* Tokens per block by T: the smallest of 8..128 that holds them (a decode batch wastes at most half its
 * columns), 128 above. 2 warps (32 rows) per block up to 16 tokens, where reading W dominates and more
 * blocks keep more multiprocessors loading; 8 warps (128 rows) above, where every block reads its tokens'
 * x tile (f32, from L2): at T = 64 on a 28672 x 8192 Q4_K matrix the x tiles are N / BM * T * K * 4 =
 * 470 MB against the weights' 132 MB, twice that with 64 rows. */
template <class F>
static int mma_launch(struct cuda_ctx *c, float *y, const float *x, const void *W, int64_t N, int64_t K,
		      const void *bias, int bias_fmt, int T)
{
	int64_t row_bytes = K / F::BLOCK * F::BYTES;
	cudaStream_t s = cuda_stream_of(c);
	const uint8_t *w = (const uint8_t *)W;
#define MMA_CASE(WARPS, BN)                                                                                     \
	do {                                                                                                    \
		dim3 grid((unsigned)((N + 16 * WARPS - 1) / (16 * WARPS)), (unsigned)((T + BN - 1) / BN));      \
		k_matmul_mma<F, WARPS, BN><<<grid, WARPS * 32, 0, s>>>(y, x, w, (int)N, (int)K, row_bytes, bias, \
								       bias_fmt, T);                    \
	} while (0)
	if (T <= 8)
		MMA_CASE(2, 8);
	else if (T <= 16)
		MMA_CASE(2, 16);
	else if (T <= 32)
		MMA_CASE(8, 32);
	else if (T <= 64)
		MMA_CASE(8, 64);
	else
		MMA_CASE(8, 128);
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
		return cudaFuncGetAttributes(&a, k_matmul_mma<deq_q8_0, 2, 8>) == cudaSuccess && a.ptxVersion >= 80;
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
