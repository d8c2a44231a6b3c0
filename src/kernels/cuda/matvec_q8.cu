/*
 * matvec_q8.cu: y[T,N] = x[T,K] . W[N,K]^T (+ bias) for T <= CUDA_MVQ_T_MAX on 8-bit activations: the decode
 * matmul of the formats with an integer dot in matvec_q8.cuh (MVQ_DOT_LIST: every QUANT and QMIN format; the
 * float ones keep matvec.cu's f32 kernels). Two launches per call:
 *   k_quantize_x: x to codes and scales in c->ws (matvec_q8.cuh: bit for bit the CPU's cpu_xq_quantize), one
 *     warp per block of the weight format; skipped when the call before was an 8-bit matvec over the same x
 *     (pointer, T, K, block size) and nothing was launched or uploaded since (c->xq_*: q, k and v share
 *     one, gate and up another; the same codes, so the same result);
 *   k_matvec_q8: a thread block of MVQ_THREADS owns MVQ_ROWS rows; its threads stride over the blocks of the
 *     rows, LPB consecutive threads on one block (16-byte or 2-byte loads of adjacent bytes: the warp's loads
 *     cover a contiguous run of blocks), each block's codes and scales unpacked once into registers and dotted
 *     with every token's codes by __dp4a (exact int32), scaled in f32 per lane. The per-thread sums are added
 *     by a fixed butterfly in each warp, then the warps' sums in warp order: deterministic.
 * The result is the CPU's cpu_matmul on the same codes up to f32 rounding order (src/kernels/cpu/qdot.h).
 * Rows past N are computed on row N-1 and not written. Tokens T..TB-1 of a bucket repeat token T-1.
 */
#include <type_traits>

#include "kernels/cuda/matvec_q8.cuh"

#define MVQ_THREADS 128 /* threads per block: 4 warps over the same rows */
#define MVQ_ROWS 2      /* rows per block: each code of x loaded serves both */
#define MVQ_ALIGN 256

static size_t mvq_align(size_t n)
{
	return (n + MVQ_ALIGN - 1) / MVQ_ALIGN * MVQ_ALIGN;
}

/* codes [T*K] then scales [T*K/32 at most] */
size_t cuda_mvq_ws_bytes(int T, int64_t K)
{
	return mvq_align((size_t)T * (size_t)K) + mvq_align((size_t)T * (size_t)(K / QK) * sizeof(float));
}

/* nb blocks of B values of x (contiguous: T rows of K, K a multiple of B): warp w quantizes block w, each lane
 * B/32 consecutive values */
template <int B>
static __global__ void k_quantize_x(int8_t *__restrict__ q, float *__restrict__ d, const float *__restrict__ x,
				    int64_t nb)
{
	static_assert(B == 32 || B == 128 || B == 256, "blocks of 32, 128 or 256");
	constexpr int V = B / 32;
	const int64_t b = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
	const int lane = threadIdx.x & 31;
	if (b >= nb) /* whole warps: nb is counted in warps */
		return;
	const float *xb = x + b * B + lane * V;
	float v[V];
	if (V == 8) {
		float4 a = __ldg((const float4 *)xb), c = __ldg((const float4 *)xb + 1);
		v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = c.x, v[5] = c.y, v[6] = c.z, v[7] = c.w;
	} else if (V == 4) {
		float4 a = __ldg((const float4 *)xb);
		v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
	} else {
		v[0] = __ldg(xb);
	}
	float amax = 0.0f;
#pragma unroll
	for (int i = 0; i < V; i++)
		amax = mvq_amax(amax, v[i]);
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		amax = mvq_amax(amax, __shfl_xor_sync(0xffffffffu, amax, o));
	const float id = mvq_inv(amax);
	if (V >= 4) {
		uint32_t w[2] = {0, 0};
#pragma unroll
		for (int i = 0; i < V; i++)
			w[i / 4] |= (uint32_t)(mvq_code(v[i], id) & 255) << 8 * (i % 4);
		if (V == 8)
			*(uint2 *)(q + b * B + lane * V) = make_uint2(w[0], w[1]);
		else
			*(uint32_t *)(q + b * B + lane * V) = w[0];
	} else {
		q[b * B + lane] = (int8_t)mvq_code(v[0], id);
	}
	if (lane == 0)
		d[b] = mvq_dx(amax);
}

