/*
 * test_cuda_mvq_host.cpp: the 8-bit-activation matrix-vector kernels' per-thread code (src/kernels/cuda/
 * matvec_q8.cuh) compiled for the host with the device intrinsics emulated (tests/cuda_emul.h: __dp4a, __vsub4,
 * __ldg checked for alignment), so every machine checks them, GPU or not:
 *   - the quantizer's launch and lane arithmetic (the k_quantize_x<B> that cuda_xq_codes picks through
 *     mvq_xq_block for the format's block, its T*K/B warps' reads inside x; amax over the block, 127/amax,
 *     codes, dx) against the CPU's cpu_xq_quantize: codes and scales bit for bit, x with per-32 scales
 *     2^-4..2^4 and a zero block;
 *   - each format's dot (load + dot per lane), run in k_matvec_q8's order (MVQ_THREADS threads striding over
 *     the blocks, LPB per block, each thread's f32 sum, the warps' butterflies, the warps in order) against the
 *     CPU's portable qdot on the same codes: |out - cpu| <= (K/16 + 16) 2^-24 sum|terms| (qdot.h's bound for
 *     two orders of the same exact integer sums; the terms of the formats with a min or zero point are the scale part and the min part of
 *     each weight: |w| + 2 |min|), weights random blocks with random finite scales (set_scales) in a buffer aligned to
 *     the format's ALIGN and no more (a misaligned load fails), T 1..8, K from one block to 4352.
 * What it cannot see: the device's own instructions and the launch (tests/test_cuda_matmul.c on a GPU).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <type_traits>

#include "cuda_emul.h"
#include "host_rand.h"

#include "kernels/cuda/matvec_q8.cuh"

extern "C" {
#include "kernels/cpu/qdot.h"
}

#define THREADS 128 /* MVQ_THREADS of matvec_q8.cu */
#define NROWS 5
#define TMAX 8


/* cuda_xq_codes's launch for the weight block B over n values of x (T rows of K): the kernel mvq_xq_block
 * picks, warp b of n / B quantizing block b of that kernel's size with k_quantize_x's arithmetic; 0 when every
 * read lies in x and the codes and scales equal the CPU's (cpu_xq_init with blk B) */
static int quantize_check(const float *x, int64_t n, int B, const struct cpu_xq *xq)
{
	int bad = 0;
	const int64_t nb = n / B;
	bool known = mvq_xq_block(B, [&](auto bq) {
		constexpr int BQ = decltype(bq)::value;
		if (BQ != B && bad++ < 3)
			fprintf(stderr, "quantizer for blocks of %d runs k_quantize_x<%d>\n", B, BQ);
		for (int64_t b = 0; b < nb; b++) {
			if ((b + 1) * BQ > n) {
				fprintf(stderr, "quantizer block %lld of %d reads past x's %lld values\n", (long long)b, BQ,
					(long long)n);
				bad++;
				break;
			}
			const float *xb = x + b * BQ;
			float lane_max[32];
			for (int l = 0; l < 32; l++) {
				lane_max[l] = 0;
				for (int i = 0; i < BQ / 32; i++)
					lane_max[l] = mvq_amax(lane_max[l], xb[l * (BQ / 32) + i]);
			}
			for (int o = 16; o > 0; o >>= 1) {
				float nx[32];
				for (int l = 0; l < 32; l++)
					nx[l] = mvq_amax(lane_max[l], lane_max[l ^ o]);
				memcpy(lane_max, nx, sizeof(nx));
			}
			float amax = lane_max[0], id = mvq_inv(amax), dx = mvq_dx(amax);
			if (memcmp(&dx, &xq->d[b], 4) && bad++ < 3)
				fprintf(stderr, "quantizer block %lld: dx %a, CPU %a\n", (long long)b, dx, xq->d[b]);
			for (int i = 0; i < BQ; i++) {
				int q = mvq_code(xb[i], id);
				if (q != xq->q[b * BQ + i] && bad++ < 3)
					fprintf(stderr, "quantizer block %lld value %d: %d, CPU %d\n", (long long)b, i, q,
						xq->q[b * BQ + i]);
			}
		}
	});
	if (!known) {
		fprintf(stderr, "quantizer: no kernel for blocks of %d\n", B);
		bad++;
	}
	return bad;
}

