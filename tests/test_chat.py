"""`ferry chat`:
  - driven through stdin (not a terminal) on a tiny model: three turns, each reply (greedy) equal to `ferry batch`
    on the same messages, i.e. to a fresh prefill of the whole rendered conversation, while the second turn
    steps only the new tokens (the speed line reports the earlier turns' positions reused);
  - the commands: /help, /system (the system turn goes first, and the replies still equal batch's), /stats,
    /save and /load (JSON messages; a missing or malformed file is named and the chat goes on), /reset,
    an unknown command, /exit (nothing after it runs); a bad -m or option fails in one line;
  - on a pseudo-terminal (Python's pty): the prompt, a message typed, the reply streamed (bytes arrive before
    the reply is done), Ctrl-C mid-reply stops it and the prompt comes back, a command still works, Ctrl-C
    twice at the prompt exits 0;
  - on Gemma 3 270M given as its GGUF file (converted once into $FERRY_HOME): two factual turns, the second
    reusing the first's positions, both equal to `ferry batch -m NAME` on the same messages.
"""

import json
import os
import pty
import re
import select
import signal
import subprocess
import time

from ferrytest import FERRY, Failures, ferry, gemma_gguf, scratch, tiny_model


# The equality with a fresh prefill is a property of the KV bookkeeping, checked on the CPU, where stepping
# tokens one at a time and in one pass agree to ~1e-6 (a GPU's GEMM path for long steps differs by ~1e-2,
# enough to flip a near tie of a random tiny model).
DEVICE = ["--device", "cpu"]


def chat(model, lines, *args, env=None):
    return subprocess.run([FERRY, "chat", "-m", model, *DEVICE, *map(str, args)], input="".join(x + "\n" for x in lines),
                          capture_output=True, text=True, env=env, timeout=600)


def reused(stderr):
    """The positions reused per turn, from the speed lines."""
    return [int(m) for m in re.findall(r"^\[(?:stopped; )?prefill \d+ tokens \((\d+) reused\)", stderr, re.M)]


def batch_reply(model, msgs, n, root, env=None):
    inp, out = os.path.join(root, "b.jsonl"), os.path.join(root, "b.out.jsonl")
    if os.path.exists(out):
        os.unlink(out)
    with open(inp, "w") as fh:
        fh.write(json.dumps({"id": 0, "messages": msgs, "max_tokens": n, "temperature": 0}) + "\n")
    p = subprocess.run([FERRY, "batch", "-m", model, inp, "-o", out, *DEVICE], capture_output=True, text=True, env=env)
    if p.returncode:
        return f"<batch failed: {p.stderr.strip()}>"
    return json.loads(open(out).readline())["text"]


def check_against_batch(f, model, saved, n, root, what, env=None):
    """Every assistant message of the saved conversation equals batch's greedy reply to the messages before it."""
    msgs = json.load(open(saved))
    turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    f.check(len(turns) >= 2, f"{what}: {len(turns)} replies saved")
    for i in turns:
        want = batch_reply(model, msgs[:i], n, root, env)
        f.check(msgs[i]["content"] == want, f"{what}: reply {i}: chat {msgs[i]['content']!r} != batch {want!r}")


def test_stdin(f, model, root):
    saved = os.path.join(root, "conv.json")
    p = chat(model, ["the sea is", "red sky at night", "old map", "/save " + saved], "-n", 12)
    f.check(p.returncode == 0, f"three turns: exit {p.returncode}: {p.stderr[-300:]}")
    r = reused(p.stderr)
    f.check(len(r) == 3 and r[0] == 0 and r[1] > 0, f"three turns: positions reused {r} (turn 2 should reuse turn 1's)")
    check_against_batch(f, model, saved, 12, root, "three turns")

    s2, bad = os.path.join(root, "s2.json"), os.path.join(root, "bad.json")
    with open(bad, "w") as fh:
        json.dump([{"role": "user"}], fh)
    lines = ["/help", "/system You answer in one word.", "hello there", "/stats", "/save " + saved, "/reset",
             "/load /nonexistent/x.json", "/load " + bad, "/bogus", "/save", "/load " + saved, "a far ship",
             "/save " + s2, "/exit", "never sent"]
    p = chat(model, lines, "-n", 8)
    out, err = p.stdout, p.stderr
    f.check(p.returncode == 0, f"commands: exit {p.returncode}: {err[-300:]}")
    f.check("/system TEXT" in out and "/load FILE" in out, "commands: /help lists the commands")
    f.check("(system turn set)" in out, "commands: /system answered")
    f.check(re.search(r"1 turns; 3 messages", out) is not None, f"commands: /stats: {out[:400]!r}")
    f.check("(conversation cleared; the system turn kept)" in out, "commands: /reset answered")
    f.check("/nonexistent/x.json" in err and bad + ": message 1" in err, f"commands: bad /load files named: {err!r}")
    f.check("unknown command /bogus" in err and "/save needs a FILE" in err, "commands: unknown command, /save alone")
    msgs = json.load(open(s2))
    roles = [m["role"] for m in msgs]
    f.check(roles == ["system", "user", "assistant", "user", "assistant"], f"commands: saved roles {roles}")
    f.check(msgs[0]["content"] == "You answer in one word." and msgs[3]["content"] == "a far ship",
            f"commands: saved contents {msgs}")
    f.check(len(reused(err)) == 2, f"commands: {len(reused(err))} turns ran (nothing after /exit)")
    check_against_batch(f, model, s2, 8, root, "with a system turn")

    p = ferry("chat", "-m", os.path.join(root, "missing.ferry"))
    f.check(p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and "missing.ferry" in p.stderr,
            f"missing model: exit {p.returncode}, {p.stderr!r}")
    p = ferry("chat", "-m", model, "--sytem", "x")
    f.check(p.returncode == 2 and "did you mean --system?" in p.stderr and len(p.stderr.strip().splitlines()) == 1,
            f"bad option: exit {p.returncode}, {p.stderr!r}")


