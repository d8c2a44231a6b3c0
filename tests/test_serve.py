"""`ferry serve` on a tiny model (tools/gen_tiny_model.py, with its tokenizer and chat template) on the CPU
(exact: a request's tokens do not depend on what shares its steps), end to end on loopback with real clients:
  - the `openai` package: models, chat and completions, streamed and not (the stream's deltas join into the
    same text as the whole response, seed for seed), usage counts, stop strings, penalties;
  - curl for raw server-sent events: every event a `data: {json}` line, `data: [DONE]` last;
  - 16 concurrent clients (chat and completions, streamed and not, 1..60 tokens, seeded sampling) each get
    exactly what the same request gives alone, and the server took fewer steps than tokens (they shared
    steps); `ferry batch` gives the same text for the same request (an independent front end);
  - refused requests: bad JSON, wrong types and missing fields (400 naming the field), unknown model (404),
    n=2, a prompt past the context, a bad response_format or grammar, a body over --max-body (413), a wrong API key (401), unknown
    routes (404, also with bytes that are not UTF-8), a full queue (429);
  - a client that disconnects mid-stream has its request cancelled at once (/health: nothing running, far
    fewer tokens than asked);
  - SIGTERM with a stream in flight: new requests are refused, the stream ends with an error event after
    --grace, the server exits 0; requests (streamed and whole) in flight at SIGTERM finish within the grace;
    SIGTERM while idle exits 0 at once.
"""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

from ferrytest import FERRY, Failures, ferry, scratch, tiny_model

try:
    import openai
except ImportError:  # tools/requirements.txt installs it; without it this test cannot run
    print("SKIP: the openai package is not installed (pip install -r tools/requirements.txt)")
    raise SystemExit(77)

NAME = "tiny"
KEY = "sk-test-0123456789"


class Server:
    def __init__(self, model, *args, env=None):
        self.proc = subprocess.Popen([FERRY, "serve", "-m", model, "--port", "0", "--model-name", NAME, "--device", "cpu",
                                      *map(str, args)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **env} if env else None)
        self.lines = []
        self.url = None
        deadline = time.time() + 60
        while self.url is None and time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"http://([0-9.]+):(\d+)/v1", line)
            if m:
                self.url = f"http://{m.group(1)}:{m.group(2)}"
                self.port = int(m.group(2))
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()
        if self.url is None:
            self.proc.kill()
            raise RuntimeError("ferry serve did not start: " + "".join(self.lines))

    def _drain(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    def client(self, key=KEY, timeout=120):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=timeout)

    def http(self, method, path, body=None, headers=None, key=KEY):
        h = {"Authorization": f"Bearer {key}"} if key else {}
        h.update(headers or {})
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def health(self):
        return json.loads(self.http("GET", "/health")[1])

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        self.reader.join(5)
        return self.proc.returncode


def run_request(cl, kind, stream, **kw):
    """One request through the openai client; (text, finish_reason, usage)."""
    if kind == "chat":
        if not stream:
            r = cl.chat.completions.create(model=NAME, **kw)
            return r.choices[0].message.content, r.choices[0].finish_reason, r.usage.model_dump()
        text, finish, usage = "", None, None
        for ch in cl.chat.completions.create(model=NAME, stream=True, stream_options={"include_usage": True}, **kw):
            if ch.usage:
                usage = ch.usage.model_dump()
            for c in ch.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
        return text, finish, usage
    if not stream:
        r = cl.completions.create(model=NAME, **kw)
        return r.choices[0].text, r.choices[0].finish_reason, r.usage.model_dump()
    text, finish, usage = "", None, None
    for ch in cl.completions.create(model=NAME, stream=True, stream_options={"include_usage": True}, **kw):
        if ch.usage:
            usage = ch.usage.model_dump()
        for c in ch.choices:
            text += c.text or ""
            finish = c.finish_reason or finish
    return text, finish, usage


WORDS = ["the", "sea", "a", "ship", "red", "sky", "night", "old", "map", "gold", "wind", "far"]


def request_set(n):
    out = []
    for i in range(n):
        text = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(1 + (i * 5) % 17))
        kind = "chat" if i % 2 else "text"
        kw = {"max_tokens": 1 + (i * 13) % 60, "temperature": 0.8 if i % 3 else 0, "seed": 1000 + i}
        if kind == "chat":
            kw["messages"] = [{"role": "user", "content": text}]
        else:
            kw["prompt"] = text
        if i % 5 == 4:
            kw["top_p"] = 0.9
        out.append((kind, i % 4 >= 2, kw))
    return out


