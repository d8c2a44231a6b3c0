/*
 * test_cuda_q8mma_host.cpp: the int8 tensor-core matmul kernel's own per-thread code (src/kernels/cuda/
 * matmul_q8mma.cuh: the tile loads into registers, their unpacking into shared memory, the x code sums, the
 * lanes' fragments, the integer and f32 scaling, the output with the bias) run on the host (tests/cuda_emul.h),
 * block by block, thread by thread and tile by tile in k_matmul_q8mma's order, with mma.sync m16n8k32 and
 * m16n8k16 (.s8.s8.s32) emulated from the PTX ISA's fragment description (written here independently: element
 * i of a lane's A registers is row g for i < 4 or 8 <= i < 12, else g + 8, col 4q + (i & 3) (+ 16 for i >= 8);
 * of B row 4q + (i & 3) (+ 16 for i >= 4), col g; C as for the f16 shapes), so the index math is checked on any
 * machine; tests/test_cuda_matmul.c checks the real kernel on a GPU.
 *
 * Every format with an 8-bit tensor-core kernel, every block shape (16, 32, 64 tokens), N 1, 7, 70 (two row
 * tiles), K one to four 256-tiles (32-blocks: 32, 96, 288 and 640 too: tiles cut short), T 1, 5, 17, 40, 70
 * (two token tiles of 64), with and without an F32/F16/BF16 bias. x: random per-block scales 2^-4 .. 2^4 and a
 * zero block, quantized by the CPU's cpu_xq_quantize (the GPU quantizer is checked against it bit for bit by
 * test_cuda_mvq_host); weights: random bytes with random finite f16 scales, in a buffer aligned to the
 * format's ALIGN and no more (a misaligned load fails). Reference: the CPU's portable qdot (src/kernels/cpu/
 * qdot.c) on the same codes plus the bias, as cpu_matmul adds it. The bound: equal bit for bit (the header's
 * contract); outputs never written stay NaN and fail, as do writes past y. Exit 0 pass, 1 fail.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <type_traits>
#include <vector>

#include "cuda_emul.h"
#include "host_rand.h"

#include "kernels/cuda/matmul_q8mma.cuh"

extern "C" {
#include "kernels/cpu/qdot.h"
}


/* The int8 byte of a register */
static int sbyte(uint32_t r, int i)
{
	return (int)(int8_t)(r >> 8 * i);
}

/* mma.sync m16n8kKK .s8: d[lane][4] = A . B from the 32 lanes' fragments (the layout above) */
template <int KK> static void mma_emulated(const uint32_t a[32][4], const uint32_t b[32][2], int d[32][4])
{
	for (int row = 0; row < 16; row++)
		for (int col = 0; col < 8; col++) {
			int s = 0;
			for (int k = 0; k < KK; k++) {
				int al = 4 * (row % 8) + k % 16 / 4, ar = (row >= 8 ? 1 : 0) + (k >= 16 ? 2 : 0);
				int bl = 4 * col + k % 16 / 4, br = k >= 16 ? 1 : 0;
				s += sbyte(a[al][ar], k % 4) * sbyte(b[bl][br], k % 4);
			}
			d[4 * (row % 8) + col / 2][(col % 2) + (row >= 8 ? 2 : 0)] = s;
		}
}

