#!/usr/bin/env python3
"""Reference fixture for the real-model test: Hugging Face transformers on Gemma 3 270M (Q4_K_M GGUF).

transformers loads the GGUF itself (gguf-py dequantizes every tensor to float32; its own tokenizer is built
from the GGUF vocabulary) and runs in float32 with eager attention. For each of the 10 fixed prompts below
this records:
  ids       the prompt's token ids from transformers' tokenizer (BOS first, as the GGUF says)
  greedy    generate(do_sample=False, max_new_tokens=64) with end-of-sequence disabled
  top       for every position of prompt + greedy[:-1], one full no-cache forward: the 20 largest logits
            as [[id, value], ...] (descending), so position p predicts token p + 1
  margin    top-1 minus top-2 logit at each generated position (a near-tie there would make greedy
            fragile under any change of summation order)
Written as JSON to --out (tests/fixtures/gemma3_270m_ref.json); tests/test_gemma_ref.py compares ferry.

Command that made the committed fixture (on the CPU machine: torch 2.11.0 (CPU), transformers 5.17.0,
gguf 0.19.0; the GGUF cannot travel to the GPU machine, whose carry limit is 64 MiB):
    python3 tools/gemma_ref.py --gguf models/gemma-3-270m-q4_k_m.gguf --out tests/fixtures/gemma3_270m_ref.json
"""

import argparse
import json
import os
import sys

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village by the sea, there lived",
    "Q: What is 17 multiplied by 23?\nA:",
    "The three primary colors are",
    "<start_of_turn>user\nWrite a haiku about the ocean.<end_of_turn>\n<start_of_turn>model\n",
    "La photosynthèse est le processus par lequel",
    "Here is a list of fruits:\n1. Apple\n2. Banana\n3.",
    "東京は日本の首都であり、",
    "In 1969, Neil Armstrong became the first person to",
]
N_GEN = 64
TOP = 20


def gemma_tokenizer(path):
    """transformers' GemmaTokenizer (the class of Gemma 3's own tokenizer.json: BPE with byte fallback, spaces as
    U+2581) over the GGUF's vocabulary, merges from transformers' generate_merges by score (as its SentencePiece
    converter derives them), control and user-defined tokens added whole. transformers' own GGUF path
    (AutoTokenizer.from_pretrained(gguf_file=...)) builds a Unigram model for gemma3 and splits words into
    pieces the model never saw ("capital" -> "▁c ap it al"), and adds no BOS; it is not used."""
    from gguf import GGUFReader
    from transformers import AddedToken, GemmaTokenizer
    from transformers.convert_slow_tokenizer import generate_merges

    r = GGUFReader(path)
    toks = r.fields["tokenizer.ggml.tokens"].contents()
    scores = r.fields["tokenizer.ggml.scores"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    vocab, vscores, added = {}, {}, []
    for i, (t, sc, ty) in enumerate(zip(toks, scores, types)):
        spaces = " " in t and not t.strip()
        if spaces:  # whitespace runs are stored with spaces; the normalizer makes them U+2581, matched after it
            t = "\u2581" * len(t)
        vocab[t] = i
        vscores[t] = sc
        if ty in (3, 4):  # control, user-defined: whole tokens, as SentencePiece's user-defined symbols
            added.append(AddedToken(t, special=ty == 3, normalized=spaces))
    merges = generate_merges(vocab, vscores, skip_tokens=[a.content for a in added])
    tok = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    tok.add_tokens(added)
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    d, f = os.path.split(os.path.abspath(a.gguf))
    tok = gemma_tokenizer(a.gguf)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    out = {"model": f, "torch": torch.__version__, "transformers": transformers.__version__, "n_gen": N_GEN,
           "top": TOP, "prompts": []}
    for text in PROMPTS:
        ids = tok(text).input_ids
        with torch.no_grad():
            g = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=N_GEN, eos_token_id=None,
                               pad_token_id=0, min_new_tokens=0)
            greedy = g[0, len(ids):].tolist()
            seq = ids + greedy[:-1]
            logits = model(torch.tensor([seq]), use_cache=False).logits[0].float()
        vals, idx = torch.topk(logits, TOP, dim=-1)
        top = [[[int(i), float(v)] for i, v in zip(ri.tolist(), rv.tolist())] for ri, rv in zip(idx, vals)]
        margin = [float(vals[p, 0] - vals[p, 1]) for p in range(len(ids) - 1, len(seq))]
        argmax = idx[len(ids) - 1:, 0].tolist()
        agree = sum(int(x == y) for x, y in zip(argmax, greedy))
        print(f"{len(ids):3d} prompt ids, {agree}/{len(greedy)} no-cache argmax == generate, min margin "
              f"{min(margin):.4f}: {tok.decode(greedy)[:60]!r}", file=sys.stderr)
        out["prompts"].append({"text": text, "ids": ids, "greedy": greedy, "top": top,
                               "margin": [round(m, 6) for m in margin]})
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(out, fh, separators=(",", ":"))
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
