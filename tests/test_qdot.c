/* test_qdot.c: the CPU matmul on 8-bit activations (src/kernels/cpu/qdot.h) for every quantized format, with
 * fresh random blocks (tests/quant_ref.h) and activations, T = 1..8, K = 256, 512 and 4352, on every kernel
 * path this CPU runs (portable, AVX2, AVX-512 VNNI, forced one at a time):
 *   - the quantizer: dx = amax/127, |a| <= 127, |x - dx a| <= dx (1/2 + 1e-4) (the 1e-4 covers the f32
 *     products x * (127/amax) and 1/(127/amax) != dx: 127 * 2^-23 relative), 16-sums exact;
 *   - each kernel against a double dot of the reference weights with the dequantized activations dx * a:
 *     |out - ref| <= (K/16 + 16) 2^-24 * sum |terms| (qdot.h's bound; the terms of the formats with mins,
 *     Q4_K/Q5_K/Q2_K/Q4_1/Q5_1, are the scale part and the min part of each weight, which may cancel: |w| + 2 |min|);
 *   - against the double dot with the f32 x: that bound plus the quantization's, sum |w_i| dx_i (1/2 + 1e-4);
 *   - the prefill tiles (cpu_qtile_find: Q4_K, Q5_K, Q6_K on AVX2 and AVX-512) the same way, T = 1..8 per call;
 *   - the paths against each other (twice the first bound), and cpu_matmul (bias, tiles of 64 tokens with
 *     the parallel quantizer: T = 70, every format with a tile on every path) against the same reference;
 *   - F32/F16/BF16 fdots per path against double dots with f32 x, K with a tail (1e-5 * sum |w x|).
 * Fixed seeds: the same numbers every run. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "quant_ref.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/qdot.h"
#include "layout/wfmt.h"

#define TMAX 8
#define N 11 /* rows: one tile of 8 rows (qdot_ktile_simd.h) and a part of one */
#define QERR (0.5 + 1e-4) /* |x - dx a| / dx */

/* x[T][K]: normal values, each 32-block scaled by 2^-4..2^4, a zero block in token 0 */
static void rand_x(float *x, int T, int K)
{
	for (int t = 0; t < T; t++)
		for (int b = 0; b < K / 32; b++) {
			float s = ldexpf(1, (int)(urand() * 9) - 4);
			for (int i = 0; i < 32; i++)
				x[t * K + 32 * b + i] = t == 0 && b == 1 ? 0 : nrand() * s;
		}
}

static void check_quantizer(const float *x, const struct cpu_xq *xq, int T, int K, int B)
{
	int bad = 0;
	for (int t = 0; t < T; t++)
		for (int b = 0; b < K / B; b++) {
			const float *xb = x + t * K + b * B;
			const int8_t *a = xq->q + t * K + b * B;
			float amax = 0, dx = xq->d[t * (K / B) + b];
			for (int i = 0; i < B; i++)
				amax = fmaxf(amax, fabsf(xb[i]));
			bad += dx != amax / 127.0f;
			for (int i = 0; i < B; i++)
				bad += a[i] < -127 || fabs(xb[i] - (double)dx * a[i]) > dx * QERR;
			for (int g = 0; g < B / 16; g++) {
				int s = 0;
				for (int i = 0; i < 16; i++)
					s += a[16 * g + i];
				bad += s != xq->s[t * (K / 16) + b * (B / 16) + g];
			}
		}
	CHECK_MSG(bad == 0, "quantizer: %d wrong values (K=%d, block %d)", bad, K, B);
}

struct refs {
	double q[TMAX * N];   /* w . (dx a) */
	double mag[TMAX * N]; /* sum |terms| */
	double f[TMAX * N];   /* w . x */
	double qe[TMAX * N];  /* sum |w| dx QERR */
};

/* The min part of each weight of a block with mins (Q4_K, Q5_K, Q2_K; Q4_1/Q5_1's m; Q4_Z/Q8_Z's -d z): the value its codes of 0
 * would have, negated; 0 elsewhere */
