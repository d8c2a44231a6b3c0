/*
 * scheduler.c: the step scheduler (scheduler.h): admission against the page pools, step packing (decode tokens
 * first, then prompt chunks in arrival order), sampling and finishing.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/scheduler.h"
#include "base/util.h"

bool sched_is_eos(const struct sched *s, int tok)
{
	for (int i = 0; i < s->n_eos; i++)
		if (s->eos[i] == tok)
			return true;
	return false;
}

int sched_init(struct sched *s, struct model *m, int max_batch, int top_k, const int *eos, int n_eos, char *err,
	       size_t errlen)
{
	memset(s, 0, sizeof(*s));
	s->m = m;
	s->eos = eos;
	s->n_eos = n_eos;
	s->max_batch = max_batch < m->opt.max_seqs ? max_batch : m->opt.max_seqs;
	s->top_k = top_k;
	size_t rows = (size_t)(m->opt.max_logits > 0 ? m->opt.max_logits : 1), V = (size_t)m->hp->vocab;
	s->parts = calloc((size_t)s->max_batch, sizeof(*s->parts));
	s->part_req = calloc((size_t)s->max_batch, sizeof(*s->part_req));
	s->logits = malloc(sizeof(float) * rows * V);
	s->topv = malloc(sizeof(float) * rows * SAMPLER_TOP_MAX);
	s->topi = malloc(sizeof(int) * rows * SAMPLER_TOP_MAX);
	if (!s->parts || !s->part_req || !s->logits || !s->topv || !s->topi) {
		sched_free(s);
		snprintf(err, errlen, "out of memory for the scheduler (%zu logits rows of %zu)", rows, V);
		return -ENOMEM;
	}
	return 0;
}

void sched_free(struct sched *s)
{
	free(s->reqs);
	free(s->parts);
	free(s->part_req);
	free(s->logits);
	free(s->topv);
	free(s->topi);
	memset(s, 0, sizeof(*s));
}

int sched_add(struct sched *s, struct sched_req *r)
{
	if (s->n_reqs == s->cap_reqs) {
		int cap = s->cap_reqs ? 2 * s->cap_reqs : 16;
		struct sched_req **nr = realloc(s->reqs, sizeof(*nr) * (size_t)cap);
		if (!nr)
			return -ENOMEM;
		s->reqs = nr;
		s->cap_reqs = cap;
	}
	r->state = SCHED_WAIT;
	r->finish = SCHED_FINISH_NONE;
	r->n = r->n_prompt;
	r->n_gen = r->computed = r->n_cached = 0;
	r->seq = -1;
	r->err[0] = 0;
	r->smp.n_prompt = r->n_prompt;
	s->reqs[s->n_reqs++] = r;
	return 0;
}

/* The most positions r will hold: its prompt and tokens, within the context. */
static int final_len(const struct sched *s, const struct sched_req *r)
{
	int n = r->n_prompt + r->max_new;
	return n < s->m->opt.ctx ? n : s->m->opt.ctx;
}

static void finish(struct sched *s, struct sched_req *r, enum sched_finish why)
{
	if (r->seq >= 0)
		model_seq_close(s->m, r->seq);
	r->seq = -1;
	r->state = SCHED_DONE;
	r->finish = why;
	if (s->on_done)
		s->on_done(s->ctx, r);
}

void sched_cancel(struct sched *s, struct sched_req *r)
{
	if (r->state == SCHED_DONE)
		return;
	if (r->seq >= 0)
		model_seq_close(s->m, r->seq);
	r->seq = -1;
	r->state = SCHED_DONE;
	r->finish = SCHED_FINISH_CANCEL;
}

void sched_reap(struct sched *s)
{
	int n = 0;
	for (int i = 0; i < s->n_reqs; i++)
		if (s->reqs[i]->state != SCHED_DONE)
			s->reqs[n++] = s->reqs[i];
	s->n_reqs = n;
}

/* Admits waiting requests in arrival order while a row is free and the pools hold every admitted request
 * at its full length. */
static void admit(struct sched *s)
{
	int running = 0, n_groups = model_kv_groups(s->m);
	int need[KVC_GROUPS_MAX] = {0};
	for (int i = 0; i < s->n_reqs; i++)
		if (s->reqs[i]->state == SCHED_RUN) {
			running++;
			for (int g = 0; g < n_groups; g++)
				need[g] += model_kv_pages_for(s->m, g, final_len(s, s->reqs[i]));
		}
	for (int i = 0; i < s->n_reqs && running < s->max_batch; i++) {
		struct sched_req *r = s->reqs[i];
		if (r->state != SCHED_WAIT)
			continue;
		if (r->n_prompt < 1 || r->n_prompt > s->m->opt.ctx) {
			snprintf(r->err, sizeof(r->err), "the prompt of %d tokens does not fit the context of %d", r->n_prompt,
				 s->m->opt.ctx);
			finish(s, r, SCHED_FINISH_ERROR);
			continue;
		}
		bool fits = true, alone = true;
		for (int g = 0; g < n_groups; g++) {
			int n = model_kv_pages_for(s->m, g, final_len(s, r)), pool = model_kv_pool(s->m, g);
			fits = fits && need[g] + n <= pool;
			alone = alone && n <= pool;
		}
		if (!alone) {
			snprintf(r->err, sizeof(r->err), "%d tokens need more KV pages than the cache has (raise --kv-pages or --ctx)",
				 final_len(s, r));
			finish(s, r, SCHED_FINISH_ERROR);
			continue;
		}
		if (!fits)
			break;
		char err[256];
		if (model_seq_open(s->m, r->toks, r->n_prompt, &r->seq, &r->n_cached, err, sizeof(err)))
			break;
		r->computed = r->n_cached;
		r->state = SCHED_RUN;
		s->st.cached_tokens += r->n_cached;
		running++;
		for (int g = 0; g < n_groups; g++)
			need[g] += model_kv_pages_for(s->m, g, final_len(s, r));
	}
}

