#!/usr/bin/env python3
"""Independent float64 NumPy reference forward pass for ferry's tests.

Written from the Hugging Face transformers model definitions (modeling_llama,
modeling_mistral, modeling_qwen2, modeling_qwen3, modeling_gemma3, modeling_rope_utils,
masking_utils), not from ferry's code.  Supports LlamaForCausalLM,
MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma3ForCausalLM (text) and the mixtures of
experts Qwen3MoeForCausalLM, MixtralForCausalLM and Qwen2MoeForCausalLM checkpoints (modeling_qwen3_moe,
modeling_mixtral, modeling_qwen2_moe: softmax router, top-k experts, weights renormalized over the chosen
ones when norm_topk_prob / always for Mixtral; Qwen2-MoE adds a shared expert scaled by
sigmoid(x . shared_expert_gate); `routes` records every token's experts), and GptOssForCausalLM
(modeling_gpt_oss: q/k/v/o biases, a learned sink logit per head in the softmax's denominator, sliding and
full layers alternating, a router with a bias whose top-k logits are softmaxed, experts as fused
gate_up_proj [E, D, 2 Fe] (gate the even columns, up the odd) and down_proj [E, Fe, D] with biases, the clamped
SwiGLU (gate <= 7, -7 <= up <= 7, (up + 1) * gate * sigmoid(1.702 gate)), YaRN):
tied or untied embeddings, GQA, head_dim from the config, attention/MLP biases,
RMSNorm, rotate-half RoPE with default, linear, dynamic (NTK), yarn and llama3
scaling, sliding-window attention, SwiGLU MLP.  Gemma 3: embedding * sqrt(hidden),
(1 + w) RMSNorms before and after attention and MLP, per-head q/k RMSNorm before
RoPE, local (sliding) and global layers with their own RoPE, attention scale
query_pre_attn_scalar**-0.5, gelu_tanh MLP, optional final logit softcap (an
attn_logit_softcapping is refused: transformers' Gemma 3 never applies it).
Configs may use the legacy `rope_scaling` + `rope_theta` keys or the
transformers-5 `rope_parameters` dict (Gemma 3: keyed by layer type, or the
legacy rope_theta / rope_local_base_freq / rope_scaling).  Weights are read from model.safetensors
or from shards listed in model.safetensors.index.json, with a parser of its own
(F64/F32/F16/BF16).

    python3 tools/ref_forward.py HF_DIR --ids 1,2,3 [--out logits.npy] [--greedy N]
        [--compare FERRY_LOGITS [--tol 1e-4]]
    python3 tools/ref_forward.py --gguf MODEL.gguf --ids ... (same options)

--gguf runs the same forward on a llama, qwen2, qwen3 or gemma3 GGUF read with gguf-py: every tensor
dequantized (gguf.quants.dequantize) and kept in float32, llama's q/k permutation undone, Gemma's
folded +1 taken off the norms (see read_gguf), so ferry on a quantized GGUF can be compared with the
reference on the same dequantized weights.

--out saves the [T, V] float64 logits of one full forward over --ids.
--routes FILE (with --compare, a mixture of experts): ferry's FERRY_ROUTES dump names, for every layer and
token, the experts the reference chose, in its order.
--greedy N prints N greedily generated ids, comma-separated, on stdout (each
step is a full forward over the whole sequence, no cache).
--compare reads a ferry logits dump and compares its n_rows rows with a full
forward over the first n_rows of --ids (so --ids must hold at least n_rows
ids: the prompt followed by the generated tokens); it prints the max over rows
of ||ferry_r - ref_r|| / ||ref_r|| on stderr and exits 1 when that exceeds --tol.
Dump format, little-endian: b"FLGT", u32 version (1), u32 n_rows, u32 n_vocab,
then n_rows * n_vocab float32, row-major, row r = logits at position r.

Importable: forward(model_dir, ids) -> ndarray [T, V] float64,
greedy(model_dir, ids, n) -> list of n ids, Model(model_dir) or Model.from_gguf(path) to load once.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np

SUPPORTED_ARCHS = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                   "Qwen3MoeForCausalLM", "MixtralForCausalLM", "Qwen2MoeForCausalLM",
                   "Gemma3ForCausalLM", "GptOssForCausalLM")

# GptOssConfig's RoPE when config.json has none (transformers' configuration_gpt_oss)
GPTOSS_ROPE = {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
               "original_max_position_embeddings": 4096}


# ---------------------------------------------------------------- safetensors

def read_safetensors(path):
    """Return {name: float64 array} for every tensor of one .safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: shorter than the header length field")
    (hlen,) = struct.unpack("<Q", data[:8])
    if 8 + hlen > len(data):
        raise ValueError(f"{path}: header length {hlen} exceeds the file")
    header = json.loads(data[8:8 + hlen])
    body = memoryview(data)[8 + hlen:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape = info["dtype"], tuple(info["shape"])
        start, end = info["data_offsets"]
        if not 0 <= start <= end <= len(body):
            raise ValueError(f"{path}: {name} data outside the file")
        raw = body[start:end]
        if dtype == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        elif dtype in ("F64", "F32", "F16"):
            arr = np.frombuffer(raw, dtype={"F64": "<f8", "F32": "<f4", "F16": "<f2"}[dtype])
        else:
            raise ValueError(f"{path}: {name} has unsupported dtype {dtype}")
        if arr.size != math.prod(shape):
            raise ValueError(f"{path}: {name} byte size does not match shape {shape}")
        out[name] = arr.astype(np.float64).reshape(shape)
    return out


def load_weights(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        weights = {}
        for fname in sorted(set(weight_map.values())):
            weights.update(read_safetensors(os.path.join(model_dir, fname)))
        missing = set(weight_map) - set(weights)
        if missing:
            raise ValueError(f"tensors listed in the index but absent: {sorted(missing)}")
        return weights
    return read_safetensors(os.path.join(model_dir, "model.safetensors"))


# ----------------------------------------------------------------------- GGUF

GGUF_ARCHS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
              "qwen3moe": "Qwen3MoeForCausalLM", "qwen2moe": "Qwen2MoeForCausalLM",
              "gemma3": "Gemma3ForCausalLM", "gpt-oss": "GptOssForCausalLM"}

# GGUF tensor name (without blk.N.) -> HF name (without model.layers.N.), per architecture.
_GGUF_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GGUF_LAYER_NAMES_LLAMA = dict(_GGUF_LAYER_NAMES, ffn_norm="post_attention_layernorm",
                               attn_q_norm="self_attn.q_norm", attn_k_norm="self_attn.k_norm")  # qwen3
# Mixtures of experts: the router, and the stacked experts (split into the HF per-expert names).
_GGUF_MOE_NAMES = {
    "Qwen3MoeForCausalLM": ("mlp.gate", "mlp.experts.{e}.", {"ffn_gate_exps": "gate_proj", "ffn_up_exps": "up_proj",
                                                             "ffn_down_exps": "down_proj"}),
    "MixtralForCausalLM": ("block_sparse_moe.gate", "block_sparse_moe.experts.{e}.",
                           {"ffn_gate_exps": "w1", "ffn_up_exps": "w3", "ffn_down_exps": "w2"}),
    "Qwen2MoeForCausalLM": ("mlp.gate", "mlp.experts.{e}.", {"ffn_gate_exps": "gate_proj", "ffn_up_exps": "up_proj",
                                                             "ffn_down_exps": "down_proj"}),
}
# Qwen2-MoE's shared expert: GGUF name -> HF name (after model.layers.N.)
_GGUF_SHEXP_NAMES = {"ffn_gate_inp_shexp": "mlp.shared_expert_gate", "ffn_gate_shexp": "mlp.shared_expert.gate_proj",
                     "ffn_up_shexp": "mlp.shared_expert.up_proj", "ffn_down_shexp": "mlp.shared_expert.down_proj"}
_GGUF_LAYER_NAMES_GEMMA3 = dict(
    _GGUF_LAYER_NAMES, attn_q_norm="self_attn.q_norm", attn_k_norm="self_attn.k_norm",
    post_attention_norm="post_attention_layernorm", ffn_norm="pre_feedforward_layernorm",
    post_ffw_norm="post_feedforward_layernorm")


def _llama_unpermute(w, n_head):
    """Inverse of llama.cpp's q/k permutation (rows (2i, 2i+1) of each head back to (i, i + d/2))."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_gguf(path):
    """(HF-style config dict, {HF name: array}, {HF name: values per block of its GGML type}) from a llama,
    qwen2, qwen3 or gemma3 GGUF, read with gguf-py.

    Every tensor is dequantized with gguf.quants.dequantize to float32 and kept so; llama q/k rows are
    un-permuted; Gemma norm weights get their folded +1 taken off again (in float64, exactly).  Keys
    follow llama.cpp: head_dim from attention.key_length; RoPE base rope.freq_base; rope.scaling.type
    linear/yarn; a rope_freqs tensor divides the frequencies (llama3); for gemma3 the local layers are
    those with (i+1) % 6 != 0 (llama.cpp's fixed pattern, unless attention.sliding_window_pattern is
    present), their rope base rope.freq_base_swa or 10000, the attention scale attention.scale when
    present, else 1/sqrt(hidden/heads) for the 62-layer 27B and 1/sqrt(head_dim) otherwise.
    """
    import gguf

    r = gguf.GGUFReader(path)
    arch = r.fields["general.architecture"].contents()
    if arch not in GGUF_ARCHS:
        raise ValueError(f"{path}: unsupported general.architecture {arch!r}")
    missing = object()

    def kv(key, default=missing):
        f = r.fields.get(key.format(arch=arch))
        if f is None:
            if default is missing:
                raise ValueError(f"{path}: missing key {key.format(arch=arch)}")
            return default
        return f.contents()

    tensors = {t.name: t for t in r.tensors}
    embd = tensors["token_embd.weight"]
    heads = int(kv("{arch}.attention.head_count"))
    hidden = int(kv("{arch}.embedding_length"))
    n_layers = int(kv("{arch}.block_count"))
    head_dim = int(kv("{arch}.attention.key_length", hidden // heads))
    if int(kv("{arch}.attention.value_length", head_dim)) != head_dim:
        raise ValueError(f"{path}: value_length != key_length")
    if int(kv("{arch}.rope.dimension_count", head_dim)) != head_dim:
        raise ValueError(f"{path}: partial rotary (rope.dimension_count != head_dim)")
    gemma, gptoss = arch == "gemma3", arch == "gpt-oss"
    cfg = {
        "architectures": [GGUF_ARCHS[arch] if not int(kv("{arch}.expert_count", 0)) or gptoss else
                          {"llama": "MixtralForCausalLM", "qwen3moe": "Qwen3MoeForCausalLM",
                           "qwen2moe": "Qwen2MoeForCausalLM"}[arch]],
        "hidden_size": hidden,
        "num_hidden_layers": n_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": int(kv("{arch}.attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "intermediate_size": int(kv("{arch}.feed_forward_length")),
        "rms_norm_eps": float(kv("{arch}.attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(kv("{arch}.context_length")),
        "vocab_size": int(embd.shape[1]),
        "tie_word_embeddings": "output.weight" not in tensors,
    }

    rp = {"rope_type": "default", "rope_theta": float(kv("{arch}.rope.freq_base", 1e6 if gemma else 1e4))}
    scaling = kv("{arch}.rope.scaling.type", "none")
    if scaling == "linear":
        rp.update(rope_type="linear", factor=float(kv("{arch}.rope.scaling.factor")))
    elif scaling == "yarn":
        rp.update(rope_type="yarn", factor=float(kv("{arch}.rope.scaling.factor")),
                  original_max_position_embeddings=int(kv("{arch}.rope.scaling.original_context_length")),
                  beta_fast=float(kv("{arch}.rope.scaling.yarn_beta_fast", 32.0)),
                  beta_slow=float(kv("{arch}.rope.scaling.yarn_beta_slow", 1.0)))
    elif scaling != "none":
        raise ValueError(f"{path}: unsupported rope.scaling.type {scaling!r}")
    if "rope_freqs.weight" in tensors:
        if rp["rope_type"] != "default":
            raise ValueError(f"{path}: rope_freqs together with rope.scaling.type {scaling!r}")
        divisors = np.asarray(tensors["rope_freqs.weight"].data, dtype=np.float64)
        rp.update(rope_type="freq_divisors", inv_freq_divisors=divisors)

    if gptoss:  # the untruncated yarn of GptOssConfig; llama.cpp's pattern 2: even layers slide
        if rp["rope_type"] == "yarn":
            rp["truncate"] = False
        cfg["rope_parameters"] = rp
        pattern = int(kv("{arch}.attention.sliding_window_pattern", 2))
        cfg["layer_types"] = ["sliding_attention" if i % pattern < pattern - 1 else "full_attention"
                              for i in range(n_layers)]
        cfg["sliding_window"] = int(kv("{arch}.attention.sliding_window"))
        n_exp = int(kv("{arch}.expert_count"))
        cfg.update(num_local_experts=n_exp, num_experts_per_tok=int(kv("{arch}.expert_used_count")),
                   intermediate_size=int(kv("{arch}.expert_feed_forward_length", cfg["intermediate_size"])),
                   attention_bias=True)
        layer_names = dict(_GGUF_LAYER_NAMES, post_attention_norm="post_attention_layernorm",
                           ffn_gate_inp="mlp.router")
    elif gemma:
        pattern = kv("{arch}.attention.sliding_window_pattern", 6)
        if isinstance(pattern, list):
            cfg["layer_types"] = ["sliding_attention" if p else "full_attention" for p in pattern]
        else:
            cfg["sliding_window_pattern"] = int(pattern)
        cfg["sliding_window"] = int(kv("{arch}.attention.sliding_window"))
        cfg["rope_parameters"] = {
            "full_attention": rp,
            "sliding_attention": {"rope_type": "default",
                                  "rope_theta": float(kv("{arch}.rope.freq_base_swa", 1e4))}}
        scale = kv("{arch}.attention.scale", None)
        if scale is not None:
            cfg["query_pre_attn_scalar"] = 1.0 / float(scale) ** 2
        else:
            cfg["query_pre_attn_scalar"] = hidden // heads if n_layers == 62 else head_dim
        cfg["final_logit_softcapping"] = kv("{arch}.final_logit_softcapping", None)
        if kv("{arch}.attn_logit_softcapping", None) is not None:
            raise ValueError(f"{path}: attn_logit_softcapping is not part of Gemma 3")
        layer_names = _GGUF_LAYER_NAMES_GEMMA3
    else:
        cfg["rope_parameters"] = rp
        layer_names = _GGUF_LAYER_NAMES_LLAMA
    moe = _GGUF_MOE_NAMES.get(cfg["architectures"][0])
    fused = {}  # gpt-oss: (layer, GGUF name) -> array, joined into HF's fused expert tensors below
    if moe:
        n_exp = int(kv("{arch}.expert_count"))
        cfg.update(num_experts=n_exp, num_local_experts=n_exp, num_experts_per_tok=int(kv("{arch}.expert_used_count")),
                   moe_intermediate_size=int(kv("{arch}.expert_feed_forward_length", cfg["intermediate_size"])),
                   norm_topk_prob=bool(kv("{arch}.expert_weights_norm", arch != "qwen2moe")))
        if cfg["architectures"][0] == "MixtralForCausalLM":
            cfg["intermediate_size"] = cfg["moe_intermediate_size"]
        layer_names = dict(layer_names, ffn_gate_inp=moe[0])
        if arch == "qwen2moe":
            cfg["shared_expert_intermediate_size"] = int(kv("{arch}.expert_shared_feed_forward_length"))
            layer_names.update(_GGUF_SHEXP_NAMES)

    weights, blocks = {}, {}
    for name, t in tensors.items():
        if name == "rope_freqs.weight":
            continue
        base, suffix = name.rsplit(".", 1)
        if base.startswith("blk."):
            _, n, short = base.split(".", 2)
            if gptoss and (short.endswith("_exps") or short == "attn_sinks"):
                arr = gguf.quants.dequantize(t.data, t.tensor_type)
                fused[(n, name.split(".", 2)[2])] = np.asarray(arr, dtype=np.float32).reshape(
                    tuple(int(d) for d in reversed(t.shape)))
                continue
            if moe and short in moe[2]:  # stacked experts [E, rows, cols] -> one HF tensor per expert
                arr = gguf.quants.dequantize(t.data, t.tensor_type)
                arr = np.asarray(arr, dtype=np.float32).reshape(tuple(int(d) for d in reversed(t.shape)))
                for e in range(arr.shape[0]):
                    hf = f"model.layers.{n}." + moe[1].format(e=e) + moe[2][short] + "." + suffix
                    weights[hf] = arr[e]
                    blocks[hf] = gguf.constants.GGML_QUANT_SIZES[t.tensor_type][0]
                continue
            if short not in layer_names:
                raise ValueError(f"{path}: unexpected tensor {name}")
            hf = f"model.layers.{n}.{layer_names[short]}.{suffix}"
        else:
            hf = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
                  "output": "lm_head"}.get(base)
            if hf is None:
                raise ValueError(f"{path}: unexpected tensor {name}")
            hf += "." + suffix
        blocks[hf] = gguf.constants.GGML_QUANT_SIZES[t.tensor_type][0]
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        arr = np.asarray(arr, dtype=np.float32).reshape(tuple(int(d) for d in reversed(t.shape)))
        if hf.endswith("mlp.shared_expert_gate.weight") and arr.ndim == 1:
            arr = arr.reshape(1, -1)  # [D] in GGUF, [1, D] in HF
        if arch == "llama" and hf.endswith("self_attn.q_proj." + suffix):
            arr = _llama_unpermute(arr, heads)
        elif arch == "llama" and hf.endswith("self_attn.k_proj." + suffix):
            arr = _llama_unpermute(arr, cfg["num_key_value_heads"])
        if gemma and hf.endswith("norm.weight"):
            arr = arr.astype(np.float64) - 1.0
        weights[hf] = arr
    for n in sorted({k[0] for k in fused}):  # gpt-oss: HF's fused forms of the experts (x . W), and the sinks
        g = lambda k: fused[(n, k)]  # noqa: E731
        p = f"model.layers.{n}."
        gate_up = np.empty((g("ffn_gate_exps.weight").shape[0], g("ffn_gate_exps.weight").shape[2],
                            2 * g("ffn_gate_exps.weight").shape[1]), dtype=np.float32)
        gate_up[:, :, 0::2] = g("ffn_gate_exps.weight").transpose(0, 2, 1)
        gate_up[:, :, 1::2] = g("ffn_up_exps.weight").transpose(0, 2, 1)
        bias = np.empty((gate_up.shape[0], gate_up.shape[2]), dtype=np.float32)
        bias[:, 0::2], bias[:, 1::2] = g("ffn_gate_exps.bias"), g("ffn_up_exps.bias")
        weights.update({p + "mlp.experts.gate_up_proj": gate_up, p + "mlp.experts.gate_up_proj_bias": bias,
                        p + "mlp.experts.down_proj": np.ascontiguousarray(g("ffn_down_exps.weight").transpose(0, 2, 1)),
                        p + "mlp.experts.down_proj_bias": g("ffn_down_exps.bias"),
                        p + "self_attn.sinks": g("attn_sinks.weight")})
        qblock = {k: gguf.constants.GGML_QUANT_SIZES[tensors[f"blk.{n}.ffn_{k}_exps.weight"].tensor_type][0]
                  for k in ("gate", "up", "down")}
        if qblock["gate"] != qblock["up"]:
            raise ValueError(f"{path}: layer {n}: ffn_gate_exps and ffn_up_exps of different block sizes")
        blocks[p + "mlp.experts.gate_up_proj"], blocks[p + "mlp.experts.down_proj"] = qblock["gate"], qblock["down"]
    return cfg, weights, blocks


# ----------------------------------------------------------------------- RoPE

def _standardize_rope(rp, cfg, theta_default):
    rp = dict(rp)
    rp.setdefault("rope_type", rp.get("type", "default"))
    rp.setdefault("rope_theta", theta_default)
    if rp["rope_type"] in ("llama3", "yarn"):
        if "original_max_position_embeddings" in cfg:
            rp["original_max_position_embeddings"] = cfg["original_max_position_embeddings"]
        rp.setdefault("original_max_position_embeddings", cfg["max_position_embeddings"])
    if rp.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("partial_rotary_factor != 1 is not used by these architectures")
    return rp


def rope_parameters(cfg):
    """The standardized RoPE dict, as transformers' RotaryEmbeddingConfigMixin builds it.

    `rope_scaling` (legacy) wins over `rope_parameters`; values inside the dict win over
    the top-level `rope_theta`; legacy "type" stands for "rope_type"; llama3/yarn take
    a top-level `original_max_position_embeddings` first, else the dict's value, else
    max_position_embeddings.
    """
    rp = dict(cfg.get("rope_scaling") or cfg.get("rope_parameters") or {})
    if any(isinstance(v, dict) for v in rp.values()):
        raise ValueError("per-layer-type rope_parameters are only used by Gemma 3 (gemma3_rope_parameters)")
    return _standardize_rope(rp, cfg, cfg.get("rope_theta", 10000.0))


def gemma3_rope_parameters(cfg):
    """{"full_attention": rp, "sliding_attention": rp}, as Gemma3TextConfig builds them (transformers 5).

    Start from `rope_parameters` (keyed by layer type) or default RoPE for both types; a legacy
    `rope_scaling` dict is merged into the full-attention entry only; a missing rope_theta comes from
    `rope_theta` (default 1e6) for full attention and from `rope_local_base_freq` (default 1e4) for
    sliding attention.  A flat rope_parameters dict is refused: Gemma3TextConfig would ignore it.
    """
    given = cfg.get("rope_parameters")
    if given is not None and set(given) - {"full_attention", "sliding_attention"}:
        raise ValueError(f"Gemma 3 rope_parameters must be keyed by layer type, got keys {sorted(given)}")
    per_type = {t: dict((given or {}).get(t) or {"rope_type": "default"})
                for t in ("full_attention", "sliding_attention")}
    if cfg.get("rope_scaling"):
        per_type["full_attention"].update(cfg["rope_scaling"])
    return {
        "full_attention": _standardize_rope(per_type["full_attention"], cfg, cfg.get("rope_theta", 1e6)),
        "sliding_attention": _standardize_rope(per_type["sliding_attention"], cfg,
                                               cfg.get("rope_local_base_freq", 1e4)),
    }


def rope_inv_freq(cfg, head_dim, seq_len, rp=None):
    """(inv_freq [head_dim/2], attention_factor) for a forward whose max position is seq_len-1.

    rp: a standardized RoPE dict (default: rope_parameters(cfg)); an "inv_freq_divisors" entry (from a
    GGUF's rope_freqs tensor) divides the default frequencies, the form in which GGUF carries llama3 scaling.
    """
    if rp is None:
        rp = rope_parameters(cfg)
    rope_type, base, dim = rp["rope_type"], float(rp["rope_theta"]), head_dim
    exponents = np.arange(0, dim, 2, dtype=np.float64) / dim
    attention_factor = 1.0

    if rope_type == "default":
        inv_freq = 1.0 / base ** exponents
    elif rope_type == "freq_divisors":
        inv_freq = 1.0 / base ** exponents / np.asarray(rp["inv_freq_divisors"], dtype=np.float64)
    elif rope_type == "linear":
        inv_freq = 1.0 / base ** exponents / rp["factor"]
    elif rope_type == "dynamic":
        # NTK-aware: the base grows once the sequence exceeds max_position_embeddings.
        max_pos = cfg["max_position_embeddings"]
        factor = rp["factor"]
        seq = max(seq_len, max_pos)
        base = base * ((factor * seq / max_pos) - (factor - 1)) ** (dim / (dim - 2))
        inv_freq = 1.0 / base ** exponents
    elif rope_type == "yarn":
        orig = rp["original_max_position_embeddings"]
        factor = rp.get("factor")
        if factor is None:
            factor = cfg["max_position_embeddings"] / orig

        def get_mscale(scale, mscale=1.0):
            return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

        attention_factor = rp.get("attention_factor")
        if attention_factor is None:
            mscale, mscale_all_dim = rp.get("mscale"), rp.get("mscale_all_dim")
            if mscale and mscale_all_dim:
                attention_factor = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
            else:
                attention_factor = get_mscale(factor)
        beta_fast = rp.get("beta_fast") or 32
        beta_slow = rp.get("beta_slow") or 1

        def correction_dim(n_rot):
            return dim * math.log(orig / (n_rot * 2 * math.pi)) / (2 * math.log(base))

        low, high = correction_dim(beta_fast), correction_dim(beta_slow)
        if rp.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
        extrapolation = 1.0 - ramp
        pos_freqs = base ** exponents
        inv_freq = (1.0 / (factor * pos_freqs)) * (1.0 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    elif rope_type == "llama3":
        factor = rp["factor"]
        low_ff, high_ff = rp["low_freq_factor"], rp["high_freq_factor"]
        old_ctx = rp["original_max_position_embeddings"]
        inv_freq = 1.0 / base ** exponents
        wavelen = 2 * math.pi / inv_freq
        low_freq_wavelen, high_freq_wavelen = old_ctx / low_ff, old_ctx / high_ff
        smooth = (old_ctx / wavelen - low_ff) / (high_ff - low_ff)
        inv_freq = np.where(
            wavelen > low_freq_wavelen, inv_freq / factor,
            np.where(wavelen < high_freq_wavelen, inv_freq,
                     (1 - smooth) * inv_freq / factor + smooth * inv_freq))
    else:
        raise ValueError(f"unsupported rope_type {rope_type!r}")
    return inv_freq, float(attention_factor)


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


# ---------------------------------------------------------------------- model

def quantize_act(x, block):
    """ferry's activation quantizer (src/kernels/cpu/qdot.h) on float32 rows: per block of `block` values,
    dx = amax / 127, a = round-half-even(clip(x * (127 / amax), -127, 127)), all in float32; returns dx * a
    in float64."""
    x32 = np.asarray(x, dtype=np.float32)
    shape = x32.shape
    xb = x32.reshape(-1, shape[-1] // block, block)
    amax = np.abs(xb).max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        iscale = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        v = xb * iscale
    # a block of subnormal values overflows 127 / amax to inf; 0 * inf is NaN, which ferry's clamp sends to -127
    # (src/kernels/cpu/qdot.c: only finite values in range pass), times a subnormal dx: as good as 0
    a = np.rint(np.clip(np.where(np.isnan(v), np.float32(-127), v), np.float32(-127), np.float32(127)))
    dx = (amax / np.float32(127)).astype(np.float32)
    return (dx.astype(np.float64) * a).reshape(shape)


class Model:
    """A loaded checkpoint; logits(ids) runs one full float64 forward.

    Model(hf_dir) reads a Hugging Face directory, Model.from_gguf(path) a GGUF file (see read_gguf).
    Internally both are an HF-style config dict and HF-named weights: from safetensors those are float64;
    from a GGUF they stay float32 (the dequantized values, exact in float32) and are widened per use,
    so that a 270M model with a 262144-row embedding fits in memory.  Activations are float64 throughout.
    """

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        self._setup(cfg, load_weights(model_dir))

    @classmethod
    def from_gguf(cls, path, act_q8=False):
        """act_q8: emulate ferry's CPU matmul on quantized weights, whose input rows are quantized to 8 bits
        per block of the weight's format (src/kernels/cpu/qdot.h): the input of every linear layer and of the
        head whose weights are quantized goes through quantize_act first, in float32 as ferry does."""
        cfg, weights, blocks = read_gguf(path)
        model = cls.__new__(cls)
        model._setup(cfg, weights)
        if act_q8:
            model.act_blocks = {k: b for k, b in blocks.items() if b > 1}
            if model.lm_head is model.w.get("model.embed_tokens.weight"):
                model.act_blocks["lm_head.weight"] = model.act_blocks.get("model.embed_tokens.weight", 1)
        return model

    def _act(self, x, name):
        """x as the matmul with weight `name` sees it (act_q8: 8-bit codes per block, dequantized)"""
        b = self.act_blocks.get(name, 1) if self.act_blocks else 1
        if isinstance(b, tuple):  # (block, perm): a weight stored with permuted columns sees x[perm] in blocks
            b, perm = b
            y = np.empty_like(x)
            y[..., perm] = quantize_act(x[..., perm], b)
            return y
        return x if b == 1 else quantize_act(x, b)

    def _setup(self, cfg, weights):
        archs = cfg.get("architectures") or []
        if len(archs) != 1 or archs[0] not in SUPPORTED_ARCHS:
            raise ValueError(f"unsupported architectures {archs}")
        self.arch = archs[0]
        self.gemma = self.arch == "Gemma3ForCausalLM"
        self.qk_norm = self.gemma or self.arch in ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM")  # per head, before RoPE
        # Mixtures of experts: (router name, expert prefix, {gate, up, down: HF name}) after model.layers.N.
        self.moe = {"Qwen3MoeForCausalLM": ("mlp.gate", "mlp.experts.{e}.",
                                            {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}),
                    "MixtralForCausalLM": ("block_sparse_moe.gate", "block_sparse_moe.experts.{e}.",
                                           {"gate": "w1", "up": "w3", "down": "w2"}),
                    "Qwen2MoeForCausalLM": ("mlp.gate", "mlp.experts.{e}.",
                                            {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"})}.get(self.arch)
        self.shared_expert = self.arch == "Qwen2MoeForCausalLM"
        self.gptoss = self.arch == "GptOssForCausalLM"
        if self.gptoss:
            self.moe = ("mlp.router", "mlp.experts.", {})
            if cfg.get("swiglu_limit", 7.0) != 7.0 or cfg.get("swiglu_alpha", 1.702) != 1.702:
                raise ValueError("gpt-oss with swiglu_limit/alpha other than 7 and 1.702")
            if not (cfg.get("rope_scaling") or cfg.get("rope_parameters")):
                cfg = dict(cfg, rope_scaling=GPTOSS_ROPE, rope_theta=cfg.get("rope_theta", 150000.0))
        self.routes = []  # (layer, position, (experts, largest weight first)) of the latest logits()
        if self.gemma:
            if cfg.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
                raise ValueError(f"unsupported hidden_activation {cfg['hidden_activation']!r}")
            # transformers' Gemma3Attention never passes attn_logit_softcapping to its attention function
            # (Gemma 2 does), and llama.cpp's converter asserts it is absent: refuse rather than guess.
            if cfg.get("attn_logit_softcapping") is not None:
                raise ValueError("attn_logit_softcapping is set; transformers' Gemma 3 ignores it")
            if cfg.get("use_bidirectional_attention"):
                raise ValueError("use_bidirectional_attention is not supported")
        elif cfg.get("hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported hidden_act {cfg['hidden_act']!r}")
        self.cfg = cfg
        self.kv_store = None  # (keys, values) functions: emulate a lossy KV cache (tests/test_ppl.py)
        self.act_blocks = None  # {weight name: block or (block, column perm)}: emulate 8-bit matmul inputs (from_gguf(act_q8=True))
        self.hidden = cfg["hidden_size"]
        self.n_layers = cfg["num_hidden_layers"]
        self.n_heads = cfg["num_attention_heads"]
        self.n_kv = cfg.get("num_key_value_heads") or self.n_heads
        default_head_dim = (256 if self.gemma else 128 if self.arch in ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM")
                            else self.hidden // self.n_heads)
        self.head_dim = cfg.get("head_dim") or default_head_dim
        self.inter = cfg["intermediate_size"]
        self.vocab = cfg["vocab_size"]
        self.eps = cfg.get("rms_norm_eps", 1e-6 if self.gemma else 1e-5 if self.gptoss else None)
        if self.eps is None:
            raise ValueError("rms_norm_eps missing")
        if self.n_heads % self.n_kv:
            raise ValueError("num_attention_heads is not a multiple of num_key_value_heads")
        if self.moe:
            mixtral = self.arch in ("MixtralForCausalLM", "GptOssForCausalLM")
            self.n_experts = cfg["num_local_experts" if mixtral else "num_experts"]
            self.top_k = cfg["num_experts_per_tok"]
            self.expert_inter = cfg["intermediate_size" if mixtral else "moe_intermediate_size"]
            self.norm_topk = True if mixtral else bool(cfg.get("norm_topk_prob", False))
            self.shared_inter = cfg.get("shared_expert_intermediate_size") if self.shared_expert else None
            if not mixtral and (cfg.get("decoder_sparse_step", 1) != 1 or cfg.get("mlp_only_layers")):
                raise ValueError("dense layers among the expert layers are not supported")

        # Per layer: sliding window (None = full attention) and the RoPE parameters.
        self.windows = [None] * self.n_layers
        if self.gemma:
            # Layer types: `layer_types`, else the legacy pattern (layer i sliding iff (i+1) % pattern != 0).
            pattern = cfg.get("sliding_window_pattern", 6)
            types = cfg.get("layer_types") or [
                "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(self.n_layers)]
            if len(types) != self.n_layers or set(types) - {"sliding_attention", "full_attention"}:
                raise ValueError(f"bad layer_types {types}")
            self.layer_types = types
            self.windows = [cfg.get("sliding_window", 4096) if t == "sliding_attention" else None for t in types]
            self.rope = gemma3_rope_parameters(cfg)
            self.scale = float(cfg.get("query_pre_attn_scalar", 256)) ** -0.5
            self.final_softcap = cfg.get("final_logit_softcapping")
        else:
            self.layer_types = ["full_attention"] * self.n_layers
            self.rope = {"full_attention": rope_parameters(cfg)}
            self.scale = 1.0 / math.sqrt(self.head_dim)
            self.final_softcap = None
            # Mistral applies config.sliding_window to every layer (it ignores layer_types); Qwen2 only when
            # use_sliding_window, on the layers that layer_types (default: index >= max_window_layers) marks
            # "sliding_attention"; Llama never.
            if self.arch in ("MistralForCausalLM", "MixtralForCausalLM"):
                self.windows = [cfg.get("sliding_window")] * self.n_layers
            elif self.gptoss:  # GptOssConfig: layer_types, else sliding, full, sliding, ...
                types = cfg.get("layer_types") or ["sliding_attention" if (i + 1) % 2 else "full_attention"
                                                   for i in range(self.n_layers)]
                if len(types) != self.n_layers or set(types) - {"sliding_attention", "full_attention"}:
                    raise ValueError(f"bad layer_types {types}")
                self.windows = [cfg.get("sliding_window", 128) if t == "sliding_attention" else None for t in types]
            elif (self.arch in ("Qwen2ForCausalLM", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM", "Qwen2MoeForCausalLM")
                  and cfg.get("use_sliding_window", False)):
                sw = cfg.get("sliding_window")
                types = cfg.get("layer_types") or [
                    "sliding_attention" if sw is not None and i >= cfg.get("max_window_layers", 28)
                    else "full_attention" for i in range(self.n_layers)]
                self.windows = [sw if t == "sliding_attention" else None for t in types]

        # Which projections carry biases, per architecture.
        if self.arch in ("LlamaForCausalLM", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM"):
            qkv_bias = o_bias = bool(cfg.get("attention_bias", False))
            mlp_bias = bool(cfg.get("mlp_bias", False))
        elif self.arch in ("Qwen2ForCausalLM", "Qwen2MoeForCausalLM"):
            qkv_bias, o_bias, mlp_bias = True, False, False
        elif self.gemma:
            qkv_bias = o_bias = bool(cfg.get("attention_bias", False))
            mlp_bias = False
        elif self.gptoss:
            qkv_bias = o_bias = bool(cfg.get("attention_bias", True))
            mlp_bias = False
        else:
            qkv_bias = o_bias = mlp_bias = False

        # Expected tensors and shapes ([out, in] for Linear).
        h, q_out, kv_out = self.hidden, self.n_heads * self.head_dim, self.n_kv * self.head_dim
        expected = {"model.embed_tokens.weight": (self.vocab, h), "model.norm.weight": (h,)}
        tied = bool(cfg.get("tie_word_embeddings", self.gemma))
        if not tied:
            expected["lm_head.weight"] = (self.vocab, h)
        norms = ["input_layernorm", "post_attention_layernorm"]
        if self.gemma:
            norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            lin = {"self_attn.q_proj": (q_out, h, qkv_bias), "self_attn.k_proj": (kv_out, h, qkv_bias),
                   "self_attn.v_proj": (kv_out, h, qkv_bias), "self_attn.o_proj": (h, q_out, o_bias),
                   "mlp.gate_proj": (self.inter, h, mlp_bias), "mlp.up_proj": (self.inter, h, mlp_bias),
                   "mlp.down_proj": (h, self.inter, mlp_bias)}
            if self.gptoss:
                for k in ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
                    del lin[k]
                E, fe = self.n_experts, self.expert_inter
                lin["mlp.router"] = (E, h, True)
                expected[p + "self_attn.sinks"] = (self.n_heads,)
                expected[p + "mlp.experts.gate_up_proj"] = (E, h, 2 * fe)
                expected[p + "mlp.experts.gate_up_proj_bias"] = (E, 2 * fe)
                expected[p + "mlp.experts.down_proj"] = (E, fe, h)
                expected[p + "mlp.experts.down_proj_bias"] = (E, h)
            elif self.moe:
                for k in ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
                    del lin[k]
                router, ex, names = self.moe
                lin[router] = (self.n_experts, h, False)
                for e in range(self.n_experts):
                    lin[ex.format(e=e) + names["gate"]] = (self.expert_inter, h, False)
                    lin[ex.format(e=e) + names["up"]] = (self.expert_inter, h, False)
                    lin[ex.format(e=e) + names["down"]] = (h, self.expert_inter, False)
                if self.shared_expert:
                    lin["mlp.shared_expert_gate"] = (1, h, False)
                    lin["mlp.shared_expert.gate_proj"] = (self.shared_inter, h, False)
                    lin["mlp.shared_expert.up_proj"] = (self.shared_inter, h, False)
                    lin["mlp.shared_expert.down_proj"] = (h, self.shared_inter, False)
            for name, (n_out, n_in, bias) in lin.items():
                expected[p + name + ".weight"] = (n_out, n_in)
                if bias:
                    expected[p + name + ".bias"] = (n_out,)
            for name in norms:
                expected[p + name + ".weight"] = (h,)
            if self.qk_norm:
                expected[p + "self_attn.q_norm.weight"] = (self.head_dim,)
                expected[p + "self_attn.k_norm.weight"] = (self.head_dim,)

        if tied:
            # HF ties lm_head to the embedding and ignores a stored lm_head.weight.
            weights.pop("lm_head.weight", None)
        extra = {n for n in weights if not n.endswith("rotary_emb.inv_freq")} - set(expected)
        missing = set(expected) - set(weights)
        if missing or extra:
            raise ValueError(f"tensor names do not match the config: missing {sorted(missing)}, "
                             f"unexpected {sorted(extra)}")
        for name, shape in expected.items():
            if weights[name].shape != shape:
                raise ValueError(f"{name}: shape {weights[name].shape}, expected {shape}")
        self.w = weights
        self.lm_head = weights["model.embed_tokens.weight"] if tied else weights["lm_head.weight"]

    def rope_types(self):
        """The rope_type of every layer type this model uses."""
        return sorted({self.rope[t]["rope_type"] for t in set(self.layer_types)})

    def _linear(self, x, name):
        y = self._act(x, name + ".weight") @ self.w[name + ".weight"].T.astype(np.float64)
        bias = self.w.get(name + ".bias")
        return y if bias is None else y + bias

    def _rms_norm(self, x, name):
        w = self.w[name].astype(np.float64)
        if self.gemma:
            w = 1.0 + w
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def _attention(self, x, p, cos, sin, window):
        T, hd = x.shape[0], self.head_dim
        q = self._linear(x, p + "q_proj").reshape(T, self.n_heads, hd).transpose(1, 0, 2)
        k = self._linear(x, p + "k_proj").reshape(T, self.n_kv, hd).transpose(1, 0, 2)
        v = self._linear(x, p + "v_proj").reshape(T, self.n_kv, hd).transpose(1, 0, 2)
        if self.qk_norm:
            # Per-head RMSNorm over head_dim, before RoPE.
            q = self._rms_norm(q, p + "q_norm.weight")
            k = self._rms_norm(k, p + "k_norm.weight")
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.kv_store is not None:  # what a KV cache format keeps of k and v ([Hkv, T, Dh] each)
            k, v = self.kv_store[0](k), self.kv_store[1](v)
        # Query head h reads key/value head h // (n_heads / n_kv) (HF repeat_kv).
        rep = self.n_heads // self.n_kv
        k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
        scores = q @ k.transpose(0, 2, 1) * self.scale
        # transformers' masks: key j is visible to query i iff j <= i and, with a window, i - j < window
        # (masking_utils.sliding_window_overlay: kv_idx > q_idx - sliding_window).
        i, j = np.arange(T)[:, None], np.arange(T)[None, :]
        visible = j <= i
        if window is not None:
            visible &= (i - j) < window
        scores = np.where(visible, scores, -np.inf)
        if self.gptoss:
            # modeling_gpt_oss: the head's sink logit joins the softmax as one more column, then is dropped
            sinks = np.broadcast_to(self.w[p + "sinks"].astype(np.float64)[:, None, None], (self.n_heads, T, 1))
            scores = np.concatenate([scores, sinks], axis=-1)
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        probs = probs[..., :T]
        out = (probs @ v).transpose(1, 0, 2).reshape(T, self.n_heads * hd)
        return self._linear(out, p + "o_proj")

    def _mlp(self, x, p, mlp="mlp."):
        gate = self._linear(x, p + mlp + "gate_proj")
        if self.gemma:
            # gelu_pytorch_tanh
            act = 0.5 * gate * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (gate + 0.044715 * gate ** 3)))
        else:
            act = gate / (1.0 + np.exp(-gate))
        return self._linear(act * self._linear(x, p + mlp + "up_proj"), p + mlp + "down_proj")

    def _moe(self, x, p, layer):
        """The mixture of experts: softmax over the router's logits, the top_k experts of each token (ties: the
        lower id, as a stable sort), their probabilities (renormalized over the chosen when norm_topk) weighting
        the experts' SwiGLU MLPs."""
        router, ex, names = self.moe
        logits = self._linear(x, p + router)
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        out = np.zeros_like(x)
        for t in range(x.shape[0]):
            top = np.argsort(-probs[t], kind="stable")[:self.top_k]
            w = probs[t, top]
            if self.norm_topk:
                w = w / w.sum()
            self.routes.append((layer, t, tuple(int(e) for e in top)))
            for e, we in zip(top, w):
                q = p + ex.format(e=int(e))
                xt = x[t:t + 1]
                gate = self._linear(xt, q + names["gate"])
                act = gate / (1.0 + np.exp(-gate))
                out[t] += we * self._linear(act * self._linear(xt, q + names["up"]), q + names["down"])[0]
        if self.shared_expert:  # modeling_qwen2_moe: sigmoid(shared_expert_gate(x)) * shared_expert(x)
            gate = 1.0 / (1.0 + np.exp(-self._linear(x, p + "mlp.shared_expert_gate")))
            out = out + gate * self._mlp(x, p + "mlp.shared_expert.", "")
        return out

    def _moe_gptoss(self, x, p, layer):
        """modeling_gpt_oss's GptOssMLP: router logits (with bias), the top_k largest (ties: the lower id), a
        softmax over those; each chosen expert: gate_up = x . gate_up_proj[e] + bias, gate = even columns,
        up = odd columns, the clamped SwiGLU, then . down_proj[e] + bias, weighted."""
        logits = self._linear(x, p + "mlp.router")
        gu_w, gu_b = self.w[p + "mlp.experts.gate_up_proj"], self.w[p + "mlp.experts.gate_up_proj_bias"]
        dn_w, dn_b = self.w[p + "mlp.experts.down_proj"], self.w[p + "mlp.experts.down_proj_bias"]
        out = np.zeros_like(x)
        for t in range(x.shape[0]):
            top = np.argsort(-logits[t], kind="stable")[:self.top_k]
            w = np.exp(logits[t, top] - logits[t, top].max())
            w /= w.sum()
            self.routes.append((layer, t, tuple(int(e) for e in top)))
            for e, we in zip(top, w):
                gate_up = self._act(x[t], p + "mlp.experts.gate_up_proj") @ gu_w[e].astype(np.float64) + gu_b[e]
                gate = np.minimum(gate_up[0::2], 7.0)
                up = np.clip(gate_up[1::2], -7.0, 7.0)
                act = (up + 1.0) * gate / (1.0 + np.exp(-1.702 * gate))
                out[t] += we * (self._act(act, p + "mlp.experts.down_proj") @ dn_w[e].astype(np.float64) + dn_b[e])
        return out

    def _rope_tables(self, T):
        """{layer_type: (cos, sin)}, each [T, head_dim]."""
        tables = {}
        for t in set(self.layer_types):
            inv_freq, attention_factor = rope_inv_freq(self.cfg, self.head_dim, T, self.rope[t])
            freqs = np.arange(T, dtype=np.float64)[:, None] * inv_freq[None, :]
            emb = np.concatenate([freqs, freqs], axis=-1)
            tables[t] = (np.cos(emb) * attention_factor, np.sin(emb) * attention_factor)
        return tables

    def logits(self, ids):
        """[T, V] float64 logits of one full forward over ids (positions 0..T-1)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0 or ids.min() < 0 or ids.max() >= self.vocab:
            raise ValueError("ids must be a non-empty list of token ids below vocab_size")
        T = ids.size
        rope = self._rope_tables(T)
        self.routes = []

        x = self.w["model.embed_tokens.weight"][ids].astype(np.float64)
        if self.gemma:
            x = x * math.sqrt(self.hidden)
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            cos, sin = rope[self.layer_types[i]]
            a = self._attention(self._rms_norm(x, p + "input_layernorm.weight"), p + "self_attn.", cos, sin,
                                self.windows[i])
            if self.gemma:
                x = x + self._rms_norm(a, p + "post_attention_layernorm.weight")
                m = self._mlp(self._rms_norm(x, p + "pre_feedforward_layernorm.weight"), p)
                x = x + self._rms_norm(m, p + "post_feedforward_layernorm.weight")
            else:
                x = x + a
                h = self._rms_norm(x, p + "post_attention_layernorm.weight")
                x = x + (self._moe_gptoss(h, p, i) if self.gptoss else self._moe(h, p, i) if self.moe
                         else self._mlp(h, p))
        x = self._rms_norm(x, "model.norm.weight")
        # The head in row blocks: a float32 [262144, 640] head is never widened whole.
        out = np.empty((T, self.vocab), dtype=np.float64)
        x = self._act(x, "lm_head.weight")
        for r in range(0, self.vocab, 32768):
            out[:, r:r + 32768] = x @ self.lm_head[r:r + 32768].astype(np.float64).T
        if self.final_softcap is not None:
            out = np.tanh(out / self.final_softcap) * self.final_softcap
        return out

    def greedy(self, ids, n):
        """n greedily generated ids; every step is a full forward over the whole sequence."""
        seq = list(ids)
        for _ in range(n):
            seq.append(int(np.argmax(self.logits(seq)[-1])))
        return seq[len(ids):]


def forward(model_dir, ids):
    return Model(model_dir).logits(ids)


def greedy(model_dir, ids, n):
    return Model(model_dir).greedy(ids, n)


# ------------------------------------------------------------- ferry dumps

def read_flgt(path):
    """Read a ferry logits dump into a float32 array [n_rows, n_vocab]."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 16 or data[:4] != b"FLGT":
        raise ValueError(f"{path}: not a FLGT logits dump")
    version, n_rows, n_vocab = struct.unpack("<III", data[4:16])
    if version != 1:
        raise ValueError(f"{path}: unsupported FLGT version {version}")
    if len(data) != 16 + 4 * n_rows * n_vocab:
        raise ValueError(f"{path}: size does not match {n_rows} x {n_vocab} float32")
    return np.frombuffer(data, dtype="<f4", offset=16).reshape(n_rows, n_vocab)


def compare(model, ids, dump):
    """Max over rows of ||dump_r - ref_r|| / ||ref_r||, the worst row, and the argmax matches."""
    n_rows, n_vocab = dump.shape
    if n_vocab != model.vocab:
        raise ValueError(f"dump has {n_vocab} columns, the model's vocab_size is {model.vocab}")
    if n_rows == 0 or len(ids) < n_rows:
        raise ValueError(f"dump has {n_rows} rows; --ids must give at least that many ids")
    ref = model.logits(ids[:n_rows])
    got = dump.astype(np.float64)
    err = np.linalg.norm(got - ref, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), 1e-300)
    err = np.where(np.isfinite(err), err, np.inf)
    agree = int(np.sum(np.argmax(got, axis=1) == np.argmax(ref, axis=1)))
    return float(err.max()), int(err.argmax()), agree


