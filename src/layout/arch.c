/*
 * arch.c: the architecture table (src/layout/arch.h). A row per architecture; per architecture its layer
 * tensors, a row each, in the order an HF conversion writes them:
 *   {ferry / GGUF name, HF name, shape, required or optional (and the config.json key of an optional one),
 *    norm, slot}
 * Adding an architecture: its rows here, and in the forward (src/engine/model.c) the ops it needs that it
 * does not have yet; a slot for a tensor no architecture had before goes into enum arch_slot and struct
 * layer_weights.
 */
#include <stdio.h>
#include <string.h>

#include "layout/arch.h"

#define D ARCH_DIM_D
#define Q ARCH_DIM_Q
#define KV ARCH_DIM_KV
#define F ARCH_DIM_F
#define DH ARCH_DIM_DH
#define V ARCH_DIM_V
#define E ARCH_DIM_E
#define FE ARCH_DIM_FE
#define FS ARCH_DIM_FS
#define ONE ARCH_DIM_ONE
#define H ARCH_DIM_H
#define REQ ARCH_REQUIRED, NULL
#define IF(key) ARCH_OPTIONAL, key
#define NORM true
#define S(slot) ARCH_SLOT_##slot

const struct arch_tensor arch_token_embd = {"token_embd.weight", "model.embed_tokens.weight", {V, D}, REQ, 0, 0};
const struct arch_tensor arch_output_norm = {"output_norm.weight", "model.norm.weight", {D}, REQ, NORM, 0};
const struct arch_tensor arch_output = {"output.weight", "lm_head.weight", {V, D}, REQ, 0, 0};

/* LlamaForCausalLM: attention_bias puts biases on q, k, v and o, mlp_bias on gate, up and down. */
static const struct arch_tensor llama_layer[] = {
	{"attn_norm.weight", "input_layernorm.weight", {D}, REQ, NORM, S(ATTN_NORM)},
	{"attn_q.weight", "self_attn.q_proj.weight", {Q, D}, REQ, 0, S(WQ)},
	{"attn_q.bias", "self_attn.q_proj.bias", {Q}, IF("attention_bias"), 0, S(BQ)},
	{"attn_k.weight", "self_attn.k_proj.weight", {KV, D}, REQ, 0, S(WK)},
	{"attn_k.bias", "self_attn.k_proj.bias", {KV}, IF("attention_bias"), 0, S(BK)},
	{"attn_v.weight", "self_attn.v_proj.weight", {KV, D}, REQ, 0, S(WV)},
	{"attn_v.bias", "self_attn.v_proj.bias", {KV}, IF("attention_bias"), 0, S(BV)},
	{"attn_output.weight", "self_attn.o_proj.weight", {D, Q}, REQ, 0, S(WO)},
	{"attn_output.bias", "self_attn.o_proj.bias", {D}, IF("attention_bias"), 0, S(BO)},
	{"ffn_norm.weight", "post_attention_layernorm.weight", {D}, REQ, NORM, S(FFN_NORM)},
	{"ffn_gate.weight", "mlp.gate_proj.weight", {F, D}, REQ, 0, S(W_GATE)},
	{"ffn_gate.bias", "mlp.gate_proj.bias", {F}, IF("mlp_bias"), 0, S(B_GATE)},
	{"ffn_up.weight", "mlp.up_proj.weight", {F, D}, REQ, 0, S(W_UP)},
	{"ffn_up.bias", "mlp.up_proj.bias", {F}, IF("mlp_bias"), 0, S(B_UP)},
	{"ffn_down.weight", "mlp.down_proj.weight", {D, F}, REQ, 0, S(W_DOWN)},
	{"ffn_down.bias", "mlp.down_proj.bias", {D}, IF("mlp_bias"), 0, S(B_DOWN)},
};

/* MistralForCausalLM: Llama without biases. */
static const struct arch_tensor mistral_layer[] = {
	{"attn_norm.weight", "input_layernorm.weight", {D}, REQ, NORM, S(ATTN_NORM)},
	{"attn_q.weight", "self_attn.q_proj.weight", {Q, D}, REQ, 0, S(WQ)},
	{"attn_k.weight", "self_attn.k_proj.weight", {KV, D}, REQ, 0, S(WK)},
	{"attn_v.weight", "self_attn.v_proj.weight", {KV, D}, REQ, 0, S(WV)},
	{"attn_output.weight", "self_attn.o_proj.weight", {D, Q}, REQ, 0, S(WO)},
	{"ffn_norm.weight", "post_attention_layernorm.weight", {D}, REQ, NORM, S(FFN_NORM)},
	{"ffn_gate.weight", "mlp.gate_proj.weight", {F, D}, REQ, 0, S(W_GATE)},
	{"ffn_up.weight", "mlp.up_proj.weight", {F, D}, REQ, 0, S(W_UP)},
	{"ffn_down.weight", "mlp.down_proj.weight", {D, F}, REQ, 0, S(W_DOWN)},
};

