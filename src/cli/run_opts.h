/*
 * run_opts.h: the options every command that runs a model takes (`ferry run`, `batch`, `serve`, `ppl`): the
 * compute device (--device, --vram, --threads, --placement, --moe-cpu, --h2d-limit), the layer streamer (--ram, --io)
 * and the KV cache (--kv, --kv-page); their parsing and usage text, and the engine options they set (src/engine/engine.h).
 */
#ifndef FERRY_RUN_OPTS_H
#define FERRY_RUN_OPTS_H

#include <stdint.h>
#include <stdio.h>

#include "engine/engine.h"
#include "layout/layout.h"
#include "text/tokenizer.h"

struct run_opts {
	const char *device, *io; /* "auto" unless given */
	const char *kv;          /* NULL: the backend's default format */
	int threads, kv_page;    /* 0: all cores; the model's default page */
	int64_t ram, vram;       /* -1: half of physical memory; all that is free */
	const char *placement;   /* NULL: auto */
	const char *moe_cpu;     /* NULL: auto */
	double h2d_limit;        /* GB/s the uploads are paced to (0: no limit) */
	struct spec_opts spec;   /* --spec, --spec-max, --spec-ngram, --spec-branch */
	const char *draft;       /* --draft */
};

/* getopt_long codes of these options (above any short option and the commands' own codes), and the table
 * entries, to be listed in a command's struct option array. */
enum {
	RUN_OPT_KV = 1024,
	RUN_OPT_KV_PAGE,
	RUN_OPT_RAM,
	RUN_OPT_IO,
	RUN_OPT_THREADS,
	RUN_OPT_DEVICE,
	RUN_OPT_VRAM,
	RUN_OPT_PLACEMENT,
	RUN_OPT_H2D_LIMIT,
	RUN_OPT_SPEC,
	RUN_OPT_SPEC_MAX,
	RUN_OPT_SPEC_NGRAM,
	RUN_OPT_SPEC_BRANCH,
	RUN_OPT_SPEC_COST,
	RUN_OPT_DRAFT,
	RUN_OPT_MOE_CPU,
};
#define RUN_OPTS_LONG                                                                                             \
	{"kv", required_argument, 0, RUN_OPT_KV}, {"kv-page", required_argument, 0, RUN_OPT_KV_PAGE},            \
	{"ram", required_argument, 0, RUN_OPT_RAM}, {"io", required_argument, 0, RUN_OPT_IO},                    \
	{"threads", required_argument, 0, RUN_OPT_THREADS}, {"device", required_argument, 0, RUN_OPT_DEVICE},    \
	{"vram", required_argument, 0, RUN_OPT_VRAM}, {"placement", required_argument, 0, RUN_OPT_PLACEMENT},    \
	{"h2d-limit", required_argument, 0, RUN_OPT_H2D_LIMIT}, {"spec", required_argument, 0, RUN_OPT_SPEC},        \
	{"spec-max", required_argument, 0, RUN_OPT_SPEC_MAX}, {"spec-ngram", required_argument, 0, RUN_OPT_SPEC_NGRAM}, \
	{"spec-branch", required_argument, 0, RUN_OPT_SPEC_BRANCH}, {"draft", required_argument, 0, RUN_OPT_DRAFT},    \
	{"spec-cost", required_argument, 0, RUN_OPT_SPEC_COST}, {"moe-cpu", required_argument, 0, RUN_OPT_MOE_CPU}

void run_opts_default(struct run_opts *o);
/* Takes getopt's code c and its argument: 0 when c was one of these options, 1 when it is not, 2 after
 * printing a bad value. */
int run_opts_parse(struct run_opts *o, int c, const char *arg);
/* After parsing: 0, or 2 after printing what is wrong. */
int run_opts_check(const struct run_opts *o);
void run_opts_usage(FILE *f);

/* The engine options these set (device, vram, threads, placement, moe_cpu, h2d_limit, ram, reader, kv, kv_page, spec,
 * draft); the rest of eo is kept. */
void run_opts_engine(const struct run_opts *o, struct engine_opts *eo);
/* The ids that end a request: the model's end-of-sequence ids and the tokenizer's end-of-generation ids
 * (tk may be NULL), into *ids (free it) and *n. 0 or -ENOMEM. */
int run_opts_eos(const struct layout_hparams *hp, const struct tokenizer *tk, int **ids, int *n);
/* Writes a command's result o (a json_t) to path (--stats-json, --json: opt), through a temporary name;
 * 0, or -EIO after printing why. */
struct json_t;
int run_opts_json_write(const struct json_t *o, const char *path, const char *opt);

#endif