/* k_matvec_q8's sum for one row and token: threads u stride over the blocks, then butterflies, then warps */
template <class F> static float row_dot(const uint8_t *row, const int8_t *a, const float *dx, int K)
{
	const int nb = K / F::BLOCK, bpi = THREADS / F::LPB;
	float acc[THREADS];
	for (int u = 0; u < THREADS; u++) {
		acc[u] = 0;
		for (int ib = u / F::LPB; ib < nb; ib += bpi) {
			typename F::W w;
			F::load(row + (int64_t)ib * F::BYTES, u % F::LPB, w);
			acc[u] += F::dot(w, u % F::LPB, a + (int64_t)ib * F::BLOCK, dx[ib]);
		}
	}
	float s = 0;
	for (int wp = 0; wp < THREADS / 32; wp++) {
		float v[32];
		memcpy(v, acc + 32 * wp, sizeof(v));
		for (int o = 16; o > 0; o >>= 1) {
			float nx[32];
			for (int l = 0; l < 32; l++)
				nx[l] = v[l] + v[l ^ o];
			memcpy(v, nx, sizeof(nx));
		}
		s = wp == 0 ? v[0] : s + v[0];
	}
	return s;
}

/* Where a block's codes lie (bytes [from, to)), and whether it has a min (its part: the value all-zero codes
 * have): Q4_K/Q5_K/Q4_1/Q5_1/Q2_K */
struct code_bytes {
	int from, to;
};

static bool zero_point(int fmt)
{
	return fmt == WFMT_Q4_Z || fmt == WFMT_Q8_Z || fmt == WFMT_Q4_Z128 || fmt == WFMT_Q8_Z128;
}

static bool has_min(int fmt)
{
	return fmt == WFMT_Q4_K || fmt == WFMT_Q5_K || fmt == WFMT_Q4_1 || fmt == WFMT_Q5_1 || fmt == WFMT_Q2_K ||
	       zero_point(fmt);
}

static code_bytes codes_of(int fmt)
{
	int bytes = (int)wfmt_table[fmt].block_bytes;
	if (fmt == WFMT_Q2_K)
		return {16, 80};
	/* after d and the min or zero point (K-quants: + scales) */
	return {wfmt_table[fmt].block != QK_K ? 4 : 16, bytes};
}

/* The min part of each value of a block (minus the value its codes of 0 would have), 0 without a min */
static void mins_of(int fmt, const uint8_t *blk, float *m)
{
	int bk = (int)wfmt_table[fmt].block;
	uint8_t z[256];
	memcpy(z, blk, wfmt_table[fmt].block_bytes);
	if (!has_min(fmt)) {
		for (int j = 0; j < bk; j++)
			m[j] = 0;
		return;
	}
	code_bytes c = codes_of(fmt);
	memset(z + c.from, 0, (size_t)(c.to - c.from));
	cpu_row_to_f32(fmt, z, m, bk);
	for (int j = 0; j < bk; j++)
		m[j] = -m[j];
}

/* The scales of a block of random bytes set finite and random: the f16 d at d_at (and dmin at m_at) where the
 * format keeps them; IQ1_M's d in the top nibbles of its scale words; MXFP4's e8m0 scale 2^-20 .. 2^11, 1 in 8
 * subnormal */
static void set_scales(int fmt, uint8_t *b)
{
	uint16_t d = rand_half(), dmin = rand_half();
	int d_at = fmt == WFMT_Q6_K ? 208 : fmt == WFMT_Q2_K ? 80 : fmt == WFMT_Q3_K ? 108 : fmt == WFMT_TQ1_0 ? 52
		   : fmt == WFMT_TQ2_0 ? 64 : 0;
	int m_at = fmt == WFMT_Q2_K ? 82 : 2;
	if (fmt == WFMT_MXFP4) {
		b[0] = (uint8_t)(urand() < 0.125 ? rng_next() >> 63 : 108 + urand() * 32);
		return;
	}
	for (int i = 0; fmt == WFMT_IQ1_M && i < 4; i++)
		b[49 + 2 * i] = (uint8_t)((b[49 + 2 * i] & 15) | (d >> 4 * i & 15) << 4);
	if (fmt != WFMT_IQ1_M)
		memcpy(b + d_at, &d, 2);
	if (zero_point(fmt)) { /* as GPTQ/AWQ give them: 0..16 (4-bit), -128..128 (8-bit) */
		bool four = fmt == WFMT_Q4_Z || fmt == WFMT_Q4_Z128;
		int16_t z = (int16_t)(four ? (int)(urand() * 17) : (int)(urand() * 257) - 128);
		memcpy(b + 2, &z, 2);
	} else if (has_min(fmt)) {
		memcpy(b + m_at, &dmin, 2);
	}
}

