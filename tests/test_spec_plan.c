/* test_spec_plan.c: the guess tries, prompt lookup and the tree planner of src/engine/spec.c on known inputs:
 * a trie merges equal paths and stops at its size; lookup takes the longest n-gram that recurs, the latest
 * matches first, as branches, each cut to the depth; the planner's pass-cost line and acceptance are the
 * least-squares fit and the counts, a flat cost (a streamed model) takes the deepest tree and a steep one
 * (resident) a shallow one, less when acceptance is low, and a draft step's cost per level shortens it.
 * The combined source's pieces: lookup of every n-gram length with scores from the measured class rates,
 * the cut to the best-scoring nodes (parents kept, renumbered), the size chosen from given pass costs (flat:
 * every guess up to the cap; steep: the brute-force best of the expected rate, computed here), the draft
 * step threshold, the draft probability bins and the softmax of the draft's top tokens. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/spec.h"

int main(void)
{
	struct spec_tree t;
	spec_tree_reset(&t, 7);
	int a = spec_tree_add(&t, 0, 1, SPEC_SRC_DRAFT, 8), b = spec_tree_add(&t, a, 2, SPEC_SRC_DRAFT, 8);
	CHECK(a == 1 && b == 2 && spec_tree_add(&t, 0, 1, SPEC_SRC_LOOKUP, 8) == 1 && t.n == 3);
	CHECK(spec_tree_add(&t, 0, 3, SPEC_SRC_LOOKUP, 8) == 3 && t.src[3] == SPEC_SRC_LOOKUP && spec_tree_depth(&t, b) == 2);
	CHECK(spec_tree_add(&t, 0, 4, SPEC_SRC_LOOKUP, 4) == -1);

	/* ... 5 6 7 8 9 ... 5 6 7 1 2 ... 5 6 7: the 3-gram "5 6 7" recurs twice; latest first */
	int toks[] = {5, 6, 7, 8, 9, 3, 5, 6, 7, 1, 2, 4, 5, 6, 7};
	int n = (int)(sizeof(toks) / sizeof(toks[0]));
	spec_tree_reset(&t, toks[n - 1]);
	spec_lookup(toks, n, 3, 2, 2, 16, &t);
	CHECK_MSG(t.n == 5 && t.tok[1] == 1 && t.tok[2] == 2 && t.parent[2] == 1 && t.tok[3] == 8 && t.tok[4] == 9,
		  "lookup: %d nodes, first %d %d", t.n, t.tok[1], t.tok[2]);
	spec_tree_reset(&t, toks[n - 1]);
	spec_lookup(toks, n, 3, 5, 1, 16, &t); /* one branch, up to 5 deep: 1 2 4 5 6 */
	CHECK(t.n == 6 && t.tok[5] == 6);
	int none[] = {1, 2, 3, 4};
	spec_tree_reset(&t, 4);
	spec_lookup(none, 4, 3, 4, 2, 16, &t);
	CHECK(t.n == 1);

	struct spec_plan p;
	spec_plan_init(&p);
	CHECK(fabs(spec_plan_alpha(&p) - 0.5) < 1e-12);
	for (int i = 0; i < 20; i++) /* resident: 10 ms + 2 ms a token */
		spec_plan_pass(&p, 1 + i % 9, 0.010 + 0.002 * (1 + i % 9));
	double c0, c1;
	spec_plan_cost(&p, &c0, &c1);
	CHECK_MSG(fabs(c0 - 0.010) < 1e-6 && fabs(c1 - 0.002) < 1e-7, "fit %g + %g T", c0, c1);
	spec_plan_walk(&p, 90, false);
	spec_plan_walk(&p, 0, true);
	int deep_res = spec_plan_depth(&p, 64, 1, 0, 0);
	CHECK_MSG(deep_res > 1 && deep_res < 64, "resident, high acceptance: depth %d", deep_res);
	struct spec_plan low = p;
	low.deeper = 1;
	low.stopped = 50;
	CHECK(spec_plan_depth(&low, 64, 1, 0, 0) < deep_res);
	CHECK(spec_plan_depth(&p, 64, 1, 0, 0.05) < deep_res);
	struct spec_plan flat;
	spec_plan_init(&flat);
	for (int i = 0; i < 20; i++) /* streamed: 0.7 s whatever the tokens */
		spec_plan_pass(&flat, 1 + i % 33, 0.7);
	spec_plan_walk(&flat, 90, false);
	spec_plan_walk(&flat, 0, true);
	CHECK(spec_plan_depth(&flat, 64, 1, 0, 0) == 64 && spec_plan_depth(&flat, 60, 3, 0, 0) == 20);

	/* combined: lookup of every length; "5 6 7" (3-gram, twice), "6 7" and "7" (also after 9 7) recur */
	struct spec_plan rp;
	spec_plan_init(&rp);
	for (int i = 0; i < 98; i++) /* 3-gram continuations taken 80%: rate (78.4 + 1) / 100 */
		spec_plan_offer(&rp, spec_lookup_class(3), i < 78.4);
	CHECK(fabs(spec_plan_rate(&rp, spec_lookup_class(3)) - 80.0 / 100) < 1e-12);
	CHECK(fabs(spec_plan_rate(&rp, spec_lookup_class(1)) - 0.5) < 1e-12);
	CHECK(fabs(spec_plan_rate(&rp, spec_draft_class(0.95f)) - 0.95) < 1e-6);
	CHECK(spec_draft_class(0.05f) == 0 && spec_draft_class(0.3f) == 2 && spec_draft_class(1.0f) == SPEC_DRAFT_BINS - 1);
	CHECK(spec_lookup_class(1) == SPEC_DRAFT_BINS && spec_lookup_class(9) == SPEC_CLASS_COPY - 1);
	CHECK(fabs(spec_plan_rate(&rp, SPEC_CLASS_COPY) - 0.8) < 1e-12);
	int toks2[] = {5, 6, 7, 8, 9, 7, 3, 5, 6, 7, 1, 2, 4, 5, 6, 7};
	int n2 = (int)(sizeof(toks2) / sizeof(toks2[0]));
	spec_tree_reset(&t, toks2[n2 - 1]);
	spec_lookup_all(toks2, n2, 3, 2, 4, &rp, 64, &t);
	/* children of the root: 1 (after "5 6 7" at 7..9), 8 (at 0..2), 3 (after "7" at 5): 3-gram ones score 0.8 */
	int k1 = -1, k8 = -1, k3 = -1;
	for (int i = 1; i < t.n; i++) {
		if (t.parent[i] != 0)
			continue;
		k1 = t.tok[i] == 1 ? i : k1;
		k8 = t.tok[i] == 8 ? i : k8;
		k3 = t.tok[i] == 3 ? i : k3;
	}
	CHECK_MSG(k1 > 0 && k8 > 0 && k3 > 0 && t.n == 7, "lookup_all: %d nodes, kids %d %d %d", t.n, k1, k8, k3);
	CHECK(k1 > 0 && fabsf(t.p[k1] - 0.8f) < 1e-6f && t.cls[k1] == spec_lookup_class(3));
	CHECK(k3 > 0 && fabsf(t.p[k3] - 0.5f) < 1e-6f && t.cls[k3] == spec_lookup_class(1));
	for (int i = 1; i < t.n; i++) /* a continuation's second token: its parent's score times the copy rate */
		CHECK(t.p[i] <= t.p[t.parent[i]] && spec_tree_depth(&t, i) <= 2 &&
		      (t.parent[i] == 0 || (t.cls[i] == SPEC_CLASS_COPY && fabsf(t.p[i] - 0.8f * t.p[t.parent[i]]) < 1e-6f)));
	/* the cut: the 4 best nodes (root, 1, 8, then 2 or 9 at 0.64), parents before children, renumbered */
	spec_tree_keep(&t, 4);
	CHECK_MSG(t.n == 4 && t.tok[0] == 7 && t.parent[0] == -1, "keep: %d nodes", t.n);
	for (int i = 1; i < t.n; i++)
		CHECK(t.parent[i] >= 0 && t.parent[i] < i && t.p[i] >= 0.64f - 1e-6f);

	/* the size from given pass costs: scores 0.95^i of 200 guesses (a long confident copy) */
	float score[200];
	for (int i = 0; i < 200; i++)
		score[i] = powf(0.95f, (float)(i + 1));
	struct spec_plan fp, sp;
	spec_plan_init(&fp);
	spec_plan_init(&sp);
	for (int T = 1; T <= 256; T *= 2) { /* streamed: 0.7 s for 1 to 256 tokens; resident: 30 ms + 30 ms a token */
		spec_plan_pass(&fp, T, 0.7);
		spec_plan_pass(&sp, T, 0.030 + 0.030 * T);
	}
	CHECK_MSG(spec_plan_size(&fp, score, 200, 255, 0, 0.0) == 200, "flat: %d", spec_plan_size(&fp, score, 200, 255, 0, 0));
	CHECK(spec_plan_size(&fp, score, 200, 64, 0, 0.0) == 64 && spec_plan_size(&fp, score, 200, 255, 3, 0.05) == 200);
	int best_n = 0;
	double best = 0;
	for (int N = 0; N <= 200; N++) { /* the expected rate by brute force */
		double ex = 1;
		for (int i = 0; i < N; i++)
			ex += score[i];
		double r = ex / (0.030 + 0.030 * (1 + N));
		if (r > best * (1 + 1e-9)) {
			best = r;
			best_n = N;
		}
	}
	int got_n = spec_plan_size(&sp, score, 200, 255, 0, 0.0);
	CHECK_MSG(got_n == best_n && got_n > 0 && got_n < 16, "steep: %d, brute force %d", got_n, best_n);
	/* other sequences' tokens in the pass: a larger fixed part, so a tree as large or larger pays */
	CHECK(spec_plan_size(&sp, score, 200, 255, 4, 0.0) >= got_n);
	float low_s[3] = {0.2f, 0.1f, 0.05f};
	CHECK(spec_plan_size(&sp, low_s, 3, 255, 0, 0.0) == 0); /* unlikely guesses cost more than they bring */
	struct spec_plan steep = sp;
	sp.fix0 = 0.7; /* a given line overrides the measured one */
	sp.fix1 = 0;
	CHECK(spec_plan_size(&sp, score, 200, 255, 0, 0.0) == 200);
	/* the draft step threshold: a draft step of 10 ms against a flat 0.7 s pass, 3 tokens expected: ~0.043 */
	double pm = spec_plan_pmin(&fp, 3, 20, 0, 0, 3, 0.010);
	CHECK_MSG(fabs(pm - 3 / 0.7 * 0.010) < 1e-3 && spec_plan_pmin(&fp, 3, 20, 0, 0, 3, 0) < 1e-3, "pmin %g", pm);
	CHECK(spec_plan_pmin(&fp, 3, 20, 0, 0, 3, 0.010) < 0.1 * spec_plan_pmin(&steep, 3, 20, 0, 0, 3, 0.010));

	/* the spine: a long lookup copy (scored low: 0.5 then 0.8 a token, the priors) beside the draft's
	 * confident branches (0.9 a level, 3 wide) is cut to its first nodes by score alone; pinned, it is kept
	 * whole and the rest of the budget still goes to the best-scoring draft nodes */
	struct spec_tree cut[2];
	int copy[20];
	for (int pin = 0; pin < 2; pin++) {
		struct spec_tree *c = &cut[pin];
		spec_tree_reset(c, 99);
		int node = 0;
		for (int j = 0; j < 20; j++) {
			copy[j] = 1000 + j;
			node = spec_tree_offer(c, node, copy[j], SPEC_SRC_LOOKUP, SPEC_CLASS_COPY,
					       c->p[node] * (j ? 0.8f : 0.5f), KV_TREE_MAX);
		}
		int lev[3] = {0, 0, 0};
		for (int d = 0; d < 10; d++) { /* a draft trie: three children a level under the first */
			for (int b = 2; b >= 0; b--)
				lev[b] = spec_tree_offer(c, lev[0], 2000 + 10 * d + b, SPEC_SRC_DRAFT, SPEC_DRAFT_BINS - 1,
							 c->p[lev[0]] * (b ? 0.05f : 0.9f), KV_TREE_MAX);
		}
		CHECK(c->n == 1 + 20 + 30);
		if (pin)
			CHECK(spec_tree_pin(c, copy, 20) == 20 && spec_tree_pin(c, (int[]){1000, 7}, 2) == 1);
		spec_plan_tree(&fp, c, 24, 0, 0.0); /* flat cost: every guess pays, the cap cuts */
		int nl = 0, depth = 0;
		for (int i = 1; i < c->n; i++) {
			CHECK(c->parent[i] >= 0 && c->parent[i] < i && (!c->pin[i] || c->pin[c->parent[i]]));
			nl += c->src[i] == SPEC_SRC_LOOKUP;
			depth = spec_tree_depth(c, i) > depth ? spec_tree_depth(c, i) : depth;
		}
		CHECK_MSG(c->n == 25, "cut to %d", c->n);
		if (pin) /* the whole copy, then the draft's chain (0.9^d) before its low branches */
			CHECK_MSG(nl == 20 && depth == 20 && c->n - 1 - nl == 4, "pinned: %d lookup nodes, depth %d", nl, depth);
		else
			CHECK_MSG(nl < 20 && depth < 20, "unpinned: %d lookup nodes", nl);
	}
	/* which source is the spine: the one whose own chain measured more tokens a pass */
	struct spec_plan cp;
	spec_plan_init(&cp);
	CHECK(spec_plan_spine(&cp) == -1);
	int got[6] = {5, 6, 7, 8, 9, 4}, ch_l[8] = {5, 6, 7, 8, 9, 4, 1, 1}, ch_d[3] = {5, 3, 3};
	spec_plan_chain(&cp, SPEC_SRC_LOOKUP, ch_l, 8, got, 6); /* matched all 6 the walk gave: counted at 6 */
	CHECK(spec_plan_spine(&cp) == -1);
	spec_plan_chain(&cp, SPEC_SRC_DRAFT, ch_d, 3, got, 6); /* matched 1: 2 tokens */
	CHECK(fabs(cp.chain_tok[SPEC_SRC_LOOKUP] - 6) < 1e-12 && fabs(cp.chain_tok[SPEC_SRC_DRAFT] - 2) < 1e-12);
	CHECK(spec_plan_spine(&cp) == SPEC_SRC_LOOKUP);
	for (int i = 0; i < 3; i++) { /* then no lookup match (1 token) and the draft's chain right 4 deep (5) */
		spec_plan_chain(&cp, SPEC_SRC_LOOKUP, ch_l, 0, got, 6);
		spec_plan_chain(&cp, SPEC_SRC_DRAFT, got, 4, got, 6);
	}
	CHECK_MSG(spec_plan_spine(&cp) == SPEC_SRC_DRAFT, "lookup %g / %g, draft %g / %g", cp.chain_tok[0], cp.chain_pass[0],
		  cp.chain_tok[1], cp.chain_pass[1]);
	int lc[8];
	CHECK(spec_lookup_chain(toks, n, 3, 5, lc) == 5 && lc[0] == 1 && lc[4] == 6); /* as spec_lookup's 1 branch */
	/* a source's chain's own acceptance: the draft matched 1 then stopped (1 deep, 1 stop), then 4 deep three
	 * times with its chain used up (no stop): (13 + 1) / (13 + 1 + 2); lookup's empty chains stop nothing */
	CHECK_MSG(fabs(spec_plan_chain_alpha(&cp, SPEC_SRC_DRAFT) - 14.0 / 16.0) < 1e-12, "draft chain alpha %g",
		  spec_plan_chain_alpha(&cp, SPEC_SRC_DRAFT));
	CHECK(fabs(spec_plan_chain_alpha(&cp, SPEC_SRC_LOOKUP) - 7.0 / 8.0) < 1e-12); /* 6 deep, 0 stops */
	/* the spine follows the recent passes: lookup gave 6 a pass for ten passes, then the draft 5 and lookup 1
	 * for four; over the run lookup is still ahead (64 / 14 against 40 / 14), over the recent passes the draft */
	spec_plan_init(&cp);
	for (int i = 0; i < 10; i++) {
		spec_plan_chain(&cp, SPEC_SRC_LOOKUP, ch_l, 8, got, 6);
		spec_plan_chain(&cp, SPEC_SRC_DRAFT, ch_d, 3, got, 6);
	}
	CHECK(spec_plan_spine(&cp) == SPEC_SRC_LOOKUP);
	for (int i = 0; i < 4; i++) {
		spec_plan_chain(&cp, SPEC_SRC_LOOKUP, ch_l, 0, got, 6);
		spec_plan_chain(&cp, SPEC_SRC_DRAFT, got, 4, got, 6);
	}
	CHECK(cp.chain_tok[SPEC_SRC_LOOKUP] > cp.chain_tok[SPEC_SRC_DRAFT] && fabs(cp.chain_pass[SPEC_SRC_DRAFT] - 14) < 1e-12);
	CHECK_MSG(spec_plan_spine(&cp) == SPEC_SRC_DRAFT, "recent: lookup %g / %g, draft %g / %g", cp.chain_rtok[0],
		  cp.chain_rpass[0], cp.chain_rtok[1], cp.chain_rpass[1]);
	/* the draft's chain depth in combined: --spec draft's choice at the chain's own acceptance (a flat pass
	 * cost and a draft step: deep for a chain that is mostly right, shallow for one mostly wrong) */
	struct spec_plan fl;
	spec_plan_init(&fl);
	fl.fix0 = 0.7;
	CHECK(fabs(spec_plan_chain_alpha(&fl, SPEC_SRC_DRAFT) - 0.5) < 1e-12); /* nothing measured: 1/2 */
	int d_hi = spec_plan_depth_alpha(&fl, 0.9, 63, 1, 0, 0.01), d_lo = spec_plan_depth_alpha(&fl, 0.3, 63, 1, 0, 0.01);
	CHECK_MSG(d_hi > 10 && d_lo < 4 && d_lo >= 1, "depth at alpha 0.9: %d, at 0.3: %d", d_hi, d_lo);
	CHECK(spec_plan_depth(&fl, 63, 1, 0, 0.01) == spec_plan_depth_alpha(&fl, spec_plan_alpha(&fl), 63, 1, 0, 0.01));

	/* the draft's top tokens and their softmax probabilities against a direct computation */
	float row[1000];
	srand(5);
	for (int i = 0; i < 1000; i++)
		row[i] = 8.0f * (float)rand() / (float)RAND_MAX;
	int top[4];
	float prob[4];
	spec_row_top(row, 1000, 4, top, prob);
	double z = 0;
	for (int i = 0; i < 1000; i++)
		z += exp((double)row[i]);
	for (int j = 0; j < 4; j++) {
		int above = 0;
		for (int i = 0; i < 1000; i++)
			above += row[i] > row[top[j]];
		CHECK(above == j && fabs(prob[j] - exp((double)row[top[j]]) / z) < 1e-6);
	}
	CHECK(spec_mode_parse("combined") == SPEC_COMBINED && !strcmp(spec_mode_name(SPEC_COMBINED), "combined"));
	CHECK(spec_mode_parse("tree") == SPEC_TREE && spec_mode_parse("x") < 0 && !strcmp(spec_mode_name(SPEC_OFF), "off"));
	CHECK_DONE();
}