/* Qwen2's attention (biases on q, k and v) and the MLP's norm, shared by Qwen2 and Qwen2-MoE. */
#define QWEN2_ATTN_ROWS                                                                                  \
	{"attn_norm.weight", "input_layernorm.weight", {D}, REQ, NORM, S(ATTN_NORM)},                    \
	{"attn_q.weight", "self_attn.q_proj.weight", {Q, D}, REQ, 0, S(WQ)},                             \
	{"attn_q.bias", "self_attn.q_proj.bias", {Q}, REQ, 0, S(BQ)},                                    \
	{"attn_k.weight", "self_attn.k_proj.weight", {KV, D}, REQ, 0, S(WK)},                            \
	{"attn_k.bias", "self_attn.k_proj.bias", {KV}, REQ, 0, S(BK)},                                   \
	{"attn_v.weight", "self_attn.v_proj.weight", {KV, D}, REQ, 0, S(WV)},                            \
	{"attn_v.bias", "self_attn.v_proj.bias", {KV}, REQ, 0, S(BV)},                                   \
	{"attn_output.weight", "self_attn.o_proj.weight", {D, Q}, REQ, 0, S(WO)},                        \
	{"ffn_norm.weight", "post_attention_layernorm.weight", {D}, REQ, NORM, S(FFN_NORM)}

/* Qwen2ForCausalLM: Llama with biases on q, k and v. */
static const struct arch_tensor qwen2_layer[] = {
	QWEN2_ATTN_ROWS,
	{"ffn_gate.weight", "mlp.gate_proj.weight", {F, D}, REQ, 0, S(W_GATE)},
	{"ffn_up.weight", "mlp.up_proj.weight", {F, D}, REQ, 0, S(W_UP)},
	{"ffn_down.weight", "mlp.down_proj.weight", {D, F}, REQ, 0, S(W_DOWN)},
};

/* Qwen3ForCausalLM: Llama with an RMSNorm of q and k per head (before RoPE); attention_bias puts biases on
 * q, k, v and o. */
static const struct arch_tensor qwen3_layer[] = {
	{"attn_norm.weight", "input_layernorm.weight", {D}, REQ, NORM, S(ATTN_NORM)},
	{"attn_q.weight", "self_attn.q_proj.weight", {Q, D}, REQ, 0, S(WQ)},
	{"attn_q.bias", "self_attn.q_proj.bias", {Q}, IF("attention_bias"), 0, S(BQ)},
	{"attn_k.weight", "self_attn.k_proj.weight", {KV, D}, REQ, 0, S(WK)},
	{"attn_k.bias", "self_attn.k_proj.bias", {KV}, IF("attention_bias"), 0, S(BK)},
	{"attn_v.weight", "self_attn.v_proj.weight", {KV, D}, REQ, 0, S(WV)},
	{"attn_v.bias", "self_attn.v_proj.bias", {KV}, IF("attention_bias"), 0, S(BV)},
	{"attn_output.weight", "self_attn.o_proj.weight", {D, Q}, REQ, 0, S(WO)},
	{"attn_output.bias", "self_attn.o_proj.bias", {D}, IF("attention_bias"), 0, S(BO)},
	{"attn_q_norm.weight", "self_attn.q_norm.weight", {DH}, REQ, NORM, S(Q_NORM)},
	{"attn_k_norm.weight", "self_attn.k_norm.weight", {DH}, REQ, NORM, S(K_NORM)},
	{"ffn_norm.weight", "post_attention_layernorm.weight", {D}, REQ, NORM, S(FFN_NORM)},
	{"ffn_gate.weight", "mlp.gate_proj.weight", {F, D}, REQ, 0, S(W_GATE)},
	{"ffn_up.weight", "mlp.up_proj.weight", {F, D}, REQ, 0, S(W_UP)},
	{"ffn_down.weight", "mlp.down_proj.weight", {D, F}, REQ, 0, S(W_DOWN)},
};

