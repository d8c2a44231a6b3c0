/*
 * synth_model.c: `ferry synth`'s generator: a Llama-shaped model with random weights, in the tensor names,
 * unit files and order `ferry convert` writes for Llama (the required rows of llama in src/layout/arch.c, as
 * src/convert/from_hf.c writes them), so the runner cannot tell it from a converted one; with experts, a
 * qwen3moe model (its required rows, the experts expert-major), or a gpt-oss one (its biases F32, the experts
 * in their own format: MXFP4 as released). A random router picks experts about
 * uniformly: an expert cache's hit rate on it is a lower bound; --router-skew scales router row e by
 * (1 + e)^-S, so low experts win more often (a bench of the cache on a skewed choice).
 *
 * Values: a matrix [out, K] has elements of RMS 1/sqrt(K) (so h.W keeps h's scale); quantized blocks get
 * uniform random quants, small random sub-block scales (8..15) and an f16 block scale jittered by
 * +-20% around the value that gives that RMS; the K formats' mins are set so blocks are zero-mean. Norm
 * weights (F32) lie in [0.9, 1.1]. Every row draws from its own xoshiro256** stream seeded from (seed,
 * unit, tensor, row): the bytes depend on nothing else, whatever the thread count or chunking.
 *
 * Pipeline: a generator thread fills one of two buffers (rows in parallel on all cores) while the calling
 * thread writes the other through layout's writer (pwrite + XXH3). Output goes to OUT.tmp and is renamed
 * when complete (layout_writer_finish), so an interrupted run never leaves a complete-looking model.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "layout/arch.h"
#include "layout/layout.h"
#include "base/progress.h"
#include "layout/quant.h"
#include "base/rng.h"
#include "convert/synth_model.h"
#include "convert/synth_iq.h"

const char *const synth_preset_names =
	"llama3-70b, llama3-8b, qwen3-30b-a3b, gpt-oss-120b, gpt-oss-20b, tiny, tiny-moe, tiny-gpt-oss";

static const struct {
	const char *name;
	struct synth_shape s;
} presets[] = {
	/* L, D, F, H, Hkv, Dh, V, max_pos, rope theta, rms eps (Meta's params.json / HF config.json) */
	{"llama3-70b", {80, 8192, 28672, 64, 8, 128, 128256, 8192, 500000, 1e-5, 0, 0, 0, false}},
	{"llama3-8b", {32, 4096, 14336, 32, 8, 128, 128256, 8192, 500000, 1e-5, 0, 0, 0, false}},
	{"tiny", {4, 256, 768, 4, 2, 64, 512, 2048, 500000, 1e-5, 0, 0, 0, false}},
	/* + E, K, Fe (Qwen3-30B-A3B's config.json: 128 experts, 8 per token, moe_intermediate_size 768) */
	{"qwen3-30b-a3b", {48, 2048, 6144, 32, 4, 128, 151936, 40960, 1000000, 1e-6, 128, 8, 768, false}},
	{"tiny-moe", {4, 256, 768, 4, 2, 64, 512, 2048, 1000000, 1e-6, 16, 4, 256, false}},
	/* gpt-oss (openai's config.json: hidden 2880, intermediate 2880, 64 heads of 64, 8 kv heads, vocab 201088,
	 * context 131072, rope_theta 150000, rms_norm_eps 1e-5; 120b: 36 layers, 128 experts; 20b: 24 layers, 32
	 * experts; 4 per token) */
	{"gpt-oss-120b", {36, 2880, 2880, 64, 8, 64, 201088, 131072, 150000, 1e-5, 128, 4, 2880, true}},
	{"gpt-oss-20b", {24, 2880, 2880, 64, 8, 64, 201088, 131072, 150000, 1e-5, 32, 4, 2880, true}},
	{"tiny-gpt-oss", {4, 256, 256, 4, 2, 64, 512, 2048, 150000, 1e-5, 16, 4, 256, true}},
};

int synth_preset(const char *name, struct synth_shape *s)
{
	for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++)
		if (!strcmp(name, presets[i].name)) {
			*s = presets[i].s;
			return 0;
		}
	return -EINVAL;
}

/* One tensor of a unit: [rows, cols] (a norm vector: rows 1, ndim 1; stacked experts: ndim 3, experts
 * matrices of rows / experts rows each). */
struct synth_tensor {
	const char *name;
	int fmt, ndim;
	int64_t rows, cols;
	bool norm;
	int64_t experts;
};

enum { SYNTH_MAX_TENSORS = ARCH_SLOT_COUNT };

static int expert_fmt(const struct synth_opts *o)
{
	return o->expert_fmt >= 0 ? o->expert_fmt : o->fmt;
}

/* The tensors of unit -1 (embedding), 0..L-1 (layers) or L (head): llama's required rows (qwen3moe's,
 * gpt-oss's), in convert_hf's order. */