static void ref_mins(int fmt, const uint8_t *blk, float *m)
{
	int bk = (int)wfmt_table[fmt].block;
	uint8_t z[256];
	memcpy(z, blk, wfmt_table[fmt].block_bytes);
	bool has = true;
	if (fmt == WFMT_Q4_K)
		memset(z + 16, 0, 128);
	else if (fmt == WFMT_Q5_K)
		memset(z + 16, 0, 160);
	else if (fmt == WFMT_Q2_K)
		memset(z + 16, 0, 64);
	else if (fmt == WFMT_Q4_1)
		memset(z + 4, 0, 16);
	else if (fmt == WFMT_Q5_1)
		memset(z + 4, 0, 20);
	else if (fmt == WFMT_Q4_Z || fmt == WFMT_Q8_Z || fmt == WFMT_Q4_Z128 || fmt == WFMT_Q8_Z128)
		memset(z + 4, 0, wfmt_table[fmt].block_bytes - 4);
	else
		has = false;
	for (int j = 0; j < bk; j++)
		m[j] = has ? -ref_dequant(fmt, z, j) : 0;
}

static void make_refs(int fmt, const uint8_t *W, const float *x, const struct cpu_xq *xq, int T, int K, struct refs *r)
{
	int bk = (int)wfmt_table[fmt].block;
	size_t bb = wfmt_table[fmt].block_bytes, row = wfmt_row_bytes(fmt, (uint64_t)K);
	float *w = malloc(sizeof(float) * (size_t)K), *m = malloc(sizeof(float) * (size_t)K);
	for (int n = 0; n < N; n++) {
		for (int b = 0; b < K / bk; b++) {
			const uint8_t *blk = W + (size_t)n * row + (size_t)b * bb;
			for (int j = 0; j < bk; j++)
				w[b * bk + j] = ref_dequant(fmt, blk, j);
			ref_mins(fmt, blk, m + b * bk);
		}
		for (int t = 0; t < T; t++) {
			double q = 0, mag = 0, f = 0, qe = 0;
			for (int k = 0; k < K; k++) {
				double dx = xq->d[t * (K / bk) + k / bk], xh = dx * xq->q[t * K + k];
				q += w[k] * xh;
				mag += (fabs(w[k]) + 2 * fabs(m[k])) * fabs(xh);
				f += (double)w[k] * x[t * K + k];
				qe += fabs(w[k]) * dx * QERR;
			}
			r->q[t * N + n] = q, r->mag[t * N + n] = mag, r->f[t * N + n] = f, r->qe[t * N + n] = qe;
		}
	}
	free(w);
	free(m);
}

/* y[T][N] against the references; bias added to both */
static int check_out(const char *what, int fmt, int isa, const float *y, const struct refs *r, const float *bias, int T,
		     int K)
{
	int bad = 0;
	double tol = (K / 16 + 16) * 0x1p-24;
	for (int t = 0; t < T; t++)
		for (int n = 0; n < N; n++) {
			int i = t * N + n;
			double b = bias ? bias[n] : 0, eq = fabs(y[i] - (r->q[i] + b)), ef = fabs(y[i] - (r->f[i] + b));
			double lq = tol * (r->mag[i] + fabs(b)), lf = lq + r->qe[i];
			if (!(eq <= lq && ef <= lf) && bad++ < 3)
				fprintf(stderr, "%s %s %s K=%d t=%d n=%d: %.9g, want %.9g (err %.3g > %.3g) and %.9g (err %.3g > %.3g)\n",
					what, wfmt_name(fmt), cpu_isa_name(isa), K, t, n, y[i], r->q[i] + b, eq, lq, r->f[i] + b,
					ef, lf);
		}
	return bad;
}

