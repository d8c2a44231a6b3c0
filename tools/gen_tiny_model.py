#!/usr/bin/env python3
"""Generate tiny random Hugging Face model directories for ferry's tests.

Each variant is a complete HF-style checkpoint directory (config.json,
generation_config.json, tokenizer.json, tokenizer_config.json and safetensors
weights with the exact HF tensor names and [out, in] Linear shapes), small
enough that a forward pass takes milliseconds.  Weights are random but
deterministic for a given seed, and scaled so that attention is sharp
(position encoding matters) and logits are well spread (greedy decoding is
robust to float32 vs float64 rounding).  The same seed always gives the same
bytes.

    python3 tools/gen_tiny_model.py VARIANT OUT_DIR [--seed N]
    python3 tools/gen_tiny_model.py --list
    python3 tools/gen_tiny_model.py --broken KIND OUT_DIR
    python3 tools/gen_tiny_model.py --list-broken

--broken writes a deliberately invalid model (based on llama_tied_gqa) for
negative tests of the loader.  Importable: generate(variant, out_dir, seed),
write_broken(kind, out_dir).
"""

import argparse
import json
import os
import struct
import sys
import zlib

import ml_dtypes
import numpy as np
import safetensors.numpy

TRANSFORMERS_VERSION = "4.46.0"

# Per family: special tokens (ids 0..k-1), bos/eos ids, chat template.
FAMILIES = {
    "llama2": {
        "specials": ["<unk>", "<s>", "</s>"],
        "bos": 1,
        "eos": 2,
        "add_bos": True,
        "chat_template": (
            "{{ bos_token }}{% for message in messages %}"
            "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] | trim + ' [/INST]' }}"
            "{% elif message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'] | trim + '\\n<</SYS>>\\n\\n' }}"
            "{% else %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}{% endif %}{% endfor %}"
        ),
    },
    "llama3": {
        "specials": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                     "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>"],
        "bos": 0,
        "eos": [1, 4, 5],  # like Llama-3.1-Instruct: end_of_text, eom, eot
        "add_bos": True,
        "chat_template": (
            "{{ bos_token }}{% for message in messages %}"
            "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
        ),
    },
    "qwen2": {
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "bos": 0,
        "eos": 2,
        "add_bos": False,
        "chat_template": (
            "{% for message in messages %}"
            "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
        ),
    },
    # Gemma's ids for pad/eos/bos/unk (0..3); end_of_turn stands for Gemma's 106.
    "gemma3": {
        "specials": ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"],
        "bos": 2,
        "eos": [1, 6],
        "add_bos": True,
        "chat_template": (
            "{{ bos_token }}{% for message in messages %}"
            "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n'"
            " + message['content'] | trim + '<end_of_turn>\\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
        ),
    },
    "mistral": {
        "specials": ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
        "bos": 1,
        "eos": 2,
        "add_bos": True,
        "chat_template": (
            "{{ bos_token }}{% for message in messages %}"
            "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
            "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
        ),
    },
}

