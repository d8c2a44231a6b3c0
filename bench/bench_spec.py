#!/usr/bin/env python3
"""Speculative decoding (issue 20): tokens per pass and decode tokens per second for each draft source, on
three task sets (bench/spec_prompts.json: summarization, code editing, chat; chat prompts through the chat
template), greedy, beside the plain decode of the same prompts.

  python3 bench/bench_spec.py [--model M.ferry | --gguf M.gguf] [--draft D.ferry | --draft-gguf D.gguf] [-n 48]
                              [--spec-max 16[,32,...]] [--device cpu] [--vram 4G] [--sets summarize,code,chat]
                              [--chat-all] [--prompts N] [--log RUNS.jsonl] [--out FILE.md] [--spec-cost C0,C1]
                              [--placement gpu] [--jobs N] [--stop-after SECONDS]

Sources: off (plain decode), lookup (prompt lookup), draft (the draft model's greedy chain), tree (the draft's
top-k per depth as leaves, and lookup), combined (the draft's branches and every lookup continuation in one
tree, the best-scoring nodes kept). --spec-cost C0,C1 gives the planner a pass cost instead of the measured
one (0.7,0: a streamed 70B pass, flat in tokens, so trees grow as they would there). The draft defaults to the model itself (Gemma 3 270M is its own
draft here: acceptance near 1, which measures the mechanics, not a real pair); a real pair shares a tokenizer,
e.g. Qwen2.5-Coder-1.5B-Instruct with Qwen2.5-Coder-0.5B-Instruct as its draft (`python3 tools/fetch_instruct.py`
and `--draft`), run with --chat-all (an instruct model gets every prompt through its chat template). A list of
--spec-max values runs every source at each (the tree size: the most tokens a verification pass carries).
The task sets (22 prompts each) are written by tools/make_spec_prompts.py.

Figures: tokens per pass = tokens produced by verification passes / passes (1.0 for plain decode); decode
tok/s = (generated - 1) / (the target's decode time + the draft model's steps), from --stats-json; the ratio
to plain decode of the same prompt. With --spec-cost C0,C1,D also the draft's steps per pass and the projected
tok/s of the target the cost describes: generated tokens / (decode steps * C0 + draft steps * D) (measured: the
target's decode steps, plain ones included, and the draft's steps; assumed: C0 and D; C1, 0 for a streamed
target, is left out: a pass's size is not logged). Tokens per step (generated tokens / the target's decode steps,
in parentheses the runs that logged steps; --stats-json's own "tokens_per_step" where the binary reports it,
else derived from the run's steps and the plain run's) is the figure a streamed target's speed follows: tokens
per pass leaves out the plain steps a source without a guess takes (lookup where nothing recurs).
--jobs N runs N prompts side by side (the counts do not change; the tok/s columns are then a shared machine's);
--stop-after S starts no run after S seconds and writes the table of what --log holds (a call with a time limit:
bench/gpu_spec_pair.sh). Every spec run's ids are checked against the plain run's (greedy
identity); a mismatch is printed and fails the benchmark.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FERRY = os.environ.get("FERRY_BIN", os.path.join(ROOT, "build", "ferry"))  # a copy: a rebuild during a long run


def run(a, prompt, chat, spec, spec_max=16):
    sj = tempfile.mktemp(suffix=".json")
    cmd = [FERRY, "run", "-m", a.model, "-p", prompt, "-n", str(a.n), "--temp", "0", "--ignore-eos", "--print-ids",
           "--device", a.device, "--stats-json", sj]
    if a.placement:
        cmd += ["--placement", a.placement]
    if a.vram:
        cmd += ["--vram", a.vram]
    if chat:
        cmd.append("--chat")
    if spec != "off":
        cmd += ["--spec", spec, "--spec-max", str(spec_max)]
        if spec in ("draft", "tree", "combined"):
            cmd += ["--draft", a.draft]
        if a.spec_cost:
            cmd += ["--spec-cost", a.spec_cost]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"ferry --spec {spec} failed ({p.returncode}): {p.stderr[-800:]}")
    st = json.load(open(sj))
    os.unlink(sj)
    ids = p.stdout.split()
    sp = st.get("spec", {})
    sec = st["decode_s"] + sp.get("draft_s", 0.0)
    rec = {"tps": (len(ids) - 1) / sec if sec > 0 else 0.0,
           "tpp": sp.get("tokens_per_pass", 0.0) if spec != "off" else 1.0,
           "acc": sp.get("acceptance", 0.0), "passes": sp.get("passes", 0), "dsteps": sp.get("draft_steps", 0),
           "steps": st["steps"]}
    if spec != "off" and "tokens_per_step" in sp:  # --stats' own count (a binary of issue 20's third spec branch on)
        rec["tpstep"], rec["gsteps"] = sp["tokens_per_step"], sp["decode_steps"]
    return ids, rec


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--gguf", default=os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--draft")
    ap.add_argument("-n", type=int, default=48)
    ap.add_argument("--spec-max", default="16", help="a value or a comma-separated list")
    ap.add_argument("--draft-gguf")
    ap.add_argument("--chat-all", action="store_true", help="every set through the chat template")
    ap.add_argument("--prompts", type=int, default=0, help="the first N prompts of each set (0: all)")
    ap.add_argument("--skip", type=int, default=0, help="run none of the first N prompts (the table takes them from --log)")
    ap.add_argument("--log", help="JSONL of every run's figures, appended as measured; a rerun resumes from it")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vram")
    ap.add_argument("--sets", default="summarize,code,chat")
    ap.add_argument("--sources", default="lookup,draft,tree")
    ap.add_argument("--out")
    ap.add_argument("--spec-cost", help="C0,C1: the planner's pass cost in seconds (default: measured)")
    ap.add_argument("--placement", help="ferry run --placement (gpu: every unit resident on a CUDA device)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="prompts run at once (ferry processes side by side: the counts are unchanged, the tok/s "
                         "columns are then those of a shared machine)")
    ap.add_argument("--stop-after", type=float, default=0,
                    help="seconds: start no run after this, then write the table of what --log holds (0: no limit)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    if not a.model:
        a.model = os.path.join(tmp, "model.ferry")
        subprocess.run([FERRY, "convert", a.gguf, "-o", a.model], check=True, capture_output=True)
    if a.draft_gguf and not a.draft:
        a.draft = os.path.join(tmp, "draft.ferry")
        subprocess.run([FERRY, "convert", a.draft_gguf, "-o", a.draft], check=True, capture_output=True)
    a.draft = a.draft or a.model
    sizes = [int(v) for v in a.spec_max.split(",")]
    sets = json.load(open(os.path.join(ROOT, "bench", "spec_prompts.json")))
    names = a.sets.split(",")
    chosen = {n: sets[n][:a.prompts] if a.prompts else sets[n] for n in names}
    sources = [(s, m) for m in sizes for s in a.sources.split(",")]
    # one result line per (set, prompt, source, size) appended to --log as it is measured; a rerun with the
    # same --log skips what it holds, so a long run (the real pair on a CPU) can stop and go on; prompts go
    # round-robin over the sets, so every set has as many prompts done whenever it stops
    done = {}
    if a.log and os.path.exists(a.log):
        for line in open(a.log):
            r = json.loads(line)
            done[(r["set"], r["i"], r["source"], r["max"])] = r
    logf = open(a.log, "a") if a.log else None
    lock = threading.Lock()
    t_start = time.time()

    def record(rec):
        with lock:
            done[(rec["set"], rec["i"], rec["source"], rec["max"])] = rec
            if logf:
                logf.write(json.dumps(rec) + "\n")
                logf.flush()

    def late():
        return a.stop_after > 0 and time.time() - t_start > a.stop_after

    def one_prompt(name, i):  # the plain run first (the identity check's reference), then every source
        prompt, chat = chosen[name][i], a.chat_all or name == "chat"
        if (name, i, "off", 0) not in done:
            if late():
                return
            ids, base = run(a, prompt, chat, "off")
            record({"set": name, "i": i, "source": "off", "max": 0, **base, "ids": ids})
        want = done[(name, i, "off", 0)]["ids"]
        for s, m in sources:
            if (name, i, s, m) in done or late():
                continue
            got, r = run(a, prompt, chat, s, m)
            if got != want:
                print(f"{name} {i} --spec {s} --spec-max {m}: ids differ from plain decode", file=sys.stderr)
            record({"set": name, "i": i, "source": s, "max": m, **r, "same": got == want})
        print(f"{name} {i}: {'done' if not late() else 'stopped (--stop-after)'}", file=sys.stderr, flush=True)

    order = [(name, i) for i in range(max(len(v) for v in chosen.values())) for name in names if a.skip <= i < len(chosen[name])]
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        for fut in [ex.submit(one_prompt, name, i) for name, i in order]:
            fut.result()
    bad = sum(1 for (n, _, s, m), r in done.items() if n in names and (s, m) in sources and not r["same"])
    mean = lambda v: sum(v) / len(v) if v else 0.0  # noqa: E731
    # --spec-cost C0,C1,D: the projection for the target it describes (a streamed 70B: C0 = 0.7 s a pass):
    # tok/s = tokens per pass / (C0 + D * the draft's steps per pass), from each run's measured
    # tokens per pass and draft steps (runs logged before draft steps were recorded are left out of it)
    cost = [float(v) for v in a.spec_cost.split(",")] + [0.0, 0.0] if a.spec_cost else None

    # tokens per step: a speculative run's decode steps include plain ones (lookup without a match makes no
    # tree: no pass, but a full step of the target); the prompt's steps are the plain run's steps less its
    # generated tokens but the first (the first comes from the prompt's last step)
    def per_step(r):
        if "tpstep" in r:
            return r["tpstep"]
        off = done.get((r["set"], r["i"], "off", 0), {})
        if "steps" not in r or "steps" not in off:
            return None
        gen = len(off["ids"]) - 1
        return gen / (r["steps"] - (off["steps"] - gen))

    def proj(r):
        if r["source"] == "off":
            return 1 / cost[0]
        steps = 0 if r["source"] == "lookup" else r.get("dsteps")  # (lookup runs no draft)
        tps = per_step(r)
        if steps is None or tps is None:
            return None
        gen = len(done[(r["set"], r["i"], "off", 0)]["ids"]) - 1
        return gen / (gen / tps * cost[0] + cost[2] * steps)

    rows = []
    for name in names:
        recs = [r for r in done.values() if r["set"] == name and r["i"] < len(chosen[name])]
        plain = [r["tps"] for r in recs if r["source"] == "off"]
        rows.append((name, len(plain), "off", "", 1.0, 0.0, mean(plain), 1.0, "0", cost and 1 / cost[0], "1.00"))
        for s, m in sources:
            v = [r for r in recs if (r["source"], r["max"]) == (s, m)]
            tps = mean([r["tps"] for r in v])
            pv = [x for x in map(proj, v) if x is not None] if cost else []
            ds = [r["dsteps"] / r["passes"] for r in v if r.get("passes") and "dsteps" in r]
            rows.append((name, len(v), s, m, mean([r["tpp"] for r in v]), mean([r["acc"] for r in v]), tps,
                         tps / mean(plain) if plain else 0.0, f"{mean(ds):.1f} ({len(ds)})" if ds else "-",
                         f"{mean(pv):.2f} ({len(pv)})" if pv else None,
                         f"{mean(sv):.2f} ({len(sv)})" if (sv := [x for x in map(per_step, v) if x]) else "-"))
    lines = [f"model {a.model}, draft {a.draft}, device {a.device}, {a.n} tokens greedy"
             f"{', planner pass cost ' + a.spec_cost if a.spec_cost else ''}"
             f"{', every set through the chat template' if a.chat_all else ''}", "",
             "| set | prompts | source | --spec-max | tokens/pass | tokens/step | acceptance | decode tok/s | vs plain |"
             f"{' draft steps/pass | projected tok/s |' if cost else ''}",
             "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if cost else "")]
    for name, n, s, m, tpp, acc, tps, ratio, ds, pj, tst in rows:
        lines.append(f"| {name} | {n} | {s} | {m} | {tpp:.2f} | {tst} | {acc:.2f} | {tps:.1f} | {ratio:.2f}x |"
                     + (f" {ds} | {pj if isinstance(pj, str) else '-' if pj is None else f'{pj:.2f}'} |" if cost else ""))
    runs = [r for (n, i, s, m), r in done.items() if n in names and i < len(chosen[n]) and (s, m) in sources]
    lines += ["", f"greedy identity: {sum(r['same'] for r in runs)} of {len(runs)} speculative runs gave the plain "
                  f"run's ids" + (f"; differing: {sorted((r['set'], r['i'], r['source'], r['max']) for r in runs if not r['same'])}"
                                  if bad else "")]
    text = "\n".join(lines)
    print(text)
    if a.out:
        open(a.out, "w").write(text + "\n")
    if bad:
        sys.exit(f"{bad} runs differed from plain decode")


if __name__ == "__main__":
    main()