def sse_events(raw):
    """The data payloads of a text/event-stream body, checking its framing."""
    blocks = raw.split("\n\n")
    assert blocks[-1] == "", f"the stream does not end with a blank line: {raw[-80:]!r}"
    events = []
    for b in blocks[:-1]:
        assert b.startswith("data: ") and "\n" not in b, f"not a data event: {b[:80]!r}"
        events.append(b[6:])
    return events


def main():
    f = Failures()
    root, cleanup = scratch()
    servers = []
    try:
        _, model = tiny_model("llama_headdim", root)
        sv = Server(model, "--api-key", KEY, "--max-batch", 16, "--ctx", 4096, "--max-body", "64K")
        servers.append(sv)
        cl = sv.client()

        models = cl.models.list()
        f.check([m.id for m in models.data] == [NAME], f"/v1/models lists {[m.id for m in models.data]}")
        st, body = sv.http("GET", f"/v1/models/{NAME}")
        f.check(st == 200 and json.loads(body)["id"] == NAME, f"/v1/models/{NAME}: {st} {body[:100]}")

        # every request of the set alone, one after another
        reqs = request_set(16)
        solo = [run_request(cl, kind, stream, **kw) for kind, stream, kw in reqs]
        for (kind, stream, kw), (text, finish, usage) in zip(reqs, solo):
            ok = finish in ("stop", "length") and usage["completion_tokens"] <= kw["max_tokens"] and \
                usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
            ok = ok and (finish == "stop" or usage["completion_tokens"] == kw["max_tokens"])
            f.check(ok, f"solo {kind} stream={stream} {kw['max_tokens']}: {finish} {usage}")
        # streamed and whole give the same text
        for kind, stream, kw in reqs[:4]:
            a = run_request(cl, kind, not stream, **kw)
            b = run_request(cl, kind, stream, **kw)
            f.check(a == b, f"{kind} streamed vs whole: {a} != {b}")

        # 16 concurrent clients, each what it got alone; the steps were shared
        steps0 = sv.health()
        got = [None] * len(reqs)
        errors = []

        def client(i):
            try:
                kind, stream, kw = reqs[i]
                got[i] = run_request(sv.client(), kind, stream, **kw)
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(f"client {i}: {e!r}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(reqs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        steps1 = sv.health()
        f.check(not errors, f"concurrent clients failed: {errors}")
        for i, (g, s) in enumerate(zip(got, solo)):
            f.check(g == s, f"concurrent client {i} ({reqs[i][0]}, stream={reqs[i][1]}): {g} != alone {s}")
        toks = steps1["generated_tokens"] - steps0["generated_tokens"]
        steps = steps1["steps"] - steps0["steps"]
        print(f"16 concurrent clients: {toks} tokens in {steps} steps")
        f.check(0 < steps < toks, f"concurrent clients took {steps} steps for {toks} tokens (not batched)")

        # ferry batch (another front end) on the same requests gives the same text
        lines = [dict(id=i, **kw) for i, (kind, stream, kw) in enumerate(reqs) if kind == "text"]
        inp, outp = os.path.join(root, "in.jsonl"), os.path.join(root, "out.jsonl")
        with open(inp, "w") as fh:
            fh.writelines(json.dumps(x) + "\n" for x in lines)
        p = ferry("batch", "-m", model, inp, "-o", outp, "--device", "cpu")
        res = {json.loads(x)["id"]: json.loads(x) for x in open(outp)} if p.returncode == 0 else {}
        for x in lines:
            r = res.get(x["id"], {})
            f.check((r.get("text"), r.get("finish_reason")) == solo[x["id"]][:2],
                    f"ferry batch request {x['id']}: {r.get('text')!r} vs serve {solo[x['id']][0]!r}")

        # raw SSE with curl
        body = {"model": NAME, "prompt": "the old map", "max_tokens": 12, "temperature": 0, "stream": True}
        p = subprocess.run(["curl", "-sN", "-H", f"Authorization: Bearer {KEY}", "-H", "Content-Type: application/json",
                            "-d", json.dumps(body), sv.url + "/v1/completions"], capture_output=True, text=True,
                           timeout=60)
        try:
            ev = sse_events(p.stdout)
            chunks = [json.loads(e) for e in ev[:-1]]
            ok = ev[-1] == "[DONE]" and all(c["object"] == "text_completion" for c in chunks)
            text = "".join(c["choices"][0]["text"] for c in chunks)
            ok = ok and chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
            whole = run_request(cl, "text", False, prompt="the old map", max_tokens=12, temperature=0)
            f.check(ok and text == whole[0], f"curl SSE: {len(chunks)} chunks, text {text!r} vs {whole[0]!r}")
        except (AssertionError, ValueError, KeyError, IndexError) as e:
            f.check(False, f"curl SSE malformed: {e}: {p.stdout[:300]!r}")

        # stop strings: the text ends before the first one
        base = run_request(cl, "text", False, prompt="the sea", max_tokens=40, temperature=0)[0]
        cut = next((k for k in range(2, len(base)) if base[k] not in "\ufffd"), None)
        if cut:
            stop = base[cut:cut + 2]
            for stream in (False, True):
                t, fin, _ = run_request(cl, "text", stream, prompt="the sea", max_tokens=40, temperature=0, stop=[stop])
                f.check(t == base[:base.index(stop)] and fin == "stop", f"stop {stop!r} stream={stream}: {t!r} {fin}")
        # presence/frequency penalties change a greedy continuation, deterministically
        pa = run_request(cl, "text", False, prompt="the sea", max_tokens=40, temperature=0, frequency_penalty=2.0)
        pb = run_request(cl, "text", False, prompt="the sea", max_tokens=40, temperature=0, frequency_penalty=2.0)
        f.check(pa == pb and pa[0] != base, f"frequency_penalty: {pa[0]!r} vs none {base!r}")

        # refused requests
        def expect(status, path, body, param=None, key=KEY, code=None, raw=None):
            st, b = sv.http("POST", path, raw if raw is not None else body, key=key)
            try:
                e = json.loads(b)["error"]
                ok = st == status and e["message"] and (param is None or e.get("param") == param)
                ok = ok and (code is None or e.get("code") == code)
            except (ValueError, KeyError, TypeError):
                ok, e = False, b[:200]
            f.check(ok, f"{path} {str(body)[:60]}: want {status} param {param}, got {st} {e}")

        chat = "/v1/chat/completions"
        msgs = [{"role": "user", "content": "hi"}]
        expect(400, chat, None, raw=b'{"model": "tiny", "messages": [')
        expect(400, chat, None, raw=b'[1, 2]')
        expect(400, chat, {"model": NAME}, "messages")
        expect(400, chat, {"model": 5, "messages": msgs}, "model")
        expect(400, chat, {"model": NAME, "messages": "hi"}, "messages")
        expect(400, chat, {"model": NAME, "messages": [{"role": "user"}]}, "messages[0]")
        expect(400, chat, {"model": NAME, "messages": msgs, "temperature": "hot"}, "temperature")
        expect(400, chat, {"model": NAME, "messages": msgs, "max_tokens": -1}, "max_tokens")
        expect(400, chat, {"model": NAME, "messages": msgs, "stop": [""]}, "stop")
        expect(400, chat, {"model": NAME, "messages": msgs, "n": 2}, "n")
        expect(400, chat, {"model": NAME, "messages": msgs, "stream": "yes"}, "stream")
        expect(400, chat, {"model": NAME, "messages": msgs, "max_tokens": 5000}, "messages", code="context_length_exceeded")
        expect(400, "/v1/completions", {"model": NAME, "prompt": {"x": 1}}, "prompt")
        expect(404, chat, {"model": "gpt-4", "messages": msgs}, "model", code="model_not_found")
        expect(401, chat, {"model": NAME, "messages": msgs}, key="sk-wrong", code="invalid_api_key")
        expect(401, chat, {"model": NAME, "messages": msgs}, key=None, code="invalid_api_key")
        expect(413, chat, {"model": NAME, "messages": [{"role": "user", "content": "x" * 100000}]})
        expect(400, chat, {"model": NAME, "messages": msgs, "response_format": {"type": "xml"}}, "response_format")
        expect(400, chat, {"model": NAME, "messages": msgs, "grammar": "root ::= nothing"}, "grammar")
        for path in ("/v1/nothing", "/%ff%fe", "/v1/models/%ff"):
            st, b = sv.http("GET", path)
            try:
                ok = st == 404 and json.loads(b)["error"]["message"]
            except ValueError:
                ok = False
            f.check(ok, f"unknown route {path}: {st} {b[:100]}")
        try:
            sv.client("sk-wrong").models.list()
            f.check(False, "a wrong key listed the models")
        except openai.AuthenticationError:
            pass
        # a huge body sent in chunks, no Content-Length
        p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {KEY}",
                            "-H", "Transfer-Encoding: chunked", "--data-binary", "@-", sv.url + chat],
                           input="x" * 300000, capture_output=True, text=True, timeout=60)
        f.check(p.stdout == "413", f"chunked body over --max-body: {p.stdout}")
        f.check(sv.health()["status"] == "ok", "the server is fine after the bad requests")

        # a client gone mid-stream: its request is cancelled at once
        h0 = sv.health()
        s = socket.create_connection(("127.0.0.1", sv.port))
        body = json.dumps({"model": NAME, "prompt": "the sea", "max_tokens": 4000, "ignore_eos": True,
                           "stream": True}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while got.count(b"data: ") < 3:
            got += s.recv(4096)
        s.close()
        t0 = time.time()
        h = sv.health()
        while (h["running"] or h["live"]) and time.time() - t0 < 5:
            time.sleep(0.02)
            h = sv.health()
        dt = time.time() - t0
        gen = h["generated_tokens"] - h0["generated_tokens"]
        print(f"disconnect: cancelled after {dt:.2f}s, {gen} of 4000 tokens generated")
        f.check(h["cancelled"] == h0["cancelled"] + 1 and h["live"] == 0 and dt < 1.0 and gen < 4000,
                f"disconnect mid-stream: {h} after {dt:.2f}s, {gen} tokens")
        f.check(sv.stop() == 0, "SIGTERM while idle: exit 0")

        # a full queue answers 429
        sv = Server(model, "--max-queue", 2, "--ctx", 32768, "--grace", 2)
        servers.append(sv)
        long = {"model": NAME, "prompt": "the sea", "max_tokens": 32000, "ignore_eos": True, "stream": True}
        socks = []
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", sv.port))
            b = json.dumps(long).encode()
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(b)).encode() +
                      b"\r\n\r\n" + b)
            s.recv(100)
            socks.append(s)
        st, b = sv.http("POST", "/v1/completions", {"model": NAME, "prompt": "x", "max_tokens": 2})
        f.check(st == 429 and json.loads(b)["error"]["type"] == "rate_limit_error", f"full queue: {st} {b[:150]}")
        # SIGTERM with streams in flight: refused afterwards, streams end with an error after --grace, exit 0
        sv.proc.send_signal(signal.SIGTERM)
        # the engine takes the signal between steps, and a step may be slow (ASan, a loaded machine): wait
        # until /health says it is stopping (503) rather than for a fixed time
        t0, h = time.time(), sv.health()
        while h["status"] != "stopping" and time.time() - t0 < 60:
            time.sleep(0.02)
            h = sv.health()
        f.check(h["status"] == "stopping", f"/health after SIGTERM: {h}")
        st, b = sv.http("POST", "/v1/completions", {"model": NAME, "prompt": "x", "max_tokens": 2})
        f.check(st == 503, f"a request while stopping: {st} {b[:150]}")
        t0 = time.time()
        rc = sv.stop(timeout=60)
        tails = []
        for s in socks:
            s.settimeout(10)
            data = b""
            try:
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    data += d
            except OSError:
                pass
            tails.append(data[-300:])
            s.close()
        f.check(rc == 0, f"SIGTERM during generation: exit {rc} after {time.time() - t0:.1f}s")
        f.check(all(b'"error"' in t and b"[DONE]" in t for t in tails), f"stream ends at shutdown: {tails}")
        print("shutdown:", [x.strip() for x in sv.lines if "stop" in x])

        # a short request finishes within the grace period
        sv = Server(model, "--grace", 300, "--ctx", 4096)
        servers.append(sv)
        res = {}

        def graced(stream):
            try:
                res[stream] = run_request(sv.client(timeout=300), "text", stream, prompt="the sea", max_tokens=1500,
                                          extra_body={"ignore_eos": True})
            except Exception as e:  # noqa: BLE001 (reported below)
                res[stream] = repr(e)

        ths = [threading.Thread(target=graced, args=(s,)) for s in (True, False)]
        for th in ths:
            th.start()
        t0 = time.time()
        while sv.health()["running"] < 2 and time.time() - t0 < 30:
            time.sleep(0.01)
        sv.proc.send_signal(signal.SIGTERM)
        end = time.time() + 300  # the --grace: a slow machine (ASan, loaded) may need more than a minute
        for th in ths:
            th.join(max(0.0, end - time.time()))
        rc = sv.stop()
        for s in (True, False):
            r = res.get(s)
            f.check(rc == 0 and isinstance(r, tuple) and r[1] == "length" and r[2]["completion_tokens"] == 1500,
                    f"grace (stream={s}): exit {rc}, request {str(r)[:200]}")
        f.check(any("finishing 2 requests" in x for x in sv.lines), f"grace: 2 requests in flight at SIGTERM: {sv.lines}")

        # bad arguments
        for args, needle in ((["serve", "-m", model, "--port", "70000"], "--port"),
                             (["serve", "-m", os.path.join(root, "missing")], "missing"),
                             (["serve"], "-m MODEL")):
            p = ferry(*args)
            f.check(p.returncode != 0 and needle in p.stderr, f"{args[1:]}: exit {p.returncode} {p.stderr[:200]!r}")
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        p = subprocess.run([FERRY, "serve", "-m", model, "--port", str(busy.getsockname()[1])], capture_output=True,
                           text=True, timeout=60)
        busy.close()
        f.check(p.returncode != 0 and "cannot listen" in p.stderr, f"port in use: {p.returncode} {p.stderr[-200:]!r}")
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
