/*
 * complete.c: POST /v1/chat/completions and /v1/completions (http_internal.h): the request's fields checked
 * and submitted to the worker, the connection suspended until the worker has news (its first token for a
 * stream, its end otherwise), then OpenAI's whole response or its server-sent events; logprobs in OpenAI's
 * shapes (chat: logprobs.content[] entries with top_logprobs; completions: tokens, token_logprobs,
 * top_logprobs, text_offset) and llama.cpp's "timings" beside "usage"; structured output (structured.h):
 * the request's grammar handed to the worker with it, tool calls parsed from the text into "tool_calls"
 * (finish_reason "tool_calls"), a stream holding back text that may begin a call and sending the calls as
 * tool_calls deltas at the end.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "serve/http_internal.h"
#include "serve/structured.h"
#include "base/util.h"

static uint64_t splitmix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t fresh(struct http *h)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return splitmix(atomic_fetch_add(&h->counter, 1) ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec);
}

static const char *finish_reason(enum srv_end e)
{
	return e == SRV_END_STOP ? "stop" : "length";
}

/* The access log: one line per request that got a response from the worker. */
static void log_done(struct http *h, struct srv_req *q, bool stream)
{
	static const char *ends[] = {[SRV_END_NONE] = "?", [SRV_END_STOP] = "stop", [SRV_END_LENGTH] = "length",
				     [SRV_END_CANCEL] = "cancelled", [SRV_END_ERROR] = "error",
				     [SRV_END_SHUTDOWN] = "shutdown"};
	if (h->cfg.quiet)
		return;
	pthread_mutex_lock(&h->v->mu);
	double now = now_sec(), ttft = q->t_first > 0 ? q->t_first - q->t0 : -1;
	fprintf(stderr, "ferry: serve: %s %s%s %d+%d tokens %.2fs", q->id,
		q->done && !q->cancel ? ends[q->end] : "client gone", stream ? " (stream)" : "", q->r.n_prompt, q->n_gen,
		now - q->t0);
	if (ttft >= 0)
		fprintf(stderr, ", first token %.2fs", ttft);
	fputc('\n', stderr);
	pthread_mutex_unlock(&h->v->mu);
}

/* llama.cpp's "timings" (under srv.mu): the prompt (queueing included) and the generated tokens' times. */
static json_t *timings(const struct srv_req *q)
{
	double end = q->done ? q->t_done : now_sec(), first = q->t_first > 0 ? q->t_first : end;
	double pms = (first - q->t0) * 1e3, gms = (end - first) * 1e3;
	int n = q->n_gen > 1 ? q->n_gen - 1 : 0; /* the first token's time is the prompt's */
	return json_pack("{s:i, s:f, s:i, s:f, s:f}", "prompt_n", q->r.n_prompt, "prompt_ms", pms, "predicted_n", q->n_gen,
			 "predicted_ms", gms, "predicted_per_second", gms > 0 ? n / (gms / 1e3) : 0.0);
}

/* ---- logprobs ---- */

/* A token's bytes as the tokenizer decodes it alone. */
static void token_bytes(struct http *h, int tok, struct tok_buf *b)
{
	b->n = 0;
	tokenizer_decode(h->v->tk, &tok, 1, false, false, b);
}

/* {"token", "logprob", "bytes"} of tok (chat). */
static json_t *lp_entry(struct http *h, int tok, float lp, struct tok_buf *b)
{
	token_bytes(h, tok, b);
	struct tok_buf t = {0};
	tok_buf_add_lossy(&t, b->p ? b->p : "", b->n);
	json_t *bytes = json_array();
	for (size_t i = 0; i < b->n; i++)
		json_array_append_new(bytes, json_integer((unsigned char)b->p[i]));
	json_t *o = json_pack("{s:s%, s:f, s:o}", "token", t.p ? t.p : "", t.n, "logprob", (double)lp, "bytes", bytes);
	tok_buf_free(&t);
	return o;
}

/* The logprobs of entries e[0..n): chat's {"content": [...]}, or the completions' four lists (text_offset
 * counted from *offset, which advances). */
