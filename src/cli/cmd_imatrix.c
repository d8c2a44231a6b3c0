/*
 * cmd_imatrix.c: `ferry imatrix -m MODEL TEXT -o FILE`: the importance matrix of a model over a text, the
 * mean square of every input column of every layer matrix and of the output matrix, as llama.cpp's
 * llama-imatrix collects it, written in its GGUF imatrix format (convert/imatrix.h) for `ferry convert
 * --quant MIX --imatrix FILE` (and llama-quantize).
 *
 * The text runs in ppl's chunks (cli/eval_text.h: ctx tokens from BOS); every position's activations count
 * (all ctx rows of each chunk go through every layer), the output matrix's only for the rows whose logits
 * are computed, the scored half, as llama-imatrix's default does. The model's matmul inputs come from the
 * engine's tap (engine/model.h), summed in double in the order the steps run, so the file does not depend
 * on the thread count. The PPL of the scored rows is printed as a check that the model ran right.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "cli/eval_text.h"
#include "cli/ferry.h"
#include "cli/model_home.h"
#include "cli/opt_hint.h"
#include "cli/run_opts.h"
#include "convert/imatrix.h"
#include "engine/engine.h"
#include "layout/layout.h"
#include "text/tokenizer.h"

struct imat_args {
	const char *model, *file, *out;
	struct eval_opts ev;
	struct run_opts ro;
};

/* Which tap feeds a layer matrix, by its GGUF name. */
static const struct {
	const char *name;
	enum model_tap tap;
} tap_of[] = {
	{"attn_q.weight", MODEL_TAP_ATTN_IN},   {"attn_k.weight", MODEL_TAP_ATTN_IN},
	{"attn_v.weight", MODEL_TAP_ATTN_IN},   {"attn_output.weight", MODEL_TAP_ATTN_OUT},
	{"ffn_gate.weight", MODEL_TAP_FFN_IN},  {"ffn_up.weight", MODEL_TAP_FFN_IN},
	{"ffn_down.weight", MODEL_TAP_FFN_DOWN},
};

/* The sums: per unit (L layers + the head) and tap, x^2 per column and the rows. */
struct collector {
	int L;
	int64_t cols[MODEL_TAP_COUNT];
	double *sum[MODEL_TAP_COUNT]; /* [L + 1, cols] */
	double rows[MODEL_TAP_COUNT];  /* of layer 0 (every layer sees the same rows) and of the head */
	double nll, count;             /* the scored rows' */
	int V;
};

static int collect(void *ctx, int layer, enum model_tap which, const float *x, int n, int64_t cols)
{
	struct collector *c = ctx;
	if (cols != c->cols[which] || layer < 0 || layer > c->L)
		return -EINVAL;
	double *s = c->sum[which] + (size_t)layer * (size_t)cols;
#pragma omp parallel for schedule(static)
	for (int64_t j = 0; j < cols; j++) {
		double a = s[j];
		for (int i = 0; i < n; i++) {
			double v = x[(size_t)i * (size_t)cols + (size_t)j];
			a += v * v;
		}
		s[j] = a;
	}
	if (layer == 0 || which == MODEL_TAP_OUTPUT)
		c->rows[which] += n;
	return 0;
}

static int score_rows(void *ctx, int row0, int n, const float *logits, const int *targets)
{
	struct collector *c = ctx;
	(void)row0;
	for (int i = 0; i < n; i++)
		c->nll += eval_nll(logits + (size_t)i * (size_t)c->V, c->V, targets[i]), c->count++;
	return 0;
}

/* One entry per matrix of the model the sums cover: layer matrices by tap_of, the output matrix (and, when
 * it is the embedding's, token_embd.weight too, the name llama.cpp gives the tied matrix). */
