"""`ferry convert HF_DIR --quant MIX` (src/convert/quantize.c) end to end, on a small model whose rows are 256
wide so the K-quants apply (and on a tiny one whose 64-wide rows take llama.cpp's fallbacks):
  - each tensor gets the format the mix names: Q4_K_M's attn_v/ffn_down in Q6_K on llama.cpp's more-bits layers
    and Q4_K elsewhere, the output matrix in Q6_K, vectors kept in their dtype; Q3_K_M/L, Q2_K and IQ4_XS per
    llama.cpp's rules; the single-format mixes (Q4_1, Q5_1, IQ4_NL, Q3_K_S...) on ffn_up; 64-wide rows fall back
    (Q4_K -> Q5_0, Q6_K -> Q8_0);
  - gguf-py (an independent decoder of the same blocks) decodes the stored weights to within the format's
    error of the f32 weights;
  - the quantized model's logits stay close to the unquantized model's (relative error per mix, bounds at about
    twice what was measured), top-1 agreement >= the mix's bound, and files shrink by the formats' bits;
  - a GGUF's F32/F16 matrices get the same formats (from F32: byte-identical layer files to the HF
    conversion's); a Q8_0 GGUF's matrices are kept, with a notice;
  - bad --quant values fail with one line, nothing written.
"""

import json
import os
import re

import numpy as np

from ferrytest import Failures, ferry, gen_tiny_model, ref_forward, scratch

# mix: (max relative logits error, min top-1 agreement) against the f32 model, about 1.5x what was measured
# (2026-12-07: 0.0225/1.0, 0.084/0.875, 0.179/0.771, 0.359/0.667, 0.319/0.542: a random 2-layer model
# amplifies weight error, and its near-ties make top-1 agreement a weak figure), and the relative RMS error of
# the layer-0 attn_q weights as gguf-py decodes ferry's blocks (measured 0.0052, 0.0174, 0.0361, 0.0725, 0.0823).
# Issue 18's mixes, measured 2026-12-07 (logits error / top-1 / attn_q error): Q5_1 0.154/0.896/0.0338, Q4_1
# 0.309/0.729/0.0702, IQ4_XS 0.341/0.667/0.0743, IQ4_NL 0.317/0.667/0.0739, Q3_K_L 0.507/0.417/0.145, Q3_K_M
# 0.533/0.417/0.145, Q3_K_S 0.563/0.458/0.145, Q2_K 0.946/0.25/0.274: bounds 1.5x, 0.8x and 1.1x those
MIXES = {"Q8_0": (0.04, 0.9, 0.006), "Q6_K": (0.15, 0.8, 0.02), "Q5_K_M": (0.3, 0.65, 0.04),
         "Q4_K_M": (0.55, 0.55, 0.08), "Q4_0": (0.5, 0.45, 0.09),
         "Q5_1": (0.23, 0.75, 0.037), "Q4_1": (0.46, 0.6, 0.077), "IQ4_XS": (0.51, 0.55, 0.082),
         "IQ4_NL": (0.48, 0.55, 0.081), "Q3_K_L": (0.76, 0.33, 0.16), "Q3_K_M": (0.8, 0.33, 0.16),
         "Q3_K_S": (0.84, 0.36, 0.16), "Q2_K": (1.42, 0.2, 0.3)}
# the formats llama.cpp's rules give this 2-layer model (2 query heads per kv head) beside Q4_K_M's
MIX_FORMATS = {
    "Q3_K_M": {"0.attn_v.weight": "Q5_K", "1.attn_v.weight": "Q5_K", "0.ffn_down.weight": "Q4_K",
               "0.attn_output.weight": "Q4_K", "0.attn_q.weight": "Q3_K", "output.weight": "Q6_K"},
    "Q3_K_L": {"1.attn_v.weight": "Q5_K", "1.ffn_down.weight": "Q5_K", "1.attn_output.weight": "Q5_K",
               "1.ffn_up.weight": "Q3_K"},
    "Q2_K": {"0.attn_v.weight": "Q3_K", "0.ffn_down.weight": "Q3_K", "0.attn_output.weight": "Q3_K",
             "0.attn_q.weight": "Q2_K", "0.ffn_gate.weight": "Q2_K", "output.weight": "Q6_K"},
    "IQ4_XS": {"0.attn_v.weight": "IQ4_XS", "0.ffn_down.weight": "IQ4_XS", "output.weight": "Q6_K",
               "token_embd.weight": "IQ4_XS"},
}


