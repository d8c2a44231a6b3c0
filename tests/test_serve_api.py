"""`ferry serve`'s routes beyond completions and its defences (issue 24), on a tiny model on the CPU:
  - logprobs: completions' `logprobs: 5` and chat's `logprobs` + `top_logprobs` (OpenAI's shapes, streamed and
    whole) equal the log-softmax of the logits `ferry run --logits` dumps for the same prompt ids (1e-4), the
    tokens are the greedy ones, the alternatives are the 5 best in order; bad values get 400 naming the field;
  - a request without "model" is served by the served model; a "model" that is not a string is refused;
  - /tokenize and /detokenize (llama.cpp's shapes) round-trip a text, with pieces; bad ids get 400 "tokens";
  - /metrics: Prometheus text whose counters move with the requests made (responses by code, prompt and
    generated tokens, steps, KV pages used + free = all);
  - slowloris, on loopback: 200 connections from 8 source addresses (127.0.0.2-9) sending their headers a byte
    every 0.3 s; /health and a completion still answer within a second; every slow connection is closed by
    --request-timeout 3 although it keeps sending; more than --max-conns-per-ip from one address are refused
    while another address is served.
"""

import json
import os
import re
import select
import socket
import struct
import subprocess
import time

import numpy as np

from ferrytest import FERRY, Failures, scratch, tiny_model
from test_serve import NAME, Server

PROMPT_IDS = [5, 17, 42, 99, 7, 23]