class Pty:
    def __init__(self, argv, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(argv[0], argv, env)
        self.buf = b""

    def read_until(self, pred, timeout):
        end = time.time() + timeout
        while time.time() < end and not pred(self.buf):
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if r:
                try:
                    d = os.read(self.fd, 65536)
                except OSError:
                    break
                if not d:
                    break
                self.buf += d
        return pred(self.buf)

    def send(self, data):
        os.write(self.fd, data)

    def wait(self, timeout):
        end = time.time() + timeout
        while time.time() < end:
            self.read_until(lambda b: False, 0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        return None


def test_pty(f, model, root):
    env = dict(os.environ, FERRY_HOME=os.path.join(root, "home"), TERM="dumb")
    t = Pty([FERRY, "chat", "-m", model, "--ignore-eos", "--ctx", "4000"], env)
    f.check(t.read_until(lambda b: b">>> " in b, 60), f"pty: no prompt: {t.buf[-300:]!r}")
    t.buf = b""
    t.send(b"the sea is\r")
    # the reply (up to 4000 tokens, --ignore-eos) streams: bytes arrive while it is still being generated
    streamed = t.read_until(lambda b: len(b.split(b"the sea is", 1)[-1]) > 40, 60)
    f.check(streamed, f"pty: no streamed reply: {t.buf[-300:]!r}")
    t.send(b"\x03")
    back = t.read_until(lambda b: b"stopped" in b and b.rstrip().endswith(b">>>"), 30)
    f.check(back, f"pty: Ctrl-C mid-reply did not stop it and give the prompt back: {t.buf[-300:]!r}")
    m = re.search(rb"\[stopped; prefill \d+ tokens \(\d+ reused\) [\d.]+ tok/s, decode (\d+) tokens", t.buf)
    f.check(m is not None and 0 < int(m.group(1)) < 3900, f"pty: speed line of the stopped reply: {t.buf[-300:]!r}")
    t.buf = b""
    t.send(b"/stats\r")
    f.check(t.read_until(lambda b: b"1 turns; 2 messages" in b and b.rstrip().endswith(b">>>"), 30),
            f"pty: /stats after Ctrl-C: {t.buf[-300:]!r}")
    time.sleep(0.5)  # a Ctrl-C before readline reads the terminal is only counted at the next one
    t.send(b"\x03")
    f.check(t.read_until(lambda b: b"Ctrl-C again" in b, 30), f"pty: first Ctrl-C at the prompt: {t.buf[-300:]!r}")
    f.check(os.waitpid(t.pid, os.WNOHANG)[0] == 0, "pty: the first Ctrl-C at the prompt ended the program")
    time.sleep(0.5)
    t.send(b"\x03")
    rc = t.wait(30)
    f.check(rc == 0, f"pty: second Ctrl-C at the prompt: exit {rc}")
    f.check(os.path.exists(os.path.join(root, "home", "chat_history")), "pty: history file written")

    t = Pty([FERRY, "chat", "-m", model, "-n", "4"], env)
    t.read_until(lambda b: b">>> " in b, 60)
    time.sleep(0.5)  # readline has the terminal in its mode
    t.send(b"\x04")
    rc = t.wait(30)
    f.check(rc == 0, f"pty: Ctrl-D: exit {rc}")


def test_gemma(f, root):
    gguf = gemma_gguf(f)
    home = os.path.join(root, "home")
    env = dict(os.environ, FERRY_HOME=home)
    saved = os.path.join(root, "gemma.json")
    p = chat(gguf, ["What is the capital of France?", "And of Italy?", "/save " + saved], "-n", 12, env=env)
    f.check(p.returncode == 0, f"gemma: exit {p.returncode}: {p.stderr[-300:]}")
    f.check(p.stderr.count("converting") == 1, f"gemma: converted once: {p.stderr[:300]!r}")
    r = reused(p.stderr)
    f.check(len(r) == 2 and r[1] > 20, f"gemma: positions reused {r}")
    name = os.path.basename(gguf)[:-5]
    check_against_batch(f, name, saved, 12, root, "gemma", env)


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        _, model = tiny_model("llama_headdim", root)
        test_stdin(f, model, root)
        test_pty(f, model, root)
        test_gemma(f, root)
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