static json_t *logprobs_json(struct http *h, const struct srv_lp *e, int n, bool chat, size_t *offset)
{
	struct tok_buf b = {0};
	json_t *o;
	if (chat) {
		json_t *content = json_array();
		for (int i = 0; i < n; i++) {
			json_t *x = lp_entry(h, e[i].tok, e[i].lp, &b), *top = json_array();
			for (int j = 0; j < e[i].n_top; j++)
				json_array_append_new(top, lp_entry(h, e[i].top_tok[j], e[i].top_lp[j], &b));
			json_object_set_new(x, "top_logprobs", top);
			json_array_append_new(content, x);
		}
		o = json_pack("{s:o}", "content", content);
	} else {
		json_t *toks = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
		for (int i = 0; i < n; i++) {
			json_t *x = lp_entry(h, e[i].tok, e[i].lp, &b), *top = json_object();
			json_array_append(toks, json_object_get(x, "token"));
			json_array_append_new(lps, json_real(e[i].lp));
			json_array_append_new(offs, json_integer((json_int_t)*offset));
			*offset += b.n;
			json_decref(x);
			for (int j = 0; j < e[i].n_top; j++) {
				json_t *y = lp_entry(h, e[i].top_tok[j], e[i].top_lp[j], &b);
				const char *k = json_string_value(json_object_get(y, "token"));
				if (!json_object_get(top, k)) /* tokens of the same text (bytes): the best one's */
					json_object_set(top, k, json_object_get(y, "logprob"));
				json_decref(y);
			}
			json_array_append_new(tops, top);
		}
		o = json_pack("{s:o, s:o, s:o, s:o}", "tokens", toks, "token_logprobs", lps, "top_logprobs", tops,
			      "text_offset", offs);
	}
	tok_buf_free(&b);
	return o;
}

/* Copies q's entries from *from on (under srv.mu) and advances *from. */
static struct srv_lp *lp_take(struct srv_req *q, int *from, int *n)
{
	*n = q->n_lp - *from;
	struct srv_lp *e = *n > 0 ? malloc(sizeof(*e) * (size_t)*n) : NULL;
	if (!e) {
		*n = 0;
		return NULL;
	}
	memcpy(e, q->lp + *from, sizeof(*e) * (size_t)*n);
	*from = q->n_lp;
	return e;
}

/* ---- streaming ---- */

struct stream {
	struct http *h;
	struct srv_req *q;
	struct waiter w;
	int n_prompt, lp_sent;
	bool chat, usage, ended;
	const json_t *tools; /* q's (NULL: no tool calls to parse) */
	char id[48];
	long long created;
	size_t sent, lp_off; /* bytes of the request's text sent; text_offset of the next logprob */
	struct tok_buf out;  /* event bytes not yet handed to MHD */
	size_t off;
};

static void event(struct stream *st, json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (s) {
		tok_buf_add(&st->out, "data: ", 6);
		tok_buf_add(&st->out, s, strlen(s));
		tok_buf_add(&st->out, "\n\n", 2);
	}
	free(s);
}

/* A chunk with a text delta (or the role, for a chat's first), or the final one with its finish_reason;
 * lp: the logprobs of the tokens since the last chunk (taken). */
static void event_chunk(struct stream *st, const char *text, size_t n, bool role, const char *finish, json_t *lp)
{
	json_t *choice = json_pack("{s:i, s:o, s:s?}", "index", 0, "logprobs", lp ? lp : json_null(), "finish_reason",
				   finish);
	json_t *t = json_stringn(text ? text : "", text ? n : 0);
	if (st->chat) {
		json_t *delta = json_object();
		if (role)
			json_object_set_new(delta, "role", json_string("assistant"));
		if (text)
			json_object_set(delta, "content", t);
		json_object_set_new(choice, "delta", delta);
	} else {
		json_object_set(choice, "text", t);
	}
	json_decref(t);
	event(st, json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", st->id, "object",
			    st->chat ? "chat.completion.chunk" : "text_completion", "created", st->created, "model",
			    st->h->cfg.name, "choices", choice));
}

