"""`ferry synth`: synthetic Llama-shaped models with random weights.

- every format it writes (f32, f16, bf16, q8_0, q4_0, q5_0, q4_k, q5_k, q6_k, q4_1, q5_1, q2_k, q3_k, iq4_nl,
  iq4_xs, mxfp4, tq1_0, tq2_0, the grid IQ types) gives a model that `ferry inspect --verify` accepts and `ferry run --device cpu --prompt-ids` runs, with finite logits that differ between tokens;
- the weights are what the generator promises, checked independently of ferry's kernels: every matrix of a
  layer and the head, dequantized with gguf-py (numpy for the float formats), has RMS within 15% of
  1/sqrt(K) and finite values; zero-mean formats have a mean far below the RMS; norms lie in [0.9, 1.1];
- the tensor names, shapes and per-layer files are those `ferry convert` writes for Llama, with the preset's
  hyper-parameters and the overrides applied;
- the same seed gives byte-identical files whatever --threads; another seed gives other weights;
- a mixture of experts (--shape tiny-moe, --experts ...): qwen3moe hyper-parameters, expert-major stacked
  experts whose matrices (read through their strides) have the promised RMS, a run; gpt-oss (--shape
  gpt-oss-120b, cut down): its hyper-parameters, MXFP4 experts, F32 biases and sinks, a run;
- bad shapes (K not whole blocks, heads not divisible, odd head_dim, zero layers, unknown format or shape,
  more experts per token than experts)
  are refused in one line naming the option, leaving nothing behind; an existing DIR is kept unless --force.
"""

import filecmp
import json
import os
import struct

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf.quants import dequantize

from ferrytest import Failures, ferry, scratch

GRID_IQ = ["iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s", "iq1_m"]  # random signs: zero-mean
FORMATS = ["q4_k", "q5_k", "q6_k", "q8_0", "q4_0", "q5_0", "f16", "bf16", "f32", "q4_1", "q5_1", "q2_k", "q3_k",
           "iq4_nl", "iq4_xs", "mxfp4", "tq1_0", "tq2_0", "q4_z", "q8_z", "nf4", "q4_z128", "q8_z128", "bnb_fp4"] + GRID_IQ
# q4_0, q5_0, q6_k and q3_k centre at -0.5 quant steps, iq4_nl/iq4_xs at their table's mean (-5.9 of RMS 67)
ZERO_MEAN = {"q4_k", "q5_k", "q8_0", "f16", "bf16", "f32", "q4_1", "q5_1", "q2_k", "mxfp4", "tq1_0", "tq2_0"} | set(GRID_IQ)
LAYER = ["attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
         "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"]


def dequant_z(raw, fmt):
    """Q4_Z / Q8_Z / NF4 (src/layout/FORMAT.md, not GGUF): blocks {f16 d, int16 z, codes}, y = d (q - z), Q4_Z's
    code j the low nibble of byte j, code j + 16 its high nibble; NF4 {f32 d, 32 bytes}, y = table[code] d with
    code 2i the high nibble of byte i"""
    if fmt in ("NF4", "BNB_FP4"):  # BNB_FP4: NF4's blocks with bitsandbytes' FP4 table
        import quant_hf
        b = raw.reshape(-1, 36)
        d = b[:, 0:4].copy().view(np.float32)
        q = np.stack([b[:, 4:] >> 4, b[:, 4:] & 15], axis=2).reshape(-1, 64)
        return ((quant_hf.NF4 if fmt == "NF4" else quant_hf.FP4)[q] * d).reshape(-1)
    sub = 4 if fmt.endswith("128") else 1  # Q4_Z128/Q8_Z128: 4 sub-blocks of 32 laid out as Q4_Z/Q8_Z under one d, z
    four = fmt.startswith("Q4")
    b = raw.reshape(-1, 4 + sub * (16 if four else 32))
    d = b[:, 0:2].copy().view(np.float16).astype(np.float64)
    z = b[:, 2:4].copy().view(np.int16).astype(np.float64)
    qs = b[:, 4:]
    if four:
        qs = qs.reshape(len(b), sub, 16)
        q = np.concatenate([qs & 15, qs >> 4], axis=2).reshape(len(b), -1)
    else:
        q = qs.view(np.int8)
    return (d * (q.astype(np.float64) - z)).reshape(-1)


