"""Writes a Llama-shaped HF checkpoint with random weights for CPU benchmarks (no download):
python3 bench/make_bench_model.py OUT_DIR [--hidden 2048 --inter 5632 --layers 4 --vocab 32000 --dtype BF16]"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import gen_tiny_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--inter", type=int, default=5632)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--dtype", default="BF16", choices=["F32", "F16", "BF16"])
    a = ap.parse_args()
    spec = dict(gen_tiny_model.VARIANTS["llama_headdim"], hidden=a.hidden, inter=a.inter, layers=a.layers,
                heads=a.heads, kv_heads=a.kv_heads, head_dim=a.hidden // a.heads, vocab=a.vocab, dtype=a.dtype,
                tied=False, max_pos=4096)
    os.makedirs(a.out, exist_ok=True)
    gen_tiny_model.write_json(os.path.join(a.out, "config.json"), gen_tiny_model.make_config(spec))
    gen_tiny_model.write_weights(a.out, gen_tiny_model.make_weights(spec, np.random.default_rng(1)), 2)


if __name__ == "__main__":
    main()
