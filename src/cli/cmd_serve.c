/*
 * cmd_serve.c: `ferry serve -m MODEL [--host H] [--port P]`: an OpenAI-compatible HTTP server. This file is the
 * command: its options, signals, and the start-up that opens the model, starts the worker (src/serve/serve.h)
 * and the HTTP front (src/serve/http.h: routes, refusals, streams) and runs the worker on this thread.
 *
 * SIGTERM or SIGINT: new requests get 503, running ones finish within --grace seconds (then they are
 * cancelled; a second signal cancels at once), and the server exits 0.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/ferry.h"
#include "cli/opt_hint.h"
#include "cli/model_home.h"
#include "layout/layout.h"
#include "cli/run_opts.h"
#include "serve/http.h"
#include "serve/serve.h"
#include "base/util.h"

#define SERVE_CHUNK 4096

struct serve_args {
	const char *model, *host, *api_key, *name;
	int port, max_batch, ctx, chunk, max_queue, max_conns, max_conns_ip, req_timeout;
	long max_body;
	double grace, window;
	bool quiet;
	struct run_opts ro;
};

/* The command's state: its options, the worker, and what the HTTP front is started with. */
struct server {
	const struct serve_args *a;
	struct srv v;
	struct http_cfg http;
	char name[256];
	int ctx;
};

static volatile sig_atomic_t serve_signals;

static void on_signal(int sig)
{
	(void)sig;
	serve_signals++;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: ferry serve -m MODEL.ferry [options]\n"
		   "  --host ADDR            address to listen on (default 127.0.0.1)\n"
		   "  --port N               port (default 8080; 0 picks a free one, printed at start)\n"
		   "  --api-key KEY          require 'Authorization: Bearer KEY' on every route\n"
		   "  --model-name NAME      the model's id in requests and /v1/models (default: the directory's name)\n"
		   "  --ctx N                positions per request, prompt and completion (default 4096 or the model's)\n"
		   "  --max-batch N          most requests in one step (default 16; the planner may lower it)\n"
		   "  --max-queue N          most requests running or waiting; more get 429 (default 64)\n"
		   "  --max-body BYTES       largest request body (default 4M)\n"
		   "  --max-conns N          connections open at once (default 512)\n"
		   "  --max-conns-per-ip N   of them from one client address (default 64)\n"
		   "  --request-timeout S    seconds a request's headers and body may take to arrive, and a kept-alive\n"
		   "                         connection may stay idle (default 30)\n"
		   "  --grace S              on SIGTERM, seconds running requests may take to finish (default 30)\n"
		   "  --batch-window MS      an idle server waits this long after a request for others to share its\n"
		   "                         first step (default 20)\n"
		   "  --chunk C              tokens per pass over the layers (default 4096)\n"
		   "  --quiet                no access log (a line per request on stderr: id, end, tokens, times)\n");
	run_opts_usage(f);
}