template <class F> static int check(int fmt, const char *name)
{
	static const int Ks_k[] = {256, 512, 4352}, Ks_128[] = {128, 640, 4352}, Ks_32[] = {32, 96, 640, 4352};
	const int *Ks = F::BLOCK == QK_K ? Ks_k : F::BLOCK == 128 ? Ks_128 : Ks_32, nK = F::BLOCK == QK ? 4 : 3;
	int bad = 0, cases = 0, quant_bad = 0;
	double worst = 0;
	for (int ki = 0; ki < nK; ki++) {
		const int K = Ks[ki], nb = K / F::BLOCK;
		const size_t rb = (size_t)nb * F::BYTES, bytes = rb * NROWS;
		uint8_t *buf = (uint8_t *)aligned_alloc(64, (bytes + 128) / 64 * 64 + 64);
		uint8_t *W = buf + (F::ALIGN < 64 ? F::ALIGN : 0); /* aligned to ALIGN and no more */
		for (size_t i = 0; i < bytes; i++)
			W[i] = (uint8_t)(rng_next() >> 56);
		for (int b = 0; b < nb * NROWS; b++)
			set_scales(fmt, W + (size_t)b * F::BYTES);
		float *x = (float *)malloc(sizeof(float) * (size_t)TMAX * K);
		for (int t = 0; t < TMAX; t++)
			for (int b = 0; b < K / 32; b++) {
				float sc = ldexpf(1, (int)(urand() * 9) - 4);
				for (int i = 0; i < 32; i++)
					x[(size_t)t * K + 32 * b + i] =
						t == 1 && b == 0 ? 0 : (float)(urand() * 2 - 1) * sc;
			}
		void *xbuf = aligned_alloc(64, (cpu_xq_bytes(TMAX, K) + 63) / 64 * 64);
		struct cpu_xq xq;
		cpu_xq_init(&xq, xbuf, TMAX, K, F::BLOCK);
		for (int t = 0; t < TMAX; t++)
			cpu_xq_quantize(x + (size_t)t * K, t, &xq);
		quant_bad += quantize_check(x, (int64_t)TMAX * K, F::BLOCK, &xq);

		cpu_qdot_fn ref = cpu_qdot_find(fmt, CPU_ISA_PORTABLE);
		float yref[TMAX * NROWS], wv[4352], mv[4352];
		ref(W, rb, NROWS, &xq, 0, TMAX, yref, NROWS);
		misaligned = 0;
		for (int n = 0; n < NROWS; n++) {
			const uint8_t *row = W + (size_t)n * rb;
			cpu_row_to_f32(fmt, row, wv, K);
			for (int b = 0; b < nb; b++)
				mins_of(fmt, row + (size_t)b * F::BYTES, mv + b * F::BLOCK);
			for (int t = 0; t < TMAX; t++) {
				const int8_t *a = xq.q + (size_t)t * K;
				const float *dx = xq.d + (size_t)t * nb;
				float y = row_dot<F>(row, a, dx, K);
				double mag = 0;
				for (int k = 0; k < K; k++)
					mag += (fabs((double)wv[k]) + 2 * fabs((double)mv[k])) * fabs((double)dx[k / F::BLOCK] * a[k]);
				double err = fabs((double)y - yref[t * NROWS + n]), lim = (K / 16 + 16) * 0x1p-24 * mag;
				cases++;
				worst = mag > 0 && err / mag > worst ? err / mag : worst;
				if (!(err <= lim) && bad++ < 3)
					fprintf(stderr, "%s K=%d row %d token %d: %.9g, CPU %.9g (err %.3g > %.3g)\n", name, K, n,
						t, y, yref[t * NROWS + n], err, lim);
			}
		}
		if (misaligned)
			fprintf(stderr, "%s K=%d: %d loads misaligned at an alignment of %d\n", name, K, misaligned, F::ALIGN);
		bad += misaligned;
		free(buf), free(x), free(xbuf);
	}
	printf("%-5s %d dots, %d off the bound (worst err/sum|terms| %.2g), quantizer %d wrong\n", name, cases, bad, worst,
	       quant_bad);
	return bad + quant_bad;
}

template <class F> static int check_fmt(int fmt, const char *name, int *n)
{
	if constexpr (std::is_void<F>::value) {
		(void)fmt, (void)name;
		return 0;
	} else {
		++*n;
		return check<F>(fmt, name);
	}
}

int main(void)
{
	int bad = 0, n = 0;
#define MVQ_CHECK(id, code, block, bytes, ggml, kind, k) bad += check_fmt<dq_for<WFMT_##id>::type>(WFMT_##id, #id, &n);
	WFMT_LIST(MVQ_CHECK)
#undef MVQ_CHECK
	if (n < 26) { /* every QUANT and QMIN format */
		fprintf(stderr, "test_cuda_mvq_host: %d formats with a dot, expected at least 26\n", n);
		return 1;
	}
	printf("test_cuda_mvq_host: %d formats, %s\n", n, bad ? "FAIL" : "pass");
	return bad ? 1 : 0;
}
