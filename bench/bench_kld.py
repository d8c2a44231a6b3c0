#!/usr/bin/env python3
"""Quality of `ferry convert --quant MIX --imatrix` against llama.cpp's llama-quantize with the same importance
matrix, on real weights: KL divergence, same top token, PPL and bits per weight per mix, side by side (issue 18).

    python3 bench/bench_kld.py --source models/qwen2.5-coder-0.5b-instruct.gguf --llama-bin /tmp/llama-build/bin
        [--mixes Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_K_S,Q4_0] [--ctx 512] [--chunks 4] [--imatrix-chunks 8] [--out FILE.md]

1. The source GGUF is widened to F32 by llama-quantize (--allow-requantize ... F32): the common source of both
   tools (a Q8_0 source is within 0.4% of its bf16 original, so the F32 file is a real-weight checkpoint).
2. tests/data/kjv_genesis.txt is split by lines: the first 40% is the calibration text, the rest the evaluation
   text, so the imatrix never saw what is scored.
3. `ferry imatrix` on the F32 model over the calibration text: the one importance matrix both tools use
   (llama-quantize reads ferry's GGUF imatrix).
   With --base source, the imatrix and the base log-probabilities come from the source GGUF converted as it is
   (blocks kept) rather than from the F32 file: the same weights (F32 is their exact widening), a quarter of the
   bytes and of the CPU time per token, for a source that is itself quantized (Q4_K_M, Q5_0).
4. The F32 model's log-probabilities over the evaluation text: `ferry kld --save-base` (llama.cpp's file layout).
5. Per mix: ferry converts the F32 GGUF with --quant MIX --imatrix; llama-quantize --imatrix writes a GGUF that
   ferry converts as it is (blocks kept); both are scored by the same evaluator (`ferry kld --base-logits`), so the
   comparison is of the quantizers alone (the imatrix, the base logits and llama-quantize's GGUF are kept in
   --work and reused by a later run with the same --work: none depends on ferry's quantizer). Bits per weight:
   the bytes of every matrix of the model / its weights.
6. The evaluator cross-checked once: llama-perplexity --kl-divergence on llama.cpp's Q4_K_M GGUF against the same
   base file gives its own KLD mean and same-top share next to ferry's.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FERRY = os.path.join(ROOT, "build", "ferry")
TEXT = os.path.join(ROOT, "tests", "data", "kjv_genesis.txt")


def run(cmd, **kw):
    t = time.time()
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if p.returncode:
        sys.exit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stderr[-2000:]}")
    return p, time.time() - t


def matrix_bits(model):
    """(bits, weights) of the matrices of a .ferry model (every tensor of rank 2; a tied head counted once)."""
    m = json.load(open(os.path.join(model, "manifest.json")))
    seen, bits, n = set(), 0, 0
    for t in m["units"]["embed"] + m["units"]["head"] + [t for layer in m["units"]["layers"] for t in layer]:
        key = (t["file"], t["offset"])
        if len(t["shape"]) != 2 or key in seen:
            continue
        seen.add(key)
        bits += 8 * t["raw_bytes"]
        n += t["shape"][0] * t["shape"][1]
    return bits, n


def kld(model, base_logits, what):
    with tempfile.NamedTemporaryFile(suffix=".json") as js:
        p, sec = run([FERRY, "kld", "-m", model, "--base-logits", base_logits, "--json", js.name])
        r = json.load(open(js.name))
    print(f"  {what}: KLD {r['kld_mean']:.6f} +/- {r['kld_err']:.6f}, p99 {r['kld_p99']:.5f}, same top "
          f"{100 * r['same_top']:.2f}%, PPL {r['ppl']:.4f} (base {r['ppl_base']:.4f}) [{sec:.0f}s]", flush=True)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True, help="a GGUF of real weights (F16/BF16/Q8_0)")
    ap.add_argument("--llama-bin", required=True, help="llama.cpp's bin/ (llama-quantize, llama-perplexity)")
    ap.add_argument("--mixes", default="Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_K_S,Q4_0")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--imatrix-chunks", type=int, default=8)
    ap.add_argument("--base", choices=("f32", "source"), default="f32",
                    help="the model the imatrix and the base logits come from (see 3.)")
    ap.add_argument("--work", help="keep the files here (default: a temporary directory)")
    ap.add_argument("--out")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="ferry_kld_")
    os.makedirs(work, exist_ok=True)
    lq, lp = os.path.join(a.llama_bin, "llama-quantize"), os.path.join(a.llama_bin, "llama-perplexity")
    f32 = os.path.join(work, "f32.gguf")
    if not os.path.exists(f32):
        run([lq, "--allow-requantize", a.source, f32, "F32"])
    base = os.path.join(work, f"{a.base}.ferry")
    if not os.path.exists(base):
        run([FERRY, "convert", f32 if a.base == "f32" else a.source, "-o", base])
    lines = open(TEXT, encoding="utf-8").read().splitlines(keepends=True)
    cut = len(lines) * 2 // 5
    calib, evalt = os.path.join(work, "calib.txt"), os.path.join(work, "eval.txt")
    open(calib, "w", encoding="utf-8").write("".join(lines[:cut]))
    open(evalt, "w", encoding="utf-8").write("".join(lines[cut:]))
    im = os.path.join(work, "imatrix.gguf")
    if not os.path.exists(im):
        _, sec = run([FERRY, "imatrix", "-m", base, calib, "-o", im, "--ctx", a.ctx, "--chunks", a.imatrix_chunks])
        print(f"imatrix: {a.imatrix_chunks} chunks of {a.ctx} in {sec:.0f}s", flush=True)
    logits = os.path.join(work, "base.logits")
    if not os.path.exists(logits):
        _, sec = run([FERRY, "kld", "-m", base, evalt, "--save-base", logits, "--ctx", a.ctx, "--chunks", a.chunks])
        print(f"base log-probabilities: {a.chunks} chunks of {a.ctx} in {sec:.0f}s", flush=True)
    rows = []
    for mix in a.mixes.split(","):
        fm, lg, lm = (os.path.join(work, f"{k}.{mix}") for k in ("ferry", "llama", "llama"))
        fm += ".ferry"
        lg += ".gguf"
        lm += ".ferry"
        _, fsec = run([FERRY, "convert", f32, "-o", fm, "--quant", mix, "--imatrix", im, "--force"])
        lsec = 0.0
        if not os.path.exists(lg):
            _, lsec = run([lq, "--imatrix", im, f32, lg, mix])
        run([FERRY, "convert", lg, "-o", lm, "--force"])
        print(f"{mix}: ferry convert {fsec:.1f}s, llama-quantize {f'{lsec:.1f}s' if lsec else 'reused'}",
              flush=True)
        rf, rl = kld(fm, logits, "ferry"), kld(lm, logits, "llama.cpp")
        bf, nf = matrix_bits(fm)
        bl, nl = matrix_bits(lm)
        rows.append((mix, bf / nf, bl / nl, rf, rl))
    cross = ""
    if os.path.exists(lp) and any(r[0] == "Q4_K_M" for r in rows):
        p, _ = run([lp, "-m", os.path.join(work, "llama.Q4_K_M.gguf"), "--kl-divergence-base", logits,
                    "--kl-divergence", "-c", a.ctx, "-t", str(os.cpu_count())])
        m = re.search(r"Mean\s+KLD:\s+([0-9.]+)", p.stdout + p.stderr)
        s = re.search(r"Same top p:\s+([0-9.]+)", p.stdout + p.stderr)
        rl = next(r[4] for r in rows if r[0] == "Q4_K_M")
        if m and s:
            cross = (f"\nEvaluator cross-check (llama.cpp's Q4_K_M GGUF against the same base file): llama-perplexity "
                     f"--kl-divergence KLD {float(m.group(1)):.6f}, same top {float(s.group(1)):.2f}%; ferry kld "
                     f"{rl['kld_mean']:.6f}, {100 * rl['same_top']:.2f}%.\n")
    src = os.path.basename(a.source)
    md = [f"Source {src} widened to F32 (the quantizers' input); imatrix and base logits from "
          f"{'the F32 file' if a.base == 'f32' else 'the source as it is'}; imatrix by ferry over "
          f"{a.imatrix_chunks} x {a.ctx} tokens of the first 40% "
          f"of kjv_genesis.txt, used by both tools; KLD over {a.chunks} x {a.ctx} tokens of the rest "
          f"({a.chunks * (a.ctx - 1 - a.ctx // 2)} scored rows), base PPL {rows[0][3]['ppl_base']:.4f}.", "",
          "| mix | bpw ferry | bpw llama.cpp | KLD ferry | KLD llama.cpp | ratio | p99 ferry | p99 llama.cpp | "
          "same top ferry | same top llama.cpp | PPL ferry | PPL llama.cpp |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for mix, bpf, bpl, rf, rl in rows:
        md.append(f"| {mix} | {bpf:.3f} | {bpl:.3f} | {rf['kld_mean']:.5f} +/- {rf['kld_err']:.5f} | "
                  f"{rl['kld_mean']:.5f} +/- {rl['kld_err']:.5f} | {rf['kld_mean'] / rl['kld_mean']:.3f} | "
                  f"{rf['kld_p99']:.4f} | {rl['kld_p99']:.4f} | {100 * rf['same_top']:.2f}% | "
                  f"{100 * rl['same_top']:.2f}% | {rf['ppl']:.4f} | {rl['ppl']:.4f} |")
    text = "\n".join(md) + "\n" + cross
    print(text)
    if a.out:
        open(a.out, "w").write(text)


if __name__ == "__main__":
    main()
