/*
 * plan.h: the memory planner of `ferry run`. From the device budget (the backend's arena, what is left of
 * --vram after the CUDA context) it decides, before anything is loaded:
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
#include "engine/model.h"

struct plan {
	bool device;
	int64_t budget, context, arena; /* --vram, the CUDA context's share, the arena */
	int64_t avail;                  /* what the plan may use of the arena */
	struct model_mem mem;           /* activations, KV cache, workspace */
	uint64_t slot_bytes;
	int n_slots, n_units, n_resident;
	uint64_t resident_bytes, units_bytes;
	bool *resident;                 /* [n_units] */
	bool *kv_host;                  /* [L] layers whose KV pools stay in pinned host memory (kv_host.h) */
	int n_kv_host;
	uint64_t stream_bytes;          /* uploaded per step: units that are not resident */
	uint64_t total;                 /* everything the plan allocates from the arena */
	int t_max, t_sub, ctx, max_seqs, kv_fmt;
	int ctx_fit[KV_FMT_COUNT]; /* device: the longest --ctx each KV format fits with everything else as planned (0: none) */
};

/* Fills p and o->t_sub, o->n_slots, o->resident (pointing into p) from o->t_max, o->max_logits, o->ctx,
 * the KV options and the backend's memory. stream_all: no unit resident even when the budget would hold it
 * (benchmarks and tests of the streaming path). t_max_auto: o->t_max may be lowered (to no less than 64 or
 * max_seqs) when the budget cannot hold it. kv_host: every layer's KV in pinned host memory (otherwise only
 * when the device cannot hold it: before the sequences in flight are cut). */
int plan_make(struct plan *p, const struct layout *lay, struct backend *b, struct model_opts *o, bool stream_all,
	      bool t_max_auto, bool kv_host, char *err, size_t errlen);
void plan_print(FILE *f, const struct plan *p);
void plan_free(struct plan *p);

#endif