/* The chunk of the tool calls (each with its index), before the final one. */
static void event_calls(struct stream *st, json_t *calls)
{
	size_t i;
	json_t *c;
	json_array_foreach(calls, i, c)
		json_object_set_new(c, "index", json_integer((json_int_t)i));
	json_t *choice = json_pack("{s:i, s:{s:o}, s:n, s:n}", "index", 0, "delta", "tool_calls", calls, "logprobs",
				   "finish_reason");
	event(st, json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", st->id, "object", "chat.completion.chunk", "created",
			    st->created, "model", st->h->cfg.name, "choices", choice));
}

/* The request's next events; 1 when some were made, 0 when there is nothing yet (the connection is
 * suspended until the worker wakes it), -1 when the client is gone. */
static int stream_fill(struct stream *st)
{
	struct srv *v = st->h->v;
	struct srv_req *q = st->q;
	pthread_mutex_lock(&v->mu);
	int n_lp = 0;
	struct srv_lp *lp = q->logprobs >= 0 ? lp_take(q, &st->lp_sent, &n_lp) : NULL;
	json_t *lpj = q->logprobs >= 0 && (n_lp || q->ready > st->sent) ? logprobs_json(st->h, lp, n_lp, st->chat, &st->lp_off)
									   : NULL;
	free(lp);
	size_t ready = q->ready;
	json_t *calls = NULL;
	if (st->tools && !q->done) {
		ready = tool_calls_safe(q->text.p, q->ready);
	} else if (st->tools && (q->end == SRV_END_STOP || q->end == SRV_END_LENGTH)) {
		size_t content;
		calls = tool_calls_parse(q->text.p, q->text.n, st->tools, splitmix(st->created ^ (uint64_t)st->id[9]),
					 &content);
		ready = calls ? content : q->ready;
	}
	if (ready < st->sent) /* a call began in bytes already sent as content: they stay sent */
		ready = st->sent;
	if (ready > st->sent) {
		json_decref(calls);
		size_t n = ready - st->sent;
		char *delta = malloc(n);
		if (delta)
			memcpy(delta, q->text.p + st->sent, n);
		st->sent = ready;
		pthread_mutex_unlock(&v->mu);
		if (!delta) {
			json_decref(lpj);
			return -1;
		}
		event_chunk(st, delta, n, false, NULL, lpj);
		free(delta);
		st->w.last = now_sec();
		return 1;
	}
	if (q->done && !q->cancel) {
		enum srv_end e = q->end;
		int n_gen = q->n_gen;
		json_t *tm = timings(q);
		char err[256];
		snprintf(err, sizeof(err), "%s", e == SRV_END_SHUTDOWN ? "the server is shutting down" : q->err);
		pthread_mutex_unlock(&v->mu);
		if (e == SRV_END_STOP || e == SRV_END_LENGTH) {
			if (calls)
				event_calls(st, calls);
			event_chunk(st, NULL, 0, false, calls ? "tool_calls" : finish_reason(e), lpj);
			if (st->usage)
				event(st, json_pack("{s:s, s:s, s:I, s:s, s:[], s:{s:i, s:i, s:i}, s:o}", "id", st->id, "object",
						    st->chat ? "chat.completion.chunk" : "text_completion", "created",
						    st->created, "model", st->h->cfg.name, "choices", "usage",
						    "prompt_tokens", st->n_prompt, "completion_tokens", n_gen, "total_tokens",
						    st->n_prompt + n_gen, "timings", tm));
			else
				json_decref(tm);
		} else {
			json_decref(lpj);
			json_decref(tm);
			json_decref(calls);
			event(st, json_pack("{s:{s:s, s:s, s:n, s:n}}", "error", "message", err, "type", "server_error", "param",
					    "code"));
		}
		tok_buf_add(&st->out, "data: [DONE]\n\n", 14);
		st->ended = true;
		return 1;
	}
	json_decref(lpj);
	json_decref(calls);
	if (q->cancel) { /* the guard found the client gone */
		pthread_mutex_unlock(&v->mu);
		return -1;
	}
	if (st->w.poke) {
		st->w.poke = false;
		st->w.last = now_sec();
		pthread_mutex_unlock(&v->mu);
		tok_buf_add(&st->out, ": keep-alive\n\n", 14);
		return 1;
	}
	waiter_suspend(&st->w);
	pthread_mutex_unlock(&v->mu);
	return 0;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct stream *st = cls;
	(void)pos;
	while (st->off == st->out.n) {
		st->off = st->out.n = 0;
		if (st->ended)
			return MHD_CONTENT_READER_END_OF_STREAM;
		int r = stream_fill(st);
		if (r < 0) {
			srv_cancel(st->h->v, st->q);
			return MHD_CONTENT_READER_END_WITH_ERROR;
		}
		if (r == 0)
			return 0;
	}
	size_t n = st->out.n - st->off < max ? st->out.n - st->off : max;
	memcpy(buf, st->out.p + st->off, n);
	st->off += n;
	return (ssize_t)n;
}

