/*
 * cmd_run.c: `ferry run`: tokenize the prompt (or take ids), prefill it (in chunks of --chunk tokens, each
 * chunk one pass over the layers), then decode one token per pass, printing the text as it is generated
 * (ids when the prompt was given as ids, or with --print-ids). Generation stops at the model's
 * end-of-generation tokens. Sampling defaults come from the model's generation_config (greedy when it has
 * none).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "text/chat.h"
#include "cli/ferry.h"
#include "cli/model_home.h"
#include "layout/layout.h"
#include "engine/engine.h"
#include "engine/rates.h"
#include "engine/logits_dump.h"
#include "cli/opt_hint.h"
#include "cli/run_opts.h"
#include "cli/sample_opts.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "text/tokenizer.h"
#include "base/util.h"

struct run_args {
	const char *model, *prompt, *prompt_file, *prompt_ids, *ids_file, *logits_file, *system, *stats_json;
	int n_predict, chunk, ctx, kv_pages, max_batch;
	struct run_opts ro;
	bool ignore_eos, stats, print_ids, chat, show_prompt, plan, stream_all, warmup, kv_host;
	struct sample_opts so;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ferry run -m MODEL.ferry (-p TEXT | -f FILE | --prompt-ids IDS) [options]\n"
		"  -m, --model DIR        model directory made by ferry convert\n"
		"  -p, --prompt TEXT      prompt text (tokenized with the model's tokenizer, BOS as the model says)\n"
		"  -f, --file FILE        prompts from a file, one per line ('-' for stdin; empty lines skipped): all\n"
		"                         are generated together, each output printed as a JSON string on one line\n"
		"  --prompt-ids 1,2,3     prompt as token ids (output is ids too)\n"
		"  --prompt-ids-file FILE prompts as token ids, one prompt per line (1,2,3)\n"
		"  --chat                 the prompt is a user turn, rendered with the model's chat template\n"
		"  --system TEXT          with --chat: a system turn before it\n"
		"  --show-prompt          print the rendered chat prompt to stderr\n"
		"  --print-ids            print generated token ids instead of text\n"
		"  -n, --n-predict N      tokens to generate (default 32; -1: until the end of sequence or --ctx)\n"
		"  --ignore-eos           do not stop at the end-of-sequence token\n"
		"  --chunk C              at most C tokens per pass over the layers (default: the whole prompt; several\n"
		"                         prompts: all of them, up to 4096)\n"
		"  --ctx N                context size in tokens (default: longest prompt + n-predict)\n"
		"  --kv-pages N           pages in the KV pool of full-attention layers (default: every sequence at --ctx)\n"
		"  --max-batch N          most sequences generated at once (default: all prompts)\n"
		"  --kv-host              with CUDA: keep every layer's KV pages in pinned host memory, streamed with\n"
		"                         the layer (default: only the layers whose KV does not fit --vram)\n"
		"  --plan                 print the memory plan (KV cache, activations, weight slots, resident layers)\n"
		"                         and exit\n"
		"  --warmup               one untimed pass over every layer first (fills the RAM tier; benchmarks)\n"
		"  --stream-all           stream every layer even when --vram could keep it (benchmarks, tests)\n"
		"  --stats-json FILE      write timing, bytes streamed and peak memory as JSON\n"
		"  --logits FILE          dump the logits of every position (format: src/engine/logits_dump.h)\n"
		"  --stats                print timing and I/O statistics to stderr at exit (without it: one line of\n"
		"                         prefill and decode speed)\n");
	sample_opts_usage(f);
	run_opts_usage(f);
}

static int parse_args(int argc, char **argv, struct run_args *a)
{
	enum { O_IDS = 256, O_EOS, O_CHUNK, O_CTX,
	       O_LOGITS, O_STATS, O_PRINT_IDS, O_CHAT, O_SYSTEM, O_SHOW, O_PLAN, O_SJSON, O_STREAM_ALL, O_WARMUP,
	       O_KV_PAGES, O_MAX_BATCH, O_IDS_FILE, O_KV_HOST };
	static const struct option lo[] = {{"model", required_argument, 0, 'm'},
					   {"prompt", required_argument, 0, 'p'},
					   {"file", required_argument, 0, 'f'},
					   {"print-ids", no_argument, 0, O_PRINT_IDS},
					   {"chat", no_argument, 0, O_CHAT},
					   {"system", required_argument, 0, O_SYSTEM},
					   {"show-prompt", no_argument, 0, O_SHOW},
					   {"prompt-ids", required_argument, 0, O_IDS},
					   {"prompt-ids-file", required_argument, 0, O_IDS_FILE},
					   {"n-predict", required_argument, 0, 'n'},
					   {"ignore-eos", no_argument, 0, O_EOS},
					   {"chunk", required_argument, 0, O_CHUNK},
					   {"ctx", required_argument, 0, O_CTX},
					   {"kv-pages", required_argument, 0, O_KV_PAGES},
					   {"max-batch", required_argument, 0, O_MAX_BATCH},
					   {"kv-host", no_argument, 0, O_KV_HOST},
					   {"plan", no_argument, 0, O_PLAN},
					   {"stream-all", no_argument, 0, O_STREAM_ALL},
					   {"warmup", no_argument, 0, O_WARMUP},
					   {"stats-json", required_argument, 0, O_SJSON},
					   {"logits", required_argument, 0, O_LOGITS},
					   {"stats", no_argument, 0, O_STATS},
					   {"help", no_argument, 0, 'h'},
					   RUN_OPTS_LONG,
					   SAMPLE_OPTS_LONG,
					   {0}};
	memset(a, 0, sizeof(*a));
	a->n_predict = 32;
	run_opts_default(&a->ro);
	sample_opts_default(&a->so);
	int c;
	long v;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "m:n:p:f:h", lo, NULL)) != -1) {
		int bad = 0;
		const char *name = NULL;
		switch (c) {
		case 'm': a->model = optarg; break;
		case O_IDS: a->prompt_ids = optarg; break;
		case O_IDS_FILE: a->ids_file = optarg; break;
		case 'p': a->prompt = optarg; break;
		case 'f': a->prompt_file = optarg; break;
		case O_PRINT_IDS: a->print_ids = true; break;
		case O_CHAT: a->chat = true; break;
		case O_SYSTEM: a->system = optarg; break;
		case O_SHOW: a->show_prompt = true; break;
		case 'n': bad = parse_int(optarg, -1, 1 << 24, &v); a->n_predict = (int)v; name = "-n"; break;
		case O_EOS: a->ignore_eos = true; break;
		case O_CHUNK: bad = parse_int(optarg, 1, 1 << 20, &v); a->chunk = (int)v; name = "--chunk"; break;
		case O_CTX: bad = parse_int(optarg, 1, 1 << 24, &v); a->ctx = (int)v; name = "--ctx"; break;
		case O_KV_PAGES: bad = parse_int(optarg, 1, 1 << 24, &v); a->kv_pages = (int)v; name = "--kv-pages"; break;
		case O_KV_HOST: a->kv_host = true; break;
		case O_MAX_BATCH: bad = parse_int(optarg, 1, 4096, &v); a->max_batch = (int)v; name = "--max-batch"; break;
		case O_PLAN: a->plan = true; break;
		case O_STREAM_ALL: a->stream_all = true; break;
		case O_WARMUP: a->warmup = true; break;
		case O_SJSON: a->stats_json = optarg; break;
		case O_LOGITS: a->logits_file = optarg; break;
		case O_STATS: a->stats = true; break;
		case 'h': usage(stdout); exit(0);
		case '?': return opt_hint("run", argv, "m:n:p:f:h", lo);
		default:
			if ((bad = run_opts_parse(&a->ro, c, optarg)) == 1)
				bad = sample_opts_parse(&a->so, c, optarg);
			if (bad)
				return 2;
		}
		if (bad) {
			fprintf(stderr, "ferry: %s: bad value '%s'\n", name, optarg);
			return 2;
		}
	}
	if (!a->model || !!a->prompt + !!a->prompt_file + !!a->prompt_ids + !!a->ids_file != 1 || optind != argc) {
		fprintf(stderr, "ferry run: %s; see `ferry run --help`\n",
			!a->model ? "needs -m MODEL" : optind != argc ? "unexpected arguments after the options (quote the prompt)"
					    : "needs one of -p TEXT, -f FILE, --prompt-ids or --prompt-ids-file");
		return 2;
	}
	if ((a->chat || a->system) && (a->prompt_ids || a->ids_file)) {
		fprintf(stderr, "ferry: --chat and --system take a text prompt (-p or -f), not --prompt-ids\n");
		return 2;
	}
	if (a->system && !a->chat) {
		fprintf(stderr, "ferry: --system needs --chat\n");
		return 2;
	}
	return run_opts_check(&a->ro);
}

/* The context of `-n -1` (generate until the end of sequence) without --ctx: the model's, at most this. */
#define RUN_CTX_UNTIL_EOS 4096

