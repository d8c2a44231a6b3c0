/*
 * test_quantize.c: the quantizers of `ferry convert --quant` (src/convert/quantize.c). For every format, rows
 * of Gaussian values with a few outliers (and rows of zeros, constants, one spike) are quantized, decoded by the
 * CPU kernels' dequantizer (which tests/test_dequant.py checks against gguf-py) and compared with the input:
 *   - the relative RMS error is below the format's bound (measured on this row, where 1 value in 97 is 6x
 *     larger: Q8_0 0.83%, Q6_K 2.47%, Q5_K 4.52%, Q5_1 4.21%, Q5_0 6.68%, Q4_1 8.56%, Q4_K 8.87%, IQ4_NL
 *     10.47%, IQ4_XS 10.60%, Q4_0 13.4%, Q3_K 19.14%, Q2_K 30.04%; the bounds are 1.1x that, a guard against
 *     regressions);
 *   - it is no worse than rounding to the nearest level of the largest value (ggml's reference quantizer for
 *     the 32-blocks, Q3_K/Q6_K per sub-block, IQ4 the table value nearest each x with the largest at -127; for
 *     Q4_1/Q5_1 and the K-quants with mins a plain min/max fit of each block or sub-block), all with unquantized
 *     float scales, so the scale search pays for itself and for the formats' coarse scales;
 *   - an importance weight on a few columns makes those columns' error smaller;
 *   - degenerate rows decode to what they should (zeros to zeros, constants close).
 * Also the mixes (llama.cpp's choices read from its src/llama-quant.cpp): Q4_K_M's more-bits layers, the output
 * matrix and a tied embedding, the 70B attn_v rule, Q4_K_S, Q2_K, Q3_K_S/M/L and IQ4_XS per tensor kind, layer
 * and kv grouping, fallbacks for rows not a multiple of 256 (and of 32); the grid IQ mixes (IQ3_XXS, IQ3_S/M,
 * IQ2_XXS/XS/S/M, IQ1_S/M) likewise and which of them refuse to run without an importance matrix. The grid IQ
 * formats themselves: error bounds and the degenerate rows here; against ggml's quantizer on the same data and
 * weights, and decoded by gguf-py, in tests/test_quant_iq.py.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "check.h"
#include "convert/quantize.h"
#include "kernels/cpu/cpu_ops.h"
#include "layout/layout.h"
#include "layout/quant.h"
#include "layout/wfmt.h"


#define N 4096

static double gauss(struct rng *r)
{
	double u1 = ((double)(rng_next(r) >> 11) + 0.5) / 9007199254740992.0;
	double u2 = (double)(rng_next(r) >> 11) / 9007199254740992.0;
	return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static double rel_rms(const float *a, const float *b, int n, const float *w)
{
	double e = 0, s = 0;
	for (int i = 0; i < n; i++) {
		double wi = w ? w[i] : 1;
		e += wi * (double)(a[i] - b[i]) * (a[i] - b[i]);
		s += wi * (double)b[i] * b[i];
	}
	return sqrt(e / (s > 0 ? s : 1));
}

static const int iq4_table[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* the baseline: nearest level of the block's largest value (the symmetric formats per block or sub-block:
 * ggml's reference quantizer for the 32-blocks; IQ4 the nearest table value with the largest value at -127),
 * plain min/max (the asymmetric ones: Q4_1/Q5_1 with any min, the K-quant sub-blocks with a min <= 0),
 * computed in float and decoded in float (no f16 scales: a baseline that errs in its favour) */
