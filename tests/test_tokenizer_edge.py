"""Edge cases of the tokenizer.json path against the `tokenizers` package (the reference, run at test time).

Each case is a tokenizer.json built here as a dict (mostly a byte-level "probe" vocabulary: token i is byte
i under GPT-2's byte map, so the ids show every piece boundary and every byte) plus inputs. For encode
cases ferry must give the ids `tokenizers` gives with and without add_special_tokens, with special tokens
parsed and not (encode_special_tokens), and decoding those ids must give what `tokenizers` decode gives
with skip_special_tokens true and false. Decode cases check given id lists the same way. Covers the 17
bugs of the tokenizer review (fuse_unk and the word cache, normalized added tokens, Unicode whitespace in
lstrip/rstrip/Strip, single_word, Lowercase, the Whitespace pre-tokenizer's \\w, characters without a
token, partial byte fallback, Metaspace "first" and its decoder, lossy decoding, added tokens through
the decoder, empty regex matches, multi-token templates, no decoder) and neighbouring variants.
Configs ferry refuses must be refused with an error naming the field, never approximated (a Replace
normalizer whose pattern can match the empty string, on which tokenizers panics; decoder orders ferry does not model)."""

import json
import os
import random
import subprocess
import sys

from ferrytest import FERRY, Failures, gen_tiny_model, scratch


BM = gen_tiny_model.bytes_to_unicode()
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}


def added(id, content, special=False, normalized=None, lstrip=False, rstrip=False, single_word=False):
    return {"id": id, "content": content, "single_word": single_word, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": (not special) if normalized is None else normalized, "special": special}


def tokenizer(vocab, merges=(), added_tokens=(), normalizer=None, pre=None, post=None, decoder=None, **model):
    m = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
         "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
         "vocab": vocab, "merges": [list(x) for x in merges]}
    m.update(model)
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": list(added_tokens),
            "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": post, "decoder": decoder, "model": m}


