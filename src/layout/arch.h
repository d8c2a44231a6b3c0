/*
 * arch.h: one description per architecture ferry runs, in one table (src/layout/arch.c): its names (the
 * hparams.arch of model.ferry, the Hugging Face class, the GGUF general.architecture), the rules its
 * hyper-parameters follow where a source leaves them out, and its tensors: ferry's name (which is GGUF's),
 * the checkpoint's name, the shape in hyper-parameter terms, required or optional, and the slot of struct
 * layer_weights (src/engine/model.h) it binds to.
 *
 * Readers: the HF converter (which tensors a checkpoint has, under which names, with which shapes; its
 * config rules), the GGUF converter (the architectures and tensors it accepts, which it requires, its rope
 * pairing), and the forward (which architectures it runs, bind_layer, the embedding and head binds).
 *
 * Order on disk: an HF conversion writes a layer's tensors in the order of the architecture's rows, a GGUF
 * conversion in slot order (enum arch_slot); tools/golden_ids.sh pins both through the files' hashes.
 */
#ifndef FERRY_ARCH_H
#define FERRY_ARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout/layout.h"

/* A dimension in hyper-parameter terms (letters of struct layout_hparams). */
enum arch_dim {
	ARCH_DIM_NONE = 0,
	ARCH_DIM_D,  /* d_model */
	ARCH_DIM_Q,  /* n_heads x head_dim */
	ARCH_DIM_KV, /* n_kv_heads x head_dim */
	ARCH_DIM_F,  /* ffn_dim */
	ARCH_DIM_DH, /* head_dim */
	ARCH_DIM_V,  /* vocab */
	ARCH_DIM_E,  /* n_experts */
	ARCH_DIM_FE, /* expert_ffn */
	ARCH_DIM_FS, /* shared_ffn: the shared expert's ffn */
	ARCH_DIM_ONE, /* 1: a matrix of one row (the shared expert's gate) */
	ARCH_DIM_H,   /* n_heads (gpt-oss's attention sinks: one per query head) */
};

/* Where a layer tensor binds: the members of struct layer_weights, in this order. The order is also the
 * order a GGUF conversion writes a layer in: append new slots after the ones an architecture already has,
 * or its GGUF conversions change bytes. */
enum arch_slot {
	ARCH_SLOT_ATTN_NORM,
	ARCH_SLOT_WQ,
	ARCH_SLOT_WK,
	ARCH_SLOT_WV,
	ARCH_SLOT_WO,
	ARCH_SLOT_BQ,
	ARCH_SLOT_BK,
	ARCH_SLOT_BV,
	ARCH_SLOT_BO,
	ARCH_SLOT_Q_NORM,
	ARCH_SLOT_K_NORM,
	ARCH_SLOT_POST_ATTN_NORM,
	ARCH_SLOT_FFN_NORM,
	ARCH_SLOT_W_GATE,
	ARCH_SLOT_W_UP,
	ARCH_SLOT_W_DOWN,
	ARCH_SLOT_B_GATE,
	ARCH_SLOT_B_UP,
	ARCH_SLOT_B_DOWN,
	ARCH_SLOT_POST_FFW_NORM,
	ARCH_SLOT_ROUTER,      /* mixture of experts: the router, and the experts' matrices stacked [E, ...] */
	ARCH_SLOT_W_GATE_EXPS,
	ARCH_SLOT_W_UP_EXPS,
	ARCH_SLOT_W_DOWN_EXPS,
	ARCH_SLOT_SHEXP_GATE_INP, /* Qwen2-MoE's shared expert: its sigmoid gate [1, D] and its MLP */
	ARCH_SLOT_W_GATE_SHEXP,
	ARCH_SLOT_W_UP_SHEXP,
	ARCH_SLOT_W_DOWN_SHEXP,
	ARCH_SLOT_ATTN_SINKS,  /* gpt-oss: a learned logit per query head in the softmax's denominator */
	ARCH_SLOT_B_ROUTER,    /* gpt-oss: the router's bias [E] and the experts' biases stacked [E, ...] */
	ARCH_SLOT_B_GATE_EXPS,
	ARCH_SLOT_B_UP_EXPS,
	ARCH_SLOT_B_DOWN_EXPS,
	ARCH_SLOT_COUNT
};

enum arch_need {
	ARCH_REQUIRED, /* every model of the architecture has it: a source without it is refused */
	ARCH_OPTIONAL, /* some have it: a GGUF file or model.ferry when it is there, an HF checkpoint when its
			* config.json sets hf_key to true */
};