static int unit_tensors(const struct synth_opts *o, int unit, struct synth_tensor *t)
{
	const struct synth_shape *s = &o->shape;
	const struct layout_hparams hp = {.d_model = s->d_model, .n_heads = s->n_heads, .n_kv_heads = s->n_kv_heads,
					  .head_dim = s->head_dim, .ffn_dim = s->ffn_dim, .vocab = s->vocab,
					  .n_experts = s->n_experts, .expert_ffn = s->expert_ffn};
	const struct arch *a = arch_find(ARCH_KEY_NAME, s->gptoss ? "gpt-oss" : s->n_experts ? "qwen3moe" : "llama");
	const struct arch_tensor *rows[SYNTH_MAX_TENSORS];
	int n_rows = 0, n = 0;
	if (unit < 0) {
		rows[n_rows++] = &arch_token_embd;
	} else if (unit == s->n_layers) {
		rows[n_rows++] = &arch_output_norm;
		rows[n_rows++] = &arch_output;
	} else {
		for (int i = 0; i < a->n_layer; i++)
			rows[n_rows++] = &a->layer[i];
	}
	for (int i = 0; i < n_rows; i++) {
		const struct arch_tensor *r = rows[i];
		int64_t shape[3];
		if (r->need != ARCH_REQUIRED)
			continue;
		int nd = arch_shape(&hp, r, shape);
		bool bias = strstr(r->name, ".bias") != NULL; /* gpt-oss's experts' biases [E, n]: F32 */
		if (nd == 1)
			t[n++] = (struct synth_tensor){r->name, WFMT_F32, 1, 1, shape[0], true, 0};
		else if (nd == 2)
			t[n++] = (struct synth_tensor){r->name, bias ? WFMT_F32 : o->fmt, 2, shape[0], shape[1], false, 0};
		else
			t[n++] = (struct synth_tensor){r->name, expert_fmt(o), 3, shape[0] * shape[1], shape[2], false, shape[0]};
	}
	return n;
}

static uint64_t row_bytes(const struct synth_tensor *t)
{
	return wfmt_row_bytes(t->fmt, (uint64_t)t->cols);
}

int synth_check(const struct synth_opts *o, char *err, size_t errlen)
{
	const struct synth_shape *s = &o->shape;
	if (o->fmt < 0 || o->fmt >= WFMT_COUNT || wfmt_table[o->fmt].block == 0) {
		char fmts[128];
		wfmt_names(fmts, sizeof(fmts), WFMT_NAMES_LOWER);
		snprintf(err, errlen, "--fmt: not a format synth writes (%s)", fmts);
		return -EINVAL;
	}
	const struct {
		const char *opt;
		long v, lo, hi;
	} range[] = {
		{"--layers", s->n_layers, 1, 100000},	    {"--d-model", s->d_model, 1, LAYOUT_MAX_DIM},
		{"--ffn", s->ffn_dim, 1, LAYOUT_MAX_DIM},	    {"--heads", s->n_heads, 1, LAYOUT_MAX_DIM},
		{"--kv-heads", s->n_kv_heads, 1, LAYOUT_MAX_DIM}, {"--head-dim", s->head_dim, 2, LAYOUT_MAX_HEAD_DIM},
		{"--vocab", s->vocab, 1, LAYOUT_MAX_DIM},
	};
	for (size_t i = 0; i < sizeof(range) / sizeof(range[0]); i++)
		if (range[i].v < range[i].lo || range[i].v > range[i].hi) {
			snprintf(err, errlen, "%s %ld: outside %ld..%ld", range[i].opt, range[i].v, range[i].lo, range[i].hi);
			return -EINVAL;
		}
	if (s->head_dim % 2) {
		snprintf(err, errlen, "--head-dim %d: must be even (RoPE rotates pairs)", s->head_dim);
		return -EINVAL;
	}
	if (s->n_heads % s->n_kv_heads) {
		snprintf(err, errlen, "--heads %d: not a multiple of --kv-heads %d", s->n_heads, s->n_kv_heads);
		return -EINVAL;
	}
	if ((int64_t)s->n_heads * s->head_dim > LAYOUT_MAX_DIM) {
		snprintf(err, errlen, "--heads %d x --head-dim %d: above %d", s->n_heads, s->head_dim, LAYOUT_MAX_DIM);
		return -EINVAL;
	}
	/* Every matrix's K (its row length) must be whole blocks of the format. */
	long blk = (long)wfmt_table[o->fmt].block;
	const char *fn = wfmt_table[o->fmt].name;
	if (s->d_model % blk) {
		snprintf(err, errlen, "--d-model %d: not a multiple of the %s block (%ld values)", s->d_model, fn, blk);
		return -EINVAL;
	}
	if (s->ffn_dim % blk) {
		snprintf(err, errlen, "--ffn %d: not a multiple of the %s block (%ld values)", s->ffn_dim, fn, blk);
		return -EINVAL;
	}
	if ((long)s->n_heads * s->head_dim % blk) {
		snprintf(err, errlen, "--heads %d x --head-dim %d: not a multiple of the %s block (%ld values)", s->n_heads,
			 s->head_dim, fn, blk);
		return -EINVAL;
	}
	if (s->n_experts && (s->n_experts < 2 || s->n_experts > LAYOUT_MAX_EXPERTS || s->n_experts_used < 1 ||
			     s->n_experts_used > s->n_experts || s->expert_ffn < 1 || s->expert_ffn > LAYOUT_MAX_DIM)) {
		snprintf(err, errlen, "--experts %d, --experts-used %d, --expert-ffn %d: experts in 2..%d, used at most "
			 "that, ffn in 1..%d", s->n_experts, s->n_experts_used, s->expert_ffn, LAYOUT_MAX_EXPERTS, LAYOUT_MAX_DIM);
		return -EINVAL;
	}
	if (s->n_experts && s->expert_ffn % blk) {
		snprintf(err, errlen, "--expert-ffn %d: not a multiple of the %s block (%ld values)", s->expert_ffn, fn, blk);
		return -EINVAL;
	}
	int ef = expert_fmt(o);
	if (ef >= WFMT_COUNT || wfmt_table[ef].block == 0) {
		snprintf(err, errlen, "--expert-fmt: not a format synth writes");
		return -EINVAL;
	}
	long eblk = (long)wfmt_table[ef].block;
	if (s->n_experts && (s->expert_ffn % eblk || s->d_model % eblk)) {
		snprintf(err, errlen, "--expert-ffn %d and --d-model %d: not multiples of the %s block (%ld values)",
			 s->expert_ffn, s->d_model, wfmt_table[ef].name, eblk);
		return -EINVAL;
	}
	if (s->gptoss && !s->n_experts) {
		snprintf(err, errlen, "--experts 0: a gpt-oss shape has experts");
		return -EINVAL;
	}
	return 0;
}

