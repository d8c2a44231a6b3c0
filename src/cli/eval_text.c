/* eval_text.c: chunked evaluation of a text (eval_text.h), shared by ppl and kld. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/eval_text.h"
#include "base/util.h"
#include "engine/engine.h"
#include "layout/layout.h"
#include "text/tokenizer.h"

void eval_opts_default(struct eval_opts *e)
{
	e->ctx = 512, e->chunks = 0, e->batch = 0;
}

int eval_opts_parse(struct eval_opts *e, int c, const char *arg)
{
	static const char *const names[] = {"ctx", "chunks", "batch"};
	int *dst[] = {&e->ctx, &e->chunks, &e->batch};
	if (c < EVAL_O_CTX || c > EVAL_O_BATCH)
		return 1;
	int i = c - EVAL_O_CTX;
	long v, min = c == EVAL_O_CTX ? EVAL_CTX_MIN : 1;
	if (parse_int(arg, min, 1 << 30, &v)) {
		fprintf(stderr, "ferry: --%s: bad value '%s' (an integer of at least %ld)\n", names[i], arg, min);
		return 2;
	}
	*dst[i] = (int)v;
	return 0;
}

void eval_opts_finish(struct eval_opts *e)
{
	if (!e->batch)
		e->batch = e->ctx < 512 ? e->ctx : 512;
}

int eval_tokenize(const char *model, const char *file, const struct layout *lay, int ctx, struct tokenizer **tk,
		  struct tok_ids *ids, char *err, size_t errlen)
{
	char *text = NULL;
	size_t len = 0;
	int rc = read_file_all(file, &text, &len);
	if (rc) {
		snprintf(err, errlen, "%s: %s", file, strerror(-rc));
		return rc;
	}
	if (len == 0) {
		snprintf(err, errlen, "%s: the file is empty", file);
		free(text);
		return -EINVAL;
	}
	rc = *tk ? 0 : tokenizer_open(tk, model, err, errlen);
	if (!rc && tokenizer_n_vocab(*tk) > lay->hp.vocab) {
		snprintf(err, errlen, "%s: the tokenizer has %d tokens but the model only %d", model,
			 tokenizer_n_vocab(*tk), lay->hp.vocab);
		rc = -EINVAL;
	}
	if (!rc && (rc = tokenizer_encode(*tk, text, len, TOK_ADD_SPECIAL, ids, err, errlen)) && rc != -ENOMEM) {
		size_t n = strlen(err);
		snprintf(err + n, errlen - n, " (%s)", file);
	}
	if (!rc && (int64_t)ids->n < ctx) {
		int fits = EVAL_CTX_MIN;
		while (fits * 2 <= (int)ids->n)
			fits *= 2;
		if ((int)ids->n >= EVAL_CTX_MIN)
			snprintf(err, errlen, "%s: %zu tokens, fewer than one chunk of --ctx %d (--ctx %d fits)", file,
				 ids->n, ctx, fits);
		else
			snprintf(err, errlen, "%s: %zu tokens, fewer than the shortest chunk (--ctx %d)", file, ids->n,
				 EVAL_CTX_MIN);
		rc = -EINVAL;
	}
	free(text);
	return rc;
}

double eval_nll(const float *row, int n_vocab, int target)
{
	double mx = row[0], sum = 0;
	for (int i = 1; i < n_vocab; i++)
		mx = row[i] > mx ? row[i] : mx;
	for (int i = 0; i < n_vocab; i++)
		sum += exp((double)row[i] - mx);
	return log(sum) + mx - (double)row[target];
}

int eval_chunk(struct model *m, const int *tok, int bos, int batch, float *logits, int *scratch, eval_rows_fn fn,
	       void *fn_ctx, char *err, size_t errlen)
{
	int ctx = m->opt.ctx, first = ctx / 2, seq, cached;
	int rc = model_seq_open(m, NULL, 0, &seq, &cached, err, errlen);
	if (rc)
		return rc;
	memcpy(scratch, tok, sizeof(int) * (size_t)ctx);
	if (bos >= 0)
		scratch[0] = bos;
	struct model_out out = {.logits = logits};
	for (int s = 0; !rc && s < ctx; s += batch) {
		int n = ctx - s < batch ? ctx - s : batch;
		int from = s > first ? s : first; /* the step's first scored position */
		struct model_part p = {.seq = seq, .n = n, .tokens = scratch + s, .n_logits = s + n > from ? s + n - from : 0};
		rc = model_step(m, &p, 1, &out, err, errlen);
		/* the chunk's last position predicts past its end: its row is not scored */
		int rows = rc ? 0 : s + n == ctx ? p.n_logits - 1 : p.n_logits;
		if (rows > 0 && (rc = fn(fn_ctx, from - first, rows, logits, tok + from + 1)) && !err[0])
			snprintf(err, errlen, "evaluating the chunk's logits failed");
	}
	model_seq_close(m, seq);
	return rc;
}
