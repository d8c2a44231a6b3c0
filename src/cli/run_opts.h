/*
 * run_opts.h: the options every command that runs a model takes (`ferry run`, `ferry ppl`): the compute
 * device (--device, --vram, --threads), the layer streamer (--ram, --io) and the KV cache (--kv, --kv-page),
 * their parsing and usage text, and what they open: the backend, the streamer's options, the KV format.
 */
#ifndef FERRY_RUN_OPTS_H
#define FERRY_RUN_OPTS_H

#include <stdint.h>
#include <stdio.h>

#include "backend/backend.h"
#include "engine/model.h"

struct run_opts {
	const char *device, *io; /* "auto" unless given */
	const char *kv;          /* NULL: the backend's default format */
	int threads, kv_page;    /* 0: all cores; the model's default page */
	int64_t ram, vram;       /* -1: half of physical memory; all that is free */
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
};
#define RUN_OPTS_LONG                                                                                             \
	{"kv", required_argument, 0, RUN_OPT_KV}, {"kv-page", required_argument, 0, RUN_OPT_KV_PAGE},            \
	{"ram", required_argument, 0, RUN_OPT_RAM}, {"io", required_argument, 0, RUN_OPT_IO},                    \
	{"threads", required_argument, 0, RUN_OPT_THREADS}, {"device", required_argument, 0, RUN_OPT_DEVICE},    \
	{"vram", required_argument, 0, RUN_OPT_VRAM}

void run_opts_default(struct run_opts *o);
/* Takes getopt's code c and its argument: 0 when c was one of these options, 1 when it is not, 2 after
 * printing a bad value. */
int run_opts_parse(struct run_opts *o, int c, const char *arg);
/* After parsing: 0, or 2 after printing what is wrong. */
int run_opts_check(const struct run_opts *o);
void run_opts_usage(FILE *f);

/* Opens the backend --device asks for (cuda needs this build to have CUDA and a GPU; auto takes one if there
 * is) and fills mo's streamer options (--ram, --io) and KV format and page (--kv: -EINVAL when the backend's
 * attention cannot read it, --kv-page). */
int run_opts_backend(const struct run_opts *o, struct model_opts *mo, struct backend **b, char *err, size_t errlen);
/* Writes a command's result o (a json_t) to path (--stats-json, --json: opt), through a temporary name;
 * 0, or -EIO after printing why. */
struct json_t;
int run_opts_json_write(const struct json_t *o, const char *path, const char *opt);
/* GPUs this build can see: "none", or the first one's description. */
const char *run_opts_gpu_desc(char *buf, size_t n);

#endif