/* Tokens per step when several prompts run together and --chunk is not given. */
#define RUN_BATCH_CHUNK 4096

/* --chat: the prompt becomes the user turn (after a --system turn) of the model's chat template (the file
 * the manifest names, chat_template.jinja: src/text/chat_template.c), rendered with add_generation_prompt, BOS/EOS as the tokenizer's
 * texts. As HF's apply_chat_template does, the rendered text is then encoded with special tokens matched
 * and nothing added: the template writes BOS itself. */
static int chat_prompt(const struct run_args *a, const struct tokenizer *tok,
		       const char *user, size_t len, char **out, size_t *out_len, char *err, size_t errlen)
{
	struct jinja_tmpl *t = NULL;
	int rc = chat_template_load(a->model, &t, err, errlen);
	json_t *msgs = json_array(), *m;
	if (!rc && a->system) {
		m = json_pack("{s:s, s:s}", "role", "system", "content", a->system);
		if (!m) {
			snprintf(err, errlen, "--system: the text is not valid UTF-8");
			rc = -EINVAL;
		}
		json_array_append_new(msgs, m);
	}
	if (!rc) {
		m = json_pack("{s:s, s:s%}", "role", "user", "content", user, len);
		if (!m) {
			snprintf(err, errlen, "the prompt is not valid UTF-8");
			rc = -EINVAL;
		}
		json_array_append_new(msgs, m);
	}
	if (!rc)
		rc = chat_render_tok(t, msgs, tok, out, out_len, err, errlen);
	json_decref(msgs);
	jinja_free(t);
	return rc;
}

