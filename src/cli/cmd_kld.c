/*
 * cmd_kld.c: `ferry kld`: how far a (quantized) model's next-token distributions are from its source's on a
 * text, in llama.cpp's --kl-divergence convention (tools/perplexity), so quality is a number that compares
 * with llama-perplexity's:
 *   1. `ferry kld -m BASE FILE --save-base LOGITS`: the base model over FILE in ppl's chunks (eval_text.h);
 *      the log-probabilities of every scored row go to LOGITS in llama.cpp's file layout (below), so a file
 *      written by either tool is read by both;
 *   2. `ferry kld -m MODEL --base-logits LOGITS`: the same tokens (read from LOGITS) through MODEL; per
 *      scored row the KL divergence sum_i p_i (ln p_i - ln q_i) over the base's tokens of ln p > -16, whether
 *      both put the same token on top, and p - p_base of the correct token; printed as llama.cpp prints
 *      them (PPL(Q), PPL(base), their ratio, KLD mean +/- error and percentiles, same top token %, delta p);
 *   3. `ferry kld -m MODEL --base BASE FILE`: 1 into a temporary file, then 2.
 * LOGITS: "_logits_", u32 ctx, i32 V, i32 n_chunk, i32 tokens[n_chunk * ctx] (as in the text, before the
 * BOS replacement), then n_chunk * (ctx - 1 - ctx/2) rows of nv = 2 * ((V + 1) / 2) + 4 u16: f32 scale, f32
 * min_lp (the first 8 bytes), then V u16 q: ln p = scale * q + min_lp, where min_lp is the log-probability of
 * max(min logit, max logit - 16) and q = 0 for the logits below it. Little-endian, as the machines are.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/eval_text.h"
#include "cli/ferry.h"
#include "cli/model_home.h"
#include "cli/opt_hint.h"
#include "cli/run_opts.h"
#include "base/util.h"
#include "engine/engine.h"
#include "layout/layout.h"
#include "text/tokenizer.h"

#define KLD_MAGIC "_logits_"
#define KLD_HEAD 20 /* magic, ctx, V, n_chunk */
#define KLD_LP_RANGE 16.0 /* log-probabilities kept below the top one, as llama.cpp keeps them */

struct kld_args {
	const char *model, *file, *save, *base_logits, *base, *json;
	struct eval_opts ev;
	struct run_opts ro;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ferry kld -m BASE FILE --save-base LOGITS          (the source's log-probabilities)\n"
		"       ferry kld -m MODEL --base-logits LOGITS [--json F]  (MODEL against them)\n"
		"       ferry kld -m MODEL --base BASE FILE [--json F]      (both in one command)\n"
		"KL divergence, same-top-token share and PPL of MODEL against BASE over a text, in llama.cpp's\n"
		"--kl-divergence convention (chunks of --ctx tokens from BOS, the second half scored); LOGITS files are\n"
		"llama-perplexity's --kl-divergence-base files, read and written.\n"
		"  -m, --model DIR        the model evaluated (with --save-base: the base)\n"
		EVAL_OPTS_USAGE
		"  --json FILE            the statistics as JSON\n");
	run_opts_usage(f);
}

