"""Issue 8's figures on the GPU against the machine's floors, on a `ferry synth` model (normally the
Llama-3-70B-shaped Q4_K model of bench/bench_decode.py). Every step streams the weights once, so the floors
count passes over the layers at the measured pinned host-to-device rate (bench/gpu_peak):

  batch   `ferry batch` on --batch-requests requests of --batch-prompt token ids and --batch-gen generated
          tokens each (ignore_eos), at each --batch-vram with its KV format. Floor: (prompt passes + decode
          steps) x max(weight bytes / h2d, FLOPs of a pass / bf16 rate), with every request in flight at
          once: prompt passes = ceil(all prompt tokens / t_max), decode steps = --batch-gen. A second floor
          takes the run's own step count (what the KV budget let run at once).
  serve   `ferry serve` at --serve-vram; for each of --clients (1, 4, 16) that many clients at once, each
          streaming a completion of --serve-prompt token ids and --serve-gen tokens. Measured per client:
          time to first token (TTFT) and decode rate after it. Floors: TTFT = the passes of the prompts that
          arrive together (ceil(clients x prompt / t_max), at least one) x pass time; decode = one token per
          client per pass, 1 / pass time; the pass time is the bytes the server streamed per step (its
          /health counters over the run; layers resident at --serve-vram are not streamed) / h2d.
Prints a markdown section (date, machine, commands, table, raw JSON) and appends it to --out.

  python3 bench/bench_serve.py --model models/synth-70b-q4k.ferry --peak-json peak.json --out bench/RESULTS.md
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_decode import BUILD, ROOT, ceilings, model_info, sh, write_section  # noqa: E402


def ids(n, vocab, salt):
    return [(i * 7919 + 13 + salt * 104729) % vocab for i in range(n)]


def ensure_tokenizer(model, vocab):
    """`ferry synth` writes no tokenizer and serve/batch need one to turn tokens into text: a byte-level BPE
    tokenizer.json whose vocabulary fills the model's ids (the 256 byte tokens, then "w0", "w1", ...)."""
    if os.path.exists(os.path.join(model, "tokenizer.json")):
        return
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from gen_tiny_model import bytes_to_unicode
    specials = ["<s>", "</s>"]
    v = {t: i for i, t in enumerate(specials)}
    for ch in bytes_to_unicode().values():
        v[ch] = len(v)
    while len(v) < vocab:
        v[f"w{len(v)}"] = len(v)
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True} for i, t in enumerate(specials)],
           "normalizer": None, "pre_tokenizer": bl, "post_processor": dict(bl, trim_offsets=False), "decoder": bl,
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                     "vocab": v, "merges": []}}
    cfg = {"add_bos_token": False, "add_eos_token": False, "bos_token": None, "eos_token": "</s>",
           "tokenizer_class": "PreTrainedTokenizerFast"}
    for name, obj in (("tokenizer.json", tok), ("tokenizer_config.json", cfg)):
        with open(os.path.join(model, name + ".tmp"), "w") as fh:
            json.dump(obj, fh)
        os.replace(os.path.join(model, name + ".tmp"), os.path.join(model, name))


def pass_flops(hp, tokens):
    """2 x parameters x tokens of the matmuls (attention over short contexts left out)."""
    h, hd, nh, nkv, f = hp["d_model"], hp["head_dim"], hp["n_heads"], hp["n_kv_heads"], hp["ffn_dim"]
    per_layer = h * hd * (2 * nh + 2 * nkv) + 3 * h * f
    return 2.0 * (hp["n_layers"] * per_layer + h * hp["vocab"]) * tokens


