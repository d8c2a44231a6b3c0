"""A streamed head in row pieces (issue 23: src/engine/plan.c split_head, weights.c's head pieces, model.c head)
on the CPU: FERRY_CPU_DEVICE=1 makes --device cpu a device with a --vram budget, slots, uploads and fences, so
the split path runs here. Each piece's logits are the same dot products as the whole head's, so every output
must be byte-identical to the head in one piece and to --device cpu:
  - a synthetic untied bf16 model whose head (vocab 16384) is 5x a layer: at --vram 22M the whole head's 2
    slots do not fit (the plan refuses it with FERRY_HEAD_PIECES=1), the planner's own split (--plan prints
    "head in N pieces") and forced 2, 3, 5 pieces run; greedy ids through top-k (no --logits), full logits
    (--logits), sampled ids (top-k values), and with --ram 1 (no RAM tier: the head's buffer is read once per
    step whatever the pieces, the same bytes from disk);
  - tied heads (the embedding's matrix: Llama, and Gemma 3 with a final softcap), forced into 2 and 3 pieces:
    greedy decode and logits, and steps of many logits rows: `ferry ppl --json` and `ferry kld --save-base`
    (every scored row's log-probabilities) byte-identical.
On a GPU, tests/test_cuda_model.py runs a split head against the resident one."""

import json
import os

from ferrytest import ROOT, Failures, ferry, scratch, tiny_model

TEXT = os.path.join(ROOT, "tests", "data", "kjv_genesis.txt")
PROMPT = ",".join(str(3 + (7 * i) % 50) for i in range(12))
DEV = {"FERRY_CPU_DEVICE": "1"}


def dev_env(pieces):
    return dict(DEV, FERRY_HEAD_PIECES=str(pieces)) if pieces is not None else DEV


def run(model, root, tag, env, *extra, logits=True):
    """A greedy run of 8 tokens: (process, logits bytes or b"", --stats-json)."""
    lg, sj = os.path.join(root, f"{tag}.lg"), os.path.join(root, f"{tag}.json")
    for p in (lg, sj):
        if os.path.exists(p):
            os.remove(p)
    args = ["run", "-m", model, "--prompt-ids", PROMPT, "-n", 8, "--ignore-eos", "--kv", "f32", "--stats-json", sj,
            *extra]
    if "--temp" not in extra:
        args += ["--temp", 0]
    p = ferry(*args, *(["--logits", lg] if logits else []), env=env)
    return p, (open(lg, "rb").read() if os.path.exists(lg) else b""), (json.load(open(sj)) if os.path.exists(sj) else {})