static int parse_args(int argc, char **argv, struct kld_args *a)
{
	enum { O_JSON = 256, O_SAVE, O_BLOGITS, O_BASE };
	static const struct option lo[] = {{"model", required_argument, 0, 'm'},
					   EVAL_OPTS_LONG,
					   {"json", required_argument, 0, O_JSON},
					   {"save-base", required_argument, 0, O_SAVE},
					   {"base-logits", required_argument, 0, O_BLOGITS},
					   {"base", required_argument, 0, O_BASE},
					   {"help", no_argument, 0, 'h'},
					   RUN_OPTS_LONG,
					   {0}};
	memset(a, 0, sizeof(*a));
	eval_opts_default(&a->ev);
	run_opts_default(&a->ro);
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "m:h", lo, NULL)) != -1) {
		int rc;
		switch (c) {
		case 'm': a->model = optarg; break;
		case O_JSON: a->json = optarg; break;
		case O_SAVE: a->save = optarg; break;
		case O_BLOGITS: a->base_logits = optarg; break;
		case O_BASE: a->base = optarg; break;
		case 'h': usage(stdout); exit(0);
		case '?': return opt_hint("kld", argv, "m:h", lo);
		default:
			if ((rc = eval_opts_parse(&a->ev, c, optarg)) == 1 && (rc = run_opts_parse(&a->ro, c, optarg)) == 1)
				return opt_hint("kld", argv, "m:h", lo);
			if (rc)
				return 2;
		}
	}
	int modes = !!a->save + !!a->base_logits + !!a->base, files = argc - optind;
	if (!a->model || modes != 1) {
		fprintf(stderr, "ferry: kld needs -m MODEL and exactly one of --save-base, --base-logits, --base\n");
		usage(stderr);
		return 2;
	}
	if (files != (a->base_logits ? 0 : 1)) {
		fprintf(stderr, "ferry: kld %s\n",
			a->base_logits ? "--base-logits takes no text FILE (the tokens are in LOGITS)"
				       : "needs one text FILE");
		return 2;
	}
	a->file = files ? argv[optind] : NULL;
	eval_opts_finish(&a->ev);
	return run_opts_check(&a->ro);
}

/* u16 per vocabulary entry in a row, with the two floats in front (llama.cpp's nv). */
static size_t row_u16(int V)
{
	return 2 * (((size_t)V + 1) / 2) + 4;
}

/* What the --save-base pass keeps while it runs. */
struct save_ctx {
	int V, fd;
	uint16_t *rows; /* [max_logits, nv] */
	double *nll, sum, count;
	const char *path;
};

/* A row of logits as log-probabilities in the LOGITS file's u16 encoding; returns the nll of target. */
static double encode_row(const float *x, int V, int target, uint16_t *out)
{
	float mx = x[0], mn = x[0];
	for (int i = 1; i < V; i++) {
		mx = x[i] > mx ? x[i] : mx;
		mn = x[i] < mn ? x[i] : mn;
	}
	if (mn < mx - (float)KLD_LP_RANGE)
		mn = mx - (float)KLD_LP_RANGE;
	double sum = 0;
	for (int i = 0; i < V; i++)
		sum += exp((double)x[i] - mx);
	float lse = (float)log(sum), scale = (mx - mn) / 65535.0f, min_lp = mn - mx - lse;
	memcpy(out, &scale, sizeof(float));
	memcpy(out + 2, &min_lp, sizeof(float));
	uint16_t *q = out + 4;
	for (int i = 0; i < V; i++)
		q[i] = scale > 0 && x[i] > mn ? (uint16_t)lrintf((x[i] - mn) / scale) : 0;
	if (V & 1)
		q[V] = 0;
	return (double)mx + lse - x[target];
}

static int save_rows(void *ctx, int row0, int n, const float *logits, const int *targets)
{
	struct save_ctx *s = ctx;
	size_t nv = row_u16(s->V);
	(void)row0;
#pragma omp parallel for schedule(static)
	for (int i = 0; i < n; i++)
		s->nll[i] = encode_row(logits + (size_t)i * (size_t)s->V, s->V, targets[i], s->rows + (size_t)i * nv);
	for (int i = 0; i < n; i++)
		s->sum += s->nll[i], s->count++;
	return write_full(s->fd, s->rows, sizeof(uint16_t) * nv * (size_t)n) ? -EIO : 0;
}

/* The statistics of the compare pass, llama.cpp's sums. */
struct kld_stats {
	double nll, nll2, nllb, nllb2, nll_nllb, kld, kld2, dp, dp2;
	long count, same_top;
	float *kld_v, *dp_v; /* per scored row, for the percentiles */
};

