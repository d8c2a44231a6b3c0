"""ferry's CPU forward against the independent float64 NumPy reference (tools/ref_forward.py), for every
tiny model variant: prompt logits within 1e-4 (max over positions of the norm-wise relative error), the
token-by-token and chunked prefill paths equal to the one-pass prefill, and 32 greedy tokens identical to
the reference's, with the decode-step logits (KV cache path) within 1e-4 too. Mixtures of experts: every
token's experts at every layer (ferry's FERRY_ROUTES dump) are the reference's, in its order, on the one-pass
prefill and on the token-by-token path."""

import os
import random

import numpy as np

from ferrytest import Failures, ferry, gen_tiny_model, ref_forward, scratch, tiny_model, rel_rows

TOL = 1e-4


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        for v in gen_tiny_model.VARIANTS:
            hf, out = tiny_model(v, root)
            model = ref_forward.Model(hf)
            rnd = random.Random(v)
            prompt = [rnd.randrange(model.vocab) for _ in range(32)]
            ids = ",".join(map(str, prompt))
            lg = os.path.join(root, v + ".lg")

            routes = os.path.join(root, v + ".routes")
            p = ferry("run", "-m", out, "--prompt-ids", ids, "-n", 0, "--logits", lg, env={"FERRY_ROUTES": routes})
            if not f.check(p.returncode == 0, f"{v}: run failed: {p.stderr.strip()}"):
                continue
            full = ref_forward.read_flgt(lg).astype(np.float64)
            err = rel_rows(full, model.logits(prompt))
            if model.moe:
                bad = ref_forward.compare_routes(model, ref_forward.read_routes(routes), len(prompt))
                n = len(model.routes)
                print(f"{v:20s} routes: {n - len(bad)}/{n} (layer, token) choices equal")
                f.check(n == len(prompt) * model.n_layers and not bad, f"{v}: routes differ: {bad[:3]}")
            print(f"{v:20s} prompt logits rel err {err:.2e}")
            f.check(err <= TOL, f"{v}: prompt logits rel err {err:.2e} > {TOL}")

            # Dynamic NTK rotates each step with the base of that step's length (as transformers does with a
            # KV cache), so its chunked path legitimately differs from the one-pass path and from the
            # reference's no-cache greedy run; its prompt logits above are the exact check.
            if v == "llama_dynamic_rope":
                continue
            for chunk in (1, 5):
                p = ferry("run", "-m", out, "--prompt-ids", ids, "-n", 0, "--chunk", chunk, "--logits", lg,
                          env={"FERRY_ROUTES": routes})
                if f.check(p.returncode == 0, f"{v}: chunk {chunk} run failed: {p.stderr.strip()}"):
                    if model.moe:
                        bad = ref_forward.compare_routes(model, ref_forward.read_routes(routes), len(prompt))
                        f.check(not bad, f"{v}: chunk {chunk}: routes differ: {bad[:3]}")
                    e = rel_rows(ref_forward.read_flgt(lg).astype(np.float64), full)
                    # Same math in another order (decode steps use the fused bf16 dot): f32 rounding only.
                    f.check(e <= 1e-5, f"{v}: chunk {chunk} vs one pass rel err {e:.2e}")

            want = model.greedy(prompt, 32)
            p = ferry("run", "-m", out, "--prompt-ids", ids, "-n", 32, "--temp", 0, "--ignore-eos", "--logits", lg)
            got = [int(x) for x in p.stdout.split()]
            f.check(got == want, f"{v}: greedy {got} != reference {want}")
            seq = prompt + got
            dump = ref_forward.read_flgt(lg).astype(np.float64)
            f.check(dump.shape[0] == 32 + 31, f"{v}: {dump.shape[0]} logits rows, want 63")
            e = rel_rows(dump, model.logits(seq[: dump.shape[0]]))
            print(f"{v:20s} decode logits rel err {e:.2e}, greedy {'same' if got == want else 'DIFFERENT'}")
            f.check(e <= TOL, f"{v}: decode-step logits rel err {e:.2e}")
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
