/* serve.c: the worker of `ferry serve` (serve.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "serve/serve.h"
#include "base/util.h"

static void srv_signal(struct srv_req *q)
{
	pthread_cond_broadcast(&q->cv);
	if (q->wake)
		q->wake(q->wake_arg);
}

/* The row a logprobs request's next token comes from, kept as log-softmax until the token is known. */
static void srv_on_logits(void *ctx, struct sched_req *r, const float *row)
{
	struct srv *v = ctx;
	struct srv_req *q = (struct srv_req *)r;
	int V = v->hp->vocab;
	if (!q->lp_row && !(q->lp_row = malloc(sizeof(float) * (size_t)V)))
		return;
	float mx = -INFINITY;
	for (int i = 0; i < V; i++)
		mx = row[i] > mx ? row[i] : mx;
	double sum = 0;
	for (int i = 0; i < V; i++)
		sum += exp((double)row[i] - mx);
	float lse = mx + (float)log(sum);
	for (int i = 0; i < V; i++)
		q->lp_row[i] = row[i] - lse;
}

/* The logprob entry of tok from q->lp_row: its value and the n_top best (ties: lower id first). */
static void srv_lp_make(const struct srv_req *q, int V, int tok, struct srv_lp *e)
{
	const float *lp = q->lp_row;
	*e = (struct srv_lp){.tok = tok, .lp = lp[tok]};
	int K = q->logprobs;
	for (int i = 0; i < V; i++) {
		if (e->n_top == K && (K == 0 || lp[i] <= e->top_lp[K - 1]))
			continue;
		int j = e->n_top < K ? e->n_top++ : K - 1; /* the slot freed: the end, or the worst one dropped */
		for (; j > 0 && lp[i] > e->top_lp[j - 1]; j--) {
			e->top_lp[j] = e->top_lp[j - 1];
			e->top_tok[j] = e->top_tok[j - 1];
		}
		e->top_lp[j] = lp[i];
		e->top_tok[j] = i;
	}
}

/* A token's text; true when it completes a stop string (the text is cut before it). */
static bool srv_on_token(void *ctx, struct sched_req *r, int tok)
{
	struct srv *v = ctx;
	struct srv_req *q = (struct srv_req *)r;
	bool stop = false;
	struct srv_lp e;
	bool has_lp = q->logprobs >= 0 && q->lp_row && !sched_is_eos(v->s, tok);
	if (has_lp)
		srv_lp_make(q, v->hp->vocab, tok, &e);
	pthread_mutex_lock(&v->mu);
	if (has_lp && q->n_lp == q->cap_lp) {
		int nc = q->cap_lp ? 2 * q->cap_lp : 16;
		struct srv_lp *na = realloc(q->lp, sizeof(*na) * (size_t)nc);
		if (na) {
			q->lp = na;
			q->cap_lp = nc;
		}
	}
	if (has_lp && q->n_lp < q->cap_lp)
		q->lp[q->n_lp++] = e;
	q->n_gen = r->n_gen;
	if (q->n_gen == 1)
		q->t_first = now_sec();
	v->gen_tokens++;
	if (q->gs && !sched_is_eos(v->s, tok)) /* the grammar allowed it; once it is complete, the reply is */
		stop = constrain_feed(&v->cons, q->gs, tok);
	if (!sched_is_eos(v->s, tok)) {
		size_t before = q->text.n;
		tok_stream_push(&q->ts, tok, &q->text);
		stop = req_stop_cut(&q->text, before, q->p.stops, q->p.n_stops) || stop;
		q->ready = stop ? q->text.n : req_stop_safe(&q->text, q->p.stops, q->p.n_stops);
	}
	srv_signal(q);
	pthread_mutex_unlock(&v->mu);
	return stop;
}

/* A constrained request's next token: may tok come? */
static bool srv_allow(void *ctx, struct sched_req *r, int tok)
{
	struct srv *v = ctx;
	return constrain_allow(&v->cons, ((struct srv_req *)r)->gs, tok, sched_is_eos(v->s, tok));
}

