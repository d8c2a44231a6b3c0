/*
 * cmd_batch.c: `ferry batch -m MODEL IN.jsonl -o OUT.jsonl`: every request of a JSONL file through the step
 * scheduler together (src/engine/scheduler.h), so each streamed layer serves every request in flight.
 *
 * Input lines: {"id": ..., "prompt": "..."} or {"id": ..., "messages": [{"role", "content"}, ...]} (the
 * model's chat template, with the generation prompt), with optional "max_tokens", "temperature", "top_p",
 * "top_k", "min_p", "presence_penalty", "frequency_penalty", "stop" (a string or a list of strings), "seed",
 * "ignore_eos", "speculative" (false: no speculative steps for this line under --spec), "response_format"
 * ({"type": "json_object"} or {"type": "json_schema", "json_schema": {"schema": ...}}) and "grammar" (GBNF):
 * the output held to that grammar, as the server does (src/serve/structured.h, constrain.h; such a line
 * takes no speculative steps) (src/serve/request.h; unlike the server, a line without "temperature" is
 * greedy). Output lines:
 * {"id", "text", "tokens" (ids), "finish_reason" ("stop" | "length"), "usage": {"prompt_tokens",
 * "completion_tokens", "total_tokens"}}, in the order requests finish.
 *
 * Resumable: each finished request is one write() of a whole line to OUT (opened O_APPEND) followed by
 * fdatasync, so a crash, kill -9 or Ctrl-C loses no finished result. On start, the ids already in OUT are
 * skipped; a last line without its newline (a write cut by a crash) is cut off first, so a rerun never
 * misreads it. Invalid input lines and requests that cannot run (too long for --ctx) go to the error file
 * (OUT.errors.jsonl unless --errors; rewritten by every run, as they are found again in IN, and only made when
 * there is an error) as {"line", "id",
 * "error"} and are named on stderr; the rest continues.
 * Exit: 0 all done, 3 some lines failed (the error file says which), 1 error, 130 interrupted (resumable).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "text/chat.h"
#include "cli/ferry.h"
#include "cli/opt_hint.h"
#include "cli/model_home.h"
#include "layout/layout.h"
#include "engine/engine.h"
#include "serve/request.h"
#include "cli/run_opts.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "base/strmap.h"
#include "serve/constrain.h"
#include "serve/structured.h"
#include "text/tokenizer.h"
#include "base/util.h"

#define BATCH_CHUNK 4096

struct batch_args {
	const char *model, *in, *out, *errors, *stats_json;
	int max_batch, max_tokens, ctx, chunk;
	bool warmup;
	struct run_opts ro;
};

/* One request and what the output line needs. */
struct breq {
	struct sched_req r;
	json_t *id;
	int line;
	struct req_params p;
	struct tok_stream ts;
	struct tok_buf text;
	struct gram *gram;     /* "response_format" or "grammar" (NULL: free decode) */
	struct gram_state *gs;
};

struct batch {
	const struct batch_args *a;
	const struct layout_hparams *hp;
	struct tokenizer *tk;
	const struct sched *s;   /* the engine's, while it runs */
	int out_fd, err_fd;
	int n_total, n_done, n_failed;
	long long gen_tokens;
	double t0;
	bool tty;
	int io_rc;
	struct constrain cons; /* the constrained requests' token bytes and trie (made by the first) */
	int n_constrained;
};

static volatile sig_atomic_t batch_interrupted;

static void on_signal(int sig)
{
	(void)sig;
	batch_interrupted = 1;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: ferry batch -m MODEL.ferry IN.jsonl -o OUT.jsonl [options]\n"
		   "  -o, --output FILE      results, one JSON line per finished request (appended; ids already\n"
		   "                         there are skipped, so an interrupted run resumes)\n"
		   "  --errors FILE          invalid lines and failed requests (default OUT.errors.jsonl)\n"
		   "  --max-batch N          most requests in flight (default 64; the planner may lower it)\n"
		   "  -n, --max-tokens N     default max_tokens of a request (default 256)\n"
		   "  --ctx N                positions per request (default: the longest prompt + its max_tokens)\n"
		   "  --chunk C              tokens per pass over the layers (default 4096)\n"
		   "  --warmup               one untimed pass over every layer first (fills the RAM tier; benchmarks)\n"
		   "  --stats-json FILE      write time, tokens, steps, bytes uploaded and peak memory as JSON\n");
	run_opts_usage(f);
}

