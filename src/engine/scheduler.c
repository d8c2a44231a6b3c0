/*
 * scheduler.c: the step scheduler (scheduler.h): admission against the page pools, step packing (decode tokens
 * first, then prompt chunks in arrival order), sampling and finishing; speculative steps (spec.h): the
 * draft model's steps, token trees in place of decode tokens, the verification walk and the commits.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
	const char *delay = getenv("FERRY_STEP_DELAY_MS");
	s->step_delay = delay && *delay ? atof(delay) / 1e3 : 0;
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
	s->row_copy = malloc(sizeof(float) * V);
	if (!s->row_copy || !s->parts || !s->part_req || !s->logits || !s->topv || !s->topi) {
		sched_free(s);
		snprintf(err, errlen, "out of memory for the scheduler (%zu logits rows of %zu)", rows, V);
		return -ENOMEM;
	}
	return 0;
}

int sched_spec(struct sched *s, const struct spec_opts *o, struct model *draft, char *err, size_t errlen)
{
	s->spec = *o;
	if (s->spec.max <= 0)
		s->spec.max = SPEC_MAX_DEFAULT;
	if (s->spec.max > KV_TREE_MAX - 1)
		s->spec.max = KV_TREE_MAX - 1;
	if (s->spec.ngram <= 0)
		s->spec.ngram = 3;
	if (s->spec.branch <= 0)
		s->spec.branch = 3;
	if (s->spec.mode == SPEC_AUTO)
		s->spec.mode = draft ? SPEC_COMBINED : SPEC_LOOKUP;
	if ((s->spec.mode == SPEC_DRAFT || s->spec.mode == SPEC_TREE) && !draft) {
		snprintf(err, errlen, "--spec %s needs a draft model (--draft MODEL.ferry)", spec_mode_name(s->spec.mode));
		return -EINVAL;
	}
	s->draft = s->spec.mode == SPEC_DRAFT || s->spec.mode == SPEC_TREE || s->spec.mode == SPEC_COMBINED ? draft : NULL;
	spec_plan_init(&s->plan);
	s->plan.fix0 = s->spec.cost0;
	s->plan.fix1 = s->spec.cost1;
	s->plan.fixd = s->spec.cost0 > 0 ? s->spec.cost_draft : 0;
	s->max_depth = KV_TREE_MAX - 1;
	for (int l = 0; l < s->m->hp->n_layers; l++)
		if (s->m->hp->window[l] > 0 && s->m->hp->window[l] - 1 < s->max_depth)
			s->max_depth = s->m->hp->window[l] - 1;
	for (int l = 0; s->draft && l < s->draft->hp->n_layers; l++)
		if (s->draft->hp->window[l] > 0 && s->draft->hp->window[l] - 1 < s->max_depth)
			s->max_depth = s->draft->hp->window[l] - 1;
	/* rows: a tree's logits are all of its tokens' */
	int rows = s->m->opt.max_logits > 0 ? s->m->opt.max_logits : 1;
	if (s->spec.mode != SPEC_OFF && rows < 2) {
		snprintf(err, errlen, "speculative steps need logits rows for every tree token (max_logits %d)", rows);
		return -EINVAL;
	}
	if (s->draft) {
		size_t B = (size_t)s->max_batch;
		s->dlogits = malloc(sizeof(float) * B * (size_t)s->draft->hp->vocab);
		s->dq = calloc(B, sizeof(*s->dq));
		s->dw = calloc(B, sizeof(*s->dw));
		s->dparts = calloc(B, sizeof(*s->dparts));
		if (!s->dlogits || !s->dq || !s->dw || !s->dparts) {
			snprintf(err, errlen, "out of memory for the draft model's logits");
			return -ENOMEM;
		}
	}
	return 0;
}

double sched_spec_tokens_per_pass(const struct sched *s)
{
	return s->st.spec_passes ? (double)s->st.spec_tokens / (double)s->st.spec_passes : 0;
}