static void stream_free(void *cls)
{
	struct stream *st = cls;
	struct srv *v = st->h->v;
	pthread_mutex_lock(&v->mu);
	if (st->q->wake_arg == &st->w)
		st->q->wake = NULL;
	pthread_mutex_unlock(&v->mu);
	srv_cancel(v, st->q); /* a no-op when it is done; a client gone mid-stream otherwise */
	log_done(st->h, st->q, true);
	srv_req_put(v, st->q);
	tok_buf_free(&st->out);
	free(st);
}

/* ---- requests ---- */

static bool truthy(const json_t *x)
{
	return x && !json_is_null(x) && !json_is_false(x) && !(json_is_integer(x) && json_integer_value(x) == 0);
}

/* The fields ferry does not implement, refused rather than ignored. */
static const char *unsupported(const json_t *o, bool chat)
{
	static const char *fields[] = {"echo", "suffix", "functions", "logit_bias"};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const json_t *x = json_object_get(o, fields[i]);
		if (truthy(x) && !(json_is_array(x) && !json_array_size(x)) && !(json_is_object(x) && !json_object_size(x)))
			return fields[i];
	}
	const json_t *b = json_object_get(o, "best_of");
	return !chat && truthy(b) && !(json_is_integer(b) && json_integer_value(b) == 1) ? "best_of" : NULL;
}

/* OpenAI's logprobs fields: chat "logprobs" (boolean) and "top_logprobs" (0..20, needs logprobs); completions
 * "logprobs" (0..20 alternatives). *n: -1 none, else the alternatives. 0, or the field at fault. */
static const char *logprobs_parse(const json_t *o, bool chat, int *n)
{
	const json_t *lp = json_object_get(o, "logprobs"), *top = json_object_get(o, "top_logprobs");
	*n = -1;
	if (chat) {
		if (lp && !json_is_null(lp) && !json_is_boolean(lp))
			return "logprobs";
		if (top && !json_is_null(top) &&
		    (!json_is_integer(top) || json_integer_value(top) < 0 || json_integer_value(top) > SRV_TOP_MAX ||
		     !json_is_true(lp)))
			return "top_logprobs";
		if (json_is_true(lp))
			*n = json_is_integer(top) ? (int)json_integer_value(top) : 0;
		return NULL;
	}
	if (top && !json_is_null(top))
		return "top_logprobs";
	if (lp && !json_is_null(lp)) {
		if (!json_is_integer(lp) || json_integer_value(lp) < 0 || json_integer_value(lp) > SRV_TOP_MAX)
			return "logprobs";
		*n = (int)json_integer_value(lp);
	}
	return NULL;
}

/* Parses, checks and submits a completion request; q (with its references) on success, else the error
 * response is queued and *ret says what to return. */
