/*
 * matvec.cu: y[T,N] = x[T,K] . W[N,K]^T (+ bias) for T <= CUDA_MATVEC_T_MAX, the weights dequantized in
 * registers (matmul.cuh) and dotted in f32 with every token's x, so W is read from memory once per call.
 *
 * One warp owns R consecutive rows; lane l takes the XV values at k = XV*l, XV*(l+32), ... of each of them,
 * so a warp's loads of x cover 32*XV consecutive floats and its loads of a row a contiguous run of blocks;
 * each x value loaded serves R rows, each decoded weight serves T tokens (TB accumulators per row, TB the
 * token bucket 1, 2, 4, 8, 16 at or above T). The per-lane partial sums are combined by a fixed butterfly of
 * warp shuffles: the result does not depend on timing. Rows past N are computed on row N-1 and not written,
 * so a warp never diverges on them.
 */
#include "kernels/cuda/matmul.cuh"

#define MV_WARPS 4 /* warps per block */
static constexpr int MV_UNROLL = 2; /* k iterations unrolled (a pragma takes no macro) */

/* rows per warp: x reuse against registers (R * TB accumulators); launch bounds cap registers at 128 (4 blocks
 * of 4 warps per multiprocessor) to keep enough loads in flight. Unrolling the k loop by MV_UNROLL puts the
 * loads of that many k in flight per lane (4 spilled under the cap, with branch-free decoders). */
template <int TB> struct mv_rows {
	static constexpr int R = TB <= 4 ? 4 : 2;
};
template <class F, int XV, int TB>
static __global__ void __launch_bounds__(MV_WARPS * 32, 4) k_matvec(float *__restrict__ y, const float *__restrict__ x,
								 const uint8_t *__restrict__ W, int64_t N, int64_t K,
								 int64_t row_bytes, const void *bias, int bias_fmt, int T)
{
	constexpr int R = mv_rows<TB>::R;
	const int lane = threadIdx.x & 31;
	const int64_t n0 = ((int64_t)blockIdx.x * MV_WARPS + threadIdx.x / 32) * R;
	if (n0 >= N)
		return;
	const uint8_t *row[R];
#pragma unroll
	for (int r = 0; r < R; r++)
		row[r] = W + (n0 + r < N ? n0 + r : N - 1) * row_bytes;
	float acc[R][TB];
#pragma unroll
	for (int r = 0; r < R; r++)
#pragma unroll
		for (int t = 0; t < TB; t++)
			acc[r][t] = 0.0f;

#pragma unroll MV_UNROLL
	for (int64_t k = (int64_t)lane * XV; k < K; k += 32 * XV) {
		float w[R][XV];
#pragma unroll
		for (int r = 0; r < R; r++)
			F::template deq<XV>(row[r], k, w[r]);
#pragma unroll
		for (int t = 0; t < TB; t++) {
			/* tokens T..TB-1 of the bucket repeat token T-1 (never written): no branch in the loop */
			const float *xt = x + (int64_t)(t < T ? t : T - 1) * K + k;
			float xv[XV];
			if (XV == 4) {
				float4 v = __ldg((const float4 *)xt);
				xv[0] = v.x, xv[1] = v.y, xv[2] = v.z, xv[3] = v.w;
			} else {
				xv[0] = __ldg(xt);
			}
#pragma unroll
			for (int r = 0; r < R; r++)
#pragma unroll
				for (int i = 0; i < XV; i++)
					acc[r][t] = fmaf(w[r][i], xv[i], acc[r][t]);
		}
	}

#pragma unroll
	for (int r = 0; r < R; r++) {
#pragma unroll
		for (int t = 0; t < TB; t++) {
			float s = warp_sum(acc[r][t]);
			if (lane == (r * TB + t) % 32 && t < T && n0 + r < N)
				y[(int64_t)t * N + n0 + r] = s + (bias ? vec_elem_f32(bias, bias_fmt, n0 + r) : 0.0f);
		}
	}
}

template <class F, int XV>
static int matvec_launch(struct cuda_ctx *c, float *y, const float *x, const void *W, int64_t N, int64_t K,
			 const void *bias, int bias_fmt, int T)
{
	int64_t row_bytes = K / F::BLOCK * F::BYTES;
	cudaStream_t s = cuda_stream_of(c);
	const uint8_t *w = (const uint8_t *)W;
	tb_dispatch<16>(T, [&](auto tb) {
		constexpr int TB = decltype(tb)::value;
		const int64_t per_block = (int64_t)MV_WARPS * mv_rows<TB>::R;
		k_matvec<F, XV, TB><<<(unsigned)((N + per_block - 1) / per_block), MV_WARPS * 32, 0, s>>>(
			y, x, w, N, K, row_bytes, bias, bias_fmt, T);
	});
	CUDA_LAUNCH_CHECK(c, "k_matvec");
	return 0;
}

/* One launcher per format with a decoder (src/layout/wfmt_list.h): float weights take vector loads when rows and
 * x allow them, one value per lane otherwise; quantized weights always 4 values. */
template <class F>
static int matvec_fmt(struct cuda_ctx *c, float *y, const float *x, const void *W, int64_t N, int64_t K,
		      const void *bias, int bias_fmt, int T)
{
	if constexpr (F::BLOCK == 1) {
		bool vec = K % 4 == 0 && ((uintptr_t)x & 15) == 0 && ((uintptr_t)W & (4 * F::BYTES - 1)) == 0;
		if (!vec)
			return matvec_launch<F, 1>(c, y, x, W, N, K, bias, bias_fmt, T);
	}
	return matvec_launch<F, 4>(c, y, x, W, N, K, bias, bias_fmt, T);
}

typedef int (*matvec_fn)(struct cuda_ctx *c, float *y, const float *x, const void *W, int64_t N, int64_t K,
			 const void *bias, int bias_fmt, int T);
#define MATVEC_ROW(id, code, block, bytes, ggml, kind, k) WFMT_RUNS_##kind(matvec_fmt<deq_##k>, nullptr),
static const matvec_fn matvec_by_fmt[WFMT_COUNT] = {WFMT_LIST(MATVEC_ROW)};
#undef MATVEC_ROW

int cuda_matvec(struct cuda_ctx *c, float *y, const float *x, const void *W, int wfmt, int64_t N, int64_t K,
		const void *bias, int bias_fmt, int T)
{
	if (wfmt >= 0 && wfmt < WFMT_COUNT && matvec_by_fmt[wfmt])
		return matvec_by_fmt[wfmt](c, y, x, W, N, K, bias, bias_fmt, T);
	snprintf(c->err, sizeof(c->err), "cuda_matvec: weight format %d not supported", wfmt);
	return -EINVAL;
}
