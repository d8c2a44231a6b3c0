"""Tokenization throughput: ferry against the `tokenizers` package (Hugging Face, Rust), single-threaded, on
the same machine and the same 1 MiB mixed corpus (tools/make_corpus.py), same tokenizer.json
(tools/vocab_to_hf.py from the real vocabularies), special tokens parsed in both (HF's default).

ferry is timed in-process (`ferry tokenize --time N`: first pass with a cold word cache, and the best of N);
tokenizers is timed around Tokenizer.encode on the whole text (first and best of N) and around
encode_batch on the corpus split at blank lines with parallelism off. Prints MB/s side by side and
ferry / tokenizers.

usage: python3 bench/bench_tokenize.py [--repeat N]
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_corpus  # noqa: E402
import vocab_to_hf  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

FERRY = os.environ.get("FERRY_BIN", os.path.join(ROOT, "build", "ferry"))
VOCAB = os.path.join(ROOT, "..", "shared", "data", "vocab")
CASES = [("gpt-2", None), ("gpt-2", "llama-bpe"), ("gpt-2", "qwen2"), ("deepseek-llm", None), ("starcoder", None)]


def best_of(fn, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times[0], min(times)


def ferry_time(model, corpus_path, n):
    p = subprocess.run([FERRY, "tokenize", "-m", model, "--no-add-special", "--parse-special", "-f", corpus_path,
                        "--time", str(n)], capture_output=True, text=True, check=True)
    m = re.search(r"first pass ([\d.]+) s .* best of \d+ ([\d.]+) s", p.stderr)
    return float(m.group(1)), float(m.group(2))


def main():
    n = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 5
    text = make_corpus.corpus(1 << 20)
    size = len(text.encode("utf-8"))
    chunks = [t for t in text.split("\n\n") if t]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus_path = os.path.join(tmp, "corpus.txt")
        with open(corpus_path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        for name, pre in CASES:
            tj = os.path.join(tmp, f"{name}-{pre}.json")
            with open(tj, "w", encoding="utf-8") as f:
                json.dump(vocab_to_hf.build(os.path.join(VOCAB, f"ggml-vocab-{name}.gguf"), pre), f, ensure_ascii=False)
            hf = Tokenizer.from_file(tj)
            f_first, f_best = ferry_time(tj, corpus_path, n)
            h_first, h_best = best_of(lambda: hf.encode(text, add_special_tokens=False), n)
            b_first, b_best = best_of(lambda: hf.encode_batch(chunks, add_special_tokens=False), n)
            rows.append((name if pre is None else f"{name}+{pre}", f_first, f_best, h_first, h_best, b_best))
        spm = os.path.join(VOCAB, "ggml-vocab-llama-spm.gguf")
        s_first, s_best = ferry_time(spm, corpus_path, n)
    mb = size / 1e6
    print(f"corpus {size} bytes; MB/s, single thread; ratio = ferry best / tokenizers best (encode or batch)")
    print(f"{'tokenizer':24} {'ferry 1st':>9} {'ferry best':>10} {'tok 1st':>8} {'tok best':>8} {'tok batch':>9} {'ratio':>6}")
    for label, f1, fb, h1, hb, bb in rows:
        ref = min(hb, bb)
        print(f"{label:24} {mb / f1:9.2f} {mb / fb:10.2f} {mb / h1:8.2f} {mb / hb:8.2f} {mb / bb:9.2f} {ref / fb:6.1f}")
    print(f"{'llama-spm (no HF peer)':24} {mb / s_first:9.2f} {mb / s_best:10.2f}")


if __name__ == "__main__":
    main()