uint64_t synth_model_bytes(const struct synth_opts *o)
{
	struct synth_tensor t[SYNTH_MAX_TENSORS];
	uint64_t total = 0;
	for (int u = -1; u <= o->shape.n_layers; u++) {
		int n = unit_tensors(o, u, t);
		uint64_t file = LAYOUT_HEADER_BYTES;
		for (int i = 0; i < n; i++) /* stacked experts: each expert's matrix aligned */
			file += t[i].experts ? (uint64_t)t[i].experts *
						       layout_align_up(row_bytes(&t[i]) * (uint64_t)(t[i].rows / t[i].experts))
					     : layout_align_up(row_bytes(&t[i]) * (uint64_t)t[i].rows);
		total += file;
	}
	return total;
}

/* Each row's own stream (rng.h), seeded from (seed, unit, tensor, row). */
static void row_rng_seed(struct rng *r, uint64_t seed, int unit, int tensor, int64_t row)
{
	uint64_t h = rng_mix64(rng_mix64(rng_mix64(seed) ^ ((uint64_t)(uint32_t)(unit + 1) << 8 | (uint64_t)tensor)) ^
			       (uint64_t)row);
	for (int i = 0; i < 4; i++)
		r->s[i] = rng_mix64(h + (uint64_t)i * 0x632be59bd9b4e019ull);
}

static void rng_bytes(struct rng *r, void *dst, size_t n)
{
	uint8_t *p = dst;
	for (; n >= 8; p += 8, n -= 8) {
		uint64_t v = rng_next(r);
		memcpy(p, &v, 8);
	}
	if (n) {
		uint64_t v = rng_next(r);
		memcpy(p, &v, n);
	}
}

/* Uniform in [-1, 1) from 32 random bits. */
static inline float unif(uint32_t bits)
{
	return (float)(int32_t)bits * 0x1p-31f;
}

/* Block scales are jittered by a factor uniform in [0.8, 1.2] (RMS JITTER_RMS); K-format sub-block scales are
 * uniform in 8..15 (RMS SC_RMS = sqrt(137.5)). */
#define JITTER_RMS 1.0066446
#define SC_RMS 11.7260394

static inline float jitter(struct rng *r)
{
	return 1.0f + 0.2f * unif((uint32_t)(rng_next(r) >> 32));
}

/* RMS of q - center for q uniform in 0..n-1. */
static double quant_rms(int n, double center)
{
	double mean = (n - 1) / 2.0 - center;
	return sqrt(((double)n * n - 1) / 12 + mean * mean);
}

static inline uint16_t f16_of(double v)
{
	return f32_to_f16((float)v);
}

static void sub_scales(struct rng *r, uint8_t *sc, int n)
{
	uint64_t v = rng_next(r);
	for (int j = 0; j < n; j++, v >>= 3)
		sc[j] = (uint8_t)(8 + (v & 7));
}

/* One row of K values of format fmt whose values have RMS rms: synth_fill_<k> for each format with kernels
 * (src/layout/wfmt_list.h). */
static void fill_float(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	float a = (float)(rms * sqrt(3.0)); /* uniform in [-a, a) */
	for (int64_t i = 0; i < K; i += 2) {
		uint64_t v = rng_next(r);
		float x[2] = {a * unif((uint32_t)v), a * unif((uint32_t)(v >> 32))};
		for (int k = 0; k < 2 && i + k < K; k++) {
			if (fmt == WFMT_F32) {
				memcpy(dst + 4 * (i + k), &x[k], 4);
			} else {
				uint16_t h = fmt == WFMT_F16 ? f32_to_f16(x[k]) : f32_to_bf16(x[k]);
				memcpy(dst + 2 * (i + k), &h, 2);
			}
		}
	}
}