static struct srv_req *completion_submit(struct http *h, struct MHD_Connection *c, const json_t *o, bool chat,
					 enum MHD_Result *ret)
{
	char param[REQ_PARAM_LEN] = "", msg[512] = "";
	const json_t *mo = json_object_get(o, "model"), *n = json_object_get(o, "n"), *s = json_object_get(o, "stream");
	const json_t *so = json_object_get(o, "stream_options");
	const char *uns = unsupported(o, chat), *bad_lp;
	int n_lp;
	if (mo && !json_is_null(mo) && !json_is_string(mo)) {
		*ret = http_error(h, c, 400, "model", NULL, "'model' must be a string (GET /v1/models lists them)");
		return NULL;
	}
	if (json_is_string(mo) && strcmp(json_string_value(mo), h->cfg.name)) {
		*ret = http_error(h, c, 404, "model", "model_not_found", "the model '%s' does not exist; this server has '%s'",
				  json_string_value(mo), h->cfg.name);
		return NULL;
	}
	if (n && !json_is_null(n) && (!json_is_integer(n) || json_integer_value(n) != 1)) {
		*ret = http_error(h, c, 400, "n", NULL, "'n' must be 1 (one choice per request)");
		return NULL;
	}
	if ((s && !json_is_null(s) && !json_is_boolean(s)) || (so && !json_is_null(so) && !json_is_object(so))) {
		*ret = http_error(h, c, 400, s && !json_is_boolean(s) ? "stream" : "stream_options", NULL,
				  "'stream' must be a boolean and 'stream_options' an object");
		return NULL;
	}
	if (uns) {
		*ret = http_error(h, c, 400, uns, NULL, "'%s' is not supported by ferry", uns);
		return NULL;
	}
	if ((bad_lp = logprobs_parse(o, chat, &n_lp))) {
		*ret = http_error(h, c, 400, bad_lp, NULL,
				  chat ? "'logprobs' must be a boolean, and 'top_logprobs' an integer 0..%d with logprobs true"
				       : "'logprobs' must be an integer 0..%d (completions have no 'top_logprobs')",
				  SRV_TOP_MAX);
		return NULL;
	}
	struct srv_req *q;
	if (srv_req_new(h->v, &q)) {
		*ret = MHD_NO;
		return NULL;
	}
	q->logprobs = n_lp;
	struct req_defaults defaults = {.temp = 1, .seed = fresh(h)};
	struct tok_ids ids = {0};
	struct req_tools tools;
	int rc = req_params_parse(o, &defaults, &q->p, param, msg, sizeof(msg));
	rc = rc ? rc : req_tools_parse(o, chat, &tools, param, msg, sizeof(msg));
	if (!rc) {
		q->tools = tools.tools; /* q's reference now; tools stays valid while q is */
		pthread_mutex_lock(&h->v->tok_mu);
		rc = req_prompt_ids(o, chat ? REQ_PROMPT_CHAT : REQ_PROMPT_TEXT, h->v->tk, h->cfg.model_path, &h->tmpl,
				    tools.tools, &ids, param, msg, sizeof(msg));
		pthread_mutex_unlock(&h->v->tok_mu);
		rc = rc ? rc : req_grammar(o, &tools, tool_fmt_of(h->v->tk), &q->gram, param, msg, sizeof(msg));
		if (!rc && q->gram) {
			rc = srv_grammar_vocab(h->v);
			rc = rc ? rc : gram_state_new(q->gram, &q->gs);
			if (rc == -E2BIG) { /* a clear 400 / line error, not a server fault */
				snprintf(msg, sizeof(msg), "the grammar nests too deeply for the matcher (nullable repetitions "
					 "inside repetitions)");
				rc = -EINVAL;
			}
			q->r.constrained = true;
		}
	}
	int np = (int)ids.n, max_new = q->p.max_tokens >= 0 ? q->p.max_tokens : h->ctx - np;
	if (!rc && (np >= h->ctx || np + max_new > h->ctx)) {
		*ret = http_error(h, c, 400, chat ? "messages" : "prompt", "context_length_exceeded",
				  "this server's context is %d tokens; the request asks for %d (%d in the prompt, %d to "
				  "generate)", h->ctx, np + (q->p.max_tokens >= 0 ? max_new : 1), np,
				  q->p.max_tokens >= 0 ? max_new : 1);
		rc = -ERANGE;
	} else if (rc) {
		*ret = rc == -EINVAL ? http_error(h, c, 400, param[0] ? param : NULL, NULL, "%s", msg)
				     : http_error(h, c, 500, NULL, NULL, "%s", msg[0] ? msg : strerror(-rc));
	}
	if (!rc) {
		q->r.n_prompt = np;
		q->r.max_new = max_new;
		q->r.ignore_eos = q->p.ignore_eos;
		q->r.no_spec = q->p.no_spec || q->gs;
		q->r.toks = realloc(ids.ids, sizeof(int) * ((size_t)np + (size_t)max_new + 1));
		ids.ids = q->r.toks ? NULL : ids.ids;
		rc = q->r.toks ? sampler_init(&q->r.smp, &q->p.sc, h->v->hp->vocab) : -ENOMEM;
		rc = rc ? rc : srv_submit(h->v, q);
		if (rc == -EBUSY)
			*ret = http_error(h, c, 429, NULL, "rate_limit_exceeded",
					  "%d requests are running or queued (--max-queue); retry later", h->v->max_live);
		else if (rc == -ESHUTDOWN)
			*ret = http_error(h, c, 503, NULL, "server_shutting_down", "the server is shutting down");
		else if (rc)
			*ret = http_error(h, c, 500, NULL, NULL, "out of memory");
	}
	tok_ids_free(&ids);
	if (rc) {
		srv_req_put(h->v, q);
		return NULL;
	}
	return q;
}

