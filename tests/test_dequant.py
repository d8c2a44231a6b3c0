"""ferry's CPU dequantization and quantized matmul against gguf-py (gguf.quants.dequantize, the Python port of
ggml's dequantize_row_*), through build/tests/dequant_tool:
  - random blocks of every quantized format ferry runs (random bytes, random finite f16 scales of either sign,
    subnormals included; the grid IQ types too, IQ1_M's scale spread over its scale nibbles; MXFP4's e8m0 scale
    any byte): bit for bit;
  - every Q8_0, Q5_0, Q4_K, Q6_K and F32 tensor of models/gemma-3-270m-q4_k_m.gguf (a sample of the
    rows of token_embd): bit for bit;
  - cpu_matmul on random blocks (sane scales) of the types the Gemma file lacks, T = 1 and 5: within 1e-5 of
    sum |w x| of the same float64 reference;
  - cpu_matmul on real rows of each quantized type (the grid IQ types: random rows), T = 1, 3 and 6, against float64 dots of gguf-py's f32
    weights with the activations quantized as ferry's contract says (tools/ref_forward.py's quantize_act) (8 bits per weight block,
    src/kernels/cpu/qdot.h): |y - ref| <= 1e-5 * sum |w x| per output and 1e-5 norm-wise; and against the f32
    activations within the quantization's bound sum_i |w_i| dx_i (1/2 + 1e-4) (+ the 1e-5).

Fails (never skips) when the Gemma file is missing: CI fetches it before the tests."""

import os
import subprocess
import sys

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

from ferrytest import FERRY, ROOT, Failures, gemma_gguf, ref_forward

TOOL = os.path.join(os.path.dirname(FERRY), "tests", "dequant_tool")
GRID_IQ_TYPES = [QT.IQ2_XXS, QT.IQ2_XS, QT.IQ2_S, QT.IQ3_XXS, QT.IQ3_S, QT.IQ1_S, QT.IQ1_M]
RANDOM_TYPES = [QT.Q8_0, QT.Q4_0, QT.Q5_0, QT.Q4_K, QT.Q5_K, QT.Q6_K, QT.Q4_1, QT.Q5_1, QT.Q2_K, QT.Q3_K, QT.IQ4_NL,
                QT.IQ4_XS, QT.MXFP4, QT.TQ1_0, QT.TQ2_0] + GRID_IQ_TYPES
# where each type keeps its f16 scales (MXFP4's e8m0 byte takes any value: all 256 are finite)
HALF_AT = {QT.Q6_K: [208], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q4_1: [0, 2], QT.Q5_1: [0, 2], QT.Q2_K: [80, 82],
           QT.Q3_K: [108], QT.MXFP4: [], QT.TQ1_0: [52], QT.TQ2_0: [64]}
FILE_TYPES = [QT.Q8_0, QT.Q5_0, QT.Q4_K, QT.Q6_K, QT.F32]
EMBD_ROWS = 4096  # rows of token_embd checked (of 262144)


def tool(*args, stdin):
    p = subprocess.run([TOOL, *map(str, args)], input=stdin, capture_output=True)
    if p.returncode != 0:
        raise RuntimeError(f"dequant_tool {' '.join(map(str, args))}: exit {p.returncode}: {p.stderr.decode()}")
    return np.frombuffer(p.stdout, dtype=np.float32)


def ferry_dequant(qtype, raw):
    """raw: uint8 array of whole blocks (or F32 values); returns ferry's f32 values."""
    block, size = GGML_QUANT_SIZES[qtype]
    n = raw.nbytes // size * block
    return tool("dequant", qtype.name, n, stdin=raw.tobytes())


def bits_equal(fails, what, got, want):
    want = want.reshape(-1).astype(np.float32)
    if not fails.check(got.shape == want.shape, f"{what}: {got.shape} values, want {want.shape}"):
        return
    bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    fails.check(bad.size == 0, f"{what}: {bad.size} of {got.size} values differ, first at {bad[:1]}: "
                f"{got[bad[:1]]} vs gguf-py {want[bad[:1]]}")