static void synth_fill_q8_0(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	(void)fmt;
	struct block_q8_0 *b = (struct block_q8_0 *)dst;
	double base = rms / (quant_rms(255, 127) * JITTER_RMS);
	for (int64_t i = 0; i < K / QK; i++) {
		b[i].d = f16_of(base * jitter(r));
		rng_bytes(r, b[i].qs, QK);
		for (int j = 0; j < QK; j++) /* ggml's quantizer never writes -128 */
			b[i].qs[j] = b[i].qs[j] == -128 ? -127 : b[i].qs[j];
	}
}

static void synth_fill_q4_0(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	(void)fmt;
	struct block_q4_0 *b = (struct block_q4_0 *)dst;
	double base = rms / (quant_rms(16, 8) * JITTER_RMS);
	for (int64_t i = 0; i < K / QK; i++) {
		b[i].d = f16_of(base * jitter(r));
		rng_bytes(r, b[i].qs, sizeof(b[i].qs));
	}
}

static void synth_fill_q5_0(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	(void)fmt;
	struct block_q5_0 *b = (struct block_q5_0 *)dst;
	double base = rms / (quant_rms(32, 16) * JITTER_RMS);
	for (int64_t i = 0; i < K / QK; i++) {
		b[i].d = f16_of(base * jitter(r));
		rng_bytes(r, b[i].qh, sizeof(b[i].qh));
		rng_bytes(r, b[i].qs, sizeof(b[i].qs));
	}
}

/* Q4_K and Q5_K: y = d sc q - dmin m with m = sc and dmin = center d: y = d sc (q - center), zero-mean */
static void fill_k45(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	bool five = fmt == WFMT_Q5_K;
	int levels = five ? 32 : 16;
	double center = (levels - 1) / 2.0, base = rms / (quant_rms(levels, center) * SC_RMS * JITTER_RMS);
	size_t bb = five ? sizeof(struct block_q5_K) : sizeof(struct block_q4_K);
	for (int64_t i = 0; i < K / QK_K; i++) {
		uint8_t sc[8], *blk = dst + (size_t)i * bb;
		uint16_t d = f16_of(base * jitter(r)), dmin = f16_of(f16_to_f32(d) * center);
		sub_scales(r, sc, 8);
		if (five) {
			struct block_q5_K *b = (struct block_q5_K *)blk;
			b->d = d, b->dmin = dmin;
			k_scales_pack(sc, sc, b->scales);
			rng_bytes(r, b->qh, sizeof(b->qh));
			rng_bytes(r, b->qs, sizeof(b->qs));
		} else {
			struct block_q4_K *b = (struct block_q4_K *)blk;
			b->d = d, b->dmin = dmin;
			k_scales_pack(sc, sc, b->scales);
			rng_bytes(r, b->qs, sizeof(b->qs));
		}
	}
}

static void synth_fill_q6_k(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	(void)fmt;
	struct block_q6_K *b = (struct block_q6_K *)dst;
	double base = rms / (quant_rms(64, 32) * SC_RMS * JITTER_RMS);
	for (int64_t i = 0; i < K / QK_K; i++) {
		uint8_t sc[16];
		sub_scales(r, sc, 16);
		for (int j = 0; j < 16; j++)
			b[i].scales[j] = (int8_t)sc[j];
		rng_bytes(r, b[i].ql, sizeof(b[i].ql));
		rng_bytes(r, b[i].qh, sizeof(b[i].qh));
		b[i].d = f16_of(base * jitter(r));
	}
}

/* Q4_1 and Q5_1: y = d q + m with m = -center d: zero-mean */
static void fill_q51(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	bool five = fmt == WFMT_Q5_1;
	int levels = five ? 32 : 16;
	double center = (levels - 1) / 2.0, base = rms / (quant_rms(levels, center) * JITTER_RMS);
	for (int64_t i = 0; i < K / QK; i++) {
		uint16_t d = f16_of(base * jitter(r)), m = f16_of(-center * f16_to_f32(d));
		if (five) {
			struct block_q5_1 *b = (struct block_q5_1 *)dst + i;
			b->d = d, b->m = m;
			rng_bytes(r, b->qh, sizeof(b->qh));
			rng_bytes(r, b->qs, sizeof(b->qs));
		} else {
			struct block_q4_1 *b = (struct block_q4_1 *)dst + i;
			b->d = d, b->m = m;
			rng_bytes(r, b->qs, sizeof(b->qs));
		}
	}
}

