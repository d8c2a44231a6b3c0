"""How far 8-bit matmul inputs alone move Gemma 3 270M's logits from the float32 fixture, measured with the
float64 NumPy forward (tools/ref_forward.py) emulating ferry's CPU matmul contract (src/kernels/cpu/qdot.h:
every input of a matmul with quantized weights quantized per weight block, Model.from_gguf(act_q8=True)).
No ferry code runs. Adds to each prompt of tests/fixtures/gemma3_270m_ref.json:
  q8_err   max over the teacher-forced positions of max |emulated - fixture| over the fixture's top-20 ids,
           divided by the largest |fixture logit| of those 20 (the scale of the position's logits)
and to the fixture:
  q8_f64_err0  prompt 0: max over positions of the norm-wise distance between the emulated forward and the
               plain float64 forward (both NumPy, all V logits)
tests/test_gemma_ref.py allows ferry twice these (two draws of the same rounding noise: ferry and the
emulation decide rounding ties differently, and on this model one flipped code moves the logits about as
much as all of them). Usage: python3 tools/gemma_q8_err.py [GGUF] [FIXTURE] (about 5 minutes).
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_forward  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def top_err(logits, top):
    """max over positions of max |logits - ref| over the top-20 ids / max |ref| there"""
    err = 0.0
    for pos, t in enumerate(top):
        rid = np.array([x[0] for x in t])
        rv = np.array([x[1] for x in t], dtype=np.float64)
        err = max(err, float(np.max(np.abs(logits[pos, rid] - rv)) / np.max(np.abs(rv))))
    return err


def main():
    gguf = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")
    path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "tests", "fixtures", "gemma3_270m_ref.json")
    fx = json.load(open(path))
    q8 = ref_forward.Model.from_gguf(gguf, act_q8=True)
    for i, pr in enumerate(fx["prompts"]):
        seq = pr["ids"] + pr["greedy"][:-1]
        lq = q8.logits(seq)
        pr["q8_err"] = round(top_err(lq, pr["top"]), 6)
        if i == 0:
            lf = ref_forward.Model.from_gguf(gguf).logits(seq)
            d = np.linalg.norm(lq - lf, axis=1) / np.linalg.norm(lf, axis=1)
            fx["q8_f64_err0"] = round(float(np.max(d)), 6)
        print(f"prompt {i}: q8_err {pr['q8_err']:.3e}", file=sys.stderr, flush=True)
    with open(path, "w") as f:
        json.dump(fx, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