def read_logits(path):
    with open(path, "rb") as fh:
        magic, _ver, rows, vocab = struct.unpack("<4sIII", fh.read(16))
        assert magic == b"FLGT", magic
        return np.frombuffer(fh.read(), dtype=np.float32).reshape(rows, vocab)


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def raw_request(port, data, timeout=5.0):
    """Sends data on a fresh connection and reads until the server closes it (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(timeout)
    s.sendall(data)
    got = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except OSError:
        pass
    s.close()
    return got


def check_logprobs(f, sv, root, model):
    n = 8
    dump = os.path.join(root, "logits.bin")
    p = subprocess.run([FERRY, "run", "-m", model, "--prompt-ids", ",".join(map(str, PROMPT_IDS)), "-n", str(n),
                        "--temp", "0", "--logits", dump, "--device", "cpu", "--print-ids"], capture_output=True,
                       text=True, timeout=120)
    if not f.check(p.returncode == 0, f"ferry run --logits: {p.stderr[-300:]}"):
        return
    rows = read_logits(dump)
    body = {"prompt": PROMPT_IDS, "max_tokens": n, "temperature": 0, "logprobs": 5, "ignore_eos": True}
    st, b = sv.http("POST", "/v1/completions", body)
    r = json.loads(b)
    lp = r["choices"][0]["logprobs"] if st == 200 else None
    if not f.check(lp and len(lp["token_logprobs"]) == n, f"completions logprobs: {st} {b[:300]}"):
        return
    P = r["usage"]["prompt_tokens"]
    f.check(P == len(PROMPT_IDS) and rows.shape[0] >= P + n - 1, f"prompt {P} tokens, {rows.shape[0]} logits rows")
    worst = 0.0
    for i in range(n):
        ls = log_softmax(rows[P - 1 + i])
        best = np.argsort(-ls, kind="stable")[:5]
        worst = max(worst, abs(lp["token_logprobs"][i] - ls[best[0]]))  # greedy: the chosen token is the best
        # a dict by token text (OpenAI's shape): tokens whose text is the same (byte tokens) share a key
        tops = list(lp["top_logprobs"][i].values())
        want = [float(ls[t]) for t in best]
        f.check(1 <= len(tops) <= 5 and abs(max(tops) - want[0]) < 1e-4 and
                all(min(abs(a - w) for w in want) < 1e-4 for a in tops),
                f"token {i}: top_logprobs {tops} vs log-softmax {want}")
    print(f"completions logprobs: {n} tokens, largest difference from log-softmax of --logits {worst:.2e}")
    f.check(worst < 1e-4, f"logprobs differ from the log-softmax of the dumped logits by {worst}")
    f.check(lp["text_offset"][0] == 0 and lp["text_offset"] == sorted(lp["text_offset"]),
            f"text_offset {lp['text_offset']}")

    # chat, whole and streamed: the same entries, OpenAI's shape
    msgs = [{"role": "user", "content": "the old map"}]
    body = {"messages": msgs, "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 3,
            "ignore_eos": True}
    st, b = sv.http("POST", "/v1/chat/completions", body)
    c = json.loads(b)["choices"][0]["logprobs"]["content"] if st == 200 else []
    ok = len(c) == 6 and all(set(e) == {"token", "logprob", "bytes", "top_logprobs"} and len(e["top_logprobs"]) == 3
                             and e["logprob"] == e["top_logprobs"][0]["logprob"] and e["logprob"] <= 0
                             for e in c)
    f.check(ok, f"chat logprobs: {st} {str(c)[:300]}")
    cl = sv.client()
    streamed = []
    for ch in cl.chat.completions.create(model=NAME, messages=msgs, max_tokens=6, temperature=0, logprobs=True,
                                         top_logprobs=3, stream=True, extra_body={"ignore_eos": True}):
        for x in ch.choices:
            if x.logprobs and x.logprobs.content:
                streamed += [e.model_dump() for e in x.logprobs.content]
    f.check([(e["token"], round(e["logprob"], 5)) for e in streamed] == [(e["token"], round(e["logprob"], 5)) for e in c],
            f"streamed chat logprobs {str(streamed)[:200]} != whole {str(c)[:200]}")
    st, b = sv.http("POST", "/v1/chat/completions", dict(body, logprobs=False))
    f.check(st == 400 and json.loads(b)["error"]["param"] == "top_logprobs", f"top_logprobs without logprobs: {st}")
    st, b = sv.http("POST", "/v1/completions", {"prompt": "x", "logprobs": 99})
    f.check(st == 400 and json.loads(b)["error"]["param"] == "logprobs", f"logprobs 99: {st} {b[:200]}")


def metrics(sv):
    st, b = sv.http("GET", "/metrics")
    out = {}
    for line in b.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return st, out


def check_routes(f, sv):
    # no "model": the served one
    st, b = sv.http("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    f.check(st == 200 and json.loads(b)["model"] == NAME, f"no model field: {st} {b[:200]}")
    st, b = sv.http("POST", "/v1/completions", {"model": ["x"], "prompt": "hi"})
    f.check(st == 400 and json.loads(b)["error"]["param"] == "model", f"model a list: {st} {b[:200]}")

    text = "the old map of the far sea"
    st, b = sv.http("POST", "/tokenize", {"content": text})
    toks = json.loads(b).get("tokens") if st == 200 else None
    f.check(toks and all(isinstance(t, int) for t in toks), f"/tokenize: {st} {b[:200]}")
    st, b = sv.http("POST", "/detokenize", {"tokens": toks or []})
    f.check(st == 200 and json.loads(b)["content"].strip() == text, f"/detokenize: {st} {b[:200]}")
    st, b = sv.http("POST", "/tokenize", {"content": text, "with_pieces": True})
    pieces = json.loads(b)["tokens"] if st == 200 else []
    f.check([p["id"] for p in pieces] == toks and "".join(p["piece"] for p in pieces).replace("\u2581", " ").strip()
            .replace("Ġ", " ") != "", f"/tokenize with_pieces: {st} {b[:200]}")
    for path, body, param in (("/tokenize", {"text": "x"}, "content"), ("/tokenize", {"content": "x", "add_special": 1},
                              "add_special"), ("/detokenize", {"tokens": [1, -3]}, "tokens"),
                              ("/detokenize", {"tokens": "12"}, "tokens")):
        st, b = sv.http("POST", path, body)
        try:
            ok = st == 400 and json.loads(b)["error"]["param"] == param
        except (ValueError, KeyError):
            ok = False
        f.check(ok, f"{path} {body}: {st} {b[:200]}")

    st0, m0 = metrics(sv)
    st, b = sv.http("POST", "/v1/completions", {"prompt": "the sea", "max_tokens": 5, "ignore_eos": True})
    sv.http("POST", "/v1/completions", {"prompt": "x", "max_tokens": "five"})
    st1, m1 = metrics(sv)
    d = {k: m1.get(k, 0) - m0.get(k, 0) for k in m1}
    ok = st0 == st1 == 200 and d.get('ferry_http_responses_total{code="200"}', 0) >= 2 and \
        d.get('ferry_http_responses_total{code="400"}') == 1 and d.get("ferry_generated_tokens_total") == 5 and \
        d.get("ferry_prompt_tokens_total", 0) >= 2 and d.get("ferry_step_seconds_count", 0) >= 5 and \
        d.get("ferry_step_seconds_sum", 0) > 0 and m1.get("ferry_queue_length") == 0 and \
        m1.get('ferry_kv_pages{state="free"}', 0) > 0 and 'ferry_kv_pages{state="used"}' in m1
    f.check(ok, f"/metrics deltas: {d}")
    st, b = sv.http("GET", "/metrics")
    f.check(b.startswith(b"# HELP ferry_http_responses_total") and b"# TYPE ferry_step_seconds summary" in b,
            f"/metrics format: {b[:200]}")


def slow_conns(port, addrs, per_addr, head):
    socks = []
    for a in addrs:
        for _ in range(per_addr):
            s = socket.socket()
            s.bind((a, 0))
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            s.send(head)
            socks.append(s)
    return socks


def trickle(socks, seconds, period=0.3):
    """Sends one header byte on each open socket every period for `seconds`; returns those the server closed."""
    closed = set()
    end = time.time() + seconds
    while time.time() < end:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                r, _, _ = select.select([s], [], [], 0)
                if r and not s.recv(4096):
                    closed.add(i)
                    continue
                s.send(b"a")
            except OSError:
                closed.add(i)
        time.sleep(period)
    return closed


def check_slowloris(f, model):
    sv = Server(model, "--request-timeout", 3, "--max-conns-per-ip", 32, "--max-conns", 400, "--quiet")
    try:
        head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: "
        addrs = [f"127.0.0.{i}" for i in range(2, 10)]
        t0 = time.time()
        socks = slow_conns(sv.port, addrs, 25, head)
        trickle(socks, 0.6)
        t = time.time()
        h = sv.health()
        dt_health = time.time() - t
        t = time.time()
        st, b = sv.http("POST", "/v1/completions", {"prompt": "the sea", "max_tokens": 4})
        dt_comp = time.time() - t
        print(f"slowloris: 200 slow connections; /health in {dt_health * 1e3:.0f} ms, a completion in "
              f"{dt_comp * 1e3:.0f} ms")
        f.check(h["status"] == "ok" and dt_health < 1.0, f"/health with 200 slow connections: {dt_health:.2f}s")
        f.check(st == 200 and dt_comp < 1.0, f"a completion with 200 slow connections: {st} {dt_comp:.2f}s")
        closed = trickle(socks, 3 + 2.5 - (time.time() - t0))
        f.check(len(closed) == len(socks), f"--request-timeout 3: {len(closed)} of {len(socks)} slow connections "
                f"closed after {time.time() - t0:.1f}s")
        for s in socks:
            s.close()
        # the cap per address: 40 from one address, 8 of them refused; another address is still served
        socks = slow_conns(sv.port, ["127.0.0.20"], 40, head)
        closed = trickle(socks, 1.0)
        t = time.time()
        h = sv.health()
        f.check(len(closed) == 8 and h["status"] == "ok" and time.time() - t < 1.0,
                f"--max-conns-per-ip 32: {len(closed)} of 40 refused")
        for s in socks:
            s.close()
    finally:
        sv.stop()


def main():
    f = Failures()
    root, cleanup = scratch()
    sv = None
    try:
        _, model = tiny_model("llama_headdim", root)
        sv = Server(model, "--ctx", 1024, "--quiet")
        check_logprobs(f, sv, root, model)
        check_routes(f, sv)
        f.check(sv.stop() == 0, "the server exits 0")
        check_slowloris(f, model)
    finally:
        if sv and sv.proc.poll() is None:
            sv.proc.kill()
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