/* The prompts as ids (prompts.h of this file: n of them, ids[i] of len[i] tokens). */
struct prompts {
	int n;
	int **ids;
	int *len;
};

static void prompts_free(struct prompts *p)
{
	for (int i = 0; i < p->n; i++)
		free(p->ids[i]);
	free(p->ids);
	free(p->len);
	memset(p, 0, sizeof(*p));
}

static int prompts_push(struct prompts *p, int *ids, int n)
{
	int **ni = realloc(p->ids, sizeof(*ni) * (size_t)(p->n + 1));
	if (ni)
		p->ids = ni;
	int *nl = ni ? realloc(p->len, sizeof(*nl) * (size_t)(p->n + 1)) : NULL;
	if (!nl) {
		free(ids);
		return -ENOMEM;
	}
	p->len = nl;
	p->ids[p->n] = ids;
	p->len[p->n++] = n;
	return 0;
}

/* One prompt of ids ("1,2,3"); what names it in messages. */
static int push_ids(const char *list, const char *what, const struct layout *lay, struct prompts *p)
{
	char err[ERR_LEN];
	int *ids, n;
	if (parse_id_list(list, &ids, &n, err, sizeof(err))) {
		fprintf(stderr, "ferry: %s: %s\n", what, err);
		return 2;
	}
	for (int i = 0; i < n; i++)
		if (ids[i] >= lay->hp.vocab) {
			fprintf(stderr, "ferry: %s: token %d is outside the vocabulary of %d\n", what, ids[i], lay->hp.vocab);
			free(ids);
			return 2;
		}
	return prompts_push(p, ids, n) ? 1 : 0;
}

/* One text prompt through the chat template (--chat) and the tokenizer. */
static int encode_prompt(const struct run_args *a, const struct layout *lay, struct tokenizer *tok, const char *text,
			 size_t len, struct prompts *p, char *err, size_t errlen)
{
	struct tok_ids v = {0};
	unsigned flags = TOK_ADD_SPECIAL;
	char *chat = NULL;
	int rc = 0;
	if (a->chat) {
		rc = chat_prompt(a, tok, text, len, &chat, &len, err, errlen);
		text = chat;
		flags = TOK_PARSE_SPECIAL;
		if (!rc && a->show_prompt)
			fprintf(stderr, "%.*s\n", (int)len, text);
	}
	rc = rc ? rc : tokenizer_encode(tok, text, len, flags, &v, err, errlen);
	free(chat);
	if (!rc && tokenizer_n_vocab(tok) > lay->hp.vocab) {
		snprintf(err, errlen, "%s: the tokenizer has %d tokens but the model only %d", a->model, tokenizer_n_vocab(tok),
			 lay->hp.vocab);
		rc = -EINVAL;
	}
	if (!rc && v.n == 0) {
		snprintf(err, errlen, "the prompt is empty");
		rc = -EINVAL;
	}
	if (rc) {
		tok_ids_free(&v);
		return rc;
	}
	return prompts_push(p, v.ids, (int)v.n);
}

