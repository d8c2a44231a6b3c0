"""GPTQ, AWQ and bitsandbytes NF4 checkpoints (issue 19): a tiny Llama (hidden 128, intermediate 256, so every linear packs and
the groups of 128 fill whole Q4_Z128 blocks) quantized by the NumPy writer of tools/quant_hf.py in each variant
(GPTQ 2/3/4/8 bits, group 32/64/128/-1, symmetric and asymmetric,
v1 and v2 zero points, act-order with groups mixing inside blocks and with whole-block groups; AWQ GEMM) and
converted by ferry:
  - every linear is stored as Q4_Z128/Q8_Z128 where its groups are whole 128s, else Q4_Z/Q8_Z (F32 only where
    act-order mixes groups inside a block of 32), and its
    values, dequantized by ferry (build/tests/dequant_tool), equal the NumPy unpacking of the same files bit for
    bit;
  - the CPU forward's prompt logits are within 1e-4 (norm-wise, per row) of tools/ref_forward.py's float64 forward
    on the unpacked weights, with the matmul inputs of Q4_Z/Q8_Z weights quantized as ferry's CPU contract says
    (quantize_act, 8 bits per 32: src/kernels/cpu/qdot.h), or within twice that quantization's own distance
    from the float64 forward where that is larger (a rounding tie of an input code decided otherwise: ferry's
    activations are f32, the reference's f64; the bound the other 8-bit-input tests use);
  - bitsandbytes NF4 and FP4 (blocksize 64 and 128, with and without double quantization), the same way: stored
    as NF4 / BNB_FP4, bit-identical, logits within 1e-4 (their CPU dots take f32 inputs);
  - bitsandbytes LLM.int8 (weight int8, SCB): stored as Q8_0, bit-identical to CB f16(SCB / 127), within 2^-11
    of CB SCB / 127 (the f16 row scale), logits within 1e-4 of the reference on the stored values;
  - EXL2 (ExLlamaV2's mixed-bit groups, act-order; tools/quant_hf.py exl2): each linear stored as Q4_Z (groups
    of 2-4 bits) or Q8_Z (any of 5/6/8 bits), Q4_Z128/Q8_Z128 for whole-128 groups, F32 where a group is not
    whole 32s; bit-identical to the NumPy unpacking with ExLlamaV2's f16 scale once the stored permutation (the
    file's q_perm, checked) is undone; q_invperm or an int16 q_perm; no quantization_config (found by its
    q_groups); a quantized, permuted lm_head on an untied model; the bits per weight streamed are printed
    beside the checkpoint's; logits within 1e-4 as above;
  - bad input (an unsupported method, bit width, group size or packing or bitsandbytes quant type, a missing
    g_idx, qzeros, quant_state or nested absmax, a foreign quant_map, a qweight, absmax or scales shape that
    disagrees with the config; EXL2: a missing q_groups or q_invperm, bits outside 8/6/5/4/3/2 or increasing,
    q_weight rows or width, q_scale's shape against the groups, a q_invperm that is not a permutation) fails
    with one line naming the field or tensor, and leaves
    neither the output nor its .tmp;
  - the CPU matmul on the converted rows of two linears per case, T = 1, 3, 6, against float64 dots of the NumPy
    unpacking with 8-bit inputs (tests/test_dequant.py's criteria: 1e-5 of sum |w x| per output).
The CUDA kernels' Q4_Z/Q8_Z entries are in tests/test_cuda_matmul.c (all formats of the list).
(act-order checkpoints whose groups mix inside a block are stored as exact F32: see src/layout/FORMAT.md.)"""

import json
import os
import random

import numpy as np

from ferrytest import Failures, ferry, gen_tiny_model, ref_forward, scratch, rel_rows
from test_dequant import matmul_check, tool
import quant_hf