/* Gemma3ForCausalLM: RMSNorm of q and k per head, of the attention output and of the MLP output;
 * attention_bias puts biases on q, k, v and o. */
static const struct arch_tensor gemma3_layer[] = {
	{"attn_norm.weight", "input_layernorm.weight", {D}, REQ, NORM, S(ATTN_NORM)},
	{"attn_q_norm.weight", "self_attn.q_norm.weight", {DH}, REQ, NORM, S(Q_NORM)},
	{"attn_k_norm.weight", "self_attn.k_norm.weight", {DH}, REQ, NORM, S(K_NORM)},
	{"post_attention_norm.weight", "post_attention_layernorm.weight", {D}, REQ, NORM, S(POST_ATTN_NORM)},
	{"ffn_norm.weight", "pre_feedforward_layernorm.weight", {D}, REQ, NORM, S(FFN_NORM)},
	{"post_ffw_norm.weight", "post_feedforward_layernorm.weight", {D}, REQ, NORM, S(POST_FFW_NORM)},
	{"attn_q.weight", "self_attn.q_proj.weight", {Q, D}, REQ, 0, S(WQ)},
	{"attn_q.bias", "self_attn.q_proj.bias", {Q}, IF("attention_bias"), 0, S(BQ)},
	{"attn_k.weight", "self_attn.k_proj.weight", {KV, D}, REQ, 0, S(WK)},
	{"attn_k.bias", "self_attn.k_proj.bias", {KV}, IF("attention_bias"), 0, S(BK)},
	{"attn_v.weight", "self_attn.v_proj.weight", {KV, D}, REQ, 0, S(WV)},
	{"attn_v.bias", "self_attn.v_proj.bias", {KV}, IF("attention_bias"), 0, S(BV)},
	{"attn_output.weight", "self_attn.o_proj.weight", {D, Q}, REQ, 0, S(WO)},
	{"attn_output.bias", "self_attn.o_proj.bias", {D}, IF("attention_bias"), 0, S(BO)},
	{"ffn_gate.weight", "mlp.gate_proj.weight", {F, D}, REQ, 0, S(W_GATE)},
	{"ffn_up.weight", "mlp.up_proj.weight", {F, D}, REQ, 0, S(W_UP)},
	{"ffn_down.weight", "mlp.down_proj.weight", {D, F}, REQ, 0, S(W_DOWN)},
};

/* Qwen3MoeForCausalLM: Qwen3's attention, every layer's MLP a mixture of experts (decoder_sparse_step 1,
 * no mlp_only_layers). */
static const struct arch_tensor qwen3moe_layer[] = {
	{"attn_norm.weight", "input_layernorm.weight", {D}, REQ, NORM, S(ATTN_NORM)},
	{"attn_q.weight", "self_attn.q_proj.weight", {Q, D}, REQ, 0, S(WQ)},
	{"attn_q.bias", "self_attn.q_proj.bias", {Q}, IF("attention_bias"), 0, S(BQ)},
	{"attn_k.weight", "self_attn.k_proj.weight", {KV, D}, REQ, 0, S(WK)},
	{"attn_k.bias", "self_attn.k_proj.bias", {KV}, IF("attention_bias"), 0, S(BK)},
	{"attn_v.weight", "self_attn.v_proj.weight", {KV, D}, REQ, 0, S(WV)},
	{"attn_v.bias", "self_attn.v_proj.bias", {KV}, IF("attention_bias"), 0, S(BV)},
	{"attn_output.weight", "self_attn.o_proj.weight", {D, Q}, REQ, 0, S(WO)},
	{"attn_output.bias", "self_attn.o_proj.bias", {D}, IF("attention_bias"), 0, S(BO)},
	{"attn_q_norm.weight", "self_attn.q_norm.weight", {DH}, REQ, NORM, S(Q_NORM)},
	{"attn_k_norm.weight", "self_attn.k_norm.weight", {DH}, REQ, NORM, S(K_NORM)},
	{"ffn_norm.weight", "post_attention_layernorm.weight", {D}, REQ, NORM, S(FFN_NORM)},
	{"ffn_gate_inp.weight", "mlp.gate.weight", {E, D}, REQ, 0, S(ROUTER)},
	{"ffn_gate_exps.weight", "mlp.experts.%d.gate_proj.weight", {E, FE, D}, REQ, 0, S(W_GATE_EXPS)},
	{"ffn_up_exps.weight", "mlp.experts.%d.up_proj.weight", {E, FE, D}, REQ, 0, S(W_UP_EXPS)},
	{"ffn_down_exps.weight", "mlp.experts.%d.down_proj.weight", {E, D, FE}, REQ, 0, S(W_DOWN_EXPS)},
};

