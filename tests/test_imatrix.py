"""`ferry imatrix` and `ferry convert --quant MIX --imatrix FILE`, checked against independent computations.

  - collection: a tiny model (tools/gen_tiny_model.py) over 3 chunks of 64 tokens of tests/data/kjv_genesis.txt;
    gguf-py reads the file (llama.cpp's GGUF imatrix layout: general.type imatrix, NAME.in_sum2 [cols], NAME.counts
    [1]) and every layer matrix's sums equal the x^2 sums of that matrix's input in the float64 NumPy forward
    (tools/ref_forward.py, its _linear inputs recorded) within 1e-4 relative, counts = the tokens; the output
    matrix's cover the logits rows (the scored half of each chunk);
  - use: a model whose rows are 256 wide quantized to Q4_K_M with a synthetic importance matrix (log-normal per
    column, so weighting matters) in both of llama.cpp's files: the legacy .dat (written here from its layout) and
    GGUF (written by gguf-py's GGUFWriter): both give byte-identical models, and each matrix's importance-weighted
    squared error (gguf-py decoding the blocks) is below the one converted without the imatrix, by >= 10% summed;
    the importance matrix that ferry imatrix collects on that model also lowers the weighted error;
  - bad input: --imatrix without --quant; a file that is neither format; a truncated .dat; an imatrix of another
    model (other columns; no matching names): one line naming it, exit non-zero, nothing written.
"""

import json
import os
import struct

import numpy as np

from ferrytest import ROOT, Failures, ferry, ref_forward, scratch, tiny_model
from test_quant_convert import write_model

TEXT = os.path.join(ROOT, "tests", "data", "kjv_genesis.txt")
CTX, CHUNKS = 64, 3
HF_TO_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}


def read_imatrix(path):
    import gguf
    r = gguf.GGUFReader(path)
    out = {}
    for t in r.tensors:
        if t.name.endswith(".in_sum2"):
            name = t.name[:-len(".in_sum2")]
            out.setdefault(name, {})["sum"] = np.asarray(t.data, np.float64).reshape(-1)
        elif t.name.endswith(".counts"):
            out.setdefault(t.name[:-len(".counts")], {})["count"] = float(np.asarray(t.data).reshape(-1)[0])
    return r, out