static int parse_args(int argc, char **argv, struct batch_args *a)
{
	enum { O_ERRORS = 256, O_MAX_BATCH, O_CTX, O_CHUNK, O_WARMUP, O_SJSON };
	static const struct option lo[] = {{"model", required_argument, 0, 'm'},
					   {"output", required_argument, 0, 'o'},
					   {"errors", required_argument, 0, O_ERRORS},
					   {"max-batch", required_argument, 0, O_MAX_BATCH},
					   {"max-tokens", required_argument, 0, 'n'},
					   {"ctx", required_argument, 0, O_CTX},
					   {"chunk", required_argument, 0, O_CHUNK},
					   {"warmup", no_argument, 0, O_WARMUP},
					   {"stats-json", required_argument, 0, O_SJSON},
					   {"help", no_argument, 0, 'h'},
					   RUN_OPTS_LONG,
					   {0}};
	memset(a, 0, sizeof(*a));
	a->max_batch = 64;
	a->max_tokens = 256;
	a->chunk = BATCH_CHUNK;
	run_opts_default(&a->ro);
	int c;
	long v;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "m:o:n:h", lo, NULL)) != -1) {
		int bad = 0, r;
		const char *name = NULL;
		switch (c) {
		case 'm': a->model = optarg; break;
		case 'o': a->out = optarg; break;
		case O_ERRORS: a->errors = optarg; break;
		case O_MAX_BATCH: bad = parse_int(optarg, 1, 4096, &v); a->max_batch = (int)v; name = "--max-batch"; break;
		case 'n': bad = parse_int(optarg, 0, 1 << 24, &v); a->max_tokens = (int)v; name = "--max-tokens"; break;
		case O_CTX: bad = parse_int(optarg, 1, 1 << 24, &v); a->ctx = (int)v; name = "--ctx"; break;
		case O_CHUNK: bad = parse_int(optarg, 1, 1 << 20, &v); a->chunk = (int)v; name = "--chunk"; break;
		case O_WARMUP: a->warmup = true; break;
		case O_SJSON: a->stats_json = optarg; break;
		case 'h': usage(stdout); exit(0);
		case '?': return opt_hint("batch", argv, "m:o:n:h", lo);
		default:
			if ((r = run_opts_parse(&a->ro, c, optarg)) == 1)
				return opt_hint("batch", argv, "m:o:n:h", lo);
			if (r)
				return r;
		}
		if (bad) {
			fprintf(stderr, "ferry: %s: bad value '%s'\n", name, optarg);
			return 2;
		}
	}
	if (!a->model || !a->out || optind != argc - 1) {
		fprintf(stderr, "ferry: batch needs -m MODEL, IN.jsonl and -o OUT.jsonl\n");
		usage(stderr);
		return 2;
	}
	a->in = argv[optind];
	return run_opts_check(&a->ro);
}

/* The key of an id in the done set: its compact JSON. */
static char *id_key(const json_t *id)
{
	return json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS);
}

/* The ids already in OUT (created when missing). A last line without its newline is cut off. */
static int load_done(const char *path, struct strmap *done, char *err, size_t errlen)
{
	char *text = NULL;
	size_t len = 0;
	int rc = read_file_all(path, &text, &len);
	if (rc == -ENOENT)
		return 0;
	if (rc) {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	size_t keep = len;
	while (keep > 0 && text[keep - 1] != '\n')
		keep--;
	if (keep < len) {
		fprintf(stderr, "ferry: %s: dropping an unfinished last line (%zu bytes) left by an interrupted run\n", path,
			len - keep);
		if (truncate(path, (off_t)keep)) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			free(text);
			return -errno;
		}
	}
	int line = 0;
	for (size_t at = 0; at < keep; line++) {
		char *e = memchr(text + at, '\n', keep - at);
		json_error_t je;
		json_t *o = json_loadb(text + at, (size_t)(e - (text + at)), JSON_ALLOW_NUL, &je);
		char *k = o && json_object_get(o, "id") ? id_key(json_object_get(o, "id")) : NULL;
		if (!k) {
			snprintf(err, errlen, "%s line %d: not a result line of ferry batch", path, line + 1);
			json_decref(o);
			free(text);
			return -EINVAL;
		}
		strmap_put(done, k, strlen(k), 1);
		free(k);
		json_decref(o);
		at = (size_t)(e - text) + 1;
	}
	free(text);
	return 0;
}

