"""`ferry convert MODEL.gguf` against gguf-py (the `gguf` package) and the NumPy reference:

1. A synthetic llama GGUF written with gguf-py's GGUFWriter: every weight format ferry stores (F32, F16, BF16,
   Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K, Q4_1, Q5_1, Q2_K, Q3_K, IQ4_NL, IQ4_XS, MXFP4, TQ1_0, TQ2_0, the grid IQ
   types IQ2_XXS .. IQ1_M; random blocks with sane scales), an odd vocabulary, metadata of every GGUF value type.
   After conversion every tensor's bytes equal the GGUF's byte for byte, the
   hyper-parameters are the metadata's, tokenizer.gguf holds the tokenizer keys as written, and ferry's logits
   on it match the float64 NumPy reference reading the same GGUF (tools/ref_forward.py --gguf, gguf-py's
   dequantization, matmul inputs quantized as ferry's CPU does) within 1e-4, or twice that reference's distance
   from its unquantized self where a rounding tie went the other way (q8_err). The same model written as a split set of 3 files converts to the same files.
2. The same weights from the HF original and from its GGUF (tools/hf_to_gguf.py: llama's q/k permutation,
   Gemma's +1 in the norms, llama3's rope_freqs, linear rope scaling) give the same logits (<= 1e-5) for llama,
   llama3, llama with linear rope, qwen2 and Gemma 3; a Q8_0 GGUF matches the reference on it (as in 1).
   The mixtures of experts (qwen3moe, qwen3moe_nonorm, mixtral: GGUF llama with expert_count, qwen2moe with its
   shared expert) too, and every
   token's experts at every layer (FERRY_ROUTES) are the reference's: in order from the HF directory and the
   F32 GGUF; from the Q8_0 one (and gpt-oss's MXFP4 experts) at least 90% as sets (a rounding tie of the 8-bit inputs, which q8_err allows
   for, can move a near-equal pair of experts across the top-k border).
3. Bad input: truncated file, wrong magic, absurd counts and dims, an offset past the end, an unsupported
   tensor type, an unknown tensor, a missing key: one line naming the file, exit 1, no output left behind.
   Mixtures of experts: expert_used_count above expert_count, an expert_count the stacked experts contradict,
   no expert_count on an architecture ferry runs with experts; from HF a missing router, num_experts_per_tok above
   num_experts, a num_experts the router contradicts. gpt-oss: a layer without attn_sinks (GGUF) or
   self_attn.sinks (HF), expert counts the file contradicts, a swiglu_limit other than 7.
4. gpt-oss's HF forms: the fused experts as x . W or as [out, in] give the same files; MXFP4 _blocks/_scales
   experts (as released) give the bytes of the GGUF llama.cpp's converter writes; --quant keeps the experts'
   biases.
"""

import json
import os
import struct
import zlib

import numpy as np
import safetensors.numpy

from ferrytest import Failures, ROOT, ferry, gen_tiny_model, ref_forward, scratch, rel_rows

import gguf  # noqa: E402
import hf_to_gguf  # noqa: E402  (tools/ is on the path through ferrytest)

T = gguf.GGMLQuantizationType
FORMATS = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q5_0", "Q4_K", "Q5_K", "Q6_K", "Q4_1", "Q5_1", "Q2_K", "Q3_K",
           "IQ4_NL", "IQ4_XS", "MXFP4", "TQ1_0", "TQ2_0"]
# grid IQ types (issue 18): any bytes are a valid block; d (f16 at 0, IQ1_M's in its scale nibbles) sized so that
# the weights are O(0.05) like the others' (the value is d * f * s * c: src/layout/quant_iq.h)
IQ_D = {"IQ2_XXS": (5e-4, 2e-3), "IQ2_XS": (5e-4, 2e-3), "IQ2_S": (5e-4, 2e-3), "IQ3_XXS": (2e-4, 8e-4),
        "IQ3_S": (2e-4, 8e-4), "IQ1_S": (3e-3, 1e-2), "IQ1_M": (3e-3, 1e-2)}
FORMATS += list(IQ_D)


