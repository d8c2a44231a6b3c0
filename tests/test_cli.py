"""The command line as a new user meets it (issue 24):
  - `-m FILE.gguf` converts once into $FERRY_HOME (one line says so) and reuses the copy: the same tokens as a
    model converted by hand; a changed file (mtime) is converted again; `-m NAME` finds the copy (run, inspect);
    `ferry list` shows it with its size, weight format and source; an unknown name and a broken GGUF fail in one
    line naming them, nothing left behind;
  - an unknown option is one line with a did-you-mean and where the help is; `--temperature` is `--temp`;
    `-n -1` generates until the end of sequence or --ctx; `inspect -m`; `convert` of a missing file; `ppl` on a
    short text names a --ctx that fits (and it does); `batch` says "1 request", writes no error file without
    errors, and no ETA once done; `tokenize --pieces` shows the text of each piece; `detokenize` ends with a
    newline; `run` ends with one speed line (prefill and decode tok/s) unless --stats.
"""

import glob
import json
import os
import re

from ferrytest import Failures, ferry, gemma_gguf, scratch, tiny_model

import hf_to_gguf  # noqa: E402 (tools/, put on the path by ferrytest)


def one_line(f, p, code, needles, what):
    lines = p.stderr.strip().splitlines()
    f.check(p.returncode == code and len(lines) == 1 and all(n in p.stderr for n in needles),
            f"{what}: exit {p.returncode} (want {code}), stderr {p.stderr!r} (want one line with {needles})")


def env_ferry(env, *args):
    old = dict(os.environ)
    os.environ.update(env)
    try:
        return ferry(*args)
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_model_home(f, root, hf):
    gguf = os.path.join(root, "tiny-chat.gguf")
    hf_to_gguf.convert(hf, gguf, "F32")
    direct = os.path.join(root, "direct.ferry")
    ferry("convert", gguf, "-o", direct, check=True)
    home = os.path.join(root, "home")
    env = {"FERRY_HOME": home}
    args = ["--prompt-ids", "1,2,3", "-n", 6, "--temp", 0, "--print-ids", "--ignore-eos"]
    want = ferry("run", "-m", direct, *args).stdout
    p = env_ferry(env, "run", "-m", gguf, *args)
    f.check(p.returncode == 0 and p.stdout == want and want.strip(), f"-m GGUF: {p.stdout!r} vs {want!r}: {p.stderr}")
    f.check(p.stderr.count("converting") == 1 and home in p.stderr, f"-m GGUF: one line says it converts: {p.stderr!r}")
    p = env_ferry(env, "run", "-m", gguf, *args)
    f.check(p.returncode == 0 and p.stdout == want and "converting" not in p.stderr, f"-m GGUF again: {p.stderr!r}")
    p = env_ferry(env, "run", "-m", "tiny-chat", *args)
    f.check(p.returncode == 0 and p.stdout == want, f"-m NAME: {p.stdout!r}, {p.stderr!r}")
    for a in (["-m", "tiny-chat"], ["tiny-chat"]):
        p = env_ferry(env, "inspect", *a)
        f.check(p.returncode == 0 and "arch llama" in p.stdout, f"inspect {a}: {p.returncode} {p.stderr!r}")
    p = env_ferry(env, "list")
    row = [x for x in p.stdout.splitlines() if x.startswith("tiny-chat ")]
    f.check(p.returncode == 0 and "1 model" in p.stdout and len(row) == 1, f"list: {p.stdout!r}")
    if row:
        f.check("F32 100%" in row[0] and os.path.realpath(gguf) in row[0] and re.search(r"\d KiB|\d MiB", row[0]),
                f"list row: {row[0]!r}")
    t = os.stat(gguf).st_mtime + 10
    os.utime(gguf, (t, t))
    p = env_ferry(env, "run", "-m", gguf, *args)
    f.check(p.returncode == 0 and p.stdout == want and "converting" in p.stderr, f"changed GGUF: {p.stderr!r}")
    one_line(f, env_ferry(env, "run", "-m", "no-such-model", *args), 1, ["no-such-model", "ferry list"], "unknown name")
    broken = os.path.join(root, "broken.gguf")
    with open(gguf, "rb") as src, open(broken, "wb") as dst:
        dst.write(src.read()[:5000])
    p = env_ferry(env, "run", "-m", broken, *args)
    errs = [x for x in p.stderr.strip().splitlines() if "converting" not in x]
    f.check(p.returncode == 1 and len(errs) == 1 and "broken" in errs[0], f"broken GGUF: {p.stderr!r}")
    left = sorted(os.path.basename(x) for x in glob.glob(os.path.join(home, "*")))
    f.check(left == ["tiny-chat.ferry", "tiny-chat.source.json"], f"model home holds {left}")
    p = env_ferry({"FERRY_HOME": os.path.join(root, "empty")}, "list")
    f.check(p.returncode == 0 and "0 models" in p.stdout, f"list of an empty home: {p.stdout!r} {p.stderr!r}")