def reference_sums(hf):
    """{gguf name: (x^2 sums, rows)} of the NumPy forward over the chunks, as ferry imatrix runs them."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(hf, "tokenizer.json"))
    cfg = json.load(open(os.path.join(hf, "tokenizer_config.json")))
    ids = tok.encode(open(TEXT, encoding="utf-8").read()).ids
    bos = tok.token_to_id(cfg["bos_token"]) if cfg.get("add_bos_token") else None
    model = ref_forward.Model(hf)
    sums = {}
    linear, act = model._linear, model._act

    def add(name, x, rows=None):
        x = np.asarray(x, np.float64)
        if rows is not None:
            x = x[rows]
        s, n = sums.get(name, (0, 0))
        sums[name] = (s + (x * x).sum(axis=0), n + x.shape[0])

    def rec_linear(x, name):
        parts = name.split(".")  # model.layers.N.self_attn.q_proj
        add(f"blk.{parts[2]}.{HF_TO_GGUF['.'.join(parts[3:5])]}.weight", x)
        return linear(x, name)

    def rec_act(x, name):
        if name == "lm_head.weight":  # the head: the rows whose logits ferry asks for, ctx/2 .. ctx-1
            add("output.weight", x, slice(CTX // 2, CTX))
        return act(x, name)
    model._linear, model._act = rec_linear, rec_act
    for c in range(CHUNKS):
        run = ids[c * CTX:(c + 1) * CTX]
        if bos is not None:
            run[0] = bos
        model.logits(run)
    return sums


def collection(f, root):
    hf, model = tiny_model("llama_tied_gqa", root)
    out = os.path.join(root, "tiny.imatrix.gguf")
    p = ferry("imatrix", "-m", model, TEXT, "-o", out, "--ctx", CTX, "--chunks", CHUNKS)
    if not f.check(p.returncode == 0, f"imatrix: exit {p.returncode}: {p.stderr.strip()[-300:]}"):
        return
    r, got = read_imatrix(out)
    # ggml's reader takes the data section as whole aligned (32) tensors, the last one's padding too
    f.check(os.path.getsize(out) % 32 == 0, f"{out}: {os.path.getsize(out)} bytes, the last tensor unpadded")
    f.check(r.fields["general.type"].contents() == "imatrix", "general.type is not imatrix")
    f.check(r.fields["imatrix.chunk_count"].contents() == CHUNKS and r.fields["imatrix.chunk_size"].contents() == CTX,
            "chunk_count / chunk_size")
    want = reference_sums(hf)
    # a tied model: the head's matrix is the embedding's, under both names
    want["token_embd.weight"] = want["output.weight"]
    f.check(set(got) == set(want), f"entries {sorted(set(got) ^ set(want))} differ from the reference's")
    worst = 0
    for name, (s, n) in want.items():
        if name not in got:
            continue
        g = got[name]
        err = float(np.max(np.abs(g["sum"] - s)) / np.max(np.abs(s)))
        worst = max(worst, err)
        f.check(g["count"] == n, f"{name}: count {g['count']} != {n}")
        f.check(err <= 1e-4, f"{name}: sums differ by {err:.2e} relative")
    print(f"imatrix: {len(got)} matrices, sums vs the NumPy forward: max relative difference {worst:.2e}")


def matrices(model):
    """{gguf name: (format, raw bytes, shape)} of the layer matrices of a .ferry model."""
    m = json.load(open(os.path.join(model, "manifest.json")))
    out = {}
    for i, layer in enumerate(m["units"]["layers"]):
        for t in layer:
            if len(t["shape"]) == 2:
                with open(os.path.join(model, t["file"]), "rb") as fh:
                    fh.seek(t["offset"])
                    out[f"blk.{i}.{t['name']}"] = (t["format"], fh.read(t["bytes"]), t["shape"])
    return out


def decoded(fmt, raw, shape):
    import gguf
    q = np.frombuffer(raw, np.uint8)
    if fmt == "F32":
        return q.view(np.float32).reshape(shape).astype(np.float64)
    return gguf.quants.dequantize(q.reshape(shape[0], -1), gguf.GGMLQuantizationType[fmt]).astype(np.float64)


def weighted_errors(f32, quant, imp):
    """{name: sum over rows and columns of imp[col] * (w - q)^2}."""
    out = {}
    for name, (fmt, raw, shape) in quant.items():
        if name in imp:
            w = decoded(*f32[name])
            out[name] = float((imp[name][None, :] * (decoded(fmt, raw, shape) - w) ** 2).sum())
    return out


def write_dat(path, imp):
    """llama.cpp's legacy layout, ncall 1 (so the values are the importances exactly)."""
    with open(path, "wb") as fh:
        fh.write(struct.pack("<i", len(imp)))
        for name, v in sorted(imp.items()):
            fh.write(struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", 1, len(v)))
            fh.write(np.asarray(v, np.float32).tobytes())
        fh.write(struct.pack("<i", 1) + struct.pack("<i", 4) + b"x.tx")


def write_gguf_imatrix(path, imp):
    import gguf
    w = gguf.GGUFWriter(path, arch="imatrix")
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", ["x.txt"])
    w.add_uint32("imatrix.chunk_count", 1)
    w.add_uint32("imatrix.chunk_size", 512)
    for name, v in sorted(imp.items()):
        w.add_tensor(name + ".in_sum2", np.asarray(v, np.float32).reshape(1, -1))
        w.add_tensor(name + ".counts", np.ones((1, 1), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def use(f, root):
    hf = os.path.join(root, "wide")
    write_model(hf)
    f32 = os.path.join(root, "wide.f32.ferry")
    ferry("convert", hf, "-o", f32, check=True)
    rng = np.random.default_rng(11)
    cols = {"attn_q": 256, "attn_k": 256, "attn_v": 256, "attn_output": 256, "ffn_gate": 256, "ffn_up": 256,
            "ffn_down": 512}  # test_quant_convert's model
    imp = {f"blk.{i}.{k}.weight": rng.lognormal(0, 2, n).astype(np.float32) for i in range(2) for k, n in cols.items()}
    dat, gg = os.path.join(root, "syn.dat"), os.path.join(root, "syn.gguf")
    write_dat(dat, imp)
    write_gguf_imatrix(gg, imp)
    plain, with_dat, with_gguf = (os.path.join(root, n) for n in ("plain.ferry", "dat.ferry", "gguf.ferry"))
    ferry("convert", hf, "-o", plain, "--quant", "Q4_K_M", check=True)
    for out, im in ((with_dat, dat), (with_gguf, gg)):
        p = ferry("convert", hf, "-o", out, "--quant", "Q4_K_M", "--imatrix", im)
        f.check(p.returncode == 0, f"convert --imatrix {im}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
    if not (os.path.isdir(with_dat) and os.path.isdir(with_gguf)):
        return
    m_plain, m_dat, m_gguf, m_f32 = (matrices(d) for d in (plain, with_dat, with_gguf, f32))
    f.check(m_dat == m_gguf, "the .dat and the GGUF imatrix gave different models")
    impd = {k: v.astype(np.float64) for k, v in imp.items()}
    e_plain, e_im = weighted_errors(m_f32, m_plain, impd), weighted_errors(m_f32, m_dat, impd)
    gain = 1 - sum(e_im.values()) / sum(e_plain.values())
    worse = [k for k in e_im if e_im[k] > e_plain[k] * 1.001]
    print(f"Q4_K_M with a synthetic imatrix: importance-weighted error {100 * gain:.1f}% lower "
          f"({len(e_im)} matrices, {len(worse)} worse)")
    f.check(gain >= 0.10, f"the imatrix lowered the weighted error by only {100 * gain:.1f}%")
    f.check(not worse, f"matrices whose weighted error grew with the imatrix: {worse}")
    # a collected imatrix on the same model: weighted by what it measured, the error drops too
    coll = os.path.join(root, "wide.imatrix.gguf")
    p = ferry("imatrix", "-m", f32, TEXT, "-o", coll, "--ctx", CTX, "--chunks", 2)
    with_coll = os.path.join(root, "coll.ferry")
    if f.check(p.returncode == 0, f"imatrix on the wide model: {p.stderr.strip()[-300:]}"):
        ferry("convert", hf, "-o", with_coll, "--quant", "Q4_K_M", "--imatrix", coll, check=True)
        got = {k: v["sum"] / v["count"] for k, v in read_imatrix(coll)[1].items()}
        e0, e1 = weighted_errors(m_f32, m_plain, got), weighted_errors(m_f32, matrices(with_coll), got)
        g = 1 - sum(e1.values()) / sum(e0.values())
        print(f"Q4_K_M with the collected imatrix: error weighted by it {100 * g:.1f}% lower")
        f.check(g > 0, f"the collected imatrix did not lower the error it weights ({100 * g:.1f}%)")
    return hf, dat, imp


def bad_inputs(f, root, hf, dat, imp):
    junk, trunc, other, names = (os.path.join(root, n) for n in ("junk.dat", "trunc.dat", "other.dat", "names.dat"))
    with open(junk, "wb") as fh:
        fh.write(b"\xff\xff\xff\x7f" + bytes(64))
    with open(trunc, "wb") as fh:
        fh.write(open(dat, "rb").read()[:200])
    write_dat(other, {k: v[:128] for k, v in imp.items()})
    write_dat(names, {k.replace("blk.", "layers."): v for k, v in imp.items()})
    out = os.path.join(root, "bad.ferry")
    cases = [
        (["--imatrix", dat], ["needs --quant"]),
        (["--quant", "Q4_K_M", "--imatrix", junk], [junk]),
        (["--quant", "Q4_K_M", "--imatrix", trunc], [trunc, "truncated"]),
        (["--quant", "Q4_K_M", "--imatrix", other], [other, "another model"]),
        (["--quant", "Q4_K_M", "--imatrix", names], [names, "another model"]),
        (["--quant", "Q4_K_M", "--imatrix", os.path.join(root, "missing.dat")], ["missing.dat"]),
    ]
    for args, needles in cases:
        p = ferry("convert", hf, "-o", out, *args)
        err = p.stderr.strip().splitlines()
        f.check(p.returncode != 0 and err and all(n in err[-1] for n in needles),
                f"convert {' '.join(args)}: exit {p.returncode}, stderr {p.stderr.strip()[:300]!r}")
        f.check(not os.path.exists(out) and not os.path.exists(out + ".tmp"), f"convert {' '.join(args)} left {out}")


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        collection(f, root)
        r = use(f, root)
        if r:
            bad_inputs(f, root, *r)
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