/* MixtralForCausalLM: Mistral's attention, every layer's MLP 8 experts (w1 gate, w3 up, w2 down). */
static const struct arch_tensor mixtral_layer[] = {
	{"attn_norm.weight", "input_layernorm.weight", {D}, REQ, NORM, S(ATTN_NORM)},
	{"attn_q.weight", "self_attn.q_proj.weight", {Q, D}, REQ, 0, S(WQ)},
	{"attn_k.weight", "self_attn.k_proj.weight", {KV, D}, REQ, 0, S(WK)},
	{"attn_v.weight", "self_attn.v_proj.weight", {KV, D}, REQ, 0, S(WV)},
	{"attn_output.weight", "self_attn.o_proj.weight", {D, Q}, REQ, 0, S(WO)},
	{"ffn_norm.weight", "post_attention_layernorm.weight", {D}, REQ, NORM, S(FFN_NORM)},
	{"ffn_gate_inp.weight", "block_sparse_moe.gate.weight", {E, D}, REQ, 0, S(ROUTER)},
	{"ffn_gate_exps.weight", "block_sparse_moe.experts.%d.w1.weight", {E, FE, D}, REQ, 0, S(W_GATE_EXPS)},
	{"ffn_up_exps.weight", "block_sparse_moe.experts.%d.w3.weight", {E, FE, D}, REQ, 0, S(W_UP_EXPS)},
	{"ffn_down_exps.weight", "block_sparse_moe.experts.%d.w2.weight", {E, D, FE}, REQ, 0, S(W_DOWN_EXPS)},
};

/* Qwen2MoeForCausalLM: Qwen2's attention (q, k, v biases), every layer's MLP a mixture of experts plus a
 * shared expert whose output is scaled by sigmoid(h . shared_expert_gate). */
static const struct arch_tensor qwen2moe_layer[] = {
	QWEN2_ATTN_ROWS,
	{"ffn_gate_inp.weight", "mlp.gate.weight", {E, D}, REQ, 0, S(ROUTER)},
	{"ffn_gate_exps.weight", "mlp.experts.%d.gate_proj.weight", {E, FE, D}, REQ, 0, S(W_GATE_EXPS)},
	{"ffn_up_exps.weight", "mlp.experts.%d.up_proj.weight", {E, FE, D}, REQ, 0, S(W_UP_EXPS)},
	{"ffn_down_exps.weight", "mlp.experts.%d.down_proj.weight", {E, D, FE}, REQ, 0, S(W_DOWN_EXPS)},
	{"ffn_gate_inp_shexp.weight", "mlp.shared_expert_gate.weight", {ONE, D}, REQ, 0, S(SHEXP_GATE_INP)},
	{"ffn_gate_shexp.weight", "mlp.shared_expert.gate_proj.weight", {FS, D}, REQ, 0, S(W_GATE_SHEXP)},
	{"ffn_up_shexp.weight", "mlp.shared_expert.up_proj.weight", {FS, D}, REQ, 0, S(W_UP_SHEXP)},
	{"ffn_down_shexp.weight", "mlp.shared_expert.down_proj.weight", {D, FS}, REQ, 0, S(W_DOWN_SHEXP)},
};

/* GptOssForCausalLM: biases on q, k, v and o, a learned sink logit per query head, every layer's MLP a
 * mixture of experts with biases (router included). The checkpoint holds all experts in one tensor each:
 * gate_up_proj [E, D, 2 Fe] with gate and up interleaved (even and odd columns), down_proj [E, Fe, D], both
 * as x . W (so swapped into ferry's [out, in]); their biases [E, 2 Fe] (interleaved) and [E, D]. */
