/* test_cpu_ops.c: every CPU kernel against a plain double-precision version written here, on fresh random
 * inputs and odd shapes; the f16/bf16 conversions against the compiler's own _Float16 and bit rules; the
 * GGUF block dequantization against a per-value version from the ggml formulas (tests/quant_ref.h, bit for
 * bit; the quantized matmul is tests/test_qdot.c's); the KV cache row formats (known answers, round-trip bounds), the Hadamard rotation, and
 * paged kv_store + attention against a dense double-precision attention over the rows read back here, with
 * a quality check of rotated Q8/Q4 against F32; the mixture-of-experts routing, gather and scatter-add; and
 * results identical whatever the thread count. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "quant_ref.h"
#include "kernels/cpu/cpu_ops.h"
#include "layout/wfmt.h"

static float *scratch; /* 4096 floats per thread */
static void *mmws;     /* cpu_matmul's, K <= 4096 */

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
			cpu_matmul(y, x, W, fmt, B, fmt, T, N, K, mmws);
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

/* Every quantized format of src/layout/wfmt_list.h (block > 1), smallest block first, filled by main: a new row
 * is tested at once (and fails until ref_dequant knows it). */
static int quant_fmts[WFMT_COUNT], n_quant_fmts;

/* Every quantized value of fmt's rows from cpu_row_to_f32, bit for bit; cpu_fmt_supported agrees. */
static void test_dequant(void)
{
	for (int f = 0; f < n_quant_fmts; f++) {
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
	CHECK(!cpu_fmt_supported(WFMT_COUNT) && cpu_row_to_f32(WFMT_COUNT, NULL, NULL, 0) == -1);
	CHECK(cpu_row_to_f32(WFMT_NF4, NULL, NULL, 63) == -1); /* not whole blocks */
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

/* The Hadamard rotation: H32 in Sylvester order (entry (i, j) = (-1)^popcount(i & j) / sqrt(32)), its own
 * inverse, norm-preserving. */
static void test_hadamard(void)
{
	float x[64], y[64];
	int bad = 0;
	for (int i = 0; i < 32; i++) {
		memset(x, 0, sizeof(float) * 32);
		x[i] = 1;
		cpu_hadamard32(x, 32);
		for (int j = 0; j < 32; j++)
			bad += fabs(x[j] - (__builtin_popcount((unsigned)(i & j)) & 1 ? -1 : 1) / sqrt(32.0)) > 1e-7;
	}
	CHECK_MSG(bad == 0, "%d entries of H32 wrong", bad);
	double n0 = 0, n1 = 0, dmax = 0;
	for (int i = 0; i < 64; i++)
		x[i] = y[i] = nrand() * 3, n0 += (double)x[i] * x[i];
	cpu_hadamard32(y, 64);
	for (int i = 0; i < 64; i++)
		n1 += (double)y[i] * y[i];
	cpu_hadamard32(y, 64);
	for (int i = 0; i < 64; i++)
		dmax = fmax(dmax, fabs(y[i] - x[i]));
	CHECK_MSG(dmax <= 1e-6 * 3, "H32 twice: max difference %g", dmax);
	CHECK_MSG(fabs(n1 - n0) <= 1e-6 * n0, "H32 norm %g vs %g", n1, n0);
}

/* Row formats: known answers for hand-made groups, and round trips with the error each format allows. */
static void test_kv_rows(void)
{
	uint8_t q[1024];
	uint16_t s[32]; /* Q5 at Dh 256: 48 bytes, A5: 64 */
	float x[256], y[256];
	/* all zeros: scale 0 (Q4: 0 / -8 = -0, as ggml), q 0 (Q4: nibbles 8) */
	memset(x, 0, sizeof(x));
	cpu_kv_row_quant(KV_Q8, x, q, s, 32);
	CHECK(s[0] == 0 && q[0] == 0 && q[31] == 0);
	cpu_kv_row_quant(KV_Q4, x, q, s, 32);
	CHECK(s[0] == 0x8000 && q[0] == 0x88 && q[15] == 0x88);
	cpu_kv_row_dequant(KV_Q4, q, s, y, 32);
	CHECK(y[0] == 0 && y[31] == 0);
	/* Q8: amax 127 gives d = 1 exactly; quotients round half to even */
	float x8[32] = {127, 0.5f, 1.5f, 2.5f, -2.5f, -127, 3.49f, -0.5f};
	cpu_kv_row_quant(KV_Q8, x8, q, s, 32);
	const int8_t want8[8] = {127, 0, 2, 2, -2, -127, 3, 0};
	CHECK(s[0] == 0x3c00 && memcmp(q, want8, 8) == 0 && q[8] == 0);
	/* Q4: m = -8 (the first of -8 and 8) gives d = 1; 8 clamps to nibble 15 (value 7); pairs (i, i + 16) */
	float x4[32] = {-8, 8, 0.5f, 1.5f, 2.5f, -0.5f, 3.2f};
	x4[16] = 5, x4[17] = -3, x4[31] = 6.5f;
	cpu_kv_row_quant(KV_Q4, x4, q, s, 32);
	CHECK(s[0] == 0x3c00);
	CHECK(q[0] == (0 | 13 << 4) && q[1] == (15 | 5 << 4) && q[2] == 0x88 && q[3] == (10 | 8 << 4));
	CHECK(q[4] == (10 | 8 << 4) && q[5] == 0x88 && q[6] == (11 | 8 << 4) && q[15] == (8 | 14 << 4));
	cpu_kv_row_dequant(KV_Q4, q, s, y, 32);
	CHECK(y[0] == -8 && y[1] == 7 && y[3] == 2 && y[16] == 5 && y[17] == -3 && y[31] == 6);
	/* ...and m = 8 first: d = -1, so -8 is the clamped side */
	x4[0] = 8, x4[1] = -8;
	cpu_kv_row_quant(KV_Q4, x4, q, s, 32);
	cpu_kv_row_dequant(KV_Q4, q, s, y, 32);
	CHECK(s[0] == 0xbc00 && y[0] == 8 && y[1] == -7 && y[16] == 5);
	/* Q5 (Q5_0's rule): m = -16 gives d = 1; 16 clamps to code 31 (value 15); the low nibbles paired as Q4's,
	 * the fifth bits after the scales, bit i % 8 of byte i / 8 */
	float x5[32] = {-16, 16, 0.5f, 1.5f, 2.5f, -0.5f, 3.2f};
	x5[16] = 5, x5[17] = -3, x5[31] = 6.5f;
	uint8_t *h5 = (uint8_t *)s + 2;
	cpu_kv_row_quant(KV_Q5, x5, q, s, 32);
	CHECK(s[0] == 0x3c00 && q[0] == 0x50 && q[1] == 0xdf && q[2] == 0x00 && q[3] == 0x02 && q[15] == 0x60);
	CHECK(h5[0] == 0xfe && h5[1] == 0xff && h5[2] == 0xfd && h5[3] == 0xff);
	cpu_kv_row_dequant(KV_Q5, q, s, y, 32);
	CHECK(y[0] == -16 && y[1] == 15 && y[2] == 0 && y[3] == 2 && y[6] == 3 && y[16] == 5 && y[17] == -3 &&
	      y[31] == 6);
	memset(x, 0, sizeof(x));
	cpu_kv_row_quant(KV_Q5, x, q, s, 32);
	cpu_kv_row_dequant(KV_Q5, q, s, y, 32);
	CHECK(s[0] == 0x8000 && q[0] == 0 && h5[0] == 0xff && h5[3] == 0xff && y[0] == 0 && y[31] == 0);

	/* A4 (affine): min -4, max 11 give m = -4, d = 1; codes round((x - m) / d) half to even, unsigned nibbles
	 * paired (i, i + 16); the s part is the step, then the minimum */
	float xa[32] = {-4, 11, -3.5f, -2.5f, 0, 3.2f};
	xa[16] = 5, xa[17] = -1, xa[31] = 6.5f;
	cpu_kv_row_quant(KV_A4, xa, q, s, 32);
	CHECK(s[0] == 0x3c00 && s[1] == 0xc400);
	CHECK(q[0] == 0x90 && q[1] == 0x3f && q[2] == 0x40 && q[3] == 0x42 && q[4] == 0x44 && q[5] == 0x47 &&
	      q[15] == 0xa4);
	cpu_kv_row_dequant(KV_A4, q, s, y, 32);
	CHECK(y[0] == -4 && y[1] == 11 && y[2] == -4 && y[3] == -2 && y[5] == 3 && y[16] == 5 && y[17] == -1 &&
	      y[31] == 6);
	/* A5: max 27 gives d = 1; the fifth bits after the step and the minimum, as Q5's */
	xa[1] = 27, xa[16] = 20;
	uint8_t *ha = (uint8_t *)s + 4;
	cpu_kv_row_quant(KV_A5, xa, q, s, 32);
	CHECK(s[0] == 0x3c00 && s[1] == 0xc400 && q[0] == 0x80 && q[1] == 0x3f && q[2] == 0x40 && q[15] == 0xa4);
	CHECK(ha[0] == 0x02 && ha[1] == 0 && ha[2] == 0x01 && ha[3] == 0);
	cpu_kv_row_dequant(KV_A5, q, s, y, 32);
	CHECK(y[0] == -4 && y[1] == 27 && y[2] == -4 && y[16] == 20 && y[17] == -1 && y[31] == 6);
	/* all zeros: step and minimum 0, codes 0 */
	memset(x, 0, sizeof(x));
	for (int f = KV_A4; f <= KV_A5; f++) {
		cpu_kv_row_quant(f, x, q, s, 32);
		cpu_kv_row_dequant(f, q, s, y, 32);
		CHECK(s[0] == 0 && s[1] == 0 && q[0] == 0 && q[15] == 0 && y[0] == 0 && y[31] == 0);
	}

	/* round trips: groups of very different magnitudes (scales normal halves), one outlier each */
	int bad[KV_ROW_COUNT] = {0};
	for (int it = 0; it < 200; it++) {
		int Dh = 32 << (it % 4);
		for (int gr = 0; gr < Dh / 32; gr++) {
			float mag = (float)pow(2, (int)(urand() * 16) - 6);
			for (int i = 0; i < 32; i++) /* every third row offset (what the affine rows are for) */
				x[gr * 32 + i] = nrand() * mag + (it % 3 == 0 ? 4 * mag : 0);
			x[gr * 32 + (int)(urand() * 32)] *= 8;
		}
		for (int fmt = 0; fmt < KV_ROW_COUNT; fmt++) {
			float xs[256];
			memcpy(xs, x, sizeof(x));
			if (fmt == KV_F16) /* values a half holds come back exactly */
				for (int i = 0; i < Dh; i++)
					xs[i] = f16_to_f32(f32_to_f16(x[i]));
			cpu_kv_row_quant(fmt, xs, q, s, Dh);
			cpu_kv_row_dequant(fmt, q, s, y, Dh);
			for (int i = 0; i < Dh; i++) {
				int gr = i / 32;
				float amax = 0, m = 0, lo = xs[gr * 32], hi = lo;
				for (int j = 0; j < 32; j++) {
					amax = fmaxf(amax, fabsf(xs[gr * 32 + j]));
					m = fabsf(xs[gr * 32 + j]) > fabsf(m) ? xs[gr * 32 + j] : m;
					lo = fminf(lo, xs[gr * 32 + j]), hi = fmaxf(hi, xs[gr * 32 + j]);
				}
				double d = fabs(f16_to_f32(s[gr])), err = fabs((double)y[i] - xs[i]), lim = 0;
				if (fmt == KV_Q8) {
					lim = d / 2;
					bad[fmt] += s[gr] != f32_to_f16(amax / 127.0f);
				} else if (fmt == KV_Q4) {
					lim = xs[i] / f16_to_f32(s[gr]) > 7.5 ? d : d / 2;
					bad[fmt] += s[gr] != f32_to_f16(m / -8.0f);
				} else if (fmt == KV_Q5) {
					lim = xs[i] / f16_to_f32(s[gr]) > 15.5 ? d : d / 2;
					bad[fmt] += s[gr] != f32_to_f16(m / -16.0f);
				} else if (fmt == KV_A4 || fmt == KV_A5) { /* half a step, plus the minimum's rounding */
					float mh = f16_to_f32(s[Dh / 32 + gr]);
					lim = d / 2 + fabs((double)mh - lo);
					bad[fmt] += s[Dh / 32 + gr] != f32_to_f16(lo) ||
						    s[gr] != f32_to_f16((hi - mh) / (fmt == KV_A4 ? 15.0f : 31.0f));
				}
				bad[fmt] += !(err <= lim * (1 + 1e-5) + 1e-6 * fabs(xs[i]));
			}
		}
	}
	for (int fmt = 0; fmt < KV_ROW_COUNT; fmt++)
		CHECK_MSG(bad[fmt] == 0, "kv row format %s: %d values outside the round-trip bound", kv_fmt_name(fmt),
			  bad[fmt]);
}

/* A paged layer for the tests: sequences s with kv_hist[s] positions stored before the range and kv_new[s]
 * in it, page-table row kv_rowof[s], the physical pages of all sequences shuffled over the pool, unwritten
 * bytes 0xff (NaN in every format, so reading a row never written shows). */
#define KV_NSEQ 3
#define KV_MAX_PAGES 8
static const int kv_hist[KV_NSEQ] = {70, 300, 0}, kv_new[KV_NSEQ] = {8, 1, 12}, kv_rowof[KV_NSEQ] = {1, 2, 0};
static const int kv_order[KV_NSEQ] = {1, 0, 2}; /* parts of the range: a decode token, then two prefills */

struct kv_range {
	int T, n_parts, part_t0[KV_NSEQ + 1], part_row[KV_NSEQ], tok_part[512], pos[512], seq[512];
	float *k, *v; /* [T, Hkv*Dh] */
};

/* The row (h, position p) of sequence s in pool w (0 keys, 1 values) as the test reads the layout of
 * src/kernels/kv_pages.h. */
static uint8_t *kv_test_row(const struct kv_layer *kv, int w, const int *table, int s, int h, int p, uint8_t **sc)
{
	int phys = table[kv_rowof[s] * KV_MAX_PAGES + p / kv->page], r = p % kv->page, rf = kv_pool_fmt(kv->fmt, w);
	size_t qrow = (size_t)kv_qrow_bytes(rf, kv->Dh), srow = (size_t)kv_srow_bytes(rf, kv->Dh);
	uint8_t *base = (uint8_t *)(w ? kv->v : kv->k) + (size_t)phys * kv_page_bytes(rf, kv->Hkv, kv->Dh, kv->page);
	*sc = base + (size_t)kv->Hkv * kv->page * qrow + ((size_t)h * kv->page + r) * srow;
	return base + ((size_t)h * kv->page + r) * qrow;
}

/* Positions [from(s), to(s)) of each sequence, in the order `order`, as a range; k, v from the full arrays. */
static void kv_range_build(struct kv_range *rg, const int *order, int hist_part, float *const *K, float *const *V,
			   int kvd)
{
	rg->T = rg->n_parts = 0;
	rg->part_t0[0] = 0;
	rg->k = malloc(sizeof(float) * 512 * (size_t)kvd);
	rg->v = malloc(sizeof(float) * 512 * (size_t)kvd);
	for (int o = 0; o < KV_NSEQ; o++) {
		int s = order[o], p0 = hist_part ? 0 : kv_hist[s], p1 = hist_part ? kv_hist[s] : kv_hist[s] + kv_new[s];
		if (p1 == p0)
			continue;
		for (int p = p0; p < p1; p++, rg->T++) {
			rg->tok_part[rg->T] = rg->n_parts, rg->pos[rg->T] = p, rg->seq[rg->T] = s;
			memcpy(rg->k + (size_t)rg->T * kvd, K[s] + (size_t)p * kvd, sizeof(float) * (size_t)kvd);
			memcpy(rg->v + (size_t)rg->T * kvd, V[s] + (size_t)p * kvd, sizeof(float) * (size_t)kvd);
		}
		rg->part_row[rg->n_parts++] = kv_rowof[s];
		rg->part_t0[rg->n_parts] = rg->T;
	}
}

static struct kv_batch kv_range_batch(const struct kv_range *rg, const int *table)
{
	struct kv_batch bt = {.T = rg->T, .n_parts = rg->n_parts, .part_t0 = rg->part_t0, .part_row = rg->part_row,
			      .tok_part = rg->tok_part, .pos = rg->pos, .pages = table, .max_pages = KV_MAX_PAGES};
	for (int t = 0; t < rg->T; t++)
		bt.max_pos = rg->pos[t] > bt.max_pos ? rg->pos[t] : bt.max_pos;
	for (int i = 0; i < rg->n_parts; i++)
		bt.max_part = rg->part_t0[i + 1] - rg->part_t0[i] > bt.max_part ? rg->part_t0[i + 1] - rg->part_t0[i]
										      : bt.max_part;
	return bt;
}

/* Softmax attention in double of q[H*Dh] at position p over dense keys/values K, V [pos][Hkv*Dh]. */
static void attention_ref(double *o, const float *q, const float *K, const float *V, int p, int H, int Hkv, int Dh,
			  int window, double scale, const float *sinks)
{
	int g = H / Hkv, kvd = Hkv * Dh, j0 = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
	double *sc = malloc(sizeof(double) * (size_t)(p + 1));
	for (int h = 0; h < H; h++) {
		const float *kh = K + (h / g) * Dh, *vh = V + (h / g) * Dh;
		double mx = -INFINITY, sum = 0;
		for (int j = j0; j <= p; j++) {
			double d = 0;
			for (int i = 0; i < Dh; i++)
				d += (double)q[h * Dh + i] * kh[(size_t)j * kvd + i];
			sc[j] = d * scale;
			mx = fmax(mx, sc[j]);
		}
		if (sinks) /* gpt-oss: the sink logit in the denominator, no value with it */
			mx = fmax(mx, sinks[h]);
		if (sinks)
			sum = exp(sinks[h] - mx);
		for (int j = j0; j <= p; j++)
			sum += sc[j] = exp(sc[j] - mx);
		for (int i = 0; i < Dh; i++)
			o[h * Dh + i] = 0;
		for (int j = j0; j <= p; j++)
			for (int i = 0; i < Dh; i++)
				o[h * Dh + i] += sc[j] / sum * vh[(size_t)j * kvd + i];
	}
	free(sc);
}

/* The affine rows (A4, A5: src/kernels/kv_pages.h) written out here from their definition, in double where
 * the definition does not fix a float step: m = f16(min), d = f16((max - m) / (2^bits - 1)) (f32 division),
 * codes round((x - m) / d) (f32, half to even) clamped to [0, 2^bits - 1], value = code * d + m. */
static void affine_row_ref(const float *x, int bits, double *y, int Dh)
{
	int top = (1 << bits) - 1;
	for (int g = 0; g < Dh; g += 32) {
		float lo = x[g], hi = x[g];
		for (int i = 1; i < 32; i++)
			lo = x[g + i] < lo ? x[g + i] : lo, hi = x[g + i] > hi ? x[g + i] : hi;
		float m = f16_to_f32(f32_to_f16(lo)), d = f16_to_f32(f32_to_f16((hi - m) / (float)top));
		for (int i = 0; i < 32; i++) {
			double c = d == 0 ? 0 : rint((double)((x[g + i] - m) / d));
			c = c < 0 ? 0 : c > top ? top : c;
			y[g + i] = c * (double)d + (double)m;
		}
	}
}

/* cpu_kv_store then cpu_attention on a range of three sequences (mid-sequence prefill chunk, decode at a
 * long position, fresh prefill), against the stored rows read back and dequantized here (and, for F32,
 * against the k and v given; A4, A5: against affine_row_ref of them); the same bytes with 1 and 2 threads
 * and with scratch for only one head.
 * Pages of 128 add attention sinks (gpt-oss), logits in [-2, 6): from nothing to most of the mass. */
static void run_paged(int fmt, int Dh, int g, int window, int page)
{
	int Hkv = 2, H = g * Hkv, kvd = Hkv * Dh, n_pages = 3;
	for (int s = 0; s < KV_NSEQ; s++)
		n_pages += (kv_hist[s] + kv_new[s] + page - 1) / page;
	struct kv_layer kv = {.fmt = fmt, .page = page, .Hkv = Hkv, .Dh = Dh, .n_pages = n_pages};
	size_t pbk = kv_pool_page_bytes(fmt, 0, Hkv, Dh, page), pbv = kv_pool_page_bytes(fmt, 1, Hkv, Dh, page);
	kv.k = malloc(pbk * (size_t)n_pages);
	kv.v = malloc(pbv * (size_t)n_pages);
	memset(kv.k, 0xff, pbk * (size_t)n_pages);
	memset(kv.v, 0xff, pbv * (size_t)n_pages);
	int perm[64], table[KV_NSEQ * KV_MAX_PAGES], next = 0;
	for (int i = 0; i < n_pages; i++)
		perm[i] = i;
	for (int i = n_pages - 1; i > 0; i--) {
		int j = (int)(urand() * (i + 1)), tmp = perm[i];
		perm[i] = perm[j], perm[j] = tmp;
	}
	for (int i = 0; i < KV_NSEQ * KV_MAX_PAGES; i++)
		table[i] = -1;
	float *K[KV_NSEQ], *V[KV_NSEQ];
	for (int s = 0; s < KV_NSEQ; s++) {
		int n = kv_hist[s] + kv_new[s];
		for (int lp = 0; lp * page < n; lp++)
			table[kv_rowof[s] * KV_MAX_PAGES + lp] = perm[next++];
		K[s] = malloc(sizeof(float) * (size_t)n * kvd);
		V[s] = malloc(sizeof(float) * (size_t)n * kvd);
		for (int i = 0; i < n * kvd; i++) /* uniform: Gaussians would cost most of the test's time */
			K[s][i] = (float)(4 * urand() - 2), V[s][i] = (float)(4 * urand() - 2);
	}
	struct kv_range hist, rg;
	static const int seq_order[KV_NSEQ] = {0, 1, 2};
	kv_range_build(&hist, seq_order, 1, K, V, kvd);
	struct kv_batch hb = kv_range_batch(&hist, table);
	cpu_kv_store(&kv, hist.k, hist.v, &hb);
	/* a window lets the cache release the pages no query of the range sees any more */
	for (int s = 0; s < KV_NSEQ && window > 0; s++)
		for (int lp = 0; (lp + 1) * page - 1 < kv_hist[s] - window + 1; lp++) {
			int *e = &table[kv_rowof[s] * KV_MAX_PAGES + lp];
			memset((uint8_t *)kv.k + (size_t)*e * pbk, 0xff, pbk);
			memset((uint8_t *)kv.v + (size_t)*e * pbv, 0xff, pbv);
			*e = -1;
		}
	kv_range_build(&rg, kv_order, 0, K, V, kvd);
	struct kv_batch bt = kv_range_batch(&rg, table);
	cpu_kv_store(&kv, rg.k, rg.v, &bt);

	/* every mapped row holds exactly cpu_kv_row_quant of its values, where src/kernels/kv_pages.h puts it */
	int wrong = 0;
	float *Kd[KV_NSEQ], *Vd[KV_NSEQ];
	uint8_t qb[1024], sb[64];
	for (int s = 0; s < KV_NSEQ; s++) {
		int n = kv_hist[s] + kv_new[s];
		Kd[s] = calloc((size_t)n * kvd, sizeof(float));
		Vd[s] = calloc((size_t)n * kvd, sizeof(float));
		for (int p = 0; p < n; p++) {
			if (table[kv_rowof[s] * KV_MAX_PAGES + p / page] < 0)
				continue;
			for (int h = 0; h < Hkv; h++)
				for (int w = 0; w < 2; w++) {
					int rf = kv_pool_fmt(fmt, w);
					size_t qrow = (size_t)kv_qrow_bytes(rf, Dh), srow = (size_t)kv_srow_bytes(rf, Dh);
					uint8_t *sp, *qp = kv_test_row(&kv, w, table, s, h, p, &sp);
					const float *src = (w ? V[s] : K[s]) + (size_t)p * kvd + h * Dh;
					cpu_kv_row_quant(rf, src, qb, sb, Dh);
					wrong += memcmp(qb, qp, qrow) != 0 || memcmp(sb, sp, srow) != 0;
					float *dst = (w ? Vd[s] : Kd[s]) + (size_t)p * kvd + h * Dh;
					cpu_kv_row_dequant(rf, qp, sp, dst, Dh);
					if (rf == KV_A4 || rf == KV_A5) { /* the reference is the definition's values */
						double yr[256];
						affine_row_ref(src, rf == KV_A4 ? 4 : 5, yr, Dh);
						for (int i = 0; i < Dh; i++) {
							wrong += !(fabs(dst[i] - yr[i]) <= 1e-6 * (fabs(yr[i]) + 1));
							dst[i] = (float)yr[i];
						}
					}
				}
		}
	}
	CHECK_MSG(wrong == 0, "fmt %s Dh %d page %d: %d stored rows differ", kv_fmt_name(fmt), Dh, page, wrong);

	size_t n_out = (size_t)rg.T * H * Dh;
	float *q = malloc(sizeof(float) * n_out), *out = malloc(sizeof(float) * n_out);
	float *out1 = malloc(sizeof(float) * n_out), *out2 = malloc(sizeof(float) * n_out);
	double *ref = malloc(sizeof(double) * n_out);
	for (size_t i = 0; i < n_out; i++)
		q[i] = (float)(4 * urand() - 2);
	float scale = 1 / sqrtf((float)Dh), sink_v[16];
	for (int h = 0; h < H; h++)
		sink_v[h] = (float)(8 * urand() - 2);
	const float *sinks = page == 128 ? sink_v : NULL;
	int64_t per = cpu_attention_scratch(bt.max_pos + 1, Dh);
	int nth = omp_get_max_threads() > 2 ? omp_get_max_threads() : 2;
	float *scr = malloc(sizeof(float) * (size_t)per * (size_t)nth);
	omp_set_num_threads(2);
	cpu_attention(out, q, &kv, &bt, H, window, scale, sinks, scr, per);
	if (page == 64 || Dh == 64) { /* some of the cases are enough for this */
		omp_set_num_threads(1);
		cpu_attention(out1, q, &kv, &bt, H, window, scale, sinks, scr, per);
		omp_set_num_threads(2);
		int n_max = window > 0 && window < bt.max_pos + 1 ? window : bt.max_pos + 1;
		cpu_attention(out2, q, &kv, &bt, H, window, scale, sinks, scr, n_max + Dh);
		CHECK_MSG(memcmp(out, out1, sizeof(float) * n_out) == 0 && memcmp(out, out2, sizeof(float) * n_out) == 0,
			  "fmt %d Dh %d g %d: attention depends on threads or head grouping", fmt, Dh, g);
	}
	omp_set_num_threads(nth);
	for (int t = 0; t < rg.T; t++) {
		int s = rg.seq[t];
		attention_ref(ref + (size_t)t * H * Dh, q + (size_t)t * H * Dh, fmt == KV_F32 ? K[s] : Kd[s],
			      fmt == KV_F32 ? V[s] : Vd[s], rg.pos[t], H, Hkv, Dh, window, scale, sinks);
	}
	double e = rel_err(out, ref, n_out);
	CHECK_MSG(e < 1e-5, "paged attention fmt %s Dh %d g %d window %d page %d%s: rel err %g", kv_fmt_name(fmt), Dh,
		  g, window, page, sinks ? " sinks" : "", e);
	for (int s = 0; s < KV_NSEQ; s++)
		free(K[s]), free(V[s]), free(Kd[s]), free(Vd[s]);
	free(hist.k), free(hist.v), free(rg.k), free(rg.v);
	free(kv.k), free(kv.v), free(q), free(out), free(out1), free(out2), free(ref), free(scr);
}

static void test_paged_attention(void)
{
	static const int dhs[4] = {32, 64, 128, 256}, gs[3] = {1, 2, 4};
	for (int fmt = 0; fmt < KV_FMT_COUNT; fmt++)
		for (int d = 0; d < 4; d++)
			for (int gi = 0; gi < 3; gi++)
				for (int w = 0; w < 2; w++)
					for (int pg = 64; pg <= 128; pg += 64)
						run_paged(fmt, dhs[d], gs[gi], w ? 40 : 0, pg);
}

/* Causal attention of one sequence (T = n tokens, Dh 128, one head) with the cache in format fmt, q, k, v
 * rotated by H32 first (and the output back) or not. */
static void quality_run(float *out, int fmt, bool rotate, const float *q0, const float *k0, const float *v0, int n)
{
	int Dh = 128, zero = 0, part_t0[2] = {0, n}, table[16], tok[256], pos[256];
	struct kv_layer kv = {.fmt = fmt, .page = 64, .Hkv = 1, .Dh = Dh, .n_pages = n / 64};
	size_t sz = (size_t)n * Dh;
	kv.k = malloc(kv_pool_page_bytes(fmt, 0, 1, Dh, 64) * (size_t)kv.n_pages);
	kv.v = malloc(kv_pool_page_bytes(fmt, 1, 1, Dh, 64) * (size_t)kv.n_pages);
	for (int i = 0; i < kv.n_pages; i++)
		table[i] = i;
	for (int t = 0; t < n; t++)
		tok[t] = 0, pos[t] = t;
	struct kv_batch bt = {.T = n, .n_parts = 1, .part_t0 = part_t0, .part_row = &zero, .tok_part = tok, .pos = pos,
			      .pages = table, .max_pages = 16, .max_pos = n - 1, .max_part = n};
	float *q = malloc(sizeof(float) * sz), *k = malloc(sizeof(float) * sz), *v = malloc(sizeof(float) * sz);
	memcpy(q, q0, sizeof(float) * sz), memcpy(k, k0, sizeof(float) * sz), memcpy(v, v0, sizeof(float) * sz);
	if (rotate)
		cpu_hadamard32(q, (int64_t)sz), cpu_hadamard32(k, (int64_t)sz), cpu_hadamard32(v, (int64_t)sz);
	int64_t per = cpu_attention_scratch(n, Dh);
	float *scr = malloc(sizeof(float) * (size_t)per * (size_t)omp_get_max_threads());
	cpu_kv_store(&kv, k, v, &bt);
	cpu_attention(out, q, &kv, &bt, 1, 0, 1 / sqrtf((float)Dh), NULL, scr, per);
	if (rotate)
		cpu_hadamard32(out, (int64_t)sz);
	free(kv.k), free(kv.v), free(q), free(k), free(v), free(scr);
}

/* ggml's normalized error: sum of squared differences over sum of squares */
static double norm_err(const float *out, const float *ref, size_t n)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++)
		num += ((double)out[i] - ref[i]) * ((double)out[i] - ref[i]), den += (double)ref[i] * ref[i];
	return num / den;
}