def probe(pre_steps=(), added_tokens=(), merges=(), normalizer=None, post=None):
    """Byte-level vocabulary (ids 0..255 = bytes), extra added tokens from 256, ByteLevel pre-tokenizer last."""
    vocab = {BM[b]: b for b in range(256)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    toks = []
    for i, (content, kw) in enumerate(added_tokens):
        toks.append(added(len(vocab) + i, content, **kw))
    pre = {"type": "Sequence", "pretokenizers": list(pre_steps) + [BYTE_LEVEL]}
    return tokenizer(vocab, merges, toks, normalizer, pre, post, dict(BYTE_LEVEL))


def spm(pre=None, normalizer=None, decoder=None, **model):
    """A small SentencePiece-style vocabulary (▁ for spaces, merges by rank)."""
    pieces = ["<unk>", "<s>", "</s>", "\u2581", "h", "e", "l", "o", "w", "r", "d", "\u2581\u2581", "\u2581\u2581\u2581",
              "he", "ll", "hell", "hello", "\u2581h", "\u2581hello", "wo", "rl", "wor", "world", "\u2581w", "\u2581world"]
    merges = [("\u2581", "\u2581"), ("\u2581\u2581", "\u2581"), ("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"),
              ("\u2581", "h"), ("\u2581", "hello"), ("w", "o"), ("r", "l"), ("wo", "r"), ("wor", "l"), ("\u2581", "w")]
    vocab = {p: i for i, p in enumerate(pieces)}
    vocab["worl"] = len(vocab)
    vocab["\u2581wor"] = len(vocab)
    merges = [m for m in merges if m[0] + m[1] in vocab]
    post = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                     {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    toks = [added(0, "<unk>", True), added(1, "<s>", True), added(2, "</s>", True)]
    kw = {"unk_token": "<unk>", "fuse_unk": True}
    kw.update(model)
    return tokenizer(vocab, merges, toks, normalizer, pre, post, decoder, **kw)


def meta(scheme, split=False):
    return {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": split}


def cases():
    """(name, tokenizer.json dict, "encode" | "decode", inputs)"""
    c = []
    # 1: fuse_unk never fuses across pre-tokens; the word cache must not keep a neighbour-dependent result.
    t = tokenizer({"<unk>": 0, "a": 1, "b": 2, "ab": 3}, [("a", "b")], [added(0, "<unk>", True, False)],
                  pre={"type": "WhitespaceSplit"}, unk_token="<unk>", fuse_unk=True)
    c.append(("01 fuse_unk + word cache", t, "encode", ["x y", "y", "ab x", "x", "xy<unk>z", "z", "xx yy"]))
    t2 = json.loads(json.dumps(t))
    t2["model"]["fuse_unk"] = False
    c.append(("01 unk not fused", t2, "encode", ["xy z", "xy"]))
    # 2: normalized added tokens are matched in the normalized text by their normalized content.
    lower = {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]}
    t = probe(added_tokens=[("zqhello", {}), ("qq\u00e9", {}), ("RAW", {"normalized": False}),
                            ("<SP>", {"special": True, "normalized": True}), ("<sq>", {"special": True, "normalized": True}),
                            ("ZQ", {})], normalizer=lower)
    c.append(("02 normalized added tokens", t, "encode",
              ["ZQHELLO Zqhello", "qqe\u0301", "xqqe\u0301y", "RAW raw", "<sp> <SP>", "zqRAWhello", "<SQ>x<sq>", "zq ZQ"]))
    # 3: lstrip/rstrip take Unicode White_Space.
    ws = "\u00a0\u3000\u2028\u0085\u1680\u202f \t"
    t = probe(added_tokens=[("<tag>", {"special": True, "normalized": False, "lstrip": True, "rstrip": True}),
                            ("<l>", {"lstrip": True, "normalized": False}), ("<r>", {"rstrip": True, "normalized": False})])
    c.append(("03 lstrip/rstrip whitespace", t, "encode",
              [f"a{w}<tag>{w}b" for w in ws] + ["\u00a0<tag>\u00a0", "x \u3000<l> \u3000y", "x \u3000<r> \u3000y",
                                                 "a\u001f<tag>\u001cb", "<tag>  <tag>"]))
    # 4: single_word looks at the neighbouring character with Rust regex's \w.
    t = probe(added_tokens=[("<tag>", {"normalized": False, "single_word": True})])
    nb = ["\u2014", "\U0001F600", "\u00a0", "\u3000", "a", "1", "_", "\u0301", "\u00e9", "\u0663", "\u200d", "\u24b6", "-"]
    c.append(("04 single_word neighbours", t, "encode", [f"{x}<tag>{x}" for x in nb] + ["<tag>", "x<tag>", "<tag>x"]))
    # 5: a match rejected by single_word is skipped whole; no shorter or overlapping token at its place.
    t = probe(added_tokens=[("abc<tag>", {"normalized": False, "single_word": True}), ("c<tag>", {"normalized": False}),
                            ("<tag>", {"normalized": False})])
    c.append(("05 single_word rejected match", t, "encode", ["abc<tag>x", "abc<tag> x", "zabc<tag>", "c<tag>"]))
    # A special token that is not parsed still hides the tokens it overlaps (HF), the same fallback rule.
    t = probe(added_tokens=[("<|s|>", {"special": True, "normalized": False}), ("s|>x", {"normalized": False})])
    c.append(("05 unparsed special hides overlap", t, "encode", ["<|s|>x", "a<|s|>xs|>x"]))
    # 6: Strip normalizer with White_Space.
    for left, right in ((True, True), (True, False), (False, True)):
        t = probe(normalizer={"type": "Strip", "strip_left": left, "strip_right": right})
        c.append((f"06 Strip {left}/{right}", t, "encode",
                  ["\u00a0hello\u00a0", "\u3000x\u3000", "\u2028y\u0085", " \t z \n", "\u001fq\u001f", "\u200bw\u200b"]))
    # 7: Lowercase is the full mapping (U+0130 -> i + U+0307).
    t = probe(normalizer={"type": "Lowercase"})
    c.append(("07 Lowercase", t, "encode", ["\u0130", "\u0130stanbul", "\u03a3\u039f\u03a3", "\u1e9e\u00df", "\u01c5\u2126K"]))
    # 8: the Whitespace pre-tokenizer's word class; WhitespaceSplit's White_Space.
    for kind in ("Whitespace", "WhitespaceSplit"):
        t = probe([{"type": kind}])
        c.append((f"08 {kind}", t, "encode",
                  ["a\u0301b", "x\u200dy", "x\u203fy", "x\u00bdy", "a\u0903b", "\u24b6\u24b7 c", "a\u0085b", "a\u00a0b",
                   "x1_2y!?z", "\u0663\u0664-\u2167", "\u200c\u200d"]))
    # 9: a character with no token (no unk, no byte fallback) is dropped, and its neighbours may merge.
    t = tokenizer({"\u0120": 0, "\u0120\u0120": 1, "a": 2}, [("\u0120", "\u0120")], pre=dict(BYTE_LEVEL),
                  decoder=dict(BYTE_LEVEL))
    c.append(("09 no token, no unk", t, "encode", [" \x0b ", " x ", "a\x0ba", "\x0b"]))
    # 10: byte fallback only when every byte has a <0xXX> token; else one unk; the pending unk follows.
    v = {"<unk>": 0, "a": 1, "b": 2, "<0xC3>": 3, "<0x78>": 4, "<0x79>": 5, "ab": 6}
    for fuse in (False, True):
        t = tokenizer(v, [("a", "b")], [added(0, "<unk>", True, False)], unk_token="<unk>", byte_fallback=True,
                      fuse_unk=fuse, decoder={"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]})
        c.append((f"10 partial byte fallback, fuse {fuse}", t, "encode",
                  ["\u00e9", "a\u00e9b", "\u4f60", "\u00e9x", "\u00e9\u00e9x", "\u00e9x\u00e9", "ab\u00e9ab"]))
    # unk can merge like any token.
    t = tokenizer({"<unk>": 0, "a": 1, "<unk>a": 2}, [("<unk>", "a")], [added(0, "<unk>", True, False)], unk_token="<unk>")
    c.append(("10 unk merges", t, "encode", ["za", "zza"]))
    # 11: Metaspace prepend_scheme "first" looks at the original offset 0.
    for name, pre, norm in (
            ("WhitespaceSplit", {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, meta("first")]}, None),
            ("Split Removed", {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed", "invert": False}, meta("first")]}, None),
            ("Strip normalizer", meta("first"), {"type": "Strip", "strip_left": True, "strip_right": False}),
            ("Replace to empty", meta("first"), {"type": "Replace", "pattern": {"String": "x"}, "content": ""}),
            ("always", meta("always", True), None), ("never", meta("never", True), None), ("first split", meta("first", True), None)):
        t = spm(pre, norm, meta("first" if "always" not in name and "never" not in name else name, True))
        t["added_tokens"].append(added(len(t["model"]["vocab"]), "<t>", True, False))
        t["model"]["vocab"]["<t>"] = len(t["model"]["vocab"])
        c.append((f"11 Metaspace {name}", t, "encode",
                  [" hello", "  hello world", "\nhello", "hello world", "xhello", "<t>hello", "hello<t> hello", "x x"]))
    # 12: the Metaspace decoder drops every ▁ of the first token; Strip after Fuse strips one space.
    for dec in (meta("first", True), meta("always", True), meta("never", True),
                {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                                  {"type": "ByteFallback"}, {"type": "Fuse"},
                                                  {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}):
        t = spm(meta("first", True), None, dec)
        c.append((f"12 decoder {dec.get('prepend_scheme', 'Strip')}", t, "decode",
                  [[12], [11, 18], [18, 11], [1, 12, 18], [2], [3], [1, 2, 3, 16]]))
    # 13: decoding gives valid UTF-8 as tokenizers does; no item is dropped.
    t = probe()
    c.append(("13 lossy ByteLevel decode", t, "decode",
              [[0x41, 0xA5], [0x42], [0xF0, 0x9F, 0x98], [0x43], [0xE4, 0xBD], [0xC0, 0x80], [0xED, 0xA0, 0x80],
               [0xF4, 0x90, 0x80, 0x80], [0xE4, 0xBD, 0xA0], [0xFF, 0x41]]))
    t = spm(None, {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
            {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                              {"type": "ByteFallback"}, {"type": "Fuse"},
                                              {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}, byte_fallback=True)
    n = len(t["model"]["vocab"])
    for b in (0x20, 0x41, 0xC3, 0xA9, 0xE4, 0xBD, 0xA0, 0xFF):
        t["model"]["vocab"][f"<0x{b:02X}>"] = n
        n += 1
    base = n - 8
    bid = {b: base + i for i, b in enumerate((0x20, 0x41, 0xC3, 0xA9, 0xE4, 0xBD, 0xA0, 0xFF))}
    c.append(("13 lossy ByteFallback decode", t, "decode",
              [[bid[0xE4], bid[0xBD]], [bid[0xC3], bid[0xA9], bid[0xFF]], [1, bid[0xE4], 2, bid[0xBD], 16],
               [bid[0xC3], bid[0xA9], 1, bid[0xFF]], [bid[0x20], 16], [bid[0xE4], bid[0xBD], bid[0xA0]], [bid[0x41]]]))
    c.append(("13 ByteFallback encode", t, "encode", ["hello A\u00e9 \u4f60", " \u00e9", "\u00ff"]))
    # 14: added tokens go through the decoder (ByteLevel maps a token only if every character is mapped).
    t = probe(added_tokens=[("\u0120zqfoo", {"normalized": False}), ("<\u0120zqsp>", {"special": True, "normalized": False}),
                            ("\u4f60\u0120", {"normalized": False})])
    c.append(("14 added tokens decoded", t, "decode", [[0x78, 256, 0x79], [257], [258, 0x41], [257, 256]]))
    t = spm(meta("first", True), None, meta("first", True))
    t["added_tokens"].append(added(len(t["model"]["vocab"]), "\u2581tok\u2581", False, False))
    t["model"]["vocab"]["\u2581tok\u2581"] = len(t["model"]["vocab"])
    c.append(("14 added token through Metaspace", t, "decode", [[len(t["model"]["vocab"]) - 1, 16], [16, len(t["model"]["vocab"]) - 1]]))
    # 15: patterns that can match the empty string split (and replace) as tokenizers does.
    rnd = random.Random(15)
    texts = ["hello", "--", "", "aab", "baac", "a a", "ba", "ab\nba"] + [
        "".join(rnd.choice("ab-\n") for _ in range(rnd.randint(1, 9))) for _ in range(6)]
    for pat in ("a*", "b?", "(?=a)", "\\b", "a*|-", ""):
        for beh in ("Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"):
            for inv in (False, True):
                t = probe([{"type": "Split", "pattern": {"Regex": pat}, "behavior": beh, "invert": inv}])
                c.append((f"15 Split /{pat}/ {beh} invert={inv}", t, "encode", texts))
    # 16: templates with several specials on a side, and multi-id specials.
    S = lambda n: {"SpecialToken": {"id": n, "type_id": 0}}  # noqa: E731
    A = {"Sequence": {"id": "A", "type_id": 0}}
    sp = {"<a>": {"id": "<a>", "ids": [256], "tokens": ["<a>"]}, "<b>": {"id": "<b>", "ids": [257, 256], "tokens": ["<b>", "<a>"]}}
    for single in ([S("<a>"), S("<a>"), A], [A, S("<a>"), S("<b>")], [S("<b>"), A, S("<a>")], [A]):
        post = {"type": "TemplateProcessing", "single": single, "pair": [A], "special_tokens": sp}
        t = probe(added_tokens=[("<a>", {"special": True, "normalized": False}), ("<b>", {"special": True, "normalized": False})],
                  post=post)
        c.append((f"16 template {len(single)} items", t, "encode", ["hi", "", "<a>x"]))
    # 17: no decoder: tokens joined with spaces (skipped specials leave no gap).
    t = tokenizer({"<unk>": 0, "a": 1, "b": 2, "ab": 3}, [("a", "b")], [added(0, "<unk>", True, False)],
                  pre={"type": "WhitespaceSplit"}, unk_token="<unk>")
    c.append(("17 no decoder", t, "decode", [[3, 3], [1, 2], [0, 3, 0, 1], [0], []]))
    c.append(("17 no decoder encode", t, "encode", ["ab ab x", "a b"]))
    return c


REFUSED = [
    ("decoder Strip before Fuse", spm(meta("first"), None, {"type": "Sequence", "decoders": [
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}), "decoder Strip"),
    ("decoder Metaspace after Fuse", spm(meta("first"), None, {"type": "Sequence", "decoders": [{"type": "Fuse"}, meta("first")]}),
     "decoder Metaspace"),
    ("Replace with an empty string", probe(normalizer={"type": "Replace", "pattern": {"String": ""}, "content": "Y"}),
     "normalizer Replace"),
    ("Replace with an empty regex", probe(normalizer={"type": "Replace", "pattern": {"Regex": ""}, "content": "Y"}),
     "normalizer Replace"),
    ("Replace with a regex matching empty", probe(normalizer={"type": "Replace", "pattern": {"Regex": "a*"}, "content": "Y"}),
     "normalizer Replace"),
    ("template without $A", probe(post={"type": "TemplateProcessing", "single": [], "pair": [], "special_tokens": {}}),
     "post_processor"),
]


def run_ferry(args):
    p = subprocess.run([FERRY, *args], capture_output=True)
    if p.returncode:
        return None, p.stderr.decode(errors="replace").strip()
    return json.loads(p.stdout.decode("utf-8")), ""


def compare(fails, what, inputs, want, got, err):
    """ferry's outputs (None if it failed) against tokenizers', item by item; prints the first two that differ."""
    if fails.check(got is not None, f"{what}: ferry failed: {err}"):
        bad = [(x, w, g) for x, w, g in zip(inputs, want, got) if w != g]
        for x, w, g in bad[:2]:
            print(f"  {what} {x!r}: tokenizers {w!r} ferry {g!r}")
        fails.check(len(got) == len(want) and not bad, f"{what}: {len(bad)} differ")


def main():
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("skip: the tokenizers package is not installed (tools/install_deps.sh installs it)")
        sys.exit(77)
    fails = Failures()
    tmp, cleanup = scratch()
    try:
        for i, (name, tj, kind, inputs) in enumerate(cases()):
            path = os.path.join(tmp, f"t{i}.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(tj, f, ensure_ascii=False)
            hf = Tokenizer.from_file(path)
            src = os.path.join(tmp, f"in{i}.json")
            idss = inputs
            if kind == "encode":
                with open(src, "w", encoding="utf-8") as f:
                    json.dump(inputs, f)
                for add in (False, True):
                    for parse in (True, False):
                        hf.encode_special_tokens = not parse
                        want = [hf.encode(s, add_special_tokens=add).ids for s in inputs]
                        args = ["tokenize", "-m", path, "--json", src] + ([] if add else ["--no-add-special"]) + (
                            ["--parse-special"] if parse else [])
                        got, err = run_ferry(args)
                        what = f"{name}: encode add_special={add} parse_special={parse}"
                        compare(fails, what, inputs, want, got, err)
                        if add and parse:
                            idss = want
            ids_src = os.path.join(tmp, f"ids{i}.json")
            with open(ids_src, "w") as f:
                json.dump(idss, f)
            for skip in (True, False):
                want = [hf.decode(ids, skip_special_tokens=skip) for ids in idss]
                got, err = run_ferry(["detokenize", "-m", path, "--json", ids_src] + ([] if skip else ["--special"]))
                what = f"{name}: decode skip_special={skip}"
                compare(fails, what, idss, want, got, err)
        for name, tj, field in REFUSED:
            path = os.path.join(tmp, "refused.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(tj, f, ensure_ascii=False)
            p = subprocess.run([FERRY, "tokenize", "-m", path, "x"], capture_output=True, text=True)
            fails.check(p.returncode != 0 and field in p.stderr and path in p.stderr and p.stderr.count("\n") == 1,
                        f"{name}: refused with one line naming the file and {field!r} (got {p.returncode}: {p.stderr.strip()})")
    finally:
        cleanup()
    fails.finish()


if __name__ == "__main__":
    main()