def write_model(hf):
    spec = dict(gen_tiny_model.VARIANTS["llama_headdim"], hidden=256, inter=512, layers=2, heads=4, kv_heads=2,
                head_dim=64, vocab=512, dtype="F32", tied=False)
    os.makedirs(hf)
    gen_tiny_model.write_json(os.path.join(hf, "config.json"), gen_tiny_model.make_config(spec))
    gen_tiny_model.write_json(os.path.join(hf, "tokenizer.json"), gen_tiny_model.make_tokenizer(spec))
    gen_tiny_model.write_json(os.path.join(hf, "tokenizer_config.json"), gen_tiny_model.make_tokenizer_config(spec))
    gen_tiny_model.write_weights(hf, gen_tiny_model.make_weights(spec, np.random.default_rng(3)), 1)


def formats(model):
    m = json.load(open(os.path.join(model, "manifest.json")))
    out = {t["name"]: t["format"] for t in m["units"]["embed"] + m["units"]["head"]}
    for i, layer in enumerate(m["units"]["layers"]):
        out.update({f"{i}.{t['name']}": t["format"] for t in layer})
    return out


def weight_error(base, model, name):
    """Relative RMS error of layer 0's tensor `name` in model (quantized, decoded by gguf-py) against base (F32)."""
    import gguf

    def raw(d):
        m = json.load(open(os.path.join(d, "manifest.json")))
        t = next(t for t in m["units"]["layers"][0] if t["name"] == name)
        with open(os.path.join(d, t["file"]), "rb") as fh:
            fh.seek(t["offset"])
            return t["format"], np.frombuffer(fh.read(t["bytes"]), dtype=np.uint8), t["shape"]
    _, b, shape = raw(base)
    x = b.view(np.float32).reshape(shape)
    fmt, q, _ = raw(model)
    y = gguf.quants.dequantize(q.reshape(shape[0], -1), getattr(gguf.GGMLQuantizationType, fmt)).reshape(shape)
    return float(np.sqrt(np.mean((y - x) ** 2) / np.mean(x ** 2)))


def tensor_bytes(model):
    """{unit.name: (stored bytes, rows)} of every tensor of a model.ferry."""
    m = json.load(open(os.path.join(model, "manifest.json")))
    units = [("embed", m["units"]["embed"]), ("head", m["units"]["head"])]
    units += [(str(i), layer) for i, layer in enumerate(m["units"]["layers"])]
    out = {}
    for u, tensors in units:
        for t in tensors:
            with open(os.path.join(model, t["file"]), "rb") as fh:
                fh.seek(t["offset"])
                out[f"{u}.{t['name']}"] = (fh.read(t["bytes"]), t["shape"][0])
    return out


def logits(f, model, ids, root, what):
    lg = os.path.join(root, "q.lg")
    p = ferry("run", "-m", model, "--prompt-ids", ",".join(map(str, ids)), "-n", 0, "--logits", lg, "--device", "cpu")
    if not f.check(p.returncode == 0, f"{what}: run failed: {p.stderr.strip()[-300:]}"):
        return None
    return ref_forward.read_flgt(lg).astype(np.float64)


def bpw(model):
    """(the model's bits per weight, its layer and head units') from the manifest: stored bits / values, a tied
    head counted once in the model's figure."""
    m = json.load(open(os.path.join(model, "manifest.json")))
    def count(ts):
        return sum(8 * t["raw_bytes"] for t in ts), sum(int(np.prod(t["shape"])) for t in ts)
    units = [t for layer in m["units"]["layers"] for t in layer] + m["units"]["head"]
    emb_file = m["units"]["embed"][0]["file"]
    b, n = count(m["units"]["embed"] + [t for t in units if t["file"] != emb_file])
    bu, nu = count(units)
    return b / n, bu / nu


