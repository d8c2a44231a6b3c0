#!/usr/bin/env python3
"""GPTQ and AWQ checkpoints written and read in NumPy, from their published layouts (issue 19), for ferry's tests.

    python3 tools/quant_hf.py gptq SRC_HF OUT [--bits 4] [--group 128] [--sym] [--v2] [--desc-act mixed|mixed_shared|blocks]
    python3 tools/quant_hf.py awq SRC_HF OUT [--group 128]
    python3 tools/quant_hf.py bnb SRC_HF OUT [--group 64 (the blocksize)] [--double-quant] [--fp4]
    python3 tools/quant_hf.py bnb8 SRC_HF OUT                (bitsandbytes LLM.int8: weight int8, SCB)
    python3 tools/quant_hf.py exl2 SRC_HF OUT [--group 32] [--exl2-bits mixed|low] (ExLlamaV2's mixed-bit EXL2)
    python3 tools/quant_hf.py dequant QUANT_HF OUT_HF        (the NumPy unpacking, as an F32 checkpoint)

write() quantizes every `*_proj.weight` of the layers of a Hugging Face directory (round to nearest per group,
symmetric or not: any valid codes serve, the test is the reading) and writes P.qweight / P.qzeros / P.scales
(/ P.g_idx) with config.json's quantization_config; the other tensors and files are copied. dequantize() reads
such a directory back into {name: float32 array}, each linear s[g, n] * (q[k, n] - z[g, n]) (exact in float32).

Layouts (AutoGPTQ / GPTQModel qlinear, AutoAWQ gemm):
  GPTQ qweight int32 [K bits / 32, N]: column n a little-endian bit stream along K, value k at bit bits * k
       (2/4/8 bits: word k // (32 / bits), shift bits * (k % (32 / bits)); 3 bits: 32 values per 3 words);
       qzeros int32 [G, N bits / 32] the same along N; scales f16 [G, N]; g_idx int32 [K] (group of row k).
       v1 ("gptq") stores zero - 1 and readers take (stored & mask) + 1, so a zero of 0 reads as 2^bits;
       v2 ("gptq_v2") stores the zero.
  AWQ  qweight int32 [K, N / 8], qzeros int32 [G, N / 8]: word c packs columns 8c + ORDER[i] in nibble i,
       ORDER = 0 2 4 6 1 3 5 7; scales f16 [G, N]; group of row k is k // group.
  bitsandbytes NF4 (transformers' serialization of Params4bit / QuantState): P.weight uint8 [N K / 2, 1] packs the
       flattened row-major weight, element 2i in the high nibble of byte i; per block of `blocksize` an absmax,
       P.weight.absmax f32, or with double quantization uint8 codes into P.weight.nested_quant_map (256 f32)
       times P.weight.nested_absmax (f32 per nested_blocksize blocks) plus nested_offset (the mean absmax);
       P.weight.quant_map the 16 NF4 values; P.weight.quant_state.bitsandbytes__nf4 uint8 bytes of the JSON
       {quant_type, blocksize, dtype, shape, nested_blocksize, nested_offset, nested_dtype}. Value: NF4[q] * absmax
       in float32 (bitsandbytes then casts to its compute dtype; these tests keep the float32 product).
       The nested map written here is a linear one (bitsandbytes' dynamic map is a file's data all the same).
  bitsandbytes FP4: the same with quant_type fp4, quant_map FP4 (fp4_code) and .quant_state.bitsandbytes__fp4.
  bitsandbytes LLM.int8 (Linear8bitLt's state dict): P.weight int8 [N, K] = round(W 127 / row absmax), P.SCB
       f32 [N] the row absmax, P.weight_format uint8 0 (row-major); W = CB SCB / 127.
  EXL2 (ExLlamaV2's conversion/adaptivegptq.py pack, cuda/pack_tensor.cu, its loader ext.py make_q_matrix and
       cuda/quant/qdq_util.cuh dq_scale): the K rows of W^T in act-order (perm: stored row j is input row
       perm[j]) cut into groups, bits non-increasing (8, 6, 5, 4, 3, 2), each of group_size rows (the last one
       what is left); P.q_weight int32 [qrows, N] packs group g's rows from packed row r_g as a b-bit
       little-endian stream along K per column (value i at bit b i of the words q_weight[r_g.., n], so 3/5/6-bit
       values straddle words); P.q_groups int16 [2 G] = (b, r_g) per group; P.q_scale int32 [G, N / 8] the
       4-bit qs of column 8c + i in nibble i of word c; P.q_scale_max f16 [G]; P.q_invperm int32 [K] the inverse
       of perm (older files: P.q_perm int16). The loader divides q_scale_max by 256 in f16; the scale is
       S = f16(f16((qs + 1)^2) f16(q_scale_max / 256)) and w = (q - 2^(b-1)) S (exact in float32).
       config.json: quantization_config {quant_method "exl2", version, bits (the average), head_bits,
       calibration}, which ExLlamaV2 writes only for a full compile (no_config leaves it out); the tensors are
       in output.safetensors, as ExLlamaV2 names them.
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np
import safetensors.numpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_forward  # noqa: E402

# bitsandbytes' NF4 code values (functional.py / kernels.cu), as float32
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], np.float32)


def fp4_code():
    """bitsandbytes' FP4 values (get_4bit_type('fp4')): code = sign, 2 exponent bits, 1 mantissa bit; exponent 0
    gives 0 or the subnormal 0.0625, exponent e 2^(4 - e) (1 or 1.5); the 16 divided by their max 12 in float32"""
    v = []
    for c in range(16):
        e, m = c >> 1 & 3, c & 1
        a = (0.0625 if m else 0.0) if e == 0 else 2.0 ** (4 - e) * (1.5 if m else 1.0)
        v.append(-a if c & 8 else a)
    v = np.array(v, np.float32)
    return v / np.float32(np.abs(v).max())


FP4 = fp4_code()
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]          # nibble i holds column ORDER[i] (AutoAWQ pack)
AWQ_REVERSE = [0, 4, 1, 5, 2, 6, 3, 7]        # column j sits in nibble REVERSE[j] (AutoAWQ unpack)


def quantizable(name, w):
    return name.startswith("model.layers.") and name.endswith("_proj.weight") and w.ndim == 2


def group_index(K, group, desc_act, rng, shared=None):
    """g_idx [K]: trivial k // group, or act-order: 'mixed' a random permutation of the rows (GPTQ's
    desc_act), 'blocks' a random permutation of whole 32-row blocks (groups still whole blocks).
    'mixed_shared': as mixed, the permutation `shared` when given (GPTQ orders q, k, v by one Hessian, that
    of their common input, and gate, up by another)."""
    g = K if group == -1 else group
    order = np.arange(K)
    if desc_act == "mixed_shared" and shared is not None:
        order = shared
    elif desc_act in ("mixed", "mixed_shared"):
        order = rng.permutation(K)
    elif desc_act == "blocks":
        order = (rng.permutation(K // 32)[:, None] * 32 + np.arange(32)).reshape(-1)
    g_idx = np.empty(K, np.int32)
    g_idx[order] = np.arange(K) // g
    return g_idx


def quantize(W, bits, g_idx, sym, rng):
    """W [N, K] -> codes q [K, N], zeros z [G, N], scales s [G, N] f16, round to nearest per group."""
    N, K = W.shape
    G, maxq = int(g_idx.max()) + 1, 2 ** bits - 1
    q = np.zeros((K, N), np.int64)
    z = np.zeros((G, N), np.int64)
    s = np.zeros((G, N), np.float16)
    for g in range(G):
        rows = np.flatnonzero(g_idx == g)
        Wg = W[:, rows].astype(np.float64)
        lo, hi = np.minimum(Wg.min(1), 0), np.maximum(Wg.max(1), 0)
        if sym:
            sc = np.maximum(-lo, hi) * 2 / maxq
            zz = np.full(N, (maxq + 1) // 2)
        else:
            sc = (hi - lo) / maxq
            zz = np.clip(np.round(-lo / np.where(sc > 0, sc, 1)), 0, maxq).astype(np.int64)
            zz[rng.random(N) < 0.05] = 0  # zero points of 0: v1 files store -1, read back as 2^bits
        sc16 = np.where(sc > 0, sc, 1).astype(np.float16)
        sc16[sc16 == 0] = np.float16(1e-3)
        q[rows, :] = np.clip(np.round(Wg / sc16.astype(np.float64)[:, None] + zz[:, None]), 0, maxq).T
        z[g], s[g] = zz, sc16
    return q, z, s


def pack_stream(vals, bits):
    """vals [..., M] (0 <= v < 2^bits) -> int32 words [..., M bits / 32]: value m at bit bits * m, little-endian"""
    M = vals.shape[-1]
    assert M * bits % 32 == 0, "values do not fill whole words"
    bitarr = ((vals[..., :, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(*vals.shape[:-1], M * bits)
    return np.ascontiguousarray(np.packbits(bitarr, axis=-1, bitorder="little")).view("<i4")


def unpack_words(words, bits, M):
    """int32 words [..., W] -> values [..., M], the readers' rule: value m in word (bits m) // 32 at bit
    (bits m) % 32, its high bits (3-bit values straddling a word) from the next word's low bits"""
    u = words.astype(np.int64) & 0xFFFFFFFF
    pos = np.arange(M) * bits
    w, sh = pos // 32, pos % 32
    lo = u[..., w] >> sh
    nxt = np.minimum(w + 1, u.shape[-1] - 1)
    hi = np.where(sh + bits > 32, u[..., nxt] << (32 - sh), 0)
    return (lo | hi) & (2 ** bits - 1)