static void srv_mask(void *ctx, struct sched_req *r, float *row)
{
	struct srv *v = ctx;
	constrain_mask(&v->cons, ((struct srv_req *)r)->gs, v->s, row);
}

int srv_grammar_vocab(struct srv *v)
{
	pthread_mutex_lock(&v->tok_mu);
	int rc = constrain_vocab(&v->cons, v->tk, v->hp->vocab);
	pthread_mutex_unlock(&v->tok_mu);
	return rc;
}

/* Marks q done (under v->mu): its text complete, why it ended. */
static void srv_done_locked(struct srv *v, struct srv_req *q)
{
	if (q->done)
		return;
	static const enum srv_end ends[] = {[SCHED_FINISH_NONE] = SRV_END_ERROR, [SCHED_FINISH_STOP] = SRV_END_STOP,
					    [SCHED_FINISH_LENGTH] = SRV_END_LENGTH, [SCHED_FINISH_ERROR] = SRV_END_ERROR,
					    [SCHED_FINISH_CANCEL] = SRV_END_CANCEL};
	if (q->end == SRV_END_NONE)
		q->end = ends[q->r.finish];
	if (q->end == SRV_END_LENGTH)
		tok_stream_flush(&q->ts, &q->text);
	if (q->end == SRV_END_ERROR && !q->err[0])
		snprintf(q->err, sizeof(q->err), "%s", q->r.err[0] ? q->r.err : "the request failed");
	q->ready = q->text.n;
	q->n_gen = q->r.n_gen;
	q->done = true;
	q->t_done = now_sec();
	v->n_live--;
	v->n_served += q->end == SRV_END_STOP || q->end == SRV_END_LENGTH;
	v->n_cancelled += q->end == SRV_END_CANCEL || q->end == SRV_END_SHUTDOWN;
	srv_signal(q);
}

static void srv_on_done(void *ctx, struct sched_req *r)
{
	struct srv *v = ctx;
	pthread_mutex_lock(&v->mu);
	srv_done_locked(v, (struct srv_req *)r);
	pthread_mutex_unlock(&v->mu);
}

/* A condition variable whose timed waits count on CLOCK_MONOTONIC (srv_wait). */
static void cond_init(pthread_cond_t *cv)
{
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &ca);
	pthread_condattr_destroy(&ca);
}

void srv_wait(pthread_cond_t *cv, pthread_mutex_t *mu, double seconds)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	long long ns = (long long)ts.tv_nsec + (long long)(seconds * 1e9);
	ts.tv_sec += (time_t)(ns / 1000000000LL);
	ts.tv_nsec = (long)(ns % 1000000000LL);
	pthread_cond_timedwait(cv, mu, &ts);
}

int srv_init(struct srv *v, struct engine *e, struct tokenizer *tk, int max_live, char *err, size_t errlen)
{
	memset(v, 0, sizeof(*v));
	v->m = engine_model(e);
	v->s = engine_sched(e);
	if (!v->m || !v->s) {
		snprintf(err, errlen, "the engine has no model or scheduler to serve");
		return -EINVAL;
	}
	v->tk = tk;
	v->hp = v->m->hp;
	v->max_live = max_live;
	v->s->on_token = srv_on_token;
	v->s->on_done = srv_on_done;
	v->s->on_logits = srv_on_logits;
	v->s->allow = srv_allow;
	v->s->mask = srv_mask;
	v->s->ctx = v;
	pthread_mutex_init(&v->mu, NULL);
	pthread_mutex_init(&v->tok_mu, NULL);
	cond_init(&v->wake);
	return 0;
}

void srv_free(struct srv *v)
{
	v->s->on_token = NULL;
	v->s->on_done = NULL;
	v->s->on_logits = NULL;
	v->s->allow = NULL;
	v->s->mask = NULL;
	constrain_free(&v->cons);
	free(v->inbox);
	free(v->active);
	pthread_mutex_destroy(&v->mu);
	pthread_mutex_destroy(&v->tok_mu);
	pthread_cond_destroy(&v->wake);
}