/* Q8 and Q4 (rotated, as the model stores them) against F32 on keys and values that are Gaussian with two
 * outlier channels and sporadic outliers: the normalized error of the attention output, and the rotation
 * must help Q4. (The relative RMS error is the square root: about 0.7% for rotated Q8, 13% for rotated Q4.)
 * Then Q5 and the mixed formats (Q8 keys with Q5 or Q4 values), rotated, ordered between them. */
static void test_kv_quality(void)
{
	int n = 256, Dh = 128;
	size_t sz = (size_t)n * Dh;
	float *q = malloc(sizeof(float) * sz), *k = malloc(sizeof(float) * sz), *v = malloc(sizeof(float) * sz);
	float *ref = malloc(sizeof(float) * sz), *out = malloc(sizeof(float) * sz);
	rng_state = 88172645463325252ull; /* its own data, whatever ran before: the bounds below are for this draw */
	for (size_t i = 0; i < sz; i++) {
		int c = (int)(i % (size_t)Dh);
		q[i] = nrand(), v[i] = nrand();
		k[i] = nrand() * (c == 5 || c == 77 ? 8 : 1);
		if (urand() < 0.01)
			k[i] *= 10, v[i] *= 10;
	}
	quality_run(ref, KV_F32, false, q, k, v, n);
	double e[2][2]; /* normalized error (ggml's: sum of squared differences over sum of squares), [q8, q4][plain, rotated] */
	for (int f = 0; f < 2; f++)
		for (int r = 0; r < 2; r++) {
			quality_run(out, f ? KV_Q4 : KV_Q8, r, q, k, v, n);
			e[f][r] = norm_err(out, ref, sz);
		}
	/* the 5-bit and mixed formats, rotated: Q5's step is half Q4's (about a quarter of the error); Q8 keys
	 * with Q5 or Q4 values lose less than the values' format on both */
	double e5 = 0, ek[2] = {0, 0};
	for (int f = 0; f < 3; f++) {
		quality_run(out, f == 0 ? KV_Q5 : f == 1 ? KV_K8V5 : KV_K8V4, true, q, k, v, n);
		*(f == 0 ? &e5 : &ek[f - 1]) = norm_err(out, ref, sz);
	}
	printf("kv quality, attention output vs f32, normalized error: q8 %.3g, rotated %.3g; q4 %.3g, rotated %.3g; "
	       "rotated: q5 %.3g, k8v5 %.3g, k8v4 %.3g\n", e[0][0], e[0][1], e[1][0], e[1][1], e5, ek[0], ek[1]);
	CHECK_MSG(e5 < e[1][1] / 2 && e5 > e[0][1], "q5 rotated: error %g (q8 %g, q4 %g)", e5, e[0][1], e[1][1]);
	CHECK_MSG(ek[0] < e5 && ek[0] > e[0][1], "k8v5: error %g (q5 %g, q8 %g)", ek[0], e5, e[0][1]);
	CHECK_MSG(ek[1] < e[1][1] && ek[1] > ek[0], "k8v4: error %g (q4 %g, k8v5 %g)", ek[1], e[1][1], ek[0]);
	CHECK_MSG(e[0][1] < 1e-3, "q8 rotated: error %g", e[0][1]);
	CHECK_MSG(e[1][1] < 5e-2, "q4 rotated: error %g", e[1][1]);
	CHECK_MSG(e[1][1] < e[1][0], "rotation does not help q4: %g rotated, %g not", e[1][1], e[1][0]);
	/* keys whose channels carry offsets (as real models' do, e.g. Gemma 3's): the affine rows beat the
	 * symmetric ones of the same bits, and ka5v4 (a5 keys, q4 values) lies between k8v4 and q4 */
	for (size_t i = 0; i < sz; i++) {
		int c = (int)(i % (size_t)Dh);
		k[i] += (float)(c % 5 == 0 ? 4 - c % 7 : 0);
	}
	double ea[4];
	static const int fa[4] = {KV_Q5, KV_A5, KV_K8V4, KV_KA5V4};
	quality_run(ref, KV_F32, false, q, k, v, n);
	for (int f = 0; f < 4; f++) {
		quality_run(out, fa[f], true, q, k, v, n);
		ea[f] = norm_err(out, ref, sz);
	}
	quality_run(out, KV_Q4, true, q, k, v, n);
	double e4 = norm_err(out, ref, sz);
	printf("kv quality, keys with channel offsets: q5 %.3g, a5 %.3g; q4 %.3g, k8v4 %.3g, ka5v4 %.3g\n", ea[0], ea[1],
	       e4, ea[2], ea[3]);
	CHECK_MSG(ea[1] < ea[0], "a5: error %g, q5 %g", ea[1], ea[0]);
	CHECK_MSG(ea[3] > ea[2] && ea[3] < e4, "ka5v4: error %g (k8v4 %g, q4 %g)", ea[3], ea[2], e4);
	free(q), free(k), free(v), free(ref), free(out);
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

/* gpt-oss's clamped SwiGLU against its definition in double (transformers' GptOssExperts): inputs up to
 * about +-20 so both clamps are taken on either side. */
static void test_swiglu_oai(void)
{
	enum { N = 257 };
	float g[N], u[N], y[N];
	double ref[N];
	int clamped = 0;
	for (int i = 0; i < N; i++) {
		g[i] = nrand() * 8, u[i] = nrand() * 8;
		double gc = fmin(g[i], 7.0), uc = fmin(fmax(u[i], -7.0), 7.0);
		clamped += g[i] > 7 || fabs(u[i]) > 7;
		ref[i] = gc / (1 + exp(-1.702 * gc)) * (uc + 1);
	}
	cpu_swiglu_oai(y, g, u, N);
	CHECK_MSG(clamped > 10, "only %d inputs reach the clamps", clamped);
	CHECK_MSG(rel_err(y, ref, N) < 1e-6, "swiglu_oai: rel err %g", rel_err(y, ref, N));
}

/* The mixture-of-experts ops against a version written here: the chosen experts by sorting (descending
 * logit, ties by the lower id: a stable order of its own) with the weights in double (softmax over all E,
 * or over the chosen K when norm), on random logits and on logits with many ties; gather and weighted
 * scatter-add of rows in a random order. */
/* perm[0 .. n) a random permutation of 0 .. n - 1 */
static void rand_perm(int *perm, int n)
{
	for (int i = 0; i < n; i++)
		perm[i] = i;
	for (int i = n - 1; i > 0; i--) {
		int j = rand() % (i + 1), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
}

/* cpu_gather_cols (act-order weights' input order) against direct indexing: a random permutation of K
 * columns (f32 indices) over T rows, T * K past the threading threshold too. */
static void test_gather_cols(void)
{
	const int shapes[][2] = {{1, 32}, {3, 2085}, {64, 4096}};
	for (size_t c = 0; c < sizeof(shapes) / sizeof(shapes[0]); c++) {
		int T = shapes[c][0], K = shapes[c][1];
		float *x = malloc(sizeof(float) * (size_t)T * K), *y = malloc(sizeof(float) * (size_t)T * K);
		float *pf = malloc(sizeof(float) * (size_t)K);
		int *perm = malloc(sizeof(int) * (size_t)K);
		rand_perm(perm, K);
		for (int i = 0; i < K; i++)
			pf[i] = (float)perm[i];
		for (int i = 0; i < T * K; i++)
			x[i] = nrand();
		cpu_gather_cols(y, x, pf, T, K);
		int bad = 0;
		for (int t = 0; t < T; t++)
			for (int j = 0; j < K; j++)
				bad += memcmp(&y[(size_t)t * K + j], &x[(size_t)t * K + perm[j]], sizeof(float)) != 0;
		CHECK_MSG(bad == 0, "gather_cols T=%d K=%d: %d values differ", T, K, bad);
		free(x);
		free(y);
		free(pf);
		free(perm);
	}
}

static void test_moe(void)
{
	const int shapes[][3] = {{1, 4, 1}, {5, 8, 2}, {19, 128, 8}, {3, 6, 6}, {64, 16, 4}};
	for (size_t c = 0; c < sizeof(shapes) / sizeof(shapes[0]); c++)
		for (int ties = 0; ties < 2; ties++)
			for (int norm = 0; norm < 2; norm++) {
				int T = shapes[c][0], E = shapes[c][1], K = shapes[c][2];
				float *l = malloc(sizeof(float) * (size_t)(T * E)), *w = malloc(sizeof(float) * (size_t)(T * K));
				int *id = malloc(sizeof(int) * (size_t)(T * K)), *ord = malloc(sizeof(int) * (size_t)E);
				for (int i = 0; i < T * E; i++)
					l[i] = ties ? (float)(rand() % 5) * 0.5f : nrand() * 3;
				cpu_moe_route(id, w, l, T, E, K, norm);
				bool ids_ok = true;
				double err = 0;
				for (int t = 0; t < T; t++) {
					const float *r = l + (size_t)t * E;
					for (int e = 0; e < E; e++) /* insertion sort: larger first, equal keeps id order */
						for (int j = e; j >= 0; j--) {
							if (j == 0 || r[ord[j - 1]] >= r[e]) {
								memmove(ord + j + 1, ord + j, sizeof(int) * (size_t)(e - j));
								ord[j] = e;
								break;
							}
						}
					double mx = r[ord[0]], all = 0, top = 0;
					for (int e = 0; e < E; e++)
						all += exp((double)r[e] - mx);
					for (int k = 0; k < K; k++)
						top += exp((double)r[ord[k]] - mx);
					for (int k = 0; k < K; k++) {
						ids_ok &= id[t * K + k] == ord[k];
						double want = exp((double)r[ord[k]] - mx) / (norm ? top : all);
						err = fmax(err, fabs(w[t * K + k] - want) / want);
					}
				}
				CHECK_MSG(ids_ok, "moe route T=%d E=%d K=%d ties=%d: experts differ", T, E, K, ties);
				CHECK_MSG(err < 1e-5, "moe route T=%d E=%d K=%d norm=%d: weight rel err %.2g", T, E, K, norm, err);
				free(l);
				free(w);
				free(id);
				free(ord);
			}
	enum { R = 40, D = 37, N = 17 };
	float x[R * D], y[R * D], src[N * D], got[N * D], wt[N];
	double ref[R * D];
	int rows[N], perm[R];
	rand_perm(perm, R);
	for (int i = 0; i < R * D; i++) {
		x[i] = nrand();
		y[i] = nrand();
		ref[i] = y[i];
	}
	for (int i = 0; i < N; i++) {
		rows[i] = perm[i];
		wt[i] = nrand();
		for (int d = 0; d < D; d++) {
			src[i * D + d] = nrand();
			ref[rows[i] * D + d] += (double)wt[i] * src[i * D + d];
		}
	}
	cpu_gather_rows(got, x, rows, N, D);
	bool same = true;
	for (int i = 0; i < N; i++)
		same &= !memcmp(got + i * D, x + rows[i] * D, sizeof(float) * D);
	CHECK_MSG(same, "gather_rows: a row differs");
	cpu_scatter_add(y, src, rows, wt, N, D);
	CHECK_MSG(rel_err(y, ref, R * D) < 1e-7, "scatter_add: rel err %.2g", rel_err(y, ref, R * D));
}

/* The same matmul with 1 and with 2 threads must agree bit for bit. */
static void test_thread_invariance(void)
{
	int T = 7, N = 50, K = 70;
	float *wv = malloc(sizeof(float) * (size_t)(N * K));
	void *W = make_weights(WFMT_BF16, wv, (size_t)(N * K));
	float x[7 * 70], y1[7 * 50], y2[7 * 50];
	for (int i = 0; i < T * K; i++)
		x[i] = nrand();
	omp_set_num_threads(1);
	cpu_matmul(y1, x, W, WFMT_BF16, NULL, 0, T, N, K, mmws);
	omp_set_num_threads(2);
	cpu_matmul(y2, x, W, WFMT_BF16, NULL, 0, T, N, K, mmws);
	CHECK(memcmp(y1, y2, sizeof(y1)) == 0);
	free(wv);
	free(W);
	/* quantized: the fused decode path (T = 1, 3) and the row-buffer path (T = 7) */
	for (int f = 0; f < n_quant_fmts; f++) {
		int fmt = quant_fmts[f], Kq = 2 * (int)wfmt_table[fmt].block;
		uint8_t *Wq = rand_blocks(fmt, (size_t)N * 2);
		float *xq = malloc(sizeof(float) * 7 * (size_t)Kq), yq1[7 * 50], yq2[7 * 50];
		for (int i = 0; i < 7 * Kq; i++)
			xq[i] = nrand();
		for (int r = 0; r < 3; r++) {
			int Tq = r == 0 ? 1 : r == 1 ? 3 : 7;
			omp_set_num_threads(1);
			cpu_matmul(yq1, xq, Wq, fmt, NULL, 0, Tq, N, Kq, mmws);
			omp_set_num_threads(2);
			cpu_matmul(yq2, xq, Wq, fmt, NULL, 0, Tq, N, Kq, mmws);
			CHECK_MSG(memcmp(yq1, yq2, sizeof(float) * (size_t)(Tq * N)) == 0, "%s T=%d thread variance",
				  wfmt_name(fmt), Tq);
		}
		free(Wq);
		free(xq);
	}
}

int main(void)
{
	int fmts[WFMT_COUNT], n = wfmt_sorted(fmts, 0);
	for (int i = 0; i < n; i++)
		if (wfmt_table[fmts[i]].block > 1)
			quant_fmts[n_quant_fmts++] = fmts[i];
	mmws = aligned_alloc(64, (cpu_matmul_ws_bytes(4096) + 63) / 64 * 64);
	scratch = malloc(sizeof(float) * 4096 * (size_t)(omp_get_max_threads() > 2 ? omp_get_max_threads() : 2));
	test_f16();
	test_matmul();
	test_dequant();
	test_rmsnorm();
	test_rope();
	test_hadamard();
	test_kv_rows();
	test_paged_attention();
	test_kv_quality();
	test_swiglu_add();
	test_swiglu_oai();
	test_moe();
	test_gather_cols();
	test_thread_invariance();
	free(scratch);
	free(mmws);
	CHECK_DONE();
}
