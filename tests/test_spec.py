"""Speculative decoding (src/engine/spec.h) on the CPU:
  - greedy identity: `ferry run --spec lookup|draft|tree|combined` gives token for token the ids of the same run without
    speculation, on tiny models (Llama with head_dim 32; Gemma 3 with sliding window 8, so trees stay shallower
    than the window) with a draft of another seed (low acceptance) and the model itself as its own draft (high
    acceptance: deep trees whose accepted paths are moved into place), KV f32/f16/q8, whole and chunked
    (--chunk 7) prompts, several prompts in one run (--prompt-ids-file, --max-batch 2, --chunk 5: trees cut
    to the step's room); and on Gemma 3 270M (its own draft
    for the mechanics: trees, KV f32 and q8) with text that repeats (lookup);
  - --stats' tokens per target decode step (plain steps included) beside tokens per pass: the generated tokens
    over the decode steps; lookup's plain steps counted; combined with its own draft under a flat cost at least
    the draft alone's tokens per step;
  - greedy identity of --spec combined on the real pair Qwen2.5-Coder-1.5B-Instruct / 0.5B (when fetched);
  - sampling exactness: 1,500 requests of one prompt with seeds 1..1500 (temperature 0.7, top-k 6) through
    tests/spec_tool, without speculation and with trees (tree, combined) of the model's own draft: the histograms of the
    2nd and 3rd generated tokens (the 1st comes from the prompt pass) and of the (2nd, 3rd) pairs agree by a
    chi-square test of homogeneity at significance 0.001 each (bins of fewer than 10 pooled);
  - `ferry batch --spec lookup` gives the lines of the plain batch, one line with "speculative": false, and
    reports tokens per pass in its summary and --stats-json;
  - bad input: a draft of another vocabulary, --spec tree without a draft, a bad --spec, --spec-max or --spec-cost: one
    line, non-zero exit.
Under ASan (`make asan`: -O1, instrumented, many times slower) only the tiny models' greedy runs at KV f32,
100 sampled requests (no statistics) and the bad input run, for memory errors; the optimized build checks the
rest.
"""

import json
import math
import os
import random
import subprocess
from collections import Counter

from ferrytest import FERRY, ROOT, Failures, ferry, gemma_gguf, scratch, tiny_model

SPEC_TOOL = os.path.join(os.path.dirname(FERRY), "tests", "spec_tool")
# the sanitizer build (make asan: -O1, instrumented, many times slower) runs the tiny models' paths for memory
# errors; the statistics and the real model are checked by the optimized build
SANITIZED = "asan" in os.environ.get("FERRY_BUILD", "")


def run_ids(f, model, prompt_args, n, extra, what):
    p = ferry("run", "-m", model, *prompt_args, "-n", n, "--temp", 0, "--ignore-eos", "--print-ids", *extra)
    f.check(p.returncode == 0, f"{what}: run failed: {p.stderr.strip()[-400:]}")
    return p.stdout if p.returncode == 0 else None


def chi2_homogeneity(a, b):
    """Chi-square statistic and degrees of freedom of two samples' histograms (bins under 10 pooled)."""
    na, nb = sum(a.values()), sum(b.values())
    keys = [k for k in set(a) | set(b) if a[k] + b[k] >= 10]
    rest = (na - sum(a[k] for k in keys), nb - sum(b[k] for k in keys))
    rows = [(a[k], b[k]) for k in keys] + ([rest] if sum(rest) else [])
    stat = 0.0
    for x, y in rows:
        tot = x + y
        for obs, n in ((x, na), (y, nb)):
            exp = tot * n / (na + nb)
            stat += (obs - exp) ** 2 / exp
    return stat, len(rows) - 1


