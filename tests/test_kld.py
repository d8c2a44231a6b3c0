"""`ferry kld`: KL divergence against a base model's log-probabilities, in llama.cpp's --kl-divergence
convention, checked against an independent computation.

  - a tiny model (tools/gen_tiny_model.py, Gemma 3 with a softcap) as the base and a copy with every matrix
    perturbed by 2% noise as the model compared: the LOGITS file ferry writes is parsed here (llama.cpp's layout:
    "_logits_", ctx, V, chunks, tokens, rows of u16 with a f32 scale and min) and its log-probabilities equal the
    float64 NumPy forward's (tools/ref_forward.py) within 2e-3; the KLD mean, median, p99 and maximum, the same-top
    share, both PPLs and the mean delta p equal a NumPy computation of llama.cpp's formulas (written here from
    tools/perplexity) on the reference logits of both models, the base read through the file's u16 encoding;
  - --base MODEL gives the same numbers as --save-base then --base-logits; a model against itself: KLD within the
    encoding's 1e-4, same top 100%;
  - bad input: no mode, two modes, a file that is not a LOGITS file, truncated, of another vocabulary, a text
    shorter than one chunk: one line naming it, exit non-zero, and nothing left behind by a failed --save-base.
"""

import json
import math
import os
import shutil
import struct

import numpy as np
import safetensors.numpy
from tokenizers import Tokenizer

from ferrytest import ROOT, Failures, ferry, ref_forward, scratch, tiny_model

TEXT = os.path.join(ROOT, "tests", "data", "kjv_genesis.txt")
CTX, CHUNKS = 64, 3
S = CTX - 1 - CTX // 2


def perturbed(hf, out, rel=0.02, seed=7):
    """A copy of the HF directory hf whose matrices carry noise of rel times their rms; returns out."""
    shutil.copytree(hf, out)
    rng = np.random.default_rng(seed)
    for name in os.listdir(out):
        if name.endswith(".safetensors"):
            path = os.path.join(out, name)
            w = safetensors.numpy.load_file(path)
            for k, v in w.items():
                if v.ndim == 2:
                    rms = float(np.sqrt(np.mean(v.astype(np.float64) ** 2)))
                    w[k] = (v + rng.normal(0, rel * rms, v.shape)).astype(v.dtype)
            safetensors.numpy.save_file(w, path, metadata={"format": "pt"})
    return out