TOL = 1e-4
# (name, method, bits, group, sym, v2, desc_act)
CASES = [
    ("gptq4_g32_v1", "gptq", 4, 32, False, False, None),
    ("gptq4_g64_sym_v2", "gptq", 4, 64, True, True, None),
    ("gptq4_g128_v1", "gptq", 4, 128, False, False, None),
    ("gptq8_g128_sym_v2", "gptq", 8, 128, True, True, None),
    ("gptq4_gall_sym_v1", "gptq", 4, -1, True, False, None),
    ("gptq8_gall_v1", "gptq", 8, -1, False, False, None),
    ("gptq8_g32_sym_v2", "gptq", 8, 32, True, True, None),
    ("gptq3_g64_v2", "gptq", 3, 64, False, True, None),
    ("gptq3_g32_v1", "gptq", 3, 32, False, False, None),
    ("gptq2_g32_v1", "gptq", 2, 32, False, False, None),
    ("gptq4_actorder_blocks", "gptq", 4, 64, False, False, "blocks"),
    ("gptq4_actorder_mixed", "gptq", 4, 32, False, True, "mixed"),
    ("gptq4_g128_actorder_mixed", "gptq", 4, 128, False, False, "mixed"),
    ("gptq8_g64_actorder_shared", "gptq", 8, 64, True, False, "mixed_shared"),
    ("awq4_g32", "awq", 4, 32, False, False, None),
    ("awq4_g64", "awq", 4, 64, False, False, None),
    ("awq4_g128", "awq", 4, 128, False, False, None),
    # bitsandbytes NF4: group is the blocksize, sym stands for double quantization
    ("bnb_nf4_b64", "bnb", 4, 64, False, False, None),
    ("bnb_nf4_b128_dq", "bnb", 4, 128, True, False, None),
    ("bnb_nf4_b64_dq", "bnb", 4, 64, True, False, None),
    ("bnb_fp4_b64", "bnb_fp4", 4, 64, False, False, None),
    ("bnb_fp4_b128_dq", "bnb_fp4", 4, 128, True, False, None),
    # bitsandbytes LLM.int8: Q8_0 with the row scale rounded to f16
    ("bnb_int8", "bnb8", 8, -1, False, False, None),
]
HF_TO_FERRY = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}


def base_model(root, tied=True):
    spec = dict(gen_tiny_model.VARIANTS["llama_tied_gqa"], hidden=128, head_dim=32, inter=256, tied=tied)
    hf = os.path.join(root, "base" if tied else "base_untied")
    os.makedirs(hf, exist_ok=True)
    gen_tiny_model.write_json(os.path.join(hf, "config.json"), gen_tiny_model.make_config(spec))
    gen_tiny_model.write_json(os.path.join(hf, "generation_config.json"), gen_tiny_model.make_generation_config(spec))
    gen_tiny_model.write_json(os.path.join(hf, "tokenizer.json"), gen_tiny_model.make_tokenizer(spec))
    gen_tiny_model.write_json(os.path.join(hf, "tokenizer_config.json"), gen_tiny_model.make_tokenizer_config(spec))
    gen_tiny_model.write_weights(hf, gen_tiny_model.make_weights(spec, np.random.default_rng(3)), 1)
    return hf


def ferry_tensors(model):
    """{(layer, ferry name): (format, float32 values, raw bytes)} of the layers of a model.ferry (the head's
    as layer -1), dequantized by ferry"""
    m = json.load(open(os.path.join(model, "manifest.json")))
    out = {}
    for i, layer in [*enumerate(m["units"]["layers"]), (-1, m["units"]["head"])]:
        for t in layer:
            with open(os.path.join(model, t["file"]), "rb") as fh:
                fh.seek(t["offset"])
                raw = fh.read(t["bytes"])
            n = int(np.prod(t["shape"]))
            out[(i, t["name"])] = (t["format"], tool("dequant", t["format"], n, stdin=raw).reshape(t["shape"]), raw)
    return out


def want_perm(qdir, hname):
    """The column order a converter must store an act-order linear in: its rows sorted by group, stably; None
    where every aligned 32 rows already lie in one group (stored as they are)"""
    import safetensors.numpy
    g_idx = safetensors.numpy.load_file(os.path.join(qdir, "model.safetensors"))[hname[: -len(".weight")] + ".g_idx"]
    if np.all(g_idx.reshape(-1, 32) == g_idx.reshape(-1, 32)[:, :1]):
        return None
    return np.argsort(g_idx, kind="stable")