/* kern over the TMAX tokens of xq, T at a time, into y, against the references */
static void run_kernel(const char *what, cpu_qdot_fn kern, int fmt, int isa, const uint8_t *W, size_t row,
		       const struct cpu_xq *xq, int T, int K, const struct refs *r, float *y)
{
	for (int i = 0; i < TMAX * N; i++)
		y[i] = NAN;
	for (int t0 = 0; t0 < TMAX; t0 += T)
		kern(W, row, N, xq, t0, TMAX - t0 < T ? TMAX - t0 : T, y + t0 * N, N);
	CHECK_MSG(check_out(what, fmt, isa, y, r, NULL, TMAX, K) == 0, "%s %s %s T=%d K=%d", what, wfmt_name(fmt),
		  cpu_isa_name(isa), T, K);
}

static void test_quant_formats(void)
{
	static const int Ks[] = {256, 512, 4096 + 256};
	int fmts[WFMT_COUNT], nf = wfmt_sorted(fmts, 0), paths = 0, tiles = 0;
	float *x = malloc(sizeof(float) * TMAX * 4352), *y = malloc(sizeof(float) * TMAX * N), bias[N];
	float *yp[CPU_ISA_COUNT];
	for (int i = 0; i < CPU_ISA_COUNT; i++)
		yp[i] = malloc(sizeof(float) * TMAX * N);
	void *buf = aligned_alloc(64, (cpu_xq_bytes(TMAX, 4352) + 63) / 64 * 64);
	void *ws = aligned_alloc(64, (cpu_matmul_ws_bytes(4352) + 63) / 64 * 64);
	struct refs *r = malloc(sizeof(*r));
	for (int n = 0; n < N; n++)
		bias[n] = nrand();
	for (int f = 0; f < nf; f++) {
		int fmt = fmts[f], bk = (int)wfmt_table[fmt].block;
		if (bk == 1 || !cpu_fmt_supported(fmt) || cpu_fdot_find(fmt, CPU_ISA_PORTABLE))
			continue; /* the float formats (NF4's blocks too): test_float_formats */
		CHECK_MSG(cpu_qdot_find(fmt, CPU_ISA_PORTABLE), "%s: no portable qdot", wfmt_name(fmt));
		for (size_t ki = 0; ki < sizeof(Ks) / sizeof(Ks[0]); ki++) {
			int K = Ks[ki];
			uint8_t *W = rand_blocks(fmt, (size_t)N * (size_t)(K / bk));
			rand_x(x, TMAX, K);
			struct cpu_xq xq;
			cpu_xq_init(&xq, buf, TMAX, K, bk);
			for (int t = 0; t < TMAX; t++)
				cpu_xq_quantize(x + t * K, t, &xq);
			check_quantizer(x, &xq, TMAX, K, bk);
			make_refs(fmt, W, x, &xq, TMAX, K, r);
			size_t row = wfmt_row_bytes(fmt, (uint64_t)K);
			for (int isa = 0; isa < CPU_ISA_COUNT; isa++) {
				cpu_qdot_fn qd = cpu_qdot_find(fmt, isa);
				if (!qd)
					continue;
				paths |= 1 << isa;
				/* the kernel, T tokens at a time for every T, and the prefill tile where fmt has one on
				 * this path; then cpu_matmul on this path */
				for (int T = 1; T <= QDOT_MAX_T; T++) {
					run_kernel("qdot", qd, fmt, isa, W, row, &xq, T, K, r, y);
					if (T == 1)
						memcpy(yp[isa], y, sizeof(float) * TMAX * N);
				}
				cpu_qdot_fn qt = cpu_qtile_find(fmt, isa);
				for (int T = 1; qt && T <= QDOT_MAX_T; T++)
					run_kernel("qtile", qt, fmt, isa, W, row, &xq, T, K, r, y);
				tiles += qt != NULL;
				cpu_qdot_force_isa(isa);
				for (int T = 1; T <= TMAX; T++) {
					cpu_matmul(y, x, W, fmt, bias, WFMT_F32, T, N, K, ws);
					CHECK_MSG(check_out("matmul", fmt, isa, y, r, bias, T, K) == 0, "matmul %s %s T=%d K=%d",
						  wfmt_name(fmt), cpu_isa_name(isa), T, K);
				}
				cpu_qdot_force_isa(-1);
			}
			/* the paths against each other */
			double tol = 2 * (K / 16 + 16) * 0x1p-24;
			for (int isa = 1; isa < CPU_ISA_COUNT; isa++) {
				if (!cpu_qdot_find(fmt, isa))
					continue;
				int bad = 0;
				for (int i = 0; i < TMAX * N; i++)
					bad += !(fabs(yp[isa][i] - yp[0][i]) <= tol * r->mag[i]);
				CHECK_MSG(bad == 0, "%s: %s and portable differ in %d outputs (K=%d)", wfmt_name(fmt),
					  cpu_isa_name(isa), bad, K);
			}
			free(W);
		}
	}
	printf("paths tested:");
	for (int isa = 0; isa < CPU_ISA_COUNT; isa++)
		if (paths & 1 << isa)
			printf(" %s", cpu_isa_name(isa));
	printf(" (best here: %s); prefill tiles tested: %d\n", cpu_isa_name(cpu_qdot_isa()), tiles);
#if defined(__x86_64__) && !defined(FERRY_NO_SIMD)
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
		CHECK_MSG(paths & 1 << CPU_ISA_AVX2, "the CPU has AVX2 but the AVX2 kernels are not built in");
	if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
	    __builtin_cpu_supports("avx512bw"))
		CHECK_MSG(paths & 1 << CPU_ISA_AVX512, "the CPU has AVX-512 VNNI but its kernels are not built in");
	if (paths & 1 << CPU_ISA_AVX2)
		CHECK_MSG(cpu_qtile_find(WFMT_Q4_K, CPU_ISA_AVX2) && cpu_qtile_find(WFMT_Q6_K, CPU_ISA_AVX2),
			  "AVX2 has no Q4_K/Q6_K prefill tile");