static int build(const struct collector *c, const struct layout *lay, struct imatrix *im, char *err, size_t errlen)
{
	memset(im, 0, sizeof(*im));
	int cap = (c->L + 1) * (int)(sizeof(tap_of) / sizeof(tap_of[0])) + 2;
	im->e = calloc((size_t)cap, sizeof(*im->e));
	if (!im->e)
		return snprintf(err, errlen, "out of memory"), -ENOMEM;
	for (int u = 0; u <= c->L; u++) {
		const struct layout_unit *lu = layout_unit_get(lay, u);
		for (int t = 0; t < lu->n_tensors; t++) {
			const struct layout_tensor *lt = &lu->tensors[t];
			int which = -1;
			for (size_t k = 0; u < c->L && k < sizeof(tap_of) / sizeof(tap_of[0]); k++)
				if (!strcmp(lt->name, tap_of[k].name))
					which = (int)tap_of[k].tap;
			if (u == c->L && !strcmp(lt->name, "output.weight"))
				which = MODEL_TAP_OUTPUT;
			if (which < 0 || lt->ndim != 2)
				continue;
			if (lt->shape[1] != c->cols[which]) {
				snprintf(err, errlen, "layer %d: %s has %lld columns, its input %lld", u, lt->name,
					 (long long)lt->shape[1], (long long)c->cols[which]);
				return -EINVAL;
			}
			bool tied = u == c->L && lay->embed.n_tensors && lay->embed.tensors[0].file == lt->file;
			for (int k = 0; k < 1 + tied; k++) {
				struct imatrix_entry *e = &im->e[im->n++];
				char name[LAYOUT_NAME_MAX + 16];
				if (u == c->L)
					snprintf(name, sizeof(name), "%s", k ? "token_embd.weight" : lt->name);
				else
					snprintf(name, sizeof(name), "blk.%d.%s", u, lt->name);
				e->name = strdup(name);
				e->cols = c->cols[which], e->n_mat = 1, e->count = c->rows[which];
				e->imp = malloc(sizeof(float) * (size_t)e->cols);
				if (!e->name || !e->imp)
					return snprintf(err, errlen, "out of memory"), -ENOMEM;
				const double *s = c->sum[which] + (size_t)u * (size_t)e->cols;
				for (int64_t j = 0; j < e->cols; j++)
					e->imp[j] = e->count > 0 ? (float)(s[j] / e->count) : 0;
			}
		}
	}
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ferry imatrix -m MODEL TEXT -o FILE [options]\n"
		"The importance matrix of MODEL over TEXT (the mean square of each input column of every matrix), in\n"
		"llama.cpp's GGUF imatrix format, for ferry convert --quant MIX --imatrix FILE (and llama-quantize).\n"
		"  -m, --model DIR        the model (ideally the unquantized source)\n"
		"  -o, --output FILE      where to write it (default imatrix.gguf)\n"
		EVAL_OPTS_USAGE);
	run_opts_usage(f);
}

static int parse_args(int argc, char **argv, struct imat_args *a)
{
	static const struct option lo[] = {{"model", required_argument, 0, 'm'},
					   {"output", required_argument, 0, 'o'},
					   EVAL_OPTS_LONG,
					   {"help", no_argument, 0, 'h'},
					   RUN_OPTS_LONG,
					   {0}};
	memset(a, 0, sizeof(*a));
	eval_opts_default(&a->ev);
	a->out = "imatrix.gguf";
	run_opts_default(&a->ro);
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "m:o:h", lo, NULL)) != -1) {
		int rc;
		switch (c) {
		case 'm': a->model = optarg; break;
		case 'o': a->out = optarg; break;
		case 'h': usage(stdout); exit(0);
		case '?': return opt_hint("imatrix", argv, "m:o:h", lo);
		default:
			if ((rc = eval_opts_parse(&a->ev, c, optarg)) == 1 && (rc = run_opts_parse(&a->ro, c, optarg)) == 1)
				return opt_hint("imatrix", argv, "m:o:h", lo);
			if (rc)
				return 2;
		}
	}
	if (!a->model || optind != argc - 1) {
		fprintf(stderr, "ferry: imatrix needs -m MODEL and one text FILE\n");
		usage(stderr);
		return 2;
	}
	a->file = argv[optind];
	eval_opts_finish(&a->ev);
	return run_opts_check(&a->ro);
}

