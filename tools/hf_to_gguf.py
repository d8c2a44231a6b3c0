#!/usr/bin/env python3
"""Write a GGUF of a (tiny) Hugging Face checkpoint, the way llama.cpp's convert_hf_to_gguf.py would.

For ferry's GGUF tests: a model from tools/gen_tiny_model.py goes through this and through ferry's GGUF
loader, and ferry's logits are compared with tools/ref_forward.py on the HF directory (F32) or on this
GGUF itself (ref_forward --gguf, for quantized types).  Written with gguf-py's GGUFWriter, tensor names
from gguf-py's TensorNameMap, and the conventions of llama.cpp's converter:

- LlamaForCausalLM: q_proj/k_proj rows permuted so that RoPE pairs become adjacent (llama.cpp's "NORM"
  rope): W.reshape(n_head, 2, rows/n_head/2, ...).swapaxes(1, 2), k with n_kv_head.  Linear and yarn
  scaling go to rope.scaling.*; llama3 scaling becomes the F32 tensor rope_freqs (frequency divisors);
  dynamic NTK has no GGUF form and is refused.
- Qwen2ForCausalLM: no permutation (rotate-half "NEOX" rope), q/k/v biases.
- Qwen3ForCausalLM: no permutation, q/k RMSNorm per head (attn_q_norm / attn_k_norm, weights as stored).
- Qwen3MoeForCausalLM (qwen3moe) and MixtralForCausalLM (llama with expert_count, q/k permuted): the router
  as ffn_gate_inp, the per-expert matrices stacked into ffn_{gate,up,down}_exps [E, rows, cols];
  expert_count, expert_used_count, expert_feed_forward_length.  One key beyond llama.cpp's converter:
  {arch}.expert_weights_norm when norm_topk_prob differs from llama.cpp's graph for the architecture (qwen3moe
  and Mixtral renormalize, qwen2moe does not).
- Qwen2MoeForCausalLM (qwen2moe): q/k/v biases, the shared expert as ffn_{gate,up,down}_shexp and its gate as
  the vector ffn_gate_inp_shexp [D]; expert_shared_feed_forward_length.
- GptOssForCausalLM (gpt-oss): sinks as attn_sinks.weight [H], post_attention_layernorm as post_attention_norm,
  the router (with its bias) as ffn_gate_inp, the fused experts split as llama.cpp's converter does: gate_up_proj
  [E, D, 2 Fe] into ffn_gate_exps (even columns) and ffn_up_exps (odd), transposed to [E, Fe, D], down_proj
  [E, Fe, D] transposed into ffn_down_exps [E, D, Fe], their biases likewise (.bias, F32);
  attention.sliding_window (llama.cpp's pattern: even layers slide), yarn's factor and original context
  (llama.cpp has no truncate key: gpt-oss readers take the untruncated form of GptOssConfig). --type MXFP4
  writes the expert matrices in MXFP4 (gguf-py's quantizer) and the other matrices F32.
- Gemma3ForCausalLM: every norm weight gets Gemma's +1 folded in, computed in the checkpoint's dtype
  (llama.cpp adds it to the torch tensor before widening, so a bf16 checkpoint gets bf16(1 + w));
  attention.sliding_window, final_logit_softcapping if set, linear scaling of the global layers as
  rope.scaling.*.  llama.cpp fixes the local:global pattern at 5:1 and the local rope base at 10000, so
  other layer_types or rope_local_base_freq are refused.  One key goes beyond llama.cpp's converter:
  {arch}.attention.scale = query_pre_attn_scalar**-0.5, written only when query_pre_attn_scalar differs
  from head_dim (llama.cpp itself derives the scale from the model size: 27B uses hidden/heads).
- Tokenizer: byte-level BPE tokenizer.json (the tiny models') as tokenizer.ggml.model "gpt2", pre
  "gpt2", tokens (added special tokens typed 3 = control, others 1), merges, bos/eos from
  tokenizer_config.json (else config.json), add_bos_token, chat_template.
- Types: 1-D tensors stay F32; 2-D tensors become --type, falling back to F16 when a row is not a
  whole number of quant blocks (as convert_hf_to_gguf.py does).  gguf-py quantizes F16, BF16, Q8_0,
  Q4_0, Q5_0 (and Q4_1, Q5_1) but not the K-quants.

    python3 tools/hf_to_gguf.py HF_DIR OUT.gguf [--type F32|F16|BF16|Q8_0|Q4_0|Q5_0]

Importable: convert(hf_dir, out_path, type_name="F32").
"""

import argparse
import json
import os
import struct
import sys