def random_blocks(rng, qtype, rows, cols):
    """Random but valid blocks: random quant bytes, f16 scales in a sane range (so the dequantized weights are
    finite and O(0.1))."""
    bvals, bbytes = gguf.GGML_QUANT_SIZES[qtype]
    nb = rows * cols // bvals
    raw = rng.integers(0, 256, size=(nb, bbytes), dtype=np.uint8)

    def f16(n, lo, hi):
        return (rng.uniform(lo, hi, n) * rng.choice([-1, 1], n)).astype(np.float16).view(np.uint8).reshape(n, 2)

    if qtype in (T.Q8_0, T.Q4_0, T.Q5_0):
        raw[:, 0:2] = f16(nb, 1e-3, 2e-2)
    elif qtype in (T.Q4_K, T.Q5_K):
        raw[:, 0:2] = np.abs(f16(nb, 1e-3, 4e-3).view(np.float16)).view(np.uint8)
        raw[:, 2:4] = np.abs(f16(nb, 1e-3, 4e-3).view(np.float16)).view(np.uint8)
    elif qtype == T.Q6_K:
        raw[:, 208:210] = f16(nb, 1e-4, 5e-4)
    elif qtype == T.IQ1_M:
        d = f16(nb, *IQ_D[qtype.name]).view(np.uint16).reshape(nb)
        for i in range(4):  # d's nibble i is the top nibble of the u16 scale word at 48 + 2i
            raw[:, 49 + 2 * i] = (raw[:, 49 + 2 * i] & 15) | (((d >> (4 * i)) & 15) << 4).astype(np.uint8)
    elif qtype.name in IQ_D:
        raw[:, 0:2] = f16(nb, *IQ_D[qtype.name])
    elif qtype in (T.Q4_1, T.Q5_1):
        raw[:, 0:2] = f16(nb, 1e-3, 4e-3)
        raw[:, 2:4] = f16(nb, 1e-3, 2e-2)
    elif qtype == T.Q2_K:
        raw[:, 80:82] = np.abs(f16(nb, 1e-3, 4e-3).view(np.float16)).view(np.uint8)
        raw[:, 82:84] = np.abs(f16(nb, 1e-3, 4e-3).view(np.float16)).view(np.uint8)
    elif qtype == T.Q3_K:
        raw[:, 108:110] = f16(nb, 1e-4, 5e-4)
    elif qtype == T.IQ4_NL:
        raw[:, 0:2] = f16(nb, 1e-4, 5e-4)
    elif qtype == T.IQ4_XS:
        raw[:, 0:2] = f16(nb, 1e-5, 5e-5)
    elif qtype == T.MXFP4:
        raw[:, 0] = rng.integers(119, 123, nb)  # 2^(e - 128): 2^-9 .. 2^-6
    elif qtype in (T.TQ1_0, T.TQ2_0):
        at = 52 if qtype == T.TQ1_0 else 64
        raw[:, at:at + 2] = f16(nb, 1e-2, 4e-2)
    return raw.reshape(rows, cols // bvals * bbytes)


def weight(rng, fmt, rows, cols):
    """(data for GGUFWriter, raw_dtype or None)."""
    if fmt == "F32":
        return (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32), None
    if fmt == "F16":
        return (rng.standard_normal((rows, cols)) * 0.05).astype(np.float16), None
    if fmt == "BF16":
        bits = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32).view(np.uint32) >> 16
        return bits.astype(np.uint16).view(np.uint8).reshape(rows, cols * 2), T.BF16
    q = getattr(T, fmt)
    return random_blocks(rng, q, rows, cols), q