/* NF4 and BNB_FP4: uniform codes, d from the RMS of the table */
static void synth_fill_nf4(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	static const float nf4[16] = NF4_VALUES, fp4[16] = BNB_FP4_VALUES;
	const float *v = fmt == WFMT_BNB_FP4 ? fp4 : nf4;
	double ms = 0;
	for (int i = 0; i < 16; i++)
		ms += (double)v[i] * v[i] / 16;
	struct block_nf4 *b = (struct block_nf4 *)dst;
	for (int64_t i = 0; i < K / 64; i++) {
		b[i].d = (float)(rms / (sqrt(ms) * JITTER_RMS)) * jitter(r);
		rng_bytes(r, b[i].qs, sizeof(b[i].qs));
	}
}

static void synth_fill_bnb_fp4(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	synth_fill_nf4(fmt, dst, K, rms, r);
}

/* Q4_Z and Q8_Z: y = d (q - z), z the codes' middle (GPTQ's symmetric zero point): zero-mean up to a half code */
static void fill_qz(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	bool eight = fmt == WFMT_Q8_Z || fmt == WFMT_Q8_Z128;
	double base = rms / (quant_rms(eight ? 256 : 16, eight ? 128 : 8) * JITTER_RMS);
	size_t bb = wfmt_table[fmt].block_bytes;
	for (int64_t i = 0; i < K / (int64_t)wfmt_table[fmt].block; i++, dst += bb) {
		uint16_t d = f16_of(base * jitter(r));
		int16_t z = eight ? 0 : 8;
		memcpy(dst, &d, 2);
		memcpy(dst + 2, &z, 2);
		rng_bytes(r, dst + 4, bb - 4);
	}
}

/* Q2_K: y = d sc q - dmin m with m = sc and dmin = 1.5 d: y = d sc (q - 1.5) */
static void synth_fill_q2_k(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	(void)fmt;
	struct block_q2_K *b = (struct block_q2_K *)dst;
	double base = rms / (quant_rms(4, 1.5) * SC_RMS * JITTER_RMS);
	for (int64_t i = 0; i < K / QK_K; i++) {
		uint8_t sc[16];
		sub_scales(r, sc, 16);
		for (int g = 0; g < 16; g++)
			b[i].scales[g] = (uint8_t)(sc[g] | sc[g] << 4);
		rng_bytes(r, b[i].qs, sizeof(b[i].qs));
		b[i].d = f16_of(base * jitter(r));
		b[i].dmin = f16_of(1.5 * f16_to_f32(b[i].d));
	}
}

/* Q3_K: codes -4..3, 6-bit scales 40..47 (sub-scales 8..15) */
static void synth_fill_q3_k(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	(void)fmt;
	struct block_q3_K *b = (struct block_q3_K *)dst;
	double base = rms / (quant_rms(8, 4) * SC_RMS * JITTER_RMS);
	for (int64_t i = 0; i < K / QK_K; i++) {
		uint8_t sc[16];
		sub_scales(r, sc, 16);
		for (int g = 0; g < 16; g++)
			sc[g] = (uint8_t)(sc[g] + 32);
		q3k_scales_pack(sc, b[i].scales);
		rng_bytes(r, b[i].hmask, sizeof(b[i].hmask));
		rng_bytes(r, b[i].qs, sizeof(b[i].qs));
		b[i].d = f16_of(base * jitter(r));
	}
}

/* RMS of a 16-value table taken uniformly */
static double table_rms(const int8_t *v)
{
	double s = 0;
	for (int i = 0; i < 16; i++)
		s += (double)v[i] * v[i];
	return sqrt(s / 16);
}

static void fill_iq4(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	static const int8_t values[16] = IQ4NL_VALUES;
	if (fmt == WFMT_IQ4_NL) {
		struct block_iq4_nl *b = (struct block_iq4_nl *)dst;
		double base = rms / (table_rms(values) * JITTER_RMS);
		for (int64_t i = 0; i < K / QK; i++) {
			b[i].d = f16_of(base * jitter(r));
			rng_bytes(r, b[i].qs, sizeof(b[i].qs));
		}
		return;
	}
	struct block_iq4_xs *b = (struct block_iq4_xs *)dst;
	double base = rms / (table_rms(values) * SC_RMS * JITTER_RMS);
	for (int64_t i = 0; i < K / QK_K; i++) {
		uint8_t sc[8];
		sub_scales(r, sc, 8);
		for (int s = 0; s < 8; s++)
			sc[s] = (uint8_t)(sc[s] + 32);
		iq4xs_scales_pack(sc, &b[i].scales_h, b[i].scales_l);
		b[i].d = f16_of(base * jitter(r));
		rng_bytes(r, b[i].qs, sizeof(b[i].qs));
	}
}

/* MXFP4: power-of-two scales 2^e0 or 2^(e0 + 1) per block, the larger with the probability that makes the mean
 * square the RMS's (e8m0 has no finer steps to jitter) */
static void synth_fill_mxfp4(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	(void)fmt;
	static const int8_t values[16] = MXFP4_VALUES;
	struct block_mxfp4 *b = (struct block_mxfp4 *)dst;
	double want = rms / table_rms(values), e0 = floor(log2(want)), r2 = want / exp2(e0);
	double p_up = (r2 * r2 - 1) / 3;
	for (int64_t i = 0; i < K / QK; i++) {
		double e = 128 + e0 + (0.5 + 0.5 * unif((uint32_t)(rng_next(r) >> 32)) < p_up ? 1 : 0);
		b[i].e = (uint8_t)(e < 1 ? 1 : e > 254 ? 254 : e);
		rng_bytes(r, b[i].qs, sizeof(b[i].qs));
	}
}

