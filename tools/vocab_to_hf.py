"""Builds a Hugging Face tokenizer.json equivalent to a byte-level BPE vocabulary-only GGUF file, with the
pre-tokenizer its model family uses on the Hub. Used by the tokenizer tests to compare ferry's tokenizer.json
path with the `tokenizers` package. Read with gguf-py (an independent GGUF reader).

The pre-tokenizer configurations are those of the models' own tokenizer.json files; for llama-bpe and qwen2
(no vocabulary of their own in the test data) another byte-level vocabulary is used with their
pre-tokenizer, which exercises the regexes and ignore_merges.

usage: python3 vocab_to_hf.py VOCAB.gguf OUT.json [--pre NAME]
"""

import functools
import json
import sys

import gguf

GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
DEEPSEEK_LLM_LETTERS = (
    "\\s?["
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba"
    "\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45"
    "\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
    "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc"
    "\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3"
    "\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06"
    "\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
    "\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
    "\U0001e900-\U0001e943"
    "]+"
)


def split(regex, behavior="Isolated"):
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": behavior, "invert": False}


def byte_level(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def digits(individual):
    return {"type": "Digits", "individual_digits": individual}


PRE = {
    "gpt-2": (None, [byte_level(True)], False),
    "starcoder": (None, [digits(True), byte_level(True)], False),
    "falcon": (None, [{"type": "Punctuation", "behavior": "Contiguous"}, byte_level(True), digits(False),
                      split("[0-9][0-9][0-9]")], False),
    "deepseek-coder": (None, [split("[\r\n]"), split("\\s?\\p{L}+"), split("\\s?\\p{P}+"), split(CJK),
                              digits(True), byte_level(False)], False),
    "deepseek-llm": (None, [split("[\r\n]"), split(DEEPSEEK_LLM_LETTERS),
                            split("\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"), split("\\s+$"), split(CJK), digits(True),
                            byte_level(False)], False),
    "llama-bpe": (None, [split(LLAMA3_RE), byte_level(False)], True),
    "qwen2": ({"type": "NFC"}, [split(QWEN2_RE), byte_level(False)], False),
}


def field(reader, key):
    f = reader.fields[key]
    return f.contents()


@functools.lru_cache(maxsize=None)
def read_vocab(path):
    r = gguf.GGUFReader(path)
    keys = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.pre")
    return tuple(field(r, k) for k in keys)


def build(path, pre_name=None):
    tokens, types, merges, pre = read_vocab(path)
    pre = pre_name or pre
    normalizer, pretoks, ignore_merges = PRE[pre]
    vocab, added = {}, []
    for i, (tok, ty) in enumerate(zip(tokens, types)):
        vocab.setdefault(tok, i)
        if ty in (3, 4):  # control, user-defined
            added.append({"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": ty == 4, "special": ty == 3})
    # Only merges whose parts and result are tokens (the same filter both implementations apply).
    ok_merges = [m for m in merges if len(m.split(" ")) == 2 and all(p in vocab for p in m.split(" "))
                 and m.replace(" ", "") in vocab]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pretoks},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": ignore_merges, "vocab": vocab, "merges": ok_merges},
    }


def main():
    args = sys.argv[1:]
    pre = None
    if "--pre" in args:
        i = args.index("--pre")
        pre = args[i + 1]
        del args[i:i + 2]
    src, out = args
    with open(out, "w", encoding="utf-8") as f:
        json.dump(build(src, pre), f, ensure_ascii=False)


if __name__ == "__main__":
    main()
