/* test_cpu_ops.c: every CPU kernel against a plain double-precision version written here, on fresh random
 * inputs and odd shapes; the f16/bf16 conversions against the compiler's own _Float16 and bit rules; and
 * results identical whatever the thread count. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cpu_ops.h"
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
}

int main(void)
{
	scratch = malloc(sizeof(float) * 4096 * (size_t)(omp_get_max_threads() > 2 ? omp_get_max_threads() : 2));
	test_f16();
	test_matmul();
	test_rmsnorm();
	test_rope();
	test_attention();
	test_swiglu_add();
	test_thread_invariance();
	free(scratch);
	CHECK_DONE();
}