/* TQ1_0: random bytes (every byte decodes to 5 digits); the digits of 0..255 have RMS about sqrt(2/3) */
static void synth_fill_tq1_0(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	(void)fmt;
	struct block_tq1_0 *b = (struct block_tq1_0 *)dst;
	double base = rms / (sqrt(2.0 / 3.0) * JITTER_RMS);
	for (int64_t i = 0; i < K / QK_K; i++) {
		rng_bytes(r, b[i].qs, sizeof(b[i].qs));
		rng_bytes(r, b[i].qh, sizeof(b[i].qh));
		b[i].d = f16_of(base * jitter(r));
	}
}

/* TQ2_0: ternary codes 0, 1, 2 with probabilities 1/4, 1/2, 1/4 (a field of 3 becomes 1): RMS sqrt(1/2) */
static void synth_fill_tq2_0(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r)
{
	(void)fmt;
	struct block_tq2_0 *b = (struct block_tq2_0 *)dst;
	double base = rms / (sqrt(0.5) * JITTER_RMS);
	for (int64_t i = 0; i < K / QK_K; i++) {
		rng_bytes(r, b[i].qs, sizeof(b[i].qs));
		for (int j = 0; j < QK_K / 4; j++) {
			uint8_t v = b[i].qs[j], both = v & (v >> 1) & 0x55; /* fields equal to 3 */
			b[i].qs[j] = (uint8_t)(v & ~(both << 1));
		}
		b[i].d = f16_of(base * jitter(r));
	}
}

/* The element formats share one filler; Q4_K and Q5_K, Q4_1 and Q5_1, Q4_Z and Q8_Z, IQ4_NL and IQ4_XS
 * one each. */
#define synth_fill_f32 fill_float
#define synth_fill_f16 fill_float
#define synth_fill_bf16 fill_float
#define synth_fill_q4_k fill_k45
#define synth_fill_q5_k fill_k45
#define synth_fill_q4_1 fill_q51
#define synth_fill_q5_1 fill_q51
#define synth_fill_q4_z fill_qz
#define synth_fill_q8_z fill_qz
#define synth_fill_q4_z128 fill_qz
#define synth_fill_q8_z128 fill_qz
#define synth_fill_iq4_nl fill_iq4
#define synth_fill_iq4_xs fill_iq4
typedef void (*synth_fill_fn)(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r);
#define FILL_ROW(id, code, block, bytes, ggml, kind, k) WFMT_RUNS_##kind(synth_fill_##k, NULL),
/* NULL for a format with no kernels: synth_check refuses it */
static const synth_fill_fn fill_by_fmt[WFMT_COUNT] = {WFMT_LIST(FILL_ROW)};
#undef FILL_ROW

static void fill_norm(float *dst, int64_t n, struct rng *r)
{
	for (int64_t i = 0; i < n; i++)
		dst[i] = 1.0f + 0.1f * unif((uint32_t)(rng_next(r) >> 32));
}

/* Rows [row0, row0 + n) of tensor ti of unit u into dst. */
static void gen_rows(const struct synth_opts *o, int u, int ti, const struct synth_tensor *t, int64_t row0, int64_t n,
		     uint8_t *dst, int threads)
{
	uint64_t rb = row_bytes(t);
	double rms = 1.0 / sqrt((double)t->cols);
	bool router = o->router_skew > 0 && !strcmp(t->name, "ffn_gate_inp.weight");
#pragma omp parallel for schedule(static) num_threads(threads)
	for (int64_t i = 0; i < n; i++) {
		struct rng r;
		row_rng_seed(&r, o->seed, u, ti, row0 + i);
		if (t->norm)
			fill_norm((float *)(dst + (uint64_t)i * rb), t->cols, &r);
		else
			fill_by_fmt[t->fmt](t->fmt, dst + (uint64_t)i * rb, t->cols,
					    router ? rms * pow(1.0 + (double)(row0 + i), -o->router_skew) : rms, &r);
	}
}

/* Rows per chunk: about CHUNK_BYTES of a tensor at a time, whole rows. */
#define CHUNK_BYTES (64ull << 20)

static int64_t chunk_rows(const struct synth_tensor *t)
{
	int64_t n = (int64_t)(CHUNK_BYTES / row_bytes(t));
	return n < 1 ? 1 : n > t->rows ? t->rows : n;
}

/* Two buffers between the generator thread and the writing thread: full[b] holds the bytes ready in buf[b],
 * 0 when it is free. Both threads walk the same (unit, tensor, chunk) sequence; chunk k uses buffer k % 2. */
struct pipe {
	const struct synth_opts *o;
	int threads;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint8_t *buf[2];
	uint64_t full[2];
	bool stop;
};

