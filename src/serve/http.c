/*
 * http.c: the HTTP front of `ferry serve` (http.h): libmicrohttpd's callbacks, the API key, OpenAI's JSON
 * responses and server-sent event streams, the completion and chat-completion handlers, the model list,
 * /health, and the route table that picks among them.
 */
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "serve/http.h"
#include "base/util.h"

#define STREAM_KEEPALIVE 15.0

struct http {
	struct http_cfg cfg;
	struct srv *v;
	struct MHD_Daemon *d;
	struct jinja_tmpl *tmpl; /* the chat template, loaded by the first chat request (under v->tok_mu) */
	int ctx;                 /* positions per request */
	atomic_ullong counter;   /* mixed into fresh seeds and response ids */
	double t0;               /* when it started: the model's "created" */
};

/* The body of one request, gathered across the handler's calls. */
struct conn {
	char *body;
	size_t n, cap;
	bool too_big;
	struct srv_req *q; /* a whole response's request, let go once the response is sent (on_completed) */
};

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

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, json_t *o)
{
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!s)
		return MHD_NO;
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(s);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "application/json");
	if (status == MHD_HTTP_TOO_MANY_REQUESTS || status == MHD_HTTP_SERVICE_UNAVAILABLE)
		MHD_add_response_header(r, "Retry-After", "1");
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* OpenAI's error object: {"error": {"message", "type", "param", "code"}}. */
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *param, const char *code,
				  const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	const char *type = status == 429 ? "rate_limit_error" : status >= 500 ? "server_error" : "invalid_request_error";
	struct tok_buf m = {0}, p = {0}; /* a URL, header or cut message need not be UTF-8: JSON strings must */
	tok_buf_add_lossy(&m, msg, strlen(msg));
	if (param)
		tok_buf_add_lossy(&p, param, strlen(param));
	json_t *e = json_pack("{s:s%, s:s, s:n, s:s?}", "message", m.p ? m.p : "", m.n, "type", type, "param", "code", code);
	if (e && param)
		json_object_set_new(e, "param", json_stringn(p.p ? p.p : "", p.n));
	enum MHD_Result r = send_json(c, status, e ? json_pack("{s:o}", "error", e) : NULL);
	tok_buf_free(&m);
	tok_buf_free(&p);
	return r;
}

static bool authorized(const struct http *h, struct MHD_Connection *c)
{
	if (!h->cfg.api_key)
		return true;
	const char *hdr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	const char *key = h->cfg.api_key;
	size_t kl = strlen(key);
	if (!hdr || strncmp(hdr, "Bearer ", 7) || strlen(hdr + 7) != kl)
		return false;
	unsigned char d = 0; /* the same time whatever the key's first difference */
	for (size_t i = 0; i < kl; i++)
		d |= (unsigned char)(hdr[7 + i] ^ key[i]);
	return d == 0;
}

/* The client closed its end (a peek reads end of file) or the socket failed. */
static bool client_gone(int fd)
{
	char ch;
	ssize_t r = recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
	return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
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
	fprintf(stderr, "ferry: serve: %s %s%s %d+%d tokens %.2fs", q->id, q->done ? ends[q->end] : "client gone",
		stream ? " (stream)" : "",
		q->r.n_prompt, q->n_gen, now - q->t0);
	if (ttft >= 0)
		fprintf(stderr, ", first token %.2fs", ttft);
	fputc('\n', stderr);
	pthread_mutex_unlock(&h->v->mu);
}

/* ---- streaming ---- */