#endif
	for (int i = 0; i < CPU_ISA_COUNT; i++)
		free(yp[i]);
	free(x), free(y), free(buf), free(ws), free(r);
}

/* T = 70 crosses a 64-token tile and quantizes on all threads, T = 13 is one odd tile: every output against its
 * own double dot, for Q4_K, Q5_K and Q6_K (the prefill tiles take a whole tile of tokens) on every path */
static void test_tiles(void)
{
	static const int fmts[] = {WFMT_Q4_K, WFMT_Q5_K, WFMT_Q6_K}, Ts[] = {70, 13};
	int K = 4352, Tmax = 70;
	float *x = malloc(sizeof(float) * (size_t)Tmax * (size_t)K), *y = malloc(sizeof(float) * (size_t)Tmax * N);
	void *ws = aligned_alloc(64, (cpu_matmul_ws_bytes(K) + 63) / 64 * 64);
	void *buf = aligned_alloc(64, (cpu_xq_bytes(TMAX, K) + 63) / 64 * 64);
	struct refs *r = malloc(sizeof(*r));
	for (int f = 0; f < 3; f++) {
		int fmt = fmts[f];
		uint8_t *W = rand_blocks(fmt, (size_t)N * (size_t)(K / 256));
		for (int ti = 0; ti < 2; ti++) {
			int T = Ts[ti];
			rand_x(x, T, K);
			for (int isa = 0; isa < CPU_ISA_COUNT; isa++) {
				if (!cpu_qdot_find(fmt, isa))
					continue;
				cpu_qdot_force_isa(isa);
				cpu_matmul(y, x, W, fmt, NULL, 0, T, N, K, ws);
				cpu_qdot_force_isa(-1);
				int bad = 0;
				for (int t0 = 0; t0 < T; t0 += TMAX) {
					int tt = T - t0 < TMAX ? T - t0 : TMAX;
					struct cpu_xq xq;
					cpu_xq_init(&xq, buf, TMAX, K, 256);
					for (int t = 0; t < tt; t++)
						cpu_xq_quantize(x + (size_t)(t0 + t) * (size_t)K, t, &xq);
					make_refs(fmt, W, x + (size_t)t0 * (size_t)K, &xq, tt, K, r);
					bad += check_out("matmul tiles", fmt, isa, y + t0 * N, r, NULL, tt, K);
				}
				CHECK_MSG(bad == 0, "matmul %s %s T=%d: %d outputs off", wfmt_name(fmt), cpu_isa_name(isa), T,
					  bad);
			}
		}
		free(W);
	}
	free(x), free(y), free(ws), free(buf), free(r);
}