def read_routes(path):
    """ferry's FERRY_ROUTES dump: {(layer, position): (experts...)}; a position stepped twice must agree."""
    routes = {}
    with open(path, encoding="ascii") as f:
        for n, line in enumerate(f, 1):
            v = [int(t) for t in line.split()]
            if len(v) < 3:
                raise ValueError(f"{path}:{n}: expected 'layer position expert...'")
            key, experts = (v[0], v[1]), tuple(v[2:])
            if routes.setdefault(key, experts) != experts:
                raise ValueError(f"{path}:{n}: layer {v[0]} position {v[1]} routed twice, differently")
    return routes


def compare_routes(model, routes, n_rows, ordered=True):
    """Mismatches between the reference's routes (of its latest logits()) and ferry's, over positions < n_rows:
    a list of (layer, position, reference experts, ferry experts or None). ordered=False compares the sets
    (8-bit matmul inputs can swap two chosen experts of near-equal weight, which changes no output)."""
    bad = []
    for layer, t, experts in model.routes:
        got = routes.get((layer, t))
        same = got == experts if ordered else got is not None and sorted(got) == sorted(experts)
        if t < n_rows and not same:
            bad.append((layer, t, experts, routes.get((layer, t))))
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", nargs="?", help="Hugging Face directory (or give --gguf)")
    ap.add_argument("--gguf", metavar="PATH", help="read a llama/qwen2/qwen3/gemma3 GGUF instead (dequantized)")
    ap.add_argument("--ids", required=True, help="comma-separated token ids")
    ap.add_argument("--out", help="save the [T, V] float64 logits as .npy")
    ap.add_argument("--greedy", type=int, default=0, metavar="N",
                    help="print N greedily generated ids on stdout")
    ap.add_argument("--compare", metavar="FERRY_LOGITS", help="compare with a FLGT dump")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--routes", metavar="FERRY_ROUTES",
                    help="with --compare: ferry's routes dump (FERRY_ROUTES=FILE) must choose the reference's experts")
    a = ap.parse_args()
    if (a.model_dir is None) == (a.gguf is None):
        ap.error("give either HF_DIR or --gguf PATH")
    ids = [int(t) for t in a.ids.split(",") if t.strip()]
    model = Model(a.model_dir) if a.gguf is None else Model.from_gguf(a.gguf)
    if a.out:
        np.save(a.out, model.logits(ids))
    if a.greedy:
        print(",".join(str(t) for t in model.greedy(ids, a.greedy)))
    if a.compare:
        try:
            dump = read_flgt(a.compare)
            err, row, agree = compare(model, ids, dump)
        except ValueError as e:
            print(f"compare: FAIL: {e}", file=sys.stderr)
            return 1
        n_rows = dump.shape[0]
        ok = err <= a.tol
        print(f"compare: {'PASS' if ok else 'FAIL'}: max_rel_err={err:.3e} (row {row}, tol {a.tol:g}), "
              f"argmax agrees on {agree}/{n_rows} rows", file=sys.stderr)
        if a.routes:
            try:
                bad = compare_routes(model, read_routes(a.routes), n_rows)
            except (OSError, ValueError) as e:
                print(f"routes: FAIL: {e}", file=sys.stderr)
                return 1
            n = sum(1 for r in model.routes if r[1] < n_rows)
            if not n:
                print("routes: FAIL: the reference routed no token (not a mixture of experts)", file=sys.stderr)
                return 1
            print(f"routes: {'PASS' if not bad else 'FAIL'}: {n - len(bad)}/{n} (layer, token) choices equal"
                  + (f"; first mismatch {bad[0]}" if bad else ""), file=sys.stderr)
            ok = ok and not bad
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