def test_polish(f, root, model):
    one_line(f, ferry("run", "-m", model, "-p", "x", "--temprature", "1"), 2,
             ["'--temprature'", "did you mean --temperature?", "see `ferry run --help`"], "run: a typo")
    one_line(f, ferry("run", "-m", model, "-p", "x", "--frobnicate"), 2,
             ["'--frobnicate'", "see `ferry run --help`"], "run: an unknown option")
    one_line(f, ferry("batch", "-m", model, "in", "-o", "out", "--max-bach", "2"), 2,
             ["did you mean --max-batch?", "see `ferry batch --help`"], "batch: a typo")
    one_line(f, ferry("ppl", "-m", model, "x.txt", "--ctxx", "8"), 2, ["did you mean --ctx?"], "ppl: a typo")
    one_line(f, ferry("run", "-m", model, "-p"), 2, ["-p needs a value"], "run: -p without its value")
    a = ferry("run", "-m", model, "-p", "the sea", "-n", 8, "--temp", 0.8, "--seed", 5, "--ignore-eos")
    b = ferry("run", "-m", model, "-p", "the sea", "-n", 8, "--temperature", 0.8, "--seed", 5, "--ignore-eos")
    f.check(a.returncode == 0 and a.stdout == b.stdout, f"--temperature is --temp: {a.stdout!r} {b.stdout!r}")
    p = ferry("run", "-m", model, "--prompt-ids", "1,2,3,4", "-n", -1, "--ctx", 24, "--ignore-eos", "--print-ids")
    f.check(p.returncode == 0 and len(p.stdout.split()) == 20, f"-n -1 --ctx 24: {len(p.stdout.split())} tokens")
    p = ferry("run", "-m", model, "--prompt-ids", "1,2,3,4", "-n", -1, "--ctx", 24, "--print-ids")
    f.check(p.returncode == 0 and 1 <= len(p.stdout.split()) <= 20, f"-n -1 up to eos: {p.stdout!r} {p.stderr!r}")
    speed = re.compile(r"^ferry: prefill [\d.]+ tok/s \(\d+ tokens\), decode [\d.]+ tok/s \(\d+ tokens\)$")
    lines = a.stderr.strip().splitlines()
    f.check(len(lines) == 1 and speed.match(lines[0]), f"run: one speed line: {a.stderr!r}")
    p = ferry("run", "-m", model, "-p", "the sea", "-n", 4, "--stats")
    f.check(p.returncode == 0 and "ferry: io:" in p.stderr and not any(speed.match(x) for x in p.stderr.splitlines()),
            f"run --stats: the full statistics: {p.stderr!r}")
    one_line(f, ferry("convert", os.path.join(root, "nothing.gguf")), 1, ["nothing.gguf", "no such file"],
             "convert of a missing file")

    text = os.path.join(root, "short.txt")
    with open(text, "w") as fh:
        fh.write("the sea is red at night and the old map shows the gold far away in the wind\n")
    p = ferry("ppl", "-m", model, text)
    m = re.search(r"--ctx (\d+) fits", p.stderr)
    one_line(f, p, 1, ["short.txt", "fewer than one chunk", "fits"], "ppl on a short text")
    if m:
        q = ferry("ppl", "-m", model, text, "--ctx", m.group(1))
        f.check(q.returncode == 0 and "PPL = " in q.stdout, f"ppl --ctx {m.group(1)} (suggested): {q.stderr!r}")

    inp, out = os.path.join(root, "one.jsonl"), os.path.join(root, "one.out.jsonl")
    with open(inp, "w") as fh:
        fh.write(json.dumps({"id": 1, "prompt": "the sea", "max_tokens": 4}) + "\n")
    p = ferry("batch", "-m", model, inp, "-o", out)
    f.check(p.returncode == 0 and "batch: 1 request in" in p.stderr and "ETA" not in p.stderr,
            f"batch of one request: {p.stderr!r}")
    f.check(not os.path.exists(out + ".errors.jsonl"), "batch without errors wrote an error file")
    with open(inp, "a") as fh:
        fh.write("not json\n")
    p = ferry("batch", "-m", model, inp, "-o", out)
    f.check(p.returncode == 3 and os.path.exists(out + ".errors.jsonl") and "1 request already" in p.stderr,
            f"batch with a bad line: exit {p.returncode}, {p.stderr!r}")


def test_text_tools(f):
    g = gemma_gguf(f)
    p = ferry("tokenize", "-m", g, "--pieces", "Hello wörld")
    rows = [x.split("\t") for x in p.stdout.splitlines()]
    f.check(p.returncode == 0 and ["4010", '"ör"'] in rows and ["9259", '"Hello"'] in rows,
            f"tokenize --pieces shows each piece's text: {p.stdout!r}")
    p = ferry("detokenize", "-m", g, "9259", "515")
    f.check(p.returncode == 0 and p.stdout == "Hello w\n", f"detokenize ends with a newline: {p.stdout!r}")


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        hf, model = tiny_model("llama_headdim", root)
        test_model_home(f, root, hf)
        test_polish(f, root, model)
        test_text_tools(f)
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
