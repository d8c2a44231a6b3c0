/*
 * http.c: the HTTP front of `ferry serve` (http.h, http_internal.h): libmicrohttpd's daemon over epoll and its
 * callbacks, the guard thread (request deadlines, clients gone, stream keep-alives), the API key, JSON
 * responses and errors, the route table and the small routes: /health, /metrics, /v1/models, /tokenize,
 * /detokenize and the chat page at / (src/serve/chat.html, compiled in). The completion routes are complete.c's.
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

#include "serve/http_internal.h"
#include "base/util.h"

/* The chat page: src/serve/chat.html as the array chat_html[chat_html_len] (xxd -i, made by the Makefile). */
#include "serve/chat_html.h"

#define GUARD_PERIOD 0.05

static const unsigned http_codes[] = {
#define X(n) n,
	HTTP_CODES_LIST
#undef X
};

enum MHD_Result http_queue(struct http *h, struct MHD_Connection *c, unsigned status, struct MHD_Response *r)
{
	size_t i = 0;
	while (i < HTTP_CODE_OTHER && http_codes[i] != status)
		i++;
	atomic_fetch_add(&h->codes[i], 1);
	return MHD_queue_response(c, status, r);
}

/* A response of n bytes of s (taken) with its content type. */
static enum MHD_Result send_text(struct http *h, struct MHD_Connection *c, unsigned status, char *s, size_t n,
				 const char *type)
{
	if (!s)
		return MHD_NO;
	struct MHD_Response *r = MHD_create_response_from_buffer(n, s, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(s);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	if (status == MHD_HTTP_TOO_MANY_REQUESTS || status == MHD_HTTP_SERVICE_UNAVAILABLE)
		MHD_add_response_header(r, "Retry-After", "1");
	enum MHD_Result ret = http_queue(h, c, status, r);
	MHD_destroy_response(r);
	return ret;
}

enum MHD_Result http_json(struct http *h, struct MHD_Connection *c, unsigned status, json_t *o)
{
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return send_text(h, c, status, s, s ? strlen(s) : 0, "application/json");
}

enum MHD_Result http_error(struct http *h, struct MHD_Connection *c, unsigned status, const char *param,
			   const char *code, const char *fmt, ...)
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
	enum MHD_Result r = http_json(h, c, status, e ? json_pack("{s:o}", "error", e) : NULL);
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

/* ---- connections: suspension, the guard ---- */

void waiter_suspend(struct waiter *w)
{
	if (!w->suspended) {
		w->suspended = true;
		MHD_suspend_connection(w->c);
	}
}

void waiter_wake(void *arg)
{
	struct waiter *w = arg;
	if (w->suspended) {
		w->suspended = false;
		MHD_resume_connection(w->c);
	}
}

void http_sock_wait(struct http *h, struct sock *sk, struct waiter *w)
{
	if (!sk)
		return;
	pthread_mutex_lock(&h->mu);
	sk->w = w;
	pthread_mutex_unlock(&h->mu);
}

/* The client closed its end (a peek reads end of file) or the socket failed. */
static bool client_gone(int fd)
{
	char ch;
	ssize_t r = recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
	return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Every GUARD_PERIOD: a connection whose request has not arrived whole --request-timeout seconds after it
 * began is shut down (libmicrohttpd's own timeout is per byte: a byte a second would hold it for hours); a
 * suspended request whose client is gone is cancelled (the worker's end of it resumes the connection); a
 * stream quiet for STREAM_KEEPALIVE seconds is woken to send a comment. */
static void *guard(void *arg)
{
	struct http *h = arg;
	struct timespec ts = {0, (long)(GUARD_PERIOD * 1e9)};
	while (!atomic_load(&h->stop)) {
		nanosleep(&ts, NULL);
		double now = now_sec();
		pthread_mutex_lock(&h->mu);
		for (struct sock *sk = h->socks; sk; sk = sk->next) {
			if (!sk->busy && !sk->shut && now - sk->t_read > h->cfg.req_timeout) {
				shutdown(sk->fd, SHUT_RDWR);
				sk->shut = true;
				atomic_fetch_add(&h->timeouts, 1);
			}
			struct waiter *w = sk->w;
			if (!w)
				continue;
			if (client_gone(sk->fd)) {
				srv_cancel(h->v, w->q);
				pthread_mutex_lock(&h->v->mu);
				waiter_wake(w);
				pthread_mutex_unlock(&h->v->mu);
			} else if (w->stream) {
				pthread_mutex_lock(&h->v->mu);
				if (now - w->last > STREAM_KEEPALIVE) {
					w->poke = true;
					waiter_wake(w);
				}
				pthread_mutex_unlock(&h->v->mu);
			}
		}
		pthread_mutex_unlock(&h->mu);
	}
	return NULL;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct http *h = cls;
	struct sock *sk = *socket_context;
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (!ci || !(sk = calloc(1, sizeof(*sk))))
			return;
		*sk = (struct sock){.fd = ci->connect_fd, .t_read = now_sec()};
		pthread_mutex_lock(&h->mu);
		sk->next = h->socks;
		if (h->socks)
			h->socks->prev = sk;
		h->socks = sk;
		pthread_mutex_unlock(&h->mu);
		*socket_context = sk;
	} else if (sk) { /* closed: before libmicrohttpd closes the socket, so the guard never sees a reused fd */
		pthread_mutex_lock(&h->mu);
		if (sk->prev)
			sk->prev->next = sk->next;
		else
			h->socks = sk->next;
		if (sk->next)
			sk->next->prev = sk->prev;
		pthread_mutex_unlock(&h->mu);
		free(sk);
		*socket_context = NULL;
	}
}

static void sock_busy(struct http *h, struct sock *sk, bool busy)
{
	if (!sk)
		return;
	pthread_mutex_lock(&h->mu);
	sk->busy = busy;
	sk->t_read = now_sec();
	pthread_mutex_unlock(&h->mu);
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
			    json_pack("{s:s, s:I, s:f, s:I, s:f, s:f}", "mode", spec_mode_name(v->s->spec.mode), "passes",
				      (json_int_t)v->spec_passes, "tokens_per_pass",
				      v->spec_passes ? (double)v->spec_tokens / (double)v->spec_passes : 0.0, "decode_steps",
				      (json_int_t)v->gen_steps, "tokens_per_step",
				      v->gen_steps ? (double)v->gen_step_tokens / (double)v->gen_steps : 0.0, "acceptance",
				      v->spec_guessed ? (double)v->spec_accepted / (double)v->spec_guessed : 0.0));
	json_object_set_new(o, "grammar", json_pack("{s:I, s:I, s:f}", "requests", v->constrained, "masked", v->masked,
						    "mask_s", v->mask_s));
	int stopping = v->stopping;
	pthread_mutex_unlock(&v->mu);
	return http_json(h, c, stopping ? 503 : 200, o);
}

/* Prometheus' text format (version 0.0.4): one HELP and TYPE line per metric, then its samples. */
static void metric(struct tok_buf *b, const char *name, const char *type, const char *help, const char *labels,
		   double val)
{
	char line[512];
	int n = 0;
	if (help)
		n = snprintf(line, sizeof(line), "# HELP ferry_%s %s\n# TYPE ferry_%s %s\n", name, help, name, type);
	tok_buf_add(b, line, (size_t)n);
	n = snprintf(line, sizeof(line), "ferry_%s%s %.17g\n", name, labels ? labels : "", val);
	tok_buf_add(b, line, (size_t)n);
}

static enum MHD_Result get_metrics(struct http *h, struct MHD_Connection *c, struct conn *cn, const char *url)
{
	(void)cn;
	(void)url;
	struct srv *v = h->v;
	struct tok_buf b = {0};
	char lab[64];
	for (int i = 0; i < HTTP_N_CODES; i++) {
		if (i < HTTP_CODE_OTHER)
			snprintf(lab, sizeof(lab), "{code=\"%u\"}", http_codes[i]);
		else
			snprintf(lab, sizeof(lab), "{code=\"other\"}");
		metric(&b, "http_responses_total", "counter", i ? NULL : "HTTP responses sent, by status code.", lab,
		       (double)atomic_load(&h->codes[i]));
	}
	metric(&b, "http_timeouts_total", "counter", "Connections closed because a request had not arrived in time.", NULL,
	       (double)atomic_load(&h->timeouts));
	pthread_mutex_lock(&v->mu);
	metric(&b, "prompt_tokens_total", "counter", "Prompt tokens of the requests submitted.", NULL,
	       (double)v->prompt_tokens);
	metric(&b, "generated_tokens_total", "counter", "Tokens generated.", NULL, (double)v->gen_tokens);
	metric(&b, "requests_served_total", "counter", "Requests that ended with stop or length.", NULL,
	       (double)v->n_served);
	metric(&b, "requests_cancelled_total", "counter", "Requests cancelled (client gone, shutdown).", NULL,
	       (double)v->n_cancelled);
	metric(&b, "requests_running", "gauge", "Requests in the scheduler.", NULL, (double)v->n_active);
	metric(&b, "queue_length", "gauge", "Requests submitted and not yet in the scheduler.", NULL,
	       (double)(v->n_live - v->n_active > 0 ? v->n_live - v->n_active : 0));
	metric(&b, "step_seconds", "summary", "Time of the model's steps.", "_sum", v->step_s);
	metric(&b, "step_seconds", "summary", NULL, "_count", (double)v->steps);
	metric(&b, "kv_pages", "gauge", "KV cache pages (all groups of layers), by state.", "{state=\"used\"}",
	       (double)(v->kv_pages - v->kv_free));
	metric(&b, "kv_pages", "gauge", NULL, "{state=\"free\"}", (double)v->kv_free);
	pthread_mutex_unlock(&v->mu);
	return send_text(h, c, 200, b.p ? b.p : strdup(""), b.n, "text/plain; version=0.0.4; charset=utf-8");
}

static enum MHD_Result get_models(struct http *h, struct MHD_Connection *c, struct conn *cn, const char *url)
{
	(void)cn;
	(void)url;
	return http_json(h, c, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model_object(h)));
}

static enum MHD_Result get_model(struct http *h, struct MHD_Connection *c, struct conn *cn, const char *url)
{
	(void)cn;
	const char *name = url + strlen("/v1/models/");
	if (strcmp(name, h->cfg.name))
		return http_error(h, c, 404, "model", "model_not_found", "the model '%s' does not exist", name);
	return http_json(h, c, 200, model_object(h));
}

static enum MHD_Result get_page(struct http *h, struct MHD_Connection *c, struct conn *cn, const char *url)
{
	(void)cn;
	(void)url;
	char *s = malloc(chat_html_len);
	if (s)
		memcpy(s, chat_html, chat_html_len);
	return send_text(h, c, 200, s, chat_html_len, "text/html; charset=utf-8");
}

/* The body of a POST as a JSON object, or NULL with the 400 queued in *ret. */
static json_t *body_object(struct http *h, struct MHD_Connection *c, struct conn *cn, enum MHD_Result *ret)
{
	json_error_t je;
	json_t *o = json_loadb(cn->body ? cn->body : "", cn->n, 0, &je);
	if (!o)
		*ret = http_error(h, c, 400, NULL, NULL, "the body is not valid JSON: %s (line %d, column %d)", je.text,
				  je.line, je.column);
	else if (!json_is_object(o))
		*ret = http_error(h, c, 400, NULL, NULL, "the body must be a JSON object");
	if (o && !json_is_object(o)) {
		json_decref(o);
		o = NULL;
	}
	return o;
}

/* llama.cpp's POST /tokenize: {"content": TEXT, "add_special": false, "with_pieces": false} -> {"tokens": [ids]}
 * or, with pieces, [{"id", "piece"}] (a piece that is not UTF-8 as its list of bytes). */
static enum MHD_Result post_tokenize(struct http *h, struct MHD_Connection *c, struct conn *cn, const char *url)
{
	(void)url;
	enum MHD_Result ret = MHD_NO;
	json_t *o = body_object(h, c, cn, &ret);
	if (!o)
		return ret;
	const json_t *t = json_object_get(o, "content"), *as = json_object_get(o, "add_special"),
		     *wp = json_object_get(o, "with_pieces");
	const char *bad = !json_is_string(t) ? "content"
			  : as && !json_is_boolean(as) ? "add_special"
			  : wp && !json_is_boolean(wp) ? "with_pieces"
						       : NULL;
	if (bad) {
		json_decref(o);
		return http_error(h, c, 400, bad, NULL, bad[0] == 'c' ? "'content' must be a string (the text to tokenize)"
								      : "'%s' must be a boolean", bad);
	}
	struct tok_ids ids = {0};
	char msg[256];
	pthread_mutex_lock(&h->v->tok_mu);
	int rc = tokenizer_encode(h->v->tk, json_string_value(t), json_string_length(t),
				  TOK_PARSE_SPECIAL | (json_is_true(as) ? TOK_ADD_SPECIAL : 0), &ids, msg, sizeof(msg));
	pthread_mutex_unlock(&h->v->tok_mu);
	bool pieces = json_is_true(wp);
	json_decref(o);
	if (rc) {
		tok_ids_free(&ids);
		return http_error(h, c, 400, "content", NULL, "%s", msg);
	}
	json_t *toks = json_array();
	struct tok_buf b = {0};
	for (size_t i = 0; i < ids.n; i++) {
		if (!pieces) {
			json_array_append_new(toks, json_integer(ids.ids[i]));
			continue;
		}
		b.n = 0;
		tokenizer_decode(h->v->tk, &ids.ids[i], 1, true, false, &b);
		json_t *piece = json_stringn(b.p ? b.p : "", b.n);
		if (!piece) {
			piece = json_array();
			for (size_t j = 0; j < b.n; j++)
				json_array_append_new(piece, json_integer((unsigned char)b.p[j]));
		}
		json_array_append_new(toks, json_pack("{s:i, s:o}", "id", ids.ids[i], "piece", piece));
	}
	tok_buf_free(&b);
	tok_ids_free(&ids);
	return http_json(h, c, 200, json_pack("{s:o}", "tokens", toks));
}

/* llama.cpp's POST /detokenize: {"tokens": [ids]} -> {"content": TEXT} (invalid UTF-8 replaced). */
static enum MHD_Result post_detokenize(struct http *h, struct MHD_Connection *c, struct conn *cn, const char *url)
{
	(void)url;
	enum MHD_Result ret = MHD_NO;
	json_t *o = body_object(h, c, cn, &ret);
	if (!o)
		return ret;
	const json_t *t = json_object_get(o, "tokens"), *x;
	int V = tokenizer_n_vocab(h->v->tk);
	size_t i, n = json_is_array(t) ? json_array_size(t) : 0;
	int32_t *ids = malloc(sizeof(int32_t) * (n ? n : 1));
	bool ok = json_is_array(t) && ids;
	json_array_foreach(t, i, x) {
		if (!ok || !json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) >= V) {
			ok = false;
			break;
		}
		ids[i] = (int32_t)json_integer_value(x);
	}
	json_decref(o);
	if (!ok) {
		free(ids);
		return http_error(h, c, 400, "tokens", NULL, "'tokens' must be a list of token ids (0..%d)", V - 1);
	}
	struct tok_buf b = {0};
	int rc = tokenizer_decode_text(h->v->tk, ids, n, false, &b);
	free(ids);
	json_t *r = rc ? NULL : json_pack("{s:s%}", "content", b.p ? b.p : "", b.n);
	tok_buf_free(&b);
	return r ? http_json(h, c, 200, r) : http_error(h, c, 500, NULL, NULL, "cannot decode the tokens");
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

/* A path that ends with '/' (other than "/") is a prefix (the rest is the handler's); GET routes answer HEAD
 * too. */
static const struct route {
	const char *method, *path;
	enum MHD_Result (*handle)(struct http *h, struct MHD_Connection *c, struct conn *cn, const char *url);
} routes[] = {
	{"GET", "/", get_page},
	{"GET", "/health", get_health},
	{"GET", "/metrics", get_metrics},
	{"GET", "/v1/models", get_models},
	{"GET", "/v1/models/", get_model},
	{"POST", "/v1/chat/completions", post_chat},
	{"POST", "/v1/completions", post_completions},
	{"POST", "/tokenize", post_tokenize},
	{"POST", "/detokenize", post_detokenize},
};

/* The route of url and method; 405 when url has routes for other methods only, 404 when it has none. */
static enum MHD_Result route(struct http *h, struct MHD_Connection *c, struct conn *cn, const char *url,
			     const char *method)
{
	const struct route *other = NULL;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		const struct route *r = &routes[i];
		size_t n = strlen(r->path);
		if (n > 1 && r->path[n - 1] == '/' ? strncmp(url, r->path, n) : strcmp(url, r->path))
			continue;
		if (!strcmp(method, r->method) || (!strcmp(r->method, "GET") && !strcmp(method, "HEAD")))
			return r->handle(h, c, cn, url);
		other = other ? other : r;
	}
	if (other)
		return http_error(h, c, 405, NULL, NULL, "%s %s: use %s", method, url, other->method);
	return http_error(h, c, 404, NULL, NULL, "no route %s %s", method, url);
}

