/*
 * spec.h: speculative steps. A generating sequence's pending token (the root) goes into the step with a
 * token tree of guesses after it (model.h: a tree part); the target's logits at every tree token say which
 * guesses it would itself have produced, the walk from the root keeps those (src/engine/sampler.h:
 * sampler_pick_spec, exact for greedy and sampling), and the accepted path is committed
 * (model_seq_commit), so one pass over the weights yields 1 + accepted tokens.
 *
 * Guesses come from prompt lookup (the n-gram ending the text recurs earlier: its continuations, several
 * matches giving branches) and from a draft model with the same vocabulary (its greedy chain, and with
 * --spec tree the top-k alternatives at each depth as leaves), merged into one trie under the root.
 * --spec combined (auto's choice with a draft) pools both: every lookup continuation of every n-gram length
 * and the draft's branches, each node scored by the estimated chance the walk reaches it (the product of
 * draft probabilities, or of the acceptance measured so far for lookup guesses of its n-gram length, along
 * its path), and keeps the best-scoring nodes, as many as pay for their share of the pass.
 *
 * The planner sizes the tree per pass from the measured cost of a pass by token count (a least-squares
 * line over the steps so far: flat for a streamed model, growing for a resident one) and the measured
 * acceptance (the chance the walk goes one level deeper), maximizing expected tokens per second.
 */
#ifndef FERRY_SPEC_H
#define FERRY_SPEC_H

#include <stdbool.h>

#include "engine/model.h"

enum spec_mode { SPEC_OFF, SPEC_AUTO, SPEC_LOOKUP, SPEC_DRAFT, SPEC_TREE, SPEC_COMBINED };
/* Acceptance classes (each measured on its own, so a score is calibrated by what the walks found): the
 * draft's guesses by their draft probability q in SPEC_DRAFT_BINS bins (spec_draft_class), then the first
 * token of a lookup continuation after a matched n-gram of g = 1 .. SPEC_LOOKUP_CLASSES tokens (the last: g
 * or longer), then SPEC_CLASS_COPY: the later tokens of a continuation (a copy once begun goes on far more
 * often than a match's first token is right). */
#define SPEC_DRAFT_BINS 5
#define SPEC_LOOKUP_CLASSES 3
#define SPEC_CLASS_COPY (SPEC_DRAFT_BINS + SPEC_LOOKUP_CLASSES)
#define SPEC_CLASS_N (SPEC_CLASS_COPY + 1)
int spec_draft_class(float q);
int spec_lookup_class(int g);
enum spec_src { SPEC_SRC_LOOKUP, SPEC_SRC_DRAFT, SPEC_SRC_COUNT };

/* "off", "auto", ... -> enum spec_mode; -1 when unknown. */
int spec_mode_parse(const char *s);
const char *spec_mode_name(int mode);

#define SPEC_MAX_DEFAULT 16

struct spec_opts {
	int mode;      /* enum spec_mode (auto: the draft model's tree when there is one, else lookup) */
	int max;       /* most guessed tokens per pass (0: SPEC_MAX_DEFAULT); at most KV_TREE_MAX - 1 */
	int ngram;     /* prompt lookup: the longest n-gram matched (then shorter, down to 1); 0: 3 */
	int branch;    /* tree: branches per depth (top-k of the draft); 0: 3 */
	double cost0, cost1; /* cost0 > 0: the planner's pass cost is cost0 + cost1 T seconds (not measured) */
	double cost_draft;   /* cost0 > 0 and this > 0: a draft step's seconds for the planner (not measured) */
};

/* A trie of guesses under the root (index 0: the pending token), parents before children. */
struct spec_tree {
	int n;
	int tok[KV_TREE_MAX], parent[KV_TREE_MAX];
	unsigned char src[KV_TREE_MAX]; /* enum spec_src of each guess */
	unsigned char cls[KV_TREE_MAX]; /* its acceptance class (< SPEC_CLASS_N) */
	float p[KV_TREE_MAX];           /* the estimated chance the walk reaches it (the root: 1) */
	unsigned char pin[KV_TREE_MAX]; /* on the spine (spec_tree_pin): kept by the cut before any other node */
	/* combined: each source's own chain (lookup: the continuation --spec lookup would guess; the draft: its
	 * greedy chain), for the walk to measure what that source alone would have given (spec_plan_chain) */
	int chain[SPEC_SRC_COUNT][KV_TREE_MAX];
	int n_chain[SPEC_SRC_COUNT];
};

void spec_tree_reset(struct spec_tree *t, int root);
/* The child of node `parent` with token tok, added when new: its index, -1 when the tree holds max nodes. */
int spec_tree_add(struct spec_tree *t, int parent, int tok, int src, int max);
/* spec_tree_add with an acceptance class and a score: a node that is there keeps the larger score. */
int spec_tree_offer(struct spec_tree *t, int parent, int tok, int src, int cls, float p, int max);
/* Pins the path from the root along toks[0..n) as far as the tree holds it (the spine); the number pinned. */
int spec_tree_pin(struct spec_tree *t, const int *toks, int n);
/* Depth of node i (the root 0). */
int spec_tree_depth(const struct spec_tree *t, int i);

/* Prompt lookup over toks[0..n) (the last token is the root): the longest suffix n-gram (ngram down to 1
 * tokens) that occurred before; the continuations of its latest matches (up to `branches` distinct ones,
 * the longest first) go into t as paths from the root, each at most depth tokens, t at most max nodes. */
void spec_lookup(const int *toks, int n, int ngram, int depth, int branches, int max, struct spec_tree *t);