def write_synthetic(path, rng, split_max_tensors=0):
    """llama, D 256 (K-quant rows need 256), 5 layers, H 4 x Dh 64, Hkv 2, F 512, V 300. Layer l's matrices cycle
    through the formats so each appears in q/k/v/o/gate/up/down positions; odd vocab and output rows."""
    D, L, H, Hkv, Dh, F, V = 256, 5, 4, 2, 64, 512, 301
    w = gguf.GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    w.add_context_length(512)
    w.add_embedding_length(D)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(50000.0)
    # metadata of every value type (ferry must read what it needs and carry the rest)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 1.5)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo")
    w.add_uint64("test.u64", 2**63)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", 2.25)
    w.add_array("test.arr_i32", [1, -2, 3])
    w.add_array("test.arr_str", ["a", "", "ccc"])
    toks = [f"<t{i}>" for i in range(V)]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(toks)
    w.add_token_types([1] * V)
    w.add_token_merges([])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    tensors = {}

    def add(name, data, raw_dtype, shape=None):
        tensors[name] = (data, raw_dtype)
        if raw_dtype is None:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_dtype=raw_dtype)  # the byte shape; gguf-py derives the element shape

    def matrix(name, fmt, rows, cols):
        data, q = weight(rng, fmt, rows, cols)
        add(name, data, q, (rows, cols))

    matrix("token_embd.weight", "Q8_0", V, D)
    add("output_norm.weight", (1 + 0.1 * rng.standard_normal(D)).astype(np.float32), None)
    matrix("output.weight", "Q6_K", V, D)
    k = 0
    for l in range(L):
        p = f"blk.{l}."
        add(p + "attn_norm.weight", (1 + 0.1 * rng.standard_normal(D)).astype(np.float32), None)
        add(p + "ffn_norm.weight", (1 + 0.1 * rng.standard_normal(D)).astype(np.float32), None)
        for name, rows, cols in (("attn_q", H * Dh, D), ("attn_k", Hkv * Dh, D), ("attn_v", Hkv * Dh, D),
                                 ("attn_output", D, H * Dh), ("ffn_gate", F, D), ("ffn_up", F, D),
                                 ("ffn_down", D, F)):
            matrix(p + name + ".weight", FORMATS[k % len(FORMATS)], rows, cols)
            k += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


def check_synthetic(f, root):
    rng = np.random.default_rng(4)
    path = os.path.join(root, "synth.gguf")
    write_synthetic(path, rng)
    out = os.path.join(root, "synth.ferry")
    p = ferry("convert", path, "-o", out)
    if not f.check(p.returncode == 0, f"synthetic convert failed: {p.stderr.strip()}"):
        return
    rd = gguf.GGUFReader(path)
    m = json.load(open(os.path.join(out, "manifest.json")))
    where = {}  # GGUF name -> manifest entry (file, offset, bytes, format)
    for t in m["units"]["embed"] + m["units"]["head"]:
        where.setdefault(t["name"], t)
    for l, unit in enumerate(m["units"]["layers"]):
        for t in unit:
            where[f"blk.{l}.{t['name']}"] = t
    same = formats = 0
    for t in rd.tensors:
        e = where.get(t.name)
        if not f.check(e is not None, f"tensor {t.name} missing after conversion"):
            continue
        with open(os.path.join(out, e["file"]), "rb") as fh:
            fh.seek(e["offset"])
            got = fh.read(e["bytes"])
        same += f.check(got == bytes(t.data.tobytes()), f"{t.name}: bytes differ from the GGUF")
        formats += f.check(e["format"] == t.tensor_type.name, f"{t.name}: format {e['format']} != {t.tensor_type.name}")
    print(f"synthetic: {same} tensors byte-identical, {formats} formats kept ({len(rd.tensors)} tensors)")
    hp = m["hparams"]
    want = dict(arch="llama", n_layers=5, d_model=256, n_heads=4, n_kv_heads=2, head_dim=64, ffn_dim=512,
                vocab=301, max_pos=512, bos_token_id=1, eos_token_ids=[2], tied_embeddings=False)
    for k, v in want.items():
        f.check(hp.get(k) == v, f"hparams.{k} = {hp.get(k)}, want {v}")
    f.check(hp["rope"]["style"] == "norm" and hp["rope"]["theta"] == 50000.0, f"rope {hp['rope']}")
    f.check(abs(hp["rms_eps"] - 1e-5) < 1e-12, f"rms_eps {hp['rms_eps']}")
    tk = gguf.GGUFReader(os.path.join(out, "tokenizer.gguf"))
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.model", "tokenizer.ggml.bos_token_id",
                "tokenizer.chat_template"):
        f.check(key in tk.fields and tk.fields[key].contents() == rd.fields[key].contents(),
                f"tokenizer.gguf: {key} differs")
    f.check(open(os.path.join(out, "chat_template.jinja")).read() == rd.fields["tokenizer.chat_template"].contents(),
            "chat_template.jinja differs from tokenizer.chat_template")
    # the same model as a split set (NAME-0000i-of-0000N.gguf): the conversion of its first file is identical
    split = os.path.join(root, "split.gguf")
    write_synthetic(split, np.random.default_rng(4), split_max_tensors=20)
    shards = sorted(x for x in os.listdir(root) if x.startswith("split-") and x.endswith(".gguf"))
    out2 = os.path.join(root, "split.ferry")
    p = ferry("convert", os.path.join(root, shards[0]) if shards else split, "-o", out2)
    if f.check(len(shards) == 3 and p.returncode == 0, f"split set {shards}: convert failed: {p.stderr.strip()}"):
        m2 = json.load(open(os.path.join(out2, "manifest.json")))
        f.check(m2["units"] == m["units"] and m2["hparams"] == hp, "split set converts differently from one file")
        for name in os.listdir(out):
            if name.endswith(".bin"):
                f.check(open(os.path.join(out, name), "rb").read() == open(os.path.join(out2, name), "rb").read(),
                        f"split set: {name} differs")
        print(f"split set of {len(shards)} files: same manifest and files as the single file")
    ids = [int(x) for x in np.random.default_rng(5).integers(0, 301, 12)]
    lg = os.path.join(root, "synth.lg")
    p = ferry("run", "-m", out, "--prompt-ids", ",".join(map(str, ids)), "-n", 0, "--logits", lg)
    if f.check(p.returncode == 0, f"synthetic run failed: {p.stderr.strip()}"):
        got = ref_forward.read_flgt(lg).astype(np.float64)
        err, lim = q8_err(got, path, ids)
        print(f"synthetic: every format in one model, ferry vs NumPy reference on the GGUF: rel err {err:.2e}")
        f.check(err <= lim, f"synthetic logits rel err {err:.2e} > {lim:.2e}")