/* A Content-Length that is a plain decimal number; -1 for anything else (a sign, 2^64, garbage). */
static long long content_length(const char *s)
{
	long long v = 0;
	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (1ll << 50))
			return -1;
		v = v * 10 + (*s - '0');
	}
	return v;
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
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
		cn->sk = ci ? ci->socket_context : NULL;
		if (!authorized(h, c))
			return http_error(h, c, 401, NULL, "invalid_api_key", "a wrong or missing API key (Authorization: Bearer KEY)");
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		long long len = cl ? content_length(cl) : 0;
		if (len < 0)
			return http_error(h, c, 400, "Content-Length", NULL, "the Content-Length header '%s' is not a byte count", cl);
		if (len > h->cfg.max_body)
			return http_error(h, c, 413, NULL, "request_too_large", "the body of %s bytes is over --max-body %ld", cl,
					  h->cfg.max_body);
		return MHD_YES;
	}
	if (cn->q) /* resumed by the worker */
		return completion_resume(h, c, cn);
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
	sock_busy(h, cn->sk, true);
	if (cn->too_big)
		return http_error(h, c, 413, NULL, "request_too_large", "the body is over --max-body %ld bytes", h->cfg.max_body);
	return route(h, c, cn, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why)
{
	struct conn *cn = *con_cls;
	struct http *h = cls;
	(void)c;
	(void)why;
	if (cn) {
		http_sock_wait(h, cn->sk, NULL);
		completion_done(h, cn);
		sock_busy(h, cn->sk, false); /* a kept-alive connection's next request has the deadline again */
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
	atomic_init(&h->stop, false);
	pthread_mutex_init(&h->mu, NULL);
	char port[16];
	snprintf(port, sizeof(port), "%d", cfg->port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
	int g = getaddrinfo(cfg->host, port, &hints, &ai);
	if (g) {
		snprintf(err, errlen, "--host %s: %s", cfg->host, gai_strerror(g));
		pthread_mutex_destroy(&h->mu);
		free(h);
		return -EINVAL;
	}
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
			 (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
	h->d = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
				MHD_OPTION_THREAD_POOL_SIZE, (unsigned)HTTP_THREADS, MHD_OPTION_CONNECTION_LIMIT,
				cfg->max_conns, MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->max_conns_per_ip,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->req_timeout, MHD_OPTION_NOTIFY_COMPLETED,
				on_completed, h, MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_END);
	int e = errno;
	freeaddrinfo(ai);
	if (!h->d) {
		snprintf(err, errlen, "cannot listen on %s port %d: %s", cfg->host, cfg->port, strerror(e ? e : EADDRINUSE));
		pthread_mutex_destroy(&h->mu);
		free(h);
		return -(e ? e : EADDRINUSE);
	}
	if ((e = pthread_create(&h->guard, NULL, guard, h))) {
		snprintf(err, errlen, "cannot start a thread: %s", strerror(e));
		MHD_stop_daemon(h->d);
		pthread_mutex_destroy(&h->mu);
		free(h);
		return -e;
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
	atomic_store(&h->stop, true);
	pthread_join(h->guard, NULL);
	MHD_stop_daemon(h->d);
	pthread_mutex_destroy(&h->mu);
	jinja_free(h->tmpl);
	free(h);
}