struct cmp_ctx {
	int V, fd, row_base; /* row_base: the chunk's first row in kld_v */
	off_t chunk_off;     /* the chunk's rows in the LOGITS file */
	uint16_t *rows;      /* the chunk's base rows [scored, nv] */
	double (*per)[6];    /* per row of a step: nll, nll_base, kld, same, dp */
	struct kld_stats *st;
};

/* One row: MODEL's logits x against the base's encoded row b; out: nll, nll_base, kld, same top, dp. */
static void compare_row(const float *x, int V, const uint16_t *b, int target, double out[6])
{
	int imax = 0;
	for (int i = 1; i < V; i++)
		imax = x[i] > x[imax] ? i : imax;
	double sum = 0;
	for (int i = 0; i < V; i++)
		sum += exp((double)x[i] - x[imax]);
	double lz = x[imax] + log(sum); /* ln q_i = x_i - lz */
	float scale, min_lp;
	memcpy(&scale, b, sizeof(float));
	memcpy(&min_lp, b + 2, sizeof(float));
	const uint16_t *q = b + 4;
	double kld = 0, best = 0;
	int ibase = 0;
	for (int i = 0; i < V; i++) {
		double lp = (double)scale * q[i] + min_lp;
		if (i == 0 || lp > best)
			best = lp, ibase = i;
		if (lp > -KLD_LP_RANGE)
			kld += exp(lp) * (lp - (x[i] - lz));
	}
	double nll = lz - x[target], nllb = -((double)scale * q[target] + min_lp);
	out[0] = nll, out[1] = nllb, out[2] = kld, out[3] = imax == ibase;
	out[4] = exp(-nll) - exp(-nllb);
}

static int compare_rows(void *ctx, int row0, int n, const float *logits, const int *targets)
{
	struct cmp_ctx *c = ctx;
	size_t nv = row_u16(c->V);
#pragma omp parallel for schedule(static)
	for (int i = 0; i < n; i++)
		compare_row(logits + (size_t)i * (size_t)c->V, c->V, c->rows + (size_t)(row0 + i) * nv, targets[i],
			    c->per[i]);
	struct kld_stats *st = c->st;
	for (int i = 0; i < n; i++) { /* in position order: the sums do not depend on the thread count */
		const double *r = c->per[i];
		st->nll += r[0], st->nll2 += r[0] * r[0];
		st->nllb += r[1], st->nllb2 += r[1] * r[1], st->nll_nllb += r[0] * r[1];
		st->kld += r[2], st->kld2 += r[2] * r[2];
		st->same_top += r[3] != 0;
		st->dp += r[4], st->dp2 += r[4] * r[4];
		st->kld_v[c->row_base + row0 + i] = (float)r[2];
		st->dp_v[c->row_base + row0 + i] = (float)r[4];
		st->count++;
	}
	return 0;
}

/* A model opened as the commands open it: layout, tokenizer (for BOS), engine for ctx-token chunks. */
struct kld_model {
	struct layout lay;
	bool lay_open;
	struct tokenizer *tk;
	struct engine *e;
	int bos;
};

static void kld_model_close(struct kld_model *k)
{
	engine_close(k->e);
	tokenizer_free(k->tk);
	if (k->lay_open)
		layout_close(&k->lay);
	memset(k, 0, sizeof(*k));
}

static int kld_model_open(struct kld_model *k, const char *model, const struct kld_args *a, int ctx, char *err,
			  size_t errlen)
{
	int scored = ctx - ctx / 2;
	struct engine_opts eo = {.t_max = a->ev.batch, .max_logits = a->ev.batch < scored ? a->ev.batch : scored, .ctx = ctx,
				 .max_seqs = 1, .no_sched = true};
	run_opts_engine(&a->ro, &eo);
	memset(k, 0, sizeof(*k));
	int rc = layout_open(&k->lay, model, err, errlen);
	k->lay_open = !rc;
	rc = rc ? rc : tokenizer_open(&k->tk, model, err, errlen);
	k->bos = !rc && tokenizer_add_bos(k->tk) ? tokenizer_bos(k->tk) : -1;
	rc = rc ? rc : engine_open(&k->e, &k->lay, &eo, err, errlen);
	if (rc)
		kld_model_close(k);
	return rc;
}