static void baseline(int fmt, const float *x, float *y, int n)
{
	int sub = fmt == WFMT_Q6_K || fmt == WFMT_Q2_K || fmt == WFMT_Q3_K ? 16 : 32;
	for (int b = 0; b < n; b += sub) {
		const float *xb = x + b;
		float *yb = y + b;
		if (fmt == WFMT_Q4_K || fmt == WFMT_Q5_K || fmt == WFMT_Q2_K || fmt == WFMT_Q4_1 || fmt == WFMT_Q5_1) {
			int nmax = fmt == WFMT_Q2_K ? 3 : fmt == WFMT_Q4_K || fmt == WFMT_Q4_1 ? 15 : 31;
			float mn = xb[0], mx = xb[0];
			for (int i = 1; i < sub; i++) {
				mn = xb[i] < mn ? xb[i] : mn;
				mx = xb[i] > mx ? xb[i] : mx;
			}
			mn = mn > 0 && fmt != WFMT_Q4_1 && fmt != WFMT_Q5_1 ? 0 : mn;
			float d = (mx - mn) / nmax;
			for (int i = 0; i < sub; i++) {
				float q = d > 0 ? rintf((xb[i] - mn) / d) : 0;
				q = q < 0 ? 0 : q > nmax ? nmax : q;
				yb[i] = d * q + mn;
			}
			continue;
		}
		float xm = 0;
		for (int i = 0; i < sub; i++)
			xm = fabsf(xb[i]) > fabsf(xm) ? xb[i] : xm;
		if (fmt == WFMT_IQ4_NL || fmt == WFMT_IQ4_XS) {
			float d = xm / -127;
			for (int i = 0; i < sub; i++) {
				int best = 0;
				for (int k = 1; k < 16; k++)
					best = fabsf(d * iq4_table[k] - xb[i]) < fabsf(d * iq4_table[best] - xb[i]) ? k : best;
				yb[i] = d * iq4_table[best];
			}
			continue;
		}
		int qmin = fmt == WFMT_Q8_0 ? -127 : fmt == WFMT_Q4_0 ? -8 : fmt == WFMT_Q5_0 ? -16 : fmt == WFMT_Q3_K ? -4 : -32;
		int qmax = fmt == WFMT_Q8_0 ? 127 : -qmin - 1;
		float d = xm / qmin;
		for (int i = 0; i < sub; i++) {
			float q = d != 0 ? rintf(xb[i] / d) : 0;
			q = q < qmin ? qmin : q > qmax ? qmax : q;
			yb[i] = d * q;
		}
	}
}

/* relative RMS error of the grid IQ formats on this row (quantize_iq.c, without an importance matrix; as the
 * others, the bound is 1.1x the measured) */
#define IQ3S_E 0.1674
#define IQ3XXS_E 0.2143
#define IQ2S_E 0.3499
#define IQ2XS_E 0.3772
#define IQ2XXS_E 0.4939
#define IQ1M_E 0.4773
#define IQ1S_E 0.6230

static bool grid(int f)
{
	return f == WFMT_IQ2_XXS || f == WFMT_IQ2_XS || f == WFMT_IQ2_S || f == WFMT_IQ3_XXS || f == WFMT_IQ3_S ||
	       f == WFMT_IQ1_S || f == WFMT_IQ1_M;
}

/* a grid format's smallest code magnitude over its largest (iq_grids.h; IQ1: 8 g +- 1, g in -1, 0, 1) */
static float grid_min(int f)
{
	return f == WFMT_IQ3_XXS ? 4.0f / 62 : f == WFMT_IQ3_S ? 1.0f / 15 : f == WFMT_IQ1_S || f == WFMT_IQ1_M ? 1.0f / 9
	       : 8.0f / 43;
}

/* the largest sub-scale 2 n + 1 of a grid format (IQ1: 3-bit n) */
static float grid_smax(int f)
{
	return f == WFMT_IQ1_S || f == WFMT_IQ1_M ? 15.0f : 31.0f;
}