/* The whole response of a request that ended (not streamed). */
static enum MHD_Result completion_reply(struct http *h, struct MHD_Connection *c, struct conn *cn)
{
	struct srv *v = h->v;
	struct srv_req *q = cn->q;
	pthread_mutex_lock(&v->mu);
	enum srv_end e = q->end;
	if (e != SRV_END_STOP && e != SRV_END_LENGTH) {
		char err[256];
		snprintf(err, sizeof(err), "%s", q->err);
		pthread_mutex_unlock(&v->mu);
		return e == SRV_END_ERROR ? http_error(h, c, 500, NULL, NULL, "%s", err)
					  : http_error(h, c, 503, NULL, "server_shutting_down",
						       "the server is shutting down; the request was cancelled");
	}
	json_t *text = json_stringn(q->text.p ? q->text.p : "", q->text.n);
	int n_gen = q->n_gen, np = q->r.n_prompt, from = 0, n_lp = 0;
	json_t *tm = timings(q);
	struct srv_lp *lp = q->logprobs >= 0 ? lp_take(q, &from, &n_lp) : NULL;
	bool want_lp = q->logprobs >= 0;
	size_t content = 0;
	json_t *calls = q->tools ? tool_calls_parse(q->text.p, q->text.n, q->tools, splitmix(cn->created ^ (uint64_t)cn->id[9]),
						    &content)
				 : NULL;
	pthread_mutex_unlock(&v->mu);
	size_t off = 0;
	json_t *lpj = want_lp ? logprobs_json(h, lp, n_lp, cn->chat, &off) : json_null();
	free(lp);
	json_t *choice;
	if (calls) { /* the text before the first call is the content (null when there is none) */
		const char *t = json_string_value(text);
		json_t *msg = json_pack("{s:s, s:o, s:o}", "role", "assistant", "content",
					content ? json_stringn(t, content) : json_null(), "tool_calls", calls);
		json_decref(text);
		choice = json_pack("{s:i, s:o, s:o, s:s}", "index", 0, "message", msg, "logprobs", lpj, "finish_reason",
				   "tool_calls");
	} else {
		choice = cn->chat ? json_pack("{s:i, s:{s:s, s:o}, s:o, s:s}", "index", 0, "message", "role", "assistant",
					      "content", text, "logprobs", lpj, "finish_reason", finish_reason(e))
				  : json_pack("{s:i, s:o, s:o, s:s}", "index", 0, "text", text, "logprobs", lpj, "finish_reason",
					      finish_reason(e));
	}
	return http_json(h, c, 200,
			 json_pack("{s:s, s:s, s:I, s:s, s:[o], s:{s:i, s:i, s:i}, s:o}", "id", cn->id, "object",
				   cn->chat ? "chat.completion" : "text_completion", "created", cn->created, "model",
				   h->cfg.name, "choices", choice, "usage", "prompt_tokens", np, "completion_tokens", n_gen,
				   "total_tokens", np + n_gen, "timings", tm));
}