def pieces_of(plan):
    for line in plan.splitlines():
        if "head in " in line:
            return int(line.split("head in ")[1].split()[0])
    return 1


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        tv = os.path.join(root, "tv")
        p = ferry("synth", "-o", tv, "--shape", "tiny", "--vocab", 16384, "--fmt", "bf16")
        f.check(p.returncode == 0, f"synth: {p.stderr}")
        gpu = ["--device", "cpu", "--placement", "gpu"]
        # the budget (16 MiB of it the plan's reserve): 22M holds 2 slots of a layer (1.6 MB), 30M of half the
        # head (4.2 MB), and neither 2 slots of the whole head (8.4 MB)
        vram = {None: "22M", 5: "22M", 2: "30M", 3: "30M"}

        # the plan: whole head refused, split by the planner, pieces forced
        for v in ("22M", "30M"):
            p = ferry("run", "-m", tv, "--prompt-ids", PROMPT, "-n", 1, *gpu, "--vram", v, "--plan", env=dev_env(1))
            f.check(p.returncode != 0 and "is too small" in p.stderr and "2 weight slots" in p.stderr,
                    f"a whole head at {v}: exit {p.returncode}, {p.stderr.strip()[-300:]}")
        p = ferry("run", "-m", tv, "--prompt-ids", PROMPT, "-n", 1, *gpu, "--vram", "22M", "--plan", env=DEV)
        auto = pieces_of(p.stderr)
        f.check(p.returncode == 0 and 5 <= auto <= 6, f"the planner's split at 22M: {auto} pieces; {p.stderr[-400:]}")
        for n in (2, 3, 5):
            p = ferry("run", "-m", tv, "--prompt-ids", PROMPT, "-n", 1, *gpu, "--vram", vram[n], "--plan", env=dev_env(n))
            f.check(p.returncode == 0 and pieces_of(p.stderr) == n, f"FERRY_HEAD_PIECES={n}: {p.stderr[-400:]}")
        # resident: whole, and no pieces printed
        p = ferry("run", "-m", tv, "--prompt-ids", PROMPT, "-n", 1, *gpu, "--vram", "200M", "--plan", env=DEV)
        f.check(p.returncode == 0 and pieces_of(p.stderr) == 1, f"resident head in pieces: {p.stderr[-400:]}")

        ref, ref_lg, _ = run(tv, root, "cpu", None, "--device", "cpu")
        ref_topk, _, _ = run(tv, root, "cpu_k", None, "--device", "cpu", logits=False)
        ref_smp, _, _ = run(tv, root, "cpu_s", None, "--device", "cpu", "--temp", 0.8, "--seed", 7, logits=False)
        whole, whole_lg, whole_st = run(tv, root, "whole", dev_env(1), *gpu, "--vram", "60M", "--stream-all", "--ram", 1)
        f.check(ref.returncode == 0 and whole.returncode == 0 and len(ref_lg) > 0, f"references: {ref.stderr} {whole.stderr}")
        f.check(whole_lg == ref_lg and whole.stdout == ref.stdout, "whole streamed head != --device cpu")
        for n in (None, 2, 3, 5):
            what = f"untied bf16 head in {n or auto} pieces"
            small = [*gpu, "--vram", vram[n]]
            p, lg, _ = run(tv, root, "split", dev_env(n), *small)
            if f.check(p.returncode == 0, f"{what}: {p.stderr[-300:]}"):
                f.check(p.stdout == ref.stdout and p.stdout.strip() != "", f"{what}: ids {p.stdout!r} != {ref.stdout!r}")
                f.check(lg == ref_lg, f"{what}: logits differ from --device cpu")
            p, _, _ = run(tv, root, "split_k", dev_env(n), *small, logits=False)
            f.check(p.returncode == 0 and p.stdout == ref_topk.stdout, f"{what}, top-k: {p.stdout!r} != {ref_topk.stdout!r}")
            p, _, _ = run(tv, root, "split_s", dev_env(n), *small, "--temp", 0.8, "--seed", 7, logits=False)
            f.check(p.returncode == 0 and p.stdout == ref_smp.stdout, f"{what}, sampled: {p.stdout!r} != {ref_smp.stdout!r}")
            # no RAM tier: each step reads the model once, the head's buffer held across its pieces
            p, lg, st = run(tv, root, "split_io", dev_env(n), *gpu, "--vram", "60M", "--stream-all", "--ram", 1)
            if f.check(p.returncode == 0, f"{what}, --ram 1: {p.stderr[-300:]}"):
                f.check(lg == ref_lg, f"{what}, --ram 1: logits differ")
                a, b = st.get("io", {}).get("bytes_read"), whole_st.get("io", {}).get("bytes_read")
                f.check(a is not None and a == b, f"{what}, --ram 1: {a} bytes read, the whole head's run {b}")

        # tied heads, forced into pieces; many logits rows through ppl and kld
        for variant in ("llama_tied_gqa", "gemma3_softcap"):
            _, model = tiny_model(variant, root)
            ev = ["--ctx", 64, "--chunks", 2, "--kv", "f32"]
            base = os.path.join(root, "base.lp")
            r, r_lg, _ = run(model, root, "t_cpu", None, "--device", "cpu")
            pr = ferry("ppl", "-m", model, TEXT, *ev, "--device", "cpu", "--json", os.path.join(root, "p0.json"))
            kr = ferry("kld", "-m", model, TEXT, "--save-base", base, *ev, "--device", "cpu")
            if not f.check(r.returncode == 0 and pr.returncode == 0 and kr.returncode == 0,
                           f"{variant} --device cpu: {r.stderr} {pr.stderr} {kr.stderr}"):
                continue
            base_bytes = open(base, "rb").read()
            for n in (2, 3):
                what = f"{variant} tied head in {n} pieces"
                stream = [*gpu, "--vram", "64M"]  # FERRY_HEAD_PIECES keeps the head streamed
                p = ferry("run", "-m", model, "--prompt-ids", PROMPT, "-n", 1, *stream, "--plan", env=dev_env(n))
                f.check(pieces_of(p.stderr) == n, f"{what}: plan {p.stderr[-300:]}")
                p, lg, _ = run(model, root, "t_split", dev_env(n), *stream)
                if f.check(p.returncode == 0, f"{what}: {p.stderr[-300:]}"):
                    f.check(p.stdout == r.stdout and lg == r_lg, f"{what}: ids or logits differ from --device cpu")
                pp = ferry("ppl", "-m", model, TEXT, *ev, *stream, "--json", os.path.join(root, "p1.json"), env=dev_env(n))
                if f.check(pp.returncode == 0, f"{what}, ppl: {pp.stderr[-300:]}"):
                    a, b = json.load(open(os.path.join(root, "p0.json"))), json.load(open(os.path.join(root, "p1.json")))
                    f.check(a["ppl"] == b["ppl"], f"{what}: ppl {b['ppl']} != {a['ppl']}")
                split_lp = os.path.join(root, "split.lp")
                pk = ferry("kld", "-m", model, TEXT, "--save-base", split_lp, *ev, *stream, env=dev_env(n))
                if f.check(pk.returncode == 0, f"{what}, kld --save-base: {pk.stderr[-300:]}"):
                    f.check(open(split_lp, "rb").read() == base_bytes, f"{what}: the saved log-probabilities differ")
    finally:
        cleanup()
    return f.finish()


if __name__ == "__main__":
    raise SystemExit(main())
