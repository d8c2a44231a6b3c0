/*
 * http_internal.h: what the two halves of the HTTP front share: http.c (the daemon, connections and their
 * deadlines, the route table, the small routes) and complete.c (the completion routes: requests, waiting for
 * the worker without holding a thread, whole responses, event streams, logprobs).
 *
 * Connections and threads: libmicrohttpd runs a few threads over epoll (no thread per connection), so a client
 * that sends slowly costs a socket, not a thread. A handler never blocks: a request waiting for the worker
 * suspends its connection (MHD_suspend_connection) and the worker's wake hook resumes it when text grows or the
 * request ends. A waiter's `suspended` flag and both calls are under srv.mu, so a wake can never come between
 * the check and the suspension. One guard thread (http.c) closes connections whose request has not arrived
 * whole within --request-timeout seconds, and looks at the sockets of suspended requests: a client gone cancels
 * its request; a quiet stream is woken for a keep-alive comment.
 */
#ifndef FERRY_HTTP_INTERNAL_H
#define FERRY_HTTP_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdatomic.h>

#include "serve/http.h"

#define STREAM_KEEPALIVE 15.0

/* A request suspended until the worker has news for it (fields under srv.mu). */
struct waiter {
	struct MHD_Connection *c;
	struct srv_req *q;
	bool suspended, poke; /* poke: the guard asks a quiet stream for a keep-alive comment */
	bool stream;
	double last;          /* when the stream last sent something */
};

/* One TCP connection (libmicrohttpd's socket context), on the guard's list (fields under http.mu). */
struct sock {
	struct sock *prev, *next;
	int fd;
	double t_read;        /* when its current request began to arrive */
	bool busy;            /* its request arrived whole: no deadline while it is handled */
	bool shut;            /* the guard closed it */
	struct waiter *w;     /* its suspended request, if any */
};

/* Counted response statuses for /metrics. */
#define HTTP_CODES_LIST X(200) X(400) X(401) X(404) X(405) X(408) X(413) X(429) X(500) X(503)
enum {
#define X(n) HTTP_CODE_##n,
	HTTP_CODES_LIST
#undef X
	HTTP_CODE_OTHER,
	HTTP_N_CODES
};

struct http {
	struct http_cfg cfg;
	struct srv *v;
	struct MHD_Daemon *d;
	struct jinja_tmpl *tmpl; /* the chat template, loaded by the first chat request (under v->tok_mu) */
	int ctx;                 /* positions per request */
	atomic_ullong counter;   /* mixed into fresh seeds and response ids */
	double t0;               /* when it started: the model's "created" */
	pthread_mutex_t mu;      /* socks */
	struct sock *socks;
	pthread_t guard;
	atomic_bool stop;
	atomic_ullong codes[HTTP_N_CODES];
	atomic_ullong timeouts;  /* connections closed by the deadline */
};

/* The body of one request, gathered across the handler's calls, and what its response needs. */
struct conn {
	char *body;
	size_t n, cap;
	bool too_big;
	struct sock *sk;
	struct srv_req *q;  /* the request of a completion, until its response is sent (on_completed) */
	struct waiter w;    /* q waiting for its first token (stream) or its end */
	bool chat, stream, usage;
	char id[48];
	long long created;
};

/* Queues a response, counting its status. */
enum MHD_Result http_queue(struct http *h, struct MHD_Connection *c, unsigned status, struct MHD_Response *r);
enum MHD_Result http_json(struct http *h, struct MHD_Connection *c, unsigned status, json_t *o);
/* OpenAI's error object: {"error": {"message", "type", "param", "code"}}. */
enum MHD_Result http_error(struct http *h, struct MHD_Connection *c, unsigned status, const char *param,
			   const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Registers w as the suspended request of sk (the guard watches its socket); NULL unregisters. */
void http_sock_wait(struct http *h, struct sock *sk, struct waiter *w);
/* Under srv.mu: suspends w's connection (the handler returns right after). */
void waiter_suspend(struct waiter *w);
/* srv_req.wake: resumes w's connection if it is suspended (under srv.mu). */
void waiter_wake(void *w);

/* complete.c: POST /v1/chat/completions and /v1/completions; called again when a suspended request resumes. */
enum MHD_Result completion(struct http *h, struct MHD_Connection *c, struct conn *cn, bool chat);
enum MHD_Result completion_resume(struct http *h, struct MHD_Connection *c, struct conn *cn);
/* on_completed's part for a completion: q let go, the access log. */
void completion_done(struct http *h, struct conn *cn);

#endif