def check_perm(f, name, hname, entry, want):
    """The stored permutation (F32 indices) of a linear, checked to be want; None when it is not"""
    if not f.check(entry is not None, f"{name}: {hname}: no permutation stored beside the permuted weight"):
        return None
    fmt, p, _ = entry
    ok = fmt == "F32" and p.shape == want.shape and np.array_equal(p, want.astype(np.float32))
    f.check(ok, f"{name}: {hname}: the stored permutation ({fmt} {p.shape}) is not the rows sorted by group")
    return want if ok else None


def check_case(f, root, hf, case, prompt):
    name, method, bits, group, sym, v2, desc_act = case
    q = os.path.join(root, name)
    if method in ("bnb", "bnb_fp4", "bnb8"):
        quant_hf.write(hf, q, "bnb" if method == "bnb_fp4" else method, group=group, seed=len(name), double_quant=sym,
                       quant_type="fp4" if method == "bnb_fp4" else "nf4")
    else:
        quant_hf.write(hf, q, method, bits, group, sym, v2, desc_act, seed=len(name))
    out = q + ".ferry"
    p = ferry("convert", q, "-o", out)
    if not f.check(p.returncode == 0, f"{name}: convert failed: {p.stderr.strip()}"):
        return
    want = quant_hf.dequantize(q, stored=True)  # LLM.int8: the Q8_0 values (f16 row scales); others: the values
    exact = quant_hf.dequantize(q)
    got = ferry_tensors(out)
    act_blocks, nbad, nlin, int8_rel = {}, 0, 0, []
    for hname, w in want.items():
        if not hname.startswith("model.layers.") or not quant_hf.quantizable(hname, w):
            continue
        parts = hname.split(".")
        layer, key = int(parts[2]), HF_TO_FERRY[".".join(parts[3:5])]
        fmt, v, raw = got[(layer, key + ".weight")]
        g128 = (group == -1 or group % 128 == 0) and w.shape[1] % 128 == 0 and desc_act != "blocks"
        want_fmt = ("NF4" if method == "bnb" else "BNB_FP4" if method == "bnb_fp4" else "Q8_0" if method == "bnb8" else
                    ("Q8_Z" if bits == 8 else "Q4_Z") + ("128" if g128 else ""))
        f.check(fmt == want_fmt, f"{name}: {hname} stored as {fmt}, want {want_fmt}")
        nlin += 1
        perm, wperm = None, want_perm(q, hname) if desc_act in ("mixed", "mixed_shared") else None
        if wperm is not None:  # columns stored sorted by group: check the permutation, then undo it
            perm = check_perm(f, name, hname, got.get((layer, key + ".perm")), wperm)
            if perm is None:
                nbad += 1
                continue
            u = np.empty_like(v)
            u[:, perm] = v
            v = u
        elif (layer, key + ".perm") in got:
            f.check(False, f"{name}: {hname} has a permutation, its groups are whole blocks")
        if v.shape != w.shape or not np.array_equal(v.view(np.uint32), w.astype(np.float32).view(np.uint32)):
            nbad += 1
            diff = np.flatnonzero(v.reshape(-1) != w.reshape(-1))
            f.check(False, f"{name}: {hname}: {diff.size} values differ from the NumPy unpacking, first {diff[:3]}")
        if method == "bnb8":  # the f16 row scale's rounding: 2^-11 relative (2^-25 absolute on d below 2^-14)
            e = exact[hname].astype(np.float64)
            bound = np.abs(e) * 2.0 ** -11 + 127 * 2.0 ** -25
            dev = np.abs(v.astype(np.float64) - e)
            f.check(bool(np.all(dev <= bound)), f"{name}: {hname}: {np.sum(dev > bound)} values off CB SCB / 127 "
                    "by more than the f16 scale's rounding")
            int8_rel.append(float(np.max(dev / np.maximum(np.abs(e), 1e-30))))
        if fmt not in ("F32", "NF4", "BNB_FP4"):
            blk = 128 if fmt.endswith("128") else 32
            act_blocks[hname] = blk if perm is None else (blk, perm)
        if fmt not in ("F32", "NF4", "BNB_FP4") and layer == 1 and key in ("attn_q", "ffn_down"):
            wp = w if perm is None else w[:, perm]  # the stored rows multiply x[perm]
            matmul_check(f, f"{name} {hname}", fmt, blk, np.frombuffer(raw, np.uint8).reshape(w.shape[0], -1),
                         wp.astype(np.float64), np.random.default_rng(layer))
    c = check_logits(f, root, name, q, out, act_blocks, prompt, f"{nlin - nbad}/{nlin} linears bit-identical")
    if c is not None and int8_rel:  # the f16 row scales' effect on the model: float64 forwards on CB SCB / 127 and on the Q8_0 values
        quant_hf.write_dequantized(q, q + ".bnb")
        e_scale = rel_rows(ref_forward.Model(q + ".bnb").logits(prompt), c)
        print(f"{name:24s} Q8_0 values vs CB SCB / 127: max relative deviation {max(int8_rel):.2e} (bound 2^-11 = "
              f"{2.0 ** -11:.2e}); float64 logits of the two {e_scale:.2e}")
        f.check(e_scale <= 1e-2, f"{name}: the f16 row scales move the float64 logits by {e_scale:.2e}")


