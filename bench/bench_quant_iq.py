#!/usr/bin/env python3
"""Speed and error of ferry's grid IQ quantizers (src/convert/quantize_iq.c) against ggml's own
(ggml_quantize_chunk of llama.cpp's libggml-base.so, through ctypes) on the same rows and importance weights.

    python3 bench/bench_quant_iq.py [--llama-build /tmp/llama-build] [--rows 256] [--cols 4096] [--types IQ2_XS,...]
                                    [--reps 1] [--tool build/tests/dequant_tool]

Rows: Student-t(5) values, log-normal importance per column (seed 1). CPU seconds on one thread: ferry's
build/tests/dequant_tool quant with OMP_NUM_THREADS=1 (user + system time of the child, less the same tool's
time on a 256-value row: start-up and the grid's neighbour lists), ggml's process time of the call after a
first call that builds its tables; with --reps N each the least of N runs (a shared machine's co-runners only
add time). Error: sqrt(sum imp (x - y)^2 / sum imp x^2), decoded by gguf-py. No floor:
the work per value is each quantizer's choice; the figure is the ratio of the two.
"""

import argparse
import ctypes
import os
import resource
import subprocess
import time

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "build", "tests", "dequant_tool")


def ferry_cpu(t, x, imp, tool=TOOL):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run([tool, "quant", t.name, str(x.shape[0]), str(x.shape[1]), "imp"],
                       input=x.tobytes() + imp.tobytes(), capture_output=True, env=env, check=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return np.frombuffer(p.stdout, np.uint8), (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-build", default="/tmp/llama-build")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--tool", default=TOOL, help="the dequant_tool to time (another build's, for a before/after)")
    ap.add_argument("--types", default="IQ2_XXS,IQ2_XS,IQ2_S,IQ3_XXS,IQ3_S,IQ1_S,IQ1_M")
    a = ap.parse_args()
    lib = ctypes.CDLL(os.path.join(a.llama_build, "bin", "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    rng = np.random.default_rng(1)
    x = (rng.standard_t(5, size=(a.rows, a.cols)) * 0.02).astype(np.float32)
    imp = np.exp(rng.normal(0, 1, a.cols)).astype(np.float32)
    n = x.size
    print(f"{a.rows} x {a.cols} values, one thread; CPU ns per value and weighted relative RMS error")
    print("| type | ferry ns/value | ggml ns/value | ferry / ggml time | ferry error | ggml error | ferry / ggml error |")
    print("|---|---|---|---|---|---|---|")
    for name in a.types.split(","):
        t = QT[name]
        base = min(ferry_cpu(t, x[:1, :256].copy(), imp[:256].copy(), a.tool)[1] for _ in range(a.reps))
        sec = np.inf
        for _ in range(a.reps):
            raw, s = ferry_cpu(t, x, imp, a.tool)
            sec = min(sec, s - base)
        out = np.zeros(n // 256 * GGML_QUANT_SIZES[t][1], np.uint8)
        lib.ggml_quantize_chunk(int(t), x.ctypes.data, out.ctypes.data, 0, 1, a.cols, imp.ctypes.data)
        gsec = np.inf
        for _ in range(a.reps):
            c0 = time.process_time()
            lib.ggml_quantize_chunk(int(t), x.ctypes.data, out.ctypes.data, 0, a.rows, a.cols, imp.ctypes.data)
            gsec = min(gsec, time.process_time() - c0)

        def err(q):
            y = dequantize(q.reshape(a.rows, -1), t).reshape(a.rows, a.cols)
            return float(np.sqrt(((x - y) ** 2 * imp).sum() / (x ** 2 * imp).sum()))

        ef, eg = err(raw), err(out)
        print(f"| {name} | {1e9 * sec / n:.0f} | {1e9 * gsec / n:.0f} | {sec / gsec:.2f} | {ef:.4f} | {eg:.4f} | "
              f"{ef / eg:.3f} |", flush=True)


if __name__ == "__main__":
    main()
