#!/usr/bin/env python3
"""KV format emulation on Gemma 3 270M: which key/value row codecs lose how much, without building them.

The float64 NumPy forward of the GGUF (tools/ref_forward.py) with each layer's k and v passed through a candidate
format (post-RoPE, [Hkv, T, Dh], the whole chunk stored at once, as a prefill stores it), chunks of 512 in
llama.cpp's convention (BOS first, the second half scored; every other scored row, to halve the head's cost).
Prints per format the PPL over the chunks, its difference to f16 and the mean KL(f16 || format) of the
next-token distributions with its standard error: the KL is paired per token, so it orders formats over a few
chunks where PPL differences are noise. Not ferry: the CPU's 8-bit matmul inputs are not emulated.

Row codecs (groups of 32 rotated by H32 as src/kernels/kv_pages.h, f16 scales): q8, q4/q5 (ggml's Q4_0/Q5_0
rule), a4/a5 (affine: f16 minimum and step). "c" after a key codec: the chunk's mean key subtracted per layer
and kv head before quantizing (an oracle of a calibrated key mean; exact for attention without sinks).

    ferry tokenize -m MODEL --no-add-special -f tests/data/kjv_genesis.txt > /tmp/genesis.ids
    python3 bench/kv_emulate.py models/gemma-3-270m-q4_k_m.gguf /tmp/genesis.ids 0,5,11,17 f16,k8v4,ka5v4,k5cv4
(f16 first: the KL reference.)
"""
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "tools"), os.path.join(HERE, "..", "tests")]
import ref_forward  # noqa: E402
from test_ppl import row_emulation  # noqa: E402  (the row formats' emulations)


def row(name):
    """what a row codec keeps of t [..., Dh] (test_ppl's emulation of the row formats)"""
    return row_emulation({"16": "f16", "8": "q8", "4": "q4", "5": "q5"}.get(name, name))


def parse(fmt):
    """'f16' | 'k<codec>[c]v<codec>' -> store(pool, x)"""
    if fmt == "f16":
        kc, vc, center = "16", "16", False
    else:
        k, v = fmt[1:].split("v")
        center = k.endswith("c")
        kc, vc = k.rstrip("c"), v
    kf, vf = row(kc), row(vc)

    def store(pool, x):
        if pool == 0 and center:
            mu = x.mean(axis=1, keepdims=True)
            return kf(x - mu) + mu
        return (kf if pool == 0 else vf)(x)
    return store


def chunk_logprobs(m, ids, store):
    """(nll of the scored tokens, their log-probabilities [rows, V] float32)"""
    ids = np.asarray(ids, dtype=np.int64)
    T = ids.size
    rope = m._rope_tables(T)
    x = m.w["model.embed_tokens.weight"][ids].astype(np.float64) * math.sqrt(m.hidden)
    m.kv_store = (lambda k: store(0, k), lambda v: store(1, v))
    for i in range(m.n_layers):
        p = f"model.layers.{i}."
        cos, sin = rope[m.layer_types[i]]
        a = m._attention(m._rms_norm(x, p + "input_layernorm.weight"), p + "self_attn.", cos, sin, m.windows[i])
        x = x + m._rms_norm(a, p + "post_attention_layernorm.weight")
        mm = m._mlp(m._rms_norm(x, p + "pre_feedforward_layernorm.weight"), p)
        x = x + m._rms_norm(mm, p + "post_feedforward_layernorm.weight")
    x = m._rms_norm(x, "model.norm.weight")
    rows = np.arange(T // 2, T - 1, 2)
    xs = x[rows].astype(np.float32)
    out = np.empty((xs.shape[0], m.vocab), dtype=np.float32)
    for r in range(0, m.vocab, 32768):
        out[:, r:r + 32768] = xs @ m.lm_head[r:r + 32768].T
    mx = out.max(axis=1, keepdims=True)
    out -= (np.log(np.exp(out - mx).sum(axis=1, dtype=np.float64)) + mx[:, 0])[:, None].astype(np.float32)
    return -out[np.arange(xs.shape[0]), ids[rows + 1]].astype(np.float64), out


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    gguf, idfile, chunks, fmts = sys.argv[1:]
    if "gemma" not in os.path.basename(gguf).lower():
        print(f"{gguf}: this emulation is written for Gemma 3 (its norms and MLP)", file=sys.stderr)
    m = ref_forward.Model.from_gguf(gguf)
    for k in list(m.w):
        if k.startswith("model.layers."):
            m.w[k] = m.w[k].astype(np.float64)
    ids = [int(x) for x in open(idfile).read().split()]
    bos = 2
    ref, base = {}, None
    for fmt in fmts.split(","):
        t, nll, kl = time.time(), [], []
        for ci, c in enumerate(int(x) for x in chunks.split(",")):
            ch = ids[c * 512:(c + 1) * 512]
            ch[0] = bos
            nl, lp = chunk_logprobs(m, ch, parse(fmt))
            nll.append(nl)
            if fmt == "f16":
                ref[ci] = lp
            elif ci in ref:
                kl.append((np.exp(ref[ci]) * (ref[ci] - lp)).sum(axis=1, dtype=np.float64))
        ppl = math.exp(np.concatenate(nll).mean())
        base = ppl if fmt == "f16" else base
        k = np.concatenate(kl) if kl else np.zeros(1)
        print(f"{fmt:8s} PPL {ppl:.4f}  vs f16 {ppl - base if base else float('nan'):+.4f}  "
              f"KL {k.mean():.5f} +- {k.std() / math.sqrt(len(k)):.5f}  ({time.time() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
