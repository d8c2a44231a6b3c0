/* test_spec_plan.c: the guess tries, prompt lookup and the tree planner of src/engine/spec.c on known inputs:
 * a trie merges equal paths and stops at its size; lookup takes the longest n-gram that recurs, the latest
 * matches first, as branches, each cut to the depth; the planner's pass-cost line and acceptance are the
 * least-squares fit and the counts, a flat cost (a streamed model) takes the deepest tree and a steep one
 * (resident) a shallow one, less when acceptance is low, and a draft step's cost per level shortens it. */
#include <math.h>
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
	CHECK(spec_mode_parse("tree") == SPEC_TREE && spec_mode_parse("x") < 0 && !strcmp(spec_mode_name(SPEC_OFF), "off"));
	CHECK_DONE();
}
