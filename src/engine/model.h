/*
 * model.h: the forward pass of Llama-family models (Llama, Mistral, Qwen2) and Gemma 3 over a model.ferry,
 * layer-major: all T tokens of a step, from any number of sequences, go through layer L before layer L+1
 * is read. The model owns its run state in backend memory (activations for up to t_max tokens, the paged
 * KV cache: src/engine/kvcache.h, src/kernels/kv_pages.h) and reads weights through the I/O streamer.
 */
#ifndef FERRY_MODEL_H
#define FERRY_MODEL_H

#include "backend/backend.h"
#include "engine/kv_host.h"
#include "engine/kvcache.h"
#include "layout/arch.h"
#include "layout/layout.h"
#include "engine/rope.h"
#include "io/stream.h"
#include "engine/weights.h"

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
	struct io_opts io; /* the layer streamer: slots, RAM tier, engine */
	int n_slots;          /* device backends: weight slots (>= 2 unless every unit is resident) */
	const bool *resident; /* device backends: [L + 1] units kept in device memory, NULL none */
	const bool *kv_host;  /* device backends: [L] layers whose KV pools stay in pinned host memory and are
			       * streamed with the layer (src/engine/kv_host.h), NULL none */
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
void model_mem_plan(const struct layout_hparams *hp, struct backend *b, const struct model_opts *o, struct model_mem *mm);

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
		};
	};
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
_Static_assert(sizeof(struct layer_weights) == ARCH_SLOT_COUNT * sizeof(struct tensor), "a slot without a member");
#undef LAYER_SLOT

struct model {
	const struct layout *lay;
	const struct layout_hparams *hp;
	struct backend *b;
	struct io_stream *io;
	struct weights w;
	struct model_opts opt;
	struct kv_cache kc;    /* pages and page tables */
	struct kv_host kvh;    /* pools of host layers */
	struct kv_layer *kv;   /* [L] */
	int n_pages[KVC_GROUPS_MAX];
	uint64_t kv_bytes;     /* backend memory of the KV pools */
	/* the current step, host */
	int *tokens, *pos, *part_t0, *part_row; /* [t_max], [t_max], [t_max + 1], [t_max] */
	int n_parts;
	/* run state, backend memory: x has t_max rows, the others t_sub */
	float *x;              /* (T, D) residual stream */
	float *h;              /* (S, D) normed */
	float *q, *att;        /* (S, H*Dh) */
	float *k, *v;          /* (S, Hkv*Dh) */
	float *g, *u;          /* (S, F) */
	float *logits;         /* (max_logits, V) */
	struct rope_freqs rope;       /* of the current step */
	struct rope_freqs rope_local; /* of the current step, sliding-window layers (when hp->has_rope_local) */
	void *embed_rows;      /* host, (T, D) in the embedding's format */
	float *embed_f32;      /* host, (T, D) */
};

int model_init(struct model *m, const struct layout *lay, struct backend *b, const struct model_opts *o, char *err,
	       size_t errlen);
void model_free(struct model *m);

/* Sequences. A sequence is a row of the KV cache's page tables; it holds the KV of the tokens stepped
 * through it so far (model_seq_len), up to opt.ctx positions. model_seq_open starts one; when prompt is
 * given (n_prompt > 0) and an earlier sequence's prompt began with the same whole pages, those pages are
 * shared and *n_cached says how many prompt tokens are already in place (the caller steps the rest, from
 * prompt + *n_cached; always fewer than n_prompt, so the last prompt token is computed and has logits).
 * Returns -ENOSPC when every sequence row is in use. */
int model_seq_open(struct model *m, const int *prompt, int n_prompt, int *seq, int *n_cached, char *err,
		   size_t errlen);
void model_seq_close(struct model *m, int seq);
int model_seq_len(const struct model *m, int seq);

/* A step: the n tokens of each part go through every layer together (layer-major: each layer's weights
 * are read once per step), part i's tokens at positions model_seq_len(seq) .. + n - 1; at most one part
 * per sequence, at most opt.t_max tokens in all. Each part asks for the logits of its last n_logits tokens
 * (0..n). Output rows follow part order. */
struct model_part {
	int seq;
	int n;
	const int *tokens; /* host [n] */
	int n_logits;
};
struct model_out {
	float *logits;     /* host [rows, V]; used when k == 0 */
	int k;             /* > 0: only the k (<= 1024) largest logits of each row, selected by the backend */
	float *top_vals;   /* host [rows, k], each row sorted descending (ties: lower id first) */
	int *top_idx;
};
/* Fails with -ENOSPC (and changes nothing) when the KV cache has no free page for the step's tokens. */
int model_step(struct model *m, const struct model_part *parts, int n_parts, const struct model_out *out,
	       char *err, size_t errlen);

#endif