int srv_req_new(struct srv *v, struct srv_req **out)
{
	struct srv_req *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	pthread_mutex_lock(&v->mu);
	v->n_reqs++;
	pthread_mutex_unlock(&v->mu);
	cond_init(&q->cv);
	q->refs = 1;
	q->logprobs = -1;
	*out = q;
	return 0;
}

/* Under v->mu. */
static void srv_req_free(struct srv *v, struct srv_req *q)
{
	v->n_reqs--;
	req_params_free(&q->p);
	sampler_free(&q->r.smp);
	free(q->r.toks);
	free(q->lp);
	free(q->lp_row);
	gram_state_free(q->gs);
	gram_free(q->gram);
	json_decref(q->tools);
	tok_buf_free(&q->text);
	pthread_cond_destroy(&q->cv);
	free(q);
}

void srv_req_put(struct srv *v, struct srv_req *q)
{
	pthread_mutex_lock(&v->mu);
	if (--q->refs == 0)
		srv_req_free(v, q);
	pthread_mutex_unlock(&v->mu);
}

/* Appends q to a growing array of pointers. */
static int push(struct srv_req ***a, int *n, int *cap, struct srv_req *q)
{
	if (*n == *cap) {
		int nc = *cap ? 2 * *cap : 16;
		struct srv_req **na = realloc(*a, sizeof(*na) * (size_t)nc);
		if (!na)
			return -ENOMEM;
		*a = na;
		*cap = nc;
	}
	(*a)[(*n)++] = q;
	return 0;
}

int srv_submit(struct srv *v, struct srv_req *q)
{
	int rc = 0;
	pthread_mutex_lock(&v->mu);
	if (v->stopping)
		rc = -ESHUTDOWN;
	else if (v->n_live >= v->max_live)
		rc = -EBUSY;
	else
		rc = push(&v->inbox, &v->n_inbox, &v->cap_inbox, q);
	if (!rc) {
		tok_stream_init(&q->ts, v->tk, false, false);
		q->ts.lossy = true;
		q->t0 = now_sec();
		q->refs++;
		q->r.want_logits = q->logprobs >= 0;
		v->n_live++;
		v->constrained += q->r.constrained;
		v->prompt_tokens += q->r.n_prompt;
		pthread_cond_signal(&v->wake);
	}
	pthread_mutex_unlock(&v->mu);
	return rc;
}

void srv_cancel(struct srv *v, struct srv_req *q)
{
	pthread_mutex_lock(&v->mu);
	if (!q->done && !q->cancel) {
		q->cancel = true;
		pthread_cond_signal(&v->wake);
	}
	pthread_mutex_unlock(&v->mu);
}

/* Under v->mu: queued requests into the scheduler, cancellations carried out, finished requests let go.
 * Returns the number of requests the worker still has. */
static int srv_sync_locked(struct srv *v)
{
	for (int i = 0; i < v->n_inbox; i++) {
		struct srv_req *q = v->inbox[i];
		if (v->stopping || q->cancel || push(&v->active, &v->n_active, &v->cap_active, q) ||
		    sched_add(v->s, &q->r)) {
			if (!v->stopping && !q->cancel) /* out of memory: fail the request, not the server */
				snprintf(q->err, sizeof(q->err), "out of memory queueing the request");
			q->end = q->cancel ? SRV_END_CANCEL : v->stopping ? SRV_END_SHUTDOWN : SRV_END_ERROR;
			q->r.state = SCHED_DONE;
			if (v->n_active && v->active[v->n_active - 1] == q)
				v->n_active--;
			srv_done_locked(v, q);
			if (--q->refs == 0)
				srv_req_free(v, q);
		}
	}
	v->n_inbox = 0;
	for (int i = 0; i < v->n_active; i++) {
		struct srv_req *q = v->active[i];
		if (q->r.state != SCHED_DONE && (q->cancel || v->stopping == 2)) {
			sched_cancel(v->s, &q->r);
			q->end = q->cancel ? SRV_END_CANCEL : SRV_END_SHUTDOWN;
		}
	}
	sched_reap(v->s);
	int n = 0;
	for (int i = 0; i < v->n_active; i++) {
		struct srv_req *q = v->active[i];
		if (q->r.state != SCHED_DONE) {
			v->active[n++] = q;
			continue;
		}
		srv_done_locked(v, q);
		if (--q->refs == 0)
			srv_req_free(v, q);
	}
	v->n_active = n;
	return n;
}

