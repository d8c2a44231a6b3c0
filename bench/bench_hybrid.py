#!/usr/bin/env python3
"""Hybrid placement (issue 22): decode and prefill of one model under several --placement values, each figure
next to its floor, and the planner's prediction next to the measurement; optionally llama.cpp's llama-bench on
the same GGUF with -ngl swept, in the same call.

  python3 bench/bench_hybrid.py --model M.ferry --vram 4G --ram 64G --placements gpu,cpu,auto \\
      [--h2d-limit 13] [--threads 8] [--gguf M.gguf --llama-bench PATH --ngl 0,2,4,6,8] [--out FILE.md]

Floors (bytes per token from the plan):
  gpu:    streamed bytes / the pinned host->device rate ferry measured alone at start
  cpu:    every unit's bytes / the CPU's matmul rate at 1 token measured alone at start
  hybrid: the bytes that are not resident / (link rate + CPU rate), each path's rate measured in this run: the
          gpu row's streamed bytes over its decode step, the cpu row's bytes over its decode step; that is the
          step of the best split of the bytes between the two paths, each running as fast as it does alone
          (without a gpu and a cpu row: the start-up rates measured alone)
Decode is timed by ferry (decode_s / decode_tokens of --stats-json), prefill likewise; every run starts with
`--warmup` (one untimed pass over every layer: the RAM tier filled from the page cache before any timed step;
without it the first, prefill, step also pays for that fill: 9 tok/s on the 70B shape on the H100).
Predicted: ferry's plan for a decode step of the decode steps' mean tokens, from the rates measured at start
(and, with --placement auto, from the rates the online correction arrived at, with its re-plans).
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FERRY = os.path.join(ROOT, "build", "ferry")


def run_ferry(a, placement, ids, gen, extra=(), ids_file=None):
    sj = tempfile.mktemp(suffix=".json")
    prompt = ["--prompt-ids-file", ids_file] if ids_file else ["--prompt-ids", ",".join(map(str, ids))]
    cmd = [FERRY, "run", "-m", a.model, *prompt, "-n", str(gen), "--ignore-eos",
           "--temp", "0", "--vram", a.vram, "--ram", a.ram, "--placement", placement, "--stats-json", sj, "--stats",
           "--warmup", *extra]
    if a.h2d_limit:
        cmd += ["--h2d-limit", str(a.h2d_limit)]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        print(f"ferry --placement {placement} failed ({p.returncode}): {p.stderr[-800:]}", file=sys.stderr)
        if not ids_file:
            cmd[cmd.index("--prompt-ids") + 1] = f"<{len(ids)} random ids>"
        return None, " ".join(cmd)
    st = json.load(open(sj))
    os.unlink(sj)
    if not ids_file:
        cmd[cmd.index("--prompt-ids") + 1] = f"<{len(ids)} random ids>"
    plan = [line for line in p.stderr.splitlines() if line.startswith(("plan: placement", "plan:  ", "plan: predicted",
                                                                       "ferry: hybrid", "ferry: decode", "rates:"))]
    st["_plan"] = plan
    return st, " ".join(cmd)


def llama(a, ngl):
    cmd = [a.llama_bench, "-m", a.gguf, "-p", str(a.prompt), "-n", str(a.gen), "-ngl", str(ngl), "-o", "json",
           "-r", "2"]
    if a.threads:
        cmd += ["-t", str(a.threads)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return None, " ".join(cmd)
    res = {}
    for r in json.loads(p.stdout):
        res["decode" if r.get("n_gen") else "prefill"] = r["avg_ts"]
    return res, " ".join(cmd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--vram", default="4G")
    ap.add_argument("--ram", default="64G")
    ap.add_argument("--placements", default="gpu,cpu,auto")
    ap.add_argument("--prompt", type=int, default=512, help="prefill tokens (one step, on the GPU)")
    ap.add_argument("--gen", type=int, default=16)
    ap.add_argument("--h2d-limit", type=float, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--gguf")
    ap.add_argument("--llama-bench")
    ap.add_argument("--ngl", default="")
    ap.add_argument("--batch", default="", help="sequences decoded together, e.g. 2,4,8: hybrid step time "
                    "predicted vs measured for each, with every hybrid placement")
    ap.add_argument("--out")
    a = ap.parse_args()
    rnd = random.Random(5)
    ids = [rnd.randrange(100, 30000) for _ in range(a.prompt)]
    rows, cmds, rates = [], [], None
    order = sorted(a.placements.split(","), key=lambda p: p != "auto")  # auto first: its rates give the floors
    for pl in order:
        st, cmd = run_ferry(a, pl, ids, a.gen)
        cmds.append(cmd)
        if not st:
            rows.append((pl, None))
            continue
        h = st.get("hybrid", {})
        if pl == "auto" and "rates" in h:
            rates = h["rates"]
        rows.append((pl, st))
    lines = []
    say = lambda s="": (print(s, flush=True), lines.append(s))
    if rates:
        say("rates (ferry, measured at start on a sample of the units): host->device %.1f GB/s (%.1f beside the CPU), "
            "CPU %.1f GB/s at 1 token, %.1f at 8 (%.1f beside the copies), device %.1f GB/s, crossing %.0f us" %
            (rates["h2d"] / 1e9, rates["h2d_busy"] / 1e9, rates["host_1"] / 1e9, rates["host_8"] / 1e9,
             rates["host_busy"] / 1e9, rates["dev_1"] / 1e9, rates["cross_s"] * 1e6))
    # each path's rate as this run measured it: the streamed bytes of the gpu row and every unit of the cpu row
    # over their decode steps
    run_rate = {}
    for pl, st in rows:
        if st and st.get("decode_steps") and pl in ("gpu", "cpu"):
            h = st.get("hybrid", {})
            step = st["decode_s"] / st["decode_steps"]
            by = h.get("stream_bytes", 0) if pl == "gpu" else h.get("units_bytes", 0)
            run_rate[pl] = by / step if step > 0 else 0
    if len(run_rate) == 2:
        say("rates (this run): link %.1f GB/s (the gpu row's streamed bytes / its step), CPU %.1f GB/s (the cpu row's "
            "bytes / its step)" % (run_rate["gpu"] / 1e9, run_rate["cpu"] / 1e9))
    say()
    say("| placement | decode s/token | tok/s | floor s/token | ratio | predicted s/step | predicted/measured | "
        "corrected prediction | re-plans | prefill %d tok/s | units on CPU |" % a.prompt)
    say("|---|---|---|---|---|---|---|---|---|---|---|")
    for pl, st in rows:
        if not st:
            say(f"| {pl} | failed | | | | | | | | | |")
            continue
        h = st.get("hybrid", {})
        dt = st["decode_s"] / max(st["decode_tokens"], 1)
        step = st["decode_s"] / max(st.get("decode_steps", 0), 1)
        pre = st["prefill_tokens"] / st["prefill_s"] if st["prefill_s"] > 0 else 0
        n_host = h.get("units_on_host", 0)
        floor = None
        ub, hb, sb = h.get("units_bytes", 0), h.get("host_bytes", 0), h.get("stream_bytes", 0)
        if n_host == 0 and rates:
            floor = sb / rates["h2d"]
        elif hb >= ub and rates:
            floor = ub / rates["host_1"]
        elif n_host and len(run_rate) == 2:
            floor = (hb + sb) / (run_rate["gpu"] + run_rate["cpu"])
        elif n_host and rates:
            floor = (hb + sb) / (rates["h2d"] + rates["host_1"])
        pred, fixed = st.get("predicted_decode_step_s"), st.get("predicted_decode_step_fixed_s")
        replans = h.get("parts", {}).get("replans", 0)
        f = lambda v, fmt: (fmt % v) if v else "-"
        say(f"| {pl} | {dt:.4f} | {1 / dt:.2f} | {f(floor, '%.4f')} | {f(floor and dt / floor, '%.2fx')} | "
            f"{f(pred, '%.4f')} | {f(pred and pred / step, '%.2f')} | {f(fixed, '%.4f')} | {replans} | {pre:.1f} | "
            f"{n_host}/{h.get('units', '?')} |")
    for pl, st in rows:
        if st:
            say()
            say(f"placement {pl}:")
            for line in st["_plan"]:
                say("    " + line)
    if a.batch:
        say()
        say("| placement | sequences | decode steps | measured s/step | predicted s/step | predicted/measured | "
            "corrected | re-plans | units on CPU |")
        say("|---|---|---|---|---|---|---|---|---|")
        for pl, st in rows:
            if not st:
                continue
            for b in map(int, a.batch.split(",")):
                path = tempfile.mktemp(suffix=".ids")
                with open(path, "w") as fh:
                    for i in range(b):
                        fh.write(",".join(str(rnd.randrange(100, 30000)) for _ in range(16)) + "\n")
                sb, cmd = run_ferry(a, pl, None, a.gen, ids_file=path)
                os.unlink(path)
                cmds.append(cmd)
                if not sb or not sb.get("decode_steps"):
                    say(f"| {pl} | {b} | failed or none | | | | | | |")
                    continue
                h = sb.get("hybrid", {})
                meas = sb["decode_s"] / sb["decode_steps"]
                pred, fixed = sb.get("predicted_decode_step_s", 0), sb.get("predicted_decode_step_fixed_s", 0)
                say(f"| {pl} | {b} | {sb['decode_steps']} ({sb['decode_tokens']} tokens) | {meas:.4f} | {pred:.4f} | "
                    f"{pred / meas:.2f} | {fixed:.4f} | {h.get('parts', {}).get('replans', 0)} | "
                    f"{h.get('units_on_host', 0)}/{h.get('units', '?')} |")
    if a.llama_bench and a.gguf and a.ngl:
        say()
        say("| llama.cpp -ngl | decode tok/s | s/token | prefill %d tok/s |" % a.prompt)
        say("|---|---|---|---|")
        for ngl in a.ngl.split(","):
            res, cmd = llama(a, ngl)
            cmds.append(cmd)
            if not res:
                say(f"| {ngl} | failed | | |")
                continue
            say(f"| {ngl} | {res.get('decode', 0):.2f} | {1 / res['decode'] if res.get('decode') else 0:.4f} | "
                f"{res.get('prefill', 0):.1f} |")
    say()
    say("commands:")
    for c in cmds:
        say("    " + c)
    if a.out:
        with open(a.out, "a") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
