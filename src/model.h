/*
 * model.h: the forward pass of Llama-family models (Llama, Mistral, Qwen2) and Gemma 3 over a model.ferry,
 * layer-major: all T
 * tokens of a step go through layer L before layer L+1 is read. The model owns its run state (activations
 * for up to t_max tokens, the KV cache of capacity tokens) in backend memory, and reads weights through
 * the I/O streamer.
 */
#ifndef FERRY_MODEL_H
#define FERRY_MODEL_H

#include "backend.h"
#include "layout.h"
#include "rope.h"
#include "stream.h"
#include "weights.h"

struct model_opts {
	int t_max;      /* most tokens per step */
	int t_sub;      /* most tokens per op: a layer runs the step in ranges of t_sub tokens, so activations
			 * other than the residual stream are sized by t_sub (0: t_max) */
	int max_logits; /* most logits rows a step returns (1 for generation, t_max to dump all) */
	int capacity; /* KV cache tokens */
	struct io_opts io; /* the layer streamer: slots, RAM tier, engine */
	int n_slots;          /* device backends: weight slots (>= 2 unless every unit is resident) */
	const bool *resident; /* device backends: [L + 1] units kept in device memory, NULL none */
};

/* Backend memory of the run state (activations and KV cache) for these options, as model_init allocates it. */
struct model_mem {
	uint64_t act;    /* activations and logits */
	uint64_t kv;     /* KV cache, all layers */
	uint64_t ws;     /* the backend's workspace (reserve) */
};
void model_mem_plan(const struct layout_hparams *hp, struct backend *b, const struct model_opts *o, struct model_mem *mm);

/* Weights of one layer, bound to a slot for the duration of a step. */
struct layer_weights {
	struct tensor attn_norm;                    /* (D) */
	struct tensor wq, wk, wv, wo;               /* (H*Dh, D) (Hkv*Dh, D) (Hkv*Dh, D) (D, H*Dh) */
	struct tensor bq, bk, bv, bo;               /* biases, data NULL when absent */
	struct tensor q_norm, k_norm;               /* (Dh) per-head RMSNorm of q and k (Gemma 3), or absent */
	struct tensor post_attn_norm;               /* (D) RMSNorm of the attention output (Gemma 3), or absent */
	struct tensor ffn_norm;                     /* (D) */
	struct tensor post_ffw_norm;                /* (D) RMSNorm of the MLP output (Gemma 3), or absent */
	struct tensor w_gate, w_up, w_down;         /* (F, D) (F, D) (D, F) */
	struct tensor b_gate, b_up, b_down;
};

struct model {
	const struct layout *lay;
	const struct layout_hparams *hp;
	struct backend *b;
	struct io_stream *io;
	struct weights w;
	struct model_opts opt;
	struct kv_layer *kv;   /* [L] */
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
/* Runs T tokens at positions pos (host arrays); writes the logits of the last n_logits tokens into the
 * host array logits [n_logits, V] (n_logits in 0..T). */
int model_forward(struct model *m, const int *tokens, const int *pos, int T, int n_logits, float *logits, char *err,
		  size_t errlen);
/* The same step, returning only the k (1..1024) largest logits of the last token, sorted descending (ties:
 * lower id first), selected on the device; for backends with a top_k op. */
int model_forward_top(struct model *m, const int *tokens, const int *pos, int T, int k, float *vals, int *idx,
		      char *err, size_t errlen);

#endif
