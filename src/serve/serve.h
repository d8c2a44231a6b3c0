/*
 * serve.h: the worker behind `ferry serve`: requests from the HTTP threads (http.h) join the step scheduler
 * between steps and leave when done or cancelled, so every streamed layer serves every request in flight
 * (continuous batching). One worker thread owns the model and runs the scheduler; HTTP threads hand requests
 * over through an inbox and read their text as it grows, all under one mutex.
 *
 * A step cannot take requests once it runs, so an idle worker waits `window` seconds after the first request
 * arrives: clients that come together share the first pass instead of the later ones waiting a whole pass.
 *
 * A request's life: srv_submit (queued; refused when --max-queue requests are live or the server is
 * stopping), admitted by the scheduler when its pages fit, tokens appended to its text (a tail that could
 * begin a stop string is held back from `ready`), done. srv_cancel (a client gone) ends it at the next step
 * and frees its sequence. Both sides hold a reference; the last srv_req_put frees it.
 *
 * Shutdown (srv_worker_run's signal counter): the first signal stops admitting (queued requests end with
 * an error) and lets running ones finish for up to `grace` seconds, then cancels them; a second signal
 * cancels at once. srv_worker_run returns when nothing is live.
 */
#ifndef FERRY_SERVE_H
#define FERRY_SERVE_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>

#include "grammar/grammar.h"
#include "layout/layout.h"
#include "engine/engine.h"
#include "serve/constrain.h"
#include "serve/request.h"
#include "engine/scheduler.h"
#include "text/tokenizer.h"

/* The logprob of one generated token and the n_top best of its row (log-softmax of the raw logits). */
#define SRV_TOP_MAX 20
struct srv_lp {
	int tok, n_top;
	float lp;
	int top_tok[SRV_TOP_MAX];
	float top_lp[SRV_TOP_MAX];
};

enum srv_end { SRV_END_NONE, SRV_END_STOP, SRV_END_LENGTH, SRV_END_CANCEL, SRV_END_ERROR, SRV_END_SHUTDOWN };

struct srv_req {
	struct sched_req r; /* first: the scheduler's callbacks get &r */
	struct req_params p;
	struct tok_stream ts; /* the worker thread only */
	/* under srv.mu */
	struct tok_buf text;  /* the generated text, cut before a stop string */
	size_t ready;         /* bytes of text that can be sent now */
	int n_gen;
	bool done, cancel;
	enum srv_end end;
	char err[256];
	int refs;
	double t0, t_first, t_done; /* when it was submitted, its first token came, it ended (log, timings) */
	char id[48];          /* the response id (set by the HTTP side) */
	pthread_cond_t cv;    /* signalled when text grows or the request ends */
	/* called (under srv.mu) with wake_arg whenever cv is signalled: the HTTP side resumes its connection */
	void (*wake)(void *arg);
	void *wake_arg;
	int logprobs;         /* -1: none; else the alternatives per token (0..SRV_TOP_MAX) */
	struct srv_lp *lp;    /* [n_lp] under srv.mu, one per generated token when logprobs >= 0 */
	int n_lp, cap_lp;
	float *lp_row;        /* the worker's: the row of the next token, log-softmaxed */
	/* structured output (structured.h): the grammar the sampler is held to and its matcher (the worker's
	 * once submitted; NULL: free text), the tools whose calls are parsed out of the text (NULL: none) */
	struct gram *gram;
	struct gram_state *gs;
	json_t *tools;
};

struct srv {
	pthread_mutex_t mu;
	pthread_cond_t wake;  /* the worker's: a request arrived or was cancelled */
	struct srv_req **inbox, **active;
	int n_inbox, cap_inbox, n_active, cap_active;
	int n_live, max_live; /* requests submitted and not yet done; the bound of the queue */
	int stopping;         /* 0 serving, 1 draining, 2 cancelling */
	int n_reqs;           /* srv_req objects alive (an HTTP thread may still be sending one's end) */
	double window;        /* seconds an idle worker waits after a request arrives for others to join its step */
	long long gen_tokens, prompt_tokens, n_cancelled, n_served, steps;
	double step_s;        /* time in steps so far */
	int kv_pages, kv_free; /* pages of the KV pools (every group), and those free (the worker's copy) */
	unsigned long long h2d_bytes; /* weight bytes uploaded to the device so far */
	long long spec_passes, spec_tokens, spec_guessed, spec_accepted; /* speculative steps so far (spec.h) */
	long long gen_steps, gen_step_tokens; /* requests' decode steps (plain ones included), the tokens they gave */
	struct model *m;
	struct sched *s;      /* the engine's */
	struct tokenizer *tk;
	const struct layout_hparams *hp;
	pthread_mutex_t tok_mu; /* encoding (the tokenizer's cache) and the chat template */
	struct constrain cons; /* constrained requests' token bytes and trie (made once, by srv_grammar_vocab) */
	long long constrained, masked; /* requests with a grammar; their picks it refused (a full mask made) */
	double mask_s;        /* time in those masks */
};

/* Waits on cv (made on CLOCK_MONOTONIC, as srv's are) for at most `seconds`; mu held. */
void srv_wait(pthread_cond_t *cv, pthread_mutex_t *mu, double seconds);
/* Serves the model and scheduler of e (its callbacks are the server's until srv_free). */
int srv_init(struct srv *v, struct engine *e, struct tokenizer *tk, int max_live, char *err, size_t errlen);
void srv_free(struct srv *v);
/* A request with r.toks (room for n_prompt + max_new + 1), r.n_prompt, r.max_new and p filled; takes the
 * sampler from p. 0, -EBUSY (queue full), -ESHUTDOWN (stopping) or -ENOMEM; two references on success. */
int srv_req_new(struct srv *v, struct srv_req **out);
int srv_submit(struct srv *v, struct srv_req *q);
/* The vocabulary trie constrained requests need, made on first use (any thread). 0 or -ENOMEM. */
int srv_grammar_vocab(struct srv *v);
void srv_cancel(struct srv *v, struct srv_req *q);
void srv_req_put(struct srv *v, struct srv_req *q);
/* Runs the worker on the calling thread until a signal (counted in *signals) has drained it. 0, or a
 * negative errno after printing why. */
int srv_worker_run(struct srv *v, volatile sig_atomic_t *signals, double grace);
/* After srv_worker_run: waits up to timeout seconds for the HTTP threads to let go of every request (their
 * responses sent). True when they did. */
bool srv_wait_idle(struct srv *v, double timeout);

#endif