import gguf
import ml_dtypes
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_forward  # noqa: E402

ARCHS = {"LlamaForCausalLM": gguf.MODEL_ARCH.LLAMA, "Qwen2ForCausalLM": gguf.MODEL_ARCH.QWEN2,
         "Qwen3ForCausalLM": gguf.MODEL_ARCH.QWEN3, "Gemma3ForCausalLM": gguf.MODEL_ARCH.GEMMA3,
         "Qwen3MoeForCausalLM": gguf.MODEL_ARCH.QWEN3MOE, "MixtralForCausalLM": gguf.MODEL_ARCH.LLAMA,
         "Qwen2MoeForCausalLM": gguf.MODEL_ARCH.QWEN2MOE, "GptOssForCausalLM": gguf.MODEL_ARCH.GPT_OSS}

Q = gguf.GGMLQuantizationType
FT = gguf.LlamaFileType
TYPES = {"F32": (Q.F32, FT.ALL_F32), "F16": (Q.F16, FT.MOSTLY_F16), "BF16": (Q.BF16, FT.MOSTLY_BF16),
         "Q8_0": (Q.Q8_0, FT.MOSTLY_Q8_0), "Q4_0": (Q.Q4_0, FT.MOSTLY_Q4_0), "Q5_0": (Q.Q5_0, FT.MOSTLY_Q5_0),
         "Q4_1": (Q.Q4_1, FT.MOSTLY_Q4_1), "Q5_1": (Q.Q5_1, FT.MOSTLY_Q5_1),
         "MXFP4": (Q.MXFP4, FT.MOSTLY_MXFP4_MOE)}

SOURCE_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64}


def source_dtypes(model_dir):
    """{tensor name: safetensors dtype string} from the headers of the checkpoint's files."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for fname in files:
        with open(os.path.join(model_dir, fname), "rb") as f:
            (hlen,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(hlen))
        out.update({k: v["dtype"] for k, v in header.items() if k != "__metadata__"})
    return out


def llama_permute(w, n_head):
    """llama.cpp's LlamaModel.permute: rotate-half pairs (i, i + d/2) become adjacent rows (2i, 2i + 1)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(rp, head_dim):
    """The divisors llama.cpp stores as rope_freqs for rope_type llama3 (1 = kept, factor = interpolated)."""
    base, factor = float(rp["rope_theta"]), float(rp["factor"])
    low, high = float(rp["low_freq_factor"]), float(rp["high_freq_factor"])
    old_ctx = float(rp["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    factors = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * np.pi / (1.0 / base ** (i / head_dim))
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def write_rope_scaling(w, rp, gptoss=False):
    """rope.scaling.* for linear and yarn; the caller handles default and llama3. gpt-oss's yarn is the
    untruncated one (its readers know)."""
    if rp["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rp["factor"]))
    elif rp["rope_type"] == "yarn":
        if rp.get("attention_factor") is not None or rp.get("mscale") or rp.get("mscale_all_dim") \
                or rp.get("truncate", True) == gptoss:
            raise ValueError("yarn with attention_factor/mscale/truncate has no GGUF form here")
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rp["factor"]))
        w.add_rope_scaling_orig_ctx_len(int(rp["original_max_position_embeddings"]))
        w.add_rope_scaling_yarn_beta_fast(float(rp.get("beta_fast") or 32))
        w.add_rope_scaling_yarn_beta_slow(float(rp.get("beta_slow") or 1))
    elif rp["rope_type"] not in ("default", "llama3"):
        raise ValueError(f"rope_type {rp['rope_type']!r} has no GGUF form")


def write_hparams(w, m, cfg):
    """Architecture metadata from a loaded ref_forward.Model (its config already standardized)."""
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(m.hidden)
    w.add_block_count(m.n_layers)
    w.add_feed_forward_length(m.inter)
    w.add_head_count(m.n_heads)
    w.add_head_count_kv(m.n_kv)
    w.add_key_length(m.head_dim)
    w.add_value_length(m.head_dim)
    w.add_layer_norm_rms_eps(float(m.eps))
    w.add_rope_dimension_count(m.head_dim)
    w.add_vocab_size(m.vocab)
    full = m.rope["full_attention"]
    w.add_rope_freq_base(float(full["rope_theta"]))
    write_rope_scaling(w, full, m.gptoss)
    if m.gptoss:
        if m.windows != [m.windows[0] if i % 2 == 0 else None for i in range(m.n_layers)] or m.windows[0] is None:
            raise ValueError("llama.cpp's gpt-oss slides the even layers only; this config differs")
        w.add_sliding_window(int(m.windows[0]))
    elif m.gemma:
        want = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(m.n_layers)]
        local = m.rope["sliding_attention"]
        if m.layer_types != want or local["rope_type"] != "default" or float(local["rope_theta"]) != 1e4:
            raise ValueError("llama.cpp's gemma3 fixes layer i local iff (i+1) % 6 != 0 and the local rope "
                             "base at 10000; this config differs")
        if full["rope_type"] not in ("default", "linear"):
            raise ValueError("llama.cpp's gemma3 converter accepts only linear scaling")
        w.add_sliding_window(int(cfg.get("sliding_window", 4096)))
        if m.final_softcap:
            w.add_final_logit_softcapping(float(m.final_softcap))
        if float(cfg.get("query_pre_attn_scalar", 256)) != m.head_dim:
            w.add_float32(gguf.Keys.Attention.SCALE.format(arch=w.arch), m.scale)
    elif any(win is not None for win in m.windows):
        raise ValueError("sliding-window attention has no GGUF form for this architecture")
    if m.moe:
        w.add_expert_count(m.n_experts)
        w.add_expert_used_count(m.top_k)
        if m.arch in ("Qwen3MoeForCausalLM", "Qwen2MoeForCausalLM", "GptOssForCausalLM"):
            w.add_expert_feed_forward_length(m.expert_inter)
        if m.shared_expert:
            w.add_expert_shared_feed_forward_length(m.shared_inter)
        if m.norm_topk != (m.arch != "Qwen2MoeForCausalLM"):  # llama.cpp's default for the architecture
            w.add_bool(gguf.Keys.LLM.EXPERT_WEIGHTS_NORM.format(arch=w.arch), m.norm_topk)