/* One whole line, then fdatasync: the line is either all there after a crash or not at all. */
static int write_line(int fd, json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
	if (!s)
		return -ENOMEM;
	size_t n = strlen(s);
	char *buf = malloc(n + 1);
	if (!buf) {
		free(s);
		return -ENOMEM;
	}
	memcpy(buf, s, n);
	buf[n] = '\n';
	ssize_t w = write(fd, buf, n + 1);
	int rc = w == (ssize_t)(n + 1) ? 0 : -EIO;
	if (!rc && fdatasync(fd))
		rc = -errno;
	free(buf);
	free(s);
	return rc;
}

static void report_error(struct batch *b, int line, const json_t *id, const char *msg)
{
	fprintf(stderr, "ferry: %s line %d: %s\n", b->a->in, line, msg);
	json_t *o = json_pack("{s:i, s:O?, s:s}", "line", line, "id", id, "error", msg);
	if (b->err_fd < 0 && (b->err_fd = open(b->a->errors, O_WRONLY | O_APPEND | O_CREAT, 0644)) < 0)
		fprintf(stderr, "ferry: %s: %s\n", b->a->errors, strerror(errno));
	if (!o || write_line(b->err_fd, o))
		b->io_rc = -EIO;
	json_decref(o);
	b->n_failed++;
}

/* A request from one input line into q; a message in msg when the line is invalid. */
static int parse_request(struct batch *b, struct jinja_tmpl **tmpl, const json_t *o, struct breq *q, char *msg,
			 size_t n)
{
	static const struct req_defaults defaults = {.temp = 0, .seed = 0};
	char param[REQ_PARAM_LEN];
	struct tok_ids ids = {0};
	int rc = req_params_parse(o, &defaults, &q->p, param, msg, n);
	rc = rc ? rc : req_prompt_ids(o, REQ_PROMPT_ANY, b->tk, b->a->model, tmpl, NULL, &ids, param, msg, n);
	struct req_tools no_tools = {0}; /* tools are the server's: a batch line's output is its text */
	rc = rc ? rc : req_grammar(o, &no_tools, tool_fmt_of(b->tk), &q->gram, param, msg, n);
	if (!rc && q->gram) {
		rc = constrain_vocab(&b->cons, b->tk, b->hp->vocab);
		rc = rc ? rc : gram_state_new(q->gram, &q->gs);
		if (rc == -E2BIG) { /* a clear 400 / line error, not a server fault */
			snprintf(msg, n, "the grammar nests too deeply for the matcher (nullable repetitions "
				 "inside repetitions)");
			rc = -EINVAL;
		}
		q->r.constrained = true;
		b->n_constrained++;
	}
	if (rc) {
		tok_ids_free(&ids);
		return rc;
	}
	int mt = q->p.max_tokens >= 0 ? q->p.max_tokens : b->a->max_tokens;
	q->r.max_new = mt;
	q->r.ignore_eos = q->p.ignore_eos;
	q->r.no_spec = q->p.no_spec;
	q->r.n_prompt = (int)ids.n;
	q->r.toks = realloc(ids.ids, sizeof(int) * ((size_t)ids.n + (size_t)mt + 1));
	if (!q->r.toks) {
		free(ids.ids);
		return -ENOMEM;
	}
	return sampler_init(&q->r.smp, &q->p.sc, b->hp->vocab);
}

/* The text so far, and whether it now holds a stop string (the text is cut before it). */
static bool batch_on_token(void *ctx, struct sched_req *r, int tok)
{
	struct batch *b = ctx;
	struct breq *q = (struct breq *)r;
	if (sched_is_eos(b->s, tok))
		return false;
	size_t before = q->text.n;
	tok_stream_push(&q->ts, tok, &q->text);
	if (req_stop_cut(&q->text, before, q->p.stops, q->p.n_stops))
		return true;
	b->gen_tokens++;
	return q->gs && constrain_feed(&b->cons, q->gs, tok); /* true: the grammar's text is complete */
}

static bool batch_allow(void *ctx, struct sched_req *r, int tok)
{
	struct batch *b = ctx;
	return constrain_allow(&b->cons, ((struct breq *)r)->gs, tok, sched_is_eos(b->s, tok));
}

