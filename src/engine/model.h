/*
 * model.h: the forward pass of Llama-family models (Llama, Mistral, Qwen2) and Gemma 3 over a model.ferry,
 * layer-major: all T tokens of a step, from any number of sequences, go through layer L before layer L+1
 * is read. The model owns its run state in backend memory (activations for up to t_max tokens, the paged
 * KV cache: src/engine/kvcache.h, src/kernels/kv_pages.h) and reads weights through the I/O streamer.
 */
#ifndef FERRY_MODEL_H
#define FERRY_MODEL_H

#include <stdio.h>

#include "backend/backend.h"
#include "engine/kv_host.h"
#include "engine/kvcache.h"
#include "engine/plan.h"
#include "layout/arch.h"
#include "layout/layout.h"
#include "engine/rope.h"
#include "io/stream.h"
#include "engine/weights.h"

/* Weights of one layer, bound to a slot for the duration of a step: the tensors of the architecture's rows
 * (src/layout/arch.c) by their slot; a slot the model has no tensor for has data NULL. The named members
 * are the slots of enum arch_slot, in its order (checked below). */
struct layer_weights {
	union {
		struct tensor slot[ARCH_SLOT_COUNT];
		struct {
			struct tensor attn_norm;            /* (D) */
			struct tensor wq, wk, wv, wo;       /* (H*Dh, D) (Hkv*Dh, D) (Hkv*Dh, D) (D, H*Dh) */
			struct tensor bq, bk, bv, bo;       /* biases */
			struct tensor q_norm, k_norm;       /* (Dh) per-head RMSNorm of q and k (Gemma 3) */
			struct tensor post_attn_norm;       /* (D) RMSNorm of the attention output (Gemma 3) */
			struct tensor ffn_norm;             /* (D) */
			struct tensor w_gate, w_up, w_down; /* (F, D) (F, D) (D, F) */
			struct tensor b_gate, b_up, b_down;
			struct tensor post_ffw_norm;        /* (D) RMSNorm of the MLP output (Gemma 3) */
			struct tensor router;               /* (E, D) mixture of experts */
			struct tensor w_gate_exps, w_up_exps, w_down_exps; /* E x (Fe, D) (Fe, D) (D, Fe): rows
								* and cols of one expert, the experts stacked */
			struct tensor shexp_gate_inp;       /* (1, D) the shared expert's gate (Qwen2-MoE) */
			struct tensor w_gate_shexp, w_up_shexp, w_down_shexp; /* (Fs, D) (Fs, D) (D, Fs) */
			struct tensor attn_sinks;           /* (H) F32 sink logit per query head (gpt-oss) */
			struct tensor b_router;             /* (E) the router's bias (gpt-oss) */
			struct tensor b_gate_exps, b_up_exps, b_down_exps; /* E x (Fe) (Fe) (D) the experts' biases */
		};
	};
	/* act-order linears stored with permuted columns (issue 19): perm[s] the F32 (cols) indices of slot s's
	 * column order (tensor "NAME.perm" beside "NAME.weight"; data NULL: none), perm_key[s] its content's
	 * identity (equal keys: equal permutations, so q, k, v sharing one gather their input once) */
	struct tensor perm[ARCH_SLOT_COUNT];
	uint64_t perm_key[ARCH_SLOT_COUNT];
};
#define LAYER_SLOT(member, s)                                                                         \
	_Static_assert(offsetof(struct layer_weights, member) == (s) * sizeof(struct tensor), #member \
		       " is not slot " #s)
LAYER_SLOT(attn_norm, ARCH_SLOT_ATTN_NORM);
LAYER_SLOT(wq, ARCH_SLOT_WQ);
LAYER_SLOT(wk, ARCH_SLOT_WK);
LAYER_SLOT(wv, ARCH_SLOT_WV);
LAYER_SLOT(wo, ARCH_SLOT_WO);
LAYER_SLOT(bq, ARCH_SLOT_BQ);
LAYER_SLOT(bk, ARCH_SLOT_BK);
LAYER_SLOT(bv, ARCH_SLOT_BV);
LAYER_SLOT(bo, ARCH_SLOT_BO);
LAYER_SLOT(q_norm, ARCH_SLOT_Q_NORM);
LAYER_SLOT(k_norm, ARCH_SLOT_K_NORM);
LAYER_SLOT(post_attn_norm, ARCH_SLOT_POST_ATTN_NORM);
LAYER_SLOT(ffn_norm, ARCH_SLOT_FFN_NORM);
LAYER_SLOT(w_gate, ARCH_SLOT_W_GATE);
LAYER_SLOT(w_up, ARCH_SLOT_W_UP);
LAYER_SLOT(w_down, ARCH_SLOT_W_DOWN);
LAYER_SLOT(b_gate, ARCH_SLOT_B_GATE);
LAYER_SLOT(b_up, ARCH_SLOT_B_UP);
LAYER_SLOT(b_down, ARCH_SLOT_B_DOWN);
LAYER_SLOT(post_ffw_norm, ARCH_SLOT_POST_FFW_NORM);
LAYER_SLOT(router, ARCH_SLOT_ROUTER);
LAYER_SLOT(w_gate_exps, ARCH_SLOT_W_GATE_EXPS);
LAYER_SLOT(w_up_exps, ARCH_SLOT_W_UP_EXPS);
LAYER_SLOT(w_down_exps, ARCH_SLOT_W_DOWN_EXPS);
LAYER_SLOT(shexp_gate_inp, ARCH_SLOT_SHEXP_GATE_INP);
LAYER_SLOT(w_gate_shexp, ARCH_SLOT_W_GATE_SHEXP);
LAYER_SLOT(w_up_shexp, ARCH_SLOT_W_UP_SHEXP);
LAYER_SLOT(w_down_shexp, ARCH_SLOT_W_DOWN_SHEXP);
LAYER_SLOT(attn_sinks, ARCH_SLOT_ATTN_SINKS);
LAYER_SLOT(b_router, ARCH_SLOT_B_ROUTER);
LAYER_SLOT(b_gate_exps, ARCH_SLOT_B_GATE_EXPS);
LAYER_SLOT(b_up_exps, ARCH_SLOT_B_UP_EXPS);
LAYER_SLOT(b_down_exps, ARCH_SLOT_B_DOWN_EXPS);
_Static_assert(offsetof(struct layer_weights, perm) == ARCH_SLOT_COUNT * sizeof(struct tensor), "a slot without a member");
#undef LAYER_SLOT

/* A sequence's uncommitted token tree: n tokens at scratch positions len .. len+n-1 past its committed len
 * (src/kernels/kv_pages.h), each with its parent (-1: a child of the committed context), its depth and
 * its ancestor mask. */
struct model_tree {
	int n;
	short parent[KV_TREE_MAX], depth[KV_TREE_MAX];
	uint32_t mask[KV_TREE_MAX][KV_TREE_WORDS];
};

/* The run state on one backend, in its memory: x has t_rows rows, the others t_sub. */
struct model_rs {
	struct backend *b;
	int t_rows, t_sub;
	float *x;              /* (T, D) residual stream */
	float *h;              /* (S, D) normed */
	float *q, *att;        /* (S, H*Dh) */
	float *k, *v;          /* (S, Hkv*Dh) */
	float *g, *u;          /* (S, max(F, Fe, Fs)) */
	float *rl;             /* (S, E) router logits (mixture of experts; NULL otherwise) */
	float *xe, *ye;        /* (S, D) one expert's tokens in, its output */
	float *logits;         /* (max_logits, V) */
	float *lp;             /* (min(S, max_logits), head_rows) a head piece's logits (opt.head_rows > 0) */
	float *xp;             /* (S, max(D, H*Dh, F)) gathered inputs of permuted linears where the free buffer at
				* the call is narrower (allocated only then); NULL otherwise */
	const float *px_src;   /* what the last matmul_in gathered: its input, permutation key and buffer */
	const float *px_buf;
	uint64_t px_key;
};

/* Mixtures of experts, measured: per (step, layer) the union of the experts the step's tokens chose, their
 * bytes next to the layers' whole expert regions, and (a device) how many experts were uploaded: the rest
 * of the chosen ones were already in the layer's device image (a resident layer, or a slot still holding
 * its layer). */
struct model_moe_stats {
	uint64_t tokens;       /* tokens stepped */
	uint64_t routed;       /* (token, layer, expert) choices */
	uint64_t layer_steps;  /* (step, layer) pairs */
	uint64_t union_experts; /* sum over them of the distinct experts chosen */
	uint64_t union_bytes;  /* those experts' bytes (one expert: its gate, up and down) */
	uint64_t all_bytes;    /* every expert's bytes of the same layers */
	uint64_t uploads;      /* experts uploaded (weights_experts; 0 on the CPU and with FERRY_MOE_WHOLE=1) */
	bool routed_uploads;   /* a device uploading routed experts only */
	/* the expert cache (weights.h): entries, routed lookups found there and not, fills, evictions, refusals */
	int cache_entries;
	uint64_t cache_hits, cache_misses, cache_fills, cache_evictions, cache_refused;
	uint64_t expert_h2d;   /* bytes of experts uploaded (routed and predicted) */
	/* prediction: (step, layer)s predicted, their routed experts, of those the predicted ones, guesses made,
	 * experts uploaded on a guess */
	uint64_t pred_layers, pred_routed, pred_right, pred_guessed, pred_uploads;
	/* --moe-cpu (moe_cpu.h): its mode, device ranges it weighed, of them those with experts computed on the
	 * host, and those experts (per range: an expert of two ranges counts twice) */
	int cpu_mode;
	uint64_t cpu_ranges, cpu_split_ranges, host_experts;
};

/* What hybrid steps took, measured (host: wall time in host units' ops, their syncs included). */
struct model_hybrid_stats {
	uint64_t steps, tokens;
	double sec, host_sec;
};

/* The inputs of a layer's matmuls (ferry imatrix): which matrices each feeds. */
enum model_tap {
	MODEL_TAP_ATTN_IN,  /* attn_q, attn_k, attn_v: the normed residual (S, D) */
	MODEL_TAP_ATTN_OUT, /* attn_output: the attention's output (S, H*Dh) */
	MODEL_TAP_FFN_IN,   /* ffn_gate, ffn_up: the normed residual (S, D) */
	MODEL_TAP_FFN_DOWN, /* ffn_down: the GLU's output (S, F) */
	MODEL_TAP_OUTPUT,   /* the output matrix (layer = L): the normed rows whose logits are asked for */
	MODEL_TAP_COUNT
};
/* Called with each such input on the host, x [n, cols] row-major, before its matmuls; nonzero fails the
 * step (err: "tap failed"). */
typedef int (*model_tap_fn)(void *ctx, int layer, enum model_tap which, const float *x, int n, int64_t cols);

struct model {
	const struct layout *lay;
	const struct layout_hparams *hp;
	struct backend *b;     /* the device (or the host, on a machine without one) */
	struct backend *hb;    /* hybrid steps: the host backend of the units plan.on_host marks (NULL: none) */
	struct plan plan;      /* its memory plan (owned) */
	struct model_opts opt; /* the plan's options, defaults filled in */
	struct io_stream *io;
	struct weights w;
	struct kv_cache kc;    /* pages and page tables */
	struct kv_host kvh;    /* pools of host layers */
	struct kv_layer *kv;   /* [L] */
	int n_pages[KVC_GROUPS_MAX];
	uint64_t kv_bytes;     /* backend memory of the KV pools */
	/* the current step, host */
	int *tokens, *pos, *part_t0, *part_row; /* [t_max], [t_max], [t_max + 1], [t_max] */
	int *part_span;        /* [t_max] positions past each part's committed length the step writes through */
	int *lpos, *tree_base; /* [t_max] token trees (src/kernels/kv_pages.h) */
	uint32_t *tree_mask;   /* [t_max * KV_TREE_WORDS] */
	bool has_tree;         /* the current step has a tree part */
	struct model_tree *tree; /* [max_seqs] each sequence's uncommitted token tree */
	int n_parts;
	struct model_rs rs[2]; /* [0] on b (t_max rows), [1] on hb (plan.hybrid_t_max rows) */
	bool last_hybrid;
	struct model_hybrid_stats hyb;
	struct rope_freqs rope;       /* of the current step */
	struct rope_freqs rope_local; /* of the current step, sliding-window layers (when hp->has_rope_local) */
	void *embed_rows;      /* host, (T, D) in the embedding's format */
	model_tap_fn tap;      /* NULL: none (model_set_tap) */
	void *tap_ctx;
	float *tap_host;       /* device backends: the tapped rows downloaded, (t_sub, max(D, H*Dh, F)) */
	/* mixture of experts, host: a range's routing [t_sub x K] and the same grouped by expert */
	int *moe_ids, *moe_rows, *moe_start; /* moe_start [E + 1] */
	float *moe_w, *moe_rw;
	bool *moe_used;        /* [E] the experts the current step chose in the current layer */
	int *pred_ids;         /* [t_sub x K] the next layer's router applied to this layer's input */
	float *pred_w;
	bool *pred_used;       /* [2][E] the experts guessed for layer pred_layer[l % 2] (-1: none): layer l's guess is
				* still counted (moe_count) after layer l + 1's is made, during layer l */
	int pred_layer[2];
	bool predict;          /* FERRY_MOE_PREDICT=0 turns it off */
	/* --moe-cpu (moe_cpu.h): the host backend computing a device range's missing experts (NULL: off), the
	 * rates the auto mode splits by (has_xr false: none), the device's buffer of a range's expert outputs
	 * (opt.moe_cpu_t x K rows of D, host experts' first) and the host's (the normed rows it downloads, an
	 * expert's inputs and activations, its outputs); per range: the experts the host takes, where each
	 * expert's rows start in the buffer, each token's rows in ascending expert order with their weights */
	struct backend *xb;
	struct plan_rates xr;
	bool has_xr;
	float *xp_dev;
	float *xh_h, *xh_xe, *xh_g, *xh_u, *xh_p;
	bool *x_host, *x_present;  /* [E] */
	int *x_base, *x_cnt;       /* [E], [2E] */
	int *x_idx, *x_ident;      /* [moe_cpu_t * K], [moe_cpu_t] */
	float *x_w;                /* [moe_cpu_t * K] */
	struct model_moe_stats moe;
	FILE *routes;          /* FERRY_ROUTES: every token's experts, a line per layer and token */
};

/* Makes the model of lay on backend b as plan p says (plan_make on the same lay and b), reading weights
 * through a streamer opened with io. hb: the host backend of hybrid steps when p->n_on_host > 0, and of
 * --moe-cpu's host experts when p->moe_cpu is not off and p->opt.moe_cpu_t > 0 (NULL
 * otherwise; the caller keeps it). Takes p (it is zeroed, success or not: model_free frees it).
 *
 * A hybrid step (at most p->hybrid_t_max tokens) runs each unit on the backend its placement names; the
 * residual stream crosses (download or upload of T rows) where consecutive units change sides, and the
 * device streams its units meanwhile. Larger steps run every unit on b. */
int model_init(struct model *m, const struct layout *lay, struct backend *b, struct backend *hb, struct plan *p,
	       const struct io_opts *io, char *err, size_t errlen);
/* --moe-cpu auto's rates (plan.moe_cpu, moe_cpu.h): a device range's missing experts split by them (without
 * them auto computes every expert on the device). */
void model_moe_rates(struct model *m, const struct plan_rates *r);
void model_free(struct model *m);

/* What the model has moved so far, and where its memory went. */
struct model_stats {
	uint64_t h2d_bytes;        /* weight bytes uploaded to the device */
	uint64_t kv_h2d, kv_d2h;   /* KV bytes streamed up and written back (host layers) */
	uint64_t kv_bytes;         /* backend memory of the KV pools */
	int kv_host_layers, n_slots;
	struct io_stats io;        /* the layer streamer's */
	struct model_hybrid_stats hyb;
	struct model_moe_stats moe;
};
void model_stats(const struct model *m, struct model_stats *st);

/* The KV page pools, for admission: groups of layers sharing page tables (one per window), the pages of
 * group g's pool, and the pages a sequence of len positions needs in it at most. */
int model_kv_groups(const struct model *m);
int model_kv_pool(const struct model *m, int g);
int model_kv_pages_for(const struct model *m, int g, int len);

/* Sequences. A sequence is a row of the KV cache's page tables; it holds the KV of the tokens stepped
 * through it so far, up to opt.ctx positions. model_seq_open starts one; when prompt is
 * given (n_prompt > 0) and an earlier sequence's prompt began with the same whole pages, those pages are
 * shared and *n_cached says how many prompt tokens are already in place (the caller steps the rest, from
 * prompt + *n_cached; always fewer than n_prompt, so the last prompt token is computed and has logits).
 * Returns -ENOSPC when every sequence row is in use. */
int model_seq_open(struct model *m, const int *prompt, int n_prompt, int *seq, int *n_cached, char *err,
		   size_t errlen);
void model_seq_close(struct model *m, int seq);

/* A step: the n tokens of each part go through every layer together (layer-major: each layer's weights
 * are read once per step), part i's tokens at the positions after those its sequence holds; at most one part
 * per sequence, at most opt.t_max tokens in all. Each part asks for the logits of its last n_logits tokens
 * (0..n). Output rows follow part order.
 *
 * A tree part (parent non-NULL) extends its sequence's uncommitted token tree (struct model_tree): token j
 * becomes tree token n_tree + j, child of tree token parent[j] (< n_tree + j; -1: of the committed
 * context), at logical position len + its depth; it sees the committed context and its ancestors only. A
 * tree grows over several steps (a draft model's chain) and does not advance the sequence: model_seq_commit
 * keeps one path of it. A plain part of a sequence whose tree is not committed is refused. */
struct model_part {
	int seq;
	int n;
	const int *tokens; /* host [n] */
	int n_logits;
	const int *parent; /* host [n], or NULL: a plain part */
};
struct model_out {
	float *logits;     /* host [rows, V]; used when k == 0 */
	int k;             /* > 0: only the k (<= 1024) largest logits of each row, selected by the backend */
	float *top_vals;   /* host [rows, k], each row sorted descending (ties: lower id first) */
	int *top_idx;
};
/* Fails with -ENOSPC (and changes nothing but dropping the step's sequences' uncommitted trees) when the
 * KV cache has no free page for the step's tokens. */
/* Every later step hands the inputs of its matmuls to fn (NULL: stop); 0 or -ENOMEM. */
int model_set_tap(struct model *m, model_tap_fn fn, void *ctx);

int model_step(struct model *m, const struct model_part *parts, int n_parts, const struct model_out *out,
	       char *err, size_t errlen);
/* Keeps path[0 .. n-1] of seq's token tree (tree indices, a root first, each the parent of the next) as the
 * sequence's next n positions (their KV moved into place, rows of other branches never visible again) and
 * drops the rest of the tree; n = 0 drops it all. -EINVAL when path is not such a path. */
int model_seq_commit(struct model *m, int seq, const int *path, int n, char *err, size_t errlen);
/* Tokens in seq's uncommitted tree. */
int model_seq_tree(const struct model *m, int seq);

#endif
