"""Several sequences in one step, the paged KV cache and its formats, on the CPU (tiny HF models of
tools/gen_tiny_model.py):
  - `ferry run -f` with prompts of mixed lengths generates, for each prompt, exactly the greedy tokens of
    a run of that prompt alone (KV f32, q8, q4 and k8v5, keys and values in different row formats; with
    --chunk 7 also mixing prompt chunks with decode tokens);
  - chunked prefill (--chunk 7, 16 tokens per page boundary crossed) gives the logits of the one-pass prefill;
  - sliding-window layers over many pages (--kv-page 64, 200 positions, window 8: the window pool releases
    pages as it goes) and the rope scalings against the float64 NumPy reference (tools/ref_forward.py);
  - a prompt whose first pages another prompt already computed reuses them (prefix cache) with the same
    output;
  - a pool too small for a request: admission control runs requests as pages allow, and one that cannot fit
    alone fails with a clear error.
"""

import os
import random

import numpy as np

from ferrytest import Failures, ferry, ref_forward, scratch, tiny_model, rel_rows


def run_ids(f, model, prompts, n, extra, what):
    """Greedy ids per prompt: one prompt via --prompt-ids, several via -f (one line of ids each)."""
    p = ferry("run", "-m", model, *prompts, "-n", n, "--temp", 0, "--ignore-eos", "--print-ids", *extra)
    f.check(p.returncode == 0, f"{what}: run failed: {p.stderr.strip()[-300:]}")
    return [list(map(int, line.split())) for line in p.stdout.strip().split("\n")] if p.returncode == 0 else []


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        hf, model = tiny_model("llama_headdim", root)
        ref = ref_forward.Model(hf)
        rnd = random.Random(3)
        lens = [5, 40, 1, 23, 70, 12]
        prompts = [[rnd.randrange(1, ref.vocab) for _ in range(n)] for n in lens]

        # all prompts in one run (--prompt-ids-file: a prompt of ids per line) vs each prompt alone
        for kv in ("f32", "q8", "q4", "k8v5"):
            alone = [run_ids(f, model, ["--prompt-ids", ",".join(map(str, p))], 12, ["--kv", kv], f"{kv} alone")
                     for p in prompts]
            for extra in ([], ["--chunk", 7], ["--max-batch", 2]):
                ids_file = os.path.join(root, "ids.txt")
                with open(ids_file, "w") as fh:
                    fh.write("\n".join(",".join(map(str, p)) for p in prompts) + "\n")
                got = run_ids(f, model, ["--prompt-ids-file", ids_file], 12, ["--kv", kv, *extra], f"{kv} batch")
                want = [a[0] if a else None for a in alone]
                f.check(got == want, f"kv {kv} {extra}: batched greedy != alone:\n  {got}\n  {want}")
            print(f"kv {kv}: {len(prompts)} prompts batched == alone", flush=True)

        # chunked prefill == one pass (f32 KV: only the order of f32 sums differs)
        lg = os.path.join(root, "l.lg")
        ids = ",".join(map(str, prompts[4]))
        p = ferry("run", "-m", model, "--prompt-ids", ids, "-n", 0, "--logits", lg, "--kv-page", 64)
        full = ref_forward.read_flgt(lg).astype(np.float64) if p.returncode == 0 else None
        for chunk in (7, 64, 69):
            p = ferry("run", "-m", model, "--prompt-ids", ids, "-n", 0, "--logits", lg, "--chunk", chunk,
                      "--kv-page", 64)
            if f.check(p.returncode == 0 and full is not None, f"chunk {chunk}: {p.stderr.strip()}"):
                e = rel_rows(ref_forward.read_flgt(lg).astype(np.float64), full)
                print(f"chunk {chunk}: logits vs one pass {e:.2e}")
                f.check(e <= 1e-5, f"chunk {chunk} vs one pass rel err {e:.2e}")

        # sliding window over many pages, rope scalings: against the NumPy reference
        # q8 rounds every cached value (~0.5% RMS): these random models amplify that to 2-4% in the logits;
        # the bound catches a wrong rotation, page or scale (errors of order 1), test_ppl the real quality
        for v, kvs in (("mistral_swa", (("f32", 1e-4), ("q8", 6e-2))), ("gemma3", (("f32", 1e-4), ("q8", 6e-2))),
                       ("llama_yarn_rope", (("f32", 1e-4),)), ("llama3_rope", (("f32", 1e-4),))):
            hf_v, model_v = tiny_model(v, root)
            r = ref_forward.Model(hf_v)
            seq = [rnd.randrange(1, r.vocab) for _ in range(200)]
            want = r.logits(seq)
            for kv, tol in kvs:
                p = ferry("run", "-m", model_v, "--prompt-ids", ",".join(map(str, seq)), "-n", 0, "--logits", lg,
                          "--kv-page", 64, "--chunk", 48, "--kv", kv)
                if f.check(p.returncode == 0, f"{v} {kv}: {p.stderr.strip()}"):
                    e = rel_rows(ref_forward.read_flgt(lg).astype(np.float64), want)
                    print(f"{v} kv {kv}: 200 positions in chunks of 48, pages of 64: logits vs reference {e:.2e}")
                    f.check(e <= tol, f"{v} kv {kv}: logits vs reference {e:.2e} > {tol}")

        # prefix cache: the second prompt starts with the first's 3 whole pages
        base = [rnd.randrange(1, ref.vocab) for _ in range(200)]
        pa, pb = base + [5, 6, 7], base + [9]
        ids_file = os.path.join(root, "ids2.txt")
        with open(ids_file, "w") as fh:
            fh.write(",".join(map(str, pa)) + "\n" + ",".join(map(str, pb)) + "\n")
        p = ferry("run", "-m", model, "--prompt-ids-file", ids_file, "-n", 6, "--temp", 0, "--ignore-eos",
                  "--print-ids", "--kv-page", 64, "--max-batch", 1, "--stats")
        got = [list(map(int, line.split())) for line in p.stdout.strip().split("\n")] if p.returncode == 0 else []
        want = [run_ids(f, model, ["--prompt-ids", ",".join(map(str, q))], 6, ["--kv-page", 64], "prefix alone")[0]
                for q in (pa, pb)]
        f.check(got == want, f"prefix cache: {got} != {want}")
        f.check("192 prompt tokens from the prefix cache" in p.stderr,
                f"prefix cache: 3 pages of 64 reused ({p.stderr.strip()[-400:]})")

        # admission control: 3 pages of 64 hold one request of 150 positions at a time
        p = ferry("run", "-m", model, "--prompt-ids-file", ids_file, "-n", 6, "--temp", 0, "--ignore-eos",
                  "--print-ids", "--kv-page", 64, "--kv-pages", 4)
        got = [list(map(int, line.split())) for line in p.stdout.strip().split("\n")] if p.returncode == 0 else []
        f.check(got == want, f"--kv-pages 4: requests one at a time: {got} != {want} ({p.stderr.strip()})")
        p = ferry("run", "-m", model, "--prompt-ids-file", ids_file, "-n", 6, "--kv-page", 64, "--kv-pages", 3)
        f.check(p.returncode == 1 and "KV pages" in p.stderr and "Traceback" not in p.stderr,
                f"--kv-pages 3: a request that cannot fit fails clearly ({p.returncode}: {p.stderr.strip()})")
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