static void batch_mask(void *ctx, struct sched_req *r, float *row)
{
	struct batch *b = ctx;
	constrain_mask(&b->cons, ((struct breq *)r)->gs, b->s, row);
}

static void breq_free(struct breq *q)
{
	json_decref(q->id);
	req_params_free(&q->p);
	tok_buf_free(&q->text);
	sampler_free(&q->r.smp);
	free(q->r.toks);
	gram_state_free(q->gs);
	gram_free(q->gram);
}

static void batch_on_done(void *ctx, struct sched_req *r)
{
	struct batch *b = ctx;
	struct breq *q = (struct breq *)r;
	if (r->finish == SCHED_FINISH_ERROR) {
		report_error(b, q->line, q->id, r->err);
		return;
	}
	if (r->finish != SCHED_FINISH_STOP)
		tok_stream_flush(&q->ts, &q->text);
	bool eos = r->finish == SCHED_FINISH_STOP && !r->ignore_eos && sched_is_eos(b->s, r->toks[r->n - 1]);
	int n = r->n_gen - eos;
	json_t *ids = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(ids, json_integer(r->toks[r->n_prompt + i]));
	json_t *o = json_pack("{s:O, s:s%, s:o, s:s, s:{s:i, s:i, s:i}}", "id", q->id, "text", q->text.p ? q->text.p : "",
			      q->text.n, "tokens", ids, "finish_reason", r->finish == SCHED_FINISH_STOP ? "stop" : "length",
			      "usage", "prompt_tokens", r->n_prompt, "completion_tokens", r->n_gen, "total_tokens",
			      r->n_prompt + r->n_gen);
	if (!o || write_line(b->out_fd, o))
		b->io_rc = -EIO;
	json_decref(o);
	b->n_done++;
	free(r->toks);
	r->toks = NULL;
}

static void progress(struct batch *b, bool last)
{
	if (!b->tty && !last)
		return;
	double t = now_sec() - b->t0, rate = t > 0 ? (double)b->gen_tokens / t : 0;
	int left = b->n_total - b->n_done - b->n_failed;
	char eta[48] = ""; /* only once there is a rate to estimate it from */
	if (b->n_done > 0 && left > 0 && !last)
		snprintf(eta, sizeof(eta), ", ETA %.0fs", t / b->n_done * left);
	fprintf(stderr, "%sferry: batch %d/%d done, %d failed, %lld tokens, %.1f tok/s%s%s%s", b->tty ? "\r" : "",
		b->n_done, b->n_total, b->n_failed, b->gen_tokens, rate, eta, b->tty ? "\033[K" : "", /* erase a longer line */
		last || !b->tty ? "\n" : "");
}

