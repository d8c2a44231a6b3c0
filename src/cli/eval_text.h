/*
 * eval_text.h: a text through a model in llama.cpp's perplexity convention, shared by `ferry ppl` and
 * `ferry kld`: the whole text tokenized once (special tokens as the tokenizer adds them), cut into chunks
 * of ctx tokens; each chunk runs from position 0 in a fresh sequence with its first token replaced by BOS
 * where the tokenizer adds one, in steps of `batch` tokens; only the second half is scored: the rows of
 * positions j in [ctx/2, ctx - 1), each predicting token j + 1.
 */
#ifndef FERRY_EVAL_TEXT_H
#define FERRY_EVAL_TEXT_H

#include <stddef.h>

struct layout;
struct model;
struct tokenizer;
struct tok_ids;

#define EVAL_CTX_MIN 8 /* at least 3 scored positions per chunk, so an error estimate has count - 1 > 0 */

/* The options of the commands that evaluate a text (ppl, kld, imatrix): --ctx, --chunks, --batch. */
struct eval_opts {
	int ctx, chunks, batch; /* chunks 0: all; batch 0: min(ctx, 512) until eval_opts_finish */
};
enum { EVAL_O_CTX = 200, EVAL_O_CHUNKS, EVAL_O_BATCH };
#define EVAL_OPTS_LONG                                                                                     \
	{"ctx", required_argument, 0, EVAL_O_CTX}, {"chunks", required_argument, 0, EVAL_O_CHUNKS},         \
		{"batch", required_argument, 0, EVAL_O_BATCH}
#define EVAL_OPTS_USAGE                                                                                    \
	"  --ctx N                tokens per chunk (default 512)\n"                                          \
	"  --chunks N             at most the first N chunks (default: all)\n"                               \
	"  --batch B              tokens per step through the model (default: min(ctx, 512)); a chunk runs in\n" \
	"                         ceil(ctx / B) steps through the KV cache\n"
/* Defaults: ctx 512, all chunks. */
void eval_opts_default(struct eval_opts *e);
/* getopt's c with optarg arg: 0 taken, 1 not one of these, 2 a bad value (said on stderr). */
int eval_opts_parse(struct eval_opts *e, int c, const char *arg);
/* batch 0 becomes min(ctx, 512). */
void eval_opts_finish(struct eval_opts *e);

/* Scored rows of a chunk: ctx - 1 - ctx/2. */
static inline int eval_scored(int ctx)
{
	return ctx - 1 - ctx / 2;
}

/* FILE through model's tokenizer (*tk: opened from the model directory unless the caller has it open) into ids; refuses an empty file,
 * a tokenizer larger than the model's vocabulary and a text shorter than one chunk of ctx. */
int eval_tokenize(const char *model, const char *file, const struct layout *lay, int ctx, struct tokenizer **tk,
		  struct tok_ids *ids, char *err, size_t errlen);

/* The scored rows of one step: rows row0 .. row0 + n - 1 of the chunk (0: position ctx/2), logits [n, V],
 * targets[i] the token row0 + i predicts. Nonzero stops the chunk (returned by eval_chunk). */
typedef int (*eval_rows_fn)(void *ctx, int row0, int n, const float *logits, const int *targets);

/* One chunk of m->opt.ctx tokens (tok: as in the text) in a fresh sequence, in steps of batch tokens;
 * logits: m->opt.max_logits rows of V; scratch: ctx ints. Calls fn for each step's scored rows in order. */
int eval_chunk(struct model *m, const int *tok, int bos, int batch, float *logits, int *scratch, eval_rows_fn fn,
	       void *fn_ctx, char *err, size_t errlen);

/* -log softmax(row)[target], in double. */
double eval_nll(const float *row, int n_vocab, int target);

#endif