double sched_tokens_per_step(const struct sched_stats *st)
{
	return st->gen_steps ? (double)st->gen_step_tokens / (double)st->gen_steps : 0;
}

void sched_free(struct sched *s)
{
	free(s->dlogits);
	free(s->dq);
	free(s->dw);
	free(s->dparts);
	free(s->reqs);
	free(s->parts);
	free(s->part_req);
	free(s->logits);
	free(s->topv);
	free(s->topi);
	free(s->row_copy);
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
	r->seq = r->dseq = -1;
	r->dlen = r->n_dchain = 0;
	r->tree = NULL;
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

/* The request's sequences (the target's, the draft's) and its tree. */
static void release(struct sched *s, struct sched_req *r)
{
	if (r->seq >= 0)
		model_seq_close(s->m, r->seq);
	if (r->dseq >= 0)
		model_seq_close(s->draft, r->dseq);
	free(r->tree);
	r->tree = NULL;
	r->seq = r->dseq = -1;
}

static void finish(struct sched *s, struct sched_req *r, enum sched_finish why)
{
	release(s, r);
	r->state = SCHED_DONE;
	r->finish = why;
	if (s->on_done)
		s->on_done(s->ctx, r);
}

void sched_cancel(struct sched *s, struct sched_req *r)
{
	if (r->state == SCHED_DONE)
		return;
	release(s, r);
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
		/* a draft that cannot take the request (rows, pages) leaves it to prompt lookup */
		bool spec = s->spec.mode != SPEC_OFF && !r->dump && !r->no_spec && !r->constrained;
		if (spec && s->draft && model_seq_open(s->draft, r->toks, r->n_prompt, &r->dseq, &r->dlen, err, sizeof(err)))
			r->dseq = -1;
		r->n_dchain = 0;
		if (spec && !(r->tree = malloc(sizeof(*r->tree))))
			r->tree = NULL; /* no memory for a tree: plain decode steps */
		s->st.cached_tokens += r->n_cached;
		running++;
		for (int g = 0; g < n_groups; g++)
			need[g] += model_kv_pages_for(s->m, g, final_len(s, r));
	}
}


/* The planner's seconds for draft steps: given (--spec-cost's D) or those measured (secs). */
static double draft_cost(const struct sched *s, long long steps, double secs)
{
	return s->plan.fixd > 0 ? s->plan.fixd * (double)steps : secs;
}

/* One step of the draft model over parts p[0..n) (each with at most one logits row); rows into s->dlogits. */
static int draft_step(struct sched *s, const struct model_part *p, int n, char *err, size_t errlen)
{
	struct model_out out = {.logits = s->dlogits};
	double t0 = now_sec();
	int rc = model_step(s->draft, p, n, &out, err, errlen);
	s->st.draft_steps++;
	s->st.draft_s += now_sec() - t0;
	return rc;
}

/* The draft model's guesses under the roots of the nd requests s->dq[] (depth and trie size limits in
 * s->dw[]), all requests in each draft step: each catches up on the tokens it lacks (the root included: all
 * certain), then runs its greedy chain down to its depth as a tree of its own (the guesses it was fed past
 * what it holds, committed after the walk as far as the target accepted them); at each level the draft's
 * `width` best tokens become children in the request's trie (the chain's first). */
