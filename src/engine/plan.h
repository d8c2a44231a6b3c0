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
	int64_t head_rows; /* a streamed head's output matrix goes in pieces of this many rows (weights.h; 0:
			    * whole); the device computes a piece's logits into a (min(t_sub, max_logits), head_rows)
			    * buffer and copies them into their columns */
	int moe_cpu_t;  /* --moe-cpu: ranges of at most this many tokens may have experts computed on the host
			 * (moe_cpu.h); the device keeps their partial outputs in a buffer of this many x K rows (0: none) */
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
	int head_pieces;                /* a streamed head in pieces of opt.head_rows rows (1: whole) */
	uint64_t head_bytes, piece_bytes; /* the whole head's device bytes, a piece's (head_pieces > 1) */
	uint64_t resident_bytes, units_bytes;
	bool *resident;                 /* [n_units] units kept in device memory */
	bool *kv_host;                  /* [L] layers whose KV pools stay in pinned host memory (kv_host.h) */
	int n_kv_host;
	uint64_t stream_bytes;          /* uploaded per step: units that are not resident */
	int expert_cache;               /* entries of the device expert cache (weights.h), each expert_bytes */
	uint64_t expert_bytes;
	uint64_t router_bytes;          /* the streamed layers' routers kept on the device with the cache */
	/* Hybrid placement (place.c): with a host backend beside a device, steps of at most hybrid_t_max tokens
	 * run the units on_host marks on the host backend, from the RAM tier, while the device streams the
	 * others; larger steps run every unit on the device. A host layer keeps its KV pools in pinned host
	 * memory (kv_host), so either side can run it. */
	bool *on_host;                  /* [n_units] (all false: no hybrid steps) */
	int n_on_host;
	uint64_t host_bytes;            /* weights the host backend reads per hybrid step */
	int hybrid_t_max;
	int moe_cpu;                    /* enum moe_cpu_mode (moe_cpu.h): experts missing from the device computed
					 * on the host in ranges of at most opt.moe_cpu_t tokens */
	int moe_cpu_k;                  /* the experts a token routes to (K), and of them, none on the device: */
	int moe_cpu_host1;              /* how many the host takes in a 1-token range */
	int moe_cpu_host_t;             /* in an opt.moe_cpu_t-token range (every expert chosen, tokens even) */
	double pred_hybrid, pred_device; /* predicted seconds of a 1-token step, hybrid and all on the device (0: not predicted) */
	uint64_t total;                 /* everything the plan allocates from the arena */
	/* bits per weight: of every tensor of the model (the embedding's included, a tied head once), and per
	 * unit (stored bits and values of its tensors) for what a placement streams (plan_bpw) */
	double bpw_model;
	uint64_t *unit_bits, *unit_values; /* [n_units] */
	int ctx_fit[KV_FMT_COUNT]; /* device: the longest --ctx each KV format fits with everything else as planned (0: none) */
};

/* Bits per weight of the units a step streams to the device (which: 's'), reads on the host ('h') or keeps
 * resident ('r'); 0 when there are none. */
double plan_bpw(const struct plan *p, char which);

/* The plan for a model made with the options `want` (t_max, max_logits, ctx, max_seqs, kv_fmt, kv_page,
 * kv_pages; t_sub is chosen here) on backend b. stream_all: no unit resident even when the budget would
 * hold it (benchmarks and tests of the streaming path). t_max_auto: the step may be cut (to no less than
 * 64 or max_seqs) when the budget cannot hold it. kv_host: every layer's KV in pinned host memory
 * (otherwise only when the device cannot hold it: before the sequences in flight are cut). on_host:
 * [n_units] units the host backend computes in hybrid steps (NULL: none; never resident; a device plan
 * keeps their KV in pinned host memory). p owns its arrays (plan_free), until model_init takes it. */
int plan_make(struct plan *p, const struct layout *lay, struct backend *b, const struct model_opts *want,
	      bool stream_all, bool t_max_auto, bool kv_host, const bool *on_host, char *err, size_t errlen);

/* Measured rates the hybrid placement is chosen from (rates.c measures them, place.c uses them). Rates are
 * weight bytes per second of a layer's matmuls. The two paths read the same memory, so each has a rate alone
 * and one "busy", while the other runs: place.c applies the host's busy rate to the part of its work that
 * overlaps copies in flight, and the copies' busy rate to those issued while the host works through a run. */