static int imatrix_main(const struct imat_args *a, const struct layout *lay, char *err, size_t errlen)
{
	struct tokenizer *tk = NULL;
	struct tok_ids ids = {0};
	struct engine *e = NULL;
	struct collector c = {.L = lay->hp.n_layers, .V = lay->hp.vocab};
	struct imatrix im = {0};
	int scored = a->ev.ctx - a->ev.ctx / 2;
	struct engine_opts eo = {.t_max = a->ev.batch, .max_logits = a->ev.batch < scored ? a->ev.batch : scored, .ctx = a->ev.ctx,
				 .max_seqs = 1, .no_sched = true};
	run_opts_engine(&a->ro, &eo);
	const struct layout_hparams *hp = &lay->hp;
	c.cols[MODEL_TAP_ATTN_IN] = c.cols[MODEL_TAP_FFN_IN] = c.cols[MODEL_TAP_OUTPUT] = hp->d_model;
	c.cols[MODEL_TAP_ATTN_OUT] = (int64_t)hp->n_heads * hp->head_dim;
	c.cols[MODEL_TAP_FFN_DOWN] = hp->ffn_dim;
	int rc = 0;
	for (int t = 0; !rc && t < MODEL_TAP_COUNT; t++)
		if (!(c.sum[t] = calloc((size_t)(c.L + 1) * (size_t)c.cols[t], sizeof(double))))
			rc = -ENOMEM, snprintf(err, errlen, "out of memory");
	rc = rc ? rc : eval_tokenize(a->model, a->file, lay, a->ev.ctx, &tk, &ids, err, errlen);
	rc = rc ? rc : engine_open(&e, lay, &eo, err, errlen);
	struct model *m = rc ? NULL : engine_model(e);
	if (!rc && (rc = model_set_tap(m, collect, &c)))
		snprintf(err, errlen, "out of memory");
	int bos = !rc && tokenizer_add_bos(tk) ? tokenizer_bos(tk) : -1;
	int n_chunk = rc ? 0 : (int)(ids.n / (size_t)a->ev.ctx);
	if (a->ev.chunks && a->ev.chunks < n_chunk)
		n_chunk = a->ev.chunks;
	float *logits = rc ? NULL : malloc(sizeof(float) * (size_t)m->opt.max_logits * (size_t)c.V);
	int *scratch = rc ? NULL : malloc(sizeof(int) * (size_t)a->ev.ctx);
	if (!rc && (!logits || !scratch))
		rc = -ENOMEM, snprintf(err, errlen, "out of memory");
	if (!rc)
		fprintf(stderr, "ferry: imatrix: %s: %d chunks of %d tokens\n", a->file, n_chunk, a->ev.ctx);
	double t0 = now_sec();
	for (int i = 0; !rc && i < n_chunk; i++) {
		rc = eval_chunk(m, (const int *)ids.ids + (size_t)i * (size_t)a->ev.ctx, bos, a->ev.batch, logits, scratch,
				score_rows, &c, err, errlen);
		if (!rc) {
			fprintf(stderr, "[%d]%.4f,", i + 1, exp(c.nll / c.count));
			fflush(stderr);
		}
	}
	if (!rc && n_chunk)
		fprintf(stderr, "\n");
	rc = rc ? rc : build(&c, lay, &im, err, errlen);
	im.chunks = n_chunk;
	const char *base = strrchr(a->file, '/');
	rc = rc ? rc : imatrix_write(&im, a->out, base ? base + 1 : a->file, a->ev.ctx, err, errlen);
	if (!rc)
		fprintf(stderr, "ferry: imatrix: %d matrices over %.0f tokens (PPL %.4f) in %.1fs, written to %s\n", im.n,
			c.rows[MODEL_TAP_ATTN_IN], exp(c.nll / c.count), now_sec() - t0, a->out);
	imatrix_free(&im);
	free(scratch);
	free(logits);
	engine_close(e);
	tok_ids_free(&ids);
	tokenizer_free(tk);
	for (int t = 0; t < MODEL_TAP_COUNT; t++)
		free(c.sum[t]);
	return rc;
}

int ferry_imatrix(int argc, char **argv)
{
	struct imat_args a;
	struct layout lay;
	char err[ERR_LEN] = "", model[4096];
	int rc = parse_args(argc, argv, &a);
	if (rc || (rc = model_home_resolve(a.model, model, sizeof(model))))
		return rc;
	a.model = model;
	if ((rc = layout_open(&lay, a.model, err, sizeof(err))) == 0) {
		rc = imatrix_main(&a, &lay, err, sizeof(err));
		layout_close(&lay);
	}
	if (rc)
		fprintf(stderr, "ferry: %s\n", rc == -ENOMEM && !err[0] ? "out of memory" : err);
	return rc ? 1 : 0;
}