# Variant specs.  "head_dim" is written to config.json only when "explicit_head_dim".
VARIANTS = {
    "llama_tied_gqa": dict(
        arch="LlamaForCausalLM", model_type="llama", family="llama2", dtype="F32",
        hidden=64, inter=176, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=320,
        tied=True, rope_theta=10000.0, rope_scaling=None, max_pos=128, eps=1e-5),
    # original_max_position_embeddings is 64, not 16: the high-frequency region needs a
    # wavelength < original/high_freq_factor, and the shortest RoPE wavelength is 2*pi.
    # With head_dim 16 and theta 5e5 the wavelengths are 6.3 (kept), 32.4 (smoothed,
    # smooth_factor 0.32), then 167.. (divided by factor 8), all far from the borders 16/64.
    "llama3_rope": dict(
        arch="LlamaForCausalLM", model_type="llama", family="llama3", dtype="BF16",
        hidden=128, inter=344, layers=2, heads=8, kv_heads=2, head_dim=16, explicit_head_dim=True,
        vocab=384, tied=False, rope_theta=500000.0, max_pos=1024, eps=1e-5, shards=2,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        generation_extra={"do_sample": True, "temperature": 0.6, "top_p": 0.9}),
    "llama_linear_rope": dict(
        arch="LlamaForCausalLM", model_type="llama", family="llama2", dtype="F16",
        hidden=64, inter=176, layers=2, heads=4, kv_heads=4, head_dim=16, vocab=320,
        tied=False, rope_theta=10000.0, max_pos=256, eps=1e-6,
        rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "llama_dynamic_rope": dict(
        arch="LlamaForCausalLM", model_type="llama", family="llama2", dtype="F32",
        hidden=64, inter=176, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=320,
        tied=False, rope_theta=10000.0, max_pos=16, eps=1e-5,
        rope_scaling={"rope_type": "dynamic", "factor": 2.0}),
    # head_dim 32 with theta 1e4 and original 16 gives a YaRN correction range [0, 2]:
    # pair 0 extrapolated, pair 1 blended 50/50, pairs 2.. interpolated.
    "llama_yarn_rope": dict(
        arch="LlamaForCausalLM", model_type="llama", family="llama2", dtype="F32",
        hidden=128, inter=344, layers=2, heads=4, kv_heads=2, head_dim=32, vocab=320,
        tied=False, rope_theta=10000.0, max_pos=64, eps=1e-5,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                      "beta_fast": 32, "beta_slow": 1}),
    "llama_headdim": dict(
        arch="LlamaForCausalLM", model_type="llama", family="llama2", dtype="F32",
        hidden=64, inter=176, layers=3, heads=4, kv_heads=2, head_dim=32, explicit_head_dim=True,
        vocab=320, tied=False, rope_theta=10000.0, rope_scaling=None, max_pos=128, eps=1e-5),
    # sliding_window/max_window_layers are traps: use_sliding_window is false, so HF
    # applies no window at all.
    "qwen2_bias": dict(
        arch="Qwen2ForCausalLM", model_type="qwen2", family="qwen2", dtype="F16",
        hidden=64, inter=176, layers=2, heads=4, kv_heads=1, head_dim=16, vocab=384,
        tied=True, rope_theta=1000000.0, rope_scaling=None, max_pos=256, eps=1e-6,
        qkv_bias=True),
    # Qwen3: q/k RMSNorm per head (weights around 1, not 1 + w), no biases, explicit head_dim != hidden/heads.
    "qwen3": dict(
        arch="Qwen3ForCausalLM", model_type="qwen3", family="qwen2", dtype="BF16",
        hidden=64, inter=176, layers=3, heads=4, kv_heads=2, head_dim=32, explicit_head_dim=True,
        vocab=384, tied=True, rope_theta=1000000.0, rope_scaling=None, max_pos=256, eps=1e-6, qk_norm=True),
    # Mixtures of experts: the router's logits have a standard deviation of about 2, so the top-k choice is far
    # from a tie at f32 rounding. qwen3moe renormalizes the chosen weights (as Qwen3-30B-A3B), qwen3moe_nonorm
    # does not (the class default); Mixtral always does.
    "qwen3moe": dict(
        arch="Qwen3MoeForCausalLM", model_type="qwen3_moe", family="qwen2", dtype="BF16",
        hidden=64, inter=176, layers=2, heads=4, kv_heads=2, head_dim=32, explicit_head_dim=True,
        vocab=384, tied=False, rope_theta=1000000.0, rope_scaling=None, max_pos=256, eps=1e-6, qk_norm=True,
        experts=8, top_k=3, moe_inter=64, norm_topk=True),
    "qwen3moe_nonorm": dict(
        arch="Qwen3MoeForCausalLM", model_type="qwen3_moe", family="qwen2", dtype="F32",
        hidden=64, inter=176, layers=2, heads=4, kv_heads=2, head_dim=16, explicit_head_dim=True,
        vocab=384, tied=True, rope_theta=1000000.0, rope_scaling=None, max_pos=256, eps=1e-6, qk_norm=True,
        experts=6, top_k=2, moe_inter=32, norm_topk=False),
    # Qwen2-MoE (Qwen1.5-MoE style): q/k/v biases, experts whose weights are not renormalized, a shared expert
    # with its sigmoid gate. It and mixtral have head_dim 32, the smallest the CUDA KV cache takes
    # (tests/test_cuda_model.py runs every MoE variant).
    "qwen2moe": dict(
        arch="Qwen2MoeForCausalLM", model_type="qwen2_moe", family="qwen2", dtype="F32",
        hidden=128, inter=176, layers=2, heads=4, kv_heads=2, head_dim=32, vocab=384,
        tied=False, rope_theta=1000000.0, rope_scaling=None, max_pos=256, eps=1e-6, qkv_bias=True,
        experts=6, top_k=2, moe_inter=32, norm_topk=False, shared_inter=64),
    "mixtral": dict(
        arch="MixtralForCausalLM", model_type="mixtral", family="mistral", dtype="F16",
        hidden=128, inter=64, layers=2, heads=4, kv_heads=2, head_dim=32, vocab=320,
        tied=False, rope_theta=1000000.0, rope_scaling=None, max_pos=512, eps=1e-5,
        experts=4, top_k=2),
    # gpt-oss: attention biases and sinks, sliding (window 8) and full layers alternating, YaRN not truncated
    # (correction range [0, 1.62]: pair 1 blended 62/38, where truncation would give 50/50), experts with
    # biases whose gate/up outputs (std ~4) cross the SwiGLU clamps at +-7, softmax over the top-k logits.
    # hidden 96 != 2 x intermediate 64: the fused gate_up_proj [E, D, 2 Fe] has one orientation only.
    "gptoss": dict(
        arch="GptOssForCausalLM", model_type="gpt_oss", family="qwen2", dtype="BF16",
        hidden=96, inter=64, layers=4, heads=4, kv_heads=2, head_dim=32, explicit_head_dim=True,
        vocab=384, tied=False, rope_theta=10000.0, max_pos=256, eps=1e-5, sliding_window=8,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                      "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False},
        experts=4, top_k=2),
    "mistral_swa": dict(
        arch="MistralForCausalLM", model_type="mistral", family="mistral", dtype="F32",
        hidden=64, inter=176, layers=3, heads=4, kv_heads=2, head_dim=32, explicit_head_dim=True,
        vocab=320, tied=False, rope_theta=10000.0, rope_scaling=None, max_pos=512, eps=1e-5,
        sliding_window=8),
    # Gemma 3 text: 6 layers with the 5:1 local:global pattern (layer 5 global), head_dim 32 != hidden/heads,
    # query_pre_attn_scalar 16 (= hidden/heads, as Gemma 3 27B) != head_dim, window 8 < the test prompts.
    # Config in the style of the Hub's Gemma 3 configs (rope_theta + rope_local_base_freq + layer_types).
    "gemma3": dict(
        arch="Gemma3ForCausalLM", model_type="gemma3_text", family="gemma3", dtype="F32",
        hidden=64, inter=128, layers=6, heads=4, kv_heads=2, head_dim=32, explicit_head_dim=True,
        vocab=320, tied=True, rope_theta=1000000.0, rope_local_base_freq=10000.0, rope_scaling=None,
        max_pos=512, eps=1e-6, sliding_window=8, query_pre_attn_scalar=16, final_logit_softcapping=None,
        layer_types_style="list"),
    # The transformers-5 spelling: rope_parameters per layer type (linear scaling on the global layers only),
    # legacy sliding_window_pattern instead of layer_types; 8 layers (global: 5), bf16 weights, logit softcap.
    "gemma3_softcap": dict(
        arch="Gemma3ForCausalLM", model_type="gemma3_text", family="gemma3", dtype="BF16",
        hidden=64, inter=128, layers=8, heads=4, kv_heads=1, head_dim=32, explicit_head_dim=True,
        vocab=320, tied=True, rope_theta=1000000.0, rope_local_base_freq=10000.0,
        rope_scaling={"rope_type": "linear", "factor": 2.0}, max_pos=512, eps=1e-6, sliding_window=8,
        query_pre_attn_scalar=64, final_logit_softcapping=1.5, layer_types_style="pattern",
        rope_style="parameters"),
}