static const struct arch_tensor gptoss_layer[] = {
	{"attn_norm.weight", "input_layernorm.weight", {D}, REQ, NORM, S(ATTN_NORM)},
	{"attn_q.weight", "self_attn.q_proj.weight", {Q, D}, REQ, 0, S(WQ)},
	{"attn_q.bias", "self_attn.q_proj.bias", {Q}, REQ, 0, S(BQ)},
	{"attn_k.weight", "self_attn.k_proj.weight", {KV, D}, REQ, 0, S(WK)},
	{"attn_k.bias", "self_attn.k_proj.bias", {KV}, REQ, 0, S(BK)},
	{"attn_v.weight", "self_attn.v_proj.weight", {KV, D}, REQ, 0, S(WV)},
	{"attn_v.bias", "self_attn.v_proj.bias", {KV}, REQ, 0, S(BV)},
	{"attn_output.weight", "self_attn.o_proj.weight", {D, Q}, REQ, 0, S(WO)},
	{"attn_output.bias", "self_attn.o_proj.bias", {D}, REQ, 0, S(BO)},
	{"attn_sinks.weight", "self_attn.sinks", {H}, REQ, 0, S(ATTN_SINKS)},
	{"post_attention_norm.weight", "post_attention_layernorm.weight", {D}, REQ, NORM, S(FFN_NORM)},
	{"ffn_gate_inp.weight", "mlp.router.weight", {E, D}, REQ, 0, S(ROUTER)},
	{"ffn_gate_inp.bias", "mlp.router.bias", {E}, REQ, 0, S(B_ROUTER)},
	{"ffn_gate_exps.bias", "mlp.experts.gate_up_proj_bias:even", {E, FE}, REQ, 0, S(B_GATE_EXPS)},
	{"ffn_up_exps.bias", "mlp.experts.gate_up_proj_bias:odd", {E, FE}, REQ, 0, S(B_UP_EXPS)},
	{"ffn_down_exps.bias", "mlp.experts.down_proj_bias", {E, D}, REQ, 0, S(B_DOWN_EXPS)},
	{"ffn_gate_exps.weight", "mlp.experts.gate_up_proj:even:t", {E, FE, D}, REQ, 0, S(W_GATE_EXPS)},
	{"ffn_up_exps.weight", "mlp.experts.gate_up_proj:odd:t", {E, FE, D}, REQ, 0, S(W_UP_EXPS)},
	{"ffn_down_exps.weight", "mlp.experts.down_proj:t", {E, D, FE}, REQ, 0, S(W_DOWN_EXPS)},
};

#define ROWS(a) a, (int)(sizeof(a) / sizeof(a[0]))
#define DENSE NULL, NULL, NULL, NULL, NULL, false

/* name, HF class, GGUF name, hparams, HF defaults (max_pos, head_dim, sliding_window, tied), HF windows,
 * HF 1 + w norms, GGUF rope pairs, layer tensors. The HF defaults are those of the transformers config
 * classes; llama.cpp permutes llama's q and k rows so that RoPE pairs are interleaved. */
const struct arch arch_table[] = {
	{"llama", "LlamaForCausalLM", "llama", ARCH_HPARAMS_LLAMA, 2048, 0, 0, false, ARCH_WINDOWS_NONE, false,
	 ROPE_STYLE_NORM, ROWS(llama_layer), DENSE},
	{"mistral", "MistralForCausalLM", NULL, ARCH_HPARAMS_LLAMA, 4096 * 32, 0, 4096, false, ARCH_WINDOWS_ALL,
	 false, ROPE_STYLE_NEOX, ROWS(mistral_layer), DENSE},
	{"qwen2", "Qwen2ForCausalLM", "qwen2", ARCH_HPARAMS_LLAMA, 32768, 0, 0, false, ARCH_WINDOWS_GATED, false,
	 ROPE_STYLE_NEOX, ROWS(qwen2_layer), DENSE},
	{"qwen3", "Qwen3ForCausalLM", "qwen3", ARCH_HPARAMS_LLAMA, 40960, 128, 4096, false, ARCH_WINDOWS_GATED, false,
	 ROPE_STYLE_NEOX, ROWS(qwen3_layer), DENSE},
	{"gemma3", "Gemma3ForCausalLM", "gemma3", ARCH_HPARAMS_GEMMA3, 131072, 256, 4096, true,
	 ARCH_WINDOWS_PATTERN, true, ROPE_STYLE_NEOX, ROWS(gemma3_layer), DENSE},
	{"qwen3moe", "Qwen3MoeForCausalLM", "qwen3moe", ARCH_HPARAMS_LLAMA, 32768, 128, 4096, false,
	 ARCH_WINDOWS_GATED, false, ROPE_STYLE_NEOX, ROWS(qwen3moe_layer), "num_experts", "num_experts_per_tok",
	 "moe_intermediate_size", "norm_topk_prob", NULL, true},
	{"mixtral", "MixtralForCausalLM", "llama", ARCH_HPARAMS_LLAMA, 4096 * 32, 0, 0, false, ARCH_WINDOWS_ALL,
	 false, ROPE_STYLE_NORM, ROWS(mixtral_layer), "num_local_experts", "num_experts_per_tok", "intermediate_size",
	 NULL, NULL, true},
	{"qwen2moe", "Qwen2MoeForCausalLM", "qwen2moe", ARCH_HPARAMS_LLAMA, 32768, 0, 4096, false, ARCH_WINDOWS_GATED,
	 false, ROPE_STYLE_NEOX, ROWS(qwen2moe_layer), "num_experts", "num_experts_per_tok", "moe_intermediate_size",
	 "norm_topk_prob", "shared_expert_intermediate_size", false},
	/* softmax over the K largest router logits: the softmax over E renormalized over the K */
	{"gpt-oss", "GptOssForCausalLM", "gpt-oss", ARCH_HPARAMS_GPTOSS, 131072, 64, 128, false,
	 ARCH_WINDOWS_ALTERNATE, false, ROPE_STYLE_NEOX, ROWS(gptoss_layer), "num_local_experts", "num_experts_per_tok",
	 "intermediate_size", NULL, NULL, true},
};
const int arch_count = (int)(sizeof(arch_table) / sizeof(arch_table[0]));

