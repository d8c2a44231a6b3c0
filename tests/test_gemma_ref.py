"""The real model: ferry's CPU backend on Gemma 3 270M (Q4_K_M GGUF, models/ via tools/fetch_model.sh) against
Hugging Face transformers on the same file (fixture tests/fixtures/gemma3_270m_ref.json, made by
tools/gemma_ref.py; see its docstring for the command and versions).

For each of the 10 fixture prompts:
  - tokenizer: `ferry tokenize` of the prompt text gives the fixture's ids (transformers' GemmaTokenizer over
    the GGUF vocabulary);
  - logits: one prefill over prompt + the reference's greedy continuation (teacher forcing); at every
    position the reference's 20 largest logits are compared: error = max |ferry - ref| / max |ref| over the 20
    per position, max over positions <= tol = max(1e-3, 2 q8_err). ferry's CPU matmuls take 8-bit inputs
    (src/kernels/cpu/qdot.h), which alone move these logits by q8_err (the fixture's, measured without ferry by
    the float64 NumPy forward emulating that contract: tools/gemma_q8_err.py); ferry is another draw of the
    same rounding (ties decided otherwise by its f32 forward), hence twice that;
  - ferry's top-1 equals the reference's wherever the reference's top-1/top-2 margin is more than twice
    ferry's own error there (a smaller margin can swap them);
  - greedy: `ferry run -n 64 --ignore-eos` (prefill + 63 decode steps through the KV cache) generates the
    reference's tokens up to the first one whose margin (the fixture's) is below 2 tol max|ref|: until then
    no error within tol can change the choice; after it the continuations may differ.
The tokenizer and the greedy runs take every prompt in one process each (`ferry tokenize --json`, `ferry run
--prompt-ids-file --max-batch 1`: one prompt at a time, so every decode step carries one token, as `ferry run
--prompt-ids` does); `--logits` takes one prompt, so those are one run per prompt.
A second reference, independent of transformers: ferry's logits over prompt 0 + its continuation against the
float64 NumPy forward on the same GGUF (tools/ref_forward.py, gguf-py's dequantization), norm-wise per position,
max over positions within max(1e-4, 2 q8_f64_err0) (the same emulation's distance from it, the fixture's). Prints the max errors. In the sanitizer build (`make asan`, FERRY_BUILD=build-asan: -O1 and
instrumented, some 20x slower on the 262144-row head) only prompts 0 and 5 run: that run looks for memory errors;
the numbers are checked by the optimized build. There the logits runs also take 4 tokens per pass (`--chunk 4`,
the kernels of a decode step, through the KV cache): one pass over 70-80 tokens spends a minute per prompt in
the f32 dot of the large-T matmul, which the sanitizers keep from being vectorized; the greedy runs still
prefill each prompt in one pass.
"""

import json
import os
import re

import numpy as np

from ferrytest import Failures, ROOT, ferry, gemma_gguf, ref_forward, scratch

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "gemma3_270m_ref.json")
TOL = 1e-3  # f32 arithmetic alone (the bound before 8-bit matmul inputs)


