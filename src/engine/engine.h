/*
 * engine.h: a model ready to run, as every command that runs one opens it (`ferry run`, `batch`, `serve`,
 * `ppl`): the backend --device asks for, the memory plan for the budget, the model (weights through the
 * layer streamer, the paged KV cache) and the step scheduler over it. engine_open does, in this order,
 * what each command did for itself before, and engine_close undoes it; engine_stats gathers the figures
 * the commands print and write (--stats, --stats-json).
 *
 * The engine knows nothing of text: the end-of-sequence ids (the model's and its tokenizer's
 * end-of-generation tokens) are handed in.
 */
#ifndef FERRY_ENGINE_H
#define FERRY_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "backend/backend.h"
#include "engine/model.h"
#include "engine/plan.h"
#include "engine/scheduler.h"
#include "io/stream.h"
#include "layout/layout.h"

struct engine_opts {
	/* where it runs */
	const char *device;   /* "auto", "cpu" or "cuda" (NULL: auto) */
	int64_t vram;         /* CUDA: the most device memory, context included (<= 0: all that is free) */
	int threads;          /* CPU: threads (<= 0: the backend's default) */
	double h2d_limit;     /* device: uploads paced to this many GB/s, to emulate a slower link (0: none) */
	/* the layer streamer */
	int64_t ram;          /* pinned host memory for slots and the RAM tier (< 0: half of physical memory) */
	int reader;           /* enum io_reader_kind */
	/* the KV cache */
	const char *kv;       /* format name (NULL: the backend's default: f16 on a device, f32 on the host) */
	int kv_page, kv_pages;
	bool kv_host;         /* every layer's KV pools in pinned host memory (device backends) */
	/* the steps */
	int t_max, max_logits, ctx, max_seqs;
	bool t_max_auto;      /* the plan may cut t_max to fit the budget */
	bool stream_all;      /* stream every unit even when the budget could keep it resident */
	const char *placement;/* hybrid steps: "auto" (NULL), "gpu", "cpu" or a list of units (plan_place) */
	const char *moe_cpu;  /* a device's missing experts computed on the host: "auto" (NULL), "off", "all" (moe_cpu.h) */
	int top_k;            /* > 0: the scheduler lets the backend select this many logits per row */
	const int *eos;       /* end-of-sequence ids, n_eos of them (copied) */
	int n_eos;
	/* speculative steps (src/engine/spec.h): the mode and sizes, and a draft model with the same vocabulary
	 * (a model.ferry directory; NULL: none), kept resident on the device beside the target */
	struct spec_opts spec;
	const char *draft;
	bool plan_only;       /* open the backend and make the plan, nothing else (ferry run --plan) */
	bool no_sched;        /* no scheduler: the caller steps the model itself (ferry ppl) */
};

struct engine;

/* 0, or a negative errno with err filled. */
int engine_open(struct engine **e, const struct layout *lay, const struct engine_opts *o, char *err, size_t errlen);
void engine_close(struct engine *e);

const struct plan *engine_plan(const struct engine *e);
struct model *engine_model(struct engine *e);   /* NULL with plan_only */
struct sched *engine_sched(struct engine *e);   /* NULL with plan_only or no_sched */
struct backend *engine_backend(struct engine *e);
/* The rates the placement was chosen from; NULL when none were measured. */
const struct plan_rates *engine_rates(const struct engine *e);

struct engine_stats {
	const char *device;        /* the backend's name */
	int n_threads;
	struct backend_mem mem;    /* device memory (zero on the host) */
	struct model_opts opt;     /* what the model was made with */
	struct model_stats model;  /* bytes moved, KV memory, the streamer's figures */
	struct sched_stats sched;  /* steps, tokens and their time */
	int n_on_host, n_units;    /* the hybrid placement (0: none) */
	double pred_hybrid, pred_device; /* predicted seconds of a 1-token step (0: not measured) */
	double pred_mean_t;        /* predicted seconds of a hybrid step of the hybrid steps' mean tokens (0: none) */
	/* predicted seconds of a decode step of the decode steps' mean tokens, as the placement runs it (hybrid
	 * when it is at most hybrid_t_max), from the start-up rates and from the corrected ones (0: no rates) */
	double pred_decode, pred_decode_fixed;
	uint64_t host_bytes, units_bytes, stream_bytes; /* per step: the host units', every unit's, the uploads' */
	double bpw_model, bpw_stream, bpw_host; /* bits per weight: the model's, the streamed units', the host units' */
	bool has_rates;
	struct plan_rates rates;   /* what the placement was chosen from */
	bool has_fix;
	struct plan_fix fix;       /* the hybrid steps observed: predicted vs measured, re-plans, corrected rates */
	int spec_mode;             /* enum spec_mode in effect */
	double spec_alpha, spec_c0, spec_c1; /* the tree planner's acceptance and pass-cost line */
	double spec_alone[SPEC_SRC_COUNT];   /* combined: tokens a pass each source's own chain would have given */
	uint64_t draft_bytes;      /* the draft model's weights (0: none) */
};
void engine_stats(struct engine *e, struct engine_stats *st);
/* The figures every command's --stats-json shares (keys as bench/ reads them), as a new JSON object the
 * command adds its own to; NULL when out of memory. */
struct json_t *engine_stats_json(const struct engine_stats *st);
/* The speculative steps' figures (the "spec" object of --stats-json, /health and the batch summary). */
struct json_t *engine_spec_json(const struct engine_stats *st);
/* --stats: the streamer's, the backend's and the device's lines. */
void engine_stats_print(FILE *f, const struct engine_stats *st);

#endif