/* Packs the step: one token of each generating request, then prompt chunks, within t_max tokens and the
 * model's logits rows. Returns the number of parts; *k the top-k the step can use (0: full rows). */
static int pack(struct sched *s, int *k, bool *prefill)
{
	int budget = s->m->opt.t_max, rows_left = s->m->opt.max_logits > 0 ? s->m->opt.max_logits : 1, np = 0;
	*k = s->top_k;
	*prefill = false;
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < s->n_reqs && budget > 0 && np < s->max_batch; i++) {
			struct sched_req *r = s->reqs[i];
			if (r->state != SCHED_RUN || (pass == 0) != (r->computed >= r->n_prompt))
				continue;
			int n = r->n - r->computed < budget ? r->n - r->computed : budget;
			bool last = r->computed + n == r->n;
			int rows = r->dump ? n : last;
			if (rows > rows_left)
				continue;
			s->parts[np] = (struct model_part){.seq = r->seq, .n = n, .tokens = r->toks + r->computed,
							   .n_logits = rows};
			s->part_req[np++] = r;
			budget -= n;
			rows_left -= rows;
			*prefill = *prefill || pass == 1;
			int need = sampler_top_k_needed(&r->smp);
			if (r->dump || r->want_logits || need == 0)
				*k = 0;
			else if (*k && need > *k)
				*k = need;
		}
	return np;
}

int sched_warmup(struct sched *s, int tok, char *err, size_t errlen)
{
	int seq, cached;
	struct model_part p = {.n = 1, .tokens = &tok, .n_logits = 1};
	struct model_out mo = {.logits = s->logits, .k = 0, .top_vals = s->topv, .top_idx = s->topi};
	int rc = model_seq_open(s->m, NULL, 0, &seq, &cached, err, errlen);
	if (rc)
		return rc;
	p.seq = seq;
	rc = model_step(s->m, &p, 1, &mo, err, errlen);
	model_seq_close(s->m, seq);
	return rc;
}

int sched_step(struct sched *s, char *err, size_t errlen)
{
	admit(s);
	int k, np;
	bool prefill;
	np = pack(s, &k, &prefill);
	if (np == 0) {
		for (int i = 0; i < s->n_reqs; i++)
			if (s->reqs[i]->state != SCHED_DONE) {
				snprintf(err, errlen, "request %d cannot be scheduled", i);
				return -EDEADLK;
			}
		return 1;
	}
	struct model_out out = {.logits = s->logits, .k = k, .top_vals = s->topv, .top_idx = s->topi};
	struct model_stats m0, m1;
	model_stats(s->m, &m0);
	double t0 = now_sec();
	int rc = model_step(s->m, s->parts, np, &out, err, errlen);
	if (rc)
		return rc;
	double dt = now_sec() - t0;
	model_stats(s->m, &m1);
	s->st.steps++;
	if (prefill) {
		s->st.prefill_s += dt;
		s->st.h2d_prefill += m1.h2d_bytes - m0.h2d_bytes;
	} else {
		s->st.decode_s += dt;
		s->st.h2d_decode += m1.h2d_bytes - m0.h2d_bytes;
		s->st.disk_decode += m1.io.bytes_read - m0.io.bytes_read;
	}
	int row = 0, V = s->m->hp->vocab;
	for (int i = 0; i < np; i++) {
		struct sched_req *r = s->part_req[i];
		const struct model_part *p = &s->parts[i];
		if (r->computed < r->n_prompt)
			s->st.prefill_tokens += p->n;
		else
			s->st.decode_tokens += p->n;
		r->computed += p->n;
		if (r->dump && (rc = logits_dump_rows(r->dump, s->logits + (size_t)row * (size_t)V, p->n_logits, err, errlen)))
			return rc;
		row += p->n_logits;
		if (r->computed < r->n)
			continue;
		if (r->max_new == 0) {
			finish(s, r, SCHED_FINISH_LENGTH);
			continue;
		}
		const float *last = s->logits + (size_t)(row - 1) * (size_t)V;
		const float *tv = s->topv + (size_t)(row - 1) * (size_t)k;
		bool finite = true;
		for (int j = 0; j < (k ? k : V) && finite; j++)
			finite = isfinite(k ? tv[j] : last[j]);
		if (!finite) {
			snprintf(r->err, sizeof(r->err), "the model produced non-finite logits at position %d (damaged weights?)",
				 r->computed - 1);
			finish(s, r, SCHED_FINISH_ERROR);
			continue;
		}
		if (r->want_logits && s->on_logits)
			s->on_logits(s->ctx, r, last);
		int tok = k ? sampler_pick_top(&r->smp, tv, s->topi + (size_t)(row - 1) * (size_t)k, k)
			    : sampler_pick(&r->smp, s->logits + (size_t)(row - 1) * (size_t)V, r->toks, r->n);
		r->toks[r->n++] = tok;
		r->n_gen++;
		bool stop = s->on_token && s->on_token(s->ctx, r, tok);
		if (stop || (!r->ignore_eos && sched_is_eos(s, tok)))
			finish(s, r, SCHED_FINISH_STOP);
		else if (r->n_gen >= r->max_new || r->n >= s->m->opt.ctx)
			finish(s, r, SCHED_FINISH_LENGTH);
	}
	return 0;
}