static void *gen_main(void *arg)
{
	struct pipe *p = arg;
	const struct synth_opts *o = p->o;
	struct synth_tensor t[SYNTH_MAX_TENSORS];
	uint64_t seq = 0;
	for (int u = -1; u <= o->shape.n_layers; u++) {
		int nt = unit_tensors(o, u, t);
		for (int i = 0; i < nt; i++) {
			int64_t step = chunk_rows(&t[i]);
			for (int64_t r0 = 0; r0 < t[i].rows; r0 += step) {
				int b = (int)(seq++ & 1);
				int64_t n = t[i].rows - r0 < step ? t[i].rows - r0 : step;
				pthread_mutex_lock(&p->mu);
				while (p->full[b] && !p->stop)
					pthread_cond_wait(&p->cv, &p->mu);
				bool stop = p->stop;
				pthread_mutex_unlock(&p->mu);
				if (stop)
					return NULL;
				gen_rows(o, u, i, &t[i], r0, n, p->buf[b], p->threads);
				pthread_mutex_lock(&p->mu);
				p->full[b] = (uint64_t)n * row_bytes(&t[i]);
				pthread_cond_broadcast(&p->cv);
				pthread_mutex_unlock(&p->mu);
			}
		}
	}
	return NULL;
}

static int disk_space_check(const char *out_dir, uint64_t need, char *err, size_t errlen)
{
	char parent[4096];
	snprintf(parent, sizeof(parent), "%s", out_dir);
	char *slash = strrchr(parent, '/');
	if (!slash)
		snprintf(parent, sizeof(parent), ".");
	else
		slash[slash == parent ? 1 : 0] = 0;
	struct statvfs sv;
	if (statvfs(parent, &sv))
		return 0; /* the writer reports a missing directory itself */
	uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (avail < need) {
		snprintf(err, errlen, "%s: the model needs %.2f GB, %.2f GB free there", parent, need / 1e9, avail / 1e9);
		return -ENOSPC;
	}
	return 0;
}

/* The stacked experts from t[0] on (consecutive) expert-major: one expert's matrices together. */
static int plan_experts(struct layout_writer *w, const struct synth_tensor *t, int n)
{
	const char *names[4];
	int fmts[4], k = 0;
	int64_t shapes[4][3];
	for (; k < n && k < 4 && t[k].experts; k++) {
		names[k] = t[k].name;
		fmts[k] = t[k].fmt;
		shapes[k][0] = t[k].experts;
		shapes[k][1] = t[k].rows / t[k].experts;
		shapes[k][2] = t[k].cols;
	}
	return layout_writer_experts(w, k, names, fmts, (const int64_t(*)[3])shapes);
}

static int write_units(struct layout_writer *w, struct pipe *p, struct progress *prog)
{
	const struct synth_opts *o = p->o;
	struct synth_tensor t[SYNTH_MAX_TENSORS];
	uint64_t seq = 0;
	int rc = 0;
	for (int u = -1; !rc && u <= o->shape.n_layers; u++) {
		int kind = u < 0 ? LAYOUT_KIND_EMBED : u == o->shape.n_layers ? LAYOUT_KIND_HEAD : LAYOUT_KIND_LAYER;
		int nt = unit_tensors(o, u, t);
		rc = layout_writer_file_begin(w, kind, kind == LAYOUT_KIND_LAYER ? u : -1);
		for (int i = 0; !rc && i < nt; i++) {
			int64_t shape[3] = {t[i].rows, t[i].cols};
			if (t[i].experts) {
				int64_t e = t[i].experts;
				shape[0] = e;
				shape[1] = t[i].rows / e;
				shape[2] = t[i].cols;
				if (i == 0 || !t[i - 1].experts)
					rc = plan_experts(w, t + i, nt - i);
			}
			rc = rc ? rc : layout_writer_tensor_begin(w, t[i].name, t[i].fmt, t[i].ndim, t[i].norm ? shape + 1 : shape);
			int64_t step = chunk_rows(&t[i]);
			for (int64_t r0 = 0; !rc && r0 < t[i].rows; r0 += step) {
				int b = (int)(seq++ & 1);
				pthread_mutex_lock(&p->mu);
				while (!p->full[b])
					pthread_cond_wait(&p->cv, &p->mu);
				uint64_t n = p->full[b];
				pthread_mutex_unlock(&p->mu);
				rc = layout_writer_tensor_write(w, p->buf[b], (size_t)n);
				pthread_mutex_lock(&p->mu);
				p->full[b] = 0;
				pthread_cond_broadcast(&p->cv);
				pthread_mutex_unlock(&p->mu);
				progress_update(prog, u + 1, layout_writer_bytes_written(w));
			}
			rc = rc ? rc : layout_writer_tensor_end(w);
		}
		rc = rc ? rc : layout_writer_file_end(w);
		progress_update(prog, u + 2, layout_writer_bytes_written(w));
	}
	return rc;
}