def q8_err(got, gguf_path, ids):
    """ferry's logits against the NumPy reference on the GGUF that quantizes matmul inputs as ferry's CPU
    does (src/kernels/cpu/qdot.h), and the limit: 1e-4, or where a rounding tie went the other way in ferry's
    f32 forward (one code off by one; these random tiny models grow that to the size of the whole
    quantization's effect), twice the reference's own distance from its unquantized self."""
    ref = ref_forward.Model.from_gguf(gguf_path, act_q8=True).logits(ids)
    noise = rel_rows(ref, ref_forward.Model.from_gguf(gguf_path).logits(ids))
    return rel_rows(got, ref), max(1e-4, 2 * noise)


def check_hf_vs_gguf(f, root):
    for v in ("llama_tied_gqa", "llama3_rope", "llama_linear_rope", "qwen2_bias", "qwen3", "gemma3", "gemma3_softcap",
              "qwen3moe", "qwen3moe_nonorm", "mixtral", "qwen2moe", "gptoss"):
        hf = os.path.join(root, v)
        gen_tiny_model.generate(v, hf, 0)
        outs = {}
        kinds = ("hf", "F32", "Q8_0") + (("MXFP4",) if v == "gptoss" else ())  # gpt-oss: MXFP4 experts
        for kind in kinds:
            out = os.path.join(root, f"{v}.{kind}.ferry")
            src = hf
            if kind != "hf":
                src = os.path.join(root, f"{v}.{kind}.gguf")
                hf_to_gguf.convert(hf, src, kind)
            p = ferry("convert", src, "-o", out)
            if f.check(p.returncode == 0, f"{v} {kind}: convert failed: {p.stderr.strip()}"):
                outs[kind] = (src, out)
        if len(outs) < len(kinds):
            continue
        rnd = np.random.default_rng(zlib.crc32(v.encode()))  # not hash(): salted per process
        ids = [int(x) for x in rnd.integers(3, ref_forward.Model(hf).vocab, 20)]
        lg = {}
        for kind, (src, out) in outs.items():
            path = os.path.join(root, f"{v}.{kind}.lg")
            routes = os.path.join(root, f"{v}.{kind}.routes")
            p = ferry("run", "-m", out, "--prompt-ids", ",".join(map(str, ids)), "-n", 0, "--logits", path,
                      env={"FERRY_ROUTES": routes})
            if f.check(p.returncode == 0, f"{v} {kind}: run failed: {p.stderr.strip()}"):
                lg[kind] = ref_forward.read_flgt(path).astype(np.float64)
                check_routes(f, f"{v} {kind}", hf if kind in ("hf", "F32") else src, kind, ids, routes)
        if len(lg) < len(kinds):
            continue
        e1 = rel_rows(lg["F32"], lg["hf"])
        e2, lim = q8_err(lg["Q8_0"], outs["Q8_0"][0], ids)
        print(f"{v:16s} GGUF F32 vs HF original {e1:.2e}; Q8_0 GGUF vs reference on it {e2:.2e}")
        f.check(e1 <= 1e-5, f"{v}: GGUF vs HF logits {e1:.2e} > 1e-5")
        f.check(e2 <= lim, f"{v}: Q8_0 GGUF vs reference {e2:.2e} > {lim:.2e}")
        if "MXFP4" in lg:
            e3, lim3 = q8_err(lg["MXFP4"], outs["MXFP4"][0], ids)
            print(f"{v:16s} MXFP4 GGUF (experts) vs reference on it {e3:.2e}")
            f.check(e3 <= lim3, f"{v}: MXFP4 GGUF vs reference {e3:.2e} > {lim3:.2e}")


