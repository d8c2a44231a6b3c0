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
 *
 * The planner sizes the tree per pass from the measured cost of a pass by token count (a least-squares
 * line over the steps so far: flat for a streamed model, growing for a resident one) and the measured
 * acceptance (the chance the walk goes one level deeper), maximizing expected tokens per second.
 */
#ifndef FERRY_SPEC_H
#define FERRY_SPEC_H

#include <stdbool.h>

#include "engine/model.h"

enum spec_mode { SPEC_OFF, SPEC_AUTO, SPEC_LOOKUP, SPEC_DRAFT, SPEC_TREE };
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
};

/* A trie of guesses under the root (index 0: the pending token), parents before children. */
struct spec_tree {
	int n;
	int tok[KV_TREE_MAX], parent[KV_TREE_MAX];
	unsigned char src[KV_TREE_MAX]; /* enum spec_src of each guess */
};

void spec_tree_reset(struct spec_tree *t, int root);
/* The child of node `parent` with token tok, added when new: its index, -1 when the tree holds max nodes. */
int spec_tree_add(struct spec_tree *t, int parent, int tok, int src, int max);
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
};

void spec_plan_init(struct spec_plan *p);
void spec_plan_pass(struct spec_plan *p, int T, double sec);
/* One verification walk: `accepted` levels gone deeper, and whether it stopped where guesses were left. */
void spec_plan_walk(struct spec_plan *p, int accepted, bool stopped);
/* The depth of guesses for the next pass (1..max) given `others` tokens of other sequences in the step,
 * `width` tokens per level (1: a chain) and `level_s` seconds a level of guessing costs (a draft model's
 * step; 0 for lookup). */
int spec_plan_depth(const struct spec_plan *p, int max, int width, int others, double level_s);
/* The acceptance estimate and the fitted cost line (c0 + c1 T seconds), for --stats. */
double spec_plan_alpha(const struct spec_plan *p);
void spec_plan_cost(const struct spec_plan *p, double *c0, double *c1);

#endif
