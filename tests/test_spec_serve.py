"""Speculative decoding per request beside continuous batching, in `ferry batch` and `ferry serve` (CPU, a tiny
Llama with its tokenizer; exact: a request's greedy tokens do not depend on what shares its steps):
  - `ferry batch` with --spec combined (the model as its own draft under a flat pass cost, so trees are deep),
    --spec draft (a draft of another seed: low acceptance) and --spec lookup, six lines of different lengths at
    --max-batch 3 (requests join and leave while others speculate), one line with "speculative": false: every
    line's tokens equal the plain batch's; the summary names tokens per pass, passes and accepted guesses, and
    --stats-json's spec block has passes and tokens per pass above 1 (the own draft accepts);
  - `ferry serve --spec combined --draft` (its own draft) and `--spec draft` (another seed): six concurrent
    greedy completions, each the text the plain server gives for it; one with "speculative": false; /health's
    spec block counts passes, tokens per pass above 1 for the own draft, and its acceptance, and tokens per
    decode step (plain steps included: between 1 and tokens per pass).
"""

import json
import os
import re
import threading

from ferrytest import Failures, ferry, scratch, tiny_model
from test_serve import Server  # (the server on loopback; it needs the openai package, as test_serve.py does)

WORDS = ["the", "sea", "a", "ship", "red", "sky", "night", "old", "map", "gold", "wind", "far"]


def prompts(n):
    # repeated phrases: lookup finds n-grams; lengths differ so requests finish at different steps
    out = []
    for i in range(n):
        phrase = " ".join(WORDS[(i * 5 + j * 3) % len(WORDS)] for j in range(3 + i % 4))
        out.append((phrase + " ") * (2 + i % 3))
    return out


def batch(f, model, inp, root, name, extra):
    out, sj = os.path.join(root, f"{name}.jsonl"), os.path.join(root, f"{name}.json")
    p = ferry("batch", "-m", model, inp, "-o", out, "--stats-json", sj, "--max-batch", 3, "--device", "cpu", *extra)
    if not f.check(p.returncode == 0, f"batch {name}: {p.stderr.strip()[-400:]}"):
        return None, None, ""
    res = sorted((o["id"], o["tokens"]) for o in map(json.loads, open(out)))
    return res, json.load(open(sj)).get("spec", {}), p.stderr


def serve_texts(f, model, name, extra, reqs):
    """The completions' texts of reqs sent at once (threads), and /health after."""
    sv = Server(model, "--max-batch", 4, *extra)
    texts, errs = [None] * len(reqs), []

    def one(i):
        try:
            status, body = sv.http("POST", "/v1/completions", reqs[i])
            texts[i] = json.loads(body)["choices"][0]["text"] if status == 200 else f"status {status}: {body[:200]}"
        except Exception as e:  # noqa: BLE001 (any failure is the test's finding)
            errs.append(f"{name} request {i}: {e}")

    try:
        th = [threading.Thread(target=one, args=(i,)) for i in range(len(reqs))]
        for t in th:
            t.start()
        for t in th:
            t.join(600)
        health = sv.health()
    finally:
        sv.stop()
    f.check(not errs, "; ".join(errs))
    return texts, health


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        _, model = tiny_model("llama_headdim", root)
        _, other = tiny_model("llama_headdim", os.path.join(root, "seed1"), seed=1)
        ps = prompts(6)
        lines = [{"id": i, "prompt": p, "max_tokens": 8 + 7 * i, "temperature": 0} for i, p in enumerate(ps)]
        lines[4]["speculative"] = False
        inp = os.path.join(root, "in.jsonl")
        with open(inp, "w") as fh:
            fh.write("".join(json.dumps(x) + "\n" for x in lines))
        want, _, _ = batch(f, model, inp, root, "plain", [])
        own = ["--draft", model, "--spec-cost", "0.7,0", "--spec-max", 32]
        for name, extra in (("combined", ["--spec", "combined", *own]), ("draft", ["--spec", "draft", "--draft", other]),
                            ("lookup", ["--spec", "lookup"])):
            got, sp, err = batch(f, model, inp, root, name, extra)
            if got is None:
                continue
            f.check(got == want, f"batch --spec {name}: tokens differ from the plain batch:\n{got}\n{want}")
            summary = [x for x in err.split("\n") if "ferry: batch:" in x]
            f.check(summary and re.search(r"tokens per speculative pass \(\d+ passes, \d+ of \d+ guesses accepted\)",
                                          summary[-1]), f"batch --spec {name}: summary {summary}")
            f.check(sp.get("passes", 0) > 0 and sp.get("tokens_per_pass", 0) >= 1,
                    f"batch --spec {name}: --stats-json spec {sp}")
            if name == "combined":
                f.check(sp["tokens_per_pass"] > 2 and sp["accepted"] > 0, f"batch combined, own draft: {sp}")
            print(f"batch --spec {name}: identical, {sp.get('tokens_per_pass', 0):.2f} tokens per pass", flush=True)

        reqs = [{"prompt": p, "max_tokens": 6 + 5 * i, "temperature": 0} for i, p in enumerate(ps)]
        reqs[2]["speculative"] = False
        plain, _ = serve_texts(f, model, "plain", [], reqs)
        for name, extra in (("combined", ["--spec", "combined", *own]), ("draft", ["--spec", "draft", "--draft", other])):
            got, health = serve_texts(f, model, name, extra, reqs)
            f.check(got == plain, f"serve --spec {name}: texts differ from the plain server's:\n{got}\n{plain}")
            sp = health.get("spec", {})
            f.check(sp.get("mode") == name and sp.get("passes", 0) > 0 and 0 < sp.get("acceptance", 0) <= 1,
                    f"serve --spec {name}: /health spec {sp}")
            # per decode step, plain steps included (the "speculative": false request's): at least one token a
            # step, and no more than a pass gives
            f.check(sp.get("decode_steps", 0) >= sp["passes"] and 1 <= sp.get("tokens_per_step", 0) <= sp["tokens_per_pass"],
                    f"serve --spec {name}: /health spec per step {sp}")
            if name == "combined":
                f.check(sp.get("tokens_per_pass", 0) > 2 and sp["tokens_per_step"] > 1.5,
                        f"serve combined, own draft: /health spec {sp}")
            print(f"serve --spec {name}: identical, /health {sp}", flush=True)
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