static void hparams_of(const struct synth_shape *s, struct layout_hparams *hp, int *window)
{
	memset(hp, 0, sizeof(*hp));
	snprintf(hp->arch, sizeof(hp->arch), s->gptoss ? "gpt-oss" : s->n_experts ? "qwen3moe" : "llama");
	hp->n_experts = s->n_experts;
	hp->n_experts_used = s->n_experts_used;
	hp->expert_ffn = s->expert_ffn;
	hp->moe_norm_topk = true;
	hp->n_layers = s->n_layers;
	hp->d_model = s->d_model;
	hp->n_heads = s->n_heads;
	hp->n_kv_heads = s->n_kv_heads;
	hp->head_dim = s->head_dim;
	hp->ffn_dim = s->ffn_dim;
	hp->vocab = s->vocab;
	hp->max_pos = s->max_pos;
	hp->rms_eps = s->rms_eps;
	hp->rope = (struct rope_params){.type = ROPE_DEFAULT, .style = ROPE_STYLE_NEOX, .theta = s->rope_theta,
					.dim = s->head_dim, .factor = 1};
	hp->act = ACT_SILU;
	hp->window = window; /* all zeros: full attention */
	if (s->gptoss) { /* GptOssConfig: YaRN x32 over 4096 positions, untruncated; even layers slide over 128 */
		hp->rope.type = ROPE_YARN;
		hp->rope.factor = 32;
		hp->rope.original_max_pos = 4096;
		hp->rope.beta_fast = 32;
		hp->rope.beta_slow = 1;
		hp->act = ACT_SWIGLU_OAI;
		for (int i = 0; i < s->n_layers; i += 2)
			window[i] = 128;
	}
	hp->bos_id = -1;     /* no tokenizer: no special tokens, and no EOS to stop a random model early */
	hp->n_eos = 0;
}

int synth_model_write(const struct synth_opts *o, const char *out_dir, char *err, size_t errlen)
{
	err[0] = 0;
	int rc = synth_check(o, err, errlen);
	if (rc)
		return rc;
	struct layout_hparams hp;
	int *window = calloc((size_t)o->shape.n_layers, sizeof(int));
	if (!window)
		return -ENOMEM;
	hparams_of(&o->shape, &hp, window);
	if ((rc = layout_hparams_check(&hp, err, errlen)) ||
	    (rc = disk_space_check(out_dir, synth_model_bytes(o), err, errlen))) {
		free(window);
		return rc;
	}
	struct pipe p = {.o = o, .threads = o->threads > 0 ? o->threads : omp_get_num_procs()};
	uint64_t cap = 0; /* the largest chunk: the units -1 (embedding), 0 (a layer) and L (head) have every tensor kind */
	for (int k = 0; k < 3; k++) {
		struct synth_tensor t[SYNTH_MAX_TENSORS];
		int u = k == 0 ? -1 : k == 1 ? 0 : o->shape.n_layers;
		for (int i = 0, n = unit_tensors(o, u, t); i < n; i++) {
			uint64_t c = (uint64_t)chunk_rows(&t[i]) * row_bytes(&t[i]);
			cap = c > cap ? c : cap;
		}
	}
	p.buf[0] = malloc(cap);
	p.buf[1] = malloc(cap);
	struct layout_writer *w = NULL;
	if (!p.buf[0] || !p.buf[1]) {
		snprintf(err, errlen, "out of memory for two buffers of %.0f MiB", cap / 1048576.0);
		rc = -ENOMEM;
		goto out;
	}
	if ((rc = layout_writer_begin(&w, out_dir, o->force, err, errlen)))
		goto out;
	pthread_mutex_init(&p.mu, NULL);
	pthread_cond_init(&p.cv, NULL);
	pthread_t gen;
	if ((rc = -pthread_create(&gen, NULL, gen_main, &p))) {
		snprintf(err, errlen, "cannot start the generator thread: %s", strerror(-rc));
	} else {
		struct progress prog;
		progress_begin(&prog, "synth", o->shape.n_layers + 2);
		rc = write_units(w, &p, &prog);
		progress_end(&prog);
		pthread_mutex_lock(&p.mu);
		p.stop = true;
		pthread_cond_broadcast(&p.cv);
		pthread_mutex_unlock(&p.mu);
		pthread_join(gen, NULL);
	}
	pthread_cond_destroy(&p.cv);
	pthread_mutex_destroy(&p.mu);
	if (!rc) {
		char seed[24];
		snprintf(seed, sizeof(seed), "%llu", (unsigned long long)o->seed);
		json_t *extra = json_pack("{s:{s:s, s:s, s:s, s:s}}", "source", "format", "synthetic", "generator",
					  "ferry synth", "seed", seed, "weight_format", wfmt_name(o->fmt));
		rc = layout_writer_finish(w, &hp, extra);
		if (!rc)
			w = NULL; /* finish released it */
	}
	if (rc && !err[0])
		snprintf(err, errlen, "%s", layout_writer_error(w));
out:
	if (w)
		layout_writer_abort(w); /* removes OUT.tmp */
	free(p.buf[0]);
	free(p.buf[1]);
	free(window);
	return rc;
}
