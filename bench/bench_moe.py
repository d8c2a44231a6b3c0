#!/usr/bin/env python3
"""Routed MoE streaming (issue 21): bytes read from disk and uploaded per decoded token, the expert cache's hit
rate and the prediction's accuracy, for a router that picks experts about uniformly and for a skewed one
(`ferry synth --router-skew`), each next to whole layers (FERRY_MOE_WHOLE=1).

  python3 bench/bench_moe.py [--layers 8] [--experts 64] [--used 8] [--cache-frac 0.25] [--tokens 64]
      [--skew 1.0] [--device] [--vram 4G] [--model-dir DIR] [--out FILE.md]

Without --device it runs on this CPU with FERRY_CPU_DEVICE=1 (the CPU backend posing as a memory-limited
device: the same planner, slots, uploads, cache and prediction as CUDA; uploads are memcpy, so the figures are
bytes, not times). --ram 1 puts every layer on disk (two I/O slots, no RAM tier), --stream-all keeps every layer
streamed through the device slots, and FERRY_EXPERT_CACHE caps the cache at cache-frac of all experts.

Tokens are sampled at temperature 1.5 (seed 1): a random model decoded greedily repeats a few tokens, whose
routes then repeat too and flatter the cache.

Floor per token: the routed experts' bytes (the union over a step's tokens of each layer's chosen experts:
`moe.union_bytes`), what a perfect cache would still move if it held nothing; ratio = uploaded / floor.
With the uniform router the hit rate is a lower bound (a trained router's choices are skewed)."""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FERRY = os.path.join(ROOT, os.environ.get("FERRY_BUILD", "build"), "ferry")


def synth(a, out, skew):
    cmd = [FERRY, "synth", "-o", out, "--shape", "tiny-moe", "--layers", str(a.layers), "--experts", str(a.experts),
           "--experts-used", str(a.used), "--expert-ffn", str(a.expert_ffn), "--d-model", str(a.d_model),
           "--router-skew", str(skew), "--force"]
    subprocess.run(cmd, check=True, capture_output=True)


def run(a, model, env_extra):
    sj = tempfile.mktemp(suffix=".json")
    env = {**os.environ, **env_extra}
    cmd = [FERRY, "run", "-m", model, "--prompt-ids", "1,5,9,33,2,7", "-n", str(a.tokens), "--temp", "1.5", "--seed", "1",
           "--ignore-eos", "--stats-json", sj, "--ram", "1", "--stream-all", "--placement", "gpu"]
    if a.device:
        cmd += ["--vram", a.vram]
    else:
        env["FERRY_CPU_DEVICE"] = "1"
        cmd += ["--device", "cpu"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit(f"ferry run failed: {p.stderr}")
    st = json.load(open(sj))
    os.unlink(sj)
    return st


def row(name, st):
    moe, io = st.get("moe", {}), st.get("io", {})
    tok = max(moe.get("tokens", 1), 1)
    mib = 2 ** 20
    h2d = moe.get("expert_h2d_bytes", 0) / tok / mib if moe.get("routed_uploads") else float("nan")
    floor = moe.get("union_bytes", 0) / tok / mib
    hits, misses = moe.get("cache_hits", 0), moe.get("cache_misses", 0)
    hit = 100.0 * hits / (hits + misses) if hits + misses else float("nan")
    acc = 100.0 * moe.get("pred_right", 0) / moe["pred_routed"] if moe.get("pred_routed") else float("nan")
    return (f"| {name} | {io.get('bytes_read', 0) / tok / mib:.3f} | {io.get('bytes_experts', 0) / tok / mib:.3f} | "
            f"{h2d:.3f} | {floor:.3f} | {h2d / floor if floor else float('nan'):.2f} | {moe.get('cache_entries', 0)} | "
            f"{hit:.1f} | {acc:.1f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--used", type=int, default=8)
    ap.add_argument("--expert-ffn", type=int, default=256)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--cache-frac", type=float, default=0.25)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--skew", type=float, default=1.0)
    ap.add_argument("--device", action="store_true", help="a real device (CUDA) instead of FERRY_CPU_DEVICE=1")
    ap.add_argument("--vram", default="4G")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    root = a.model_dir or tempfile.mkdtemp(prefix="bench_moe.")
    os.makedirs(root, exist_ok=True)
    cache = str(int(a.cache_frac * a.layers * a.experts))
    lines = [f"shape: tiny-moe, {a.layers} layers, D {a.d_model}, {a.experts} experts (top-{a.used}) x Fe "
             f"{a.expert_ffn}, Q4_K; {a.tokens} tokens sampled (temperature 1.5, seed 1) after a 6-token prompt; every layer from disk "
             f"(--ram 1), cache {cache} entries ({a.cache_frac:.0%} of the experts); "
             f"{'CUDA --vram ' + a.vram if a.device else 'FERRY_CPU_DEVICE=1 (this CPU)'}",
             "",
             "| router, mode | disk MiB/token | of it experts read one by one | experts uploaded MiB/token | "
             "floor: routed experts MiB/token | uploaded / floor | cache entries | hit rate % | prediction % |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, skew in (("uniform", 0.0), (f"skewed {a.skew}", a.skew)):
        model = os.path.join(root, f"moe_skew{skew}")
        synth(a, model, skew)
        for mode, env in (("whole layers", {"FERRY_MOE_WHOLE": "1"}),
                          ("by expert, no cache", {"FERRY_EXPERT_CACHE": "0"}),
                          ("by expert + cache, no prediction", {"FERRY_EXPERT_CACHE": cache, "FERRY_MOE_PREDICT": "0"}),
                          ("by expert + cache + prediction", {"FERRY_EXPERT_CACHE": cache})):
            lines.append(row(f"{label}, {mode}", run(a, model, env)))
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
