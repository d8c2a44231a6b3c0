"""`ferry run` with text prompts: -p/-f go through the model's tokenizer exactly as the `tokenizers` package
encodes them (BOS included as the tokenizer.json says), generation from text equals generation from the
same ids, the streamed text equals the decode of the generated ids, and bad prompt arguments fail clearly.
--chat renders the model's chat template as jinja2 does in transformers' apply_chat_template (system and
user turns, generation prompt) and encodes it as transformers does (special tokens matched, none added)."""

import os
import subprocess

from ferrytest import FERRY, Failures, ferry, scratch, tiny_model


def raw(*args):
    """ferry with bytes in and out: a random model's text need not be valid UTF-8."""
    return subprocess.run([FERRY, *[a if isinstance(a, bytes) else str(a).encode() for a in args]], capture_output=True)


def hf_chat_ids(hf, hf_tok, system, user):
    """transformers' apply_chat_template(tokenize=True) without transformers: the template rendered by
    jinja2 in HF's environment (tests/hf_jinja.py), the tokenizer's special tokens as variables, then
    encoded without adding special tokens."""
    import json

    import hf_jinja
    with open(os.path.join(hf, "tokenizer_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    env = hf_jinja.hf_env()
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    tokens = {k: cfg[k] for k in ("bos_token", "eos_token") if cfg.get(k)}
    text = env.from_string(cfg["chat_template"]).render(messages=msgs, add_generation_prompt=True, **tokens)
    return text, hf_tok.encode(text, add_special_tokens=False).ids


def check_chat(fails, tmp):
    from tokenizers import Tokenizer
    os.mkdir(os.path.join(tmp, "chat"))
    for variant in ("llama3_rope", "qwen2_bias", "llama_tied_gqa"):
        hf, model = tiny_model(variant, os.path.join(tmp, "chat"))
        hf_tok = Tokenizer.from_file(os.path.join(hf, "tokenizer.json"))
        for system in (None, "You are terse. <|eot_id|> is text here"):
            user = "Say hi: ünïcode \"quoted\"\n  two lines  "
            text, want = hf_chat_ids(hf, hf_tok, system, user)
            args = ["run", "-m", model, "--chat", "-p", user, "-n", "6", "--temp", "0", "--ignore-eos", "--print-ids",
                    "--show-prompt"] + (["--system", system] if system else [])
            a = ferry(*args)
            b = ferry("run", "-m", model, "--prompt-ids", ",".join(map(str, want)), "-n", "6", "--temp", "0",
                      "--ignore-eos")
            fails.check(a.returncode == 0 and a.stderr.startswith(text + "\n"),
                        f"{variant}: --chat renders the template as jinja2: {a.stderr[:300]!r} vs {text!r}")
            fails.check(a.returncode == 0 and a.stdout == b.stdout and len(a.stdout.split()) == 6,
                        f"{variant}: --chat generates what the HF-encoded chat prompt generates")
    with open(os.path.join(model, "chat_template.jinja"), "w") as f:
        f.write("{% for m in messages %}{{ m.content | bogus }}{% endfor %}")
    r = ferry("run", "-m", model, "--chat", "-p", "hi")
    fails.check(r.returncode == 1 and "chat_template.jinja:1" in r.stderr and "bogus" in r.stderr,
                f"a template with an unknown filter: {r.stderr.strip()}")
    os.remove(os.path.join(model, "chat_template.jinja"))
    r = ferry("run", "-m", model, "--chat", "-p", "hi")
    fails.check(r.returncode == 1 and "chat_template.jinja" in r.stderr, f"a model without its template: {r.stderr.strip()}")
    r = ferry("run", "-m", model, "--system", "x", "-p", "hi")
    fails.check(r.returncode == 2 and "--chat" in r.stderr, f"--system without --chat: {r.stderr.strip()}")


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
        fails.check(t.returncode == 0 and d.returncode == 0 and t.stdout == d.stdout,
                    f"streamed text == detokenize of the generated ids: {t.stdout!r} vs {d.stdout!r}")

        bad = [
            (["run", "-m", model, "-p", "x", "--prompt-ids", "1"], 2, b"one of -p"),
            (["run", "-m", model, "-f", os.path.join(tmp, "missing.txt")], 1, b"missing.txt"),
            (["run", "-m", model, "-p", b"abc\xff"], 1, b"UTF-8"),
        ]
        for args, code, needle in bad:
            r = raw(*args)
            fails.check(r.returncode == code and needle in r.stderr, f"{args[-1]!r}: exit {r.returncode}, {r.stderr!r}")
        check_chat(fails, tmp)
        os.rename(os.path.join(model, "tokenizer.json"), os.path.join(tmp, "tokenizer.json.bak"))
        r = ferry("run", "-m", model, "-p", "hi")
        fails.check(r.returncode == 1 and "tokenizer" in r.stderr, f"a model without a tokenizer: {r.stderr.strip()}")
    finally:
        cleanup()
    fails.finish()


if __name__ == "__main__":
    main()