static int draft_guess(struct sched *s, int nd, int width, int others, char *err, size_t errlen)
{
	double draft_s0 = s->st.draft_s;
	long long steps0 = s->st.draft_steps;
	struct model *d = s->draft;
	int V = d->hp->vocab, rc = 0, rows[KV_TREE_MAX];
	for (int i = 0; !rc && i < nd; i++) { /* a chain left from a step that had no room for the tree */
		struct sched_req *r = s->dq[i];
		rc = model_seq_tree(d, r->dseq) ? model_seq_commit(d, r->dseq, NULL, 0, err, errlen) : 0;
		r->n_dchain = 0;
		s->dw[i].node = 0;
	}
	for (;;) { /* catch up, at most the draft's t_max tokens a step; each request's last chunk has its row */
		int np = 0, budget = d->opt.t_max;
		for (int i = 0; !rc && i < nd && budget > 0; i++) {
			struct sched_req *r = s->dq[i];
			if (r->dlen >= r->n)
				continue;
			int cnt = r->n - r->dlen < budget ? r->n - r->dlen : budget;
			s->dparts[np] = (struct model_part){.seq = r->dseq, .n = cnt, .tokens = r->toks + r->dlen,
							    .n_logits = r->dlen + cnt == r->n};
			rows[np++] = i;
			budget -= cnt;
		}
		if (rc || !np)
			break;
		if ((rc = draft_step(s, s->dparts, np, err, errlen)))
			break;
		for (int k = 0, row = 0; k < np; k++) {
			s->dq[rows[k]]->dlen += s->dparts[k].n;
			if (s->dparts[k].n_logits)
				spec_row_top(s->dlogits + (size_t)row++ * (size_t)V, V, width, s->dw[rows[k]].top,
					     s->dw[rows[k]].prob);
		}
	}
	for (int lev = 0; !rc; lev++) { /* a level of every chain still going */
		int np = 0;
		for (int i = 0; i < nd; i++) {
			struct sched_req *r = s->dq[i];
			struct spec_draft_work *w = &s->dw[i];
			if (w->node < 0)
				continue;
			int next = -1;
			float pnode = r->tree->p[w->node];
			/* (a branch only where the trie keeps room for the chain's levels still owed to depth_min) */
			int owed = w->depth_min > lev + 1 ? w->depth_min - lev - 1 : 0;
			for (int j = 0; j < width && (j == 0 || r->tree->n + 1 + owed < w->max); j++) {
				int cls = spec_draft_class(w->prob[j]);
				int c = spec_tree_offer(r->tree, w->node, w->top[j], SPEC_SRC_DRAFT, cls,
							pnode * (float)spec_plan_rate(&s->plan, cls), w->max);
				next = j == 0 ? c : next;
			}
			w->node = next;
			w->last = next >= 0 ? w->top[0] : -1;
			if (next >= 0 && w->dynamic && lev + 1 >= w->depth_min) { /* a level only where it pays */
				double expect = 1;
				for (int j = 1; j < r->tree->n; j++)
					expect += r->tree->p[j];
				double level_s = s->st.draft_steps ? draft_cost(s, 1, s->st.draft_s / (double)s->st.draft_steps) : 0;
				double spent = draft_cost(s, s->st.draft_steps - steps0, s->st.draft_s - draft_s0);
				if (r->tree->p[next] < spec_plan_pmin(&s->plan, expect, r->tree->n, others, spent, width, level_s))
					next = -1;
			}
			if (next < 0 || lev + 1 >= w->depth) {
				w->node = -1;
				continue;
			}
			w->par = r->n_dchain - 1;
			s->dparts[np] = (struct model_part){.seq = r->dseq, .n = 1, .tokens = &w->top[0], .n_logits = 1,
							    .parent = &w->par};
			rows[np++] = i;
		}
		if (!np || (rc = draft_step(s, s->dparts, np, err, errlen)))
			break;
		for (int k = 0; k < np; k++) {
			struct sched_req *r = s->dq[rows[k]];
			r->dchain[r->n_dchain++] = s->dw[rows[k]].top[0];
			spec_row_top(s->dlogits + (size_t)k * (size_t)V, V, width, s->dw[rows[k]].top, s->dw[rows[k]].prob);
		}
	}
	return rc;
}

static bool generating(const struct sched_req *r)
{
	return r->state == SCHED_RUN && r->computed >= r->n_prompt;
}

/* The source whose chain combined keeps whole in t this pass: the one that did better alone over the recent
 * passes (spec_plan_spine), the draft's where lookup has no chain this pass (no n-gram recurs) or nothing was
 * measured yet, when `drafting` (the draft guesses for t); -1: none. */