/* The planner's measurements. */
struct spec_plan {
	double n, st, stt, sc, stc;     /* the pass-cost fit: count, sums of T, T^2, sec, T*sec */
	double deeper, stopped;         /* walks that went a level deeper, walks that stopped at a guess */
	double offered[SPEC_CLASS_N];   /* guesses whose parent the walk reached, by class */
	double taken[SPEC_CLASS_N];     /* those the walk went into */
	double fix0, fix1;              /* fix0 > 0: the pass-cost line given (spec_opts cost0, cost1) */
	double fixd;                    /* > 0: a draft step's seconds given (spec_opts cost_draft) */
	/* by source: the tokens its own chain would have given (1 + the guesses the target's picks matched), passes */
	double chain_tok[SPEC_SRC_COUNT], chain_pass[SPEC_SRC_COUNT];
	double chain_rtok[SPEC_SRC_COUNT], chain_rpass[SPEC_SRC_COUNT]; /* the same, older passes forgotten */
	/* by source: its own chain's guesses the target's picks matched, and the walks where one of them did not */
	double chain_deep[SPEC_SRC_COUNT], chain_stop[SPEC_SRC_COUNT];
};

/* The chain --spec lookup would guess (spec_lookup's first branch) into out[]: its length. */
int spec_lookup_chain(const int *toks, int n, int ngram, int depth, int *out);
/* The continuations of every suffix n-gram (ngram down to 1 tokens) of toks[0..n) that occurred before, up
 * to `matches` latest ones per length, as paths from the root of at most depth tokens; a node's score is its
 * parent's times the measured rate of its class (the matched length). t at most max nodes. */
void spec_lookup_all(const int *toks, int n, int ngram, int depth, int matches, const struct spec_plan *pl, int max,
		     struct spec_tree *t);
/* Cuts t to `keep` nodes (the root included): the pinned spine from the root down first, then the
 * best-scoring others (a node's score never exceeds its parent's, ties keep the earlier node, so every kept
 * node's parent is kept), renumbered in their order. */
void spec_tree_keep(struct spec_tree *t, int keep);
/* The k (<= 8) best ids of row[V], best first (ties: the lower id), and their softmax probabilities. */
void spec_row_top(const float *row, int V, int k, int *top, float *prob);

void spec_plan_init(struct spec_plan *p);
void spec_plan_pass(struct spec_plan *p, int T, double sec);
/* One verification walk: `accepted` levels gone deeper, and whether it stopped where guesses were left. */
void spec_plan_walk(struct spec_plan *p, int accepted, bool stopped);
/* The depth of guesses for the next pass (1..max) given `others` tokens of other sequences in the step,
 * `width` tokens per level (1: a chain) and `level_s` seconds a level of guessing costs (a draft model's
 * step; 0 for lookup). */
int spec_plan_depth(const struct spec_plan *p, int max, int width, int others, double level_s);
/* spec_plan_depth with acceptance alpha in place of the walks' (spec_plan_alpha). */
int spec_plan_depth_alpha(const struct spec_plan *p, double alpha, int max, int width, int others, double level_s);
/* The number of guesses (0..max) maximizing (1 + score[0] + ... + score[N-1]) / (cost(others + 1 + N) +
 * extra_s), score[] sorted best first: the expected tokens of the pass over its cost, extra_s the time spent
 * guessing (a draft's steps). A flat cost (a streamed model) keeps every guess with a score above 0. */
int spec_plan_size(const struct spec_plan *p, const float *score, int n, int max, int others, double extra_s);
/* Cuts t to the size spec_plan_size chooses from its nodes' scores (at most max guesses). */
void spec_plan_tree(const struct spec_plan *p, struct spec_tree *t, int max, int others, double extra_s);
/* The score a node needs for one more draft step below it to pay: the pass's current rate (expect tokens
 * for n_tok tokens and extra_s seconds of guessing) times what the step adds (level_s, and width tokens). */
double spec_plan_pmin(const struct spec_plan *p, double expect, int n_tok, int others, double extra_s, int width,
		      double level_s);
/* A guess of class cls whose parent the walk reached: taken or not. Its class's measured rate: the taken
 * share with a prior worth two guesses (a draft bin's middle probability, 1/2 for a lookup match's first
 * token, 0.8 for a copy's later tokens: priors, replaced by what the walks measure within a few passes). */
void spec_plan_offer(struct spec_plan *p, int cls, bool taken);
double spec_plan_rate(const struct spec_plan *p, int cls);
/* After a walk that emitted got[0..n_got): source src's own chain ch[0..n) would have given 1 + the length
 * of its prefix that got matches (exact for greedy up to n_got: the target's picks do not depend on the
 * tree; a chain that matched all of got is counted at n_got, never above what the walk got). */
void spec_plan_chain(struct spec_plan *p, int src, const int *ch, int n, const int *got, int n_got);
/* The source whose own chain measured the most tokens per pass over the recent passes (the spine combined
 * keeps whole, so a pass carries at least what that source alone would; recent, so the spine follows a text
 * that turns from copying to free writing); -1 before a pass measured both. */
int spec_plan_spine(const struct spec_plan *p);
/* Source src's own chain's acceptance (matched guesses / (matched + walks that stopped at one), prior 1/2):
 * what --spec draft's planner measures as its alpha when that chain is the whole tree. */
double spec_plan_chain_alpha(const struct spec_plan *p, int src);
/* The acceptance estimate and the fitted cost line (c0 + c1 T seconds), for --stats. */
double spec_plan_alpha(const struct spec_plan *p);
void spec_plan_cost(const struct spec_plan *p, double *c0, double *c1);

#endif