/* Pass 1: BASE over FILE into the LOGITS file at path (written to path.tmp, renamed when complete). */
static int save_base(const struct kld_args *a, const char *base, const char *path, char *err, size_t errlen)
{
	struct kld_model k;
	struct tok_ids ids = {0};
	int rc = kld_model_open(&k, base, a, a->ev.ctx, err, errlen);
	rc = rc ? rc : eval_tokenize(base, a->file, &k.lay, a->ev.ctx, &k.tk, &ids, err, errlen); /* k's tokenizer */
	if (rc) {
		kld_model_close(&k);
		return rc;
	}
	struct model *m = engine_model(k.e);
	int V = m->hp->vocab, ctx = a->ev.ctx, n_chunk = (int)(ids.n / (size_t)ctx);
	if (a->ev.chunks && a->ev.chunks < n_chunk)
		n_chunk = a->ev.chunks;
	char *tmp = malloc(strlen(path) + 5);
	if (!tmp) {
		kld_model_close(&k);
		tok_ids_free(&ids);
		return snprintf(err, errlen, "out of memory"), -ENOMEM;
	}
	sprintf(tmp, "%s.tmp", path);
	struct save_ctx s = {.V = V, .path = path, .fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
	s.rows = malloc(sizeof(uint16_t) * row_u16(V) * (size_t)m->opt.max_logits);
	s.nll = malloc(sizeof(double) * (size_t)m->opt.max_logits);
	float *logits = malloc(sizeof(float) * (size_t)m->opt.max_logits * (size_t)V);
	int *scratch = malloc(sizeof(int) * (size_t)ctx);
	if (s.fd < 0)
		rc = -errno, snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
	else if (!s.rows || !s.nll || !logits || !scratch)
		rc = -ENOMEM, snprintf(err, errlen, "out of memory");
	int32_t head[3] = {ctx, V, n_chunk};
	if (!rc && (write_full(s.fd, KLD_MAGIC, 8) || write_full(s.fd, head, sizeof(head)) ||
		    write_full(s.fd, ids.ids, sizeof(int32_t) * (size_t)ctx * (size_t)n_chunk)))
		rc = -EIO, snprintf(err, errlen, "%s: write failed", tmp);
	fprintf(stderr, "ferry: kld: base %s over %s: %d chunks of %d, %.1f MB of log-probabilities\n", base, a->file,
		n_chunk, ctx, (double)n_chunk * eval_scored(ctx) * (double)row_u16(V) * 2 / 1e6);
	for (int i = 0; !rc && i < n_chunk; i++)
		if ((rc = eval_chunk(m, (const int *)ids.ids + (size_t)i * ctx, k.bos, a->ev.batch, logits, scratch, save_rows,
				     &s, err, errlen)) == -EIO)
			snprintf(err, errlen, "%s: write failed", tmp);
	if (!rc && (fsync(s.fd) || close(s.fd) || (s.fd = -1, rename(tmp, path))))
		rc = -errno, snprintf(err, errlen, "%s: %s", path, strerror(errno));
	if (s.fd >= 0)
		close(s.fd);
	if (rc)
		unlink(tmp);
	else
		fprintf(stderr, "ferry: kld: PPL(base) = %.4f over %.0f tokens, written to %s\n", exp(s.sum / s.count),
			s.count, path);
	free(tmp);
	free(scratch);
	free(logits);
	free(s.nll);
	free(s.rows);
	tok_ids_free(&ids);
	kld_model_close(&k);
	return rc;
}

/* The LOGITS file's header, checked against its size. */
struct logits_file {
	int fd, ctx, V, n_chunk;
	int32_t *tokens;
};

static int logits_open(struct logits_file *f, const char *path, char *err, size_t errlen)
{
	char magic[8];
	int32_t head[3];
	struct stat st;
	memset(f, 0, sizeof(*f));
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0 || fstat(f->fd, &st)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	if (layout_pread_full(f->fd, magic, 8, 0) || memcmp(magic, KLD_MAGIC, 8) || layout_pread_full(f->fd, head, sizeof(head), 8)) {
		snprintf(err, errlen, "%s: not a file of log-probabilities (no \"_logits_\" header)", path);
		return -EINVAL;
	}
	f->ctx = head[0], f->V = head[1], f->n_chunk = head[2];
	if (f->ctx < EVAL_CTX_MIN || f->ctx > 1 << 24 || f->V <= 0 || f->V > 1 << 24 || f->n_chunk <= 0) {
		snprintf(err, errlen, "%s: header: ctx %d, vocabulary %d, %d chunks: not a valid file", path, f->ctx, f->V,
			 f->n_chunk);
		return -EINVAL;
	}
	off_t want = KLD_HEAD + (off_t)sizeof(int32_t) * f->ctx * f->n_chunk +
		     (off_t)f->n_chunk * eval_scored(f->ctx) * (off_t)row_u16(f->V) * 2;
	if (st.st_size != want) {
		snprintf(err, errlen, "%s: %lld bytes, but its header (ctx %d, vocabulary %d, %d chunks) says %lld%s", path,
			 (long long)st.st_size, f->ctx, f->V, f->n_chunk, (long long)want,
			 st.st_size < want ? " (truncated)" : "");
		return -EINVAL;
	}
	f->tokens = malloc(sizeof(int32_t) * (size_t)f->ctx * (size_t)f->n_chunk);
	if (!f->tokens)
		return snprintf(err, errlen, "out of memory"), -ENOMEM;
	return layout_pread_full(f->fd, f->tokens, sizeof(int32_t) * (size_t)f->ctx * (size_t)f->n_chunk, KLD_HEAD)
		       ? (snprintf(err, errlen, "%s: read failed", path), -EIO)
		       : 0;
}

static void logits_close(struct logits_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	free(f->tokens);
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

/* llama.cpp's percentile of sorted values: linear between the neighbours of fraction * (n - 1). */
static double percentile(const float *v, long n, double fraction)
{
	if (fraction <= 0)
		return v[0];
	if (fraction >= 1)
		return v[n - 1];
	double p = fraction * (double)(n - 1);
	long i = (long)p;
	p -= (double)i;
	return (1 - p) * v[i] + p * v[i + 1 < n ? i + 1 : n - 1];
}

/* mean and its standard error of count values with sums s and s2 (llama.cpp's mean_and_uncertainty) */
static void mean_err(double s, double s2, long n, double *mean, double *err)
{
	*mean = s / (double)n;
	double var = s2 / (double)n - *mean * *mean;
	*err = n > 1 && var > 0 ? sqrt(var / (double)(n - 1)) : 0;
}

/* Prints the statistics (and writes --json); st's value arrays are sorted here. */
static int report(const struct kld_args *a, struct kld_stats *st, int ctx, int n_chunk, double seconds)
{
	long n = st->count;
	double lq, lq_e, lb, lb_e, kl, kl_e;
	mean_err(st->nll, st->nll2, n, &lq, &lq_e);
	mean_err(st->nllb, st->nllb2, n, &lb, &lb_e);
	mean_err(st->kld, st->kld2, n, &kl, &kl_e);
	double cov = (st->nll_nllb / (double)n - lq * lb) / (double)(n - 1);
	double ratio_e = sqrt(fmax(0, lq_e * lq_e + lb_e * lb_e - 2 * cov));
	double same = (double)st->same_top / (double)n, same_e = sqrt(same * (1 - same) / (double)(n - 1));
	double dp_mean = st->dp / (double)n, dp_rms = sqrt(st->dp2 / (double)n);
	qsort(st->kld_v, (size_t)n, sizeof(float), cmp_float);
	qsort(st->dp_v, (size_t)n, sizeof(float), cmp_float);
	printf("Mean PPL(Q)                   : %10.6f +/- %10.6f\n", exp(lq), exp(lq) * lq_e);
	printf("Mean PPL(base)                : %10.6f +/- %10.6f\n", exp(lb), exp(lb) * lb_e);
	printf("Mean ln(PPL(Q)/PPL(base))     : %10.6f +/- %10.6f\n", lq - lb, ratio_e);
	printf("Mean    KLD: %10.6f +/- %10.6f\n", kl, kl_e);
	static const struct {
		const char *name;
		double f;
	} pk[] = {{"Maximum", 1}, {"99.9%  ", 0.999}, {"99.0%  ", 0.99}, {"95.0%  ", 0.95}, {"90.0%  ", 0.9},
		  {"Median ", 0.5}, {"10.0%  ", 0.1},   {" 1.0%  ", 0.01}, {"Minimum", 0}};
	for (size_t i = 0; i < sizeof(pk) / sizeof(pk[0]); i++)
		printf("%s KLD: %10.6f\n", pk[i].name, percentile(st->kld_v, n, pk[i].f));
	printf("Mean    Δp: %6.3f%%\n", 100 * dp_mean);
	printf("RMS Δp    : %6.3f%%\n", 100 * dp_rms);
	printf("99.0%%   Δp: %6.3f%%\n", 100 * percentile(st->dp_v, n, 0.99));
	printf(" 1.0%%   Δp: %6.3f%%\n", 100 * percentile(st->dp_v, n, 0.01));
	printf("Same top p: %6.3f +/- %5.3f %%\n", 100 * same, 100 * same_e);
	fprintf(stderr, "ferry: kld: %ld rows of %d chunks of %d in %.1fs\n", n, n_chunk, ctx, seconds);
	if (!a->json)
		return 0;
	json_t *o = json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:i, s:i, s:f}",
			      "ppl", exp(lq), "ppl_base", exp(lb), "ln_ppl_ratio", lq - lb, "ln_ppl_ratio_err", ratio_e,
			      "kld_mean", kl, "kld_err", kl_e, "kld_median", percentile(st->kld_v, n, 0.5), "kld_p99",
			      percentile(st->kld_v, n, 0.99), "kld_max", percentile(st->kld_v, n, 1), "same_top", same,
			      "same_top_err", same_e, "dp_mean", dp_mean, "dp_rms", dp_rms, "n_tokens_scored",
			      (json_int_t)n, "ctx", ctx, "n_chunks", n_chunk, "seconds", seconds);
	int rc = o ? run_opts_json_write(o, a->json, "--json") : -ENOMEM;
	json_decref(o);
	return rc;
}

