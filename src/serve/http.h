/*
 * http.h: the OpenAI-compatible HTTP front of `ferry serve` (http.c), over the worker thread (serve.h).
 *
 * Routes: POST /v1/chat/completions, POST /v1/completions (stream: true gives server-sent events, `data:
 * {chunk}` lines and a final `data: [DONE]`; logprobs in OpenAI's shapes), GET /v1/models, GET /v1/models/NAME,
 * GET /health, GET /metrics (Prometheus text), POST /tokenize, POST /detokenize (llama.cpp's), GET / (the chat
 * page). Request fields are request.h's (OpenAI's names and ranges; a request without "model" is the served
 * model's, without "temperature" samples at 1 and without "seed" draws a fresh one, as OpenAI does); n must
 * be 1. Errors are OpenAI's error objects naming the field: 400 bad JSON, fields or Content-Length, 401 wrong
 * API key, 404 unknown model or route, 405 a known route with another method, 413 body over max_body, 429 more
 * than the worker's max_live requests live (with Retry-After), 503 stopping.
 *
 * HTTP is libmicrohttpd's (GNU, packaged everywhere: HTTP/1.1 parsing, keep-alive, chunked responses and
 * connection limits are where hand-written servers get their bugs) on HTTP_THREADS threads over epoll; how a
 * request waits for the worker without holding a thread, and the deadlines that bound slow clients, are in
 * http_internal.h.
 */
#ifndef FERRY_HTTP_H
#define FERRY_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "serve/serve.h"

/* What the HTTP front takes from the command line; the strings must outlive it. */
struct http_cfg {
	const char *host;       /* the address to listen on: a name, an IPv4 or an IPv6 address */
	int port;               /* 0 picks a free one (http_port) */
	const char *api_key;    /* NULL: no Authorization needed */
	long max_body;          /* bytes; a larger body gets 413 */
	unsigned max_conns;     /* connections open at once */
	unsigned max_conns_per_ip; /* of them from one client address */
	double req_timeout;     /* seconds a request's headers and body may take to arrive (whole) */
	const char *model_path; /* the model's directory: the chat template is loaded from it on first use */
	const char *name;       /* the model's id in requests and /v1/models (valid UTF-8) */
	bool quiet;             /* no access log (a line per request on stderr) */
};

/* libmicrohttpd's threads (epoll each): a connection costs a socket, not a thread. */
#define HTTP_THREADS 4

struct http;

/* Listens and answers requests on libmicrohttpd's threads, submitting them to v (srv_init done). 0, or a
 * negative errno with err set. */
int http_start(struct http **out, const struct http_cfg *cfg, struct srv *v, char *err, size_t errlen);
/* The port it listens on. */
unsigned http_port(const struct http *h);
/* Closes the listening socket and every connection (their threads joined) and frees h. */
void http_stop(struct http *h);

#endif