def bench_batch(a, hp, wbytes, h2d, bf16, rows, raw, cmds):
    root = tempfile.mkdtemp(prefix="bench_serve_")
    inp = os.path.join(root, "in.jsonl")
    with open(inp, "w") as fh:
        for i in range(a.batch_requests):
            fh.write(json.dumps({"id": i, "prompt": ids(a.batch_prompt, hp["vocab"], i + 1), "max_tokens": a.batch_gen,
                                 "ignore_eos": True, "temperature": 0}) + "\n")
    for pair in a.batch_vram.split(","):
        vram, kv = pair.split(":")
        out, js = os.path.join(root, f"out{vram}.jsonl"), os.path.join(root, f"st{vram}.json")
        cmd = [a.ferry, "batch", "-m", a.model, inp, "-o", out, "--device", a.device, "--vram", vram, "--ram", a.ram,
               "--kv", kv, "--max-batch", str(a.batch_requests), "--warmup", "--stats-json", js]
        shown = shlex.join(cmd).replace(root, "DIR")
        print(f"bench_serve: {shown}", file=sys.stderr, flush=True)
        p = sh(cmd, f"batch {vram}")
        st = json.load(open(js))
        st["summary"] = [x for x in p.stderr.splitlines() if "batch:" in x]
        raw[f"batch {vram} {kv}"] = st
        cmds.append(shown)
        n_out = sum(1 for _ in open(out))
        total, gen = st["total_s"], a.batch_requests * a.batch_gen
        t_max = st["t_max"]
        pass_t = wbytes / h2d
        prompt_tokens = a.batch_requests * a.batch_prompt
        passes = -(-prompt_tokens // t_max)
        floor = max(passes * pass_t, pass_flops(hp, prompt_tokens) / bf16) + (a.batch_gen - 1) * pass_t
        floor_run = max(st["steps"] * pass_t, pass_flops(hp, prompt_tokens) / bf16)
        rows.append((f"batch {a.batch_requests} x ({a.batch_prompt} + {a.batch_gen}), --vram {vram}, KV {kv}, "
                     f"{st['max_seqs']} in flight, {st['kv_host_layers']} KV layers in host memory, "
                     f"{st['steps']} steps ({n_out} results)",
                     f"{total:.1f} s, {gen / total:.1f} generated tok/s",
                     f"{floor:.1f} s ({passes} + {a.batch_gen - 1} passes)",
                     f"{total / floor:.2f} (vs its {st['steps']} steps: {total / floor_run:.2f})"))


class Client(threading.Thread):
    """One streaming completion over a raw HTTP connection: time to the first text event and to the end."""

    def __init__(self, port, body, t0):
        super().__init__()
        self.port, self.body, self.t0 = port, body, t0
        self.ttft = self.end = None
        self.events = 0
        self.err = None

    def run(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            c.request("POST", "/v1/completions", json.dumps(self.body), {"Content-Type": "application/json"})
            r = c.getresponse()
            if r.status != 200:
                self.err = f"HTTP {r.status}: {r.read()[:200]!r}"
                return
            for line in r:
                if not line.startswith(b"data: "):
                    continue
                if line.strip() == b"data: [DONE]":
                    break
                ev = json.loads(line[6:])
                if ev.get("error"):
                    self.err = ev["error"]
                    return
                if ev["choices"] and ev["choices"][0].get("finish_reason") is None and self.ttft is None:
                    self.ttft = time.time() - self.t0
                self.events += 1
            self.end = time.time() - self.t0
        except Exception as e:  # noqa: BLE001 (reported in the table)
            self.err = repr(e)


def bench_serve(a, hp, wbytes, h2d, bf16, rows, raw, cmds):
    cmd = [a.ferry, "serve", "-m", a.model, "--port", "0", "--device", a.device, "--vram", a.serve_vram, "--ram", a.ram,
           "--ctx", str(a.serve_prompt + a.serve_gen + 16), "--max-batch", str(max(a.clients_list))]
    cmds.append(shlex.join(cmd))
    print(f"bench_serve: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = []
    port = None
    while port is None:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit("bench_serve: ferry serve did not start:\n" + "".join(log))
        log.append(line)
        m = re.search(r"http://[0-9.]+:(\d+)/v1 \(ctx \d+, up to (\d+)", line)
        if m:
            port, per_step = int(m.group(1)), int(m.group(2))
    threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
    try:
        def body(salt, n_gen):
            return {"model": os.path.basename(a.model.rstrip("/")).removesuffix(".ferry"), "stream": True,
                    "prompt": ids(a.serve_prompt, hp["vocab"], salt), "max_tokens": n_gen, "ignore_eos": True,
                    "temperature": 0}

        w = Client(port, body(0, 2), time.time())  # warm-up: fills the RAM tier, untimed
        w.run()
        if w.err:
            raise SystemExit(f"bench_serve: warm-up request failed: {w.err}")
        def health():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("GET", "/health")
            return json.loads(c.getresponse().read())

        t_max = health()["t_max"]  # tokens per step: prompts beyond it take more passes
        for n in a.clients_list:
            h0 = health()
            t0 = time.time()
            cs = [Client(port, body(100 * n + i, a.serve_gen), t0) for i in range(n)]
            for c in cs:
                c.start()
            for c in cs:
                c.join()
            errs = [c.err for c in cs if c.err]
            if errs:
                raise SystemExit(f"bench_serve: {n} clients: {errs[:3]}")
            h1 = health()
            # the bytes each step streamed (layers resident at this --vram are not streamed)
            per_step = (h1["h2d_bytes"] - h0["h2d_bytes"]) / max(1, h1["steps"] - h0["steps"]) or wbytes  # CPU: none
            pass_t = per_step / h2d
            ttft = sorted(c.ttft for c in cs)
            rates = [(a.serve_gen - 1) / (c.end - c.ttft) for c in cs]
            wall = max(c.end for c in cs)
            raw[f"serve {n} clients"] = {"ttft_s": ttft, "decode_tok_s": rates, "wall_s": wall,
                                         "events": [c.events for c in cs], "h2d_bytes_per_step": per_step,
                                         "steps": h1["steps"] - h0["steps"]}
            passes = max(1, -(-n * a.serve_prompt // t_max))
            ttft_floor = max(passes * pass_t, pass_flops(hp, n * a.serve_prompt) / bf16)
            mean_ttft = sum(ttft) / n
            mean_rate = sum(rates) / n
            rows.append((f"serve, {n} concurrent client{'s' * (n > 1)} ({a.serve_prompt} + {a.serve_gen} tokens, "
                         f"streamed), --vram {a.serve_vram}, {per_step / 1e9:.2f} GB streamed per step, "
                         f"{h1['steps'] - h0['steps']} steps: time to first token (mean; min..max)",
                         f"{mean_ttft:.2f} s ({ttft[0]:.2f}..{ttft[-1]:.2f})", f"{ttft_floor:.2f} s",
                         f"{mean_ttft / ttft_floor:.2f}"))
            rows.append((f"serve, {n} concurrent client{'s' * (n > 1)}: tokens/s per client after the first (mean), "
                         f"all clients together", f"{mean_rate:.2f} tok/s; {n * mean_rate:.1f} tok/s together",
                         f"{1 / pass_t:.2f} tok/s; {n / pass_t:.1f}", f"{(1 / pass_t) / mean_rate:.2f}"))
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    raw["serve log"] = [x.rstrip() for x in log if "serve:" in x]
    if proc.returncode != 0:
        raise SystemExit(f"bench_serve: ferry serve exited {proc.returncode} on SIGTERM:\n" + "".join(log[-20:]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "synth-70b-q4k.ferry"))
    ap.add_argument("--ferry", default=os.path.join(ROOT, BUILD, "ferry"))
    ap.add_argument("--peak-json")
    ap.add_argument("--ram", default="64G")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run of the script on a tiny model")
    ap.add_argument("--batch-requests", type=int, default=256)
    ap.add_argument("--batch-prompt", type=int, default=512)
    ap.add_argument("--batch-gen", type=int, default=32)
    ap.add_argument("--batch-vram", default="4G:q4,16G:f16", help="VRAM:KV pairs, comma separated")
    ap.add_argument("--serve-vram", default="16G")
    ap.add_argument("--serve-prompt", type=int, default=128)
    ap.add_argument("--serve-gen", type=int, default=32)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: batch,serve")
    ap.add_argument("--out")
    a = ap.parse_args()
    a.clients_list = [int(x) for x in a.clients.split(",")]
    skip = set(filter(None, a.skip.split(",")))
    peak, h2d, bf16 = ceilings(a)
    hp, wbytes, fmts = model_info(a.model)
    ensure_tokenizer(a.model, hp["vocab"])
    rows, raw, cmds = [], {}, []
    if "batch" not in skip:
        bench_batch(a, hp, wbytes, h2d, bf16, rows, raw, cmds)
    if "serve" not in skip:
        bench_serve(a, hp, wbytes, h2d, bf16, rows, raw, cmds)
    write_section(f"### Batch and server, {datetime.date.today()} ({peak.get('gpu', 'GPU')}, {platform.node()})",
                  f"Model {a.model}: {hp['n_layers']} layers, {wbytes / 1e9:.2f} GB of weights ({', '.join(fmts)}). "
                  f"Ceilings: h2d {h2d / 1e9:.1f} GB/s, bf16 {bf16 / 1e12:.0f} TFLOP/s; one pass over the weights "
                  f"{wbytes / h2d:.3f} s.", "bench/bench_serve.py", cmds, rows, raw, a.out)


if __name__ == "__main__":
    main()