struct stream {
	struct http *h;
	struct srv_req *q;
	int fd, n_prompt;
	bool chat, usage, ended;
	char id[48];
	long long created;
	size_t sent;         /* bytes of the request's text sent */
	double last;         /* when an event was last made (keep-alive comments after STREAM_KEEPALIVE s) */
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

/* A chunk with a text delta (or the role, for a chat's first), or the final one with its finish_reason. */
static void event_chunk(struct stream *st, const char *text, size_t n, bool role, const char *finish)
{
	json_t *choice = json_pack("{s:i, s:n, s:s?}", "index", 0, "logprobs", "finish_reason", finish);
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

/* Waits for the request's next text or its end and turns it into events; -1 when the client is gone. */
static int stream_fill(struct stream *st)
{
	struct srv *v = st->h->v;
	struct srv_req *q = st->q;
	st->last = now_sec();
	pthread_mutex_lock(&v->mu);
	for (;;) {
		if (q->ready > st->sent) {
			size_t n = q->ready - st->sent;
			char *delta = malloc(n);
			if (delta)
				memcpy(delta, q->text.p + st->sent, n);
			st->sent = q->ready;
			pthread_mutex_unlock(&v->mu);
			if (!delta)
				return -1;
			event_chunk(st, delta, n, false, NULL);
			free(delta);
			return 0;
		}
		if (q->done) {
			enum srv_end e = q->end;
			int n_gen = q->n_gen;
			char err[256];
			snprintf(err, sizeof(err), "%s", e == SRV_END_SHUTDOWN ? "the server is shutting down" : q->err);
			pthread_mutex_unlock(&v->mu);
			if (e == SRV_END_STOP || e == SRV_END_LENGTH) {
				event_chunk(st, NULL, 0, false, finish_reason(e));
				if (st->usage)
					event(st, json_pack("{s:s, s:s, s:I, s:s, s:[], s:{s:i, s:i, s:i}}", "id", st->id, "object",
							    st->chat ? "chat.completion.chunk" : "text_completion", "created",
							    st->created, "model", st->h->cfg.name, "choices", "usage",
							    "prompt_tokens", st->n_prompt, "completion_tokens", n_gen,
							    "total_tokens", st->n_prompt + n_gen));
			} else {
				event(st, json_pack("{s:{s:s, s:s, s:n, s:n}}", "error", "message", err, "type", "server_error",
						    "param", "code"));
			}
			tok_buf_add(&st->out, "data: [DONE]\n\n", 14);
			st->ended = true;
			return 0;
		}
		srv_wait(&q->cv, &v->mu, 0.1);
		if (q->ready == st->sent && !q->done) {
			pthread_mutex_unlock(&v->mu);
			if (st->fd >= 0 && client_gone(st->fd))
				return -1;
			if (now_sec() - st->last > STREAM_KEEPALIVE) { /* libmicrohttpd closes a connection idle 600 s */
				st->last = now_sec();
				tok_buf_add(&st->out, ": keep-alive\n\n", 14);
				return 0;
			}
			pthread_mutex_lock(&v->mu);
		}
	}
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct stream *st = cls;
	(void)pos;
	while (st->off == st->out.n) {
		st->off = st->out.n = 0;
		if (st->ended)
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (stream_fill(st)) {
			srv_cancel(st->h->v, st->q);
			return MHD_CONTENT_READER_END_WITH_ERROR;
		}
	}
	size_t n = st->out.n - st->off < max ? st->out.n - st->off : max;
	memcpy(buf, st->out.p + st->off, n);
	st->off += n;
	return (ssize_t)n;
}

static void stream_free(void *cls)
{
	struct stream *st = cls;
	srv_cancel(st->h->v, st->q); /* a no-op when it is done; a client gone mid-stream otherwise */
	log_done(st->h, st->q, true);
	srv_req_put(st->h->v, st->q);
	tok_buf_free(&st->out);
	free(st);
}

/* ---- completions ---- */

static bool truthy(const json_t *x)
{
	return x && !json_is_null(x) && !json_is_false(x) && !(json_is_integer(x) && json_integer_value(x) == 0);
}

/* The fields ferry does not implement, refused rather than ignored. */
static const char *unsupported(const json_t *o, bool chat)
{
	static const char *fields[] = {"logprobs", "top_logprobs", "echo", "suffix", "tools", "functions", "logit_bias"};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const json_t *x = json_object_get(o, fields[i]);
		if (truthy(x) && !(json_is_array(x) && !json_array_size(x)) && !(json_is_object(x) && !json_object_size(x)))
			return fields[i];
	}
	const json_t *rf = json_object_get(o, "response_format"), *b = json_object_get(o, "best_of");
	if (rf && !json_is_null(rf) && !(json_is_object(rf) && json_is_string(json_object_get(rf, "type")) &&
					 !strcmp(json_string_value(json_object_get(rf, "type")), "text")))
		return "response_format"; /* JSON modes would need constrained decoding */
	return !chat && truthy(b) && !(json_is_integer(b) && json_integer_value(b) == 1) ? "best_of" : NULL;
}

/* Parses, checks and submits a completion request; q (with its references) on success, else the error
 * response is queued and *ret says what to return. */
static struct srv_req *completion_submit(struct http *h, struct MHD_Connection *c, const json_t *o, bool chat,
					 enum MHD_Result *ret)
{
	char param[REQ_PARAM_LEN] = "", msg[512] = "";
	const json_t *mo = json_object_get(o, "model"), *n = json_object_get(o, "n"), *s = json_object_get(o, "stream");
	const json_t *so = json_object_get(o, "stream_options");
	const char *uns = unsupported(o, chat);
	if (!json_is_string(mo)) {
		*ret = send_error(c, 400, "model", NULL, "'model' is required (a string: GET /v1/models lists them)");
		return NULL;
	}
	if (strcmp(json_string_value(mo), h->cfg.name)) {
		*ret = send_error(c, 404, "model", "model_not_found", "the model '%s' does not exist; this server has '%s'",
				  json_string_value(mo), h->cfg.name);
		return NULL;
	}
	if (n && !json_is_null(n) && (!json_is_integer(n) || json_integer_value(n) != 1)) {
		*ret = send_error(c, 400, "n", NULL, "'n' must be 1 (one choice per request)");
		return NULL;
	}
	if ((s && !json_is_null(s) && !json_is_boolean(s)) || (so && !json_is_null(so) && !json_is_object(so))) {
		*ret = send_error(c, 400, s && !json_is_boolean(s) ? "stream" : "stream_options", NULL,
				  "'stream' must be a boolean and 'stream_options' an object");
		return NULL;
	}
	if (uns) {
		*ret = send_error(c, 400, uns, NULL, "'%s' is not supported by ferry", uns);
		return NULL;
	}
	struct srv_req *q;
	if (srv_req_new(h->v, &q)) {
		*ret = MHD_NO;
		return NULL;
	}
	struct req_defaults defaults = {.temp = 1, .seed = fresh(h)};
	struct tok_ids ids = {0};
	int rc = req_params_parse(o, &defaults, &q->p, param, msg, sizeof(msg));
	if (!rc) {
		pthread_mutex_lock(&h->v->tok_mu);
		rc = req_prompt_ids(o, chat ? REQ_PROMPT_CHAT : REQ_PROMPT_TEXT, h->v->tk, h->cfg.model_path, &h->tmpl, &ids, param,
				    msg, sizeof(msg));
		pthread_mutex_unlock(&h->v->tok_mu);
	}
	int np = (int)ids.n, max_new = q->p.max_tokens >= 0 ? q->p.max_tokens : h->ctx - np;
	if (!rc && (np >= h->ctx || np + max_new > h->ctx)) {
		*ret = send_error(c, 400, chat ? "messages" : "prompt", "context_length_exceeded",
				  "this server's context is %d tokens; the request asks for %d (%d in the prompt, %d to "
				  "generate)", h->ctx, np + (q->p.max_tokens >= 0 ? max_new : 1), np,
				  q->p.max_tokens >= 0 ? max_new : 1);
		rc = -ERANGE;
	} else if (rc) {
		*ret = rc == -EINVAL ? send_error(c, 400, param[0] ? param : NULL, NULL, "%s", msg)
				     : send_error(c, 500, NULL, NULL, "%s", msg[0] ? msg : strerror(-rc));
	}
	if (!rc) {
		q->r.n_prompt = np;
		q->r.max_new = max_new;
		q->r.ignore_eos = q->p.ignore_eos;
		q->r.no_spec = q->p.no_spec;
		q->r.toks = realloc(ids.ids, sizeof(int) * ((size_t)np + (size_t)max_new + 1));
		ids.ids = q->r.toks ? NULL : ids.ids;
		rc = q->r.toks ? sampler_init(&q->r.smp, &q->p.sc, h->v->hp->vocab) : -ENOMEM;
		rc = rc ? rc : srv_submit(h->v, q);
		if (rc == -EBUSY)
			*ret = send_error(c, 429, NULL, "rate_limit_exceeded",
					  "%d requests are running or queued (--max-queue); retry later", h->v->max_live);
		else if (rc == -ESHUTDOWN)
			*ret = send_error(c, 503, NULL, "server_shutting_down", "the server is shutting down");
		else if (rc)
			*ret = send_error(c, 500, NULL, NULL, "out of memory");
	}
	tok_ids_free(&ids);
	if (rc) {
		srv_req_put(h->v, q);
		return NULL;
	}
	return q;
}

/* The whole response of a request that ended (not streamed). */
static enum MHD_Result completion_reply(struct http *h, struct MHD_Connection *c, struct srv_req *q, bool chat,
					const char *id, long long created)
{
	struct srv *v = h->v;
	pthread_mutex_lock(&v->mu);
	enum srv_end e = q->end;
	if (e != SRV_END_STOP && e != SRV_END_LENGTH) {
		char err[256];
		snprintf(err, sizeof(err), "%s", q->err);
		pthread_mutex_unlock(&v->mu);
		return e == SRV_END_ERROR ? send_error(c, 500, NULL, NULL, "%s", err)
					  : send_error(c, 503, NULL, "server_shutting_down",
						       "the server is shutting down; the request was cancelled");
	}
	json_t *text = json_stringn(q->text.p ? q->text.p : "", q->text.n);
	int n_gen = q->n_gen, np = q->r.n_prompt;
	pthread_mutex_unlock(&v->mu);
	json_t *choice = chat ? json_pack("{s:i, s:{s:s, s:o}, s:n, s:s}", "index", 0, "message", "role", "assistant",
					  "content", text, "logprobs", "finish_reason", finish_reason(e))
			      : json_pack("{s:i, s:o, s:n, s:s}", "index", 0, "text", text, "logprobs", "finish_reason",
					  finish_reason(e));
	return send_json(c, 200,
			 json_pack("{s:s, s:s, s:I, s:s, s:[o], s:{s:i, s:i, s:i}}", "id", id, "object",
				   chat ? "chat.completion" : "text_completion", "created", created, "model", h->cfg.name,
				   "choices", choice, "usage", "prompt_tokens", np, "completion_tokens", n_gen, "total_tokens",
				   np + n_gen));
}

static enum MHD_Result completion(struct http *h, struct MHD_Connection *c, struct conn *cn, bool chat)
{
	json_error_t je;
	json_t *o = json_loadb(cn->body ? cn->body : "", cn->n, 0, &je);
	if (!o)
		return send_error(c, 400, NULL, NULL, "the body is not valid JSON: %s (line %d, column %d)", je.text, je.line,
				  je.column);
	if (!json_is_object(o)) {
		json_decref(o);
		return send_error(c, 400, NULL, NULL, "the body must be a JSON object");
	}
	enum MHD_Result ret = MHD_NO;
	struct srv_req *q = completion_submit(h, c, o, chat, &ret);
	bool stream = json_is_true(json_object_get(o, "stream"));
	bool usage = json_is_true(json_object_get(json_object_get(o, "stream_options"), "include_usage"));
	json_decref(o);
	if (!q)
		return ret;
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	int fd = ci ? ci->connect_fd : -1;
	char id[48];
	snprintf(id, sizeof(id), "%s-%016llx", chat ? "chatcmpl" : "cmpl", (unsigned long long)fresh(h));
	pthread_mutex_lock(&h->v->mu);
	memcpy(q->id, id, sizeof(id));
	pthread_mutex_unlock(&h->v->mu);
	long long created = (long long)time(NULL);
	/* Headers wait for the first token (or the end), so an error before it still gets its status. */
	struct srv *v = h->v;
	bool gone = false;
	pthread_mutex_lock(&v->mu);
	while (!q->done && !(stream && q->n_gen > 0) && !gone) {
		srv_wait(&q->cv, &v->mu, 0.1);
		if (!q->done && !(stream && q->n_gen > 0)) {
			pthread_mutex_unlock(&v->mu);
			gone = fd >= 0 && client_gone(fd);
			pthread_mutex_lock(&v->mu);
		}
	}
	bool ok = q->end == SRV_END_NONE || q->end == SRV_END_STOP || q->end == SRV_END_LENGTH;
	pthread_mutex_unlock(&v->mu);
	if (gone) {
		srv_cancel(v, q);
		log_done(h, q, stream);
		srv_req_put(v, q);
		return MHD_NO;
	}
	if (!stream || !ok) {
		ret = completion_reply(h, c, q, chat, id, created);
		cn->q = q; /* until it is sent: a stopping server waits for that (srv_wait_idle) */
		return ret;
	}
	struct stream *st = calloc(1, sizeof(*st));
	struct MHD_Response *r = st ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, st,
									 stream_free)
				    : NULL;
	if (!r) {
		free(st);
		srv_cancel(v, q);
		srv_req_put(v, q);
		return MHD_NO;
	}
	*st = (struct stream){.h = h, .q = q, .fd = fd, .n_prompt = q->r.n_prompt, .chat = chat, .usage = usage,
			      .created = created};
	snprintf(st->id, sizeof(st->id), "%s", id);
	if (chat)
		event_chunk(st, "", 0, true, NULL);
	MHD_add_response_header(r, "Content-Type", "text/event-stream");
	MHD_add_response_header(r, "Cache-Control", "no-cache");
	ret = MHD_queue_response(c, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

/* ---- routes ---- */

static json_t *model_object(const struct http *h)
{
	return json_pack("{s:s, s:s, s:I, s:s}", "id", h->cfg.name, "object", "model", "created", (long long)h->t0,
			 "owned_by", "ferry");
}

static enum MHD_Result get_health(struct http *h, struct MHD_Connection *c, struct conn *cn, const char *url)
{
	(void)cn;
	(void)url;
	struct srv *v = h->v;
	pthread_mutex_lock(&v->mu);
	json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:i}", "status",
			      v->stopping ? "stopping" : "ok", "model", h->cfg.name, "live", v->n_live, "running",
			      v->n_active, "generated_tokens", v->gen_tokens, "steps", v->steps, "h2d_bytes",
			      (json_int_t)v->h2d_bytes, "served", v->n_served, "cancelled", v->n_cancelled, "t_max",
			      v->m->opt.t_max);
	json_object_set_new(o, "spec",
			    json_pack("{s:s, s:I, s:f, s:f}", "mode", spec_mode_name(v->s->spec.mode), "passes",
				      (json_int_t)v->spec_passes, "tokens_per_pass",
				      v->spec_passes ? (double)v->spec_tokens / (double)v->spec_passes : 0.0, "acceptance",
				      v->spec_guessed ? (double)v->spec_accepted / (double)v->spec_guessed : 0.0));
	int stopping = v->stopping;
	pthread_mutex_unlock(&v->mu);
	return send_json(c, stopping ? 503 : 200, o);
}