def check_routes(f, what, src, kind, ids, routes):
    """A mixture of experts' routes (ferry's FERRY_ROUTES dump) against the reference's: on the HF weights for
    the HF and F32 conversions (in order), on the Q8_0 GGUF with ferry's 8-bit inputs emulated (as sets)."""
    quant = kind not in ("hf", "F32")
    model = ref_forward.Model.from_gguf(src, act_q8=True) if quant else ref_forward.Model(src)
    if not model.moe:
        return
    model.logits(ids)
    bad = ref_forward.compare_routes(model, ref_forward.read_routes(routes), len(ids), ordered=not quant)
    n = len(model.routes)
    # Q8_0: a code rounded the other way (the tie q8_err allows for) can move a near-equal pair of experts
    # across the top-k border; most choices must still be the reference's.
    ok = not bad if not quant else len(bad) <= n // 10
    f.check(n == len(ids) * model.n_layers and ok, f"{what}: routes differ from the reference's: {bad[:3]}")
    print(f"{what:22s} routes: {n - len(bad)}/{n} (layer, token) choices equal")


def kv_patch(data, path, key, value):
    """data with the scalar metadata value of key (a u32 in the tiny models) replaced."""
    field = gguf.GGUFReader(path).fields[key]
    at = int(field.offset) + sum(int(p.nbytes) for p in field.parts[:-1])
    return data[:at] + struct.pack("<I", value) + data[at + 4:]


def check_moe_bad_input(f, root):
    hf = os.path.join(root, "moe_bad_hf")
    gen_tiny_model.generate("qwen3moe", hf, 0)
    good = os.path.join(root, "moe_bad.gguf")
    hf_to_gguf.convert(hf, good, "F32")
    data = open(good, "rb").read()
    cases = {
        "expert_used_count > expert_count": (kv_patch(data, good, "qwen3moe.expert_used_count", 9), "expert_used_count"),
        "expert_count vs the experts": (kv_patch(data, good, "qwen3moe.expert_count", 6), "ffn_gate_inp"),
    }
    cases["expert_count 0 for qwen3moe"] = (kv_patch(data, good, "qwen3moe.expert_count", 0), "with experts")
    for what, (blob, want) in cases.items():
        src = os.path.join(root, "bad.gguf")
        with open(src, "wb") as fh:
            fh.write(blob)
        check_refused(f, what, src, os.path.join(root, "bad.ferry"), [want, "bad.gguf"])
    check_hf_refused(f, root, "qwen3moe", (
        ("router missing", "model.layers.1.mlp.gate.weight", "mlp.gate.weight not found"),
        ("num_experts_per_tok > num_experts", {"num_experts_per_tok": 9}, "num_experts_per_tok 9"),
        ("num_experts vs the router", {"num_experts": 6}, "mlp.gate.weight has shape [8, 64]")))