def check_logits(f, root, name, q, out, act_blocks, prompt, what):
    """ferry's CPU prompt logits of out against the float64 forward of q's NumPy unpacking, with the matmul
    inputs of the act_blocks weights quantized as ferry's CPU contract says; returns the forward without that
    quantization (None when the run failed)"""
    deq = q + ".deq"
    quant_hf.write_dequantized(q, deq, stored=True)
    model = ref_forward.Model(deq)
    model.act_blocks = act_blocks
    lg = os.path.join(root, name + ".lg")
    p = ferry("run", "-m", out, "--device", "cpu", "--prompt-ids", ",".join(map(str, prompt)), "-n", 0, "--logits", lg)
    if not f.check(p.returncode == 0, f"{name}: run failed: {p.stderr.strip()}"):
        return None
    a, b = ref_forward.read_flgt(lg).astype(np.float64), model.logits(prompt)
    model.act_blocks = {}
    c = model.logits(prompt)
    err, err_q = rel_rows(a, b), rel_rows(b, c)
    # a rounding tie of the 8-bit inputs decided otherwise (ferry's activations are f32, the reference's f64)
    # moves the logits by up to the quantization's own size: the project's bound for 8-bit matmul inputs
    tol = max(TOL, 2 * err_q)
    print(f"{name:24s} {what}, prompt logits rel err {err:.2e} (8-bit inputs' own: {err_q:.2e}, bound {tol:.2e})")
    f.check(err <= tol, f"{name}: prompt logits rel err {err:.2e} > {tol:.2e}")
    return c


# EXL2 (name, the widths its linears draw from, group size, which permutation tensors, config.json's
# quantization_config left out (older ExLlamaV2 files: found by their q_groups tensors))
EXL2_CASES = [
    ("exl2_mixed_g32", "mixed", 32, "invperm", False),
    ("exl2_low_g32", "low", 32, "invperm", False),
    ("exl2_low_g128", "low", 128, "invperm", False),
    ("exl2_mixed_g64_perm16_noconfig", "mixed", 64, "perm16", True),
    ("exl2_mixed_g128_both", "mixed", 128, "both", False),
    ("exl2_even_g48", "even", 48, "invperm", False),  # groups of 48 mix inside blocks of 32: exact F32
    # an untied model: lm_head quantized too (6 bits, one group, permuted: the head gathers its input)
    ("exl2_mixed_g32_head", "mixed", 32, "invperm", False),
]