def write_tokenizer(w, model_dir, cfg):
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    model, pre = tok["model"], tok.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        raise ValueError("only byte-level BPE tokenizer.json (GPT-2 pre-tokenizer) is supported")
    vocab = dict(model["vocab"])
    special = set()
    for t in tok.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
        if t.get("special"):
            special.add(t["id"])
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [gguf.TokenType.UNUSED] * n
    for text, i in vocab.items():
        tokens[i] = text
        types[i] = gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)

    tc_path = os.path.join(model_dir, "tokenizer_config.json")
    tc = {}
    if os.path.exists(tc_path):
        with open(tc_path, encoding="utf-8") as f:
            tc = json.load(f)

    def token_id(key):
        val = tc.get(key + "_token")
        if isinstance(val, dict):
            val = val.get("content")
        if isinstance(val, str) and val in vocab:
            return vocab[val]
        ids = cfg.get(key + "_token_id")
        return ids[0] if isinstance(ids, list) else ids

    for key, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("pad", w.add_pad_token_id)):
        i = token_id(key)
        if i is not None:
            add(int(i))
    if "add_bos_token" in tc:
        w.add_add_bos_token(bool(tc["add_bos_token"]))
    if "add_eos_token" in tc:
        w.add_add_eos_token(bool(tc["add_eos_token"]))
    template = tc.get("chat_template")
    jinja = os.path.join(model_dir, "chat_template.jinja")
    if template is None and os.path.exists(jinja):
        with open(jinja, encoding="utf-8") as f:
            template = f.read()
    if template is not None:
        w.add_chat_template(template)