/* F32, F16, BF16: the fdot of every path through cpu_matmul, K with a tail of 7; NF4, BNB_FP4 (blocks of 64: K 320)
 * from random blocks, its values from the test's own decoder */
static void test_float_formats(void)
{
	int K = 320 + 7, fmts[] = {WFMT_F32, WFMT_F16, WFMT_BF16, WFMT_NF4, WFMT_BNB_FP4};
	float *x = malloc(sizeof(float) * TMAX * (size_t)K), *y = malloc(sizeof(float) * TMAX * N);
	float *wv = malloc(sizeof(float) * N * (size_t)K);
	void *W = malloc(sizeof(float) * N * (size_t)K), *ws = aligned_alloc(64, (cpu_matmul_ws_bytes(K) + 63) / 64 * 64);
	for (int i = 0; i < TMAX * K; i++)
		x[i] = nrand();
	for (int f = 0; f < (int)(sizeof(fmts) / sizeof(fmts[0])); f++) {
		int fmt = fmts[f];
		bool blocks = fmt == WFMT_NF4 || fmt == WFMT_BNB_FP4;
		K = blocks ? 320 : 327;
		if (blocks) {
			uint8_t *blk = rand_blocks(fmt, (size_t)N * 5);
			memcpy(W, blk, (size_t)N * 5 * wfmt_table[fmt].block_bytes);
			for (int i = 0; i < N * K; i++)
				wv[i] = ref_dequant(fmt, blk + (size_t)(i / 64) * wfmt_table[fmt].block_bytes, i % 64);
			free(blk);
		}
		for (int i = 0; !blocks && i < N * K; i++) {
			float v = nrand();
			if (fmt == WFMT_F32)
				((float *)W)[i] = v;
			else if (fmt == WFMT_F16)
				v = f16_to_f32(((uint16_t *)W)[i] = f32_to_f16(v));
			else
				v = bf16_to_f32(((uint16_t *)W)[i] = f32_to_bf16(v));
			wv[i] = v;
		}
		for (int isa = 0; isa < CPU_ISA_COUNT; isa++) {
			if (!cpu_fdot_find(fmt, isa))
				continue;
			cpu_qdot_force_isa(isa);
			for (int T = 1; T <= TMAX; T++) {
				cpu_matmul(y, x, W, fmt, NULL, 0, T, N, K, ws);
				int bad = 0;
				for (int t = 0; t < T; t++)
					for (int n = 0; n < N; n++) {
						double ref = 0, mag = 0;
						for (int k = 0; k < K; k++) {
							ref += (double)wv[n * K + k] * x[t * K + k];
							mag += fabs((double)wv[n * K + k] * x[t * K + k]);
						}
						bad += !(fabs(y[t * N + n] - ref) <= 1e-5 * mag);
					}
				CHECK_MSG(bad == 0, "fdot %s %s T=%d: %d outputs off", wfmt_name(fmt), cpu_isa_name(isa), T, bad);
			}
			cpu_qdot_force_isa(-1);
		}
	}
	free(x), free(y), free(wv), free(W), free(ws);
}

int main(void)
{
	rng_state = 0x2545f4914f6cdd1dull;
	test_quant_formats();
	test_tiles();
	test_float_formats();
	CHECK_DONE();
}