def random_blocks(rng, qtype, nblocks):
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(nblocks, size), dtype=np.uint8)
    halves = rng.integers(0, 0x10000, size=(nblocks, 2), dtype=np.uint32).astype(np.uint16)
    halves[(halves & 0x7C00) == 0x7C00] &= 0xBFFF  # inf/nan -> finite (exponent 15)
    halves[::16] &= 0x83FF  # every 16th block: subnormal scales
    if qtype == QT.IQ1_M:  # d's 4 nibbles are the top nibbles of the u16 scales at 48, 50, 52, 54
        for i in range(4):
            nib = (halves[:, 0] >> (4 * i)) & 15
            raw[:, 49 + 2 * i] = (raw[:, 49 + 2 * i] & 15) | (nib << 4).astype(np.uint8)
        return raw
    offsets = HALF_AT.get(qtype, [0])
    for i, off in enumerate(offsets):
        raw[:, off:off + 2] = halves[:, i:i + 1].view(np.uint8)
    return raw


def check_random(fails, rng):
    for qtype in RANDOM_TYPES:
        raw = random_blocks(rng, qtype, 4000)
        bits_equal(fails, f"random {qtype.name} blocks", ferry_dequant(qtype, raw), dequantize(raw, qtype))


def check_file(fails, reader, rng):
    """Every tensor of the checked types, bit for bit; tensors of one type go through one tool call."""
    seen = set()
    for qtype in FILE_TYPES:
        names, raws, wants = [], [], []
        for t in reader.tensors:
            if t.tensor_type != qtype:
                continue
            data = t.data.reshape(-1, t.data.shape[-1]) if t.data.ndim > 1 else t.data.reshape(1, -1)
            if data.shape[0] > EMBD_ROWS:
                data = data[np.sort(rng.choice(data.shape[0], EMBD_ROWS, replace=False))]
            data = np.ascontiguousarray(data)
            names.append(t.name)
            raws.append(data.view(np.uint8).reshape(-1))
            wants.append(dequantize(data, qtype).reshape(-1))
        seen.add(qtype)
        if not fails.check(names, f"the Gemma GGUF has no {qtype.name} tensor"):
            continue
        got = ferry_dequant(qtype, np.concatenate(raws))
        if not fails.check(got.size == sum(w.size for w in wants), f"{qtype.name}: ferry returned {got.size} values"):
            continue
        at = 0
        for name, want in zip(names, wants):
            bits_equal(fails, f"{name} ({qtype.name})", got[at:at + want.size], want)
            at += want.size
        print(f"{qtype.name}: {len(names)} tensors, {got.size} values bit-identical to gguf-py", flush=True)
    return seen


def matmul_case(fails, name, qtype, W, rng):
    """cpu_matmul of the raw rows W (uint8 [N, row bytes]) at T = 1, 3, 6 against gguf-py's weights."""
    matmul_check(fails, name, qtype.name, GGML_QUANT_SIZES[qtype][0], W, dequantize(W, qtype).astype(np.float64), rng)


