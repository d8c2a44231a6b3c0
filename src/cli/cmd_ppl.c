/*
 * cmd_ppl.c: `ferry ppl`: perplexity of a model over a text file, in llama.cpp's convention (its
 * examples/perplexity, the default mode), so the numbers compare with llama-perplexity's:
 *   - the whole file is tokenized once, BOS/EOS as the model's tokenizer settings say;
 *   - the tokens are cut into n_chunk = n_tokens / ctx chunks of ctx tokens (the tail is dropped; a text
 *     of fewer than ctx tokens is refused; llama.cpp refuses fewer than 2 x ctx, for no reason of the math);
 *   - each chunk runs from position 0 in a fresh sequence, its first token replaced by BOS when the
 *     tokenizer adds one, in steps of --batch tokens (chunked prefill through the KV cache);
 *   - only the second half is scored: for positions j in [ctx/2, ctx - 1), the negative log-likelihood of
 *     token j + 1 under softmax(logits[j]), in double on the host;
 *   - PPL = exp(mean nll); its error is llama.cpp's: PPL x sqrt((mean(nll^2) - mean(nll)^2) / (count - 1)).
 * Only the scored rows' logits are asked of the model (n_logits), so the logits buffer holds at most
 * min(batch, ctx - ctx/2) rows of V.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/eval_text.h"
#include "cli/ferry.h"
#include "cli/opt_hint.h"
#include "cli/model_home.h"
#include "layout/layout.h"
#include "engine/engine.h"
#include "cli/run_opts.h"
#include "text/tokenizer.h"
#include "base/util.h"


struct ppl_args {
	const char *model, *file, *json;
	struct eval_opts ev;
	struct run_opts ro;
};

/* What a run measured. */
struct ppl_result {
	double nll, nll2; /* sums over the scored tokens */
	long count;       /* scored tokens */
	int n_tokens, n_chunks;
	double seconds;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ferry ppl -m MODEL.ferry FILE [options]\n"
		"Perplexity of the model over the text in FILE, as llama.cpp's llama-perplexity computes it: chunks of\n"
		"--ctx tokens, each from BOS, scored on their second half.\n"
		"  -m, --model DIR        model directory made by ferry convert (its tokenizer reads FILE)\n"
		EVAL_OPTS_USAGE
		"  --json FILE            write the result (ppl, stderr, n_chunks, n_tokens_scored, ctx, kv, seconds)\n");
	run_opts_usage(f);
}

static int parse_args(int argc, char **argv, struct ppl_args *a)
{
	enum { O_JSON = 256 };
	static const struct option lo[] = {{"model", required_argument, 0, 'm'},
					   EVAL_OPTS_LONG,
					   {"json", required_argument, 0, O_JSON},
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
		case 'h': usage(stdout); exit(0);
		case '?': return opt_hint("ppl", argv, "m:h", lo);
		default:
			if ((rc = eval_opts_parse(&a->ev, c, optarg)) == 1 && (rc = run_opts_parse(&a->ro, c, optarg)) == 1)
				return opt_hint("ppl", argv, "m:h", lo);
			if (rc)
				return 2;
		}
	}
	if (!a->model || optind != argc - 1) {
		fprintf(stderr, "ferry: ppl needs -m MODEL and one text FILE\n");
		usage(stderr);
		return 2;
	}
	a->file = argv[optind];
	eval_opts_finish(&a->ev);
	return run_opts_check(&a->ro);
}

/* The evaluation's buffers: logits (max_logits, V), their nll [max_logits], the chunk as stepped [ctx]. */
struct ppl_bufs {
	float *logits;
	double *nll;
	int *toks;
	int V;
	struct ppl_result *r;
};

/* A step's scored rows into r, in position order, so the sums do not depend on the thread count. */
static int ppl_rows(void *ctx, int row0, int n, const float *logits, const int *targets)
{
	struct ppl_bufs *pb = ctx;
	(void)row0;
#pragma omp parallel for schedule(static)
	for (int i = 0; i < n; i++)
		pb->nll[i] = eval_nll(logits + (size_t)i * (size_t)pb->V, pb->V, targets[i]);
	for (int i = 0; i < n; i++) {
		pb->r->nll += pb->nll[i];
		pb->r->nll2 += pb->nll[i] * pb->nll[i];
		pb->r->count++;
	}
	return 0;
}

static double ppl_value(const struct ppl_result *r)
{
	return exp(r->nll / (double)r->count);
}

/* llama.cpp's error of the estimate: the standard error of the mean nll, times the PPL. */
static double ppl_error(const struct ppl_result *r)
{
	double mean = r->nll / (double)r->count, var = r->nll2 / (double)r->count - mean * mean;
	return r->count > 1 && var > 0 ? sqrt(var / (double)(r->count - 1)) * ppl_value(r) : 0;
}