static int parse_args(int argc, char **argv, struct serve_args *a)
{
	enum { O_HOST = 256, O_PORT, O_KEY, O_NAME, O_CTX, O_MAX_BATCH, O_MAX_QUEUE, O_MAX_BODY, O_GRACE, O_CHUNK, O_WINDOW,
	       O_QUIET, O_MAX_CONNS, O_MAX_CONNS_IP, O_REQ_TIMEOUT };
	static const struct option lo[] = {{"model", required_argument, 0, 'm'},
					   {"host", required_argument, 0, O_HOST},
					   {"port", required_argument, 0, O_PORT},
					   {"api-key", required_argument, 0, O_KEY},
					   {"model-name", required_argument, 0, O_NAME},
					   {"ctx", required_argument, 0, O_CTX},
					   {"max-batch", required_argument, 0, O_MAX_BATCH},
					   {"max-queue", required_argument, 0, O_MAX_QUEUE},
					   {"max-body", required_argument, 0, O_MAX_BODY},
					   {"max-conns", required_argument, 0, O_MAX_CONNS},
					   {"max-conns-per-ip", required_argument, 0, O_MAX_CONNS_IP},
					   {"request-timeout", required_argument, 0, O_REQ_TIMEOUT},
					   {"grace", required_argument, 0, O_GRACE},
					   {"batch-window", required_argument, 0, O_WINDOW},
					   {"quiet", no_argument, 0, O_QUIET},
					   {"chunk", required_argument, 0, O_CHUNK},
					   {"help", no_argument, 0, 'h'},
					   RUN_OPTS_LONG,
					   {0}};
	memset(a, 0, sizeof(*a));
	a->host = "127.0.0.1";
	a->port = 8080;
	a->max_batch = 16;
	a->max_queue = 64;
	a->max_body = 4 << 20;
	a->max_conns = 512;
	a->max_conns_ip = 64;
	a->req_timeout = 30;
	a->grace = 30;
	a->window = 0.02;
	a->chunk = SERVE_CHUNK;
	run_opts_default(&a->ro);
	int c;
	long v;
	int64_t bytes;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "m:h", lo, NULL)) != -1) {
		int bad = 0, r;
		const char *name = NULL;
		switch (c) {
		case 'm': a->model = optarg; break;
		case O_HOST: a->host = optarg; break;
		case O_PORT: bad = parse_int(optarg, 0, 65535, &v); a->port = (int)v; name = "--port"; break;
		case O_KEY: a->api_key = optarg; bad = !optarg[0]; name = "--api-key"; break;
		case O_NAME: a->name = optarg; bad = !optarg[0] || strchr(optarg, '/') != NULL; name = "--model-name"; break;
		case O_CTX: bad = parse_int(optarg, 2, 1 << 24, &v); a->ctx = (int)v; name = "--ctx"; break;
		case O_MAX_BATCH: bad = parse_int(optarg, 1, 4096, &v); a->max_batch = (int)v; name = "--max-batch"; break;
		case O_MAX_QUEUE: bad = parse_int(optarg, 1, 1 << 20, &v); a->max_queue = (int)v; name = "--max-queue"; break;
		case O_MAX_BODY:
			bytes = parse_size(optarg);
			bad = bytes < 1024 || bytes > (1ll << 34);
			a->max_body = (long)bytes;
			name = "--max-body";
			break;
		case O_MAX_CONNS: bad = parse_int(optarg, 1, 1 << 16, &v); a->max_conns = (int)v; name = "--max-conns"; break;
		case O_MAX_CONNS_IP:
			bad = parse_int(optarg, 1, 1 << 16, &v);
			a->max_conns_ip = (int)v;
			name = "--max-conns-per-ip";
			break;
		case O_REQ_TIMEOUT:
			bad = parse_int(optarg, 1, 86400, &v);
			a->req_timeout = (int)v;
			name = "--request-timeout";
			break;
		case O_GRACE: bad = parse_int(optarg, 0, 86400, &v); a->grace = (double)v; name = "--grace"; break;
		case O_QUIET: a->quiet = true; break;
		case O_WINDOW: bad = parse_int(optarg, 0, 10000, &v); a->window = (double)v / 1000; name = "--batch-window"; break;
		case O_CHUNK: bad = parse_int(optarg, 1, 1 << 20, &v); a->chunk = (int)v; name = "--chunk"; break;
		case 'h': usage(stdout); exit(0);
		case '?': return opt_hint("serve", argv, "m:h", lo);
		default:
			if ((r = run_opts_parse(&a->ro, c, optarg)) == 1)
				return opt_hint("serve", argv, "m:h", lo);
			if (r)
				return r;
		}
		if (bad) {
			fprintf(stderr, "ferry: %s: bad value '%s'\n", name, optarg);
			return 2;
		}
	}
	if (!a->model || optind != argc) {
		fprintf(stderr, "ferry: serve needs -m MODEL and no other arguments\n");
		usage(stderr);
		return 2;
	}
	return run_opts_check(&a->ro);
}

/* The model's name: the last part of its path without .ferry. */
static void model_name(const char *path, char *out, size_t n)
{
	size_t len = strlen(path);
	while (len > 1 && path[len - 1] == '/')
		len--;
	size_t at = len;
	while (at > 0 && path[at - 1] != '/')
		at--;
	size_t k = len - at;
	if (k > 6 && !strncmp(path + len - 6, ".ferry", 6))
		k -= 6;
	snprintf(out, n, "%.*s", (int)k, path + at);
}

