"""Grammar-constrained decoding (issue 24): decode tok/s of `ferry serve` with and without a JSON schema on the
same model, prompt and sampler, on the CPU. Each round runs the free request (ignore_eos, --gen tokens) and the
constrained one (response_format json_schema, up to --gen tokens; it ends where the JSON ends) one after the
other, so a competing load hits both alike; the figure is the median over --rounds of the server's own decode
rate (timings.predicted_per_second: the tokens after the first over their time). The floor is the free rate;
the ratio constrained / free (the target: >= 0.90). Also printed: the picks the grammar refused (a full
vocabulary mask was made for them, /health's grammar.masked) and the time those masks took.

  python3 bench/bench_grammar.py -m ~/.cache/ferry/qwen2.5-coder-1.5b-instruct-q4_k_m.ferry
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FERRY = os.environ.get("FERRY_BIN", os.path.join(ROOT, "build", "ferry"))

SCHEMA = {"type": "object", "properties": {
    "fruits": {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"}, "color": {"type": "string"}, "calories": {"type": "integer"}},
        "required": ["name", "color", "calories"], "additionalProperties": False}}},
    "required": ["fruits"], "additionalProperties": False}
PROMPT = "List ten fruits with their color and calories per 100 g, as JSON."


def post(url, body):
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=1200) as r:
        return json.loads(r.read())


def health(url):
    with urllib.request.urlopen(url + "/health", timeout=60) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    cmd = [FERRY, "serve", "-m", a.model, "--port", "0", "--device", "cpu", "--ctx", "1024", "--model-name", "m"]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = None
    while url is None:
        line = p.stderr.readline()
        if not line:
            sys.exit("ferry serve did not start")
        m = re.search(r"(http://[0-9.]+:\d+)/v1", line)
        url = m.group(1) if m else None
    try:
        base = {"messages": [{"role": "user", "content": PROMPT}], "temperature": 0, "max_tokens": a.gen}
        rf = {"type": "json_schema", "json_schema": {"name": "fruits", "schema": SCHEMA, "strict": True}}
        post(url, dict(base, response_format=rf, max_tokens=4))  # warm: the vocabulary trie, the RAM tier
        h0 = health(url)
        free, cons, n_cons, text = [], [], 0, ""
        for _ in range(a.rounds):
            r = post(url, dict(base, ignore_eos=True))
            free.append(r["timings"]["predicted_per_second"])
            r = post(url, dict(base, response_format=rf))
            cons.append(r["timings"]["predicted_per_second"])
            n_cons += r["usage"]["completion_tokens"]
            text = r["choices"][0]["message"]["content"]
        h1 = health(url)
    finally:
        p.terminate()
        p.wait(60)
    masked = h1["grammar"]["masked"] - h0["grammar"]["masked"]
    mask_s = h1["grammar"]["mask_s"] - h0["grammar"]["mask_s"]
    f, c = statistics.median(free), statistics.median(cons)
    print(f"model {a.model}, CPU, {a.rounds} rounds of {a.gen} tokens, greedy")
    print(f"free decode:        {f:.2f} tok/s (rounds {', '.join(f'{x:.2f}' for x in free)})  = floor")
    print(f"json_schema decode: {c:.2f} tok/s (rounds {', '.join(f'{x:.2f}' for x in cons)})")
    print(f"ratio constrained / free: {c / f:.3f}")
    print(f"full masks: {masked} of {n_cons} constrained tokens, {1e3 * mask_s / max(masked, 1):.1f} ms each")
    print(f"last constrained reply: {text[:160]!r}{'...' if len(text) > 160 else ''}")
    try:
        json.loads(text)
    except ValueError:
        print("(the last reply was cut at --gen tokens, before its JSON ended)")


if __name__ == "__main__":
    main()
