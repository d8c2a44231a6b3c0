#!/usr/bin/env python3
"""Quantization error of `ferry convert --quant` against llama.cpp's llama-quantize on the same F32 GGUF.

    python3 bench/bench_quant.py --llama-quantize /tmp/llama-build/bin/llama-quantize [--hidden 1024]
        [--mixes Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0,Q2_K,Q3_K_S,Q3_K_M,Q3_K_L,IQ4_XS,IQ4_NL,Q4_1,Q5_1] [--out FILE.md]

A llama-shaped checkpoint (tools/gen_tiny_model.py's writer, `--hidden` wide, 2 layers) with heavy-tailed
weights (Student-t, 5 degrees of freedom: real weight matrices have outliers a Gaussian lacks) is written as
an F32 GGUF (tools/hf_to_gguf.py); both tools quantize it with each mix, and every matrix of both outputs is
decoded by gguf-py and compared with the F32 original: relative RMS error per tensor, and the ratio ferry /
llama.cpp (below 1: ferry's blocks are closer). No importance matrix on either side.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gen_tiny_model  # noqa: E402
import hf_to_gguf  # noqa: E402
import gguf  # noqa: E402

FERRY = os.path.join(ROOT, "build", "ferry")


def write_model(hf, hidden, seed=9):
    spec = dict(gen_tiny_model.VARIANTS["llama_headdim"], hidden=hidden, inter=hidden * 3, layers=2, heads=8,
                kv_heads=2, head_dim=hidden // 8, vocab=512, dtype="F32", tied=False)
    os.makedirs(hf)
    rng = np.random.default_rng(seed)
    w = gen_tiny_model.make_weights(spec, rng)
    for k, v in w.items():  # heavy tails: Student-t with the same scale
        if v.ndim == 2:
            w[k] = (rng.standard_t(5, v.shape) * float(np.std(v)) / np.sqrt(5 / 3)).astype(np.float32)
    gen_tiny_model.write_json(os.path.join(hf, "config.json"), gen_tiny_model.make_config(spec))
    gen_tiny_model.write_json(os.path.join(hf, "tokenizer.json"), gen_tiny_model.make_tokenizer(spec))
    gen_tiny_model.write_json(os.path.join(hf, "tokenizer_config.json"), gen_tiny_model.make_tokenizer_config(spec))
    gen_tiny_model.write_weights(hf, w, 1)


def gguf_tensors(path):
    r = gguf.GGUFReader(path)
    out = {}
    for t in r.tensors:
        if len(t.shape) != 2:
            continue
        a = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = (t.tensor_type.name, np.asarray(a, dtype=np.float64).reshape(-1))
    return out


def ferry_tensors(model):
    m = json.load(open(os.path.join(model, "manifest.json")))
    units = [("", m["units"]["embed"]), ("", m["units"]["head"])]
    units += [(f"blk.{i}.", layer) for i, layer in enumerate(m["units"]["layers"])]
    out = {}
    for prefix, tensors in units:
        for t in tensors:
            if len(t["shape"]) != 2:
                continue
            with open(os.path.join(model, t["file"]), "rb") as fh:
                fh.seek(t["offset"])
                raw = np.frombuffer(fh.read(t["bytes"]), dtype=np.uint8)
            typ = getattr(gguf.GGMLQuantizationType, t["format"])
            a = gguf.quants.dequantize(raw.reshape(t["shape"][0], -1), typ)
            out[prefix + t["name"]] = (t["format"], np.asarray(a, dtype=np.float64).reshape(-1))
    return out


def rel(a, ref):
    return float(np.sqrt(np.mean((a - ref) ** 2) / np.mean(ref ** 2)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-quantize", required=True)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--mixes", default="Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0,Q2_K,Q3_K_S,Q3_K_M,Q3_K_L,IQ4_XS,IQ4_NL,Q4_1,Q5_1")
    ap.add_argument("--out")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="ferry_bq_")
    hf = os.path.join(root, "hf")
    write_model(hf, a.hidden)
    f32 = os.path.join(root, "m.f32.gguf")
    hf_to_gguf.convert(hf, f32, "F32")
    ref = gguf_tensors(f32)
    lines = [f"hidden {a.hidden}, 2 layers, Student-t(5) weights; relative RMS error of the decoded matrices",
             "", "| mix | tensor | llama.cpp type | llama.cpp err | ferry type | ferry err | ferry / llama.cpp |",
             "|---|---|---|---|---|---|---|"]
    summary = []
    for mix in a.mixes.split(","):
        lq = os.path.join(root, f"m.{mix}.gguf")
        subprocess.run([a.llama_quantize, f32, lq, mix], capture_output=True, check=True)
        fo = os.path.join(root, f"m.{mix}.ferry")
        subprocess.run([FERRY, "convert", f32, "-o", fo, "--quant", mix], capture_output=True, check=True)
        lt, ft = gguf_tensors(lq), ferry_tensors(fo)
        ratios = []
        for name in sorted(ref):
            if name not in lt or name not in ft:
                continue
            el, ef = rel(lt[name][1], ref[name][1]), rel(ft[name][1], ref[name][1])
            ratios.append(ef / el if el > 0 else 1.0)
            lines.append(f"| {mix} | {name} | {lt[name][0]} | {el:.5f} | {ft[name][0]} | {ef:.5f} | {ef / el:.3f} |")
        summary.append(f"{mix}: ferry/llama.cpp error ratio, geometric mean over {len(ratios)} matrices: "
                       f"{float(np.exp(np.mean(np.log(ratios)))):.3f}")
    text = "\n".join(lines + [""] + summary)
    print(text)
    if a.out:
        with open(a.out, "a") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