static int spec_spine(const struct sched *s, const struct spec_tree *t, bool drafting)
{
	int sp = spec_plan_spine(&s->plan);
	if (drafting && (sp < 0 || (sp == SPEC_SRC_LOOKUP && !t->n_chain[SPEC_SRC_LOOKUP])))
		sp = SPEC_SRC_DRAFT;
	return sp;
}

/* The trees of this step's generating requests: guesses sized by the planner, within the tokens each may
 * still produce and shallower than every window. Combined: lookup's continuations of every length first
 * (a pool of at most half the trie), then the draft's branches while they pay, then the best-scoring nodes
 * the planner keeps. */
static int spec_build(struct sched *s, char *err, size_t errlen)
{
	bool comb = s->spec.mode == SPEC_COMBINED;
	int gen = 0, nd = 0, rc = 0, branch = s->spec.branch < 8 ? s->spec.branch : 8;
	int width = s->spec.mode == SPEC_TREE || comb ? branch : 1;
	/* a level of the draft's chain: one of its steps for all requests */
	double level_s = s->draft && s->st.draft_steps ? draft_cost(s, 1, s->st.draft_s / (double)s->st.draft_steps) : 0;
	double draft_s0 = s->st.draft_s;
	long long steps0 = s->st.draft_steps;
	for (int i = 0; i < s->n_reqs; i++)
		gen += generating(s->reqs[i]);
	for (int i = 0; i < s->n_reqs; i++) {
		struct sched_req *r = s->reqs[i];
		if (!generating(r) || !r->tree)
			continue;
		spec_tree_reset(r->tree, r->toks[r->n - 1]);
		int room = final_len(s, r) - r->computed, max = 1 + s->spec.max < room ? 1 + s->spec.max : room;
		if (max <= 1)
			continue;
		int depth = comb ? max - 1 : spec_plan_depth(&s->plan, max - 1, width, gen - 1, level_s);
		depth = depth < s->max_depth ? depth : s->max_depth;
		if (comb) {
			spec_lookup_all(r->toks, r->n, s->spec.ngram, depth, 4, &s->plan, KV_TREE_MAX / 2, r->tree);
			r->tree->n_chain[SPEC_SRC_LOOKUP] =
				spec_lookup_chain(r->toks, r->n, s->spec.ngram, depth, r->tree->chain[SPEC_SRC_LOOKUP]);
		}
		if (s->draft && r->dseq >= 0 && nd < s->max_batch) {
			/* combined with the draft as the spine: its chain as deep as --spec draft would guess it from
			 * the same acceptance (its own chain's), the branches beside it while they pay */
			int dmin = comb && spec_spine(s, r->tree, true) == SPEC_SRC_DRAFT
					   ? spec_plan_depth_alpha(&s->plan, spec_plan_chain_alpha(&s->plan, SPEC_SRC_DRAFT), max - 1,
								   1, gen - 1, level_s)
					   : 0;
			s->dq[nd] = r;
			s->dw[nd++] = (struct spec_draft_work){.depth = depth, .max = comb ? KV_TREE_MAX : max, .dynamic = comb,
							       .depth_min = dmin, .last = -1};
		}
	}
	if (nd)
		rc = draft_guess(s, nd, width, gen - 1, err, errlen);
	for (int i = 0; comb && !rc && i < nd; i++) { /* the draft's own chain: what it was fed, and its last guess */
		struct sched_req *r = s->dq[i];
		struct spec_tree *t = r->tree;
		memcpy(t->chain[SPEC_SRC_DRAFT], r->dchain, sizeof(int) * (size_t)r->n_dchain);
		t->n_chain[SPEC_SRC_DRAFT] = r->n_dchain;
		if (s->dw[i].last >= 0)
			t->chain[SPEC_SRC_DRAFT][t->n_chain[SPEC_SRC_DRAFT]++] = s->dw[i].last;
	}
	for (int i = 0; !rc && i < s->n_reqs; i++) { /* lookup's paths after the draft's: the draft's chain first */
		struct sched_req *r = s->reqs[i];
		if (!generating(r) || !r->tree)
			continue;
		int room = final_len(s, r) - r->computed, max = 1 + s->spec.max < room ? 1 + s->spec.max : room;
		if (comb && max > 1) { /* the spine: the chain of the source that did best alone, kept whole */
			struct spec_tree *t = r->tree;
			int sp = spec_spine(s, t, t->n_chain[SPEC_SRC_DRAFT] > 0);
			if (sp >= 0)
				spec_tree_pin(t, t->chain[sp], t->n_chain[sp]);
			spec_plan_tree(&s->plan, t, max - 1, gen - 1,
				       draft_cost(s, s->st.draft_steps - steps0, s->st.draft_s - draft_s0));
		}
		if (comb)
			continue;
		int depth = spec_plan_depth(&s->plan, max - 1, width, gen - 1, level_s);
		depth = depth < s->max_depth ? depth : s->max_depth;
		if (max > 1 && (s->spec.mode == SPEC_LOOKUP || s->spec.mode == SPEC_TREE))
			spec_lookup(r->toks, r->n, s->spec.ngram, depth, s->spec.mode == SPEC_TREE ? width : 1, max, r->tree);
	}
	return rc;
}

