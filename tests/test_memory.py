"""ferry convert keeps memory bounded: on a ~100 MB model of 13 MB layers its peak RSS above that of converting
a model of tiny layers (the process itself, about 13 MiB: binary, libraries, and in `make asan` the sanitizers'
metadata, which the CPU matmul kernels of issue 22 grew by 1.4 MiB) must stay under one layer (tensors are
copied chunk by chunk from the mmapped checkpoint and dropped from the resident set once written; the bound was
2 layers in all, which the optimized build still meets and the sanitizer build no longer can). Also checks that `ferry run` streams layers through 2 slots when --ram is
small, giving the same tokens as the run that keeps every layer in the RAM tier, and that its peak RSS above
that of the same run on a model of tiny layers (the runtime itself: CUDA context and pinned slots on a GPU
machine) stays under 4 layers."""

import os
import resource
import subprocess
import sys

import numpy as np

from ferrytest import FERRY, Failures, ferry, gen_tiny_model, scratch


def write_model(hf, hidden, inter, layers, heads):
    spec = dict(gen_tiny_model.VARIANTS["llama_headdim"], hidden=hidden, inter=inter, layers=layers, heads=heads,
                kv_heads=heads, head_dim=64, vocab=4096, dtype="F32")
    os.makedirs(hf)
    gen_tiny_model.write_json(os.path.join(hf, "config.json"), gen_tiny_model.make_config(spec))
    gen_tiny_model.write_weights(hf, gen_tiny_model.make_weights(spec, np.random.default_rng(7)), 2)
    D, F = spec["hidden"], spec["inter"]
    return 4 * (4 * D * D + 3 * D * F + 2 * D)


def peak_rss_of(cmd):
    """Peak RSS (bytes) of one child process, measured by a fresh Python so no other child counts."""
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); sys.exit(r)")
    p = subprocess.run([sys.executable, "-c", code, *map(str, cmd)], capture_output=True, text=True)
    return p.returncode, int((p.stdout.split() or ["0"])[-1]), p.stderr


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        hf = os.path.join(root, "big")
        layer = write_model(hf, 512, 1536, 6, 8)
        out = hf + ".ferry"
        small = os.path.join(root, "small")
        write_model(small, 64, 128, 2, 1)
        rc0, base, err0 = peak_rss_of([FERRY, "convert", small, "-o", small + ".ferry"])
        rc, rss, err = peak_rss_of([FERRY, "convert", hf, "-o", out])
        print(f"convert: layer {layer / 2**20:.1f} MiB, peak RSS {rss / 2**20:.1f} MiB, process alone "
              f"{base / 2**20:.1f} MiB")
        f.check(rc0 == 0 and rc == 0, f"convert failed: {err0} {err}")
        f.check(rss - base < layer, f"peak RSS {rss} - process {base} >= layer {layer}")

        ids = ",".join(str(i * 37 % 4096) for i in range(16))
        a = ferry("run", "-m", out, "--prompt-ids", ids, "-n", 8, "--temp", 0, "--ignore-eos", "--stats")
        b = ferry("run", "-m", out, "--prompt-ids", ids, "-n", 8, "--temp", 0, "--ignore-eos", "--stats",
                  "--ram", "1M")
        f.check(a.returncode == 0 and b.returncode == 0, f"run failed: {a.stderr} {b.stderr}")
        f.check(a.stdout == b.stdout and len(a.stdout.split()) == 8, "streamed run differs from resident run")
        f.check("RAM tier 7/7 units" in a.stderr and "0 slots" in a.stderr and "RAM tier 0/7 units" in b.stderr
                and "2 slots" in b.stderr, f"slot plan: {a.stderr} {b.stderr}")
        rc0, base, err0 = peak_rss_of([FERRY, "run", "-m", small + ".ferry", "--prompt-ids", ids, "-n", 4,
                                       "--ram", "1M"])
        rc, rss, err = peak_rss_of([FERRY, "run", "-m", out, "--prompt-ids", ids, "-n", 4, "--ram", "1M"])
        print(f"run with 2 slots: peak RSS {rss / 2**20:.1f} MiB, runtime alone {base / 2**20:.1f} MiB")
        f.check(rc0 == 0 and rc == 0, f"run failed: {err0} {err}")
        f.check(rss - base < 4 * layer, f"streamed run peak RSS {rss} - runtime {base} >= 4 x layer {layer}")
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