def gguf_data(name, arr, qtype):
    """(data, raw_dtype) for add_tensor: 1-D F32; 2-D in qtype, else F16 when rows do not fit its blocks."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.ndim == 1 or qtype == Q.F32:
        return arr, None
    if qtype == Q.F16:
        return arr.astype(np.float16), None
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if arr.shape[-1] % block:
        print(f"{name}: row of {arr.shape[-1]} is not a multiple of {block}, written as F16", file=sys.stderr)
        return arr.astype(np.float16), None
    return gguf.quants.quantize(arr, qtype), qtype


def gptoss_tensors(hf_name, arr, qtype):
    """[(GGUF name, data, raw dtype)] of one gpt-oss sinks or fused expert tensor (see the module comment)."""
    layer = hf_name.split(".")[2]
    base = f"blk.{layer}."
    arr = np.asarray(arr, dtype=np.float32)
    if hf_name.endswith("self_attn.sinks"):
        return [(base + "attn_sinks.weight", arr, None)]
    what = hf_name.rsplit(".", 1)[1]
    if what == "gate_up_proj":
        out = [("ffn_gate_exps.weight", arr[:, :, 0::2].transpose(0, 2, 1)),
               ("ffn_up_exps.weight", arr[:, :, 1::2].transpose(0, 2, 1))]
    elif what == "down_proj":
        out = [("ffn_down_exps.weight", arr.transpose(0, 2, 1))]
    elif what == "gate_up_proj_bias":
        return [(base + "ffn_gate_exps.bias", np.ascontiguousarray(arr[:, 0::2]), None),
                (base + "ffn_up_exps.bias", np.ascontiguousarray(arr[:, 1::2]), None)]
    elif what == "down_proj_bias":
        return [(base + "ffn_down_exps.bias", arr, None)]
    else:
        raise ValueError(f"{hf_name}: no GGUF name")
    return [(base + n, *gguf_data(base + n, a, qtype)) for n, a in out]


def convert(hf_dir, out_path, type_name="F32"):
    qtype, ftype = TYPES[type_name]
    m = ref_forward.Model(hf_dir)
    cfg = m.cfg
    if m.arch not in ARCHS:
        raise ValueError(f"{m.arch}: no GGUF conversion here (supported: {', '.join(ARCHS)})")
    arch = ARCHS[m.arch]
    if m.arch == "LlamaForCausalLM" and m.rope["full_attention"]["rope_type"] == "dynamic":
        raise ValueError("dynamic NTK scaling has no GGUF form")
    dtypes = source_dtypes(hf_dir)
    names = gguf.get_tensor_name_map(arch, m.n_layers)

    w = gguf.GGUFWriter(out_path, gguf.MODEL_ARCH_NAMES[arch])
    w.add_name(os.path.basename(os.path.normpath(hf_dir)))
    w.add_file_type(ftype)
    if qtype not in (Q.F32, Q.F16, Q.BF16):
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_hparams(w, m, cfg)
    write_tokenizer(w, hf_dir, cfg)

    if m.rope["full_attention"]["rope_type"] == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(m.rope["full_attention"], m.head_dim))
    experts = {}  # (layer, GGUF name) -> [E] matrices
    for hf_name, arr in m.w.items():
        if m.gptoss and (".experts." in hf_name or hf_name.endswith("self_attn.sinks")):
            for gname, data, raw in gptoss_tensors(hf_name, arr, qtype):
                w.add_tensor(gname, data, raw_dtype=raw)
            continue
        if m.moe and ".experts." in hf_name:
            router, ex, parts = m.moe
            layer, rest = hf_name[len("model.layers."):].split(".", 1)
            e, what = rest[len(ex.split("{")[0]):].split(".", 1)
            part = {f"{v}.weight": k for k, v in parts.items()}[what]
            experts.setdefault((int(layer), f"ffn_{part}_exps"), {})[int(e)] = arr
            continue
        if hf_name.endswith("rotary_emb.inv_freq") or (hf_name == "lm_head.weight"
                                                        and m.lm_head is m.w["model.embed_tokens.weight"]):
            continue
        base, suffix = hf_name.rsplit(".", 1)
        gname = names.get_name(base)
        if gname is None:
            raise ValueError(f"{hf_name}: no GGUF name")
        if arch == gguf.MODEL_ARCH.LLAMA and base.endswith("self_attn.q_proj"):
            arr = llama_permute(arr, m.n_heads)
        elif arch == gguf.MODEL_ARCH.LLAMA and base.endswith("self_attn.k_proj"):
            arr = llama_permute(arr, m.n_kv)
        if m.gemma and hf_name.endswith("norm.weight"):
            dt = SOURCE_DTYPES[dtypes[hf_name]]
            arr = (arr + 1.0).astype(dt)
        if m.moe and base.endswith(m.moe[0]):
            gname = f"blk.{base.split('.')[2]}.ffn_gate_inp"
        if base.endswith("mlp.shared_expert_gate"):
            arr = arr.reshape(-1)  # llama.cpp's ffn_gate_inp_shexp is a vector [D]
        data, raw = gguf_data(gname, arr, Q.F32 if qtype == Q.MXFP4 else qtype)
        w.add_tensor(f"{gname}.{suffix}", data, raw_dtype=raw)
    for (layer, gname), mats in sorted(experts.items()):
        data, raw = gguf_data(gname, np.stack([mats[e] for e in range(m.n_experts)]), qtype)
        w.add_tensor(f"blk.{layer}.{gname}.weight", data, raw_dtype=raw)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("hf_dir")
    ap.add_argument("out")
    ap.add_argument("--type", default="F32", choices=sorted(TYPES))
    a = ap.parse_args()
    try:
        convert(a.hf_dir, a.out, a.type)
    except (ValueError, KeyError, OSError) as e:
        print(f"hf_to_gguf: {a.hf_dir}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