template <class F, int TB>
static __global__ void __launch_bounds__(MVQ_THREADS, TB == 1 ? 6 : TB == 2 ? 5 : TB == 4 ? 3 : 2)
	k_matvec_q8(float *__restrict__ y, const int8_t *__restrict__ xq, const float *__restrict__ xd,
		    const uint8_t *__restrict__ W, int N, int K, int64_t row_bytes, const void *bias, int bias_fmt, int T)
{
	constexpr int R = MVQ_ROWS, BPI = MVQ_THREADS / F::LPB; /* blocks a row advances per iteration */
	const int u = threadIdx.x, j = u % F::LPB, nb = K / F::BLOCK;
	const int n0 = blockIdx.x * R;
	const uint8_t *row[R];
#pragma unroll
	for (int r = 0; r < R; r++)
		row[r] = W + (int64_t)(n0 + r < N ? n0 + r : N - 1) * row_bytes;
	float acc[R][TB];
#pragma unroll
	for (int r = 0; r < R; r++)
#pragma unroll
		for (int t = 0; t < TB; t++)
			acc[r][t] = 0.0f;

#pragma unroll 2
	for (int ib = u / F::LPB; ib < nb; ib += BPI) {
		typename F::W w[R];
#pragma unroll
		for (int r = 0; r < R; r++)
			F::load(row[r] + (int64_t)ib * F::BYTES, j, w[r]);
#pragma unroll
		for (int t = 0; t < TB; t++) {
			const int tt = t < T ? t : T - 1;
			const int8_t *a = xq + (int64_t)tt * K + (int64_t)ib * F::BLOCK;
			const float dx = __ldg(xd + (int64_t)tt * nb + ib);
#pragma unroll
			for (int r = 0; r < R; r++)
				acc[r][t] += F::dot(w[r], j, a, dx);
		}
	}

	__shared__ float part[MVQ_THREADS / 32][R * TB];
	const int warp = u / 32, lane = u % 32;
#pragma unroll
	for (int r = 0; r < R; r++)
#pragma unroll
		for (int t = 0; t < TB; t++) {
			float s = warp_sum(acc[r][t]);
			if (lane == 0)
				part[warp][r * TB + t] = s;
		}
	__syncthreads();
	if (u < R * TB) {
		const int r = u / TB, t = u % TB;
		if (t < T && n0 + r < N) {
			float s = part[0][u];
#pragma unroll
			for (int w = 1; w < MVQ_THREADS / 32; w++)
				s += part[w][u];
			y[(int64_t)t * N + n0 + r] = s + (bias ? vec_elem_f32(bias, bias_fmt, n0 + r) : 0.0f);
		}
	}
}

/* x's codes and scales in blocks of B at the start of c->ws (cuda_xq_codes in matmul.cuh): quantized by
 * k_quantize_x, or kept from the call before (c->xq_*). 0 or -ENOSPC. */
int cuda_xq_codes(struct cuda_ctx *c, const float *x, int T, int64_t K, int B, int8_t **xq, float **xd)
{
	size_t need = cuda_mvq_ws_bytes(T, K);
	if (need > c->ws_bytes || !c->ws) {
		snprintf(c->err, sizeof(c->err), "cuda_matmul: workspace of %zu bytes, T=%d K=%lld needs %zu (8-bit x)",
			 c->ws_bytes, T, (long long)K, need);
		return -ENOSPC;
	}
	*xq = (int8_t *)c->ws;
	*xd = (float *)((char *)c->ws + mvq_align((size_t)T * (size_t)K));
	const int64_t nbx = (int64_t)T * K / B;
	if (c->xq_reuse && c->xq_x == x && c->xq_T == T && c->xq_K == K && c->xq_block == B &&
	    c->xq_at == c->launches) {
		c->xq_reused++;
		return 0;
	}
	const int qthreads = 256;
	const unsigned grid = (unsigned)((nbx * 32 + qthreads - 1) / qthreads);
	c->xq_x = NULL;
	/* the kernel's block is B itself: the 256-block kernel over the T*K/128 warps of Q4_Z128/Q8_Z128 read T*K
	 * values past x, wrote its codes over the scales and gave one scale per 256 (test_cuda_matmul, H100) */
	bool known = mvq_xq_block(B, [&](auto bq) {
		k_quantize_x<decltype(bq)::value><<<grid, qthreads, 0, cuda_stream_of(c)>>>(*xq, *xd, x, nbx);
	});
	if (!known) {
		snprintf(c->err, sizeof(c->err), "cuda_xq_codes: block of %d values, expected 32, 128 or 256", B);
		return -EINVAL;
	}
	CUDA_LAUNCH_CHECK(c, "k_quantize_x");
	return 0;
}

