/*
 * sampler.h: picks the next token from logits. Order: repetition penalty, presence/frequency penalties,
 * then greedy when temperature <= 0, else temperature, top-k, softmax, top-p, min-p, and a draw from a seeded xoshiro256** stream, so a
 * given seed always gives the same tokens.
 */
#ifndef FERRY_SAMPLER_H
#define FERRY_SAMPLER_H

#include <stdint.h>

#include "base/rng.h"

struct sampler_cfg {
	float temp;        /* <= 0: greedy */
	int top_k;         /* 0: off */
	float top_p;       /* >= 1: off */
	float min_p;       /* 0: off */
	float rep_penalty; /* 1: off; HF rule: logit > 0 ? logit / p : logit * p */
	int rep_last_n;    /* tokens of history the penalty looks at; 0: all */
	float presence;    /* OpenAI's penalties over the generated tokens (history from n_prompt on): */
	float frequency;   /* logit -= frequency * count + presence * (count > 0); 0: off */
	uint64_t seed;
};

struct sampler {
	struct sampler_cfg cfg;
	int V;
	struct rng rng;
	int *idx;
	float *p;
	uint8_t *seen;
	int *count;        /* [V], zero between picks (presence/frequency) */
	int n_prompt;      /* history[0..n_prompt) is the prompt (set by the caller; 0: all generated) */
};

int sampler_init(struct sampler *s, const struct sampler_cfg *cfg, int V);
void sampler_free(struct sampler *s);
/* logits [V] may be modified. history: tokens so far (prompt and generated). */
int sampler_pick(struct sampler *s, float *logits, const int *history, int n_hist);
/* Candidates a device can hand over instead of all V logits with the same result: 1 for greedy, top_k
 * when 0 < top_k <= SAMPLER_TOP_MAX; 0 when the pick needs every logit (penalties, no top-k). */
#define SAMPLER_TOP_MAX 1024
int sampler_top_k_needed(const struct sampler *s);
/* sampler_pick over the k best logits, vals[k] sorted descending (ties: lower id first) with their ids;
 * the same token as sampler_pick on the full row when k = sampler_top_k_needed(). */
int sampler_pick_top(struct sampler *s, const float *vals, const int *idx, int k);
/* Speculative verification (src/engine/spec.h): the next token given n_prop distinct proposed tokens (the
 * children of a token-tree node), from a full row (logits, modified; history as sampler_pick) or the k best
 * (vals, idx as sampler_pick_top; logits NULL). Greedy: the token sampler_pick would give, and *acc the index
 * of the proposal equal to it (-1: none). Sampling: proposal c is accepted (*acc = c) with probability
 * p(x_c) / (mass not yet rejected), else the next is tried; with none accepted, a draw from the residual.
 * The returned token follows the sampler's distribution exactly whatever the proposals (drawn otherwise). */
int sampler_pick_spec(struct sampler *s, float *logits, const float *vals, const int *idx, int k, const int *history,
		      int n_hist, const int *prop, int n_prop, int *acc);
/* Uniform double in [0, 1) from the sampler's stream (exposed for tests). */
double sampler_uniform(struct sampler *s);

#endif
