"""Byte-level BPE tokenizers against the `tokenizers` package (Hugging Face's Rust implementation).

For each byte-level vocabulary in ../shared/data/vocab an equivalent tokenizer.json is built
(tools/vocab_to_hf.py), plus the Llama 3 and Qwen2 pre-tokenizers over the GPT-2 vocabulary. On the llama.cpp
test strings and a 1 MiB mixed corpus (tools/make_corpus.py: code, prose, CJK, emoji, whitespace runs,
numbers), ferry must give exactly the ids `tokenizers` gives:
  - special tokens written in the text parsed (HF's default) and not parsed (encode_special_tokens),
  - through ferry's tokenizer.json path and, where the vocabulary is the GGUF's own, its GGUF path,
and decoding must give what `tokenizers` decode gives (the text back, except where an added token is a
byte-map character: DeepSeek's 'ÿ' decodes to the byte 0xFF, i.e. U+FFFD, in both)."""

import json
import os
import sys

from ferrytest import ROOT, Failures, ferry, scratch

sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_corpus  # noqa: E402
import vocab_to_hf  # noqa: E402

VOCAB = os.path.join(ROOT, "..", "shared", "data", "vocab")
CASES = [("gpt-2", None), ("starcoder", None), ("falcon", None), ("deepseek-coder", None), ("deepseek-llm", None),
         ("gpt-2", "llama-bpe"), ("gpt-2", "qwen2")]


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def compare(fails, label, texts, got, expected):
    bad = [i for i, (g, e) in enumerate(zip(got, expected)) if g != e]
    for i in bad[:3]:
        k = first_diff(got[i], expected[i])
        print(f"  {label} text #{i}: first difference at token {k}: ferry {got[i][k:k + 6]} "
              f"tokenizers {expected[i][k:k + 6]}")
    fails.check(len(got) == len(expected) and not bad, f"{label}: {len(texts) - len(bad)}/{len(texts)} texts equal")


def main():
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("skip: the tokenizers package is not installed (tools/install_deps.sh installs it)")
        sys.exit(77)
    if not os.path.isdir(VOCAB):
        print("skip: no vocabularies in", VOCAB)
        sys.exit(77)
    fails = Failures()
    tmp, cleanup = scratch()
    try:
        corpus = make_corpus.corpus(1 << 20)
        fails.check(len(corpus.encode("utf-8")) >= 1 << 20, "corpus of at least 1 MiB")
        texts = [t for t in corpus.split("\n\n") if t]
        with open(os.path.join(VOCAB, "ggml-vocab-gpt-2.gguf.inp"), encoding="utf-8", newline="") as f:
            texts += f.read().split("\n__ggml_vocab_test__\n")
        src = os.path.join(tmp, "texts.json")
        with open(src, "w", encoding="utf-8") as f:
            json.dump(texts, f)
        for name, pre in CASES:
            gguf = os.path.join(VOCAB, f"ggml-vocab-{name}.gguf")
            tj = os.path.join(tmp, f"{name}-{pre or 'own'}.json")
            with open(tj, "w", encoding="utf-8") as f:
                json.dump(vocab_to_hf.build(gguf, pre), f, ensure_ascii=False)
            hf = Tokenizer.from_file(tj)
            label = name if pre is None else f"{name} vocabulary, {pre} pre-tokenizer"
            for parse in (True, False):
                hf.encode_special_tokens = not parse
                expected = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
                flags = ["--parse-special"] if parse else []
                sources = [("tokenizer.json", tj)] + ([("gguf", gguf)] if pre is None else [])
                for kind, path in sources:
                    p = ferry("tokenize", "-m", path, "--no-add-special", *flags, "--json", src)
                    what = f"{label} ({kind}, specials {'parsed' if parse else 'as text'})"
                    if fails.check(p.returncode == 0, f"{what}: ran ({p.stderr.strip()[:200]})"):
                        got = json.loads(p.stdout)
                        compare(fails, what, texts, got, expected)
            ids = os.path.join(tmp, "ids.json")
            with open(ids, "w") as f:
                json.dump(got, f)
            p = ferry("detokenize", "-m", tj, "--special", "--json", ids)
            if fails.check(p.returncode == 0, f"{label}: detokenize ran ({p.stderr.strip()[:200]})"):
                back = json.loads(p.stdout)
                want = hf.decode_batch(got, skip_special_tokens=False)
                bad = sum(b != w for b, w in zip(back, want))
                fails.check(bad == 0 and len(back) == len(texts), f"{label}: {bad} texts decode differently")
    finally:
        cleanup()
    fails.finish()


if __name__ == "__main__":
    main()