static const char *key_of(const struct arch *a, enum arch_key key)
{
	return key == ARCH_KEY_HF ? a->hf_class : key == ARCH_KEY_GGUF ? a->gguf : a->name;
}

const struct arch *arch_find(enum arch_key key, const char *name)
{
	for (int i = 0; name && i < arch_count; i++)
		if (key_of(&arch_table[i], key) && !strcmp(key_of(&arch_table[i], key), name))
			return &arch_table[i];
	return NULL;
}

bool arch_is_moe(const struct arch *a)
{
	return arch_slot_tensor(a, ARCH_SLOT_ROUTER) != NULL;
}

const struct arch *arch_find_gguf(const char *name, bool moe)
{
	for (int i = 0; name && i < arch_count; i++)
		if (arch_table[i].gguf && !strcmp(arch_table[i].gguf, name) && arch_is_moe(&arch_table[i]) == moe)
			return &arch_table[i];
	return NULL;
}

const char *arch_list(enum arch_key key, char *buf, size_t n)
{
	size_t len = 0;
	buf[0] = 0;
	for (int i = 0; i < arch_count && len < n; i++)
		if (key_of(&arch_table[i], key) && arch_find(key, key_of(&arch_table[i], key)) == &arch_table[i])
			len += (size_t)snprintf(buf + len, n - len, "%s%s", len ? ", " : "", key_of(&arch_table[i], key));
	return buf;
}

const struct arch_tensor *arch_slot_tensor(const struct arch *a, enum arch_slot s)
{
	for (int i = 0; i < a->n_layer; i++)
		if (a->layer[i].slot == s)
			return &a->layer[i];
	return NULL;
}

int64_t arch_dim(const struct layout_hparams *hp, enum arch_dim d)
{
	switch (d) {
	case ARCH_DIM_D: return hp->d_model;
	case ARCH_DIM_Q: return (int64_t)hp->n_heads * hp->head_dim;
	case ARCH_DIM_KV: return (int64_t)hp->n_kv_heads * hp->head_dim;
	case ARCH_DIM_F: return hp->ffn_dim;
	case ARCH_DIM_DH: return hp->head_dim;
	case ARCH_DIM_V: return hp->vocab;
	case ARCH_DIM_E: return hp->n_experts;
	case ARCH_DIM_FE: return hp->expert_ffn;
	case ARCH_DIM_FS: return hp->shared_ffn;
	case ARCH_DIM_ONE: return 1;
	case ARCH_DIM_H: return hp->n_heads;
	default: return 0;
	}
}

bool arch_is_experts(const struct arch_tensor *t)
{
	return t->shape[2] != ARCH_DIM_NONE;
}

int arch_shape(const struct layout_hparams *hp, const struct arch_tensor *t, int64_t shape[3])
{
	int n = t->shape[2] ? 3 : t->shape[1] ? 2 : 1;
	for (int i = 0; i < n; i++)
		shape[i] = arch_dim(hp, t->shape[i]);
	return n;
}