def main():
    f = Failures()
    gguf_path = gemma_gguf(f)
    fx = json.load(open(FIXTURE))
    root, cleanup = scratch()
    try:
        model = os.path.join(root, "gemma.ferry")
        p = ferry("convert", gguf_path, "-o", model)
        if not f.check(p.returncode == 0, f"convert failed: {p.stderr.strip()}"):
            f.finish()
        sanitized = "asan" in os.path.basename(os.environ.get("FERRY_BUILD", "build"))
        prompts = [(i, pr) for i, pr in enumerate(fx["prompts"]) if not sanitized or i in (0, 5)]

        texts = os.path.join(root, "texts.json")
        json.dump([pr["text"] for _, pr in prompts], open(texts, "w"))
        p = ferry("tokenize", "-m", model, "--parse-special", "--json", texts)
        f.check(p.returncode == 0, f"ferry tokenize --json failed: {p.stderr.strip()}")
        toks = json.loads(p.stdout) if p.returncode == 0 else [None] * len(prompts)

        ids_file = os.path.join(root, "ids.txt")
        with open(ids_file, "w") as fh:
            fh.writelines(",".join(map(str, pr["ids"])) + "\n" for _, pr in prompts)
        n_gen = len(prompts[0][1]["greedy"])
        f.check(all(len(pr["greedy"]) == n_gen for _, pr in prompts), "the fixture's continuations differ in length")
        p = ferry("run", "-m", model, "--prompt-ids-file", ids_file, "-n", n_gen, "--ignore-eos", "--max-batch", 1)
        f.check(p.returncode == 0, f"greedy run failed: {p.stderr.strip()[-300:]}")
        gens = [[int(x) for x in re.findall(r"-?\d+", line)] for line in p.stdout.splitlines()] if p.returncode == 0 else []
        f.check(len(gens) == len(prompts), f"greedy run: {len(gens)} outputs for {len(prompts)} prompts")

        worst = 0.0
        for k, (i, pr) in enumerate(prompts):
            ids, greedy = pr["ids"], pr["greedy"]
            got = toks[k] if k < len(toks) else None
            f.check(got == ids, f"prompt {i}: ferry tokenize {got} != transformers {ids}")

            seq = ids + greedy[:-1]
            lg = os.path.join(root, "p.lg")
            p = ferry("run", "-m", model, "--prompt-ids", ",".join(map(str, seq)), "-n", 0, "--logits", lg,
                      *(("--chunk", 4) if sanitized else ()))
            if not f.check(p.returncode == 0, f"prompt {i}: run failed: {p.stderr.strip()}"):
                continue
            lgt = ref_forward.read_flgt(lg)
            if i == 0 and not sanitized:
                ref = ref_forward.Model.from_gguf(gguf_path).logits(seq)
                e = float(np.max(np.linalg.norm(lgt - ref, axis=1) / np.linalg.norm(ref, axis=1)))
                print(f"prompt 0: ferry vs the float64 NumPy reference on the GGUF: {e:.2e} (norm-wise, max over "
                      f"{len(seq)} positions)")
                lim = max(1e-4, 2 * fx["q8_f64_err0"])
                f.check(e <= lim, f"prompt 0: logits vs the NumPy reference {e:.2e} > {lim:.2e}")
            tol = max(TOL, 2 * pr["q8_err"])
            err, top_ok, top_bad, need = 0.0, 0, 0, len(greedy)
            for pos, top in enumerate(pr["top"]):
                rid = np.array([t[0] for t in top])
                rv = np.array([t[1] for t in top], dtype=np.float64)
                scale, eabs = float(np.max(np.abs(rv))), float(np.max(np.abs(lgt[pos, rid] - rv)))
                err = max(err, eabs / scale)
                same = int(np.argmax(lgt[pos]) == rid[0])
                top_ok += same
                top_bad += int(not same and rv[0] - rv[1] > 2 * eabs)
                g = pos - (len(ids) - 1)  # the generated token this position predicts
                if 0 <= g < need and rv[0] - rv[1] < 2 * tol * scale:
                    need = g
            worst = max(worst, err / tol)
            f.check(err <= tol, f"prompt {i}: logits error {err:.2e} > {tol:.2e}")
            f.check(top_bad == 0, f"prompt {i}: top-1 differs at {top_bad} positions whose margin is over twice the "
                    "error there")

            gen = gens[k] if k < len(gens) else []
            n_same = next((j for j, (a, b) in enumerate(zip(gen, greedy)) if a != b), min(len(gen), len(greedy)))
            f.check(n_same >= need, f"prompt {i}: greedy equal for {n_same} of {len(greedy)} tokens, {need} required")
            print(f"prompt {i}: {len(ids):2d} ids, tokenizer {'same' if got == ids else 'DIFF'}, top-20 logits error "
                  f"{err:.2e} (tolerance {tol:.2e}), top-1 {top_ok}/{len(pr['top'])}, greedy {n_same}/{len(greedy)} "
                  f"({need} required)", flush=True)
        print(f"max logits error / tolerance over all prompts: {worst:.2f}")
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
