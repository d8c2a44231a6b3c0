"""`ferry run` with text prompts: -p/-f go through the model's tokenizer exactly as the `tokenizers` package
encodes them (BOS included as the tokenizer.json says), generation from text equals generation from the
same ids, the streamed text equals the decode of the generated ids, and bad prompt arguments fail clearly."""

import os
import subprocess

from ferrytest import FERRY, Failures, ferry, scratch, tiny_model


def raw(*args):
    """ferry with bytes in and out: a random model's text need not be valid UTF-8."""
    return subprocess.run([FERRY, *[a if isinstance(a, bytes) else str(a).encode() for a in args]], capture_output=True)


def main():
    from tokenizers import Tokenizer

    fails = Failures()
    tmp, cleanup = scratch()
    try:
        hf, model = tiny_model("llama3_rope", tmp)
        hf_tok = Tokenizer.from_file(os.path.join(hf, "tokenizer.json"))
        prompt = "Hello world, it's a tiny model: 123 ünïcode"
        want = hf_tok.encode(prompt).ids
        p = ferry("tokenize", "-m", model, prompt)
        got = [int(x) for x in p.stdout.split()]
        fails.check(p.returncode == 0 and got == want, f"ferry tokenize == tokenizers with special tokens: {got} vs {want}")

        a = ferry("run", "-m", model, "-p", prompt, "-n", "12", "--temp", "0", "--ignore-eos", "--print-ids")
        b = ferry("run", "-m", model, "--prompt-ids", ",".join(map(str, want)), "-n", "12", "--temp", "0",
                  "--ignore-eos")
        fails.check(a.returncode == 0 and b.returncode == 0 and a.stdout == b.stdout and len(a.stdout.split()) == 12,
                    f"-p TEXT generates what --prompt-ids of its tokens generates ({a.stderr.strip()} {b.stderr.strip()})")
        prompt_file = os.path.join(tmp, "prompt.txt")
        with open(prompt_file, "w", encoding="utf-8") as f:
            f.write(prompt)
        c = ferry("run", "-m", model, "-f", prompt_file, "-n", "12", "--temp", "0", "--ignore-eos", "--print-ids")
        fails.check(c.returncode == 0 and c.stdout == a.stdout, "-f FILE equals -p TEXT")

        ids = [int(x) for x in a.stdout.split()]
        t = raw("run", "-m", model, "-p", prompt, "-n", "12", "--temp", "0", "--ignore-eos")
        d = raw("detokenize", "-m", model, *ids)
        fails.check(t.returncode == 0 and d.returncode == 0 and t.stdout == d.stdout + b"\n",
                    f"streamed text == detokenize of the generated ids: {t.stdout!r} vs {d.stdout!r}")

        bad = [
            (["run", "-m", model, "-p", "x", "--prompt-ids", "1"], 2, b"one of -p"),
            (["run", "-m", model, "-f", os.path.join(tmp, "missing.txt")], 1, b"missing.txt"),
            (["run", "-m", model, "-p", b"abc\xff"], 1, b"UTF-8"),
        ]
        for args, code, needle in bad:
            r = raw(*args)
            fails.check(r.returncode == code and needle in r.stderr, f"{args[-1]!r}: exit {r.returncode}, {r.stderr!r}")
        os.rename(os.path.join(model, "tokenizer.json"), os.path.join(tmp, "tokenizer.json.bak"))
        r = ferry("run", "-m", model, "-p", "hi")
        fails.check(r.returncode == 1 and "tokenizer" in r.stderr, f"a model without a tokenizer: {r.stderr.strip()}")
    finally:
        cleanup()
    fails.finish()


if __name__ == "__main__":
    main()
