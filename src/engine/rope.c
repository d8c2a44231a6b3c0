/*
 * rope.c: inverse frequencies per RoPE scaling type, computed in double from the formulas of transformers'
 * modeling_rope_utils (default, linear, dynamic NTK, YaRN, Llama 3), then divided by GGUF's rope_freqs factors
 * when the model has them. theta_i = pos * inv_freq[i].
 */
#include <math.h>

#include "engine/rope.h"

static double yarn_mscale(double scale, double mscale)
{
	return scale <= 1 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

/* Dimension index at which a wavelength makes num_rot rotations over max_pos positions. */
static double yarn_corr_dim(double num_rot, int dim, double base, int max_pos)
{
	return dim * log(max_pos / (num_rot * 2 * M_PI)) / (2 * log(base));
}

static void yarn(const struct rope_params *r, struct rope_freqs *f)
{
	int dim = r->dim;
	double lo = yarn_corr_dim(r->beta_fast, dim, r->theta, r->original_max_pos);
	double hi = yarn_corr_dim(r->beta_slow, dim, r->theta, r->original_max_pos);
	if (r->truncate) {
		lo = floor(lo);
		hi = ceil(hi);
	}
	lo = lo > 0 ? lo : 0;
	hi = hi < dim - 1 ? hi : dim - 1;
	if (lo == hi)
		hi += 0.001; /* avoid a division by zero */
	for (int i = 0; i < f->n; i++) {
		double extra = pow(r->theta, -2.0 * i / dim), inter = extra / r->factor;
		double ramp = (i - lo) / (hi - lo);
		ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
		double extra_w = 1 - ramp; /* high-frequency dims keep their extrapolated frequency */
		f->inv_freq[i] = inter * (1 - extra_w) + extra * extra_w;
	}
	if (r->attention_factor > 0)
		f->mscale = r->attention_factor;
	else if (r->mscale > 0 && r->mscale_all_dim > 0)
		f->mscale = yarn_mscale(r->factor, r->mscale) / yarn_mscale(r->factor, r->mscale_all_dim);
	else
		f->mscale = yarn_mscale(r->factor, 1.0);
}

static void llama3(const struct rope_params *r, struct rope_freqs *f)
{
	double orig = r->original_max_pos, lo_wl = orig / r->low_freq_factor, hi_wl = orig / r->high_freq_factor;
	for (int i = 0; i < f->n; i++) {
		double inv = f->inv_freq[i], wl = 2 * M_PI / inv;
		if (wl > lo_wl) {
			inv /= r->factor;
		} else if (wl >= hi_wl) {
			double s = (orig / wl - r->low_freq_factor) / (r->high_freq_factor - r->low_freq_factor);
			inv = (1 - s) * inv / r->factor + s * inv;
		}
		f->inv_freq[i] = inv;
	}
}

void rope_freqs_compute(const struct rope_params *r, int seq_len, struct rope_freqs *f)
{
	int dim = r->dim;
	double base = r->theta;
	f->n = dim / 2;
	f->mscale = 1.0;
	f->neox = r->style == ROPE_STYLE_NEOX;
	if (r->type == ROPE_DYNAMIC && seq_len > r->original_max_pos)
		base *= pow(r->factor * seq_len / r->original_max_pos - (r->factor - 1), (double)dim / (dim - 2));
	for (int i = 0; i < f->n; i++)
		f->inv_freq[i] = pow(base, -2.0 * i / dim);
	if (r->type == ROPE_LINEAR)
		for (int i = 0; i < f->n; i++)
			f->inv_freq[i] /= r->factor;
	else if (r->type == ROPE_YARN)
		yarn(r, f);
	else if (r->type == ROPE_LLAMA3)
		llama3(r, f);
	for (int i = 0; r->factors && i < f->n; i++)
		f->inv_freq[i] /= r->factors[i];
}