/* Reads IN: each valid request not yet in OUT becomes a breq; invalid lines go to the error file. */
static int read_requests(struct batch *b, struct strmap *done, struct breq **out, int *n_out, char *err, size_t errlen)
{
	char *text = NULL;
	size_t len = 0;
	int rc = read_file_all(b->a->in, &text, &len), line = 0, cap = 0, skipped = 0;
	if (rc) {
		snprintf(err, errlen, "%s: %s", b->a->in, strerror(-rc));
		return rc;
	}
	struct strmap seen;
	struct jinja_tmpl *tmpl = NULL;
	if (strmap_init(&seen, 1024)) {
		free(text);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (size_t at = 0; !rc && at < len;) {
		char *e = memchr(text + at, '\n', len - at), msg[512] = "";
		size_t n = (e ? (size_t)(e - text) : len) - at;
		line++;
		json_error_t je;
		json_t *o = n ? json_loadb(text + at, n, JSON_ALLOW_NUL, &je) : NULL;
		at += n + 1;
		if (!n || (n == 1 && text[at - 2] == '\r'))
			continue;
		const json_t *id = json_object_get(o, "id");
		char *k = id && (json_is_string(id) || json_is_integer(id)) ? id_key(id) : NULL;
		if (!o)
			snprintf(msg, sizeof(msg), "not JSON: %s", je.text);
		else if (!json_is_object(o))
			snprintf(msg, sizeof(msg), "not a JSON object");
		else if (!k)
			snprintf(msg, sizeof(msg), "\"id\" must be a string or an integer");
		else if (strmap_get(&seen, k, strlen(k)) >= 0)
			snprintf(msg, sizeof(msg), "id %s appears twice", k);
		if (msg[0] || strmap_get(done, k, strlen(k)) >= 0) {
			if (msg[0])
				report_error(b, line, json_is_object(o) ? id : NULL, msg);
			else
				skipped++;
			if (k)
				strmap_put(&seen, k, strlen(k), 1);
			free(k);
			json_decref(o);
			continue;
		}
		strmap_put(&seen, k, strlen(k), 1);
		free(k);
		if (*n_out == cap) {
			cap = cap ? 2 * cap : 256;
			struct breq *nq = realloc(*out, sizeof(*nq) * (size_t)cap);
			if (!nq) {
				json_decref(o);
				rc = -ENOMEM;
				break;
			}
			*out = nq;
		}
		struct breq *q = &(*out)[*n_out];
		memset(q, 0, sizeof(*q));
		q->line = line;
		q->id = json_incref((json_t *)id);
		int prc = parse_request(b, &tmpl, o, q, msg, sizeof(msg));
		json_decref(o);
		if (prc == -ENOMEM) {
			rc = prc;
		} else if (prc) {
			report_error(b, line, q->id, msg);
			breq_free(q);
		} else {
			tok_stream_init(&q->ts, b->tk, false, false);
			q->ts.lossy = true;
			(*n_out)++;
		}
	}
	if (skipped)
		fprintf(stderr, "ferry: %d request%s already in %s, skipped\n", skipped, skipped == 1 ? "" : "s", b->a->out);
	if (rc == -ENOMEM)
		snprintf(err, errlen, "out of memory");
	jinja_free(tmpl);
	strmap_free(&seen);
	free(text);
	return rc;
}

/* --stats-json: the engine's figures (what bench/bench_serve.py reads) and the batch's. */
static int write_stats(const char *path, const struct batch *b, struct engine *e, double t)
{
	struct engine_stats es;
	engine_stats(e, &es);
	json_t *o = engine_stats_json(&es);
	int rc = o && !json_object_set_new(o, "requests", json_integer(b->n_done)) &&
			 !json_object_set_new(o, "total_s", json_real(t)) &&
			 !json_object_set_new(o, "gen_tokens", json_integer(b->gen_tokens))
		 ? 0
		 : -ENOMEM;
	rc = rc ? rc : run_opts_json_write(o, path, "--stats-json");
	json_decref(o);
	return rc;
}

static int run_batch(struct batch *b, const struct layout *lay, struct breq *q, int n, char *err, size_t errlen)
{
	const struct batch_args *a = b->a;
	int rc = 0;
	int cap = 1, seqs = a->max_batch < n ? a->max_batch : n;
	for (int i = 0; i < n; i++) {
		int need = q[i].r.n_prompt + q[i].r.max_new;
		cap = need > cap ? need : cap;
	}
	cap = a->ctx ? a->ctx : cap;
	int chunk = a->chunk > seqs ? a->chunk : seqs;
	struct engine_opts eo = {.t_max = chunk, .max_logits = seqs, .ctx = cap, .max_seqs = seqs,
				 .t_max_auto = !a->chunk || a->chunk == BATCH_CHUNK};
	run_opts_engine(&a->ro, &eo);
	int *eos = NULL;
	if (run_opts_eos(b->hp, b->tk, &eos, &eo.n_eos)) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	eo.eos = eos;
	struct engine *e = NULL;
	struct sched *s = NULL;
	rc = engine_open(&e, lay, &eo, err, errlen);
	if (!rc) {
		s = engine_sched(e);
		b->s = s;
		s->on_token = batch_on_token;
		s->on_done = batch_on_done;
		if (b->n_constrained) {
			s->allow = batch_allow;
			s->mask = batch_mask;
		}
		s->ctx = b;
	}
	if (!rc && a->warmup)
		rc = sched_warmup(s, q[0].r.toks[0], err, errlen);
	for (int i = 0; !rc && i < n; i++)
		rc = sched_add(s, &q[i].r);
	b->t0 = now_sec();
	while (!rc && !batch_interrupted && !b->io_rc) {
		rc = sched_step(s, err, errlen);
		progress(b, false);
	}
	rc = rc == 1 ? 0 : rc;
	if (!rc && b->io_rc) {
		snprintf(err, errlen, "%s: writing a result failed: %s", a->out, strerror(-b->io_rc));
		rc = b->io_rc;
	}
	progress(b, true);
	if (!rc) {
		struct backend_mem bm;
		backend_mem_get(engine_backend(e), &bm);
		double t = now_sec() - b->t0;
		fprintf(stderr, "ferry: batch: %d request%s in %.1fs, %lld tokens generated (%.1f tok/s), %d steps",
			b->n_done, b->n_done == 1 ? "" : "s", t, b->gen_tokens, t > 0 ? (double)b->gen_tokens / t : 0.0,
			s->st.steps);
		if (s->spec.mode != SPEC_OFF) {
			long long g = s->st.spec_guessed[SPEC_SRC_LOOKUP] + s->st.spec_guessed[SPEC_SRC_DRAFT];
			long long acc = s->st.spec_accepted[SPEC_SRC_LOOKUP] + s->st.spec_accepted[SPEC_SRC_DRAFT];
			fprintf(stderr,
				", %.2f tokens per speculative pass (%lld passes, %lld of %lld guesses accepted), %.2f tokens "
				"per decode step (%lld steps of the requests, plain ones included)",
				sched_spec_tokens_per_pass(s), s->st.spec_passes, acc, g, sched_tokens_per_step(&s->st),
				s->st.gen_steps);
		}
		fprintf(stderr, "%s", bm.budget ? "" : "\n");
		if (bm.budget)
			fprintf(stderr, ", peak VRAM %.3f GiB\n", (double)bm.device_used_peak / (1 << 30));
		if (a->stats_json)
			rc = write_stats(a->stats_json, b, e, t);
	}
	if (!rc && batch_interrupted) {
		snprintf(err, errlen, "interrupted: %d request%s finished %s in %s; run again to resume", b->n_done,
			 b->n_done == 1 ? "" : "s", b->n_done == 1 ? "is" : "are", a->out);
		rc = -EINTR;
	}
	engine_close(e);
	b->s = NULL;
	free(eos);
	return rc;
}

int ferry_batch(int argc, char **argv)
{
	struct batch_args a;
	char model[4096];
	int rc = parse_args(argc, argv, &a);
	if (rc || (rc = model_home_resolve(a.model, model, sizeof(model))))
		return rc;
	a.model = model;
	char err[ERR_LEN], errpath[4096];
	snprintf(errpath, sizeof(errpath), "%s.errors.jsonl", a.out);
	if (!a.errors)
		a.errors = errpath;
	struct batch b = {.a = &a, .out_fd = -1, .err_fd = -1, .tty = isatty(2)};
	struct strmap done;
	struct breq *q = NULL;
	if (strmap_init(&done, 1024)) {
		fprintf(stderr, "ferry: out of memory\n");
		return 1;
	}
	int n = 0;
	struct layout lay;
	if ((rc = layout_open(&lay, a.model, err, sizeof(err)))) {
		fprintf(stderr, "ferry: %s\n", err);
		strmap_free(&done);
		return 1;
	}
	b.hp = &lay.hp;
	rc = tokenizer_open(&b.tk, a.model, err, sizeof(err));
	rc = rc ? rc : load_done(a.out, &done, err, sizeof(err));
	if (!rc) {
		b.out_fd = open(a.out, O_WRONLY | O_APPEND | O_CREAT, 0644);
		/* the error file is this run's (the lines are found again in IN), made at the first error */
		if (b.out_fd < 0 || (unlink(a.errors) && errno != ENOENT)) {
			snprintf(err, sizeof(err), "%s: %s", b.out_fd < 0 ? a.out : a.errors, strerror(errno));
			rc = -errno;
		}
	}
	rc = rc ? rc : read_requests(&b, &done, &q, &n, err, sizeof(err));
	b.n_total = n + b.n_failed;
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (!rc && n)
		rc = run_batch(&b, &lay, q, n, err, sizeof(err));
	else if (!rc)
		fprintf(stderr, "ferry: batch: nothing to do (%d invalid line%s)\n", b.n_failed, b.n_failed == 1 ? "" : "s");
	if (rc)
		fprintf(stderr, "ferry: %s\n", err);
	for (int i = 0; i < n; i++)
		breq_free(&q[i]);
	free(q);
	constrain_free(&b.cons);
	strmap_free(&done);
	tokenizer_free(b.tk);
	if (b.out_fd >= 0)
		close(b.out_fd);
	if (b.err_fd >= 0)
		close(b.err_fd);
	layout_close(&lay);
	return rc == -EINTR ? 130 : rc ? 1 : b.n_failed ? 3 : 0;
}