def read_logits(path):
    """(ctx, V, n_chunk, tokens [n_chunk, ctx], log-probs [n_chunk * S, V] as float64) of a LOGITS file."""
    data = open(path, "rb").read()
    assert data[:8] == b"_logits_"
    ctx, V, nc = struct.unpack_from("<Iii", data, 8)
    off = 20
    tokens = np.frombuffer(data, np.int32, ctx * nc, off).reshape(nc, ctx)
    off += 4 * ctx * nc
    nv = 2 * ((V + 1) // 2) + 4
    rows = np.frombuffer(data, np.uint16, nc * (ctx - 1 - ctx // 2) * nv, off).reshape(-1, nv)
    head = rows[:, :4].copy().view(np.float32)  # scale, min_lp
    lp = head[:, :1].astype(np.float64) * rows[:, 4:4 + V] + head[:, 1:2]
    assert off + rows.nbytes == len(data), "trailing bytes"
    return ctx, V, nc, tokens, lp, head


def log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def reference_rows(hf, tokens, bos):
    """Log-probabilities [n_chunk * S, V] of the scored rows of the NumPy forward."""
    model = ref_forward.Model(hf)
    out = []
    for chunk in tokens:
        run = list(chunk)
        if bos is not None:
            run[0] = bos
        out.append(log_softmax(model.logits(run)[CTX // 2:CTX - 1]))
    return np.concatenate(out)


def percentile(v, frac):
    v = np.sort(v)
    p = frac * (len(v) - 1)
    i = int(p)
    p -= i
    return (1 - p) * v[i] + p * v[min(i + 1, len(v) - 1)]


def reference_stats(base_lp_file, q_lp, targets):
    """llama.cpp's statistics: base log-probs as read from the file (entries <= -16 ignored in the KLD)."""
    keep = base_lp_file > -16
    kld = np.where(keep, np.exp(base_lp_file) * (base_lp_file - q_lp), 0).sum(axis=1)
    idx = np.arange(len(targets))
    nll, nllb = -q_lp[idx, targets], -base_lp_file[idx, targets]
    same = np.argmax(q_lp, axis=1) == np.argmax(base_lp_file, axis=1)
    return {"kld_mean": kld.mean(), "kld_median": percentile(kld, 0.5), "kld_p99": percentile(kld, 0.99),
            "kld_max": kld.max(), "same_top": same.mean(), "ppl": math.exp(nll.mean()),
            "ppl_base": math.exp(nllb.mean()), "dp_mean": np.mean(np.exp(-nll) - np.exp(-nllb))}


def kld_json(f, what, *args):
    js = os.path.join(scratch_dir, f"{what.replace(' ', '_')}.json")
    p = ferry("kld", *args, "--json", js)
    if not f.check(p.returncode == 0, f"{what}: exit {p.returncode}: {p.stderr.strip()[-300:]}"):
        return None
    return json.load(open(js))


def tiny(f, root):
    hf, base = tiny_model("gemma3_softcap", root)
    hf_q = perturbed(hf, os.path.join(root, "noisy"))
    q = os.path.join(root, "noisy.ferry")
    ferry("convert", hf_q, "-o", q, check=True)
    logits = os.path.join(root, "base.logits")
    p = ferry("kld", "-m", base, TEXT, "--save-base", logits, "--ctx", CTX, "--chunks", CHUNKS, "--kv", "f32")
    if not f.check(p.returncode == 0, f"--save-base: exit {p.returncode}: {p.stderr.strip()[-300:]}"):
        return None, None
    ctx, V, nc, tokens, lp_file, head = read_logits(logits)
    f.check((ctx, nc) == (CTX, CHUNKS) and tokens.shape == (CHUNKS, CTX), f"header: ctx {ctx}, chunks {nc}")
    text_ids = Tokenizer.from_file(os.path.join(hf, "tokenizer.json")).encode(open(TEXT, encoding="utf-8").read()).ids
    f.check(tokens.flatten().tolist() == text_ids[:CTX * CHUNKS], "the file's tokens are not the text's")
    cfg = json.load(open(os.path.join(hf, "tokenizer_config.json")))
    tok = Tokenizer.from_file(os.path.join(hf, "tokenizer.json"))
    bos = tok.token_to_id(cfg["bos_token"]) if cfg.get("add_bos_token") else None
    want_base = reference_rows(hf, tokens, bos)
    # the encoding keeps [max - 16, max] in 65535 steps: 2.4e-4; the rest is ferry's f32 forward
    kept = want_base > want_base.max(axis=1, keepdims=True) - 15.9
    err = np.abs(lp_file - want_base)[kept].max()
    print(f"LOGITS file: {lp_file.shape[0]} rows of {V}; log-probs vs the NumPy forward: max |diff| {err:.2e}")
    f.check(err <= 2e-3, f"the file's log-probabilities differ from the reference by {err}")
    f.check(bool(np.all(head[:, 0] >= 0)), "negative scales in the file")

    got = kld_json(f, "tiny compare", "-m", q, "--base-logits", logits, "--kv", "f32")
    want = reference_stats(lp_file, reference_rows(hf_q, tokens, bos), tokens[:, CTX // 2 + 1:].flatten())
    if got:
        print("ferry kld: " + ", ".join(f"{k} {got[k]:.6g}" for k in want))
        print("reference: " + ", ".join(f"{k} {v:.6g}" for k, v in want.items()))
        f.check(got["n_tokens_scored"] == CHUNKS * S and got["n_chunks"] == CHUNKS, f"counts {got}")
        f.check(want["kld_mean"] > 1e-3, f"the perturbation is too small to test anything: KLD {want['kld_mean']}")
        for k, rel in (("kld_mean", 1e-2), ("kld_median", 3e-2), ("kld_p99", 3e-2), ("kld_max", 3e-2),
                       ("ppl", 1e-3), ("ppl_base", 1e-3)):
            f.check(abs(got[k] - want[k]) <= rel * abs(want[k]) + 1e-5, f"{k}: ferry {got[k]} != reference {want[k]}")
        f.check(abs(got["same_top"] - want["same_top"]) <= 1.5 / (CHUNKS * S),
                f"same top: ferry {got['same_top']} != reference {want['same_top']}")
        f.check(abs(got["dp_mean"] - want["dp_mean"]) <= 1e-4, f"dp: ferry {got['dp_mean']} != {want['dp_mean']}")
    both = kld_json(f, "tiny --base", "-m", q, "--base", base, TEXT, "--ctx", CTX, "--chunks", CHUNKS, "--kv", "f32")
    if got and both:
        f.check(all(both[k] == got[k] for k in ("kld_mean", "kld_p99", "same_top", "ppl", "ppl_base")),
                f"--base {both} != two steps {got}")
    self_ = kld_json(f, "tiny self", "-m", base, "--base-logits", logits, "--kv", "f32")
    if self_:
        f.check(abs(self_["kld_mean"]) <= 1e-4 and self_["kld_max"] <= 1e-3 and self_["same_top"] == 1.0,
                f"a model against itself: {self_}")
    return base, logits


def bad_inputs(f, root, model, logits):
    short = os.path.join(root, "short.txt")
    with open(short, "w") as fh:
        fh.write("In the beginning God created the heaven and the earth.\n")
    notlog = os.path.join(root, "not.logits")
    with open(notlog, "wb") as fh:
        fh.write(b"GGUF" + bytes(100))
    trunc = os.path.join(root, "trunc.logits")
    with open(trunc, "wb") as fh:
        fh.write(open(logits, "rb").read()[:-1000])
    other = os.path.join(root, "other.logits")
    data = bytearray(open(logits, "rb").read())
    struct.pack_into("<i", data, 12, struct.unpack_from("<i", data, 12)[0] - 2)  # V - 2, rows stay as long
    with open(other, "wb") as fh:
        fh.write(data)
    out = os.path.join(root, "new.logits")
    cases = [
        (["-m", model, TEXT], ["exactly one of"]),
        (["-m", model, TEXT, "--save-base", out, "--base", model], ["exactly one of"]),
        (["-m", model, "--base-logits", logits, TEXT], ["takes no text FILE"]),
        (["-m", model, "--base-logits", notlog], [notlog, "_logits_"]),
        (["-m", model, "--base-logits", trunc], [trunc, "truncated"]),
        (["-m", model, "--base-logits", other], [other]),
        (["-m", model, short, "--save-base", out, "--ctx", 64], [short, "fewer than one chunk"]),
        (["-m", model, "--base-logits", os.path.join(root, "missing.logits")], ["missing.logits"]),
    ]
    for args, needles in cases:
        p = ferry("kld", *args)
        err = p.stderr.strip().splitlines()
        f.check(p.returncode != 0 and err and all(n in err[0] for n in needles),
                f"kld {' '.join(map(str, args))}: exit {p.returncode}, stderr {p.stderr.strip()[:300]!r}")
    f.check(not os.path.exists(out) and not os.path.exists(out + ".tmp"), "a failed --save-base left a file")


def main():
    global scratch_dir
    f = Failures()
    root, cleanup = scratch()
    scratch_dir = root
    try:
        model, logits = tiny(f, root)
        if model:
            bad_inputs(f, root, model, logits)
    finally:
        cleanup()
    f.finish()


scratch_dir = None
if __name__ == "__main__":
    main()