def check_hf_refused(f, root, variant, cases):
    """Each case (what, edit, want): the tiny HF variant with a tensor dropped (edit: its name) or config.json
    keys changed (edit: a dict), refused in one line containing want."""
    for what, edit, want in cases:
        bad = os.path.join(root, "bad_" + what.replace(" ", "_"))
        gen_tiny_model.generate(variant, bad, 0)
        if isinstance(edit, str):
            st = os.path.join(bad, "model.safetensors")
            w = {k: v for k, v in safetensors.numpy.load_file(st).items() if k != edit}
            safetensors.numpy.save_file(w, st, metadata={"format": "pt"})
        else:
            cfg_path = os.path.join(bad, "config.json")
            cfg = dict(json.load(open(cfg_path)), **edit)
            json.dump(cfg, open(cfg_path, "w"))
        check_refused(f, what, bad, bad + ".ferry", [want])


def check_gptoss_layouts(f, root):
    """gpt-oss's fused experts as [E, D, 2 Fe] / [E, Fe, D] (x . W, transformers 4.55's layout) and swapped to
    [E, 2 Fe, D] / [E, D, Fe] ([out, in]) convert to the same bytes."""
    outs = []
    for swap in (False, True):
        hf = os.path.join(root, f"gptoss_layout_{int(swap)}")
        gen_tiny_model.generate("gptoss", hf, 0)
        if swap:
            st = os.path.join(hf, "model.safetensors")
            spec = gen_tiny_model.VARIANTS["gptoss"]
            w = gen_tiny_model.make_weights(spec, gen_tiny_model.variant_rng("gptoss", 0))
            w = {k: np.ascontiguousarray(v.transpose(0, 2, 1)) if k.endswith(("gate_up_proj", "down_proj")) else v
                 for k, v in w.items()}
            safetensors.numpy.save_file(w, st, metadata={"format": "pt"})
        outs.append(hf + ".ferry")
        p = ferry("convert", hf, "-o", outs[-1])
        f.check(p.returncode == 0, f"gpt-oss layout swapped={swap}: {p.stderr.strip()}")
    same = all(open(os.path.join(outs[0], n), "rb").read() == open(os.path.join(outs[1], n), "rb").read()
               for n in os.listdir(outs[0]) if n.endswith(".bin"))
    print(f"gpt-oss experts as x . W and as [out, in]: {'the same' if same else 'DIFFERENT'} files")
    f.check(same, "gpt-oss: the swapped expert layout converts to other bytes")
    # --quant quantizes the matrices, never the experts' biases [E, n] (added to the outputs, kept as stored)
    q = os.path.join(root, "gptoss_q8.ferry")
    p = ferry("convert", os.path.dirname(outs[0]) + "/gptoss_layout_0", "-o", q, "--quant", "Q8_0")
    if f.check(p.returncode == 0, f"gpt-oss --quant Q8_0: {p.stderr.strip()}"):
        fmts = {t["name"]: t["format"] for t in json.load(open(os.path.join(q, "manifest.json")))["units"]["layers"][0]}
        f.check(all(fmts[f"ffn_{k}_exps.bias"] == "BF16" and fmts[f"ffn_{k}_exps.weight"] == "Q8_0"
                    for k in ("gate", "up", "down")), f"gpt-oss --quant Q8_0: formats {fmts}")
        p = ferry("run", "-m", q, "--prompt-ids", "3,1,4,1,5", "-n", 2, "--ignore-eos")
        f.check(p.returncode == 0 and len(p.stdout.split()) == 2, f"gpt-oss --quant Q8_0: run {p.stderr.strip()}")