/* Packs the step: one token of each generating request (its tree of guesses when it has one), then prompt
 * chunks, within t_max tokens and the model's logits rows. Returns the number of parts; *k the top-k the
 * step can use (0: full rows). */
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
			if (pass == 0 && r->tree && r->tree->n > 1) { /* the tree, cut to what the step has room for */
				int nt = r->tree->n < budget ? r->tree->n : budget;
				nt = nt < rows_left ? nt : rows_left;
				r->tree->n = nt;
				if (nt > 1)
					s->parts[np] = (struct model_part){.seq = r->seq, .n = nt, .tokens = r->tree->tok,
									   .n_logits = nt, .parent = r->tree->parent};
				n = rows = s->parts[np].n;
			}
			s->part_req[np++] = r;
			budget -= n;
			rows_left -= rows;
			*prefill = *prefill || pass == 1;
			int need = sampler_top_k_needed(&r->smp);
			if (r->dump || r->want_logits || r->constrained || need == 0)
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

/* Appends tok to r's output; true when r finished with it. */
static bool emit(struct sched *s, struct sched_req *r, int tok)
{
	r->toks[r->n++] = tok;
	r->n_gen++;
	s->st.gen_step_tokens += s->gen_part;
	bool stop = s->on_token && s->on_token(s->ctx, r, tok);
	if (stop || (!r->ignore_eos && sched_is_eos(s, tok)))
		finish(s, r, SCHED_FINISH_STOP);
	else if (r->n_gen >= r->max_new || r->n >= s->m->opt.ctx)
		finish(s, r, SCHED_FINISH_LENGTH);
	return r->state == SCHED_DONE;
}

static bool row_finite(const float *row, const float *tv, int k, int V)
{
	bool finite = true;
	for (int j = 0; j < (k ? k : V) && finite; j++)
		finite = isfinite(k ? tv[j] : row[j]);
	return finite;
}

/* The verification walk over r's tree part p, whose logits are rows row0 .. row0+p->n-1: from the root,
 * the token the target picks at each node (sampler_pick_spec given the node's children as proposals) is
 * emitted, and the walk goes on into the child that carries it; the path is committed in the target (and
 * as far as the draft guessed it, in the draft), the last token emitted is the next root. */