/* After the product's launch: the codes still describe x unless y overlapped it */
void cuda_xq_keep(struct cuda_ctx *c, const float *y, const float *x, int T, int64_t N, int64_t K, int B)
{
	const bool y_clear = (const char *)(y + (int64_t)T * N) <= (const char *)x ||
			     (const char *)y >= (const char *)(x + (int64_t)T * K);
	c->xq_x = y_clear ? x : NULL;
	c->xq_T = T, c->xq_K = K, c->xq_block = B, c->xq_at = c->launches;
}

template <class F>
static int mvq_launch(struct cuda_ctx *c, float *y, const float *x, const void *W, int64_t N, int64_t K,
		      const void *bias, int bias_fmt, int T)
{
	CUDA_ARG_CHECK(c, T >= 1 && T <= CUDA_MVQ_T_MAX, "cuda_matvec_q8: T=%d outside 1..%d", T, CUDA_MVQ_T_MAX);
	int8_t *xq;
	float *xd;
	int rc = cuda_xq_codes(c, x, T, K, F::BLOCK, &xq, &xd);
	if (rc)
		return rc;
	cudaStream_t s = cuda_stream_of(c);
	const unsigned grid = (unsigned)((N + MVQ_ROWS - 1) / MVQ_ROWS);
	const int64_t row_bytes = K / F::BLOCK * F::BYTES;
	const uint8_t *w = (const uint8_t *)W;
	tb_dispatch<CUDA_MVQ_T_MAX>(T, [&](auto tb) {
		k_matvec_q8<F, decltype(tb)::value><<<grid, MVQ_THREADS, 0, s>>>(y, xq, xd, w, (int)N, (int)K, row_bytes,
										  bias, bias_fmt, T);
	});
	CUDA_LAUNCH_CHECK(c, "k_matvec_q8");
	/* y never aliases x (cuda_matmul's contract), so the codes still describe x after this launch */
	cuda_xq_keep(c, y, x, T, N, K, F::BLOCK);
	return 0;
}

typedef int (*mvq_fn)(struct cuda_ctx *c, float *y, const float *x, const void *W, int64_t N, int64_t K,
		      const void *bias, int bias_fmt, int T);
template <class F> static constexpr mvq_fn mvq_entry()
{
	if constexpr (std::is_void<F>::value)
		return nullptr;
	else
		return mvq_launch<F>;
}
#define MVQ_ROW(id, code, block, bytes, ggml, kind, k) mvq_entry<dq_for<WFMT_##id>::type>(),
static const mvq_fn mvq_by_fmt[WFMT_COUNT] = {WFMT_LIST(MVQ_ROW)};
#undef MVQ_ROW

extern "C" bool cuda_mvq_runs(int wfmt)
{
	return wfmt >= 0 && wfmt < WFMT_COUNT && mvq_by_fmt[wfmt];
}

extern "C" bool cuda_mvq_checked(int wfmt)
{
	/* test_cuda_matmul on an H100: the first nine 2026-12-07, the next fifteen 2026-12-08 (bench/RESULTS.md,
	 * "CUDA matvec on 8-bit activations" and the sixth session's GPU call); Q4_Z128 and Q8_Z128 failed there */
	static const int ok[] = {WFMT_Q4_K, WFMT_Q5_K, WFMT_Q6_K, WFMT_Q8_0, WFMT_Q4_0, WFMT_Q5_0, WFMT_Q4_1, WFMT_Q5_1,
				 WFMT_IQ4_NL, WFMT_MXFP4, WFMT_Q2_K, WFMT_Q3_K, WFMT_TQ2_0, WFMT_TQ1_0, WFMT_IQ4_XS,
				 WFMT_IQ2_XXS, WFMT_IQ2_XS, WFMT_IQ2_S, WFMT_IQ3_XXS, WFMT_IQ3_S, WFMT_IQ1_S, WFMT_IQ1_M,
				 WFMT_Q4_Z, WFMT_Q8_Z};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (ok[i] == wfmt)
			return cuda_mvq_runs(wfmt);
	return false;
}

int cuda_matvec_q8(struct cuda_ctx *c, float *y, const float *x, const void *W, int wfmt, int64_t N, int64_t K,
		   const void *bias, int bias_fmt, int T)
{
	if (cuda_mvq_runs(wfmt))
		return mvq_by_fmt[wfmt](c, y, x, W, N, K, bias, bias_fmt, T);
	snprintf(c->err, sizeof(c->err), "cuda_matvec_q8: weight format %d has no 8-bit kernel", wfmt);
	return -EINVAL;
}
