"""Long contexts and batches on the GPU against the machine's floors (issue 7), on a `ferry synth` model
(normally the Llama-3-70B-shaped Q4_K model of bench/bench_decode.py).

  plan      `ferry run --plan` at --vram: the longest context each KV format fits (one sequence, 2 slots).
  long      a --long-prompt-token prompt (default 32768) in chunks of --long-chunk, then --long-gen tokens,
            at --long-vram with --long-kv:
              prefill floor = max(passes x weight bytes / h2d, FLOPs / bf16 rate), passes = ceil(prompt/chunk)
              decode floor  = weight bytes per step / h2d + KV bytes of the context / d2d bandwidth
  batch     --batch-seqs prompts of --batch-prompt tokens, --batch-gen tokens each (--ignore-eos), in one
            `ferry run --prompt-ids-file`, at each --batch-vram with its KV format:
              floor = (decode steps + prompt passes) x weight bytes / h2d, where the decode steps are
              --batch-gen (every sequence at once) and the prompt passes ceil(all prompt tokens / t_max);
              the run's own step count gives a second floor (what the KV budget let run at once).
Ceilings (h2d, d2d, bf16) come from bench/gpu_peak (--peak-json). Prints a markdown section (date, machine,
commands, table, raw JSON) and appends it to --out.

  python3 bench/bench_long.py --model models/synth-70b-q4k.ferry --peak-json peak.json --out bench/RESULTS.md
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_decode import BUILD, ROOT, ceilings, model_info, prompt_ids, sh, write_section  # noqa: E402


def run(a, model, vram, ram, extra, what):
    fd, js = tempfile.mkstemp(prefix="bench_long_", suffix=".json")
    os.close(fd)
    cmd = [a.ferry, "run", "-m", model, "--device", "cuda", "--vram", vram, "--ram", ram, "--temp", "0",
           "--ignore-eos", "--stats", "--stats-json", js, "--warmup", *extra]
    shown = [("IDS_FILE" if x.startswith(tempfile.gettempdir() + "/bench_long_ids_") else x) for x in cmd]
    shown[shown.index(js)] = "FILE"
    print(f"bench_long: {what}: {shlex.join(shown)}", file=sys.stderr, flush=True)
    try:
        p = sh(cmd, what)
        stats = json.load(open(js))
    finally:
        os.unlink(js)
    return stats, shlex.join(shown), p.stderr


def fits(a, model, vram):
    p = sh([a.ferry, "run", "-m", model, "--device", "cuda", "--vram", vram, "--prompt-ids", "1,2,3", "--ctx", "1024",
            "--plan"], "ferry run --plan")
    m = re.search(r"longest --ctx that fits.*?: f16 (\d+) q8 (\d+) q4 (\d+)", p.stderr)
    return {"f16": int(m.group(1)), "q8": int(m.group(2)), "q4": int(m.group(3))} if m else {}, p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "synth-70b-q4k.ferry"))
    ap.add_argument("--ferry", default=os.path.join(ROOT, BUILD, "ferry"))
    ap.add_argument("--peak-json")
    ap.add_argument("--ram", default="64G")
    ap.add_argument("--plan-vram", default="4G")
    ap.add_argument("--long-prompt", type=int, default=32768)
    ap.add_argument("--long-chunk", type=int, default=4096)
    ap.add_argument("--long-gen", type=int, default=4)
    ap.add_argument("--long-vram", default="16G")
    ap.add_argument("--long-kv", default="f16")
    ap.add_argument("--batch-seqs", type=int, default=64)
    ap.add_argument("--batch-prompt", type=int, default=512)
    ap.add_argument("--batch-gen", type=int, default=32)
    ap.add_argument("--batch-vram", default="4G:q4,16G:f16", help="VRAM:KV pairs, comma separated")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: plan,long,batch")
    ap.add_argument("--out")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    peak, h2d, bf16 = ceilings(a)
    d2d = peak.get("d2d_gbps", 0) * 1e9
    hp, wbytes, fmts = model_info(a.model)
    rows, raw, cmds = [], {}, []
    if "plan" not in skip:
        fit, _ = fits(a, a.model, a.plan_vram)
        raw["plan"] = fit
        for k, v in fit.items():
            rows.append((f"longest context at --vram {a.plan_vram}, KV {k}", f"{v} tokens", "", ""))
    if "long" not in skip:
        fd, lst = tempfile.mkstemp(prefix="bench_long_ids_", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            fh.write(prompt_ids(a.long_prompt, hp["vocab"]) + "\n")
        try:
            st, cmd, _ = run(a, a.model, a.long_vram, a.ram, ["--prompt-ids-file", lst, "-n", str(a.long_gen + 1),
                                                               "--chunk", str(a.long_chunk), "--kv", a.long_kv], "long")
        finally:
            os.unlink(lst)
        cmds.append(cmd)
        raw["long"] = st
        passes = -(-a.long_prompt // st["t_max"])
        floor_p = max(passes * wbytes / h2d, st["flops_prefill"] / bf16)
        rows.append((f"prefill {a.long_prompt} tokens (KV {a.long_kv}, --vram {a.long_vram}, t_max {st['t_max']})",
                     f"{st['prefill_s']:.2f} s ({a.long_prompt / st['prefill_s']:.0f} tok/s)",
                     f"{floor_p:.2f} s", f"{st['prefill_s'] / floor_p:.2f}"))
        rows.append(("peak device memory (long)", f"{st['vram_device_used_peak'] / 2**30:.3f} GiB", "", ""))
        if st["decode_tokens"]:
            dt = st["decode_s"] / st["decode_tokens"]
            kv_ctx = st["kv_bytes"] * min(1.0, (a.long_prompt + a.long_gen) / max(st["ctx"], 1))
            floor_d = st["h2d_bytes_decode"] / st["decode_tokens"] / h2d + (kv_ctx / d2d if d2d else 0)
            rows.append((f"decode at {a.long_prompt} context", f"{dt:.3f} s/token", f"{floor_d:.3f} s",
                         f"{dt / floor_d:.2f}"))
    if "batch" not in skip:
        fd, lst = tempfile.mkstemp(prefix="bench_long_ids_", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            for i in range(a.batch_seqs):
                fh.write(prompt_ids(a.batch_prompt, hp["vocab"], salt=1 + i) + "\n")
        try:
            for pair in a.batch_vram.split(","):
                vram, kv = pair.split(":")
                st, cmd, err = run(a, a.model, vram, a.ram, ["--prompt-ids-file", lst, "-n", str(a.batch_gen),
                                                             "--kv", kv], f"batch {vram}")
                cmds.append(cmd)
                raw[f"batch {vram} {kv}"] = st
                total, gen = st["total_s"], st["gen_tokens"]
                passes = a.batch_gen + -(-a.batch_seqs * a.batch_prompt // st["t_max"])
                floor = passes * wbytes / h2d
                floor_run = st["steps"] * wbytes / h2d
                rows.append((f"batch {a.batch_seqs} x ({a.batch_prompt} + {a.batch_gen}), --vram {vram}, KV {kv}, "
                             f"t_max {st['t_max']}, {st['steps']} steps",
                             f"{total:.1f} s, {gen / total:.1f} generated tok/s", f"{floor:.1f} s ({passes} passes)",
                             f"{total / floor:.2f} (vs its {st['steps']} steps: {total / floor_run:.2f})"))
        finally:
            os.unlink(lst)
    write_section(f"### Long context and batches, {datetime.date.today()} ({peak.get('gpu', 'GPU')}, {platform.node()})",
                  f"Model {a.model}: {hp['n_layers']} layers, {wbytes / 1e9:.2f} GB of weights ({', '.join(fmts)}). "
                  f"Ceilings: h2d {h2d / 1e9:.1f} GB/s, d2d {d2d / 1e9:.0f} GB/s, bf16 {bf16 / 1e12:.0f} TFLOP/s.",
                  "bench/bench_long.py", cmds, rows, raw, a.out)


if __name__ == "__main__":
    main()