def check_exl2_case(f, root, hf, case, prompt, widths):
    """An EXL2 checkpoint converted: each linear stored as the format its groups allow (Q4_Z for 2-4 bits, Q8_Z
    with any of 5, 6, 8; the 128 variants where every group is whole 128s; F32 where a group is not whole 32s),
    bit-identical to the NumPy unpacking once its stored permutation (the file's q_perm) is undone; the CPU
    matmul on two of them; logits within TOL. widths collects the bit widths seen."""
    name, choice, group, perm_style, no_config = case
    q = os.path.join(root, name)
    quant_hf.write(hf, q, "exl2", group=group, seed=len(name), exl2_bits=choice, perm_style=perm_style,
                   no_config=no_config)
    out = q + ".ferry"
    p = ferry("convert", q, "-o", out)
    if not f.check(p.returncode == 0, f"{name}: convert failed: {p.stderr.strip()}"):
        return
    raw, want, got = quant_hf.load_raw(q), quant_hf.dequantize(q), ferry_tensors(out)
    act_blocks, nbad, nlin, ck_bits, st_bits, nk = {}, 0, 0, 0, 0, 0
    fmts = set()
    for hname, w in want.items():
        if hname != "lm_head.weight" and (not hname.startswith("model.layers.") or not quant_hf.quantizable(hname, w)):
            continue
        parts = hname.split(".")
        layer, key = (-1, "output") if hname == "lm_head.weight" else (int(parts[2]), HF_TO_FERRY[".".join(parts[3:5])])
        base = hname[: -len(".weight")]
        fmt, v, raw_bytes = got[(layer, key + ".weight")]
        groups = quant_hf.exl2_group_rows(raw, base, w.shape[1])
        widths.update(b for b, _, _, _ in groups)
        whole = [rows % 32 == 0 for _, _, _, rows in groups]
        want_fmt = ("F32" if not all(whole) else ("Q8_Z" if max(b for b, _, _, _ in groups) > 4 else "Q4_Z") +
                    ("128" if all(rows % 128 == 0 for _, _, _, rows in groups) else ""))
        f.check(fmt == want_fmt, f"{name}: {hname} stored as {fmt}, want {want_fmt}")
        fmts.add(fmt)
        nlin += 1
        ck_bits += 8 * sum(raw[base + s].nbytes for s in (".q_weight", ".q_scale", ".q_scale_max", ".q_groups"))
        st_bits += 8 * len(raw_bytes)
        nk += w.size
        perm = check_perm(f, name, hname, got.get((layer, key + ".perm")), quant_hf.exl2_perm(raw, base))
        if perm is None:
            nbad += 1
            continue
        u = np.empty_like(v)
        u[:, perm] = v
        if u.shape != w.shape or not np.array_equal(u.view(np.uint32), w.view(np.uint32)):
            nbad += 1
            diff = np.flatnonzero(u.reshape(-1) != w.reshape(-1))
            f.check(False, f"{name}: {hname}: {diff.size} values differ from the NumPy unpacking, first {diff[:3]}")
        if fmt != "F32":
            blk = 128 if fmt.endswith("128") else 32
            act_blocks[hname] = (blk, perm)
            if layer == 1 and key in ("attn_q", "ffn_down"):
                matmul_check(f, f"{name} {hname}", fmt, blk, np.frombuffer(raw_bytes, np.uint8).reshape(w.shape[0], -1),
                             w[:, perm].astype(np.float64), np.random.default_rng(layer))
    print(f"{name:24s} stored as {'/'.join(sorted(fmts))}: {st_bits / nk:.2f} bits per weight streamed, the "
          f"checkpoint's {ck_bits / nk:.2f} (+ 32 bits per column for the permutation in both)")
    check_logits(f, root, name, q, out, act_blocks, prompt, f"{nlin - nbad}/{nlin} linears bit-identical")


def edit_config(d, **kv):
    path = os.path.join(d, "config.json")
    cfg = json.load(open(path))
    for k, v in kv.items():
        if v is None:
            cfg["quantization_config"].pop(k, None)
        else:
            cfg["quantization_config"][k] = v
    json.dump(cfg, open(path, "w"))