/* Pass 2: MODEL over the tokens of the LOGITS file at path. */
static int compare(const struct kld_args *a, const char *path, char *err, size_t errlen)
{
	struct logits_file lf;
	struct kld_model k = {0};
	struct kld_stats st = {0};
	int rc = logits_open(&lf, path, err, errlen);
	int n_chunk = lf.n_chunk;
	if (!rc && a->ev.chunks && a->ev.chunks < n_chunk)
		n_chunk = a->ev.chunks;
	struct kld_args ka = *a;
	if (!rc && ka.ev.batch > lf.ctx)
		ka.ev.batch = lf.ctx;
	rc = rc ? rc : kld_model_open(&k, a->model, &ka, lf.ctx, err, errlen);
	struct model *m = rc ? NULL : engine_model(k.e);
	if (!rc && m->hp->vocab != lf.V) {
		snprintf(err, errlen, "%s: a vocabulary of %d, but %s has %d: not the same model family", path, lf.V,
			 a->model, m->hp->vocab);
		rc = -EINVAL;
	}
	int S = eval_scored(lf.ctx);
	size_t nv = row_u16(lf.V), chunk_bytes = sizeof(uint16_t) * nv * (size_t)S;
	struct cmp_ctx c = {.V = lf.V, .fd = lf.fd, .st = &st};
	float *logits = NULL;
	int *scratch = NULL;
	if (!rc) {
		c.rows = malloc(chunk_bytes);
		c.per = malloc(sizeof(*c.per) * (size_t)m->opt.max_logits);
		st.kld_v = malloc(sizeof(float) * (size_t)S * (size_t)n_chunk);
		st.dp_v = malloc(sizeof(float) * (size_t)S * (size_t)n_chunk);
		logits = malloc(sizeof(float) * (size_t)m->opt.max_logits * (size_t)lf.V);
		scratch = malloc(sizeof(int) * (size_t)lf.ctx);
		if (!c.rows || !c.per || !st.kld_v || !st.dp_v || !logits || !scratch)
			rc = -ENOMEM, snprintf(err, errlen, "out of memory");
	}
	double started = now_sec();
	for (int i = 0; !rc && i < n_chunk; i++) {
		int32_t *tok = lf.tokens + (size_t)i * (size_t)lf.ctx;
		for (int j = 0; j < lf.ctx; j++)
			if (tok[j] < 0 || tok[j] >= lf.V) {
				snprintf(err, errlen, "%s: chunk %d: token %d outside the vocabulary", path, i, tok[j]);
				rc = -EINVAL;
				break;
			}
		off_t off = KLD_HEAD + (off_t)sizeof(int32_t) * lf.ctx * lf.n_chunk + (off_t)i * (off_t)chunk_bytes;
		if (!rc && layout_pread_full(lf.fd, c.rows, chunk_bytes, off))
			rc = -EIO, snprintf(err, errlen, "%s: read failed", path);
		c.row_base = i * S;
		double t0 = now_sec();
		rc = rc ? rc : eval_chunk(m, (const int *)tok, k.bos, ka.ev.batch, logits, scratch, compare_rows, &c, err, errlen);
		if (!rc) {
			fprintf(stderr, "[%d] KLD %.6f (%.1fs),", i + 1, st.kld / (double)st.count, now_sec() - t0);
			fflush(stderr);
		}
	}
	if (!rc)
		fprintf(stderr, "\n");
	rc = rc ? rc : report(a, &st, lf.ctx, n_chunk, now_sec() - started);
	free(scratch);
	free(logits);
	free(st.dp_v);
	free(st.kld_v);
	free(c.per);
	free(c.rows);
	kld_model_close(&k);
	logits_close(&lf);
	return rc;
}

int ferry_kld(int argc, char **argv)
{
	struct kld_args a;
	char err[ERR_LEN] = "", model[4096], base[4096];
	int rc = parse_args(argc, argv, &a);
	if (rc || (rc = model_home_resolve(a.model, model, sizeof(model))))
		return rc;
	a.model = model;
	if (a.base && (rc = model_home_resolve(a.base, base, sizeof(base))))
		return rc;
	if (a.save) {
		rc = save_base(&a, a.model, a.save, err, sizeof(err));
	} else if (a.base_logits) {
		rc = compare(&a, a.base_logits, err, sizeof(err));
	} else {
		const char *dir = getenv("TMPDIR");
		char tmp[4096];
		snprintf(tmp, sizeof(tmp), "%s/ferry-kld-%ld.logits", dir && *dir ? dir : "/tmp", (long)getpid());
		rc = save_base(&a, base, tmp, err, sizeof(err));
		rc = rc ? rc : compare(&a, tmp, err, sizeof(err));
		unlink(tmp);
	}
	if (rc)
		fprintf(stderr, "ferry: %s\n", rc == -ENOMEM && !err[0] ? "out of memory" : err);
	return rc ? 1 : 0;
}