static int serve(struct server *sv, const struct layout *lay, char *err, size_t errlen)
{
	const struct serve_args *a = sv->a;
	int max_pos = lay->hp.max_pos > 0 ? lay->hp.max_pos : 4096;
	int cap = a->ctx ? a->ctx : max_pos < 4096 ? max_pos : 4096;
	int chunk = a->chunk > a->max_batch ? a->chunk : a->max_batch;
	struct engine_opts eo = {.t_max = chunk, .max_logits = a->max_batch, .ctx = cap, .max_seqs = a->max_batch,
				 .t_max_auto = a->chunk == SERVE_CHUNK};
	run_opts_engine(&a->ro, &eo);
	struct engine *e = NULL;
	struct tokenizer *tk = NULL;
	struct http *h = NULL;
	int *eos = NULL;
	bool worker = false;
	int rc = tokenizer_open(&tk, a->model, err, errlen);
	if (!rc && run_opts_eos(&lay->hp, tk, &eos, &eo.n_eos)) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
	}
	eo.eos = eos;
	rc = rc ? rc : engine_open(&e, lay, &eo, err, errlen);
	rc = rc ? rc : srv_init(&sv->v, e, tk, a->max_queue, err, errlen);
	worker = !rc;
	sv->v.window = a->window;
	sv->ctx = rc ? 0 : engine_model(e)->opt.ctx;
	if (!rc)
		rc = http_start(&h, &sv->http, &sv->v, err, errlen);
	if (!rc) {
		fprintf(stderr, "ferry: serve: %s on http://%s:%u/v1 (ctx %d, up to %d requests per step, %d queued)\n",
			sv->name, a->host, http_port(h), sv->ctx, sv->v.s->max_batch, a->max_queue);
		rc = srv_worker_run(&sv->v, &serve_signals, a->grace);
		if (!srv_wait_idle(&sv->v, 10)) /* every request has ended; let their connections send that */
			fprintf(stderr, "ferry: serve: closing connections that did not take their responses in 10s\n");
		http_stop(h);
		fprintf(stderr, "ferry: serve: stopped (%lld requests served, %lld cancelled, %lld tokens generated)\n",
			sv->v.n_served, sv->v.n_cancelled, sv->v.gen_tokens);
	}
	if (worker)
		srv_free(&sv->v);
	engine_close(e);
	free(eos);
	tokenizer_free(tk);
	return rc;
}

int ferry_serve(int argc, char **argv)
{
	struct serve_args a;
	char model[4096];
	int rc = parse_args(argc, argv, &a);
	if (rc || (rc = model_home_resolve(a.model, model, sizeof(model))))
		return rc;
	a.model = model;
	char err[ERR_LEN];
	struct server sv = {.a = &a};
	char name[sizeof(sv.name)];
	if (a.name)
		snprintf(name, sizeof(name), "%s", a.name);
	else
		model_name(a.model, name, sizeof(name));
	struct tok_buf nb = {0}; /* ids go into JSON strings: valid UTF-8 */
	tok_buf_add_lossy(&nb, name, strlen(name));
	snprintf(sv.name, sizeof(sv.name), "%.*s", (int)nb.n, nb.p ? nb.p : "");
	tok_buf_free(&nb);
	sv.http = (struct http_cfg){.host = a.host, .port = a.port, .api_key = a.api_key, .max_body = a.max_body,
				    .max_conns = (unsigned)a.max_conns,
				    .max_conns_per_ip = (unsigned)a.max_conns_ip, .req_timeout = a.req_timeout, .model_path = a.model, .name = sv.name,
				    .quiet = a.quiet};
	struct layout lay;
	if ((rc = layout_open(&lay, a.model, err, sizeof(err)))) {
		fprintf(stderr, "ferry: %s\n", err);
		return 1;
	}
	struct sigaction sa = {.sa_handler = on_signal}, ign = {.sa_handler = SIG_IGN};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGPIPE, &ign, NULL);
	rc = serve(&sv, &lay, err, sizeof(err));
	if (rc)
		fprintf(stderr, "ferry: serve: %s\n", err);
	layout_close(&lay);
	return rc ? 1 : 0;
}