/* The prompts as ids: given as ids, -p TEXT, or -f FILE with one prompt per line (empty lines skipped),
 * text through the model's tokenizer, which is then kept for printing the output. */
static int load_prompts(const struct run_args *a, const struct layout *lay, struct tokenizer **tok, struct prompts *p)
{
	char err[ERR_LEN];
	*tok = NULL;
	memset(p, 0, sizeof(*p));
	if (a->prompt_ids)
		return push_ids(a->prompt_ids, "--prompt-ids", lay, p);
	if (a->ids_file) {
		char *text = NULL, line_name[64];
		size_t len = 0;
		int rc = read_file_all(a->ids_file, &text, &len), line = 0;
		if (rc) {
			fprintf(stderr, "ferry: %s: %s\n", a->ids_file, strerror(-rc));
			return 1;
		}
		for (char *s = text, *e; !rc && s && *s; s = e ? e + 1 : NULL) {
			e = strchr(s, '\n');
			if (e)
				*e = 0;
			snprintf(line_name, sizeof(line_name), "line %d", ++line);
			if (*s && strcmp(s, "\r"))
				rc = push_ids(s, line_name, lay, p);
		}
		free(text);
		if (!rc && p->n == 0) {
			fprintf(stderr, "ferry: %s: no prompt\n", a->ids_file);
			rc = 1;
		}
		if (rc)
			prompts_free(p);
		return rc;
	}
	char *text = NULL;
	size_t len = 0;
	int rc = a->prompt_file ? read_file_all(a->prompt_file, &text, &len) : 0;
	if (rc) {
		fprintf(stderr, "ferry: %s: %s\n", a->prompt_file, strerror(-rc));
		return 1;
	}
	rc = tokenizer_open(tok, a->model, err, sizeof(err));
	if (!rc && !text)
		rc = encode_prompt(a, lay, *tok, a->prompt, strlen(a->prompt), p, err, sizeof(err));
	int line = 0;
	for (size_t at = 0; !rc && text && at < len;) {
		size_t e = at;
		line++;
		while (e < len && text[e] != '\n')
			e++;
		size_t n = e > at && text[e - 1] == '\r' ? e - at - 1 : e - at;
		if (n)
			rc = encode_prompt(a, lay, *tok, text + at, n, p, err, sizeof(err));
		if (rc && rc != -ENOMEM)
			snprintf(err + strlen(err), sizeof(err) - strlen(err), " (%s line %d)", a->prompt_file, line);
		at = e + 1;
	}
	if (!rc && p->n == 0) {
		snprintf(err, sizeof(err), "%s: no prompt (every line is empty)", a->prompt_file);
		rc = -EINVAL;
	}
	free(text);
	if (rc) {
		fprintf(stderr, "ferry: %s\n", rc == -ENOMEM ? "out of memory" : err);
		prompts_free(p);
		return 1;
	}
	return 0;
}

/* What a run measured beside the engine's figures, for --stats and --stats-json. */
struct run_result {
	int n_decode;           /* decode tokens (generated tokens after each request's first) */
	int n_gen;              /* tokens generated */
	double t_total;
	int n_seqs;
	double flops_prefill;   /* of every prompt from position 0 */
};

static double forward_flops(const struct layout *lay, int n);

/* The output of a run: one prompt streams its text (or ids) as it is generated; several print one line
 * each in prompt order once done, the text as a JSON string (or the ids). */
struct run_out {
	const struct run_args *a;
	const struct sched *s;
	struct tokenizer *tk;
	struct sched_req *reqs;
	int n_reqs, next_print;
	bool print_text;
	struct tok_stream ts;
	struct tok_buf text;
};

static bool run_on_token(void *ctx, struct sched_req *r, int tok)
{
	struct run_out *o = ctx;
	if (o->n_reqs > 1)
		return false;
	if (!o->print_text) {
		printf(r->n_gen > 1 ? " %d" : "%d", tok);
	} else if (o->a->ignore_eos || !sched_is_eos(o->s, tok)) {
		o->text.n = 0;
		tok_stream_push(&o->ts, tok, &o->text);
		fwrite(o->text.p, 1, o->text.n, stdout);
	}
	fflush(stdout);
	return false;
}