static int spec_walk(struct sched *s, struct sched_req *r, const struct model_part *p, int row0, int k, char *err,
		     size_t errlen)
{
	int V = s->m->hp->vocab, path[KV_TREE_MAX], np = 1, cur = 0, n0 = r->n, acc = -1, n_kids = 0;
	int kids[KV_TREE_MAX], prop[KV_TREE_MAX];
	path[0] = 0;
	for (int j = 1; j < p->n; j++) /* (a request that finishes in the walk frees its tree) */
		s->st.spec_guessed[r->tree->src[j]]++;
	for (;;) {
		float *row = s->logits + (size_t)(row0 + cur) * (size_t)V;
		const float *tv = s->topv + (size_t)(row0 + cur) * (size_t)k;
		const int *ti = s->topi + (size_t)(row0 + cur) * (size_t)k;
		if (!row_finite(row, tv, k, V)) {
			snprintf(r->err, sizeof(r->err), "the model produced non-finite logits at position %d (damaged weights?)",
				 r->n - 1);
			finish(s, r, SCHED_FINISH_ERROR);
			return 0;
		}
		n_kids = 0;
		for (int j = cur + 1; j < p->n; j++)
			if (p->parent[j] == cur) {
				kids[n_kids] = j;
				prop[n_kids++] = p->tokens[j];
			}
		int tok = sampler_pick_spec(&r->smp, k ? NULL : row, tv, ti, k, r->toks, r->n, prop, n_kids, &acc);
		for (int j = 0; j < n_kids; j++) /* (before emit: a request that finishes frees its tree) */
			spec_plan_offer(&s->plan, r->tree->cls[kids[j]], j == acc);
		if (emit(s, r, tok))
			break;
		if (acc < 0)
			break;
		cur = kids[acc];
		path[np++] = cur;
		s->st.spec_accepted[r->tree->src[cur]]++;
	}
	s->st.spec_passes++;
	s->st.spec_tokens += r->n - n0;
	spec_plan_walk(&s->plan, np - 1, acc < 0 && n_kids > 0);
	if (r->state == SCHED_DONE)
		return 0;
	for (int c = 0; s->spec.mode == SPEC_COMBINED && c < SPEC_SRC_COUNT; c++)
		spec_plan_chain(&s->plan, c, r->tree->chain[c], r->tree->n_chain[c], r->toks + n0, r->n - n0);
	int rc = model_seq_commit(s->m, r->seq, path, np, err, errlen);
	r->computed += np;
	if (!rc && r->dseq >= 0) { /* the draft keeps the part of its chain the target took */
		int c = 0, dpath[KV_TREE_MAX];
		while (c < r->n_dchain && n0 + c < r->n - 1 && r->toks[n0 + c] == r->dchain[c]) {
			dpath[c] = c;
			c++;
		}
		rc = model_seq_commit(s->draft, r->dseq, dpath, c, err, errlen);
		r->dlen += c;
		r->n_dchain = 0;
	}
	return rc;
}

/* A hybrid step just ran (s1 - s0 of the model's figures): the online correction (plan.h plan_fix)
 * observes it and, when it asks, the units are placed again with the corrected rates. A unit may move to the
 * host only where its layer's KV pools are in host memory (a host-memory first backend: every layer; the head
 * has none), so a move never touches the KV cache; weights.c and kv_host.c take the placement per step. */
static void hybrid_observe(struct sched *s, const struct model_stats *s0, const struct model_stats *s1)
{
	struct model *m = s->m;
	struct plan *p = &m->plan;
	const struct model_hybrid_stats *m0 = &s0->hyb, *m1 = &s1->hyb;
	if (m1->steps != m0->steps + 1)
		return;
	bool replace = false, forced = s->switch_at > 0 && (long long)m1->steps == s->switch_at;
	/* a step that read units from disk (the RAM tier filling) is not the steady state the predictions
	 * describe; the embedding's rows are read every step (a small part of a unit) */
	if (s->fix && (s1->io.bytes_read - s0->io.bytes_read) * 4 * (uint64_t)p->n_units < p->units_bytes)
		replace = plan_fix_observe(s->fix, p, m->lay, (int)(m1->tokens - m0->tokens), m1->sec - m0->sec,
					   m1->host_sec - m0->host_sec) == 1;
	if (!replace && !forced)
		return;
	int n = p->n_units, L = m->hp->n_layers;
	bool *may = malloc(sizeof(bool) * (size_t)n), *was = malloc(sizeof(bool) * (size_t)n);
	if (!may || !was) {
		free(may), free(was);
		return;
	}
	for (int u = 0; u < n; u++)
		may[u] = !p->device || u == L || p->kv_host[u];
	memcpy(was, p->on_host, sizeof(bool) * (size_t)n);
	if (forced) {
		int t_max;
		char err[256];
		if (!plan_place(p, m->lay, NULL, s->switch_to, was, &t_max, err, sizeof(err))) {
			for (int u = 0; u < n; u++)
				was[u] = was[u] && may[u] && !p->resident[u];
			plan_set_host(p, m->lay, was);
		} else {
			fprintf(stderr, "ferry: FERRY_PLACE_SWITCH: %s\n", err);
		}
	} else {
		plan_replace(p, m->lay, &s->fix->r, may);
		int moved = 0;
		for (int u = 0; u < n; u++)
			moved += was[u] != p->on_host[u];
		s->fix->moved += moved;
	}
	free(may), free(was);
}