def awq_pack(vals):
    """vals [R, N] nibbles -> int32 [R, N / 8], column 8c + ORDER[i] in nibble i"""
    R, N = vals.shape
    v = vals.reshape(R, N // 8, 8).astype(np.uint32)
    out = np.zeros((R, N // 8), np.uint32)
    for i, col in enumerate(AWQ_ORDER):
        out |= v[:, :, col] << np.uint32(4 * i)
    return out.view(np.int32)


def awq_unpack(words):
    u = words.view(np.uint32).astype(np.int64)
    R, C = u.shape
    out = np.zeros((R, C, 8), np.int64)
    for j in range(8):
        out[:, :, j] = (u >> (4 * AWQ_REVERSE[j])) & 15
    return out.reshape(R, C * 8)


def bnb_quantize(W, blocksize, double_quant, quant_type="nf4"):
    """W [N, K] -> the tensors of a bitsandbytes NF4 (FP4) weight, keyed by suffix after `.weight` ("" the
    codes)"""
    table = NF4 if quant_type == "nf4" else FP4
    N, K = W.shape
    flat = W.astype(np.float32).reshape(-1, blocksize)
    absmax = np.abs(flat).max(axis=1).astype(np.float32)
    absmax[absmax == 0] = 1
    q = np.abs((flat / absmax[:, None])[:, :, None] - table[None, None, :]).argmin(axis=2).reshape(-1)
    parts = {"": (q[0::2] << 4 | q[1::2]).astype(np.uint8).reshape(-1, 1), "quant_map": table.copy()}
    state = {"quant_type": quant_type, "blocksize": blocksize, "dtype": "float32", "shape": [N, K]}
    if double_quant:
        nbs = 256
        offset = np.float32(absmax.mean())
        a = absmax - offset
        nmap = np.linspace(-1, 1, 256).astype(np.float32)
        pad = -len(a) % nbs
        ab = np.concatenate([a, np.zeros(pad, np.float32)]).reshape(-1, nbs)
        nabs = np.abs(ab).max(axis=1).astype(np.float32)
        nabs[nabs == 0] = 1
        codes = np.abs((ab / nabs[:, None])[:, :, None] - nmap).argmin(axis=2).reshape(-1)[: len(a)]
        parts.update({"absmax": codes.astype(np.uint8), "nested_absmax": nabs, "nested_quant_map": nmap})
        state.update({"nested_blocksize": nbs, "nested_offset": float(offset), "nested_dtype": "float32"})
    else:
        parts["absmax"] = absmax
    parts["quant_state.bitsandbytes__" + quant_type] = np.frombuffer(json.dumps(state).encode(), np.uint8).copy()
    return parts


def bnb8_quantize(W):
    """W [N, K] -> LLM.int8's tensors, keyed by suffix after the linear's base: weight (CB int8 [N, K], round
    to nearest of W 127 / row absmax), SCB (f32 [N] the row absmax), weight_format (U8 0: row-major)"""
    absmax = np.abs(W.astype(np.float32)).max(axis=1).astype(np.float32)
    absmax[absmax == 0] = 1
    cb = np.clip(np.round(W.astype(np.float32) * (np.float32(127) / absmax[:, None])), -127, 127).astype(np.int8)
    return {"weight": cb, "SCB": absmax, "weight_format": np.zeros((), np.uint8)}


def bnb8_dequantize(raw, base, stored=False):
    """float32 [N, K] of an LLM.int8 weight: CB SCB / 127 (float64, rounded once to float32), or stored=True the
    values a converter keeps in Q8_0: CB f16(f32(SCB) / 127)"""
    cb, scb = raw[base + ".weight"].astype(np.float64), raw[base + ".SCB"]
    if stored:
        d = (scb.astype(np.float32) / np.float32(127)).astype(np.float16).astype(np.float64)
        return (cb * d[:, None]).astype(np.float32)
    return (cb * scb.astype(np.float64)[:, None] / 127).astype(np.float32)


def bnb_dequantize(raw, wname):
    """float32 [N, K] of a bitsandbytes NF4 weight wname from raw {name: array}"""
    key = next(wname + ".quant_state.bitsandbytes__" + t for t in ("nf4", "fp4")
               if wname + ".quant_state.bitsandbytes__" + t in raw)
    state = json.loads(bytes(raw[key]).decode())
    absmax = raw[wname + ".absmax"]
    if absmax.dtype == np.uint8:  # double quantization: bitsandbytes' float32 steps
        nmap, nabs = raw[wname + ".nested_quant_map"], raw[wname + ".nested_absmax"]
        idx = np.arange(len(absmax)) // state["nested_blocksize"]
        absmax = (nmap[absmax] * nabs[idx]).astype(np.float32) + np.float32(state["nested_offset"])
    b = raw[wname].reshape(-1)
    q = np.stack([b >> 4, b & 15], axis=1).reshape(-1)
    vals = raw[wname + ".quant_map"][q].reshape(-1, state["blocksize"]) * absmax[:, None]
    return vals.astype(np.float32).reshape(state["shape"])


EXL2_BITS = {"mixed": (8, 6, 5, 4, 3, 2), "low": (4, 3, 2), "even": (8, 4, 2)}


def exl2_groups(K, rng, choice, group):
    """[(bits, rows)] of one linear: 2..4 distinct widths drawn from EXL2_BITS[choice] in non-increasing order,
    random proportions, each width whole groups of `group` rows (ExLlamaV2's configure: ceil of its share of
    what is left), the last group what remains"""
    widths = sorted(rng.choice(EXL2_BITS[choice], size=min(len(EXL2_BITS[choice]), int(rng.integers(2, 5))),
                               replace=False), reverse=True)
    props = rng.dirichlet(np.ones(len(widths)))
    out, left = [], K
    for i, (b, p) in enumerate(zip(widths, props)):
        n = K if i == len(widths) - 1 else -(-int(min(K * p, left)) // group)
        for _ in range(n):
            if left > 0:
                out.append((int(b), min(group, left)))
                left -= min(group, left)
    return out


def exl2_scale(qs, qsm):
    """ExLlamaV2's f16 scale from the 4-bit code qs (stored, 0..15) and the group's f16 q_scale_max: each step
    an exact product of f16 values rounded once to f16 (float64 -> float16)"""
    m = (qsm.astype(np.float64) / 256).astype(np.float16)
    return (((qs.astype(np.int64) + 1) ** 2).astype(np.float64) * m.astype(np.float64)).astype(np.float16)


def exl2_quantize(W, perm, groups, perm_style="invperm"):
    """W [N, K] -> EXL2 tensors by suffix, rounding to nearest per group (ExLlamaV2's AdaptiveQuantizer scale
    search without its error grid: any valid codes serve, the test is the reading)"""
    N, K = W.shape
    assert N % 32 == 0, "columns pad to 32 in ExLlamaV2; these tests keep N a multiple of 32"
    Wt = W.T.astype(np.float64)[perm]
    words, qgroups, qscale, qsmax, a, qrow = [], [], [], [], 0, 0
    for b, rows in groups:
        x = Wt[a: a + rows]
        maxq = 2 ** b - 1
        base = (np.abs(x).max(axis=0) + 1e-12) / (maxq / 2)
        m = base.max()
        qs = np.clip(np.round(np.sqrt(base / m) * 16), 1, 16).astype(np.int64) - 1
        qsm = np.array([m], np.float16)
        S = exl2_scale(qs, np.repeat(qsm, N)).astype(np.float64)
        q = np.clip(np.round(x / np.where(S > 0, S, 1)) + 2 ** (b - 1), 0, maxq).astype(np.int64)
        pad = 0  # the last group's rows are padded to whole words (ExLlamaV2: ceil of its packed rows)
        while (rows + pad) * b % 32:
            pad += 1
        qp = np.concatenate([q, np.zeros((pad, N), np.int64)]) if pad else q
        w = np.ascontiguousarray(pack_stream(np.ascontiguousarray(qp.T), b).T)
        words.append(w)
        qgroups += [b, qrow]
        qrow += w.shape[0]
        qscale.append(qs)
        qsmax.append(qsm[0])
        a += rows
    assert a == K
    parts = {"q_weight": np.concatenate(words), "q_groups": np.array(qgroups, np.int16),
             "q_scale": pack_stream(np.stack(qscale), 4), "q_scale_max": np.array(qsmax, np.float16)}
    if perm_style in ("invperm", "both"):
        parts["q_invperm"] = np.argsort(perm).astype(np.int32)
    if perm_style in ("perm16", "both"):
        parts["q_perm"] = perm.astype(np.int16)
    return parts


def exl2_perm(raw, base):
    """the act-order of an EXL2 linear: stored row j is input row perm[j] (q_perm, else argsort(q_invperm))"""
    if base + ".q_perm" in raw:
        return raw[base + ".q_perm"].astype(np.int64) & 0xFFFF
    return np.argsort(raw[base + ".q_invperm"])


def exl2_group_rows(raw, base, K):
    """[(bits, first packed row, end packed row, rows)] per group of an EXL2 linear (q_groups; a group's rows
    are its packed rows 32 / bits, the last one's what is left of K)"""
    qg, qrows = raw[base + ".q_groups"].astype(np.int64), raw[base + ".q_weight"].shape[0]
    G, out, a = len(qg) // 2, [], 0
    for g in range(G):
        b, r0 = int(qg[2 * g]), int(qg[2 * g + 1])
        r1 = int(qg[2 * g + 3]) if g + 1 < G else qrows
        rows = (r1 - r0) * 32 // b if g + 1 < G else K - a
        out.append((b, r0, r1, rows))
        a += rows
    return out


def exl2_dequantize(raw, base, K):
    """float32 [N, K] of an EXL2 linear from raw {name: array} (N = q_weight's width)"""
    qw = raw[base + ".q_weight"]
    N = qw.shape[1]
    perm = exl2_perm(raw, base)
    qs = unpack_words(raw[base + ".q_scale"], 4, N)
    Wt, a = np.zeros((K, N), np.float32), 0
    for g, (b, r0, r1, rows) in enumerate(exl2_group_rows(raw, base, K)):
        q = unpack_words(np.ascontiguousarray(qw[r0:r1].T), b, rows).T  # [rows, N]
        S = exl2_scale(qs[g], np.repeat(raw[base + ".q_scale_max"][g], N)).astype(np.float32)
        Wt[a: a + rows] = (q - 2 ** (b - 1)).astype(np.float32) * S[None, :]
        a += rows
    W = np.empty((N, K), np.float32)
    W[:, perm] = Wt.T
    return W


def load_raw(d):
    """{name: array} of every *.safetensors file of d"""
    raw = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            raw.update(safetensors.numpy.load_file(os.path.join(d, f)))
    return raw


def write(src, out, method, bits=4, group=128, sym=False, v2=False, desc_act=None, seed=0, skip=(),
          double_quant=False, quant_type="nf4", exl2_bits="mixed", perm_style="invperm", no_config=False):
    """Quantizes src's linears into a GPTQ (method 'gptq') or AWQ ('awq') directory out. skip: tensor suffixes
    ('qzeros', 'g_idx'...) to leave out (negative tests)."""
    rng = np.random.default_rng(seed)
    orders = {}  # the rows' order of each layer's input (mixed_shared)
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(src):
        if not f.endswith(".safetensors") and f != "model.safetensors.index.json":
            shutil.copy(os.path.join(src, f), os.path.join(out, f))
    cfg = json.load(open(os.path.join(src, "config.json")))
    if method == "gptq":
        cfg["quantization_config"] = {"quant_method": "gptq", "bits": bits, "group_size": group,
                                      "desc_act": bool(desc_act), "sym": sym,
                                      "checkpoint_format": "gptq_v2" if v2 else "gptq"}
    elif method == "awq":
        cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True,
                                      "version": "gemm"}
    elif method == "exl2":
        cfg["quantization_config"] = {"quant_method": "exl2", "version": "0.2.8", "bits": 4.0, "head_bits": 6,
                                      "calibration": {"rows": 115, "length": 2048, "dataset": "(default)"}}
    elif method == "bnb8":
        cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": False, "load_in_8bit": True,
                                      "llm_int8_threshold": 6.0, "llm_int8_has_fp16_weight": False}
    else:
        cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
                                      "bnb_4bit_quant_type": quant_type, "bnb_4bit_use_double_quant": double_quant,
                                      "bnb_4bit_compute_dtype": "float32", "bnb_4bit_quant_storage": "uint8"}
    if no_config:
        del cfg["quantization_config"]
    with open(os.path.join(out, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    tensors, qbits = {}, [0, 0]
    for name, w in ref_forward.load_weights(src).items():
        head = method == "exl2" and name == "lm_head.weight"  # ExLlamaV2 quantizes the head too (head_bits)
        if not quantizable(name, w) and not head:
            tensors[name] = np.ascontiguousarray(w.astype(np.float32))
            continue
        base = name[: -len(".weight")]
        N, K = w.shape
        if method == "bnb8":
            for suffix, a in bnb8_quantize(w).items():
                if suffix not in skip:
                    tensors[f"{base}.{suffix}"] = np.ascontiguousarray(a)
            continue
        if method == "bnb":
            for suffix, a in bnb_quantize(w, group, double_quant, quant_type).items():
                if suffix not in skip:
                    tensors[name + ("." + suffix if suffix else "")] = np.ascontiguousarray(a)
            continue
        inp = "head" if head else name.split(".")[2] + {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "gate_proj": "mlp",
                                    "up_proj": "mlp"}.get(name.split(".")[-2], name)
        if method == "exl2":  # q, k, v (gate, up) share their input's act-order, as ExLlamaV2's reuse_h does
            perm = orders.setdefault(inp, rng.permutation(K))
            groups = [(6, K)] if head else exl2_groups(K, rng, exl2_bits, group)  # head_bits 6: one group
            for suffix, a in exl2_quantize(w, perm, groups, perm_style).items():
                qbits[0] += a.nbytes * 8 if suffix not in ("q_invperm", "q_perm") else 0
                if suffix not in skip:
                    tensors[f"{base}.{suffix}"] = np.ascontiguousarray(a)
            qbits[1] += N * K
            continue
        g_idx = group_index(K, group, desc_act if method == "gptq" else None, rng, orders.get(inp))
        orders[inp] = np.argsort(g_idx, kind="stable")
        q, z, s = quantize(w, bits, g_idx, sym, rng)
        if method == "gptq":
            zs = z if v2 else (z - 1) & (2 ** bits - 1)
            parts = {"qweight": np.ascontiguousarray(pack_stream(q.T, bits).T),
                     "qzeros": pack_stream(zs, bits), "scales": s, "g_idx": g_idx}
        else:
            parts = {"qweight": awq_pack(q), "qzeros": awq_pack(z), "scales": s}
        for suffix, a in parts.items():
            if suffix not in skip:
                tensors[f"{base}.{suffix}"] = np.ascontiguousarray(a)
    if method == "exl2" and not no_config:  # the average bits per weight of the linears (their act-order aside)
        cfg["quantization_config"]["bits"] = round(qbits[0] / qbits[1], 3)
        with open(os.path.join(out, "config.json"), "w") as fh:
            json.dump(cfg, fh, indent=2)
    fname = "output.safetensors" if method == "exl2" else "model.safetensors"
    safetensors.numpy.save_file(tensors, os.path.join(out, fname), metadata={"format": "pt"})


def dequantize(d, stored=False):
    """{HF name: float32 array} of a directory write() made (any GPTQ/AWQ of these layouts): every linear
    unpacked as s[g, n] * (q[k, n] - z[g, n]), the product exact in float32. LLM.int8: CB SCB / 127, or with
    stored=True the Q8_0 values a converter keeps (bnb8_dequantize)."""
    raw = load_raw(d)
    qc = json.load(open(os.path.join(d, "config.json"))).get("quantization_config", {"quant_method": "exl2"})
    if qc["quant_method"] == "exl2":
        own = (".q_weight", ".q_groups", ".q_scale", ".q_scale_max", ".q_invperm", ".q_perm")
        out = {k: v.astype(np.float32) for k, v in raw.items() if not k.endswith(own)}
        for name in [k for k in raw if k.endswith(".q_groups")]:
            base = name[: -len(".q_groups")]
            K = len(raw[base + (".q_invperm" if base + ".q_invperm" in raw else ".q_perm")])
            out[base + ".weight"] = exl2_dequantize(raw, base, K)
        return out
    if qc["quant_method"] == "bitsandbytes" and qc.get("load_in_8bit"):
        bases = [k[: -len(".SCB")] for k in raw if k.endswith(".SCB")]
        own = {b + s for b in bases for s in (".weight", ".SCB", ".weight_format")}
        out = {k: v.astype(np.float32) for k, v in raw.items() if k not in own}
        out.update({b + ".weight": bnb8_dequantize(raw, b, stored) for b in bases})
        return out
    if qc["quant_method"] == "bitsandbytes":
        names = [k[: -len(".absmax")] for k in raw if k.endswith(".weight.absmax")]
        out = {k: v.astype(np.float32) for k, v in raw.items() if k not in names and not k.startswith(tuple(
            n + "." for n in names))}
        out.update({n: bnb_dequantize(raw, n) for n in names})
        return out
    bits, group = qc["bits"], qc["group_size"]
    out = {k: v.astype(np.float32) for k, v in raw.items() if not k.endswith((".qweight", ".qzeros", ".scales", ".g_idx"))}
    for name in [k for k in raw if k.endswith(".qweight")]:
        base = name[: -len(".qweight")]
        s = raw[base + ".scales"].astype(np.float32)
        G, N = s.shape
        if qc["quant_method"] == "gptq":
            K = raw[name].shape[0] * 32 // bits
            q = unpack_words(np.ascontiguousarray(raw[name].T), bits, K).T  # [K, N]
            z = unpack_words(raw[base + ".qzeros"], bits, N)
            z = z if qc.get("checkpoint_format") == "gptq_v2" else z + 1
            g_idx = raw.get(base + ".g_idx")
            g_idx = g_idx if g_idx is not None else np.arange(K) // (K if group == -1 else group)
        else:
            q, z = awq_unpack(raw[name]), awq_unpack(raw[base + ".qzeros"])
            K = q.shape[0]
            g_idx = np.arange(K) // (K if group == -1 else group)
        w = s[g_idx, :] * (q - z[g_idx, :]).astype(np.float32)  # [K, N]
        out[base + ".weight"] = np.ascontiguousarray(w.T)
    return out


def write_dequantized(d, out, stored=False):
    """The NumPy unpacking of d as an F32 checkpoint (same config without quantization_config); stored: as
    dequantize(stored=True)"""
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(d):
        if not f.endswith(".safetensors"):
            shutil.copy(os.path.join(d, f), os.path.join(out, f))
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg.pop("quantization_config", None)
    with open(os.path.join(out, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    safetensors.numpy.save_file(dequantize(d, stored), os.path.join(out, "model.safetensors"), metadata={"format": "pt"})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("method", choices=["gptq", "awq", "bnb", "bnb8", "exl2", "dequant"])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--sym", action="store_true")
    ap.add_argument("--v2", action="store_true")
    ap.add_argument("--desc-act", choices=["mixed", "mixed_shared", "blocks"])
    ap.add_argument("--double-quant", action="store_true")
    ap.add_argument("--fp4", action="store_true", help="bnb: bitsandbytes FP4 instead of NF4")
    ap.add_argument("--exl2-bits", choices=sorted(EXL2_BITS), default="mixed",
                    help="exl2: the widths each linear's groups draw from")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.method == "dequant":
        write_dequantized(a.src, a.out)
    else:
        write(a.src, a.out, a.method, a.bits, a.group, a.sym, a.v2, a.desc_act, a.seed, double_quant=a.double_quant,
              quant_type="fp4" if a.fp4 else "nf4", exl2_bits=a.exl2_bits)


if __name__ == "__main__":
    main()