static enum MHD_Result get_models(struct http *h, struct MHD_Connection *c, struct conn *cn, const char *url)
{
	(void)cn;
	(void)url;
	return send_json(c, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model_object(h)));
}

static enum MHD_Result get_model(struct http *h, struct MHD_Connection *c, struct conn *cn, const char *url)
{
	(void)cn;
	const char *name = url + strlen("/v1/models/");
	if (strcmp(name, h->cfg.name))
		return send_error(c, 404, "model", "model_not_found", "the model '%s' does not exist", name);
	return send_json(c, 200, model_object(h));
}

static enum MHD_Result post_chat(struct http *h, struct MHD_Connection *c, struct conn *cn, const char *url)
{
	(void)url;
	return completion(h, c, cn, true);
}

static enum MHD_Result post_completions(struct http *h, struct MHD_Connection *c, struct conn *cn, const char *url)
{
	(void)url;
	return completion(h, c, cn, false);
}

/* A path that ends with '/' is a prefix (the rest is the handler's); GET routes answer HEAD too. */
static const struct route {
	const char *method, *path;
	enum MHD_Result (*handle)(struct http *h, struct MHD_Connection *c, struct conn *cn, const char *url);
} routes[] = {
	{"GET", "/health", get_health},
	{"GET", "/v1/models", get_models},
	{"GET", "/v1/models/", get_model},
	{"POST", "/v1/chat/completions", post_chat},
	{"POST", "/v1/completions", post_completions},
};