def replace_tensor(d, name, array):
    import safetensors.numpy
    path = os.path.join(d, "model.safetensors")
    t = safetensors.numpy.load_file(path)
    t[name] = array
    safetensors.numpy.save_file(t, path)


def edit_exl2(d, base, suffix, fn):
    """Applies fn to tensor base.suffix of an EXL2 directory (in place when fn returns None)"""
    import safetensors.numpy
    path = os.path.join(d, "output.safetensors")
    t = safetensors.numpy.load_file(path)
    a = t[f"{base}.{suffix}"].copy()
    r = fn(a)
    t[f"{base}.{suffix}"] = np.ascontiguousarray(a if r is None else r)
    safetensors.numpy.save_file(t, path)


def check_bad(f, root, hf):
    lin = "model.layers.1.mlp.down_proj"
    bad = [  # (what, writer arguments, edit, the words the message must hold)
        ("method", dict(method="gptq"), lambda d: edit_config(d, quant_method="hqq"), ["quant_method", "hqq"]),
        ("exl2 no q_groups", dict(method="exl2", skip=("q_groups",)), None, [".q_groups", "not found"]),
        ("exl2 no invperm", dict(method="exl2", skip=("q_invperm",)), None, [".q_invperm", "not found"]),
        ("exl2 bits 7", dict(method="exl2"), lambda d: edit_exl2(d, lin, "q_groups", lambda a: a.__setitem__(0, 7)),
         [lin + ".q_groups[0]", "bits 7"]),
        ("exl2 bits order", dict(method="exl2", exl2_bits="low"),
         lambda d: edit_exl2(d, lin, "q_groups", lambda a: a.__setitem__(slice(2, None, 2), 8)),
         [lin + ".q_groups[2]", "more bits"]),
        ("exl2 q_weight rows", dict(method="exl2"),
         lambda d: edit_exl2(d, lin, "q_weight", lambda a: a[:-1]), [lin + ".q_groups", "packed rows"]),
        ("exl2 q_weight width", dict(method="exl2"),
         lambda d: edit_exl2(d, lin, "q_weight", lambda a: a[:, :96]), [lin + ".q_weight", "[packed rows, 128]"]),
        ("exl2 q_scale shape", dict(method="exl2"),
         lambda d: edit_exl2(d, lin, "q_scale", lambda a: a[:, :8]), [lin + ".q_scale", "implies"]),
        ("exl2 invperm", dict(method="exl2"),
         lambda d: edit_exl2(d, lin, "q_invperm", lambda a: a.__setitem__(1, a[0])), [lin + ".q_invperm[", "permutation"]),
        ("bnb quant type", dict(method="bnb"), lambda d: edit_config(d, bnb_4bit_quant_type="int4"),
         ["bnb_4bit_quant_type", "int4"]),
        ("bnb fp4 vs nf4", dict(method="bnb"), lambda d: edit_config(d, bnb_4bit_quant_type="fp4"),
         ["quant_state.bitsandbytes__fp4", "not found"]),
        ("bnb fp4 map", dict(method="bnb", quant_type="fp4"),
         lambda d: replace_tensor(d, lin + ".weight.quant_map", quant_hf.NF4), [lin + ".weight.quant_map", "FP4"]),
        ("bnb int8 format", dict(method="bnb8"),
         lambda d: replace_tensor(d, lin + ".weight_format", np.ones((), np.uint8)), [lin + ".weight_format"]),
        ("bnb int8 no SCB", dict(method="bnb8", skip=("SCB",)), None, [".SCB", "not found"]),
        ("bnb int8 SCB", dict(method="bnb8"),
         lambda d: replace_tensor(d, lin + ".SCB", np.ones(100, np.float32)), [lin + ".SCB", "[100]"]),
        ("bnb no bits", dict(method="bnb"), lambda d: edit_config(d, load_in_4bit=False, load_in_8bit=False),
         ["load_in_8bit"]),
        ("bnb no state", dict(method="bnb", skip=("quant_state.bitsandbytes__nf4",)), None,
         ["quant_state.bitsandbytes__nf4", "not found"]),
        ("bnb no nested", dict(method="bnb", double_quant=True, skip=("nested_absmax",)), None,
         ["nested_absmax", "not found"]),
        ("bnb quant_map", dict(method="bnb"),
         lambda d: replace_tensor(d, lin + ".weight.quant_map", np.linspace(-1, 1, 16).astype(np.float32)),
         [lin + ".weight.quant_map", "NF4"]),
        ("bnb absmax", dict(method="bnb"),
         lambda d: replace_tensor(d, lin + ".weight.absmax", np.ones(100, np.float32)), [lin + ".weight.absmax"]),
        ("bits", dict(method="gptq"), lambda d: edit_config(d, bits=5), ["bits", "5"]),
        ("awq bits", dict(method="awq"), lambda d: edit_config(d, bits=8), ["bits", "8"]),
        ("group", dict(method="gptq"), lambda d: edit_config(d, group_size=48), ["group_size", "48"]),
        ("format", dict(method="gptq"), lambda d: edit_config(d, checkpoint_format="marlin"),
         ["checkpoint_format", "marlin"]),
        ("awq version", dict(method="awq"), lambda d: edit_config(d, version="gemv"), ["gemv"]),
        ("no g_idx", dict(method="gptq", desc_act="mixed", skip=("g_idx",)), None, [".g_idx", "not found"]),
        ("no qzeros", dict(method="awq", skip=("qzeros",)), None, [".qzeros", "not found"]),
        ("qweight shape", dict(method="gptq"),
         lambda d: replace_tensor(d, lin + ".qweight", np.zeros((12, 128), np.int32)), [lin + ".qweight", "[12, 128]"]),
        ("bits vs shape", dict(method="gptq"), lambda d: edit_config(d, bits=8), [".qweight", "implies"]),
        ("scales dtype", dict(method="gptq"),
         lambda d: replace_tensor(d, lin + ".scales", np.zeros((8, 128), np.float32)), [lin + ".scales", "F32"]),
        ("g_idx range", dict(method="gptq"),
         lambda d: replace_tensor(d, lin + ".g_idx", np.full(256, 9, np.int32)), [lin + ".g_idx[0] = 9"]),
    ]
    for i, (what, args, edit, words) in enumerate(bad):
        d = os.path.join(root, f"bad{i}")
        method = args.pop("method")
        quant_hf.write(hf, d, method, 4, 64 if method == "bnb" else 32, **args)
        if edit:
            edit(d)
        out = d + ".ferry"
        p = ferry("convert", d, "-o", out)
        lines = p.stderr.strip().splitlines()
        f.check(p.returncode != 0, f"bad input {what}: convert exited 0")
        f.check(len(lines) == 1 and all(w in p.stderr for w in words),
                f"bad input {what}: want one line with {words}, got {p.stderr.strip()!r}")
        f.check(not os.path.exists(out) and not os.path.exists(out + ".tmp"), f"bad input {what}: output left behind")
        print(f"bad input {what:14s} -> {lines[-1] if lines else ''}")
    d = os.path.join(root, "requant")
    quant_hf.write(hf, d, "gptq", 4, 32)
    p = ferry("convert", d, "-o", d + ".ferry", "--quant", "Q4_K_M")
    f.check(p.returncode != 0 and "already quantized" in p.stderr, f"--quant on GPTQ: {p.stderr.strip()!r}")


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        hf = base_model(root)
        rnd = random.Random(19)
        prompt = [rnd.randrange(320) for _ in range(24)]
        for case in CASES:
            check_case(f, root, hf, case, prompt)
        widths = set()
        hf_untied = base_model(root, tied=False)
        for case in EXL2_CASES:
            check_exl2_case(f, root, hf_untied if case[0].endswith("_head") else hf, case, prompt, widths)
        f.check(widths == {8, 6, 5, 4, 3, 2}, f"exl2: the cases' groups have bits {sorted(widths)}, want all six")
        check_bad(f, root, hf)
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
