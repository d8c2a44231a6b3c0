/*
 * scheduler.h: the step scheduler. Requests (a prompt, a token budget, a sampler) are admitted as sequences of
 * the model's KV cache and advanced together (requests may join and leave between steps): every step packs one decode token of each generating
 * sequence and then prompt chunks of the sequences still in prefill, up to the model's t_max tokens, so
 * each streamed layer serves every active request once per step. Prompts sharing whole KV pages with an
 * earlier prompt start after them (the prefix cache, src/engine/kvcache.h).
 *
 * Admission: a request joins when a sequence row is free (at most max_batch) and the page pools can hold
 * every admitted request at its full length (prompt + max_new) at once, so a running request never finds
 * the cache full. A request that could not fit even alone finishes with SCHED_FINISH_ERROR.
 */
#ifndef FERRY_SCHEDULER_H
#define FERRY_SCHEDULER_H

#include <stdbool.h>

#include "engine/logits_dump.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/spec.h"

enum sched_state { SCHED_WAIT, SCHED_RUN, SCHED_DONE };
enum sched_finish { SCHED_FINISH_NONE, SCHED_FINISH_STOP, SCHED_FINISH_LENGTH, SCHED_FINISH_ERROR, SCHED_FINISH_CANCEL };

struct sched_req {
	/* set by the caller */
	int *toks;               /* [n_prompt + max_new]: the prompt, then the generated tokens */
	int n_prompt, max_new;
	struct sampler smp;      /* initialized by the caller */
	bool ignore_eos;         /* only max_new or on_token end it, not an end-of-sequence token */
	bool no_spec;            /* plain decode steps even when the scheduler speculates */
	struct logits_dump *dump;/* non-NULL: the logits of every position are written there (one request only) */
	bool want_logits;        /* on_logits gets each full row it samples from (the server's logprobs) */
	bool constrained;        /* allow/mask say which tokens may come next (a grammar): full rows, no spec */
	void *user;
	/* kept by the scheduler */
	enum sched_state state;
	enum sched_finish finish;
	int n;                   /* tokens in toks */
	int n_gen;
	int computed;            /* positions in the KV cache */
	int n_cached;            /* prompt positions taken from the prefix cache */
	int seq;
	/* speculative steps (spec.h): the tree of this step, the draft model's sequence, the tokens it holds,
	 * and the chain it was fed past them (its uncommitted tree) */
	struct spec_tree *tree;
	int dseq, dlen, n_dchain;
	int dchain[KV_TREE_MAX];
	char err[256];
};

struct sched_stats {
	int steps, decode_steps;
	long long prefill_tokens, decode_tokens, cached_tokens;
	double prefill_s, decode_s; /* time of steps with prompt tokens, and of steps of decode tokens only */
	unsigned long long h2d_prefill, h2d_decode; /* weight bytes uploaded to the device in those steps */
	unsigned long long disk_decode;             /* bytes read from the model's files in decode steps */
	/* speculative steps: verification passes (one per sequence and step with guesses), guesses and accepted
	 * guesses by source (enum spec_src), tokens those passes produced (accepted + 1 each), draft-model steps */
	long long spec_passes, spec_guessed[SPEC_SRC_COUNT], spec_accepted[SPEC_SRC_COUNT], spec_tokens, draft_steps;
	/* every generating request's part of a decode step (a tree's pass or a plain decode token: on a streamed
	 * target both cost a pass over the weights), and the tokens those parts emitted */
	long long gen_steps, gen_step_tokens;
	double draft_s;
	long long masked; /* constrained picks the grammar refused, drawn again from a masked row */
	double mask_s;    /* time making those masks and picks */
};

