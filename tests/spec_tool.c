/* spec_tool.c: a helper of tests/test_spec.py (not a test itself): N requests of one prompt, request i sampled
 * with seed i + 1, all through one scheduler (batches of B), with or without speculative steps (at most 4
 * guesses a pass); prints each request's generated ids on a line. The sampling exactness test compares the
 * histograms of the two.
 *   spec_tool MODEL IDS N TOKENS TEMP TOP_K B SPEC [DRAFT]   (IDS: 1,2,3; SPEC: off|lookup|draft|tree) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

int main(int argc, char **argv)
{
	if (argc < 9) {
		fprintf(stderr, "usage: spec_tool MODEL IDS N TOKENS TEMP TOP_K B SPEC [DRAFT]\n");
		return 2;
	}
	char err[ERR_LEN];
	struct layout lay;
	if (layout_open(&lay, argv[1], err, sizeof(err))) {
		fprintf(stderr, "spec_tool: %s\n", err);
		return 1;
	}
	int prompt[256], n_prompt = 0, N = atoi(argv[3]), n_tok = atoi(argv[4]), top_k = atoi(argv[6]), B = atoi(argv[7]);
	for (char *p = argv[2]; *p && n_prompt < 256; p += *p == ',')
		prompt[n_prompt++] = (int)strtol(p, &p, 10);
	struct engine_opts eo = {.device = "cpu", .ram = 64 << 20, .t_max = n_prompt * B, .max_logits = B,
				 .ctx = n_prompt + n_tok + 1, .max_seqs = B, .draft = argc > 9 ? argv[9] : NULL};
	eo.spec.mode = spec_mode_parse(argv[8]);
	eo.spec.max = 4;
	struct engine *e;
	if (eo.spec.mode < 0 || engine_open(&e, &lay, &eo, err, sizeof(err))) {
		fprintf(stderr, "spec_tool: %s\n", eo.spec.mode < 0 ? "bad SPEC" : err);
		return 1;
	}
	struct sched *s = engine_sched(e);
	struct sched_req *reqs = calloc((size_t)N, sizeof(*reqs));
	int rc = 0;
	for (int i = 0; i < N; i++) {
		struct sampler_cfg sc = {.temp = (float)atof(argv[5]), .top_k = top_k, .top_p = 1, .rep_penalty = 1,
					 .seed = (uint64_t)i + 1};
		reqs[i].toks = malloc(sizeof(int) * (size_t)(n_prompt + n_tok + 1));
		memcpy(reqs[i].toks, prompt, sizeof(int) * (size_t)n_prompt);
		reqs[i].n_prompt = n_prompt;
		reqs[i].max_new = n_tok;
		reqs[i].ignore_eos = true;
		rc = rc ? rc : sampler_init(&reqs[i].smp, &sc, lay.hp.vocab);
		rc = rc ? rc : sched_add(s, &reqs[i]);
	}
	while (!rc && !(rc = sched_step(s, err, sizeof(err))))
		;
	if (rc != 1) {
		fprintf(stderr, "spec_tool: %s\n", err);
		return 1;
	}
	for (int i = 0; i < N; i++) {
		for (int j = n_prompt; j < reqs[i].n; j++)
			printf("%d%c", reqs[i].toks[j], j + 1 < reqs[i].n ? ' ' : '\n');
		sampler_free(&reqs[i].smp);
		free(reqs[i].toks);
	}
	struct engine_stats st;
	engine_stats(e, &st);
	fprintf(stderr, "spec_tool: %lld passes, %lld tokens\n", st.sched.spec_passes, st.sched.spec_tokens);
	free(reqs);
	engine_close(e);
	layout_close(&lay);
	return 0;
}
