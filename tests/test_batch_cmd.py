"""`ferry batch` on a tiny model (tools/gen_tiny_model.py, with its byte-level BPE tokenizer and chat template):
  - 200 requests (prompts and chat messages, greedy and seeded sampling, max_tokens 1..24, stop strings) give
    one result line per id, each equal to the same request run alone in its own file;
  - killed with SIGKILL at random points and rerun until done, the output holds each id exactly once and equals
    the uninterrupted run; a last line cut by a crash is dropped and redone; SIGINT exits 130, resumable;
  - invalid lines (not JSON, no id, duplicate id, wrong types, empty stop) go to the error file with their line
    numbers while the rest runs (exit 3); missing input, missing -o, bad options fail with one line.
"""

import json
import os
import random
import signal
import subprocess
import time

from ferrytest import FERRY, Failures, ferry, scratch, tiny_model


def requests(n, rnd):
    words = ["the", "sea", "a", "ship", "red", "sky", "night", "old", "map", "gold", "wind", "far"]
    out = []
    for i in range(n):
        text = " ".join(rnd.choice(words) for _ in range(rnd.randrange(1, 30)))
        r = {"id": i if i % 3 else f"r{i}", "max_tokens": rnd.randrange(1, 25)}
        if i % 5 == 0:
            r["messages"] = [{"role": "user", "content": text}]
        else:
            r["prompt"] = text
        if i % 4 == 1:
            r.update(temperature=0.9, top_p=0.9, seed=i)
        if i % 7 == 2:
            r["stop"] = ["e", "zz"]
        out.append(r)
    return out


def write(path, reqs, extra_lines=()):
    with open(path, "w") as f:
        for r in reqs:
            f.write(json.dumps(r) + "\n")
        for line in extra_lines:
            f.write(line + "\n")


def count_lines(path):
    try:
        with open(path, "rb") as fh:
            return fh.read().count(b"\n")
    except FileNotFoundError:
        return 0


def results(path):
    got = {}
    dup = []
    for line in open(path):
        r = json.loads(line)
        k = json.dumps(r["id"])
        if k in got:
            dup.append(k)
        got[k] = r
    return got, dup


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        _, model = tiny_model("llama_headdim", root)
        rnd = random.Random(11)
        reqs = requests(200, rnd)
        inp = os.path.join(root, "in.jsonl")
        write(inp, reqs)
        ref_out = os.path.join(root, "ref.jsonl")
        p = ferry("batch", "-m", model, inp, "-o", ref_out, "--max-batch", 16)
        f.check(p.returncode == 0, f"uninterrupted run: exit {p.returncode}: {p.stderr.strip()[-300:]}")
        ref, dup = results(ref_out)
        f.check(len(ref) == 200 and not dup, f"uninterrupted: {len(ref)} results, duplicates {dup}")
        reasons = {r["finish_reason"] for r in ref.values()}
        f.check(reasons == {"stop", "length"}, f"finish reasons {reasons}")
        for r in ref.values():
            req = reqs[r["id"] if isinstance(r["id"], int) else int(r["id"][1:])]
            ok = r["usage"]["completion_tokens"] <= req["max_tokens"] and r["usage"]["total_tokens"] == \
                r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"]
            if "stop" in req and r["finish_reason"] == "stop":
                ok = ok and "e" not in r["text"] and "zz" not in r["text"]
            f.check(ok, f"request {r['id']}: {r}")

        # each of a few requests alone gives what it gave in the batch
        for i in (0, 1, 2, 9, 14):
            one = os.path.join(root, f"one{i}.jsonl")
            write(one, [reqs[i]])
            o = os.path.join(root, f"one{i}.out")
            p = ferry("batch", "-m", model, one, "-o", o)
            got, _ = results(o) if p.returncode == 0 else ({}, [])
            k = json.dumps(reqs[i]["id"])
            f.check(got.get(k) == ref.get(k), f"request {k} alone {got.get(k)} != in the batch {ref.get(k)}")

        # killed at random points, resumed until done
        out = os.path.join(root, "out.jsonl")
        kills, rc, errs = 0, None, []
        # killed once the output has reached each of 5 random line counts, then run to the end
        for target in sorted(rnd.sample(range(5, 195), 5)) + [None]:
            proc = subprocess.Popen([FERRY, "batch", "-m", model, inp, "-o", out, "--max-batch", "16"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            while target is not None and proc.poll() is None and count_lines(out) < target:
                time.sleep(0.002)
            if proc.poll() is None and target is not None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            _, err = proc.communicate()
            if proc.returncode not in (0, -signal.SIGKILL):
                errs.append(err.strip()[-300:])
            rc = proc.returncode
            if kills == 3 and target is not None:  # a crash in the middle of a line: the next run must drop it
                with open(out, "a") as fh:
                    fh.write('{"id": 12345, "text": "cut')
        f.check(not errs, f"kill/resume: runs failed: {errs}")
        got, dup = results(out) if rc == 0 else ({}, ["run never finished"])
        print(f"resumed after {kills} kills: {len(got)} results")
        f.check(rc == 0 and kills >= 3, f"kill/resume: finished {rc == 0} after {kills} kills")
        f.check(not dup and got == ref, f"kill/resume: duplicates {dup}, equal to the uninterrupted run: {got == ref}")

        # SIGINT: exit 130 with the finished results kept, then resume
        out2 = os.path.join(root, "out2.jsonl")
        proc = subprocess.Popen([FERRY, "batch", "-m", model, inp, "-o", out2, "--max-batch", "4"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None and count_lines(out2) < 100:
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate()
        f.check(proc.returncode in (0, 130), f"SIGINT: exit {proc.returncode}: {err.strip()[-200:]}")
        p = ferry("batch", "-m", model, inp, "-o", out2, "--max-batch", 4)
        got, dup = results(out2)
        f.check(p.returncode == 0 and not dup and got == ref, f"after SIGINT: exit {p.returncode}, equal {got == ref}")

        # invalid lines go to the error file; the rest runs
        bad = os.path.join(root, "bad.jsonl")
        write(bad, reqs[:3], ['not json', '{"prompt": "no id"}', json.dumps(reqs[0]), '{"id": 7, "prompt": 5}',
                              '{"id": 8, "prompt": "x", "stop": [""]}', '{"id": 9, "prompt": "x", "max_tokens": -1}',
                              '[1, 2]'])
        o = os.path.join(root, "bad.out")
        p = ferry("batch", "-m", model, bad, "-o", o)
        got, _ = results(o)
        errs = [json.loads(line) for line in open(o + ".errors.jsonl")]
        f.check(p.returncode == 3 and len(got) == 3, f"bad lines: exit {p.returncode}, {len(got)} results")
        f.check([e["line"] for e in errs] == [4, 5, 6, 7, 8, 9, 10], f"error lines {[e['line'] for e in errs]}")
        f.check("line 4" in p.stderr and "appears twice" in p.stderr, f"stderr names the lines: {p.stderr}")

        for args, needle in ((["batch", "-m", model, os.path.join(root, "missing.jsonl"), "-o", o], "missing.jsonl"),
                             (["batch", "-m", model, inp], "-o OUT"),
                             (["batch", "-m", model, inp, "-o", o, "--max-batch", "0"], "--max-batch")):
            p = ferry(*args)
            lines = [x for x in p.stderr.splitlines() if x.startswith("ferry:")]
            f.check(p.returncode != 0 and needle in p.stderr and len(lines) == 1,
                    f"{args[-2:]}: exit {p.returncode}, stderr {p.stderr.strip()[:200]!r}")
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