/* Several prompts: the generated tokens of request r, the stop token left out, as one line. */
static void print_line(struct run_out *o, const struct sched_req *r)
{
	int n = r->n_gen - (r->finish == SCHED_FINISH_STOP);
	const int *g = r->toks + r->n_prompt;
	if (!o->print_text) {
		for (int i = 0; i < n; i++)
			printf(i ? " %d" : "%d", g[i]);
		printf("\n");
		return;
	}
	struct tok_stream ts;
	struct tok_buf t = {0};
	tok_stream_init(&ts, o->tk, false, false);
	ts.lossy = true;
	for (int i = 0; i < n; i++)
		tok_stream_push(&ts, g[i], &t);
	tok_stream_flush(&ts, &t);
	json_t *js = json_stringn(t.p ? t.p : "", t.n);
	char *txt = js ? json_dumps(js, JSON_ENCODE_ANY | JSON_ENSURE_ASCII) : NULL;
	json_decref(js);
	printf("%s\n", txt ? txt : "null");
	free(txt);
	tok_buf_free(&t);
}

static void run_on_done(void *ctx, struct sched_req *r)
{
	struct run_out *o = ctx;
	if (r->finish == SCHED_FINISH_ERROR)
		fprintf(stderr, "ferry: prompt %d: %s\n", (int)(r - o->reqs) + 1, r->err);
	if (o->n_reqs == 1)
		return;
	while (o->next_print < o->n_reqs && o->reqs[o->next_print].state == SCHED_DONE)
		print_line(o, &o->reqs[o->next_print++]);
	fflush(stdout);
}

/* The engine's start-up options for these prompts: one step takes the whole of one prompt (or --chunk), or a
 * chunk of several prompts at once. */
static void engine_options(const struct run_args *a, const struct prompts *pr, int ctx, struct engine_opts *eo)
{
	int longest = 0, total = 0;
	for (int i = 0; i < pr->n; i++) {
		longest = pr->len[i] > longest ? pr->len[i] : longest;
		total += pr->len[i];
	}
	int seqs = a->max_batch > 0 && a->max_batch < pr->n ? a->max_batch : pr->n;
	int chunk = a->chunk > 0 ? a->chunk : pr->n == 1 ? longest : total < RUN_BATCH_CHUNK ? total : RUN_BATCH_CHUNK;
	chunk = chunk > seqs ? chunk : seqs;
	memset(eo, 0, sizeof(*eo));
	run_opts_engine(&a->ro, eo);
	eo->t_max = chunk;
	eo->max_logits = a->logits_file ? chunk : seqs;
	eo->ctx = ctx;
	eo->max_seqs = seqs;
	eo->kv_pages = a->kv_pages;
	eo->kv_host = a->kv_host;
	eo->stream_all = a->stream_all;
	eo->t_max_auto = pr->n > 1 && !a->chunk;
	eo->plan_only = a->plan;
}