def matmul_check(fails, name, fmt, block, W, Wf, rng):
    """cpu_matmul of the raw rows W (uint8 [N, row bytes]) of format fmt (blocks of `block`) at T = 1, 3, 6
    against Wf, the reference's float64 values of the same weights."""
    N, K = Wf.shape
    for T in (1, 3, 6):
        x = rng.standard_normal((T, K)).astype(np.float32)
        y = tool("matmul", fmt, N, K, T, stdin=W.tobytes() + x.tobytes()).reshape(T, N)
        xh = ref_forward.quantize_act(x, block)
        dx = np.repeat(np.abs(x.reshape(T, -1, block)).max(axis=2) / np.float32(127), block, axis=1)
        ref = xh @ Wf.T
        mag = np.abs(xh) @ np.abs(Wf).T
        err = np.abs(y - ref)
        # against f32 x: the quantization moves each x_i by at most dx_i (1/2 + 1e-4) (qdot.h)
        qerr = (dx * (0.5 + 1e-4)) @ np.abs(Wf).T
        ferr = np.abs(y - x.astype(np.float64) @ Wf.T)
        rel = np.linalg.norm(y - ref) / np.linalg.norm(ref)
        fails.check(np.all(err <= 1e-5 * mag) and rel < 1e-5 and np.all(ferr <= qerr + 1e-5 * mag),
                    f"matmul {name} ({fmt}) T={T}: max err / sum|wx| {np.max(err / mag):.3g}, "
                    f"norm-wise {rel:.3g}, max err vs f32 x / its bound {np.max(ferr / (qerr + 1e-5 * mag)):.3g}")
        print(f"matmul {name} ({fmt}) {N}x{K} T={T}: norm-wise rel err {rel:.2e} against 8-bit x, "
              f"{np.linalg.norm(ferr) / np.linalg.norm(ref):.2e} against f32 x", flush=True)


def check_matmul(fails, reader, rng):
    for qtype in [QT.Q8_0, QT.Q5_0, QT.Q4_K, QT.Q6_K]:
        t = next(t for t in reader.tensors if t.tensor_type == qtype and t.data.ndim == 2)
        matmul_case(fails, t.name, qtype, np.ascontiguousarray(t.data[:min(t.data.shape[0], 301)]), rng)


def check_matmul_random(fails, rng):
    """The grid IQ types (no real file here): 37 random rows of 1024, finite scales."""
    for qtype in GRID_IQ_TYPES:
        raw = random_blocks(rng, qtype, 37 * 4)
        matmul_case(fails, "random rows", qtype, raw.reshape(37, -1), rng)


def check_matmul_random(fails, rng):
    """cpu_matmul on random blocks of the types the Gemma file lacks, T = 1 and 5, against float64 dots of
    gguf-py's weights with the contract's 8-bit activations (1e-5 of sum |w x|, as check_matmul)."""
    import test_gguf_convert  # its random_blocks: scales in sane ranges per type
    for qtype in [QT.Q4_0, QT.Q5_K, QT.Q4_1, QT.Q5_1, QT.Q2_K, QT.Q3_K, QT.IQ4_NL, QT.IQ4_XS, QT.MXFP4, QT.TQ1_0,
                  QT.TQ2_0]:
        N, K = 37, 512
        W = test_gguf_convert.random_blocks(rng, qtype, N, K)
        Wf = dequantize(W, qtype).astype(np.float64).reshape(N, K)
        block = GGML_QUANT_SIZES[qtype][0]
        for T in (1, 5):
            x = rng.standard_normal((T, K)).astype(np.float32)
            y = tool("matmul", qtype.name, N, K, T, stdin=W.tobytes() + x.tobytes()).reshape(T, N)
            xh = ref_forward.quantize_act(x, block)
            ref, mag = xh @ Wf.T, np.abs(xh) @ np.abs(Wf).T
            err = np.abs(y - ref)
            fails.check(np.all(err <= 1e-5 * mag), f"matmul random {qtype.name} T={T}: max err / sum|wx| "
                        f"{np.max(err / mag):.3g}")
        print(f"matmul random {qtype.name} {N}x{K}: max err / sum|wx| {np.max(err / mag):.2e}", flush=True)


def main():
    fails = Failures()
    if not fails.check(os.access(TOOL, os.X_OK), f"{TOOL} missing: build it with make"):
        fails.finish()
    rng = np.random.default_rng(7)
    check_random(fails, rng)
    check_matmul_random(fails, rng)
    reader = GGUFReader(gemma_gguf(fails))
    check_file(fails, reader, rng)
    check_matmul(fails, reader, rng)
    fails.finish()


if __name__ == "__main__":
    sys.exit(main())