def hf_mxfp4_blocks(w):
    """The released checkpoints' MXFP4 form of an [E, out, in] float matrix stack: (blocks U8 [E, out, in/32, 16],
    byte i of a block value 2i low and 2i + 1 high; scales U8 [E, out, in/32]), quantized by gguf-py (whose
    blocks put value j low and j + 16 high in byte j, after the scale byte)."""
    E, rows, cols = w.shape
    q = gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), T.MXFP4).reshape(E, rows, cols // 32, 17)
    vals = np.concatenate([q[..., 1:] & 15, q[..., 1:] >> 4], axis=-1)  # the 32 codes of a block, in order
    return (vals[..., 0::2] | (vals[..., 1::2] << 4)).astype(np.uint8), np.ascontiguousarray(q[..., 0])


def expert_bytes(model, layer, name):
    """The stacked experts' bytes of a tensor of a ferry model, expert by expert (through its stride)."""
    t = next(t for t in json.load(open(os.path.join(model, "manifest.json")))["units"]["layers"][layer]
             if t["name"] == name)
    data = open(os.path.join(model, f"layer.{layer:03d}.bin"), "rb").read()
    per = t["bytes"] // t["shape"][0]
    return t["format"], b"".join(data[t["offset"] + e * t.get("expert_stride", per):][:per] for e in range(t["shape"][0]))


def check_gptoss_hf_mxfp4(f, root):
    """gpt-oss as released on the hub: the experts as MXFP4 _blocks/_scales (made here from the tiny model with
    gguf-py's quantizer) convert to MXFP4 experts byte-identical to those of the GGUF llama.cpp's converter would
    write from the same values (tools/hf_to_gguf.py --type MXFP4), and the model runs."""
    hf = os.path.join(root, "gptoss_mx_hf")
    gen_tiny_model.generate("gptoss", hf, 0)
    st = os.path.join(hf, "model.safetensors")
    w = gen_tiny_model.make_weights(gen_tiny_model.VARIANTS["gptoss"], gen_tiny_model.variant_rng("gptoss", 0))
    gg = os.path.join(root, "gptoss_mx_ref.gguf")
    hf_to_gguf.convert(hf, gg, "MXFP4")
    for k in [k for k in w if k.endswith(("gate_up_proj", "down_proj"))]:
        # [E, in, out] as x . W -> [E, out, in]; gate_up's out rows stay interleaved (gate even, up odd)
        w[k + "_blocks"], w[k + "_scales"] = hf_mxfp4_blocks(w.pop(k).astype(np.float32).transpose(0, 2, 1))
    safetensors.numpy.save_file(w, st, metadata={"format": "pt"})
    outs = [hf + ".ferry", gg + ".ferry"]
    for src, out in zip((hf, gg), outs):
        p = ferry("convert", src, "-o", out)
        if not f.check(p.returncode == 0, f"gpt-oss MXFP4 {src}: convert failed: {p.stderr.strip()}"):
            return
    same = all(expert_bytes(outs[0], l, f"ffn_{k}_exps.weight") == expert_bytes(outs[1], l, f"ffn_{k}_exps.weight")
               and expert_bytes(outs[0], l, f"ffn_{k}_exps.weight")[0] == "MXFP4"
               for l in range(4) for k in ("gate", "up", "down"))
    print(f"gpt-oss HF MXFP4 _blocks/_scales: experts {'byte-identical to' if same else 'DIFFERENT from'} the GGUF's")
    f.check(same, "gpt-oss: the HF MXFP4 experts differ from the GGUF's")
    p = ferry("run", "-m", outs[0], "--prompt-ids", "3,1,4,1,5", "-n", 2, "--ignore-eos")
    f.check(p.returncode == 0 and len(p.stdout.split()) == 2, f"gpt-oss HF MXFP4: run {p.stderr.strip()}")


def check_gptoss_bad_input(f, root):
    """gpt-oss: a layer without its sinks (GGUF and HF), counts the file contradicts, one line each."""
    hf = os.path.join(root, "gptoss_bad_hf")
    gen_tiny_model.generate("gptoss", hf, 0)
    good = os.path.join(root, "gptoss_bad.gguf")
    hf_to_gguf.convert(hf, good, "F32")
    nosinks = os.path.join(root, "gptoss_nosinks.gguf")
    keep = hf_to_gguf.gptoss_tensors
    hf_to_gguf.gptoss_tensors = lambda name, arr, q: [t for t in keep(name, arr, q) if t[0] != "blk.1.attn_sinks.weight"]
    try:
        hf_to_gguf.convert(hf, nosinks, "F32")
    finally:
        hf_to_gguf.gptoss_tensors = keep
    check_refused(f, "gpt-oss GGUF without attn_sinks", nosinks, os.path.join(root, "bad.ferry"),
                  ["blk.1.attn_sinks.weight is missing", "gptoss_nosinks.gguf"])
    data = open(good, "rb").read()
    for what, key, val, want in (("gpt-oss expert_count vs the experts", "gpt-oss.expert_count", 6, "ffn_gate_inp"),
                                 ("gpt-oss expert_used_count > expert_count", "gpt-oss.expert_used_count", 5,
                                  "expert_used_count")):
        src = os.path.join(root, "bad.gguf")
        with open(src, "wb") as fh:
            fh.write(kv_patch(data, good, key, val))
        check_refused(f, what, src, os.path.join(root, "bad.ferry"), [want, "bad.gguf"])
    check_hf_refused(f, root, "gptoss", (
        ("gpt-oss HF without sinks", "model.layers.1.self_attn.sinks", "model.layers.1.self_attn.sinks missing"),
        ("gpt-oss num_local_experts vs router", {"num_local_experts": 6}, "mlp.router.weight has shape [4, 96]"),
        ("gpt-oss top-k > experts", {"num_experts_per_tok": 5}, "num_experts_per_tok 5"),
        ("gpt-oss swiglu_limit", {"swiglu_limit": 8.0}, "swiglu_limit 8")))


def check_refused(f, what, src, out, wants):
    p = ferry("convert", src, "-o", out)
    err = p.stderr.strip().splitlines()
    last = err[-1] if err else ""
    ok = (p.returncode == 1 and len(err) == 1 and all(w in last for w in wants) and not os.path.exists(out)
          and not os.path.exists(out + ".tmp"))
    f.check(ok, f"bad input '{what}': rc {p.returncode}, stderr {p.stderr.strip()!r}, want {wants}")
    print(f"bad input {what:34s} -> {last}")


def check_bad_input(f, root):
    good = os.path.join(root, "bad_base.gguf")
    hf = os.path.join(root, "bad_hf")
    gen_tiny_model.generate("llama_tied_gqa", hf, 0)
    hf_to_gguf.convert(hf, good, "F32")
    data = open(good, "rb").read()
    rd = gguf.GGUFReader(good)
    first = rd.tensors[0]
    cases = {
        "truncated": data[: len(data) // 2],
        "header only": data[:20],
        "magic": b"GGUX" + data[4:],
        "version": data[:4] + struct.pack("<I", 7) + data[8:],
        "tensor count": data[:8] + struct.pack("<Q", 2**60) + data[16:],
        "kv count": data[:16] + struct.pack("<Q", 2**40) + data[24:],
    }
    # a tensor's dims, offset and type, located through gguf-py's parse of the tensor info
    info = first.field  # ReaderField of the tensor info: parts [name_len, name, n_dims, dims..., type, offset]
    off_dims = int(info.offset) + 8 + len(first.name.encode()) + 4
    n_dims = len(first.shape)
    off_type = off_dims + 8 * n_dims
    off_offset = off_type + 4

    def patch(at, fmt, val):
        return data[:at] + struct.pack(fmt, val) + data[at + struct.calcsize(fmt):]

    cases["absurd dim"] = patch(off_dims, "<Q", 2**50)
    cases["offset past end"] = patch(off_offset, "<Q", len(data) * 4 // 32 * 32)
    cases["unknown type"] = patch(off_type, "<I", 99)
    cases["unsupported type Q8_1"] = patch(off_type, "<I", int(T.Q8_1))
    cases["unknown tensor"] = data.replace(b"blk.0.attn_k.weight", b"blk.0.attn_x.weight", 1)
    cases["missing key"] = data.replace(b"llama.block_count", b"llama.block_xount", 1)
    for what, blob in cases.items():
        src = os.path.join(root, "bad.gguf")
        out = os.path.join(root, "bad.ferry")
        with open(src, "wb") as fh:
            fh.write(blob)
        p = ferry("convert", src, "-o", out)
        err = p.stderr.strip().splitlines()
        last = err[-1] if err else ""
        ok = p.returncode == 1 and "bad.gguf" in last and not os.path.exists(out) and not os.path.exists(out + ".tmp")
        f.check(ok, f"bad input '{what}': rc {p.returncode}, stderr {last!r}, output left: {os.path.exists(out)}")
        print(f"bad input {what:22s} -> {last}")


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        check_synthetic(f, root)
        check_hf_vs_gguf(f, root)
        check_bad_input(f, root)
        check_moe_bad_input(f, root)
        check_gptoss_bad_input(f, root)
        check_gptoss_layouts(f, root)
        check_gptoss_hf_mxfp4(f, root)
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