BROKEN_KINDS = ["truncated", "bad_header", "bad_header_json", "bad_shape", "bad_dtype",
                "missing_key", "unknown_arch"]

TORCH_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
NP_DTYPE = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}

# Attention logits q.k/sqrt(d) get a standard deviation of about QK_GAIN**2.
QK_GAIN = 1.5


def make_config(spec):
    fam = FAMILIES[spec["family"]]
    cfg = {
        "architectures": [spec["arch"]],
        "attention_dropout": 0.0,
        "bos_token_id": fam["bos"],
        "eos_token_id": fam["eos"],
        "hidden_act": "silu",
        "hidden_size": spec["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": spec["inter"],
        "max_position_embeddings": spec["max_pos"],
        "model_type": spec["model_type"],
        "num_attention_heads": spec["heads"],
        "num_hidden_layers": spec["layers"],
        "num_key_value_heads": spec["kv_heads"],
        "rms_norm_eps": spec["eps"],
        "rope_theta": spec["rope_theta"],
        "tie_word_embeddings": spec["tied"],
        "torch_dtype": TORCH_DTYPE[spec["dtype"]],
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": spec["vocab"],
    }
    if spec.get("explicit_head_dim"):
        cfg["head_dim"] = spec["head_dim"]
    if spec["model_type"] == "llama":
        cfg.update(attention_bias=False, mlp_bias=False, pretraining_tp=1,
                   rope_scaling=spec["rope_scaling"])
    elif spec["model_type"] == "qwen2":
        cfg.update(use_sliding_window=False, sliding_window=8, max_window_layers=1)
    elif spec["model_type"] == "qwen3":
        cfg.update(attention_bias=False, use_sliding_window=False, sliding_window=None, max_window_layers=spec["layers"],
                   rope_scaling=None)
    elif spec["model_type"] == "mistral":
        cfg.update(sliding_window=spec["sliding_window"])
    elif spec["model_type"] == "qwen3_moe":
        cfg.update(attention_bias=False, use_sliding_window=False, sliding_window=None, max_window_layers=spec["layers"],
                   rope_scaling=None, num_experts=spec["experts"], num_experts_per_tok=spec["top_k"],
                   moe_intermediate_size=spec["moe_inter"], norm_topk_prob=spec["norm_topk"], decoder_sparse_step=1,
                   mlp_only_layers=[], output_router_logits=False, router_aux_loss_coef=0.001)
    elif spec["model_type"] == "qwen2_moe":
        cfg.update(use_sliding_window=False, sliding_window=None, max_window_layers=spec["layers"], rope_scaling=None,
                   num_experts=spec["experts"], num_experts_per_tok=spec["top_k"],
                   moe_intermediate_size=spec["moe_inter"], shared_expert_intermediate_size=spec["shared_inter"],
                   norm_topk_prob=spec["norm_topk"], decoder_sparse_step=1, mlp_only_layers=[],
                   output_router_logits=False, router_aux_loss_coef=0.001)
    elif spec["model_type"] == "mixtral":
        cfg.update(sliding_window=None, num_local_experts=spec["experts"], num_experts_per_tok=spec["top_k"],
                   output_router_logits=False, router_aux_loss_coef=0.02, router_jitter_noise=0.0)
    elif spec["model_type"] == "gpt_oss":
        cfg.update(attention_bias=True, sliding_window=spec["sliding_window"], rope_scaling=spec["rope_scaling"],
                   num_local_experts=spec["experts"], num_experts_per_tok=spec["top_k"], swiglu_limit=7.0,
                   layer_types=["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(spec["layers"])],
                   output_router_logits=False, router_aux_loss_coef=0.001)
    elif spec["model_type"] == "gemma3_text":
        del cfg["hidden_act"]
        cfg.update(attention_bias=False, attn_logit_softcapping=None, hidden_activation="gelu_pytorch_tanh",
                   final_logit_softcapping=spec["final_logit_softcapping"], pad_token_id=0,
                   query_pre_attn_scalar=spec["query_pre_attn_scalar"], sliding_window=spec["sliding_window"],
                   use_bidirectional_attention=False)
        if spec["layer_types_style"] == "list":
            cfg["layer_types"] = ["sliding_attention" if (i + 1) % 6 else "full_attention"
                                  for i in range(spec["layers"])]
        else:
            cfg["sliding_window_pattern"] = 6
        if spec.get("rope_style") == "parameters":
            del cfg["rope_theta"]
            full = dict(spec["rope_scaling"] or {"rope_type": "default"}, rope_theta=spec["rope_theta"])
            cfg["rope_parameters"] = {
                "full_attention": full,
                "sliding_attention": {"rope_type": "default", "rope_theta": spec["rope_local_base_freq"]}}
        else:
            cfg.update(rope_local_base_freq=spec["rope_local_base_freq"], rope_scaling=spec["rope_scaling"])
    return dict(sorted(cfg.items()))


def make_weights(spec, rng):
    """Return {hf_name: array in the storage dtype}, in a fixed generation order."""
    h, inter, hd = spec["hidden"], spec["inter"], spec["head_dim"]
    q_out, kv_out = spec["heads"] * hd, spec["kv_heads"] * hd
    dt = NP_DTYPE[spec["dtype"]]
    w = {}

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32).astype(dt)

    def norm_weight():
        return (1.0 + 0.1 * rng.standard_normal(h)).astype(np.float32).astype(dt)

    if spec["model_type"] == "gemma3_text":
        return make_gemma3_weights(spec, rng, normal)
    if spec["model_type"] == "gpt_oss":
        return make_gptoss_weights(spec, normal, norm_weight)
    # RMSNorm follows the embedding, so its scale only matters through the tied lm_head:
    # a large tied embedding makes every token predict itself (greedy repeats one id).
    w["model.embed_tokens.weight"] = normal((spec["vocab"], h), 1.25 / np.sqrt(h) if spec["tied"] else 1.0)
    for i in range(spec["layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm_weight()
        w[p + "self_attn.q_proj.weight"] = normal((q_out, h), QK_GAIN / np.sqrt(h))
        w[p + "self_attn.k_proj.weight"] = normal((kv_out, h), QK_GAIN / np.sqrt(h))
        w[p + "self_attn.v_proj.weight"] = normal((kv_out, h), 1.0 / np.sqrt(h))
        w[p + "self_attn.o_proj.weight"] = normal((h, q_out), 1.0 / np.sqrt(q_out))
        if spec.get("qkv_bias"):
            w[p + "self_attn.q_proj.bias"] = normal((q_out,), 0.5)
            w[p + "self_attn.k_proj.bias"] = normal((kv_out,), 0.5)
            w[p + "self_attn.v_proj.bias"] = normal((kv_out,), 0.5)
        if spec.get("qk_norm"):
            w[p + "self_attn.q_norm.weight"] = (1.0 + 0.1 * rng.standard_normal(hd)).astype(np.float32).astype(dt)
            w[p + "self_attn.k_norm.weight"] = (1.0 + 0.1 * rng.standard_normal(hd)).astype(np.float32).astype(dt)
        w[p + "post_attention_layernorm.weight"] = norm_weight()
        if spec.get("experts"):
            make_experts(spec, w, p, normal)
            continue
        w[p + "mlp.gate_proj.weight"] = normal((inter, h), 1.0 / np.sqrt(h))
        w[p + "mlp.up_proj.weight"] = normal((inter, h), 1.0 / np.sqrt(h))
        w[p + "mlp.down_proj.weight"] = normal((h, inter), 1.0 / np.sqrt(inter))
    w["model.norm.weight"] = norm_weight()
    if not spec["tied"]:
        w["lm_head.weight"] = normal((spec["vocab"], h), 1.0 / np.sqrt(h))
    return w


def make_experts(spec, w, p, normal):
    """A layer's router and experts under the class's names (Qwen3-MoE: mlp.gate, mlp.experts.E.*_proj;
    Mixtral: block_sparse_moe.gate, block_sparse_moe.experts.E.w1/w3/w2 for gate/up/down)."""
    h = spec["hidden"]
    if spec["model_type"] == "mixtral":
        router, ex, names, inter = "block_sparse_moe.gate", "block_sparse_moe.experts.", ("w1", "w3", "w2"), spec["inter"]
    else:
        router, ex, names, inter = "mlp.gate", "mlp.experts.", ("gate_proj", "up_proj", "down_proj"), spec["moe_inter"]
    w[p + router + ".weight"] = normal((spec["experts"], h), 2.0 / np.sqrt(h))
    for e in range(spec["experts"]):
        q = f"{p}{ex}{e}."
        w[q + names[0] + ".weight"] = normal((inter, h), 1.0 / np.sqrt(h))
        w[q + names[1] + ".weight"] = normal((inter, h), 1.0 / np.sqrt(h))
        w[q + names[2] + ".weight"] = normal((h, inter), 1.0 / np.sqrt(inter))
    if spec.get("shared_inter"):  # Qwen2-MoE's shared expert and its gate (logits of a few units: sigmoid ~0.1..0.9)
        fs = spec["shared_inter"]
        w[p + "mlp.shared_expert_gate.weight"] = normal((1, h), 1.0 / np.sqrt(h))
        w[p + "mlp.shared_expert.gate_proj.weight"] = normal((fs, h), 1.0 / np.sqrt(h))
        w[p + "mlp.shared_expert.up_proj.weight"] = normal((fs, h), 1.0 / np.sqrt(h))
        w[p + "mlp.shared_expert.down_proj.weight"] = normal((h, fs), 1.0 / np.sqrt(fs))


def make_gptoss_weights(spec, normal, norm_weight):
    """GptOssForCausalLM's tensors: biases on q, k, v, o and the router, sinks [H], and each layer's experts as
    two fused tensors, gate_up_proj [E, D, 2 Fe] (x . W; gate the even columns, up the odd ones) and down_proj
    [E, Fe, D], with their biases [E, 2 Fe] and [E, D]."""
    h, fe, hd, E = spec["hidden"], spec["inter"], spec["head_dim"], spec["experts"]
    q_out, kv_out = spec["heads"] * hd, spec["kv_heads"] * hd
    w = {"model.embed_tokens.weight": normal((spec["vocab"], h), 1.0)}
    for i in range(spec["layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm_weight()
        w[p + "self_attn.q_proj.weight"] = normal((q_out, h), QK_GAIN / np.sqrt(h))
        w[p + "self_attn.q_proj.bias"] = normal((q_out,), 0.5)
        w[p + "self_attn.k_proj.weight"] = normal((kv_out, h), QK_GAIN / np.sqrt(h))
        w[p + "self_attn.k_proj.bias"] = normal((kv_out,), 0.5)
        w[p + "self_attn.v_proj.weight"] = normal((kv_out, h), 1.0 / np.sqrt(h))
        w[p + "self_attn.v_proj.bias"] = normal((kv_out,), 0.5)
        w[p + "self_attn.o_proj.weight"] = normal((h, q_out), 1.0 / np.sqrt(q_out))
        w[p + "self_attn.o_proj.bias"] = normal((h,), 0.2)
        w[p + "self_attn.sinks"] = normal((spec["heads"],), 1.5)
        w[p + "post_attention_layernorm.weight"] = norm_weight()
        w[p + "mlp.router.weight"] = normal((E, h), 2.0 / np.sqrt(h))
        w[p + "mlp.router.bias"] = normal((E,), 0.5)
        w[p + "mlp.experts.gate_up_proj"] = normal((E, h, 2 * fe), 4.0 / np.sqrt(h))
        w[p + "mlp.experts.gate_up_proj_bias"] = normal((E, 2 * fe), 0.5)
        w[p + "mlp.experts.down_proj"] = normal((E, fe, h), 0.25 / np.sqrt(fe))
        w[p + "mlp.experts.down_proj_bias"] = normal((E, h), 0.2)
    w["model.norm.weight"] = norm_weight()
    w["lm_head.weight"] = normal((spec["vocab"], h), 1.0 / np.sqrt(h))
    return w


def make_gemma3_weights(spec, rng, normal):
    """Gemma 3 tensors.  Norm weights w are stored as HF does (the norm multiplies by 1 + w), drawn around 0 and
    rounded so that 1 + w is exact in the storage dtype: a GGUF converter folds the +1 in (in that dtype), and
    an F32 GGUF must then hold the same multipliers bit for bit."""
    h, inter, hd = spec["hidden"], spec["inter"], spec["head_dim"]
    q_out, kv_out = spec["heads"] * hd, spec["kv_heads"] * hd
    dt = NP_DTYPE[spec["dtype"]]
    w = {}

    def norm_weight(n):
        one_plus = (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32).astype(dt)
        return (one_plus.astype(np.float64) - 1.0).astype(dt)

    # q and k are RMS-normalized per head, so their projection scale does not matter; the attention logits
    # have a standard deviation of about sqrt(head_dim / query_pre_attn_scalar).  The tied embedding is
    # smaller than the Llama variants' (0.5 vs 1.25): Gemma scales it by sqrt(hidden) into a residual stream
    # whose blocks add post-normalized (unit RMS) outputs, and a larger one makes greedy repeat the last token.
    w["model.embed_tokens.weight"] = normal((spec["vocab"], h), 0.5 / np.sqrt(h))
    for i in range(spec["layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm_weight(h)
        w[p + "self_attn.q_proj.weight"] = normal((q_out, h), 1.0 / np.sqrt(h))
        w[p + "self_attn.k_proj.weight"] = normal((kv_out, h), 1.0 / np.sqrt(h))
        w[p + "self_attn.v_proj.weight"] = normal((kv_out, h), 1.0 / np.sqrt(h))
        w[p + "self_attn.o_proj.weight"] = normal((h, q_out), 1.0 / np.sqrt(q_out))
        w[p + "self_attn.q_norm.weight"] = norm_weight(hd)
        w[p + "self_attn.k_norm.weight"] = norm_weight(hd)
        w[p + "post_attention_layernorm.weight"] = norm_weight(h)
        w[p + "pre_feedforward_layernorm.weight"] = norm_weight(h)
        w[p + "post_feedforward_layernorm.weight"] = norm_weight(h)
        w[p + "mlp.gate_proj.weight"] = normal((inter, h), 1.0 / np.sqrt(h))
        w[p + "mlp.up_proj.weight"] = normal((inter, h), 1.0 / np.sqrt(h))
        w[p + "mlp.down_proj.weight"] = normal((h, inter), 1.0 / np.sqrt(inter))
    w["model.norm.weight"] = norm_weight(h)
    return w


def bytes_to_unicode():
    """GPT-2's byte-level alphabet: byte value -> printable unicode character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def make_tokenizer(spec):
    """A byte-level BPE tokenizer.json whose vocabulary fills exactly vocab_size ids."""
    fam = FAMILIES[spec["family"]]
    specials = fam["specials"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in bytes_to_unicode().values():
        vocab[ch] = len(vocab)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    pairs = [("Ġ", c) for c in letters] + [(a, b) for a in letters for b in letters]
    merges = []
    for a, b in pairs[: spec["vocab"] - len(vocab)]:
        merges.append(f"{a} {b}")
        vocab[a + b] = len(vocab)
    assert len(vocab) == spec["vocab"], "vocab_size too small for the byte alphabet"

    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    if fam["add_bos"]:
        bos = specials[fam["bos"]]
        post = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [fam["bos"]], "tokens": [bos]}},
        }
    else:
        post = dict(byte_level, trim_offsets=False)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, t in enumerate(specials)
        ],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": post,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": False, "vocab": vocab, "merges": merges,
        },
    }


def make_tokenizer_config(spec):
    fam = FAMILIES[spec["family"]]
    specials = fam["specials"]
    eos = fam["eos"][-1] if isinstance(fam["eos"], list) else fam["eos"]
    return {
        "add_bos_token": fam["add_bos"],
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True}
            for i, t in enumerate(specials)
        },
        "bos_token": specials[fam["bos"]] if fam["add_bos"] else None,
        "chat_template": fam["chat_template"],
        "clean_up_tokenization_spaces": False,
        "eos_token": specials[eos],
        "model_max_length": spec["max_pos"],
        "pad_token": None,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def make_generation_config(spec):
    fam = FAMILIES[spec["family"]]
    gen = {"bos_token_id": fam["bos"], "eos_token_id": fam["eos"]}
    gen.update(spec.get("generation_extra", {}))
    gen["transformers_version"] = TRANSFORMERS_VERSION
    return gen


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_weights(out_dir, weights, n_shards):
    meta = {"format": "pt"}
    if n_shards == 1:
        safetensors.numpy.save_file(weights, os.path.join(out_dir, "model.safetensors"), metadata=meta)
        return
    # Consecutive tensors in generation order, split into shards of roughly equal bytes.
    total = sum(a.nbytes for a in weights.values())
    shards = [dict() for _ in range(n_shards)]
    done = 0
    for name, arr in weights.items():
        shards[min(n_shards - 1, done * n_shards // total)][name] = arr
        done += arr.nbytes
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors"
        safetensors.numpy.save_file(shard, os.path.join(out_dir, fname), metadata=meta)
        weight_map.update({name: fname for name in shard})
    write_json(os.path.join(out_dir, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def variant_rng(variant, seed):
    return np.random.default_rng([seed, zlib.crc32(variant.encode())])


def generate(variant, out_dir, seed=0):
    """Write the model directory for `variant` into out_dir (created if needed)."""
    spec = VARIANTS[variant]
    rng = variant_rng(variant, seed)
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "config.json"), make_config(spec))
    write_json(os.path.join(out_dir, "generation_config.json"), make_generation_config(spec))
    write_json(os.path.join(out_dir, "tokenizer.json"), make_tokenizer(spec))
    write_json(os.path.join(out_dir, "tokenizer_config.json"), make_tokenizer_config(spec))
    write_weights(out_dir, make_weights(spec, rng), spec.get("shards", 1))


def write_broken(kind, out_dir):
    """Write a llama_tied_gqa directory with exactly one defect of the given kind."""
    if kind not in BROKEN_KINDS:
        raise ValueError(f"unknown broken kind {kind!r}")
    base = "llama_tied_gqa"
    spec = VARIANTS[base]
    generate(base, out_dir)
    st_path = os.path.join(out_dir, "model.safetensors")
    cfg_path = os.path.join(out_dir, "config.json")

    if kind in ("truncated", "bad_header", "bad_header_json"):
        with open(st_path, "rb") as f:
            data = f.read()
        (hlen,) = struct.unpack("<Q", data[:8])
        if kind == "truncated":
            # Cut in the middle of the data section: the header is intact, tensors are not.
            data = data[: 8 + hlen + (len(data) - 8 - hlen) // 2]
        elif kind == "bad_header":
            data = struct.pack("<Q", len(data) * 4) + data[8:]
        else:
            # Drop the two closing braces; the length field still matches.
            header = data[8:8 + hlen].rstrip()[:-2].ljust(hlen, b" ")
            data = data[:8] + header + data[8 + hlen:]
        with open(st_path, "wb") as f:
            f.write(data)
    elif kind in ("bad_shape", "bad_dtype"):
        weights = make_weights(spec, variant_rng(base, 0))
        if kind == "bad_shape":
            name = "model.layers.0.self_attn.q_proj.weight"
            weights[name] = weights[name][: weights[name].shape[0] // 2].copy()
        else:
            name = "model.layers.0.input_layernorm.weight"
            weights[name] = np.ones(weights[name].shape, np.int32)
        safetensors.numpy.save_file(weights, st_path, metadata={"format": "pt"})
    else:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
        if kind == "missing_key":
            del cfg["num_attention_heads"]
        else:
            cfg["architectures"] = ["FooForCausalLM"]
            cfg["model_type"] = "foo"
        write_json(cfg_path, cfg)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print variant names")
    ap.add_argument("--list-broken", action="store_true", help="print broken kinds")
    ap.add_argument("--broken", metavar="KIND", help="write a deliberately broken model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("args", nargs="*", metavar="VARIANT OUT_DIR")
    a = ap.parse_args()
    if a.list:
        print("\n".join(VARIANTS))
    elif a.list_broken:
        print("\n".join(BROKEN_KINDS))
    elif a.broken:
        if len(a.args) != 1 or a.broken not in BROKEN_KINDS:
            ap.error("usage: --broken KIND OUT_DIR, KIND one of " + ", ".join(BROKEN_KINDS))
        write_broken(a.broken, a.args[0])
    else:
        if len(a.args) != 2 or a.args[0] not in VARIANTS:
            ap.error("usage: VARIANT OUT_DIR, VARIANT one of " + ", ".join(VARIANTS))
        generate(a.args[0], a.args[1], a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