/* One launch of k_matmul_q8mma<F, WN, NT> emulated: every block of the grid, every thread */
template <class F, int WN, int NT>
static void launch(float *y, const int8_t *xq, const float *xd, const uint8_t *W, int N, int K, int64_t row_bytes,
		   const void *bias, int bias_fmt, int T)
{
	typedef q8_shape<F, WN, NT> S;
	constexpr int GPB = F::BLOCK / F::G, NW = 4 * WN;
	typedef q8_smem<F, S::BN> SM;
	SM *sm = new SM;
	std::vector<q8_stage<F, WN, NT>> st(S::NTHR);
	std::vector<float> acc((size_t)S::NTHR * NT * 4);
	std::vector<int> I((size_t)S::NTHR * NT * 4);
	const int ntiles = (K + Q8_BK - 1) / Q8_BK;
	for (int by = 0; by < (N + Q8_BM - 1) / Q8_BM; by++)
		for (int bx = 0; bx < (T + S::BN - 1) / S::BN; bx++) {
			const int t0 = bx * S::BN, n0 = by * Q8_BM;
			memset((void *)sm, 0x5a, sizeof(SM)); /* stale bytes of another block */
			for (size_t i = 0; i < acc.size(); i++)
				acc[i] = 0, I[i] = 0;
			for (int tid = 0; tid < S::NTHR; tid++)
				q8_load<F, WN, NT>(st[tid], W, xq, xd, N, K, row_bytes, T, n0, t0, 0, tid);
			for (int kt = 0; kt < ntiles; kt++) {
				for (int tid = 0; tid < S::NTHR; tid++)
					q8_store<F, WN, NT>(st[tid], *sm, tid);
				for (int tid = 0; F::MIN && tid < S::NTHR; tid++)
					q8_xsums<F, WN, NT>(*sm, tid);
				for (int tid = 0; kt + 1 < ntiles && tid < S::NTHR; tid++)
					q8_load<F, WN, NT>(st[tid], W, xq, xd, N, K, row_bytes, T, n0, t0, kt + 1, tid);
				const int k0 = kt * Q8_BK;
				for (int warp = 0; warp < NW; warp++) {
					const int wr = warp % 4, wc = warp / 4;
					float(*wacc)[NT][4] = (float(*)[NT][4]) & acc[(size_t)32 * warp * NT * 4];
					int(*wI)[NT][4] = (int(*)[NT][4]) & I[(size_t)32 * warp * NT * 4];
					for (int b = 0; b < S::NBLK && k0 + b * F::BLOCK < K; b++) {
						for (int gi = 0; gi < GPB; gi++) {
							const int ko = b * F::BLOCK + gi * F::G;
							uint32_t a[32][4], bf[32][2];
							int Sg[32][NT][4], d[32][4];
							for (int lane = 0; lane < 32; lane++)
								q8_frag_a<F::G>(sm->w, wr, lane, ko, a[lane]);
							for (int j = 0; j < NT; j++) {
								for (int lane = 0; lane < 32; lane++)
									q8_frag_b<F::G>(sm->x, 8 * NT * wc + 8 * j, lane, ko, bf[lane]);
								mma_emulated<F::G>(a, bf, d);
								for (int lane = 0; lane < 32; lane++)
									memcpy(Sg[lane][j], d[lane], sizeof(d[lane]));
							}
							for (int lane = 0; lane < 32; lane++)
								q8_group<F, S::BN, NT>(*sm, wr, lane, ko / F::G, Sg[lane], wI[lane]);
						}
						for (int lane = 0; lane < 32; lane++)
							q8_block_end<F, S::BN, NT>(*sm, wr, wc, lane, b, wI[lane], wacc[lane]);
					}
				}
			}
			for (int warp = 0; warp < NW; warp++)
				for (int lane = 0; lane < 32; lane++)
					q8_out<NT>(y, (const float(*)[4]) & acc[((size_t)32 * warp + lane) * NT * 4], warp % 4,
						   warp / 4, lane, n0, t0, N, T, bias, bias_fmt);
		}
	delete sm;
}

static const char *shape_name(int wn, int nt)
{
	return wn == 1 ? "16 tokens" : nt == 2 ? "32 tokens" : "64 tokens";
}