int sched_step(struct sched *s, char *err, size_t errlen)
{
	admit(s);
	int k, np;
	if (s->spec.mode != SPEC_OFF) {
		int rc = spec_build(s, err, errlen);
		if (rc)
			return rc;
	}
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
	if (!prefill && s->step_delay > dt) {
		double w = s->step_delay - dt;
		nanosleep(&(struct timespec){.tv_sec = (time_t)w, .tv_nsec = (long)((w - (double)(time_t)w) * 1e9)}, NULL);
	}
	model_stats(s->m, &m1);
	s->st.steps++;
	if (prefill) {
		s->st.prefill_s += dt;
		s->st.h2d_prefill += m1.h2d_bytes - m0.h2d_bytes;
	} else {
		s->st.decode_s += dt;
		s->st.decode_steps++;
		s->st.h2d_decode += m1.h2d_bytes - m0.h2d_bytes;
		s->st.disk_decode += m1.io.bytes_read - m0.io.bytes_read;
		int T = 0;
		for (int i = 0; i < np; i++)
			T += s->parts[i].n;
		spec_plan_pass(&s->plan, T, dt);
	}
	hybrid_observe(s, &m0, &m1);
	int row = 0, V = s->m->hp->vocab;
	for (int i = 0; i < np; i++) {
		struct sched_req *r = s->part_req[i];
		const struct model_part *p = &s->parts[i];
		s->gen_part = r->computed >= r->n_prompt; /* (emit counts its tokens) */
		s->st.gen_steps += s->gen_part;
		if (r->computed < r->n_prompt)
			s->st.prefill_tokens += p->n;
		else
			s->st.decode_tokens += p->n;
		if (p->parent) {
			if ((rc = spec_walk(s, r, p, row, k, err, errlen)))
				return rc;
			row += p->n_logits;
			continue;
		}
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
		if (!row_finite(last, tv, k, V)) {
			snprintf(r->err, sizeof(r->err), "the model produced non-finite logits at position %d (damaged weights?)",
				 r->computed - 1);
			finish(s, r, SCHED_FINISH_ERROR);
			continue;
		}
		if (r->want_logits && s->on_logits)
			s->on_logits(s->ctx, r, last);
		float *full = s->logits + (size_t)(row - 1) * (size_t)V;
		bool constrain = r->constrained && s->allow && s->mask;
		if (constrain)
			memcpy(s->row_copy, full, sizeof(float) * (size_t)V);
		int tok = k ? sampler_pick_top(&r->smp, tv, s->topi + (size_t)(row - 1) * (size_t)k, k)
			    : sampler_pick(&r->smp, full, r->toks, r->n);
		if (constrain && !s->allow(s->ctx, r, tok)) {
			double tm = now_sec();
			s->mask(s->ctx, r, s->row_copy);
			tok = sampler_pick(&r->smp, s->row_copy, r->toks, r->n);
			s->st.masked++;
			s->st.mask_s += now_sec() - tm;
		}
		emit(s, r, tok);
	}
	return 0;
}
