/* test_cpu_ops.c: every CPU kernel against a plain double-precision version written here, on fresh random
 * inputs and odd shapes; the f16/bf16 conversions against the compiler's own _Float16 and bit rules; the
 * GGUF block dequantization against a per-value version written here from the ggml formulas (bit for bit)
 * and the quantized matmul, its AVX2 and portable fused kernels included, against double-precision dots of
 * those values; and results identical whatever the thread count. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cpu_ops.h"
#include "qdot.h"
#include "wfmt.h"

static unsigned long long rng = 88172645463325252ull;

static double urand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) * 0x1.0p-53;
}

static float nrand(void)
{
	return (float)(sqrt(-2 * log(urand() + 1e-300)) * cos(2 * M_PI * urand()));
}

static float *scratch; /* 4096 floats per thread */
#define SCR scratch, 4096

static double rel_err(const float *a, const double *ref, size_t n)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++) {
		if (isnan(a[i]))
			return INFINITY;
		num += (a[i] - ref[i]) * (a[i] - ref[i]);
		den += ref[i] * ref[i];
	}
	return sqrt(num / (den > 0 ? den : 1));
}

static void test_f16(void)
{
	int bad = 0;
	for (uint32_t h = 0; h < 65536; h++) {
		_Float16 x;
		uint16_t hb = (uint16_t)h;
		memcpy(&x, &hb, 2);
		float want = (float)x, got = f16_to_f32(hb);
		if (!(got == want || (isnan(got) && isnan(want))) || (got == 0 && signbit(got) != signbit(want)))
			bad++;
	}
	CHECK_MSG(bad == 0, "%d half values convert wrongly", bad);
	bad = 0;
	for (int i = 0; i < 200000; i++) {
		float f = (float)(nrand() * pow(2, (int)(urand() * 40) - 28));
		_Float16 x = (_Float16)f;
		uint16_t want;
		memcpy(&want, &x, 2);
		if (f32_to_f16(f) != want)
			bad++;
	}
	CHECK_MSG(bad == 0, "%d floats round to half wrongly", bad);
	CHECK(bf16_to_f32(0x3f80) == 1.0f && bf16_to_f32(0xc040) == -3.0f);
	CHECK(f32_to_bf16(1.0f) == 0x3f80 && f32_to_bf16(bf16_to_f32(0x1234)) == 0x1234);
}

/* Weight rows in format fmt from f32 values; also returns the values the format actually holds. */
static void *make_weights(int fmt, float *vals, size_t n)
{
	void *w = malloc(n * 4);
	for (size_t i = 0; i < n; i++) {
		float v = nrand() * 0.5f;
		if (fmt == WFMT_F32) {
			((float *)w)[i] = v;
		} else if (fmt == WFMT_F16) {
			((uint16_t *)w)[i] = f32_to_f16(v);
			v = f16_to_f32(((uint16_t *)w)[i]);
		} else {
			((uint16_t *)w)[i] = f32_to_bf16(v);
			v = bf16_to_f32(((uint16_t *)w)[i]);
		}
		vals[i] = v;
	}
	return w;
}

static void test_matmul(void)
{
	const int shapes[][3] = {{1, 1, 1}, {1, 7, 33}, {3, 65, 17}, {16, 96, 130}, {5, 1, 257}};
	for (int fmt = WFMT_F32; fmt <= WFMT_BF16; fmt++) {
		for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
			int T = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
			float *wv = malloc(sizeof(float) * (size_t)(N * K)), *bv = malloc(sizeof(float) * (size_t)N);
			void *W = make_weights(fmt, wv, (size_t)(N * K));
			void *B = make_weights(fmt, bv, (size_t)N);
			float *x = malloc(sizeof(float) * (size_t)(T * K)), *y = malloc(sizeof(float) * (size_t)(T * N));
			double *ref = malloc(sizeof(double) * (size_t)(T * N));
			for (int i = 0; i < T * K; i++)
				x[i] = nrand();
			for (int i = 0; i < T * N; i++)
				y[i] = NAN; /* poison: every output must be written */
			cpu_matmul(y, x, W, fmt, B, fmt, T, N, K, SCR);
			for (int t = 0; t < T; t++)
				for (int n = 0; n < N; n++) {
					double acc = bv[n];
					for (int k = 0; k < K; k++)
						acc += (double)x[t * K + k] * wv[n * K + k];
					ref[t * N + n] = acc;
				}
			double e = rel_err(y, ref, (size_t)(T * N));
			CHECK_MSG(e < 1e-6, "matmul %s T=%d N=%d K=%d: rel err %g", wfmt_name(fmt), T, N, K, e);
			free(wv), free(bv), free(W), free(B), free(x), free(y), free(ref);
		}
	}
}