template <class F, int WN, int NT>
static int check_shape(int fmt, const char *name, int *cases)
{
	static const int Ns[] = {1, 7, 70}, Ts[] = {1, 5, 17, 40, 70};
	static const int Ks_k[] = {256, 512, 1024}, Ks_32[] = {32, 96, 288, 640};
	const bool kq = F::BLOCK == QK_K;
	const int *Ks = kq ? Ks_k : Ks_32, nK = kq ? 3 : 4, Tmax = 70, Nmax = 70;
	int bad = 0, turn = 0;
	for (int ki = 0; ki < nK; ki++) {
		const int K = Ks[ki], nb = K / F::BLOCK;
		const size_t rb = (size_t)nb * F::BYTES, bytes = rb * Nmax;
		uint8_t *buf = (uint8_t *)aligned_alloc(64, (bytes + 128) / 64 * 64 + 64);
		uint8_t *W = buf + (F::ALIGN < 64 ? F::ALIGN : 0); /* aligned to ALIGN and no more */
		float *x = (float *)malloc(sizeof(float) * (size_t)Tmax * K);
		void *xbuf = aligned_alloc(64, (cpu_xq_bytes(Tmax, K) + 63) / 64 * 64);
		float *y = (float *)malloc(sizeof(float) * ((size_t)Tmax * Nmax + 64)), *ref = (float *)malloc(sizeof(float) * (size_t)Tmax * Nmax);
		for (size_t ni = 0; ni < sizeof(Ns) / sizeof(Ns[0]); ni++)
			for (size_t ti = 0; ti < sizeof(Ts) / sizeof(Ts[0]); ti++) {
				const int N = Ns[ni], T = Ts[ti], bias_fmt = turn % 4 == 0 ? -1 : turn % 4 - 1;
				turn++;
				for (size_t i = 0; i < rb * N; i++)
					W[i] = (uint8_t)(rng_next() >> 56);
				const size_t d_at = fmt == WFMT_Q6_K ? 208 : 0;
				for (int b = 0; b < nb * N; b++) {
					uint16_t d = rand_half(), dmin = rand_half();
					memcpy(W + (size_t)b * F::BYTES + d_at, &d, 2);
					if (F::MIN)
						memcpy(W + (size_t)b * F::BYTES + 2, &dmin, 2);
				}
				for (int t = 0; t < T; t++)
					for (int b = 0; b < K / 32; b++) {
						float sc = ldexpf(1, (int)(urand() * 9) - 4);
						for (int i = 0; i < 32; i++)
							x[(size_t)t * K + 32 * b + i] = t == 1 && b == 0 ? 0 : (float)(urand() * 2 - 1) * sc;
					}
				float bias[70];
				uint16_t bias_h[70];
				for (int n = 0; n < N; n++) {
					bias[n] = (float)(urand() * 2 - 1);
					bias_h[n] = bias_fmt == WFMT_F16 ? f32_to_f16(bias[n]) : f32_to_bf16(bias[n]);
				}
				const void *bp = bias_fmt < 0 ? NULL : bias_fmt == WFMT_F32 ? (const void *)bias : (const void *)bias_h;
				struct cpu_xq xq;
				cpu_xq_init(&xq, xbuf, T, K, F::BLOCK);
				for (int t = 0; t < T; t++)
					cpu_xq_quantize(x + (size_t)t * K, t, &xq);
				cpu_qdot_fn qd = cpu_qdot_find(fmt, CPU_ISA_PORTABLE);
				for (int t = 0; t < T; t += QDOT_MAX_T)
					qd(W, rb, N, &xq, t, T - t < QDOT_MAX_T ? T - t : QDOT_MAX_T, ref + (size_t)t * N, N);
				for (int t = 0; bp && t < T; t++)
					for (int n = 0; n < N; n++)
						ref[(size_t)t * N + n] += vec_elem_f32(bp, bias_fmt, n);
				for (size_t i = 0; i < (size_t)T * N + 64; i++)
					y[i] = NAN;
				misaligned = 0;
				launch<F, WN, NT>(y, xq.q, xq.d, W, N, K, (int64_t)rb, bp, bias_fmt, T);
				int off = 0;
				for (size_t i = 0; i < (size_t)T * N; i++)
					if (memcmp(&y[i], &ref[i], 4) && off++ < 2)
						fprintf(stderr, "%s %s N=%d K=%d T=%d bias %d: y[%zu] = %.9g, CPU %.9g\n", name,
							shape_name(WN, NT), N, K, T, bias_fmt, i, y[i], ref[i]);
				for (size_t i = (size_t)T * N; i < (size_t)T * N + 64; i++)
					off += !isnan(y[i]);
				if (misaligned)
					fprintf(stderr, "%s K=%d: %d loads misaligned at an alignment of %d\n", name, K, misaligned,
						F::ALIGN);
				bad += (off > 0) + (misaligned > 0);
				++*cases;
			}
		free(buf), free(x), free(xbuf), free(y), free(ref);
	}
	return bad;
}

template <class F> static int check_fmt(int fmt, const char *name, int *n)
{
	if constexpr (std::is_void<F>::value) {
		(void)fmt, (void)name, (void)n;
		return 0;
	} else {
		int cases = 0, bad = check_shape<F, 1, 2>(fmt, name, &cases) + check_shape<F, 2, 2>(fmt, name, &cases) +
				     check_shape<F, 2, 4>(fmt, name, &cases);
		printf("%-5s %d launches, %d not bit-identical with the portable qdot\n", name, cases, bad);
		++*n;
		return bad;
	}
}

int main(void)
{
	int bad = 0, n = 0;
	rng_state = 0x9e3779b97f4a7c15ull;
#define Q8_CHECK(id, code, block, bytes, ggml, kind, k) bad += check_fmt<q8f_for<WFMT_##id>::type>(WFMT_##id, #id, &n);
	WFMT_LIST(Q8_CHECK)
#undef Q8_CHECK
	if (n < 6) {
		fprintf(stderr, "test_cuda_q8mma_host: %d formats, expected 6\n", n);
		return 1;
	}
	printf("test_cuda_q8mma_host: %d formats, %s\n", n, bad ? "FAIL" : "pass");
	return bad ? 1 : 0;
}