static int generate(struct run_args *a, struct layout *lay, struct engine *e, struct tokenizer *tk,
		    const struct prompts *pr, struct run_result *res)
{
	const struct layout_hparams *hp = &lay->hp;
	char err[ERR_LEN];
	struct logits_dump dump = {0};
	struct sched *s = engine_sched(e);
	struct run_out o = {.a = a, .s = s, .tk = tk, .n_reqs = pr->n, .print_text = tk && !a->print_ids};
	o.reqs = calloc((size_t)pr->n, sizeof(*o.reqs));
	int rc = o.reqs ? 0 : -ENOMEM, n_init = 0;
	for (int i = 0; !rc && i < pr->n; i++, n_init++) {
		struct sched_req *r = &o.reqs[i];
		int max_new = a->n_predict >= 0 ? a->n_predict : a->ctx - pr->len[i]; /* -n -1: up to the context */
		r->toks = malloc(sizeof(int) * (size_t)(pr->len[i] + max_new + 1));
		rc = r->toks ? sampler_init(&r->smp, &a->so.sc, hp->vocab) : -ENOMEM;
		if (!r->toks)
			break;
		memcpy(r->toks, pr->ids[i], sizeof(int) * (size_t)pr->len[i]);
		r->n_prompt = pr->len[i];
		r->max_new = max_new;
		r->ignore_eos = a->ignore_eos;
	}
	if (rc) {
		fprintf(stderr, "ferry: out of memory\n");
		goto free_reqs;
	}
	if (a->logits_file && (rc = logits_dump_open(&dump, a->logits_file, hp->vocab, err, sizeof(err)))) {
		fprintf(stderr, "ferry: %s\n", err);
		goto out;
	}
	o.reqs[0].dump = a->logits_file ? &dump : NULL;
	s->on_token = run_on_token;
	s->on_done = run_on_done;
	s->ctx = &o;
	if (o.print_text)
		tok_stream_init(&o.ts, tk, false, false), o.ts.lossy = true;
	if (a->warmup)
		rc = sched_warmup(s, pr->ids[0][0], err, sizeof(err));
	double t0 = now_sec();
	for (int i = 0; !rc && i < pr->n; i++)
		rc = sched_add(s, &o.reqs[i]);
	while (!rc && !(rc = sched_step(s, err, sizeof(err))))
		;
	rc = rc == 1 ? 0 : rc;
	if (o.print_text) {
		o.text.n = 0;
		tok_stream_flush(&o.ts, &o.text);
		fwrite(o.text.p, 1, o.text.n, stdout);
		tok_buf_free(&o.text);
	}
	if (pr->n == 1 && o.reqs[0].n_gen)
		printf("\n");
	fflush(stdout);
	*res = (struct run_result){.t_total = now_sec() - t0, .n_seqs = pr->n};
	for (int i = 0; i < pr->n; i++) {
		res->flops_prefill += forward_flops(lay, pr->len[i]);
		res->n_gen += o.reqs[i].n_gen;
		res->n_decode += o.reqs[i].n_gen > 0 ? o.reqs[i].n_gen - 1 : 0;
		rc = rc ? rc : o.reqs[i].finish == SCHED_FINISH_ERROR ? -EIO : 0;
	}
	if (rc && err[0] && rc != -EIO)
		fprintf(stderr, "ferry: %s\n", err);
	else if (!rc && a->logits_file && (rc = logits_dump_close(&dump, err, sizeof(err))))
		fprintf(stderr, "ferry: %s\n", err);
	const struct sched_stats *st = &s->st;
	if (!rc && !a->stats && !a->warmup)
		fprintf(stderr, "ferry: prefill %.1f tok/s (%lld tokens), decode %.1f tok/s (%d tokens)\n",
			st->prefill_tokens / (st->prefill_s > 0 ? st->prefill_s : 1e-9), st->prefill_tokens,
			res->n_decode / (st->decode_s > 0 ? st->decode_s : 1e-9), res->n_decode);
	if (!rc && a->stats) {
		fprintf(stderr,
			"ferry: prefill %lld tokens in %.3fs (%.1f tok/s); decode %d tokens in %.3fs (%.2f tok/s); %d sequences, "
			"%d steps, %lld prompt tokens from the prefix cache\n",
			st->prefill_tokens, st->prefill_s, st->prefill_tokens / (st->prefill_s > 0 ? st->prefill_s : 1e-9),
			res->n_decode, st->decode_s, res->n_decode / (st->decode_s > 0 ? st->decode_s : 1e-9), pr->n, st->steps,
			st->cached_tokens);
		struct engine_stats es;
		engine_stats(e, &es);
		engine_stats_print(stderr, &es);
	}
out:
	if (rc)
		logits_dump_abort(&dump);
	s->on_token = NULL;
	s->on_done = NULL;
free_reqs:
	for (int i = 0; i < n_init; i++) {
		sampler_free(&o.reqs[i].smp);
		free(o.reqs[i].toks);
	}
	free(o.reqs);
	return rc ? 1 : 0;
}

/* Multiply-adds of a forward over n tokens from position 0, x2: every weight matrix once per token, and
 * causal attention (q.k and p.v over the visible keys of each query). */
static double forward_flops(const struct layout *lay, int n)
{
	const struct layout_hparams *hp = &lay->hp;
	double params = 0, keys = 0;
	for (int u = 0; u <= hp->n_layers; u++) {
		const struct layout_unit *lu = layout_unit_get(lay, u);
		for (int i = 0; i < lu->n_tensors; i++)
			if (lu->tensors[i].ndim == 2)
				params += (double)lu->tensors[i].shape[0] * (double)lu->tensors[i].shape[1];
	}
	for (int l = 0; l < hp->n_layers; l++) {
		int w = hp->window[l];
		for (int t = 0; t < n; t++)
			keys += w > 0 && t + 1 > w ? w : t + 1;
	}
	return 2.0 * params * n + 4.0 * keys * hp->n_heads * hp->head_dim;
}

