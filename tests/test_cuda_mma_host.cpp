/*
 * test_cuda_mma_host.cpp: the tensor-core matmul kernel's own per-thread code (src/kernels/cuda/matmul_mma.cuh:
 * tile loads through the format decoders, the lanes' mma fragments, the stores with the bias) run on the host
 * (tests/cuda_emul.h), block by block and thread by thread in the kernel's order, with mma.sync m16n8k16
 * emulated from the PTX ISA's description of its fragments (written here independently: element i of a
 * lane's A registers is row g (i < 2 or 4 <= i < 6) else g + 8, col 2q + (i & 1) + 8 (i >= 4); of B, row
 * 2q + (i & 1) + 8 (i >= 2), col g; of C, row g (i < 2) else g + 8, col 2q + (i & 1)), so the index math is
 * checked on any machine; tests/test_cuda_matmul.c checks the real kernel on a GPU.
 *
 * Every kernel shape (warps x tokens x k per tile: 2x8x128, 2x16x128, 8x32x64, 8x64x64, 8x128x64) on every
 * quantized format, shapes off every tile (N 1, 7, 33, 100; K the format's block, 96 for the 32-blocks: part
 * of a tile; T 1, 3, 8, 9, 17, 40, 65, 130), with and without a bias; then N 300 over several tiles of k. Reference: the CPU's dequantized weights (cpu_row_to_f32) and x,
 * each rounded to bf16 (f32_to_bf16), dotted in double; each output within K 2^-23 sum|w x| of it (the
 * products of bf16 values are exact in f32, so only the f32 sums round); outputs not written stay NaN and
 * fail, as do writes outside y. Random blocks are redrawn until their values are finite and below 1e4.
 * Exit 0 pass, 1 fail.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_emul.h"

extern "C" {
#include "base/rng.h"
}

#include "kernels/cuda/matmul_mma.cuh"

static struct rng rng;

/* uniform in [-1, 1) */
static float rng_unit(void)
{
	return (float)(rng_next(&rng) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

static float bf16_round(float v)
{
	return bf16_to_f32(f32_to_bf16(v));
}

/* the bf16 value in half h of word w */
static float half_of(uint32_t w, int h)
{
	return bf16_to_f32((uint16_t)(w >> 16 * h));
}

/* c[lane][0..3] += A . B of one warp's m16n8k16 from the lanes' registers a[lane][4], b[lane][2], by the PTX
 * ISA's fragment layout (element i of a lane's registers is half i % 2 of register i / 2) */
static void mma_emulated(const uint32_t a[32][4], const uint32_t b[32][2], float c[32][4])
{
	float A[16][16], B[16][8];
	for (int lane = 0; lane < 32; lane++) {
		int g = lane / 4, q = lane % 4;
		for (int i = 0; i < 8; i++) {
			int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8, col = 2 * q + (i & 1) + (i >= 4 ? 8 : 0);
			A[row][col] = half_of(a[lane][i / 2], i % 2);
		}
		for (int i = 0; i < 4; i++) {
			int row = 2 * q + (i & 1) + (i >= 2 ? 8 : 0), col = g;
			B[row][col] = half_of(b[lane][i / 2], i % 2);
		}
	}
	for (int lane = 0; lane < 32; lane++) {
		int g = lane / 4, q = lane % 4;
		for (int i = 0; i < 4; i++) {
			int row = i < 2 ? g : g + 8, col = 2 * q + (i & 1);
			float s = c[lane][i];
			for (int k = 0; k < 16; k++)
				s += A[row][k] * B[k][col];
			c[lane][i] = s;
		}
	}
}

/* One launch of k_matmul_mma<F, WARPS, BN, BK> emulated: every block, its threads' tile loads, its warps' mma
 * steps, its threads' stores. */
template <class F, int WARPS, int BN, int BK>
static void run_kernel(float *y, const float *x, const uint8_t *W, int N, int K, const void *bias, int bias_fmt, int T)
{
	typedef mma_shape<WARPS, BN, BK> S;
	int64_t row_bytes = K / F::BLOCK * F::BYTES;
	static uint16_t As[S::BM * S::LD], Bs[BN * S::LD];
	static float acc[S::NT][S::NB][4];
	for (int bx = 0; bx < (N + S::BM - 1) / S::BM; bx++)
		for (int by = 0; by < (T + BN - 1) / BN; by++) {
			int n0 = bx * S::BM, t0 = by * BN;
			memset(acc, 0, sizeof(acc));
			memset(As, 0xff, sizeof(As)); /* NaN bits: a value the loads miss shows */
			memset(Bs, 0xff, sizeof(Bs));
			for (int k0 = 0; k0 < K; k0 += BK) {
				for (int tid = 0; tid < S::NT; tid++)
					mma_load_tile<F, WARPS, BN, BK>(As, Bs, W, x, N, K, row_bytes, T, n0, t0, k0, tid);
				for (int ks = 0; ks < BK; ks += 16)
					for (int warp = 0; warp < WARPS; warp++)
						for (int j = 0; j < S::NB; j++) {
							uint32_t a[32][4], b[32][2];
							float c[32][4];
							for (int lane = 0; lane < 32; lane++) {
								mma_frag_a<S::LD>(As, warp, lane, ks, a[lane]);
								mma_frag_b<S::LD>(Bs, j, lane, ks, b[lane]);
								memcpy(c[lane], acc[warp * 32 + lane][j], sizeof(c[lane]));
							}
							mma_emulated(a, b, c);
							for (int lane = 0; lane < 32; lane++)
								memcpy(acc[warp * 32 + lane][j], c[lane], sizeof(c[lane]));
						}
			}
			for (int tid = 0; tid < S::NT; tid++)
				mma_store<BN>(y, acc[tid], tid / 32, tid % 32, n0, t0, N, T, bias, bias_fmt);
		}
}

static int failures, cases;

/* nb blocks of format fmt at w: random bytes, each block redrawn until its values are finite and < 1e4 */
static void fill_blocks(uint8_t *w, int fmt, int64_t nb)
{
	int bs = (int)wfmt_table[fmt].block, bb = (int)wfmt_table[fmt].block_bytes;
	float v[256];
	for (int64_t i = 0; i < nb; i++)
		for (;;) {
			uint8_t *p = w + i * bb;
			for (int j = 0; j < bb; j++)
				p[j] = (uint8_t)(rng_next(&rng) >> 56);
			cpu_row_to_f32(fmt, p, v, bs);
			int ok = 1;
			for (int j = 0; j < bs; j++)
				ok &= isfinite(v[j]) && fabsf(v[j]) < 1e4f;
			if (ok)
				break;
		}
}

template <class F, int WARPS, int BN, int BK> static void check_case(int fmt, int N, int K, int T, int bias_fmt)
{
	int64_t row_bytes = K / F::BLOCK * F::BYTES;
	/* 16-byte aligned rows (Q4_K/Q5_K claim 16), W one row longer than N rows so a stray row shows */
	uint8_t *W = (uint8_t *)aligned_alloc(64, (size_t)((row_bytes * (N + 1) + 63) / 64 * 64));
	float *x = (float *)aligned_alloc(64, sizeof(float) * ((size_t)T * K + 16));
	float *y = (float *)malloc(sizeof(float) * ((size_t)T * N + 64)), *wf = (float *)malloc(sizeof(float) * (size_t)N * K);
	uint8_t bias[4 * 512];
	fill_blocks(W, fmt, (int64_t)N * K / F::BLOCK);
	for (int64_t i = 0; i < (int64_t)T * K; i++)
		x[i] = rng_unit();
	for (int n = 0; n < N && bias_fmt >= 0; n++) {
		float v = rng_unit();
		if (bias_fmt == WFMT_F32)
			memcpy(bias + 4 * n, &v, 4);
		else {
			uint16_t h = bias_fmt == WFMT_F16 ? f32_to_f16(v) : f32_to_bf16(v);
			memcpy(bias + 2 * n, &h, 2);
		}
	}
	for (size_t i = 0; i < (size_t)T * N + 64; i++)
		y[i] = NAN;
	misaligned = 0;
	run_kernel<F, WARPS, BN, BK>(y, x, W, N, K, bias_fmt >= 0 ? bias : NULL, bias_fmt, T);
	for (int n = 0; n < N; n++)
		cpu_row_to_f32(fmt, W + n * row_bytes, wf + (size_t)n * K, K);
	int bad = 0;
	for (int t = 0; t < T; t++)
		for (int n = 0; n < N; n++) {
			double s = bias_fmt >= 0 ? vec_elem_f32(bias, bias_fmt, n) : 0, mag = fabs(s);
			for (int k = 0; k < K; k++) {
				double p = (double)bf16_round(wf[(size_t)n * K + k]) * bf16_round(x[(size_t)t * K + k]);
				s += p;
				mag += fabs(p);
			}
			float got = y[(size_t)t * N + n];
			if (!(fabs(got - s) <= K * ldexp(1.0, -23) * mag + 1e-30) && bad++ < 3)
				fprintf(stderr, "FAIL %s %dx%dx%d N=%d K=%d T=%d bias %d: y[%d][%d] = %g, want %g\n",
					wfmt_name(fmt), WARPS, BN, BK, N, K, T, bias_fmt, t, n, got, s);
		}
	for (int i = 0; i < 64; i++)
		if (!isnan(y[(size_t)T * N + i]) && bad++ < 3)
			fprintf(stderr, "FAIL %s %dx%dx%d N=%d K=%d T=%d: wrote past y\n", wfmt_name(fmt), WARPS, BN, BK,
				N, K, T);
	if (misaligned && bad++ < 3)
		fprintf(stderr, "FAIL %s: %d misaligned loads\n", wfmt_name(fmt), misaligned);
	cases++;
	failures += bad > 0;
	free(W), free(x), free(y), free(wf);
}

template <class F> static void check_format(int fmt)
{
	static const int Ns[] = {1, 7, 33, 100}, Ts[] = {1, 3, 8, 9, 17, 40, 65, 130};
	const int K = F::BLOCK == 32 ? 96 : F::BLOCK; /* 96: a tile and a half */
	int turn = 0;
	for (int ni = 0; ni < 4; ni++)
		for (int ti = 0; ti < 8; ti++) {
			int N = Ns[ni], T = Ts[ti], bias_fmt = turn++ % 4 - 1; /* none, F32, F16, BF16 in turn */
			check_case<F, 2, 8, 128>(fmt, N, K, T, bias_fmt);
			check_case<F, 2, 16, 128>(fmt, N, K, T, bias_fmt);
			check_case<F, 8, 32, 64>(fmt, N, K, T, bias_fmt);
			check_case<F, 8, 64, 64>(fmt, N, K, T, bias_fmt);
			check_case<F, 8, 128, 64>(fmt, N, K, T, bias_fmt);
		}
	/* several tiles, a larger N: several blocks of rows */
	check_case<F, 8, 32, 64>(fmt, 300, 512, 40, 0);
	check_case<F, 2, 16, 128>(fmt, 300, F::BLOCK == 32 ? 288 : 512, 12, 2);
}

int main(void)
{
	int formats = 0;
	rng_seed(&rng, 23);
#define CHECK_ROW(id, code, block, bytes, ggml, kind, k) WFMT_QDOT_##kind((check_format<deq_##k>(WFMT_##id), formats++);, )
	WFMT_LIST(CHECK_ROW)
#undef CHECK_ROW
	printf("test_cuda_mma_host: %d formats, %d cases, %d failed\n", formats, cases, failures);
	return failures ? 1 : 0;
}