int main(void)
{
	static float x[N], y[N], base[N], imp[N];
	static unsigned char buf[N * 2];
	struct rng r;
	rng_seed(&r, 42);
	for (int i = 0; i < N; i++)
		x[i] = (float)(gauss(&r) * (i % 97 == 0 ? 6 : 1));
	const int fmts[] = {WFMT_Q8_0, WFMT_Q6_K, WFMT_Q5_K, WFMT_Q5_0, WFMT_Q4_K, WFMT_Q4_0,
			    WFMT_Q5_1, WFMT_Q4_1, WFMT_IQ4_NL, WFMT_IQ4_XS, WFMT_Q3_K, WFMT_Q2_K,
			    WFMT_IQ3_S, WFMT_IQ3_XXS, WFMT_IQ2_S, WFMT_IQ2_XS, WFMT_IQ2_XXS, WFMT_IQ1_M, WFMT_IQ1_S};
	const double bound[] = {0.0083, 0.0247, 0.0452, 0.0668, 0.0887, 0.1336,
				0.0421, 0.0856, 0.1047, 0.1060, 0.1914, 0.3004,
				IQ3S_E, IQ3XXS_E, IQ2S_E, IQ2XS_E, IQ2XXS_E, IQ1M_E, IQ1S_E};
	for (int k = 0; k < (int)(sizeof(fmts) / sizeof(fmts[0])); k++) {
		int f = fmts[k];
		const char *name = wfmt_name(f);
		CHECK_MSG(quant_supported(f) && quant_row(f, x, NULL, N, buf) == 0, "%s: no quantizer", name);
		CHECK_MSG(cpu_row_to_f32(f, buf, y, N) == 0, "%s: no dequantizer", name);
		baseline(f, x, base, N);
		double e = rel_rms(y, x, N, NULL), eb = rel_rms(base, x, N, NULL);
		printf("%-7s relative RMS error %.4f (bound %.4f)", name, e, 1.1 * bound[k]);
		printf(grid(f) ? "\n" : ", nearest-level baseline %.4f\n", eb);
		CHECK_MSG(e < 1.1 * bound[k], "%s: error %.4f above %.4f", name, e, 1.1 * bound[k]);
		/* the grid formats have no nearest-level baseline: tests/test_quant_iq.py compares them with ggml's */
		CHECK_MSG(grid(f) || e <= eb, "%s: error %.4f worse than the baseline's %.4f", name, e, eb);

		/* importance on every 8th column: those columns come out closer */
		for (int i = 0; i < N; i++)
			imp[i] = i % 8 == 0 ? 50.0f : 1.0f;
		static float yi[N];
		quant_row(f, x, imp, N, buf);
		cpu_row_to_f32(f, buf, yi, N);
		double ew = 0, ewi = 0;
		for (int i = 0; i < N; i += 8) {
			ew += (double)(y[i] - x[i]) * (y[i] - x[i]);
			ewi += (double)(yi[i] - x[i]) * (yi[i] - x[i]);
		}
		CHECK_MSG(ewi < ew, "%s: the important columns' error %.3g is not below %.3g without weights", name, ewi, ew);

		/* degenerate rows */
		static float z[N];
		memset(z, 0, sizeof(z));
		quant_row(f, z, NULL, 256, buf);
		cpu_row_to_f32(f, buf, y, 256);
		int nonzero = 0;
		for (int i = 0; i < 256; i++)
			nonzero += y[i] != 0;
		CHECK_MSG(nonzero == 0, "%s: a row of zeros decodes to %d non-zero values", name, nonzero);
		for (int i = 0; i < 256; i++)
			z[i] = 0.75f;
		quant_row(f, z, NULL, 256, buf);
		cpu_row_to_f32(f, buf, y, 256);
		CHECK_MSG(rel_rms(y, z, 256, NULL) < 0.01, "%s: a constant row decodes with error %.4f", name,
		      rel_rms(y, z, 256, NULL));
		memset(z, 0, sizeof(z));
		z[77] = -3.0f;
		quant_row(f, z, NULL, 256, buf);
		cpu_row_to_f32(f, buf, y, 256);
		/* IQ4 has no zero: its nearest code is 1/127 of the largest. The grid formats: no grid entry pairs
		 * the largest code with the smallest (IQ3_S's neighbour is 1/5 of the spike), the zeros pull the
		 * spike's scale a little, and another sub-block (value 200) has the smallest code of scale 1 */
		float zero_tol = f == WFMT_IQ4_NL || f == WFMT_IQ4_XS ? 3.0f / 127 * 1.01f : grid(f) ? 0.75f : 0.01f;
		float spike_tol = grid(f) ? 0.02f : 0.01f;
		CHECK_MSG(fabsf(y[77] + 3.0f) < spike_tol && fabsf(y[76]) < zero_tol &&
			  (!grid(f) || fabsf(y[200]) < 3.0f * grid_min(f) / grid_smax(f) * 1.01f),
			  "%s: a spike decodes to %g (neighbours %g, %g)", name, y[77], y[76], y[200]);
	}
	CHECK_MSG(quant_row(WFMT_BF16, x, NULL, N, buf) == -1 && quant_row(WFMT_Q4_K, x, NULL, 100, buf) == -1,
	      "a format without a quantizer or a partial block was accepted");

	/* mixes: what llama.cpp's llama_tensor_get_type gives (src/llama-quant.cpp), for a 32-layer model with as
	 * many kv heads as query heads, one with 4 query heads per kv head, and an 80-layer grouped one (its 70B) */
	struct layout_hparams mha = {.n_layers = 32, .n_heads = 32, .n_kv_heads = 32};
	struct layout_hparams gqa = {.n_layers = 32, .n_heads = 32, .n_kv_heads = 8};
	struct layout_hparams big = {.n_layers = 80, .n_heads = 64, .n_kv_heads = 8};
	const struct quant_mix *m = quant_mix_find("q4_k_m");
	CHECK_MSG(m != NULL, "Q4_K_M not found (case-insensitively)");
	if (m) {
		int n6 = 0;
		for (int l = 0; l < 32; l++)
			n6 += quant_mix_pick(m, "attn_v.weight", l, &mha, 4096) == WFMT_Q6_K;
		CHECK_MSG(n6 == 4 + 4 + 8, "Q4_K_M: %d of 32 attn_v layers in Q6_K, llama.cpp's rule gives 16", n6);
		CHECK_MSG(quant_mix_pick(m, "attn_q.weight", 0, &mha, 4096) == WFMT_Q4_K, "Q4_K_M attn_q");
		CHECK_MSG(quant_mix_pick(m, "output.weight", -1, &mha, 4096) == WFMT_Q6_K, "Q4_K_M output");
		CHECK_MSG(quant_mix_pick(m, "ffn_up.weight", 3, &mha, 64) == WFMT_Q5_0, "Q4_K fallback for 64 columns");
		CHECK_MSG(quant_mix_pick(m, "output.weight", -1, &mha, 64) == WFMT_Q8_0, "Q6_K fallback for 64 columns");
		CHECK_MSG(quant_mix_pick(m, "ffn_up.weight", 3, &mha, 40) == WFMT_F16, "fallback for 40 columns");
		CHECK_MSG(quant_mix_pick(m, "token_embd.weight", -1, &mha, 4096) == WFMT_Q4_K, "Q4_K_M untied embedding");
		struct layout_hparams tied = mha;
		tied.tied_embeddings = true;
		CHECK_MSG(quant_mix_pick(m, "token_embd.weight", -1, &tied, 4096) == WFMT_Q6_K, "Q4_K_M tied embedding");
		CHECK_MSG(quant_mix_pick(m, "attn_v.weight", 11, &big, 8192) == WFMT_Q5_K, "Q4_K_M 70B attn_v");
		CHECK_MSG(quant_mix_pick(m, "attn_v.weight", 11, &mha, 8192) == WFMT_Q4_K, "Q4_K_M attn_v layer 11");
		/* with an importance matrix llama.cpp picks otherwise for ffn_down's first eighth (32 layers: 0..3) */
		const struct quant_mix *xs = quant_mix_find("IQ4_XS"), *q40 = quant_mix_find("Q4_0");
		CHECK_MSG(quant_mix_pick_im(xs, "ffn_down.weight", 1, &mha, 4864, false) == WFMT_Q5_K, "IQ4_XS down, no imatrix");
		CHECK_MSG(quant_mix_pick_im(xs, "ffn_down.weight", 1, &mha, 4864, true) == WFMT_IQ4_XS, "IQ4_XS down, imatrix");
		CHECK_MSG(quant_mix_pick_im(q40, "ffn_down.weight", 1, &mha, 4864, true) == WFMT_Q4_1, "Q4_0 down, imatrix");
		CHECK_MSG(quant_mix_pick_im(q40, "ffn_down.weight", 1, &mha, 4864, false) == WFMT_Q4_0, "Q4_0 down, no imatrix");
	}
	/* {mix, tensor, layer, model, columns, format} */
	static const struct {
		const char *mix, *name;
		int layer, model, cols, fmt;
	} picks[] = {
		{"Q4_K_S", "attn_v.weight", 3, 0, 4096, WFMT_Q5_K},  {"Q4_K_S", "attn_v.weight", 4, 0, 4096, WFMT_Q4_K},
		{"Q4_K_S", "ffn_down.weight", 3, 0, 4096, WFMT_Q5_K}, {"Q4_K_S", "ffn_down.weight", 4, 0, 4096, WFMT_Q4_K},
		{"Q2_K", "attn_v.weight", 5, 0, 4096, WFMT_Q3_K},    {"Q2_K", "attn_v.weight", 5, 1, 4096, WFMT_Q4_K},
		{"Q2_K", "attn_v.weight", 5, 2, 8192, WFMT_Q5_K},    {"Q2_K", "ffn_down.weight", 9, 0, 4096, WFMT_Q3_K},
		{"Q2_K", "attn_output.weight", 9, 0, 4096, WFMT_Q3_K}, {"Q2_K", "attn_q.weight", 9, 0, 4096, WFMT_Q2_K},
		{"Q2_K", "ffn_up.weight", 9, 0, 4096, WFMT_Q2_K},    {"Q2_K", "output.weight", -1, 0, 4096, WFMT_Q6_K},
		{"Q2_K", "ffn_up.weight", 9, 0, 64, WFMT_Q4_0},      {"Q2_K", "token_embd.weight", -1, 0, 4096, WFMT_Q2_K},
		{"Q3_K_S", "attn_v.weight", 0, 1, 4096, WFMT_Q3_K},  {"Q3_K_S", "ffn_down.weight", 0, 0, 4096, WFMT_Q3_K},
		{"Q3_K_S", "attn_output.weight", 0, 0, 4096, WFMT_Q3_K}, {"Q3_K_S", "output.weight", -1, 0, 4096, WFMT_Q6_K},
		{"Q3_K_S", "attn_v.weight", 40, 2, 8192, WFMT_Q5_K},
		{"Q3_K_M", "attn_v.weight", 1, 0, 4096, WFMT_Q5_K},  {"Q3_K_M", "attn_v.weight", 2, 0, 4096, WFMT_Q4_K},
		{"Q3_K_M", "ffn_down.weight", 1, 0, 4096, WFMT_Q5_K}, {"Q3_K_M", "ffn_down.weight", 2, 0, 4096, WFMT_Q4_K},
		{"Q3_K_M", "attn_output.weight", 7, 0, 4096, WFMT_Q4_K}, {"Q3_K_M", "attn_k.weight", 7, 0, 4096, WFMT_Q3_K},
		{"Q3_K_M", "ffn_gate.weight", 7, 0, 4096, WFMT_Q3_K},
		{"Q3_K_L", "attn_v.weight", 9, 1, 4096, WFMT_Q5_K},  {"Q3_K_L", "ffn_down.weight", 9, 0, 4096, WFMT_Q5_K},
		{"Q3_K_L", "attn_output.weight", 9, 0, 4096, WFMT_Q5_K}, {"Q3_K_L", "attn_q.weight", 9, 0, 4096, WFMT_Q3_K},
		{"Q3_K_L", "ffn_down.weight", 9, 0, 224, WFMT_Q5_1},
		{"IQ4_XS", "attn_v.weight", 9, 0, 4096, WFMT_IQ4_XS}, {"IQ4_XS", "attn_v.weight", 9, 1, 4096, WFMT_Q5_K},
		{"IQ4_XS", "ffn_down.weight", 3, 0, 4096, WFMT_Q5_K}, {"IQ4_XS", "ffn_down.weight", 4, 0, 4096, WFMT_IQ4_XS},
		{"IQ4_XS", "ffn_up.weight", 4, 0, 96, WFMT_IQ4_NL},  {"IQ4_XS", "output.weight", -1, 0, 4096, WFMT_Q6_K},
		{"IQ4_XS", "ffn_up.weight", 4, 0, 40, WFMT_F16},
		{"IQ2_XS", "attn_v.weight", 5, 0, 4096, WFMT_Q2_K},  {"IQ2_XS", "attn_v.weight", 5, 1, 4096, WFMT_Q4_K},
		{"IQ2_XS", "attn_v.weight", 5, 2, 8192, WFMT_Q4_K},  {"IQ2_XS", "ffn_down.weight", 3, 0, 4096, WFMT_Q2_K},
		{"IQ2_XS", "ffn_down.weight", 4, 0, 4096, WFMT_IQ2_XS}, {"IQ2_XS", "attn_output.weight", 4, 0, 4096, WFMT_IQ2_XS},
		{"IQ2_XS", "output.weight", -1, 0, 4096, WFMT_Q5_K}, {"IQ2_XS", "token_embd.weight", -1, 0, 4096, WFMT_Q2_K},
		{"IQ2_XS", "ffn_up.weight", 4, 0, 96, WFMT_IQ4_NL},  {"IQ2_XS", "ffn_up.weight", 4, 0, 40, WFMT_F16},
		{"IQ2_XS", "output.weight", -1, 0, 96, WFMT_Q8_0},   {"IQ2_XXS", "attn_q.weight", 4, 0, 4096, WFMT_IQ2_XXS},
		{"IQ2_S", "attn_q.weight", 4, 0, 4096, WFMT_IQ2_XS}, {"IQ2_S", "attn_v.weight", 4, 0, 4096, WFMT_IQ3_S},
		{"IQ2_S", "ffn_down.weight", 0, 0, 4096, WFMT_IQ3_S}, {"IQ2_S", "attn_output.weight", 9, 0, 4096, WFMT_IQ3_S},
		{"IQ2_S", "token_embd.weight", -1, 0, 4096, WFMT_IQ3_S}, {"IQ2_M", "attn_q.weight", 4, 0, 4096, WFMT_IQ2_S},
		{"IQ2_M", "attn_v.weight", 4, 1, 4096, WFMT_Q4_K},   {"IQ1_S", "attn_output.weight", 4, 0, 4096, WFMT_IQ2_XXS},
		{"IQ1_S", "attn_q.weight", 4, 0, 4096, WFMT_IQ1_S},  {"IQ1_S", "output.weight", -1, 0, 4096, WFMT_Q5_K},
		{"IQ1_M", "ffn_gate.weight", 4, 0, 4096, WFMT_IQ1_M}, {"IQ1_M", "ffn_down.weight", 1, 0, 4096, WFMT_Q2_K},
		{"IQ3_XXS", "attn_q.weight", 4, 0, 4096, WFMT_IQ2_S}, {"IQ3_XXS", "attn_k.weight", 4, 0, 4096, WFMT_IQ2_S},
		{"IQ3_XXS", "attn_v.weight", 4, 0, 4096, WFMT_IQ3_XXS}, {"IQ3_XXS", "attn_v.weight", 4, 1, 4096, WFMT_Q4_K},
		{"IQ3_XXS", "attn_v.weight", 4, 2, 8192, WFMT_Q5_K}, {"IQ3_XXS", "attn_output.weight", 4, 0, 4096, WFMT_IQ3_S},
		{"IQ3_XXS", "token_embd.weight", -1, 0, 4096, WFMT_IQ3_S}, {"IQ3_XXS", "output.weight", -1, 0, 4096, WFMT_Q5_K},
		{"IQ3_XXS", "ffn_up.weight", 4, 0, 4096, WFMT_IQ3_XXS},
		{"IQ3_S", "attn_v.weight", 4, 0, 4096, WFMT_IQ3_S},  {"IQ3_S", "attn_v.weight", 4, 1, 4096, WFMT_Q4_K},
		{"IQ3_S", "attn_v.weight", 4, 2, 8192, WFMT_Q5_K},   {"IQ3_S", "output.weight", -1, 0, 4096, WFMT_Q6_K},
		{"IQ3_S", "ffn_down.weight", 0, 0, 4096, WFMT_IQ3_S},
		{"IQ3_M", "attn_v.weight", 4, 0, 4096, WFMT_Q4_K},   {"IQ3_M", "attn_v.weight", 4, 2, 8192, WFMT_Q5_K},
		{"IQ3_M", "ffn_down.weight", 3, 0, 4096, WFMT_Q4_K}, {"IQ3_M", "ffn_down.weight", 4, 0, 4096, WFMT_IQ3_S},
		{"IQ3_M", "attn_output.weight", 4, 0, 4096, WFMT_Q4_K}, {"IQ3_M", "attn_q.weight", 4, 0, 4096, WFMT_IQ3_S},
	};
	const struct layout_hparams *models[] = {&mha, &gqa, &big};
	for (size_t i = 0; i < sizeof(picks) / sizeof(picks[0]); i++) {
		const struct quant_mix *mx = quant_mix_find(picks[i].mix);
		int got = mx ? quant_mix_pick(mx, picks[i].name, picks[i].layer, models[picks[i].model], picks[i].cols) : -1;
		CHECK_MSG(got == picks[i].fmt, "%s %s layer %d (model %d, %d columns): %s, llama.cpp gives %s", picks[i].mix,
			  picks[i].name, picks[i].layer, picks[i].model, picks[i].cols, got >= 0 ? wfmt_name(got) : "no mix",
			  wfmt_name(picks[i].fmt));
	}
	CHECK_MSG(!quant_mix_find("Q3_Z") && !quant_mix_find(NULL), "unknown mix found");
	/* the IQ1/IQ2 mixes and IQ3_XXS need an importance matrix (llama-quantize refuses them without) */
	static const char *const need_im[] = {"IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M"};
	char err[512];
	const struct quant_mix *om;
	for (size_t i = 0; i < sizeof(need_im) / sizeof(need_im[0]); i++) {
		CHECK_MSG(quant_mix_open(need_im[i], false, &om, err, sizeof(err)) == -EINVAL && !om &&
			  strstr(err, "needs an importance matrix") && strstr(err, need_im[i]),
			  "%s without an imatrix: '%s'", need_im[i], err);
		CHECK_MSG(quant_mix_open(need_im[i], true, &om, err, sizeof(err)) == 0 && om, "%s with an imatrix", need_im[i]);
	}
	CHECK_MSG(quant_mix_open("IQ3_S", false, &om, err, sizeof(err)) == 0 &&
		  quant_mix_open("IQ3_M", false, &om, err, sizeof(err)) == 0 &&
		  quant_mix_open("Q4_K_M", false, &om, err, sizeof(err)) == 0, "IQ3_S/IQ3_M/Q4_K_M refused without an imatrix");
	CHECK_MSG(quant_mix_open("Q3_Z", true, &om, err, sizeof(err)) == -EINVAL && strstr(err, "not a quantization"),
		  "unknown mix: '%s'", err);
	char list[256];
	CHECK_MSG(strstr(quant_mix_list(list, sizeof(list)), "Q5_K_M") != NULL, "list: %s", list);
	CHECK_DONE();
}