struct sched {
	struct model *m;
	int max_batch;
	/* FERRY_STEP_DELAY_MS (a test hook: tests/test_serve_page.py): a decode step lasts at least this long, so a
	 * test can act while a reply is still streaming however fast the machine is; 0: none */
	double step_delay;
	int top_k;                 /* > 0: the backend selects this many logits per row (sampler_top_k_needed) */
	struct sched_req **reqs;
	int n_reqs, cap_reqs;
	struct model_part *parts;
	struct sched_req **part_req;
	float *logits, *topv;      /* [max_batch rows] */
	int *topi;
	const int *eos;            /* end-of-sequence ids (the caller's, kept while the scheduler is) */
	int n_eos;
	/* called for every generated token (on_token returns true to finish the request there, e.g. at a stop
	 * string), and when a request finishes */
	bool (*on_token)(void *ctx, struct sched_req *r, int tok);
	void (*on_done)(void *ctx, struct sched_req *r);
	/* for a request with want_logits: the row [V] its next token is sampled from, before the sampler sees it */
	void (*on_logits)(void *ctx, struct sched_req *r, const float *row);
	/* for a constrained request: may tok come next? and, when the sampler's pick may not, the row [V] with
	 * every token that may not set to -INFINITY (at least one left). The pick is drawn again from that row:
	 * a greedy pick is the best allowed token, a draw one from the sampler's distribution over the allowed
	 * tokens, and the full mask is made only for the steps that need it. */
	bool (*allow)(void *ctx, struct sched_req *r, int tok);
	void (*mask)(void *ctx, struct sched_req *r, float *row);
	float *row_copy;           /* [V] the row before the first pick of a constrained request */
	void *ctx;
	struct sched_stats st;
	/* speculative steps (sched_spec) */
	struct spec_opts spec;
	struct model *draft;       /* NULL: none */
	struct spec_plan plan;
	bool gen_part;             /* the part being handled is a generating request's decode step */
	float *dlogits;            /* [max_batch, draft V] */
	struct sched_req **dq;     /* [max_batch] the requests of a round of draft steps */
	struct spec_draft_work {   /* [max_batch] each one's */
		int depth, max;    /* levels to guess, trie size */
		int node, par;     /* the trie node the chain reached (-1: done), its parent in the draft's tree */
		int last;          /* the chain's last guess (offered, not fed to the draft), -1: none */
		int top[8];        /* the draft's best tokens at the current level */
		float prob[8];     /* their draft probabilities */
		bool dynamic;      /* combined: a level only below a node that scores spec_plan_pmin, */
		int depth_min;     /* except the first depth_min (the draft's chain as deep as --spec draft's) */
	} *dw;
	struct model_part *dparts; /* [max_batch] */
	int max_depth;             /* trees stay shallower than every sliding window */
	/* the online correction of a hybrid placement (plan.h; NULL: none): every hybrid step is observed, and
	 * when the steps depart from their predictions the units are placed again with corrected rates */
	struct plan_fix *fix;
	int switch_at;             /* FERRY_PLACE_SWITCH=N:LIST (tests): after hybrid step N place LIST (0: none) */
	const char *switch_to;
};

/* tok is one of the end-of-sequence ids the scheduler was given. */
bool sched_is_eos(const struct sched *s, int tok);

/* top_k: as struct sched's (0: full logits rows). eos: the n_eos ids that end a request (the model's
 * end-of-sequence ids and its tokenizer's end-of-generation tokens; kept, not copied). */
int sched_init(struct sched *s, struct model *m, int max_batch, int top_k, const int *eos, int n_eos, char *err,
	       size_t errlen);
void sched_free(struct sched *s);
/* Speculative steps for every request from now on (o->mode SPEC_OFF: none); draft: a model with the same
 * vocabulary on the same backend (NULL: none), kept open by the caller, at least max_batch sequences. */
int sched_spec(struct sched *s, const struct spec_opts *o, struct model *draft, char *err, size_t errlen);
/* Tokens per verification pass so far (0: none). */
double sched_spec_tokens_per_pass(const struct sched *s);
/* Tokens a generating request's decode step emitted, plain steps included (1.0 without speculation). */
double sched_tokens_per_step(const struct sched_stats *st);

/* Queues r (state SCHED_WAIT); the scheduler keeps the pointer until r is done. */
int sched_add(struct sched *s, struct sched_req *r);
/* Ends r now (state SCHED_DONE, finish SCHED_FINISH_CANCEL), freeing its sequence; on_done is not called. */
void sched_cancel(struct sched *s, struct sched_req *r);
/* Forgets the requests that are done (a long-running caller frees them after this). */
void sched_reap(struct sched *s);
/* One untimed pass over every layer (fills the RAM tier before a measurement): tok alone in a sequence of
 * its own, closed again. */
int sched_warmup(struct sched *s, int tok, char *err, size_t errlen);
/* One step: admits what fits, runs the model once, samples. Returns 1 when nothing is left to do, 0 after
 * a step, a negative errno (err) when the model failed. */
int sched_step(struct sched *s, char *err, size_t errlen);

#endif
