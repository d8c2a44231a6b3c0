#!/usr/bin/env python3
"""The placement planner's predictions against measured decode steps on a machine without a GPU (issue 22).

With `--device cpu`, a `--placement` list runs its units on a second CPU backend (tests/test_placement.py's
setup): the same hybrid steps as on a GPU machine (two run states, the residual stream crossing between them,
the streamer's buffers read in place), with the "device" a CPU backend too. ferry measures the rates at start
(src/engine/rates.c: both backends at 1, 2, 4 and 8 tokens; no link) and
predicts each decode step (src/engine/place.c). This runs placements cpu (every unit on the second backend),
a list (the first half of the layers there) and gpu (every unit on the first backend) at T = 1, 2, 4, 8
sequences decoded together and prints ferry's predicted step next to the measured one.

  python3 bench/bench_place_cpu.py [--model M.ferry] [--batch 1,2,4,8] [--gen 12] [--threads N]

Without --model a Llama-3-8B-shaped model of 8 layers in Q4_K (1.1 GB) is synthesized into a temporary
folder. The rates are measured once, by the first run, into a temporary $FERRY_HOME that every run reads, so
all predictions come from the same rates. The load average is printed before and after: on a shared machine
other processes move the measurement, never the prediction.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FERRY = os.path.join(ROOT, "build", "ferry")


def loadavg():
    return open("/proc/loadavg").read().split()[:3]


def run(a, model, placement, b, rnd, home):
    ids = tempfile.mktemp(suffix=".ids")
    with open(ids, "w") as fh:
        for _ in range(b):
            fh.write(",".join(str(rnd.randrange(100, 30000)) for _ in range(8)) + "\n")
    sj = tempfile.mktemp(suffix=".json")
    cmd = [FERRY, "run", "-m", model, "--prompt-ids-file", ids, "-n", str(a.gen), "--ignore-eos", "--temp", "0",
           "--device", "cpu", "--placement", placement, "--warmup", "--stats-json", sj]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, FERRY_HOME=home))
    os.unlink(ids)
    if p.returncode != 0:
        print(f"ferry --placement {placement} ({b} sequences) failed: {p.stderr[-600:]}", file=sys.stderr)
        return None, " ".join(cmd)
    st = json.load(open(sj))
    os.unlink(sj)
    return st, " ".join(cmd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--batch", default="1,2,4,8")
    ap.add_argument("--gen", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_place_cpu_")
    home = os.path.join(tmp, "home")
    try:
        model = a.model
        if not model:
            model = os.path.join(tmp, "s8.ferry")
            subprocess.run([FERRY, "synth", "-o", model, "--shape", "llama3-8b", "--layers", "8", "--fmt", "q4_k"],
                           check=True, capture_output=True)
        n_layers = json.load(open(os.path.join(model, "manifest.json")))["hparams"]["n_layers"]
        half = f"0-{n_layers // 2 - 1}"
        rnd = random.Random(7)
        print(f"load average before: {' '.join(loadavg())}; {os.cpu_count()} CPUs")
        print()
        print("| placement | sequences | decode steps | measured s/step | predicted s/step | predicted/measured |")
        print("|---|---|---|---|---|---|")
        cmds, rates, ratios = [], None, []
        # the first run (cpu) measures the rates; every other run reads them from the cache
        for pl in ("cpu", half, "gpu"):
            for b in map(int, a.batch.split(",")):
                st, cmd = run(a, model, pl, b, rnd, home)
                cmds.append(cmd)
                if not st or not st.get("decode_steps"):
                    print(f"| {pl} | {b} | failed | | | |")
                    continue
                rates = rates or st.get("hybrid", {}).get("rates")
                meas = st["decode_s"] / st["decode_steps"]
                pred = st.get("predicted_decode_step_s", 0)
                ratios.append(pred / meas if pred else 0)
                print(f"| {pl} | {b} | {st['decode_steps']} ({st['decode_tokens']} tokens) | {meas:.4f} | "
                      f"{pred:.4f} | {pred / meas:.2f} |", flush=True)
        print()
        if rates:
            lst = lambda w: ", ".join("%.2f" % (rates[f"{w}_{t}"] / 1e9) for t in (1, 2, 4, 8))
            print(f"rates (measured by the first run), GB/s at 1, 2, 4, 8 tokens: second backend {lst('host')}; "
                  f"first backend {lst('dev')}")
        ok = [r for r in ratios if r]
        if ok:
            print(f"predicted/measured: {min(ok):.2f} to {max(ok):.2f}; within 15%: {sum(abs(r - 1) <= 0.15 for r in ok)} "
                  f"of {len(ok)}")
        print(f"load average after: {' '.join(loadavg())}")
        print("commands:")
        for c in cmds:
            print("    " + c)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
