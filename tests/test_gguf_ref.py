"""The GGUF side of the reference (tools/hf_to_gguf.py and ref_forward's Model.from_gguf), no ferry involved.

1. For every tiny variant with a GGUF form: the NumPy forward on the HF directory equals the forward on
   its F32 GGUF (max over positions of ||a - b|| / ||a||; the HF side with rms_norm_eps rounded to float32,
   as GGUF stores it) within 1e-12; llama3_rope within 1e-6, since GGUF carries its scaling as float32
   frequency divisors (rope_freqs).  The variants without a GGUF form (dynamic NTK, Mistral's window)
   are refused.
2. Checks that do not go through read_gguf's inverse: the stored llama q/k, rotated with interleaved
   pairs (llama.cpp's NORM rope), give the same attention scores as HF's weights with rotate-half; Gemma
   norms are stored as 1 + w; the architecture keys llama.cpp reads are present.
3. Quantized (Q8_0, Q4_0): the GGUF loads, gives finite logits; the distance to the HF forward is printed.
(The reference on the real Gemma 3 270M GGUF is compared with ferry in test_gemma_ref.py.)

Exit 77 when gguf-py is missing."""

import os
import sys

import numpy as np

from ferrytest import Failures, gen_tiny_model, ref_forward, scratch, rel_rows

try:
    import gguf
    import hf_to_gguf
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)

NO_GGUF_FORM = {"llama_dynamic_rope", "mistral_swa"}


def norm_rope(x, pos, base):
    """llama.cpp's NORM rope: pairs (2i, 2i+1) rotated by pos * base^(-2i/d).  x [T, H, d]."""
    d = x.shape[-1]
    ang = pos[:, None, None] * base ** (-np.arange(0, d, 2) / d)[None, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * np.cos(ang) - b * np.sin(ang)
    out[..., 1::2] = a * np.sin(ang) + b * np.cos(ang)
    return out


def half_rope(x, pos, base):
    """HF's rotate-half rope: pairs (i, i + d/2).  x [T, H, d]."""
    d = x.shape[-1]
    ang = pos[:, None] * base ** (-np.arange(0, d, 2) / d)[None, :]
    emb = np.concatenate([ang, ang], axis=-1)[:, None, :]
    return x * np.cos(emb) + ref_forward.rotate_half(x) * np.sin(emb)


def raw_tensor(reader, name):
    t = next(t for t in reader.tensors if t.name == name)
    return np.asarray(t.data, dtype=np.float64).reshape(tuple(int(d) for d in reversed(t.shape)))


def check_llama_rope_layout(f, model, path):
    """Scores from the GGUF's permuted q/k with NORM rope == scores from HF's q/k with rotate-half."""
    r = gguf.GGUFReader(path)
    rng = np.random.default_rng(5)
    T, hd = 12, model.head_dim
    x = rng.standard_normal((T, model.hidden))
    pos = np.arange(T, dtype=np.float64)
    base = float(model.rope["full_attention"]["rope_theta"])
    p = "model.layers.0.self_attn."
    q_hf = half_rope((x @ model.w[p + "q_proj.weight"].T).reshape(T, model.n_heads, hd), pos, base)
    k_hf = half_rope((x @ model.w[p + "k_proj.weight"].T).reshape(T, model.n_kv, hd), pos, base)
    q_g = norm_rope((x @ raw_tensor(r, "blk.0.attn_q.weight").T).reshape(T, model.n_heads, hd), pos, base)
    k_g = norm_rope((x @ raw_tensor(r, "blk.0.attn_k.weight").T).reshape(T, model.n_kv, hd), pos, base)
    rep = model.n_heads // model.n_kv
    s_hf = np.einsum("thd,shd->hts", q_hf, np.repeat(k_hf, rep, axis=1))
    s_g = np.einsum("thd,shd->hts", q_g, np.repeat(k_g, rep, axis=1))
    err = float(np.abs(s_hf - s_g).max() / np.abs(s_hf).max())
    print(f"  llama q/k layout: NORM rope on GGUF rows vs rotate-half on HF rows, scores rel err {err:.1e}")
    f.check(err < 1e-12, f"llama q/k permutation: scores differ by {err:.1e}")


def check_gemma_layout(f, model, path):
    r = gguf.GGUFReader(path)
    stored = raw_tensor(r, "blk.0.attn_q_norm.weight")
    want = 1.0 + model.w["model.layers.0.self_attn.q_norm.weight"]
    f.check(np.array_equal(stored, want), "gemma3: stored attn_q_norm is not 1 + w")
    names = {t.name for t in r.tensors}
    for n in ("blk.5.post_attention_norm.weight", "blk.5.ffn_norm.weight", "blk.5.post_ffw_norm.weight",
              "blk.5.attn_k_norm.weight", "output_norm.weight"):
        f.check(n in names, f"gemma3: tensor {n} missing")
    f.check("output.weight" not in names, "gemma3: tied model has output.weight")
    for key in ("context_length", "embedding_length", "block_count", "feed_forward_length",
                "attention.head_count", "attention.head_count_kv", "attention.key_length",
                "attention.value_length", "attention.layer_norm_rms_epsilon", "rope.freq_base",
                "attention.sliding_window"):
        f.check(f"gemma3.{key}" in r.fields, f"gemma3: key gemma3.{key} missing")


def tiny_checks(f, root):
    for v in gen_tiny_model.VARIANTS:
        hf = os.path.join(root, v)
        gen_tiny_model.generate(v, hf)
        path = hf + ".gguf"
        if v in NO_GGUF_FORM:
            try:
                hf_to_gguf.convert(hf, path)
                f.check(False, f"{v}: converted, but it has no GGUF form")
            except ValueError as e:
                print(f"{v:20s} refused as expected: {e}")
            continue
        hf_to_gguf.convert(hf, path)
        a = ref_forward.Model(hf)
        a.eps = float(np.float32(a.eps))
        b = ref_forward.Model.from_gguf(path)
        ids = [int(t) for t in np.random.default_rng([7, len(v)]).integers(0, a.vocab, 40)]
        err = rel_rows(b.logits(ids), a.logits(ids))
        tol = 1e-6 if v == "llama3_rope" else 1e-12
        print(f"{v:20s} HF dir vs F32 GGUF: rel err {err:.1e} (tol {tol:g})")
        f.check(err <= tol, f"{v}: HF vs F32 GGUF rel err {err:.1e} > {tol:g}")
        if a.arch == "LlamaForCausalLM":
            check_llama_rope_layout(f, a, path)
        if v == "gemma3":
            check_gemma_layout(f, a, path)
        if v in ("llama_tied_gqa", "qwen2_bias", "gemma3", "gemma3_softcap"):
            ref = a.logits(ids)
            for t in ("Q8_0", "Q4_0"):
                qpath = f"{hf}.{t}.gguf"
                hf_to_gguf.convert(hf, qpath, t)
                got = ref_forward.Model.from_gguf(qpath).logits(ids)
                if f.check(np.isfinite(got).all(), f"{v} {t}: non-finite logits"):
                    print(f"{v:20s} {t} GGUF vs HF dir: rel err {rel_rows(got, ref):.1e} (quantization)")


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        tiny_checks(f, root)
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
