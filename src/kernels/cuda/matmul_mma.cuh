/*
 * matmul_mma.cuh: the per-thread parts of the tensor-core kernel of matmul_mma.cu (a tile's loads into shared
 * memory, a lane's mma fragments, where an accumulator goes), apart from the kernel so that
 * tests/test_cuda_mma_host.cpp runs this very code on the host (tests/cuda_emul.h) around an mma emulated
 * from the PTX ISA's fragment layout. Uses the decoders of matmul.cuh and bf16_bits_rn.
 *
 * Tiles: a block owns BM = 16 WARPS rows of W from n0 and BN tokens from t0; shared memory holds, per tile of
 * BK values of k from k0, As[BM][LD] (the rows, decoded) and Bs[BN][LD] (the tokens' x), bf16 bits, k
 * contiguous. Rows are LD = BK + 8 values apart (BK 64 or 128: LD / 2 words = 4 mod 32), so the 32 lanes'
 * 4-byte fragment loads (word LD / 2 g + q + const) fall in 32 distinct banks.
 *
 * Fragments of mma.m16n8k16 .bf16 (g = lane / 4, q = lane % 4; the lower-numbered element in the low half):
 * A regs {row g, k 2q..2q+1}, {row g+8, k 2q..}, {row g, k 2q+8..}, {row g+8, k 2q+8..};
 * B regs {k 2q..2q+1, col g}, {k 2q+8.., col g}; C {row g, cols 2q, 2q+1}, {row g+8, cols 2q, 2q+1}.
 * Rows are W's (A row-major: As), cols tokens (B "col": Bs holds a token's k contiguous).
 */
#ifndef FERRY_CUDA_MATMUL_MMA_CUH
#define FERRY_CUDA_MATMUL_MMA_CUH

#include "kernels/cuda/matmul.cuh"

template <int WARPS, int BN, int BK> struct mma_shape {
	static constexpr int BM = 16 * WARPS, NT = 32 * WARPS, NB = BN / 8, KV = BK / 4, LD = BK + 8;
	static_assert(BM * KV % NT == 0 && BN * KV % NT == 0 && BN % 8 == 0, "whole tiles per thread");
	static_assert(BK % 32 == 0 && LD / 2 % 32 == 4, "tiles of whole 32-value groups, conflict-free rows");
};

/* 4 values as bf16 at p (8-byte aligned), and the 2 bf16 at p (4-byte aligned) as one word */
__device__ __forceinline__ void mma_put4(uint16_t *p, float a, float b, float c, float d)
{
	uint32_t lo = bf16_bits_rn(a) | (uint32_t)bf16_bits_rn(b) << 16, hi = bf16_bits_rn(c) | (uint32_t)bf16_bits_rn(d) << 16;
#ifdef __CUDACC__
	*(uint2 *)p = make_uint2(lo, hi);
#else
	memcpy(p, &lo, 4);
	memcpy(p + 2, &hi, 4);
#endif
}

/* Thread tid's share of the tile at k0: W rows n0.. decoded by F and x tokens t0.. into As and Bs. Rows past
 * N decode row N-1 (never written out), values past K (only the second half of a tile, K being a multiple
 * of 32) and tokens past T are 0. */
template <class F, int WARPS, int BN, int BK>
__device__ __forceinline__ void mma_load_tile(uint16_t *As, uint16_t *Bs, const uint8_t *W, const float *x, int N,
					      int K, int64_t row_bytes, int T, int n0, int t0, int k0, int tid)
{
	typedef mma_shape<WARPS, BN, BK> S;
#pragma unroll
	for (int it = 0; it < S::BM * S::KV / S::NT; it++) {
		int i = tid + it * S::NT, r = i / S::KV, kk = i % S::KV * 4, n = n0 + r < N ? n0 + r : N - 1;
		float w[4] = {0.0f, 0.0f, 0.0f, 0.0f};
		if (k0 + kk < K)
			F::template deq<4>(W + (int64_t)n * row_bytes, k0 + kk, w);
		mma_put4(As + r * S::LD + kk, w[0], w[1], w[2], w[3]);
	}
#pragma unroll
	for (int it = 0; it < BN * S::KV / S::NT; it++) {
		int i = tid + it * S::NT, t = i / S::KV, kk = i % S::KV * 4;
		float4 v = {0.0f, 0.0f, 0.0f, 0.0f};
		if (t0 + t < T && k0 + kk < K)
			v = __ldg((const float4 *)(x + (int64_t)(t0 + t) * K + k0 + kk));
		mma_put4(Bs + t * S::LD + kk, v.x, v.y, v.z, v.w);
	}
}

/* The lane's A fragment of the k step at ks (a multiple of 16) for the warp's rows 16 warp .. + 15 */
template <int LD>
__device__ __forceinline__ void mma_frag_a(const uint16_t *As, int warp, int lane, int ks, uint32_t a[4])
{
	const uint16_t *p = As + (warp * 16 + lane / 4) * LD + 2 * (lane % 4) + ks;
	a[0] = ld_word(p);
	a[1] = ld_word(p + 8 * LD);
	a[2] = ld_word(p + 8);
	a[3] = ld_word(p + 8 * LD + 8);
}

/* The lane's B fragment of the k step at ks for tokens 8 j .. 8 j + 7 */
template <int LD>
__device__ __forceinline__ void mma_frag_b(const uint16_t *Bs, int j, int lane, int ks, uint32_t b[2])
{
	const uint16_t *p = Bs + (8 * j + lane / 4) * LD + 2 * (lane % 4) + ks;
	b[0] = ld_word(p);
	b[1] = ld_word(p + 8);
}

/* Accumulator e (0..3) of the lane's n-tile j: y[t0 + its token][n0 + its row], plus the bias; past N or T
 * not written. */
template <int BN>
__device__ __forceinline__ void mma_store(float *y, float (*acc)[4], int warp, int lane, int n0, int t0, int N,
					  int T, const void *bias, int bias_fmt)
{
	const int nr = n0 + warp * 16 + lane / 4;
	const float bv0 = bias && nr < N ? vec_elem_f32(bias, bias_fmt, nr) : 0.0f;
	const float bv1 = bias && nr + 8 < N ? vec_elem_f32(bias, bias_fmt, nr + 8) : 0.0f;
#pragma unroll
	for (int j = 0; j < BN / 8; j++)
#pragma unroll
		for (int e = 0; e < 4; e++) {
			int n = nr + (e >= 2 ? 8 : 0), t = t0 + 8 * j + 2 * (lane % 4) + (e & 1);
			if (n < N && t < T)
				y[(int64_t)t * N + n] = acc[j][e] + (e >= 2 ? bv1 : bv0);
		}
}

#endif