static int ppl_eval(const struct ppl_args *a, struct model *m, const struct tok_ids *ids, int bos, struct ppl_result *r,
		    char *err, size_t errlen)
{
	int ctx = a->ev.ctx;
	r->n_tokens = (int)ids->n;
	r->n_chunks = (int)(ids->n / (size_t)ctx);
	if (a->ev.chunks && a->ev.chunks < r->n_chunks)
		r->n_chunks = a->ev.chunks;
	struct ppl_bufs pb = {.logits = malloc(sizeof(float) * (size_t)m->opt.max_logits * (size_t)m->hp->vocab),
			      .nll = malloc(sizeof(double) * (size_t)m->opt.max_logits),
			      .toks = malloc(sizeof(int) * (size_t)ctx),
			      .V = m->hp->vocab,
			      .r = r};
	int rc = pb.logits && pb.nll && pb.toks ? 0 : -ENOMEM;
	if (rc)
		snprintf(err, errlen, "out of memory");
	fprintf(stderr, "ferry: ppl: %s: %d tokens, %d chunks of %d (scoring %d tokens each), batch %d, kv %s\n",
		a->file, r->n_tokens, r->n_chunks, ctx, eval_scored(ctx), a->ev.batch, kv_fmt_name(m->opt.kv_fmt));
	double t0 = now_sec();
	for (int i = 0; !rc && i < r->n_chunks; i++) {
		rc = eval_chunk(m, (const int *)ids->ids + (size_t)i * ctx, bos, a->ev.batch, pb.logits, pb.toks, ppl_rows, &pb,
				err, errlen);
		if (!rc) {
			fprintf(stderr, "[%d]%.4f,", i + 1, ppl_value(r));
			fflush(stderr);
		}
	}
	r->seconds = now_sec() - t0;
	if (r->n_chunks)
		fprintf(stderr, "\n");
	free(pb.toks);
	free(pb.nll);
	free(pb.logits);
	return rc;
}

/* --json: the result. */
static int write_json(const char *path, const struct ppl_args *a, const struct model *m, const struct ppl_result *r)
{
	json_t *o = json_pack("{s:f, s:f, s:i, s:I, s:i, s:i, s:s, s:f, s:s, s:i}", "ppl", ppl_value(r), "stderr",
			      ppl_error(r), "n_chunks", r->n_chunks, "n_tokens_scored", (json_int_t)r->count, "ctx",
			      a->ev.ctx, "batch", a->ev.batch, "kv", kv_fmt_name(m->opt.kv_fmt), "seconds", r->seconds, "device",
			      m->b->ops->name, "n_tokens", r->n_tokens);
	int rc = o ? run_opts_json_write(o, path, "--json") : -ENOMEM;
	json_decref(o);
	return rc;
}

/* The command on an open model: tokenize, evaluate, print. Returns the exit code. */
static int ppl_main(const struct ppl_args *ap, const struct layout *lay)
{
	const struct ppl_args a = *ap;
	char err[ERR_LEN] = "";
	struct tokenizer *tk = NULL;
	struct tok_ids ids = {0};
	struct engine *e = NULL;
	struct ppl_result r = {0};
	int scored = a.ev.ctx - a.ev.ctx / 2; /* rows of logits a chunk asks for: its second half */
	struct engine_opts eo = {.t_max = a.ev.batch, .max_logits = a.ev.batch < scored ? a.ev.batch : scored, .ctx = a.ev.ctx,
				 .max_seqs = 1, .no_sched = true};
	run_opts_engine(&a.ro, &eo);
	int rc = eval_tokenize(a.model, a.file, lay, a.ev.ctx, &tk, &ids, err, sizeof(err));
	int bos = !rc && tokenizer_add_bos(tk) ? tokenizer_bos(tk) : -1;
	rc = rc ? rc : engine_open(&e, lay, &eo, err, sizeof(err));
	rc = rc ? rc : ppl_eval(&a, engine_model(e), &ids, bos, &r, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "ferry: %s\n", rc == -ENOMEM && !err[0] ? "out of memory" : err);
	} else {
		printf("PPL = %.4f +/- %.5f\n", ppl_value(&r), ppl_error(&r));
		fprintf(stderr, "ferry: ppl: %ld tokens scored in %.1fs (%.1f tokens/s through the model)\n", r.count,
			r.seconds, (double)r.n_chunks * a.ev.ctx / (r.seconds > 0 ? r.seconds : 1e-9));
		if (a.json)
			rc = write_json(a.json, &a, engine_model(e), &r);
	}
	engine_close(e);
	tok_ids_free(&ids);
	tokenizer_free(tk);
	return rc ? 1 : 0;
}

int ferry_ppl(int argc, char **argv)
{
	struct ppl_args a;
	struct layout lay;
	char err[ERR_LEN];
	char model[4096];
	int rc = parse_args(argc, argv, &a);
	if (rc || (rc = model_home_resolve(a.model, model, sizeof(model))))
		return rc;
	a.model = model;
	if (!rc && layout_open(&lay, a.model, err, sizeof(err))) {
		fprintf(stderr, "ferry: %s\n", err);
		rc = 1;
	}
	if (!rc) {
		rc = ppl_main(&a, &lay);
		layout_close(&lay);
	}
	return rc;
}
