"""Tokenizers against the real vocabularies in ../shared/data/vocab (llama.cpp's test set, expected ids made
with each model's Hugging Face tokenizer): every test string encodes (no special tokens) to exactly the
expected ids, and decodes back to itself.

Skips (77) when the shared data folder is absent."""

import glob
import json
import os
import sys

from ferrytest import ROOT, Failures, ferry, scratch

VOCAB = os.path.join(ROOT, "..", "shared", "data", "vocab")
SEP = "\n__ggml_vocab_test__\n"


def load_cases(gguf):
    with open(gguf + ".inp", encoding="utf-8", newline="") as f:
        inp = f.read()
    with open(gguf + ".out", encoding="utf-8", newline="") as f:
        out = f.read().split("\n")
    texts = inp.split(SEP)
    if texts and texts[-1].endswith("\n"):
        texts[-1] = texts[-1][:-1]
    ids = [[int(x) for x in line.split()] for line in out[: len(texts)]]
    return texts, ids


def main():
    files = sorted(glob.glob(os.path.join(VOCAB, "ggml-vocab-*.gguf")))
    if not files:
        print("skip: no vocabularies in", VOCAB)
        sys.exit(77)
    fails = Failures()
    tmp, cleanup = scratch()
    try:
        for gguf in files:
            name = os.path.basename(gguf)[len("ggml-vocab-"):-len(".gguf")]
            texts, expected = load_cases(gguf)
            fails.check(len(texts) == len(expected) and len(texts) > 10, f"{name}: {len(texts)} test strings")
            src = os.path.join(tmp, name + ".json")
            with open(src, "w", encoding="utf-8") as f:
                json.dump(texts, f)
            p = ferry("tokenize", "-m", gguf, "--no-add-special", "--json", src)
            if not fails.check(p.returncode == 0, f"{name}: tokenize ran ({p.stderr.strip()})"):
                continue
            got = json.loads(p.stdout)
            bad = [i for i, (g, e) in enumerate(zip(got, expected)) if g != e]
            for i in bad[:5]:
                print(f"  {name} #{i} {texts[i]!r}\n    expected {expected[i]}\n    got      {got[i]}")
            fails.check(not bad, f"{name}: {len(texts) - len(bad)}/{len(texts)} strings tokenize exactly")
            ids_file = os.path.join(tmp, name + ".ids.json")
            with open(ids_file, "w") as f:
                json.dump(got, f)
            p = ferry("detokenize", "-m", gguf, "--json", ids_file)
            if not fails.check(p.returncode == 0, f"{name}: detokenize ran ({p.stderr.strip()})"):
                continue
            back = json.loads(p.stdout)
            lossy = [i for i, (b, t) in enumerate(zip(back, texts)) if b != t]
            for i in lossy[:5]:
                print(f"  {name} #{i} decode {back[i]!r} != {texts[i]!r}")
            fails.check(not lossy, f"{name}: decode(encode(s)) == s for {len(texts) - len(lossy)}/{len(texts)}")
    finally:
        cleanup()
    fails.finish()


if __name__ == "__main__":
    main()