enum MHD_Result completion_resume(struct http *h, struct MHD_Connection *c, struct conn *cn)
{
	struct srv *v = h->v;
	struct srv_req *q = cn->q;
	pthread_mutex_lock(&v->mu);
	bool gone = q->cancel;
	if (!gone && !q->done && !(cn->stream && q->n_gen > 0)) { /* headers wait for the first token or the end */
		waiter_suspend(&cn->w);
		pthread_mutex_unlock(&v->mu);
		return MHD_YES;
	}
	bool ok = q->end == SRV_END_NONE || q->end == SRV_END_STOP || q->end == SRV_END_LENGTH;
	q->wake = NULL;
	pthread_mutex_unlock(&v->mu);
	http_sock_wait(h, cn->sk, NULL);
	if (gone)
		return MHD_NO; /* on_completed logs it and lets q go */
	if (!cn->stream || !ok)
		return completion_reply(h, c, cn);
	struct stream *st = calloc(1, sizeof(*st));
	struct MHD_Response *r = st ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, st,
									 stream_free)
				    : NULL;
	if (!r) {
		free(st);
		return MHD_NO;
	}
	*st = (struct stream){.h = h, .q = q, .n_prompt = q->r.n_prompt, .chat = cn->chat, .usage = cn->usage,
			      .created = cn->created, .tools = q->tools, .w = {.c = c, .q = q, .stream = true, .last = now_sec()}};
	snprintf(st->id, sizeof(st->id), "%s", cn->id);
	cn->q = NULL; /* the stream's now */
	pthread_mutex_lock(&v->mu);
	q->wake = waiter_wake;
	q->wake_arg = &st->w;
	pthread_mutex_unlock(&v->mu);
	http_sock_wait(h, cn->sk, &st->w);
	if (cn->chat)
		event_chunk(st, "", 0, true, NULL, NULL);
	MHD_add_response_header(r, "Content-Type", "text/event-stream");
	MHD_add_response_header(r, "Cache-Control", "no-cache");
	enum MHD_Result ret = http_queue(h, c, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

enum MHD_Result completion(struct http *h, struct MHD_Connection *c, struct conn *cn, bool chat)
{
	json_error_t je;
	json_t *o = json_loadb(cn->body ? cn->body : "", cn->n, JSON_ALLOW_NUL, &je); /* replies may hold U+0000, sent back as history */
	if (!o)
		return http_error(h, c, 400, NULL, NULL, "the body is not valid JSON: %s (line %d, column %d)", je.text, je.line,
				  je.column);
	if (!json_is_object(o)) {
		json_decref(o);
		return http_error(h, c, 400, NULL, NULL, "the body must be a JSON object");
	}
	enum MHD_Result ret = MHD_NO;
	struct srv_req *q = completion_submit(h, c, o, chat, &ret);
	cn->chat = chat;
	cn->stream = json_is_true(json_object_get(o, "stream"));
	cn->usage = json_is_true(json_object_get(json_object_get(o, "stream_options"), "include_usage"));
	json_decref(o);
	if (!q)
		return ret;
	snprintf(cn->id, sizeof(cn->id), "%s-%016llx", chat ? "chatcmpl" : "cmpl", (unsigned long long)fresh(h));
	cn->created = (long long)time(NULL);
	cn->q = q;
	cn->w = (struct waiter){.c = c, .q = q};
	pthread_mutex_lock(&h->v->mu);
	memcpy(q->id, cn->id, sizeof(cn->id));
	q->wake = waiter_wake;
	q->wake_arg = &cn->w;
	pthread_mutex_unlock(&h->v->mu);
	http_sock_wait(h, cn->sk, &cn->w);
	return completion_resume(h, c, cn);
}

void completion_done(struct http *h, struct conn *cn)
{
	if (!cn->q)
		return;
	pthread_mutex_lock(&h->v->mu);
	if (cn->q->wake_arg == &cn->w)
		cn->q->wake = NULL;
	pthread_mutex_unlock(&h->v->mu);
	srv_cancel(h->v, cn->q); /* a no-op when it is done */
	log_done(h, cn->q, false);
	srv_req_put(h->v, cn->q);
	cn->q = NULL;
}