def check_bpw(f, model, what):
    """--plan and --stats-json name the bits per weight the manifest implies."""
    want_model, want_units = bpw(model)
    p = ferry("run", "-m", model, "--plan", "--prompt-ids", "1,2,3", "--device", "cpu")
    m = re.search(r"\(([0-9.]+) bits per weight; the model's ([0-9.]+)\)", p.stderr)
    f.check(m and abs(float(m.group(1)) - want_units) < 0.006 and abs(float(m.group(2)) - want_model) < 0.006,
            f"{what}: --plan says {m and m.groups()}, the manifest {want_units:.3f} / {want_model:.3f}")
    js = os.path.join(model, "stats.json")
    p = ferry("run", "-m", model, "--prompt-ids", "1,2,3", "-n", "1", "--device", "cpu", "--stats-json", js)
    if f.check(p.returncode == 0, f"{what}: run failed: {p.stderr.strip()[-200:]}"):
        st = json.load(open(js))
        f.check(abs(st["bpw_model"] - want_model) < 1e-6 and abs(st["bpw_streamed"] - want_units) < 1e-6,
                f"{what}: --stats-json bpw {st['bpw_model']}, {st['bpw_streamed']} != {want_model}, {want_units}")
    return want_model


def size(d):
    return sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d) if n.endswith(".bin"))


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        hf = os.path.join(root, "m256")
        write_model(hf)
        base = os.path.join(root, "f32.ferry")
        f.check(ferry("convert", hf, "-o", base).returncode == 0, "plain convert failed")
        ids = [int(t) for t in np.random.default_rng(1).integers(1, 512, 48)]
        ref = logits(f, base, ids, root, "f32")
        for mix, (tol, agree, wtol) in MIXES.items():
            out = os.path.join(root, f"{mix}.ferry")
            p = ferry("convert", hf, "-o", out, "--quant", mix)
            if not f.check(p.returncode == 0, f"--quant {mix}: {p.stderr.strip()}"):
                continue
            fm = formats(out)
            f.check(fm["0.attn_norm.weight"] == "F32", f"{mix}: a norm vector was quantized: {fm['0.attn_norm.weight']}")
            if mix == "Q4_K_M":
                want = {"0.attn_q.weight": "Q4_K", "0.attn_v.weight": "Q4_K", "1.attn_v.weight": "Q6_K",
                        "1.ffn_down.weight": "Q6_K", "0.ffn_down.weight": "Q4_K", "output.weight": "Q6_K",
                        "token_embd.weight": "Q4_K"}
                got = {k: fm[k] for k in want}
                f.check(got == want, f"Q4_K_M formats {got} != {want}")
            elif mix in MIX_FORMATS:
                got = {k: fm[k] for k in MIX_FORMATS[mix]}
                f.check(got == MIX_FORMATS[mix], f"{mix} formats {got} != {MIX_FORMATS[mix]}")
            elif mix in ("Q8_0", "Q6_K", "Q4_0", "Q4_1", "Q5_1", "IQ4_NL", "Q3_K_S"):
                want = "Q3_K" if mix == "Q3_K_S" else mix
                f.check(fm["0.ffn_up.weight"] == want, f"{mix}: ffn_up is {fm['0.ffn_up.weight']}")
            werr = weight_error(base, out, "attn_q.weight")
            print(f"{mix:7s} layer 0 attn_q ({fm['0.attn_q.weight']}) decoded by gguf-py: rel RMS error {werr:.4f} "
                  f"(bound {wtol})")
            f.check(werr <= wtol, f"{mix}: weights decoded by gguf-py rel RMS error {werr:.4f} > {wtol}")
            q = logits(f, out, ids, root, mix)
            if q is None or ref is None:
                continue
            err = float(np.max(np.linalg.norm(q - ref, axis=1) / np.linalg.norm(ref, axis=1)))
            top1 = float(np.mean(q.argmax(1) == ref.argmax(1)))
            ratio = size(out) / size(base)
            bits = check_bpw(f, out, mix)
            print(f"{mix:7s} logits rel err {err:.4f} (bound {tol}), top-1 agreement {top1:.3f} (bound {agree}), "
                  f"files {ratio:.3f} of f32, {bits:.3f} bits per weight")
            f.check(err <= tol, f"{mix}: logits rel err {err:.4f} > {tol}")
            f.check(top1 >= agree, f"{mix}: top-1 agreement {top1:.3f} < {agree}")
            f.check(ratio < 0.3, f"{mix}: files are {ratio:.3f} of the f32 model's")

        # 64-wide rows: llama.cpp's fallbacks
        tiny = os.path.join(root, "tiny")
        gen_tiny_model.generate("llama_headdim", tiny, 0)
        out = os.path.join(root, "tiny.ferry")
        p = ferry("convert", tiny, "-o", out, "--quant", "Q4_K_M")
        f.check("took llama.cpp's fallback format" in p.stderr, f"tiny --quant Q4_K_M: no fallback notice: {p.stderr!r}")
        if f.check(p.returncode == 0, f"tiny --quant Q4_K_M: {p.stderr.strip()}"):
            fm = formats(out)
            f.check(fm["0.attn_q.weight"] == "Q5_0" and fm["output.weight"] == "Q8_0",
                    f"fallbacks: attn_q {fm['0.attn_q.weight']}, output {fm['output.weight']}")

        # bad input
        for bad in ("Q3_Z", "", "f32"):
            o = os.path.join(root, "bad.ferry")
            p = ferry("convert", hf, "-o", o, "--quant", bad)
            f.check(p.returncode == 2 and "--quant" in p.stderr and len(p.stderr.strip().splitlines()) == 1
                    and not os.path.exists(o), f"--quant {bad!r}: exit {p.returncode}: {p.stderr}")
        # a GGUF: its F32/F16 matrices are quantized like the HF model's (same blocks), its quantized ones kept
        import hf_to_gguf
        for typ in ("F32", "F16"):
            g = os.path.join(root, f"m256.{typ}.gguf")
            hf_to_gguf.convert(hf, g, typ)
            out = os.path.join(root, f"gguf.{typ}.ferry")
            p = ferry("convert", g, "-o", out, "--quant", "Q4_K_M")
            if f.check(p.returncode == 0, f"GGUF {typ} --quant Q4_K_M: {p.stderr.strip()}"):
                gm, hm = formats(out), formats(os.path.join(root, "Q4_K_M.ferry"))
                f.check(gm == hm, f"GGUF {typ} --quant Q4_K_M formats differ from the HF model's: {gm} != {hm}")
                if typ == "F32":  # the same f32 values: the same blocks (the files order tensors differently)
                    a, b = tensor_bytes(out), tensor_bytes(os.path.join(root, "Q4_K_M.ferry"))
                    # llama's GGUF q/k rows are permuted (llama.cpp's interleaved RoPE): the same rows, reordered
                    def rows(v):
                        data, n = v
                        return sorted(data[i:i + len(data) // n] for i in range(0, len(data), len(data) // n))
                    diff = sorted(k for k in a if a[k] != b.get(k) and not (
                        k.endswith(("attn_q.weight", "attn_k.weight")) and k in b and rows(a[k]) == rows(b[k])))
                    f.check(a.keys() == b.keys() and not diff, f"GGUF F32 --quant Q4_K_M: tensors differ: {diff}")
        g8 = os.path.join(root, "m256.Q8_0.gguf")
        hf_to_gguf.convert(hf, g8, "Q8_0")
        out = os.path.join(root, "gguf.q8.ferry")
        p = ferry("convert", g8, "-o", out, "--quant", "Q4_K_M")
        f.check(p.returncode == 0 and "kept as they are" in p.stderr and formats(out)["0.attn_q.weight"] == "Q8_0",
                f"a Q8_0 GGUF under --quant: {p.stderr.strip()}")
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
