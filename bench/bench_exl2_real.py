#!/usr/bin/env python3
"""EXL2 on real weights (issue 19): a real model's first layers (a GGUF dequantized by gguf-py:
tools/ref_forward.read_gguf) written as an EXL2 checkpoint by tools/quant_hf.py (mixed 8/6/5/4/3/2-bit groups
per linear, act-order), converted by ferry; prints the bits per weight ferry streams against the checkpoint's,
whether every linear is bit-identical to the NumPy unpacking, and the CPU prompt logits against the float64
reference forward on the unpacked weights (with ferry's 8-bit matmul inputs emulated, as tests/test_hf_quant.py
does).

    python3 bench/bench_exl2_real.py [--gguf models/qwen2.5-coder-0.5b-instruct.gguf] [--layers 4]
        [--exl2-bits mixed|low] [--group 32]
"""

import argparse
import json
import os
import random
import sys
import time

import numpy as np
import safetensors.numpy

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import quant_hf  # noqa: E402
import ref_forward  # noqa: E402
from ferrytest import ferry, rel_rows, scratch  # noqa: E402
from test_hf_quant import ferry_tensors, HF_TO_FERRY  # noqa: E402


def real_hf(gguf, layers, out):
    """An F32 Hugging Face directory of the GGUF's first `layers` layers (its embedding, norm and head kept)"""
    cfg, weights, _ = ref_forward.read_gguf(gguf)
    cfg = dict(cfg, num_hidden_layers=layers)
    keep = {k: np.ascontiguousarray(v.astype(np.float32)) for k, v in weights.items()
            if not k.startswith("model.layers.") or int(k.split(".")[2]) < layers}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    safetensors.numpy.save_file(keep, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", default=os.path.join(HERE, "..", "models", "qwen2.5-coder-0.5b-instruct.gguf"))
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--exl2-bits", default="mixed", choices=sorted(quant_hf.EXL2_BITS))
    ap.add_argument("--group", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=16)
    a = ap.parse_args()
    root, cleanup = scratch()
    try:
        src, q, out = (os.path.join(root, n) for n in ("src", "exl2", "exl2.ferry"))
        cfg = real_hf(a.gguf, a.layers, src)
        quant_hf.write(src, q, "exl2", group=a.group, exl2_bits=a.exl2_bits, seed=1)
        t0 = time.time()
        p = ferry("convert", q, "-o", out)
        if p.returncode:
            sys.exit(f"convert failed: {p.stderr.strip()}")
        t_conv = time.time() - t0
        raw, want, got = quant_hf.load_raw(q), quant_hf.dequantize(q), ferry_tensors(out)
        ck, st, nk, same, n, fmts, act = 0, 0, 0, 0, 0, {}, {}
        for hname, w in want.items():
            if not hname.startswith("model.layers.") or not quant_hf.quantizable(hname, w):
                continue
            parts = hname.split(".")
            layer, key = int(parts[2]), HF_TO_FERRY[".".join(parts[3:5])]
            base = hname[: -len(".weight")]
            fmt, v, rb = got[(layer, key + ".weight")]
            perm = quant_hf.exl2_perm(raw, base)
            stored_perm = got[(layer, key + ".perm")][1]
            u = np.empty_like(v)
            u[:, perm] = v
            same += bool(np.array_equal(stored_perm, perm.astype(np.float32)) and
                         np.array_equal(u.view(np.uint32), w.view(np.uint32)))
            n += 1
            fmts[fmt] = fmts.get(fmt, 0) + 1
            ck += 8 * sum(raw[base + s].nbytes for s in (".q_weight", ".q_scale", ".q_scale_max", ".q_groups"))
            st += 8 * len(rb)
            nk += w.size
            if fmt != "F32":
                act[hname] = (128 if fmt.endswith("128") else 32, perm)
        rnd = random.Random(19)
        ids = [rnd.randrange(cfg["vocab_size"]) for _ in range(a.tokens)]
        lg = os.path.join(root, "l.lg")
        p = ferry("run", "-m", out, "--device", "cpu", "--prompt-ids", ",".join(map(str, ids)), "-n", 0, "--logits", lg)
        if p.returncode:
            sys.exit(f"run failed: {p.stderr.strip()}")
        deq = q + ".deq"
        quant_hf.write_dequantized(q, deq)
        model = ref_forward.Model(deq)
        model.act_blocks = act
        ref = model.logits(ids)
        model.act_blocks = {}
        ref_f = model.logits(ids)
        got_lg = ref_forward.read_flgt(lg).astype(np.float64)
        print(f"{os.path.basename(a.gguf)}, first {a.layers} layers, EXL2 {a.exl2_bits} groups of {a.group}: "
              f"{same}/{n} linears bit-identical ({', '.join(f'{k} {c}' for k, c in sorted(fmts.items()))}); "
              f"bits per weight: checkpoint {ck / nk:.2f}, ferry streams {st / nk:.2f} "
              f"(ratio {st / ck:.2f}; + 32 bits per column for the act-order in both); convert {t_conv:.1f} s")
        print(f"prompt logits ({a.tokens} tokens) vs float64 reference with 8-bit inputs: rel err {rel_rows(got_lg, ref):.2e}; "
              f"the 8-bit inputs' own effect {rel_rows(ref, ref_f):.2e}")
    finally:
        cleanup()


if __name__ == "__main__":
    main()