static const int quant_fmts[] = {WFMT_Q8_0, WFMT_Q4_0, WFMT_Q5_0, WFMT_Q4_K, WFMT_Q5_K, WFMT_Q6_K};
#define N_QUANT_FMTS (int)(sizeof(quant_fmts) / sizeof(quant_fmts[0]))

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* A random finite half: either sign, 1 in 8 subnormal, otherwise 2^-14 .. 2^2. */
static uint16_t rand_half(void)
{
	uint16_t sign = urand() < 0.5 ? 0x8000 : 0, man = (uint16_t)(urand() * 1024);
	uint16_t exp = urand() < 0.125 ? 0 : (uint16_t)(1 + urand() * 17);
	return (uint16_t)(sign | exp << 10 | man);
}

/* nb blocks of random bytes with random finite f16 scales (d, and dmin for the K-quants with mins) */
static uint8_t *rand_blocks(int fmt, size_t nb)
{
	size_t bb = wfmt_table[fmt].block_bytes;
	uint8_t *p = malloc(nb * bb);
	for (size_t i = 0; i < nb * bb; i++)
		p[i] = (uint8_t)(urand() * 256);
	for (size_t i = 0; i < nb; i++) {
		uint8_t *b = p + i * bb;
		size_t d_at = fmt == WFMT_Q6_K ? 208 : 0;
		uint16_t d = rand_half(), dmin = rand_half();
		memcpy(b + d_at, &d, 2);
		if (fmt == WFMT_Q4_K || fmt == WFMT_Q5_K)
			memcpy(b + 2, &dmin, 2);
	}
	return p;
}