def values(model, t):
    """The tensor's values as float64 [rows, cols], read from its file by the manifest's offset."""
    with open(os.path.join(model, t["file"]), "rb") as fh:
        fh.seek(t["offset"])
        raw = np.frombuffer(fh.read(t["bytes"]), dtype=np.uint8)
    fmt, shape = t["format"], t["shape"]
    if fmt == "F32":
        v = raw.view(np.float32)
    elif fmt == "F16":
        v = raw.view(np.float16)
    elif fmt == "BF16":
        v = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        v = dequant_z(raw, fmt) if fmt in ("Q4_Z", "Q8_Z", "NF4", "BNB_FP4", "Q4_Z128", "Q8_Z128") else dequantize(raw, QT[fmt])
    return v.astype(np.float64).reshape(-1, shape[-1])


def logits(path):
    b = open(path, "rb").read()
    n, V = struct.unpack("<II", b[8:16])
    return np.frombuffer(b[16:], dtype=np.float32).reshape(n, V)


def refused(f, root, what, args, option):
    out = os.path.join(root, "bad")
    p = ferry("synth", "-o", out, *args)
    lines = p.stderr.strip().splitlines()
    f.check(p.returncode != 0 and len(lines) == 1 and option in lines[0],
            f"{what}: expected a one-line error naming {option}, got rc {p.returncode}: {p.stderr!r}")
    f.check(not os.path.exists(out) and not os.path.exists(out + ".tmp"), f"{what}: left {out} behind")


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        for fmt in FORMATS:
            m = os.path.join(root, fmt)
            p = ferry("synth", "-o", m, "--fmt", fmt, "--seed", 7, "--threads", 1)
            if not f.check(p.returncode == 0, f"{fmt}: synth failed: {p.stderr}"):
                continue
            p = ferry("inspect", m, "--verify")
            f.check(p.returncode == 0 and "all tensor checksums match" in p.stdout, f"{fmt}: inspect: {p.stdout}{p.stderr}")
            lg = os.path.join(root, fmt + ".logits")
            p = ferry("run", "-m", m, "--device", "cpu", "--prompt-ids", "1,2,3,4,5", "-n", 4, "--ignore-eos",
                      "--temp", 0, "--threads", 1, "--logits", lg)
            if f.check(p.returncode == 0 and len(p.stdout.split()) == 4, f"{fmt}: run: {p.stdout!r} {p.stderr}"):
                L = logits(lg)
                f.check(L.shape == (8, 512) and np.isfinite(L).all(), f"{fmt}: logits {L.shape}, finite {np.isfinite(L).all()}")
                f.check(0.3 < L.std(axis=1).min() and L.std(axis=1).max() < 3, f"{fmt}: logit spread {L.std(axis=1)}")
            man = json.load(open(os.path.join(m, "manifest.json")))
            hp = man["hparams"]
            f.check((hp["arch"], hp["n_layers"], hp["d_model"], hp["ffn_dim"], hp["n_heads"], hp["n_kv_heads"],
                     hp["head_dim"], hp["vocab"], hp["rope"]["theta"]) == ("llama", 4, 256, 768, 4, 2, 64, 512, 500000),
                    f"{fmt}: hparams {hp}")
            units = man["units"]
            f.check([t["name"] for t in units["embed"]] == ["token_embd.weight"] and
                    [t["name"] for t in units["head"]] == ["output_norm.weight", "output.weight"] and
                    all([t["name"] for t in u] == LAYER for u in units["layers"]) and
                    all(t["file"] == f"layer.{i:03d}.bin" for i, u in enumerate(units["layers"]) for t in u),
                    f"{fmt}: tensor names or files differ from a converted Llama")
            for t in units["layers"][1] + units["head"] + units["embed"]:
                v = values(m, t)
                what = f"{fmt} {t['name']}"
                if not f.check(np.isfinite(v).all(), f"{what}: non-finite values"):
                    continue
                if t["name"].endswith("norm.weight"):
                    f.check(t["format"] == "F32" and v.min() >= 0.9 and v.max() <= 1.1, f"{what}: {v.min()}..{v.max()}")
                    continue
                f.check(t["format"] == fmt.upper(), f"{what}: format {t['format']}")
                rms, want = np.sqrt((v ** 2).mean()), 1 / np.sqrt(v.shape[1])
                f.check(0.85 < rms / want < 1.15, f"{what}: RMS {rms:.4g}, 1/sqrt(K) = {want:.4g}")
                if fmt in ZERO_MEAN:
                    f.check(abs(v.mean()) < 0.05 * rms, f"{what}: mean {v.mean():.3g} against RMS {rms:.3g}")

        # Same seed: byte-identical whatever the thread count; another seed: other weights.
        a, b, c = (os.path.join(root, n) for n in ("seed_a", "seed_b", "seed_c"))
        ferry("synth", "-o", a, "--seed", 11, "--threads", 1, "--fmt", "q6_k", check=True)
        ferry("synth", "-o", b, "--seed", 11, "--threads", 2, "--fmt", "q6_k", check=True)
        ferry("synth", "-o", c, "--seed", 12, "--fmt", "q6_k", "--threads", 1, check=True)
        names = sorted(os.listdir(a))
        same = names == sorted(os.listdir(b)) and all(filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False)
                                                      for n in names)
        f.check(same, "same seed, 1 and 2 threads: files differ")
        f.check(not filecmp.cmp(os.path.join(a, "layer.000.bin"), os.path.join(c, "layer.000.bin"), shallow=False),
                "seeds 11 and 12 gave the same layer")
        f.check(all(not filecmp.cmp(os.path.join(a, f"layer.{i:03d}.bin"), os.path.join(a, f"layer.{i + 1:03d}.bin"),
                                    shallow=False) for i in range(3)), "two layers have the same weights")

        # Overrides apply to the preset, whatever their place on the line.
        o = os.path.join(root, "override")
        p = ferry("synth", "--layers", 2, "--d-model", 512, "-o", o, "--shape", "llama3-70b", "--ffn", 1024,
                  "--vocab", 1000, "--fmt", "Q8_0", "--threads", 1)
        if f.check(p.returncode == 0, f"override: {p.stderr}"):
            hp = json.load(open(os.path.join(o, "manifest.json")))["hparams"]
            f.check((hp["n_layers"], hp["d_model"], hp["ffn_dim"], hp["n_heads"], hp["n_kv_heads"], hp["head_dim"],
                     hp["vocab"], hp["rope"]["theta"], hp["rms_eps"]) == (2, 512, 1024, 64, 8, 128, 1000, 500000, 1e-5),
                    f"override: hparams {hp}")
            p = ferry("run", "-m", o, "--prompt-ids", "3,1,4,1,5", "-n", 2, "--ignore-eos", "--threads", 1)
            f.check(p.returncode == 0 and len(p.stdout.split()) == 2, f"override: run {p.stdout!r} {p.stderr}")

        # A mixture of experts (qwen3moe, expert-major layers): the preset with overrides, its experts' matrices
        # of RMS 1/sqrt(K) read through the strides, a run, the reported size equal to the files'.
        o = os.path.join(root, "moe")
        p = ferry("synth", "-o", o, "--shape", "tiny-moe", "--layers", 2, "--experts", 6, "--experts-used", 2,
                  "--fmt", "q8_0", "--threads", 1)
        if f.check(p.returncode == 0, f"moe: {p.stderr}"):
            m = json.load(open(os.path.join(o, "manifest.json")))
            hp = m["hparams"]
            f.check(hp["arch"] == "qwen3moe" and hp["moe"] == {"experts": 6, "used": 2, "ffn": 256, "norm_topk": True},
                    f"moe: hparams {hp}")
            lay = {t["name"]: t for t in m["units"]["layers"][1]}
            exps = [lay[n] for n in ("ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight")]
            f.check([t["shape"] for t in exps] == [[6, 256, 256], [6, 256, 256], [6, 256, 256]] and
                    all(t["expert_stride"] == 3 * ((t["bytes"] // 6 + 4095) // 4096 * 4096) for t in exps),
                    f"moe: expert tensors {[(t['shape'], t.get('expert_stride')) for t in exps]}")
            data = open(os.path.join(o, "layer.001.bin"), "rb").read()
            for t in exps:
                per = t["bytes"] // 6
                raw = b"".join(data[t["offset"] + e * t["expert_stride"]:][:per] for e in range(6))
                v = dequantize(np.frombuffer(raw, np.uint8), QT.Q8_0).astype(np.float64).reshape(-1, 256)
                rms = np.sqrt((v ** 2).mean())
                f.check(np.isfinite(v).all() and abs(rms * np.sqrt(256) - 1) < 0.15, f"moe {t['name']}: rms {rms:.4f}")
            size = sum(os.path.getsize(os.path.join(o, n)) for n in os.listdir(o) if n.endswith(".bin"))
            f.check(f"{size / 1e9:.2f} GB" in p.stderr, f"moe: files {size} bytes, synth said {p.stderr.strip()}")
            p = ferry("run", "-m", o, "--prompt-ids", "3,1,4,1,5", "-n", 2, "--ignore-eos", "--threads", 1)
            f.check(p.returncode == 0 and len(p.stdout.split()) == 2, f"moe: run {p.stdout!r} {p.stderr}")

        # gpt-oss (the 120b preset's dimensions, 1 layer of 2 experts to stay small): its hyper-parameters, MXFP4
        # experts and Q8_0 elsewhere by default, F32 biases and sinks, a run on the CPU.
        o = os.path.join(root, "gptoss")
        p = ferry("synth", "-o", o, "--shape", "gpt-oss-120b", "--layers", 1, "--experts", 2, "--experts-used", 2,
                  "--vocab", 256)
        if f.check(p.returncode == 0, f"gpt-oss: {p.stderr}"):
            m = json.load(open(os.path.join(o, "manifest.json")))
            hp, r = m["hparams"], m["hparams"]["rope"]
            f.check((hp["arch"], hp["d_model"], hp["ffn_dim"], hp["n_heads"], hp["n_kv_heads"], hp["head_dim"],
                     hp["act"], hp["sliding_window"], hp["rms_eps"]) ==
                    ("gpt-oss", 2880, 2880, 64, 8, 64, "swiglu_oai", [128], 1e-5) and
                    hp["moe"] == {"experts": 2, "used": 2, "ffn": 2880, "norm_topk": True} and
                    (r["type"], r["theta"], r["factor"], r["original_max_pos"], r["beta_fast"], r["beta_slow"],
                     r["truncate"]) == ("yarn", 150000, 32, 4096, 32, 1, False), f"gpt-oss: hparams {hp}")
            fmts = {t["name"]: t["format"] for t in m["units"]["layers"][0]}
            f.check(all(fmts[f"ffn_{k}_exps.weight"] == "MXFP4" and fmts[f"ffn_{k}_exps.bias"] == "F32"
                        for k in ("gate", "up", "down")) and fmts["attn_q.weight"] == "Q8_0" and
                    fmts["attn_sinks.weight"] == "F32" and fmts["ffn_gate_inp.bias"] == "F32", f"gpt-oss: formats {fmts}")
            p = ferry("run", "-m", o, "--prompt-ids", "3,1,4,1,5", "-n", 2, "--ignore-eos", "--threads", 1)
            f.check(p.returncode == 0 and len(p.stdout.split()) == 2, f"gpt-oss: run {p.stdout!r} {p.stderr}")

        # Bad shapes: one line naming the option, nothing left behind.
        for what, args, option in [
            ("d_model not whole Q4_K blocks", ["--d-model", 300], "--d-model"),
            ("ffn not whole Q8_0 blocks", ["--fmt", "q8_0", "--ffn", 1000], "--ffn"),
            ("heads not a multiple of kv heads", ["--heads", 6, "--kv-heads", 4], "--heads"),
            ("H x Dh not whole Q4_K blocks", ["--heads", 3, "--kv-heads", 1], "--heads 3 x --head-dim"),
            ("odd head_dim", ["--fmt", "f16", "--head-dim", 63], "--head-dim"),
            ("zero layers", ["--layers", 0], "--layers"),
            ("unknown format", ["--fmt", "q7_0"], "--fmt"),
            ("unknown shape", ["--shape", "llama9"], "--shape"),
            ("bad seed", ["--seed", "x"], "--seed"),
            ("more experts per token than experts", ["--shape", "tiny-moe", "--experts-used", 17], "--experts"),
            ("expert ffn not whole Q4_K blocks", ["--shape", "tiny-moe", "--expert-ffn", 100], "--expert-ffn"),
            ("gpt-oss rows not whole Q4_K blocks", ["--shape", "gpt-oss-20b", "--fmt", "q4_k"], "--d-model"),
            ("unknown expert format", ["--shape", "tiny-gpt-oss", "--expert-fmt", "q7_0"], "--expert-fmt"),
            ("gpt-oss without experts", ["--shape", "tiny-gpt-oss", "--experts", 0], "--experts"),
        ]:
            refused(f, root, what, args, option)

        # An existing model is kept unless --force.
        before = open(os.path.join(a, "manifest.json")).read()
        p = ferry("synth", "-o", a, "--seed", 99)
        f.check(p.returncode == 1 and "--force" in p.stderr and len(p.stderr.strip().splitlines()) == 1,
                f"existing DIR: {p.returncode} {p.stderr!r}")
        f.check(open(os.path.join(a, "manifest.json")).read() == before, "existing DIR was changed")
        p = ferry("synth", "-o", a, "--seed", 99, "--force")
        f.check(p.returncode == 0 and '"seed": "99"' in open(os.path.join(a, "manifest.json")).read(),
                f"--force: {p.stderr}")
        f.check(not os.path.exists(a + ".tmp") and not os.path.exists(a + ".old"), "--force left a .tmp or .old")
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