/* The route of url and method; 405 when url has routes for other methods only, 404 when it has none. */
static enum MHD_Result route(struct http *h, struct MHD_Connection *c, struct conn *cn, const char *url,
			     const char *method)
{
	const struct route *other = NULL;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		const struct route *r = &routes[i];
		size_t n = strlen(r->path);
		if (r->path[n - 1] == '/' ? strncmp(url, r->path, n) : strcmp(url, r->path))
			continue;
		if (!strcmp(method, r->method) || (!strcmp(r->method, "GET") && !strcmp(method, "HEAD")))
			return r->handle(h, c, cn, url);
		other = other ? other : r;
	}
	if (other)
		return send_error(c, 405, NULL, NULL, "%s %s: use %s", method, url, other->method);
	return send_error(c, 404, NULL, NULL, "no route %s %s", method, url);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	struct http *h = cls;
	struct conn *cn = *con_cls;
	(void)version;
	if (!cn) {
		if (!(cn = calloc(1, sizeof(*cn))))
			return MHD_NO;
		*con_cls = cn;
		if (!authorized(h, c))
			return send_error(c, 401, NULL, "invalid_api_key", "a wrong or missing API key (Authorization: Bearer KEY)");
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtod(cl, NULL) > (double)h->cfg.max_body)
			return send_error(c, 413, NULL, "request_too_large", "the body of %s bytes is over --max-body %ld", cl,
					  h->cfg.max_body);
		return MHD_YES;
	}
	if (*upload_size) {
		if (!cn->too_big && cn->n + *upload_size > (size_t)h->cfg.max_body) {
			cn->too_big = true;
		} else if (!cn->too_big) {
			if (cn->n + *upload_size > cn->cap) {
				size_t cap = cn->cap ? cn->cap : 4096;
				while (cap < cn->n + *upload_size)
					cap *= 2;
				char *nb = realloc(cn->body, cap);
				if (!nb)
					return MHD_NO;
				cn->body = nb;
				cn->cap = cap;
			}
			memcpy(cn->body + cn->n, upload, *upload_size);
			cn->n += *upload_size;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (cn->too_big)
		return send_error(c, 413, NULL, "request_too_large", "the body is over --max-body %ld bytes", h->cfg.max_body);
	return route(h, c, cn, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why)
{
	struct conn *cn = *con_cls;
	struct http *h = cls;
	(void)c;
	(void)why;
	if (cn) {
		if (cn->q) {
			log_done(h, cn->q, false);
			srv_req_put(h->v, cn->q);
		}
		free(cn->body);
		free(cn);
		*con_cls = NULL;
	}
}

int http_start(struct http **out, const struct http_cfg *cfg, struct srv *v, char *err, size_t errlen)
{
	struct http *h = calloc(1, sizeof(*h));
	if (!h) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	*h = (struct http){.cfg = *cfg, .v = v, .ctx = v->m->opt.ctx, .t0 = (double)time(NULL)};
	atomic_init(&h->counter, 0);
	char port[16];
	snprintf(port, sizeof(port), "%d", cfg->port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
	int g = getaddrinfo(cfg->host, port, &hints, &ai);
	if (g) {
		snprintf(err, errlen, "--host %s: %s", cfg->host, gai_strerror(g));
		free(h);
		return -EINVAL;
	}
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
			 MHD_USE_ERROR_LOG | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
	h->d = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
				MHD_OPTION_CONNECTION_LIMIT, cfg->max_conns, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
				MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
	int e = errno;
	freeaddrinfo(ai);
	if (!h->d) {
		snprintf(err, errlen, "cannot listen on %s port %d: %s", cfg->host, cfg->port, strerror(e ? e : EADDRINUSE));
		free(h);
		return -(e ? e : EADDRINUSE);
	}
	*out = h;
	return 0;
}

unsigned http_port(const struct http *h)
{
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
	return di ? di->port : (unsigned)h->cfg.port;
}

void http_stop(struct http *h)
{
	MHD_stop_daemon(h->d);
	jinja_free(h->tmpl);
	free(h);
}