struct arch_tensor {
	const char *name;       /* ferry's (and GGUF's) name; in a layer, after "blk.N." */
	const char *hf;         /* the HF checkpoint's name; in a layer, after "model.layers.N."; an expert
				 * tensor's ("%d" the expert) names one expert's matrix, the experts stacked;
				 * "NAME:even", "NAME:odd", "NAME:t": a tensor of all experts (gpt-oss), its even
				 * or odd last-dimension entries, a matrix's rows and cols swapped (from_hf.c) */
	enum arch_dim shape[3]; /* outermost first: {Q, D} a matrix [Q, D] (Linear [out, in]), {D} a vector,
				 * {E, Fe, D} the experts' [Fe, D] matrices stacked */
	enum arch_need need;
	const char *hf_key;     /* ARCH_OPTIONAL: the config.json key that says a checkpoint has it */
	bool norm;              /* an RMSNorm weight (see hf_norm_plus_one) */
	enum arch_slot slot;    /* layers: where bind_layer puts it */
};

/* How a source's hyper-parameters beyond the shared ones are read: the Llama family's (one RoPE, SiLU),
 * Gemma 3's (a second RoPE for sliding layers, GELU-tanh, score and embedding scales, logit softcap), or
 * gpt-oss's (YaRN without truncation by default, the clamped SwiGLU, every other layer sliding). */
enum arch_hparams { ARCH_HPARAMS_LLAMA, ARCH_HPARAMS_GEMMA3, ARCH_HPARAMS_GPTOSS };

/* Which layers of an HF model slide (sliding_window tokens), when config.json has no layer_types. */
enum arch_windows {
	ARCH_WINDOWS_NONE,    /* none, whatever sliding_window says (layer_types still checked) */
	ARCH_WINDOWS_ALL,     /* all, and layer_types is ignored (MistralForCausalLM) */
	ARCH_WINDOWS_GATED,   /* none unless use_sliding_window; then layer_types, else the layers from
			       * max_window_layers (default 28) on */
	ARCH_WINDOWS_PATTERN, /* layer_types, else all but every sliding_window_pattern-th (default 6) */
	ARCH_WINDOWS_ALTERNATE, /* layer_types, else the even layers (0, 2, ...) (GptOssConfig) */
};

struct arch {
	const char *name;      /* hparams.arch in manifest.json */
	const char *hf_class;  /* config.json architectures[0]; NULL: not converted from HF */
	const char *gguf;      /* general.architecture; NULL: not converted from GGUF */
	enum arch_hparams hparams;
	/* HF config.json: values where a key is absent, and rules */
	int hf_max_pos;              /* max_position_embeddings */
	int hf_head_dim;             /* head_dim; 0: hidden_size / num_attention_heads, which must divide */
	int hf_window;               /* sliding_window (null: no window) */
	bool hf_tied;                /* tie_word_embeddings */
	enum arch_windows hf_windows;
	bool hf_norm_plus_one;       /* RMSNorm multiplies by (1 + w): norm weights are stored as F32 1 + w */
	/* GGUF */
	enum rope_style gguf_rope;   /* the pairs RoPE rotates in this architecture's GGUF files */
	const struct arch_tensor *layer; /* a layer's tensors, in the order an HF conversion writes them */
	int n_layer;
	/* Mixture of experts (the layer has expert rows): the config.json keys of the expert count, experts
	 * per token and expert ffn width, and whether the chosen weights are renormalized (hf_norm_key: the
	 * key that says so, else always) */
	const char *hf_experts, *hf_used, *hf_expert_ffn, *hf_norm_key;
	const char *hf_shared_ffn; /* the shared expert's ffn width (NULL: none) */
	bool gguf_norm_topk;       /* GGUF: renormalized unless {arch}.expert_weights_norm says otherwise (llama.cpp's
				    * graph: qwen3moe and Mixtral renormalize, qwen2moe does not) */
};

extern const struct arch arch_table[];
extern const int arch_count;

/* The embedding and the head (final norm, output projection), the same for every architecture so far. */
extern const struct arch_tensor arch_token_embd, arch_output_norm, arch_output;

enum arch_key { ARCH_KEY_NAME, ARCH_KEY_HF, ARCH_KEY_GGUF };
/* The architecture of that name (ferry's, HF's class, or GGUF's), NULL when there is none. */
const struct arch *arch_find(enum arch_key key, const char *name);
/* The architecture of a GGUF general.architecture whose layers have experts (moe) or not: GGUF names
 * Mixtral "llama" with an expert count. */
const struct arch *arch_find_gguf(const char *name, bool moe);
/* Whether a's layers have experts (a router row). */
bool arch_is_moe(const struct arch *a);
/* "a, b, c": every name of that kind, in table order, for messages; buf is returned. */
const char *arch_list(enum arch_key key, char *buf, size_t n);
/* The row of a that binds to slot s, NULL when a has none. */
const struct arch_tensor *arch_slot_tensor(const struct arch *a, enum arch_slot s);
int64_t arch_dim(const struct layout_hparams *hp, enum arch_dim d);
/* t's shape for these hyper-parameters into shape (outermost first); returns the number of dims. */
int arch_shape(const struct layout_hparams *hp, const struct arch_tensor *t, int64_t shape[3]);
/* Whether t is the experts' matrices stacked ([E, rows, cols]). */
bool arch_is_experts(const struct arch_tensor *t);

#endif