/* --stats-json: the engine's figures and the run's, for the benchmark scripts, through a temporary name. */
static int write_stats_json(const char *path, struct engine *e, const struct run_result *r)
{
	struct engine_stats es;
	engine_stats(e, &es);
	json_t *o = engine_stats_json(&es);
	int rc = o && !json_object_set_new(o, "decode_tokens", json_integer(r->n_decode)) &&
			 !json_object_set_new(o, "flops_prefill", json_real(r->flops_prefill)) &&
			 !json_object_set_new(o, "n_seqs", json_integer(r->n_seqs)) &&
			 !json_object_set_new(o, "gen_tokens", json_integer(r->n_gen)) &&
			 !json_object_set_new(o, "total_s", json_real(r->t_total))
		 ? 0
		 : -ENOMEM;
	rc = rc ? rc : run_opts_json_write(o, path, "--stats-json");
	json_decref(o);
	return rc;
}

int ferry_run(int argc, char **argv)
{
	struct run_args a;
	char model[4096];
	int rc = parse_args(argc, argv, &a);
	if (rc || (rc = model_home_resolve(a.model, model, sizeof(model))))
		return rc;
	a.model = model;
	char err[ERR_LEN];
	struct layout lay;
	if (layout_open(&lay, a.model, err, sizeof(err))) {
		fprintf(stderr, "ferry: %s\n", err);
		return 1;
	}
	struct prompts pr;
	struct tokenizer *tk = NULL;
	if ((rc = load_prompts(&a, &lay, &tk, &pr))) {
		tokenizer_free(tk);
		layout_close(&lay);
		return rc;
	}
	sample_opts_model_defaults(&a.so, &lay);
	int longest = 0;
	for (int i = 0; i < pr.n; i++)
		longest = pr.len[i] > longest ? pr.len[i] : longest;
	int max_pos = lay.hp.max_pos > 0 && lay.hp.max_pos < RUN_CTX_UNTIL_EOS ? lay.hp.max_pos : RUN_CTX_UNTIL_EOS;
	int cap = a.ctx ? a.ctx : a.n_predict < 0 ? max_pos : longest + a.n_predict;
	a.ctx = cap;
	int ret = 1, *eos = NULL, n_eos = 0;
	struct engine *e = NULL;
	if (longest > cap) {
		fprintf(stderr, "ferry: the prompt (%d tokens) does not fit --ctx %d\n", longest, cap);
		goto out;
	}
	if (a.logits_file && pr.n > 1) {
		fprintf(stderr, "ferry: --logits takes one prompt, not %d\n", pr.n);
		goto out;
	}
	struct engine_opts eo;
	engine_options(&a, &pr, cap, &eo);
	if (run_opts_eos(&lay.hp, tk, &eos, &n_eos)) {
		fprintf(stderr, "ferry: out of memory\n");
		goto out;
	}
	eo.eos = eos;
	eo.n_eos = n_eos;
	/* A device that selects the top k itself hands over k logits instead of V (same tokens: sampler.h). */
	struct sampler smp;
	if (!a.logits_file && !sampler_init(&smp, &a.so.sc, lay.hp.vocab)) {
		eo.top_k = sampler_top_k_needed(&smp);
		sampler_free(&smp);
	}
	rc = engine_open(&e, &lay, &eo, err, sizeof(err));
	if (!rc && (a.plan || a.stats)) {
		if (engine_rates(e))
			rates_print(stderr, engine_rates(e));
		plan_print(stderr, engine_plan(e));
	}
	if (!rc && a.plan) {
		ret = 0;
		goto out;
	}
	if (rc) {
		fprintf(stderr, "ferry: %s\n", err);
		goto out;
	}
	struct run_result res = {0};
	ret = generate(&a, &lay, e, tk, &pr, &res);
	if (!ret && a.stats_json && write_stats_json(a.stats_json, e, &res))
		ret = 1;
out:
	engine_close(e);
	free(eos);
	tokenizer_free(tk);
	prompts_free(&pr);
	layout_close(&lay);
	return ret;
}
