/*
 * plan.h: the memory plan of a model (where its memory goes; the streamer's unit plan, io/unit_plan.h, is
 * another thing), made by engine_open before anything is loaded. From the device budget (the backend's
 * arena, what is left of --vram after the CUDA context) it decides:
 *   - the KV cache (paged, in the --kv format: max_seqs sequences of --ctx positions, window layers only
 *     what their window needs), the activations and the op workspace, which grow
 *     with the tokens per op (t_sub: a step's tokens run through each layer in ranges of t_sub);
 *   - the number of weight slots (3 when they fit, at least 2) of the largest unit each;
 *   - which units (layers, head) stay resident in device memory with what is left;
 * and refuses an impossible budget with the numbers. Host-memory backends get a plan with no device part.
 */
#ifndef FERRY_PLAN_H
#define FERRY_PLAN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "backend/backend.h"
#include "layout/layout.h"
#include "engine/kvcache.h"

/* What a model is made with: the shape of its steps and of its KV cache. */
struct model_opts {
	int t_max;      /* most tokens per step */
	int t_sub;      /* most tokens per op: a layer runs the step in ranges of t_sub tokens, so activations
			 * other than the residual stream are sized by t_sub (0: t_max) */
	int max_logits; /* most logits rows a step returns (1 for generation, t_max to dump all) */
	int ctx;        /* most positions of a sequence */
	int max_seqs;   /* sequences open at once (1 when 0) */
	int kv_fmt;     /* enum kv_fmt (src/kernels/kv_pages.h) */
	int kv_page;    /* positions per KV page (a multiple of 64; 0: 256) */
	int kv_pages;   /* pages in the pool of full-attention layers (0: max_seqs x ctx worth); sliding-window
			 * layers get what their window needs */
};

/* Backend memory of the run state (activations and KV cache) for these options, as model_init allocates it. */
struct model_mem {
	int n_groups;
	int windows[KVC_GROUPS_MAX], n_pages[KVC_GROUPS_MAX]; /* the KV page pools */
	uint64_t act;    /* activations and logits */
	uint64_t kv;     /* KV cache in backend memory: device layers' pools, and the staging of host layers */
	uint64_t kv_host;/* KV pools in pinned host memory */
	uint64_t ws;     /* the backend's workspace (reserve) */
};
/* kv_host: [L] layers whose KV pools stay in pinned host memory (NULL: none). */
void model_mem_plan(const struct layout_hparams *hp, struct backend *b, const struct model_opts *o, const bool *kv_host,
		    struct model_mem *mm);

struct plan {
	struct model_opts opt;          /* what the model is made with: the request, with the tokens per op
					 * (t_sub), the sequences in flight and (t_max_auto) the step cut to fit */
	bool device;
	int64_t budget, context, arena; /* --vram, the CUDA context's share, the arena */
	int64_t avail;                  /* what the plan may use of the arena */
	struct model_mem mem;           /* activations, KV cache, workspace */
	uint64_t slot_bytes;
	int n_slots, n_units, n_resident;
	uint64_t resident_bytes, units_bytes;
	bool *resident;                 /* [n_units] units kept in device memory */
	bool *kv_host;                  /* [L] layers whose KV pools stay in pinned host memory (kv_host.h) */
	int n_kv_host;
	uint64_t stream_bytes;          /* uploaded per step: units that are not resident */
	uint64_t total;                 /* everything the plan allocates from the arena */
	int ctx_fit[KV_FMT_COUNT]; /* device: the longest --ctx each KV format fits with everything else as planned (0: none) */
};

/* The plan for a model made with the options `want` (t_max, max_logits, ctx, max_seqs, kv_fmt, kv_page,
 * kv_pages; t_sub is chosen here) on backend b. stream_all: no unit resident even when the budget would
 * hold it (benchmarks and tests of the streaming path). t_max_auto: the step may be cut (to no less than
 * 64 or max_seqs) when the budget cannot hold it. kv_host: every layer's KV in pinned host memory
 * (otherwise only when the device cannot hold it: before the sequences in flight are cut). p owns its
 * arrays (plan_free), until model_init takes it. */
int plan_make(struct plan *p, const struct layout *lay, struct backend *b, const struct model_opts *want,
	      bool stream_all, bool t_max_auto, bool kv_host, char *err, size_t errlen);
void plan_print(FILE *f, const struct plan *p);
void plan_free(struct plan *p);

#endif