def chi2_critical(df, z=3.0902):
    """The chi-square quantile at one-sided normal quantile z (3.0902: significance 0.001), Wilson-Hilferty."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def greedy_matrix(f, root, variant):
    _, model = tiny_model(variant, root)
    _, other = tiny_model(variant, os.path.join(root, "seed1"), seed=1)
    rnd = random.Random(7)
    # repeated material, so prompt lookup finds n-grams
    base = [rnd.randrange(1, 300) for _ in range(12)]
    prompts = [base * 3 + base[:4], [rnd.randrange(1, 300) for _ in range(9)], base[:5] + base]
    ids_file = os.path.join(root, f"{variant}.ids")
    with open(ids_file, "w") as fh:
        fh.write("\n".join(",".join(map(str, p)) for p in prompts) + "\n")
    one = ["--prompt-ids", ",".join(map(str, prompts[0]))]
    many = ["--prompt-ids-file", ids_file]
    for kv in ("f32", "f16", "q8"):
        # --chunk 5 with three prompts: trees cut to the step's room, some requests' drafts left unused
        cases = ((one, []), (one, ["--chunk", 7]), (many, []), (many, ["--max-batch", 2]), (many, ["--chunk", 5]))
        if SANITIZED and kv != "f32":
            continue
        for args, extra in cases if kv == "f32" else cases[1:4:2]:
            want = run_ids(f, model, args, 24, ["--kv", kv, *extra], f"{variant} plain")
            # combined: the model as its own draft under a flat pass cost (the deepest trees, up to the window),
            # a draft of another seed, and lookup of every length alone
            specs = (["lookup"], ["draft", "--draft", other], ["tree", "--draft", model],
                     ["tree", "--draft", other, "--spec-max", 5, "--spec-branch", 2],
                     ["combined", "--draft", model, "--spec-cost", "0.7,0", "--spec-max", 40],
                     ["combined", "--draft", other], ["combined", "--spec-cost", "0.7,0", "--spec-max", 64])
            for spec in specs if kv == "f32" else specs[::2]:
                got = run_ids(f, model, args, 24, ["--kv", kv, *extra, "--spec", *spec], f"{variant} {spec}")
                f.check(got == want, f"{variant} kv {kv} {extra} {len(args)} --spec {spec}: ids differ:\n{got}\n{want}")
        print(f"{variant} kv {kv}: greedy identical with lookup, draft, tree, combined", flush=True)
    return model


def per_step(f, root, model):
    """--stats' tokens per target decode step (plain steps included) beside tokens per pass: equal to the
    generated tokens after the prompt's over the run's decode steps; lookup on a prompt with a single repeat
    takes plain steps where nothing recurs, so per step is below per pass; combined with the model as its own
    draft (every chain right) under a flat pass cost and a draft step gives at least what --spec draft alone
    does per step (the draft's chain pinned and as deep as --spec draft's)."""
    n = 40
    rnd = random.Random(11)
    once = [rnd.randrange(1, 300) for _ in range(10)]
    prompt = ["--prompt-ids", ",".join(map(str, once + once[:3]))]
    figs = {}
    for name, spec in (("lookup", ["lookup"]), ("draft", ["draft", "--draft", model]),
                       ("combined", ["combined", "--draft", model])):
        sj = os.path.join(root, f"step_{name}.json")
        p = ferry("run", "-m", model, *prompt, "-n", n, "--temp", 0, "--ignore-eos", "--stats", "--stats-json", sj,
                  "--spec", *spec, "--spec-cost", "0.7,0,0.01", "--spec-max", 16)
        if not f.check(p.returncode == 0, f"per step {name}: {p.stderr.strip()[-300:]}"):
            continue
        sp = json.load(open(sj))["spec"]
        figs[name] = sp
        want = (n - 1) / sp["decode_steps"] if sp.get("decode_steps") else None
        f.check(want is not None and abs(sp["tokens_per_step"] - want) < 1e-9,
                f"per step {name}: tokens_per_step {sp.get('tokens_per_step')} != {n - 1} / {sp.get('decode_steps')}")
        line = [x for x in p.stderr.split("\n") if x.startswith(f"ferry: spec {name}:")]
        f.check(line and f"{sp['tokens_per_step']:.2f} tokens per step" in line[0], f"per step {name}: --stats {line}")
        print(f"per step {name}: {sp['passes']} passes, {sp['tokens_per_pass']:.2f} tokens a pass, "
              f"{sp['decode_steps']} decode steps, {sp['tokens_per_step']:.2f} tokens a step", flush=True)
    if "lookup" in figs:
        lk = figs["lookup"]
        f.check(lk["decode_steps"] > lk["passes"] and lk["tokens_per_step"] < lk["tokens_per_pass"],
                f"lookup on a prompt that repeats once: per step should count its plain steps: {lk}")
    if "draft" in figs and "combined" in figs:
        f.check(figs["combined"]["tokens_per_step"] >= figs["draft"]["tokens_per_step"] - 1e-9,
                f"combined with its own draft: {figs['combined']['tokens_per_step']:.2f} tokens a step, below the draft "
                f"alone's {figs['draft']['tokens_per_step']:.2f}")


def real_pair(f, root):
    """Qwen2.5-Coder-1.5B-Instruct with the 0.5B as its draft (tools/fetch_instruct.py; left out, said in one
    line, where not fetched): --spec combined under the flat pass cost (large trees) and the measured one gives
    the plain run's ids on a summary of a short text (lookup and draft both propose)."""
    ggufs = [os.path.join(ROOT, "models", n) for n in ("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                                                        "qwen2.5-coder-0.5b-instruct.gguf")]
    if not all(map(os.path.exists, ggufs)):
        print(f"note: {ggufs} not fetched (python3 tools/fetch_instruct.py): the real pair's check is left out")
        return
    target, draft = os.path.join(root, "q15.ferry"), os.path.join(root, "q05.ferry")
    for g, out in zip(ggufs, (target, draft)):
        f.check(ferry("convert", g, "-o", out).returncode == 0, f"convert {g} failed")
    text = ("Summarize: The river rises in the northern hills and runs south through three towns. The first town "
            "built a mill on the river in 1820. The second town built a bridge over the river in 1850. The third "
            "town built a port where the river meets the sea.")
    want = run_ids(f, target, ["-p", text, "--chat"], 24, [], "real pair plain")
    for spec in (["--spec-cost", "0.7,0", "--spec-max", 48], ["--spec-max", 16]):
        got = run_ids(f, target, ["-p", text, "--chat"], 24, ["--spec", "combined", "--draft", draft, *spec],
                      f"real pair combined {spec}")
        f.check(got == want, f"real pair --spec combined {spec}: ids differ:\n{got}\n{want}")
    print("qwen2.5-coder 1.5b with the 0.5b: greedy identical with combined", flush=True)


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        model = greedy_matrix(f, root, "llama_headdim")
        per_step(f, root, model)
        greedy_matrix(f, root, "gemma3")

        # sampling: the same distribution with and without speculation
        n = 100 if SANITIZED else 1500
        outs = {}
        for spec in ("off", "tree", "combined"):
            p = subprocess.run(list(map(str, [SPEC_TOOL, model, "5,6,7,8,9,5,6,7", n, 3, 0.7, 6, 32, spec, model])),
                               capture_output=True, text=True)
            f.check(p.returncode == 0, f"spec_tool {spec}: {p.stderr.strip()[-300:]}")
            outs[spec] = [tuple(map(int, line.split())) for line in p.stdout.split("\n") if line]
            print(f"spec_tool {spec}: {p.stderr.strip()}", flush=True)
        f.check(all(len(outs[s]) == n for s in outs), "spec_tool: a request without its tokens")
        if not SANITIZED and all(len(outs[s]) == n for s in outs):
            for spec in ("tree", "combined"):
                for what, key in (("2nd token", lambda t: t[1]), ("3rd token", lambda t: t[2]),
                                  ("(2nd, 3rd)", lambda t: t[1:])):
                    stat, df = chi2_homogeneity(Counter(map(key, outs["off"])), Counter(map(key, outs[spec])))
                    crit = chi2_critical(df)
                    print(f"sampling {spec} {what}: chi2 {stat:.1f} on {df} df (critical {crit:.1f} at 0.001)",
                          flush=True)
                    f.check(df >= 3 and stat < crit, f"sampling {spec} {what}: chi2 {stat:.1f} >= {crit:.1f} ({df} df)")
                f.check(outs["off"] != outs[spec], f"sampling {spec}: drew exactly the plain run's tokens")

        # bad input: one line each
        _, v384 = tiny_model("llama3_rope", root)
        for args, want in ((["--spec", "draft", "--draft", v384], "vocabulary"),
                           (["--spec", "tree"], "needs a draft model"),
                           (["--spec-cost", "0.7"], "--spec-cost"), (["--spec-cost", "-1,0"], "--spec-cost"),
                           (["--spec", "sometimes"], "--spec"), (["--spec-max", 0], "--spec-max"),
                           (["--draft", os.path.join(root, "nothing")], "--draft")):
            p = ferry("run", "-m", model, "--prompt-ids", "1,2,3", "-n", 2, *args)
            lines = p.stderr.strip().split("\n")
            f.check(p.returncode != 0 and len(lines) == 1 and want in lines[0],
                    f"{args}: expected one line naming {want!r}, got rc {p.returncode}: {p.stderr.strip()}")

        if SANITIZED:
            print("gemma part skipped under ASan (the plain build runs it)")
            f.finish()
        # the real model, its own draft; text that repeats itself
        gguf = gemma_gguf(f)
        g = os.path.join(root, "gemma.ferry")
        f.check(ferry("convert", gguf, "-o", g).returncode == 0, "gemma convert failed")
        text = "The capital of France is Paris. The capital of Germany is Berlin. The capital of France is"
        for kv in ("f32", "q8"):
            want = run_ids(f, g, ["-p", text], 24, ["--kv", kv], "gemma plain")
            specs = (["tree", "--draft", g, "--spec-max", 8], ["lookup"], ["combined", "--draft", g, "--spec-max", 32,
                                                                           "--spec-cost", "0.7,0"])
            for spec in specs if kv == "f32" else specs[:1]:
                got = run_ids(f, g, ["-p", text], 24, ["--kv", kv, "--spec", *spec], f"gemma {spec}")
                f.check(got == want, f"gemma kv {kv} --spec {spec}: ids differ:\n{got}\n{want}")
        print("gemma 3 270m: greedy identical with lookup, tree and combined", flush=True)

        real_pair(f, root)

        # ferry batch: the same lines with and without --spec lookup ("speculative": false keeps one plain)
        lines = [{"id": 1, "prompt": text, "max_tokens": 12, "ignore_eos": True},
                 {"id": 2, "prompt": "one two three one two three one", "max_tokens": 12, "speculative": False,
                  "ignore_eos": True}]
        inp = os.path.join(root, "in.jsonl")
        with open(inp, "w") as fh:
            fh.write("".join(json.dumps(x) + "\n" for x in lines))
        res = {}
        for name, extra in (("plain", []), ("spec", ["--spec", "lookup"])):
            out, sj = os.path.join(root, f"{name}.jsonl"), os.path.join(root, f"{name}.json")
            p = ferry("batch", "-m", g, inp, "-o", out, "--stats-json", sj, *extra)
            if f.check(p.returncode == 0, f"batch {name}: {p.stderr.strip()[-300:]}"):
                res[name] = sorted((o["id"], o["tokens"]) for o in map(json.loads, open(out)))
                if name == "spec":
                    sp = json.load(open(sj))["spec"]
                    f.check("tokens per speculative pass" in p.stderr and "tokens per decode step" in p.stderr,
                            f"batch summary without tokens per pass and per step: {p.stderr.strip()[-300:]}")
                    f.check(sp["passes"] > 0 and sp["tokens_per_pass"] > 1, f"batch --spec lookup: {sp}")
                    # every token but each request's first (from its prompt's pass) came from a decode step
                    dec = sum(max(len(t) - 1, 0) for _, t in res[name])
                    f.check(sp["decode_steps"] > 0 and abs(sp["tokens_per_step"] - dec / sp["decode_steps"]) < 1e-9,
                            f"batch --spec lookup: tokens per step {sp}, {dec} tokens from decode steps")
        f.check(res.get("plain") == res.get("spec"), f"batch --spec lookup differs: {res}")

    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