int srv_worker_run(struct srv *v, volatile sig_atomic_t *signals, double grace)
{
	double stop_at = 0;
	char err[ERR_LEN];
	bool idle = true;
	for (;;) {
		pthread_mutex_lock(&v->mu);
		if (*signals && !v->stopping) {
			v->stopping = 1;
			stop_at = now_sec() + grace;
			fprintf(stderr, "ferry: serve: stopping: finishing %d requests (up to %.0fs; again to cancel them)\n",
				v->n_active, grace);
		}
		v->steps = v->s->st.steps;
		v->step_s = v->s->st.prefill_s + v->s->st.decode_s;
		/* the page pools' use, read on the thread that changes it (no accessor in the model's API) */
		v->kv_pages = v->kv_free = 0;
		for (int g = 0; g < v->m->kc.n_groups; g++) {
			v->kv_pages += v->m->kc.g[g].n_pages;
			v->kv_free += v->m->kc.g[g].n_free;
		}
		struct model_stats ms;
		model_stats(v->m, &ms);
		v->h2d_bytes = ms.h2d_bytes;
		const struct sched_stats *ss = &v->s->st;
		v->spec_passes = ss->spec_passes;
		v->spec_tokens = ss->spec_tokens;
		v->gen_steps = ss->gen_steps;
		v->gen_step_tokens = ss->gen_step_tokens;
		v->spec_guessed = ss->spec_guessed[SPEC_SRC_LOOKUP] + ss->spec_guessed[SPEC_SRC_DRAFT];
		v->spec_accepted = ss->spec_accepted[SPEC_SRC_LOOKUP] + ss->spec_accepted[SPEC_SRC_DRAFT];
		v->masked = ss->masked;
		v->mask_s = ss->mask_s;
		if (v->stopping == 1 && (*signals > 1 || now_sec() >= stop_at))
			v->stopping = 2;
		int n = srv_sync_locked(v);
		if (!n && v->stopping) {
			pthread_mutex_unlock(&v->mu);
			return 0;
		}
		if (n && idle && v->window > 0 && !v->stopping) { /* let the others arriving now join the first step */
			idle = false;
			pthread_mutex_unlock(&v->mu);
			struct timespec ts = {(time_t)v->window, (long)((v->window - (double)(time_t)v->window) * 1e9)};
			nanosleep(&ts, NULL);
			continue;
		}
		idle = !n;
		if (!n) {
			srv_wait(&v->wake, &v->mu, 0.2);
			pthread_mutex_unlock(&v->mu);
			continue;
		}
		pthread_mutex_unlock(&v->mu);
		int rc = sched_step(v->s, err, sizeof(err));
		if (rc >= 0)
			continue;
		/* The step failed: its requests end with the error, the server goes on. */
		fprintf(stderr, "ferry: serve: %s\n", err);
		pthread_mutex_lock(&v->mu);
		for (int i = 0; i < v->n_active; i++) {
			struct srv_req *q = v->active[i];
			if (q->r.state == SCHED_DONE)
				continue;
			sched_cancel(v->s, &q->r);
			q->end = SRV_END_ERROR;
			snprintf(q->err, sizeof(q->err), "%.255s", err);
		}
		pthread_mutex_unlock(&v->mu);
	}
}

bool srv_wait_idle(struct srv *v, double timeout)
{
	double until = now_sec() + timeout;
	for (;;) {
		pthread_mutex_lock(&v->mu);
		int n = v->n_reqs;
		pthread_mutex_unlock(&v->mu);
		if (!n)
			return true;
		if (now_sec() >= until)
			return false;
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
}