#define RATES_NT 4 /* token counts the compute rates are measured at: 1, 2, 4, 8 */
#define RATES_T 8  /* the largest of them */
#define RATES_NO_LINK 1e15 /* h2d of a host-memory first backend: nothing is copied */
struct plan_rates {
	double h2d, h2d_busy;          /* pinned host -> device copies: alone, and while the host computes */
	double host[RATES_NT];         /* the host backend at 1, 2, 4, 8 tokens, alone */
	double host_busy;              /* at 1 token while copies run (host[] scaled by host_busy / host[0]) */
	double dev[RATES_NT];          /* the device at 1, 2, 4, 8 tokens, weights in device memory */
	double host_exp[RATES_NT];     /* the host on the routed experts' matrices (their formats and shapes) at
					* 1, 2, 4, 8 tokens; a model without experts: host[] */
	double cross;                  /* seconds to move the residual stream across the bus and sync */
};
/* The token count of host[i] and dev[i] */
static inline int rates_t_of(int i)
{
	return 1 << i;
}
/* Seconds per byte at T tokens from a rate measured at 1, 2, 4, 8 tokens (place.c: linear in T between
 * them, the last slope beyond, never falling). */
double plan_spb_at(const double rate[RATES_NT], int T);
/* A predicted step cut into its parts (seconds of the steady state's last step): the host's compute (its
 * units' matmuls), the copy queue's uploads, the device's compute, and the step's wall time. */
struct plan_parts {
	double host, upload, dev, step;
};
/* The placement `mode` asks for: "gpu" (none on the host), "cpu" (every unit), a list of units ("0-9,
 * 20,head": layer numbers and ranges, "head" for the output unit), or "auto" (r needed: the on_host set and
 * hybrid_t_max that minimise the predicted step time for the plan p made without hybrid). Fills on_host
 * [n_units] and *t_max (hybrid_t_max; LIST and cpu: 16). */
int plan_place(const struct plan *p, const struct layout *lay, const struct plan_rates *r, const char *mode,
	       bool *on_host, int *t_max, char *err, size_t errlen);
/* Predicted seconds of a step of T tokens (steady state, every sequence's KV short) for plan p: hybrid
 * (its on_host units on the host) or every unit on the device. */
double plan_predict(const struct plan *p, const struct layout *lay, const struct plan_rates *r, int T, bool hybrid);
/* plan_predict, with the step's parts in *parts (NULL: not wanted). */
double plan_predict_parts(const struct plan *p, const struct layout *lay, const struct plan_rates *r, int T,
			  bool hybrid, struct plan_parts *parts);

/* Online correction of the rates from measured hybrid steps (place.c). plan_fix_observe takes one hybrid step
 * of T tokens that took step_s seconds, host_s of them in host units, under plan p and rates fix->r. When
 * PLAN_FIX_STEPS steps in a row departed from their prediction by more than PLAN_FIX_TOL, it corrects
 * fix->r (the host's rates by measured / predicted host compute; then the link's so that the prediction meets
 * the measured steps) and returns 1: the caller re-places with plan_replace. 0 otherwise. */
#define PLAN_FIX_TOL 0.15
#define PLAN_FIX_STEPS 3
#define PLAN_FIX_MAX 4 /* re-plans at most, so a noisy machine cannot make the placement oscillate */
struct plan_fix {
	struct plan_rates r;  /* the rates predictions use now */
	int n_off;            /* consecutive steps off by more than PLAN_FIX_TOL */
	double meas_step, meas_host, pred_step, pred_host; /* summed over those steps */
	double sum_t;         /* their tokens */
	bool fixed;           /* a placement the user gave: observed, never re-placed */
	int replans, moved;   /* re-plans made, units they moved across */
	/* every observed step: predicted parts and measured step and host times, summed */
	struct plan_parts pred_sum;
	double meas_step_sum, meas_host_sum;
	long n_obs;
};
void plan_fix_init(struct plan_fix *f, const struct plan_rates *r);
int plan_fix_observe(struct plan_fix *f, const struct plan *p, const struct layout *lay, int T, double step_s,
		     double host_s);
/* Re-places p's hybrid units with rates r among the units may_host allows (NULL: every unit that is not
 * resident): sets p->on_host, n_on_host, host_bytes and hybrid_t_max (0 when no unit is worth it), and the
 * predictions. Returns whether on_host changed. */
bool plan_replace(struct plan *p, const struct layout *lay, const struct plan_rates *r, const bool *may_host);
/* Sets p->on_host to on[n_units] and its counts (n_on_host, host_bytes). */
void plan_set_host(struct plan *p, const struct layout *lay, const bool *on);
void plan_print(FILE *f, const struct plan *p);
void plan_free(struct plan *p);

#endif
