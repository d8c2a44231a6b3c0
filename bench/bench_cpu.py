"""CPU decode and prefill of ferry against the machine's measured floors.

decode: every step streams every layer and the head once, so the floor is
    bytes per token / measured read bandwidth  (bench/cpu_peak.c, all threads)
prefill: 2 x matmul parameters x T FLOPs (plus attention) over the measured f32 FMA rate.
Runs `ferry run --stats` REPEAT times on a generated Llama-shaped model (no download) and reports the median.
Usage: python3 bench/bench_cpu.py [--layers 4 --hidden 2048 --inter 5632 --vocab 32000 --dtype BF16 --prompt 64 --gen 33]
       python3 bench/bench_cpu.py --model models/gemma-3-270m.ferry   (the default model, quantized: Q4_K_M)
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("FERRY_BUILD", "build")
FERRY = os.path.join(ROOT, BUILD, "ferry")


def sh(*cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"{' '.join(cmd)} failed: {p.stderr}")
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--inter", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--dtype", default="BF16")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--gen", type=int, default=33)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", help="an existing model.ferry (e.g. models/gemma-3-270m.ferry) instead of a generated one")
    a = ap.parse_args()

    peak = dict(l.split() for l in sh(os.path.join(ROOT, BUILD, "bench", "cpu_peak")).stdout.splitlines())
    bw, fma = float(peak["read_gbs"]) * 1e9, float(peak["fma_gflops"]) * 1e9

    name = f"bench-llama-{a.layers}x{a.hidden}x{a.inter}-{a.vocab}-{a.dtype}"
    hf = os.path.join(ROOT, "models", name)
    out = hf + ".ferry"
    if a.model:
        name, out = os.path.basename(a.model.rstrip("/")), a.model
    elif not os.path.exists(os.path.join(hf, "config.json")):
        sh(sys.executable, os.path.join(ROOT, "bench", "make_bench_model.py"), hf, "--layers", str(a.layers),
           "--hidden", str(a.hidden), "--inter", str(a.inter), "--vocab", str(a.vocab), "--dtype", a.dtype)
    if not a.model and not os.path.exists(os.path.join(out, "manifest.json")):
        sh(FERRY, "convert", hf, "-o", out)
    man = json.load(open(os.path.join(out, "manifest.json")))
    units = man["units"]["layers"] + [man["units"]["head"]]
    step_bytes = sum(t["bytes"] for u in units for t in u)
    hp = man["hparams"]
    layer_params = sum(t["shape"][0] * t["shape"][1] for u in man["units"]["layers"] for t in u if len(t["shape"]) == 2)
    head_params = hp["vocab"] * hp["d_model"]
    T = a.prompt
    kv = hp["n_kv_heads"] * hp["head_dim"]
    attn_flops = 4 * hp["n_layers"] * hp["n_heads"] * hp["head_dim"] * T * (T + 1) / 2
    prefill_flops = 2 * layer_params * T + 2 * head_params + attn_flops

    ids = ",".join(str(i * 131 % hp["vocab"]) for i in range(T))
    dec, pre = [], []
    for _ in range(a.repeat):
        p = sh(FERRY, "run", "-m", out, "--prompt-ids", ids, "-n", str(a.gen), "--temp", "0", "--ignore-eos",
               "--stats")
        m = re.search(r"prefill \d+ tokens in ([\d.]+)s .*decode (\d+) tokens in ([\d.]+)s", p.stderr)
        pre.append(float(m.group(1)))
        dec.append(float(m.group(3)) / int(m.group(2)))
    d, pf = statistics.median(dec), statistics.median(pre)
    d_floor, p_floor = step_bytes / bw, prefill_flops / fma
    threads = re.search(r"(\d+) threads", p.stderr).group(1)
    print(f"model {name}: {step_bytes / 2**20:.1f} MiB streamed per decode step, {layer_params / 1e6:.1f}M layer "
          f"params, KV {kv} per token per layer; {threads} threads; median of {a.repeat} runs")
    print(f"ceilings: read {bw / 1e9:.2f} GB/s, f32 FMA {fma / 1e9:.1f} GFLOP/s (bench/cpu_peak.c)")
    print()
    print("| measure | measured | floor | measured / floor |")
    print("|---|---|---|---|")
    print(f"| decode, s/token | {d:.4f} ({1 / d:.2f} tok/s) | {d_floor:.4f} (bytes / read bw) | {d / d_floor:.2f} |")
    print(f"| prefill {T} tokens, s (incl. first read + checksums) | {pf:.3f} ({T / pf:.1f} tok/s) | "
          f"{p_floor:.3f} (FLOPs / FMA rate) | {pf / p_floor:.2f} |")


if __name__ == "__main__":
    main()
