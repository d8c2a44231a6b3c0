/*
 * sample_opts.h: the sampling options of the commands that generate on the command line (`ferry run`,
 * `ferry chat`): --temp (alias --temperature), --top-k, --top-p, --min-p, --repeat-penalty,
 * --repeat-last-n, --seed; their parsing and usage text, and the defaults a model's generation_config
 * gives for the ones not set.
 */
#ifndef FERRY_SAMPLE_OPTS_H
#define FERRY_SAMPLE_OPTS_H

#include <stdbool.h>
#include <stdio.h>

#include "engine/sampler.h"
#include "layout/layout.h"

struct sample_opts {
	struct sampler_cfg sc;
	bool temp_set, top_k_set, top_p_set, rep_set;
};

/* getopt_long codes (above run_opts.h's) and the table entries to list in a command's struct option array. */
enum {
	SAMPLE_OPT_TEMP = 1280,
	SAMPLE_OPT_TOP_K,
	SAMPLE_OPT_TOP_P,
	SAMPLE_OPT_MIN_P,
	SAMPLE_OPT_REP,
	SAMPLE_OPT_REP_N,
	SAMPLE_OPT_SEED,
};
#define SAMPLE_OPTS_LONG                                                                                          \
	{"temp", required_argument, 0, SAMPLE_OPT_TEMP}, {"temperature", required_argument, 0, SAMPLE_OPT_TEMP},  \
	{"top-k", required_argument, 0, SAMPLE_OPT_TOP_K}, {"top-p", required_argument, 0, SAMPLE_OPT_TOP_P},    \
	{"min-p", required_argument, 0, SAMPLE_OPT_MIN_P}, {"repeat-penalty", required_argument, 0, SAMPLE_OPT_REP}, \
	{"repeat-last-n", required_argument, 0, SAMPLE_OPT_REP_N}, {"seed", required_argument, 0, SAMPLE_OPT_SEED}

/* Greedy, no penalty, seed 0. */
void sample_opts_default(struct sample_opts *o);
/* Takes getopt's code c and its argument: 0 when c was one of these options, 1 when it is not, 2 after
 * printing a bad value. */
int sample_opts_parse(struct sample_opts *o, int c, const char *arg);
void sample_opts_usage(FILE *f);
/* The model's generation_config (as converted into the manifest) for what was not given. */
void sample_opts_model_defaults(struct sample_opts *o, const struct layout *lay);

#endif