/* Value j of one block, from the byte layout of ggml-common.h and ggml's float order (not the kernels'). */
static float ref_dequant(int fmt, const uint8_t *b, int j)
{
	float d = f16_to_f32(rd16(fmt == WFMT_Q6_K ? b + 208 : b));
	switch (fmt) {
	case WFMT_Q8_0:
		return (float)(int8_t)b[2 + j] * d;
	case WFMT_Q4_0:
		return (float)((j < 16 ? b[2 + j] & 15 : b[2 + j - 16] >> 4) - 8) * d;
	case WFMT_Q5_0: {
		uint32_t qh = (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24;
		int nib = j < 16 ? b[6 + j] & 15 : b[6 + j - 16] >> 4;
		return (float)((nib | (int)((qh >> j) & 1) << 4) - 16) * d;
	}
	case WFMT_Q4_K:
	case WFMT_Q5_K: {
		const uint8_t *s = b + 4, *qs = b + (fmt == WFMT_Q4_K ? 16 : 48), *qh = b + 16;
		int c = j / 64, h = j % 64 / 32, l = j % 32, sub = 2 * c + h, sc, m;
		if (sub < 4) {
			sc = s[sub] & 63, m = s[sub + 4] & 63;
		} else {
			sc = (s[sub + 4] & 15) | (s[sub - 4] >> 6) << 4;
			m = (s[sub + 4] >> 4) | (s[sub] >> 6) << 4;
		}
		int q = h ? qs[32 * c + l] >> 4 : qs[32 * c + l] & 15;
		if (fmt == WFMT_Q5_K && (qh[l] >> sub & 1))
			q += 16;
		float d1 = d * (float)sc, m1 = f16_to_f32(rd16(b + 2)) * (float)m;
		float p = d1 * (float)q;
		return p - m1;
	}
	case WFMT_Q6_K: {
		int half = j / 128, g = j % 128 / 32, l = j % 32;
		const uint8_t *ql = b + 64 * half, *qh = b + 128 + 32 * half;
		int8_t sc = (int8_t)b[192 + 8 * half + l / 16 + 2 * g];
		int low = g & 1 ? ql[l + 32] : ql[l];
		low = g & 2 ? low >> 4 : low & 15;
		int q = (low | (qh[l] >> (2 * g) & 3) << 4) - 32;
		return d * (float)sc * (float)q;
	}
	}
	return NAN;
}

/* Every quantized value of fmt's rows from cpu_row_to_f32, bit for bit; cpu_fmt_supported agrees. */
static void test_dequant(void)
{
	for (int f = 0; f < N_QUANT_FMTS; f++) {
		int fmt = quant_fmts[f], bk = (int)wfmt_table[fmt].block, bb = (int)wfmt_table[fmt].block_bytes;
		size_t nb = 2000;
		uint8_t *q = rand_blocks(fmt, nb);
		float *y = malloc(sizeof(float) * nb * (size_t)bk);
		CHECK(cpu_fmt_supported(fmt));
		CHECK(cpu_row_to_f32(fmt, q, y, (int64_t)(nb * (size_t)bk)) == 0);
		CHECK(cpu_row_to_f32(fmt, q, y, bk + 1) == -1);
		int bad = 0;
		for (size_t i = 0; i < nb; i++)
			for (int j = 0; j < bk; j++) {
				float want = ref_dequant(fmt, q + i * (size_t)bb, j), got = y[i * (size_t)bk + (size_t)j];
				if (memcmp(&want, &got, 4) != 0 && bad++ < 5)
					fprintf(stderr, "%s block %zu value %d: %a, want %a\n", wfmt_name(fmt), i, j, got, want);
			}
		CHECK_MSG(bad == 0, "%s: %d values differ from ggml's", wfmt_name(fmt), bad);
		free(q);
		free(y);
	}
	CHECK(!cpu_fmt_supported(WFMT_NF4) && cpu_row_to_f32(WFMT_NF4, NULL, NULL, 0) == -1);
}

/* |y - ref| <= tol * sum |w x| for every output (a bound that holds for any f32 summation order at this K),
 * and the f32 result is finite */
static int dot_errors(const char *what, int fmt, const float *y, const double *ref, const double *mag, int n,
		      double tol)
{
	int bad = 0;
	for (int i = 0; i < n; i++)
		if (!(fabs(y[i] - ref[i]) <= tol * mag[i]) && bad++ < 3)
			fprintf(stderr, "%s %s: out %d = %.9g, want %.9g (scale %g)\n", what, wfmt_name(fmt), i, y[i],
				ref[i], mag[i]);
	return bad;
}

/* cpu_matmul (and the fused kernels directly, AVX2 and portable) on random blocks against double dots of the
 * reference values: T = 1, 2, 3, 5, 17; odd N; K of 1, 2, 3 and more blocks. */
static void test_matmul_quant(void)
{
	const int Ts[] = {1, 2, 3, 5, 17}, nblocks[] = {1, 2, 3, 10};
	for (int f = 0; f < N_QUANT_FMTS; f++) {
		int fmt = quant_fmts[f], bk = (int)wfmt_table[fmt].block, bb = (int)wfmt_table[fmt].block_bytes;
		for (size_t kb = 0; kb < sizeof(nblocks) / sizeof(nblocks[0]); kb++) {
			int N = 33, K = nblocks[kb] * bk, nb = N * nblocks[kb];
			uint8_t *W = rand_blocks(fmt, (size_t)nb);
			float *wv = malloc(sizeof(float) * (size_t)N * (size_t)K), *bias = malloc(sizeof(float) * (size_t)N);
			for (int i = 0; i < nb; i++)
				for (int j = 0; j < bk; j++)
					wv[(size_t)i * (size_t)bk + (size_t)j] = ref_dequant(fmt, W + (size_t)i * (size_t)bb, j);
			for (int n = 0; n < N; n++)
				bias[n] = nrand();
			for (size_t ti = 0; ti < sizeof(Ts) / sizeof(Ts[0]); ti++) {
				int T = Ts[ti];
				size_t ny = (size_t)T * (size_t)N;
				float *x = malloc(sizeof(float) * (size_t)T * (size_t)K), *y = malloc(sizeof(float) * ny);
				double *ref = malloc(sizeof(double) * ny), *mag = malloc(sizeof(double) * ny);
				for (int i = 0; i < T * K; i++)
					x[i] = nrand();
				for (int t = 0; t < T; t++)
					for (int n = 0; n < N; n++) {
						double acc = 0, m = 0;
						for (int k = 0; k < K; k++) {
							double p = (double)x[t * K + k] * wv[(size_t)n * (size_t)K + (size_t)k];
							acc += p, m += fabs(p);
						}
						ref[t * N + n] = acc + bias[n];
						mag[t * N + n] = m + fabs(bias[n]) + 1e-30;
					}
				for (size_t i = 0; i < ny; i++)
					y[i] = NAN;
				cpu_matmul(y, x, W, fmt, bias, WFMT_F32, T, N, K, SCR);
				CHECK_MSG(dot_errors("matmul", fmt, y, ref, mag, (int)ny, 1e-5) == 0, "matmul %s T=%d N=%d K=%d",
					  wfmt_name(fmt), T, N, K);
				for (int simd = 0; simd <= 1 && T <= QDOT_MAX_T; simd++) {
					cpu_qdot_fn qd = cpu_qdot_find(fmt, simd);
					if (!qd) {
						CHECK_MSG(simd, "%s: no portable fused dot", wfmt_name(fmt));
						continue;
					}
					float *xs = malloc(sizeof(float) * (size_t)T * (size_t)(K / 32)), out[QDOT_MAX_T];
					cpu_qdot_xsums(x, K, T, K, xs);
					for (int n = 0; n < N; n++) {
						qd(W + (size_t)n * wfmt_row_bytes(fmt, (uint64_t)K), x, K, xs, T, K, out);
						for (int t = 0; t < T; t++)
							y[t * N + n] = out[t] + bias[n];
					}
					CHECK_MSG(dot_errors(simd ? "avx2" : "portable", fmt, y, ref, mag, (int)ny, 1e-5) == 0,
						  "fused dot %s (%s) T=%d K=%d", wfmt_name(fmt), simd ? "avx2" : "portable", T, K);
					free(xs);
				}
				free(x), free(y), free(ref), free(mag);
			}
			free(W), free(wv), free(bias);
		}
	}
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && !defined(FERRY_NO_SIMD)
	CHECK_MSG(cpu_qdot_find(WFMT_Q4_K, true) != NULL, "AVX2 build without the AVX2 kernels");
#else
	fprintf(stderr, "note: no AVX2 kernels in this build; only the portable path was tested\n");
#endif
}

static void test_rmsnorm(void)
{
	int T = 3, D = 37;
	float x[3 * 37], w[37], y[3 * 37];
	double ref[3 * 37];
	for (int i = 0; i < T * D; i++)
		x[i] = nrand() * 3;
	for (int i = 0; i < D; i++)
		w[i] = 1 + nrand() * 0.1f;
	cpu_rmsnorm(y, x, w, WFMT_F32, T, D, 1e-5f, scratch);
	for (int t = 0; t < T; t++) {
		double ss = 0;
		for (int i = 0; i < D; i++)
			ss += (double)x[t * D + i] * x[t * D + i];
		for (int i = 0; i < D; i++)
			ref[t * D + i] = x[t * D + i] / sqrt(ss / D + 1e-5) * w[i];
	}
	CHECK(rel_err(y, ref, (size_t)(T * D)) < 1e-6);
}

static void test_rope(void)
{
	int T = 4, Hn = 3, Dh = 10, pos[4] = {0, 5, 17, 1000};
	double inv[5];
	for (int i = 0; i < 5; i++)
		inv[i] = pow(10000.0, -2.0 * i / Dh);
	for (int neox = 0; neox <= 1; neox++) {
		float x[4 * 3 * 10], x0[4 * 3 * 10];
		double ref[4 * 3 * 10];
		for (int i = 0; i < T * Hn * Dh; i++)
			x[i] = x0[i] = nrand();
		cpu_rope(x, T, Hn, Dh, pos, inv, 1.25, neox);
		for (int t = 0; t < T; t++)
			for (int h = 0; h < Hn; h++)
				for (int i = 0; i < Dh / 2; i++) {
					int b = (t * Hn + h) * Dh, a0 = neox ? i : 2 * i, a1 = neox ? i + Dh / 2 : 2 * i + 1;
					double c = cos(pos[t] * inv[i]) * 1.25, s = sin(pos[t] * inv[i]) * 1.25;
					ref[b + a0] = x0[b + a0] * c - x0[b + a1] * s;
					ref[b + a1] = x0[b + a1] * c + x0[b + a0] * s;
				}
		CHECK_MSG(rel_err(x, ref, (size_t)(T * Hn * Dh)) < 1e-6, "rope neox=%d", neox);
	}
}

static void test_attention(void)
{
	int C = 40, H = 6, Hkv = 2, Dh = 12, kvd = Hkv * Dh;
	float *kc = malloc(sizeof(float) * (size_t)(C * kvd)), *vc = malloc(sizeof(float) * (size_t)(C * kvd));
	for (int i = 0; i < C * kvd; i++)
		kc[i] = nrand(), vc[i] = nrand();
	int pos[5] = {0, 1, 13, 38, 39}, T = 5;
	float q[5 * 6 * 12], out[5 * 6 * 12];
	double ref[5 * 6 * 12];
	for (int i = 0; i < T * H * Dh; i++)
		q[i] = nrand();
	for (int window = 0; window <= 7; window += 7) {
		cpu_attention(out, q, kc, vc, pos, T, H, Hkv, Dh, window, 0.3f, SCR);
		for (int t = 0; t < T; t++)
			for (int h = 0; h < H; h++) {
				int p = pos[t], g = h / (H / Hkv);
				double sc[40], mx = -1e300, sum = 0;
				for (int j = 0; j <= p; j++) {
					if (window && p - j >= window) {
						sc[j] = -INFINITY;
						continue;
					}
					double d = 0;
					for (int i = 0; i < Dh; i++)
						d += (double)q[(t * H + h) * Dh + i] * kc[j * kvd + g * Dh + i];
					sc[j] = d * 0.3;
					mx = sc[j] > mx ? sc[j] : mx;
				}
				for (int j = 0; j <= p; j++)
					sum += sc[j] == -INFINITY ? 0 : exp(sc[j] - mx);
				for (int i = 0; i < Dh; i++) {
					double o = 0;
					for (int j = 0; j <= p; j++)
						if (sc[j] != -INFINITY)
							o += exp(sc[j] - mx) / sum * vc[j * kvd + g * Dh + i];
					ref[(t * H + h) * Dh + i] = o;
				}
			}
		CHECK_MSG(rel_err(out, ref, (size_t)(T * H * Dh)) < 1e-5, "attention window %d", window);
	}
	/* kv_store puts rows at their positions */
	float k[2 * 24], v[2 * 24];
	int p2[2] = {3, 9};
	for (int i = 0; i < 48; i++)
		k[i] = (float)i, v[i] = (float)-i;
	cpu_kv_store(kc, vc, k, v, p2, 2, kvd);
	CHECK(kc[3 * kvd] == 0 && kc[9 * kvd + 1] == 25 && vc[9 * kvd + 23] == -47);
	free(kc);
	free(vc);
}

static void test_swiglu_add(void)
{
	float g[9], u[9], y[9], a[9];
	double ref[9], ra[9];
	for (int i = 0; i < 9; i++) {
		g[i] = nrand() * 4, u[i] = nrand();
		ref[i] = g[i] / (1 + exp(-(double)g[i])) * u[i];
		a[i] = u[i];
		ra[i] = (double)u[i] + g[i];
	}
	cpu_swiglu(y, g, u, 9);
	CHECK(rel_err(y, ref, 9) < 1e-6);
	cpu_add(a, g, 9);
	CHECK(rel_err(a, ra, 9) < 1e-7);
}

/* The same matmul and attention with 1 and with 2 threads must agree bit for bit. */
static void test_thread_invariance(void)
{
	int T = 7, N = 50, K = 70;
	float *wv = malloc(sizeof(float) * (size_t)(N * K));
	void *W = make_weights(WFMT_BF16, wv, (size_t)(N * K));
	float x[7 * 70], y1[7 * 50], y2[7 * 50];
	for (int i = 0; i < T * K; i++)
		x[i] = nrand();
	omp_set_num_threads(1);
	cpu_matmul(y1, x, W, WFMT_BF16, NULL, 0, T, N, K, SCR);
	omp_set_num_threads(2);
	cpu_matmul(y2, x, W, WFMT_BF16, NULL, 0, T, N, K, SCR);
	CHECK(memcmp(y1, y2, sizeof(y1)) == 0);
	free(wv);
	free(W);
	/* quantized: the fused decode path (T = 1, 3) and the row-buffer path (T = 7) */
	for (int f = 0; f < N_QUANT_FMTS; f++) {
		int fmt = quant_fmts[f], Kq = 2 * (int)wfmt_table[fmt].block;
		uint8_t *Wq = rand_blocks(fmt, (size_t)N * 2);
		float *xq = malloc(sizeof(float) * 7 * (size_t)Kq), yq1[7 * 50], yq2[7 * 50];
		for (int i = 0; i < 7 * Kq; i++)
			xq[i] = nrand();
		for (int r = 0; r < 3; r++) {
			int Tq = r == 0 ? 1 : r == 1 ? 3 : 7;
			omp_set_num_threads(1);
			cpu_matmul(yq1, xq, Wq, fmt, NULL, 0, Tq, N, Kq, SCR);
			omp_set_num_threads(2);
			cpu_matmul(yq2, xq, Wq, fmt, NULL, 0, Tq, N, Kq, SCR);
			CHECK_MSG(memcmp(yq1, yq2, sizeof(float) * (size_t)(Tq * N)) == 0, "%s T=%d thread variance",
				  wfmt_name(fmt), Tq);
		}
		free(Wq);
		free(xq);
	}
}

int main(void)
{
	scratch = malloc(sizeof(float) * 4096 * (size_t)(omp_get_max_threads() > 2 ? omp_get_max_threads() : 2));
	test_f16();
	test_matmul();
	test_dequant();
	test_matmul_quant();
	test_rmsnorm();
	test_rope();
	test_attention();
	test_swiglu_add();
	test_thread_invariance();
	free(scratch);
	CHECK_DONE();
}
