"""GPU decode and prefill of ferry against the measured floors of the machine (issue 6).

Runs `ferry run --device cuda --vram V --ram R --prompt-ids ... --ignore-eos --stats-json FILE` on a model
(normally a `ferry synth` model: --synth makes it) and reads the JSON ferry writes:
  decode (batch 1): a 16-token prompt, then --gen tokens;
        floor = (h2d_bytes_decode / decode_tokens) / h2d bandwidth       target <= 1.15 x floor
  prefill of each --prompt length (-n 1):
        floor = max(h2d_bytes_prefill / h2d bandwidth, flops_prefill / bf16 GEMM rate)
                                                                      target (4096 tokens) <= 1.5 x floor
  peak VRAM: vram_device_used_peak (and the arena's) against the budget   target <= 4 GiB
h2d bandwidth and bf16 rate come from bench/gpu_peak (--peak-json FILE, or run here): the better of its one-
and two-stream pinned copies, and the better of its two GEMM shapes.
--disk: the layers come from disk (a small --ram, default 8G): decode floor = disk bytes per token / disk
rate, the rate from --disk-gbps, else the run's own I/O statistics (disk bytes over busy time).
--peer-json FILE (from bench/peer_accelerate.py) with --peer-layers N: ferry also runs the bf16 model of the
peer's shape (`ferry synth --shape llama3-70b --layers N --fmt bf16`) with the peer's prompt lengths, and the
peer/ferry ratios are printed.
Prints a markdown section (date, machine, commands, table, raw JSON) on stdout, and appends it to --out FILE.

  python3 bench/bench_decode.py --synth llama3-70b --model models/synth-70b-q4k.ferry --vram 4G --ram 64G
  python3 bench/bench_decode.py --self-test        (the report logic on a fake ferry and fake ceilings)
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("FERRY_BUILD", "build")
GIB = 1 << 30
TARGETS = {"decode": 1.15, "prefill 4096": 1.5}


def parse_size(s):
    m = re.fullmatch(r"([\d.]+)\s*([KMGT]?)(i?B)?", s.strip(), re.I)
    if not m:
        raise SystemExit(f"bench_decode: bad size '{s}'")
    return int(float(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper()))


def sh(cmd, what):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"bench_decode: {what} failed ({p.returncode}): {shlex.join(cmd)}\n{p.stderr[-3000:]}")
    return p


def prompt_ids(n, vocab, salt=0):
    return ",".join(str((i * 7919 + 13 + salt) % vocab) for i in range(n))


def ceilings(a):
    if a.peak_json:
        peak = json.load(open(a.peak_json))
    else:
        p = sh([os.path.join(ROOT, BUILD, "bench", "gpu_peak")], "bench/gpu_peak")
        peak = json.loads(p.stdout)
    h2d = max(peak["h2d_gbps"], peak.get("h2d_2stream_gbps", 0)) * 1e9
    return peak, h2d, peak["bf16_tflops"] * 1e12


def ensure_model(a, path, shape, fmt, layers):
    if os.path.exists(os.path.join(path, "manifest.json")):
        return
    cmd = [a.ferry, "synth", "-o", path, "--shape", shape, "--fmt", fmt] + (["--layers", str(layers)] if layers else [])
    print(f"bench_decode: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    sh(cmd, "ferry synth")


def model_info(path):
    man = json.load(open(os.path.join(path, "manifest.json")))
    hp = man["hparams"]
    units = man["units"]["layers"] + [man["units"]["head"]]
    fmts = sorted({t["format"] for u in units for t in u if len(t["shape"]) == 2})
    return hp, sum(t["bytes"] for u in units for t in u), fmts


def run_ferry(a, model, ram, n_prompt, n_gen, vocab, extra=()):
    """One `ferry run`; returns (stats dict, command, stderr)."""
    fd, js = tempfile.mkstemp(prefix="bench_decode_", suffix=".json")
    os.close(fd)
    cmd = [a.ferry, "run", "-m", model, "--device", "cuda", "--vram", a.vram, "--ram", ram, "--prompt-ids",
           prompt_ids(n_prompt, vocab), "-n", str(n_gen), "--ignore-eos", "--temp", "0", "--stats", "--stats-json",
           js, "--warmup", *extra]
    shown = cmd[:cmd.index("--prompt-ids") + 1] + [f"<{n_prompt} ids>"] + cmd[cmd.index("--prompt-ids") + 2:]
    shown[shown.index(js)] = "FILE"
    print(f"bench_decode: {shlex.join(shown)}", file=sys.stderr, flush=True)
    try:
        p = sh(cmd, "ferry run")
        stats = json.load(open(js))
    finally:
        os.unlink(js)
    return stats, shlex.join(shown), p.stderr


def median_run(a, model, ram, n_prompt, n_gen, vocab, key):
    """--repeat runs; the one with the median `key` (so all its figures come from the same run)."""
    runs = [run_ferry(a, model, ram, n_prompt, n_gen, vocab) for _ in range(a.repeat)]
    runs.sort(key=lambda r: r[0].get(key, 0))
    return runs[len(runs) // 2]


def disk_figures(stats, stderr, a):
    """Disk bytes per decode step and the disk rate (bytes/s) of a run, with where they came from."""
    m = re.search(r"disk ([\d.]+) MiB in \d+ reads .*?, ([\d.]+)s busy \(([\d.]+) GB/s\)", stderr)
    steps = stats.get("decode_tokens", 0)
    if "disk_bytes_decode" in stats and steps:
        per_tok, src = stats["disk_bytes_decode"] / steps, "stats disk_bytes_decode"
    elif m and steps:  # whole run: every pass (one prefill chunk + each decode step) reads the same layers
        per_tok, src = float(m.group(1)) * 2 ** 20 / (steps + 1), "--stats disk MiB / passes"
    else:
        per_tok, src = None, "n/a"
    if a.disk_gbps:
        rate, rsrc = a.disk_gbps * 1e9, "--disk-gbps"
    elif stats.get("disk_gbps"):
        rate, rsrc = stats["disk_gbps"] * 1e9, "stats disk_gbps"
    elif m and float(m.group(3)) > 0:
        rate, rsrc = float(m.group(3)) * 1e9, "--stats disk busy rate"
    else:
        rate, rsrc = None, "n/a"
    return per_tok, src, rate, rsrc


def write_section(title, intro, script, cmds, rows, raw, out):
    """A RESULTS.md section: title, the intro line, the script's command and the ferry commands it ran, the
    measure/measured/floor/ratio table and the raw JSON; printed, and appended to out when given."""
    lines = [title, "", intro, "", f"Commands (`python3 {script} " + " ".join(shlex.quote(x) for x in sys.argv[1:]) + "`):",
             ""]
    lines += [f"    {c}" for c in cmds]
    lines += ["", "| measure | measured | floor | ratio |", "|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows]
    lines += ["", "Raw:", "", "```", json.dumps(raw, indent=1), "```", ""]
    text = "\n".join(lines)
    print(text)
    if out:
        with open(out, "a") as fh:
            fh.write(text + "\n")


def fmt_ratio(x, floor):
    return f"{x / floor:.2f}" if x is not None and floor else "n/a"


def verdict(ratio, target):
    if target is None or ratio == "n/a":
        return ""
    return "met" if float(ratio) <= target else "NOT met"


def bench(a):
    peak, h2d_bw, gemm_rate = ceilings(a)
    if a.synth:
        ensure_model(a, a.model, a.synth, a.fmt, a.layers)
    hp, step_bytes, fmts = model_info(a.model)
    V = hp["vocab"]
    ram = a.ram if not a.disk else a.disk_ram
    rows, raw, cmds = [], {}, []

    st, cmd, err = median_run(a, a.model, ram, 16, a.gen + 1, V, "decode_s")
    cmds.append(cmd)
    raw["decode"] = st
    dec_tok = st["decode_tokens"]
    dec = st["decode_s"] / dec_tok
    h2d_tok = st["h2d_bytes_decode"] / dec_tok
    floor = h2d_tok / h2d_bw
    r = fmt_ratio(dec, floor)
    rows.append(("decode, s/token", f"{dec:.4f} ({1 / dec:.2f} tok/s)",
                 f"{floor:.4f} ({h2d_tok / 1e9:.2f} GB uploaded per token / {h2d_bw / 1e9:.1f} GB/s)", r,
                 "<= 1.15", verdict(r, TARGETS["decode"])))
    if a.disk:
        per_tok, src, rate, rsrc = disk_figures(st, err, a)
        dfloor = per_tok / rate if per_tok and rate else None
        r = fmt_ratio(dec, dfloor)
        rows.append(("decode from disk, s/token", f"{dec:.4f}",
                     f"{dfloor:.4f} ({per_tok / 1e9:.2f} GB read per token [{src}] / {rate / 1e9:.2f} GB/s [{rsrc}])"
                     if dfloor else f"n/a ({src}; {rsrc})", r, "", ""))
    vram_used = st.get("vram_device_used_peak")
    vram_arena = st.get("vram_arena_peak")
    budget = st.get("vram_budget", parse_size(a.vram))
    for name, v in (("peak VRAM, device used", vram_used), ("peak VRAM, ferry's arena", vram_arena)):
        if v is not None:
            r = f"{v / budget:.2f}"
            rows.append((name, f"{v / GIB:.3f} GiB", f"budget {budget / GIB:.2f} GiB", r, "<= 4 GiB",
                         "met" if v <= 4 * GIB else "NOT met"))

    for T in a.prompt:
        st, cmd, _ = median_run(a, a.model, ram, T, 1, V, "prefill_s")
        cmds.append(cmd)
        raw[f"prefill {T}"] = st
        pf = st["prefill_s"]
        t_io = st["h2d_bytes_prefill"] / h2d_bw
        t_fl = st["flops_prefill"] / gemm_rate
        floor = max(t_io, t_fl)
        r = fmt_ratio(pf, floor)
        target = TARGETS.get(f"prefill {T}")
        rows.append((f"prefill {T} tokens, s", f"{pf:.3f} ({T / pf:.0f} tok/s)",
                     f"{floor:.3f} (max of {t_io:.3f} upload, {t_fl:.3f} = {st['flops_prefill'] / 1e12:.1f} TFLOP "
                     f"at {gemm_rate / 1e12:.0f} TFLOP/s)", r, f"<= {target}" if target else "", verdict(r, target)))

    peer_rows = []
    if a.peer_json:
        peer = json.load(open(a.peer_json))
        L = a.peer_layers or peer["shape"]["layers"]
        pm = a.peer_model or os.path.join(ROOT, "models", f"synth-llama3-70b-bf16-L{L}.ferry")
        ensure_model(a, pm, "llama3-70b", "bf16", L)
        st, cmd, _ = median_run(a, pm, a.ram, 16, peer["decode_tokens"] + 1, V, "decode_s")
        cmds.append(cmd)
        raw["peer-shape decode"] = st
        fd = st["decode_s"] / st["decode_tokens"]
        st, cmd, _ = median_run(a, pm, a.ram, peer["prefill_tokens"], 1, V, "prefill_s")
        cmds.append(cmd)
        raw["peer-shape prefill"] = st
        fp = st["prefill_s"]
        pd, pp = peer["decode_s_per_token"], peer["prefill_s"]
        peer_rows = [
            (f"decode, s/token ({L} bf16 layers)", f"{pd:.4f}", f"{fd:.4f}", f"{pd / fd:.2f}"),
            (f"prefill {peer['prefill_tokens']} tokens, s ({L} bf16 layers)", f"{pp:.3f}", f"{fp:.3f}", f"{pp / fp:.2f}"),
        ]
        raw["peer"] = peer

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    gpu = raw["decode"].get("gpu") or peak.get("gpu", "?")
    out = [f"## {now} — GPU decode and prefill{' from disk' if a.disk else ''} (bench/bench_decode.py)", "",
           f"Machine: {gpu}, host {platform.node()} ({os.cpu_count()} CPUs). Model: `{a.model}` ({hp['arch']}, "
           f"{hp['n_layers']} layers, D {hp['d_model']}, F {hp['ffn_dim']}, {hp['n_heads']}/{hp['n_kv_heads']} heads "
           f"x {hp['head_dim']}, vocab {hp['vocab']}, {'/'.join(fmts)}; {step_bytes / 1e9:.2f} GB of layers + head "
           f"per step). Budgets: --vram {a.vram}, --ram {ram}. Median of {a.repeat} run(s) each.",
           f"Ceilings (bench/gpu_peak): pinned h2d {peak['h2d_gbps']:.2f} GB/s on one stream, "
           f"{peak.get('h2d_2stream_gbps', float('nan')):.2f} on two; d2d {peak.get('d2d_gbps', float('nan')):.0f} GB/s; "
           f"cuBLAS bf16 {peak['bf16_tflops']:.0f} TFLOP/s.", "", "Commands:", ""]
    out += [f"    {c}" for c in [" ".join(sys.argv)] + cmds]
    out += ["", "| measure | measured | floor | measured / floor | target | |", "|---|---|---|---|---|---|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    if peer_rows:
        out += ["", f"Peer: {raw['peer']['peer']}, {raw['peer']['load']}, max_memory {raw['peer']['max_memory']} "
                    f"({raw['peer'].get('gpu_layers', '?')} layers on the GPU); ferry on the same shape in bf16 "
                    f"(`ferry synth --shape llama3-70b --fmt bf16 --layers {L}`), same prompt lengths.", "",
                "| measure | peer | ferry | peer / ferry |", "|---|---|---|---|"]
        out += ["| " + " | ".join(r) + " |" for r in peer_rows]
        sc = raw["peer"].get("scaled_to_80_layers", {})
        if sc:
            out += ["", f"Peer scaled to 80 layers ({sc.get('note', '')}): decode {sc['decode_s_per_token']:.3f} "
                        f"s/token, prefill {sc['prefill_s']:.2f} s."]
    out += ["", "<details><summary>raw figures</summary>", "", "```json", json.dumps(raw, indent=1, sort_keys=True),
            "```", "</details>", ""]
    text = "\n".join(out)
    print(text)
    if a.out:
        with open(a.out, "a") as fh:
            fh.write("\n" + text)
    return rows, peer_rows


FAKE_FERRY = r'''#!/usr/bin/env python3
# A stand-in for `ferry run --stats-json` (bench_decode.py --self-test): figures that make known ratios.
import json, sys
a = sys.argv
if a[1] == "synth":
    raise SystemExit("fake ferry: synth is not faked")
n_prompt = len(a[a.index("--prompt-ids") + 1].split(","))
n = int(a[a.index("-n") + 1])
bf16 = "bf16" in a[a.index("-m") + 1]
step = 4e9 if bf16 else 1e9
st = {"device": "cuda", "gpu": "Fake GPU", "prefill_tokens": n_prompt, "decode_tokens": n - 1,
      "decode_s": (n - 1) * step / 50e9 * 1.1, "h2d_bytes_decode": (n - 1) * step,
      "h2d_bytes_prefill": step, "flops_prefill": 2e12 * n_prompt,
      "prefill_s": max(step / 50e9, 2e12 * n_prompt / 500e12) * 1.4,
      "vram_budget": 4 << 30, "vram_arena_peak": 3 << 30, "vram_device_used_peak": int(3.5 * (1 << 30))}
json.dump(st, open(a[a.index("--stats-json") + 1], "w"))
sys.stderr.write("ferry: io: io_uring; disk 85.8307 MiB in 100 reads (0 short), 1.000s busy (2.00 GB/s); x\n")
print("1 2 3")
'''


def self_test():
    """The report logic end to end on a fake ferry: known floors give known ratios."""
    d = tempfile.mkdtemp(prefix="bench_decode_selftest_")
    fake = os.path.join(d, "ferry")
    open(fake, "w").write(FAKE_FERRY)
    os.chmod(fake, 0o755)
    for name in ("m.ferry", "bf16.ferry"):
        os.makedirs(os.path.join(d, name))
        hp = {"arch": "llama", "n_layers": 2, "d_model": 64, "ffn_dim": 128, "n_heads": 2, "n_kv_heads": 1,
              "head_dim": 32, "vocab": 100}
        t = {"shape": [64, 64], "bytes": 1000, "format": "Q4_K"}
        json.dump({"hparams": hp, "units": {"layers": [[t], [t]], "head": [t]}}, open(os.path.join(d, name, "manifest.json"), "w"))
    json.dump({"gpu": "Fake GPU", "h2d_gbps": 40.0, "h2d_2stream_gbps": 50.0, "d2d_gbps": 3000, "bf16_tflops": 500.0},
              open(os.path.join(d, "peak.json"), "w"))
    json.dump({"peer": "fake peer", "load": "fake", "max_memory": {}, "shape": {"layers": 2}, "decode_tokens": 4,
               "decode_s_per_token": 0.88 * 8, "prefill_tokens": 512, "prefill_s": 1.0},
              open(os.path.join(d, "peer.json"), "w"))
    args = ["--model", os.path.join(d, "m.ferry"), "--ferry", fake, "--peak-json", os.path.join(d, "peak.json"),
            "--prompt", "512,4096", "--gen", "8", "--disk", "--disk-gbps", "1.0", "--peer-json",
            os.path.join(d, "peer.json"), "--peer-model", os.path.join(d, "bf16.ferry"), "--out", os.path.join(d, "R.md")]
    rows, peer_rows = bench(build_parser().parse_args(args))
    got = {r[0]: r[3] for r in rows}
    want = {"decode, s/token": "1.10", "decode from disk, s/token": "2.20", "peak VRAM, device used": "0.88",
            "prefill 512 tokens, s": "1.40", "prefill 4096 tokens, s": "1.40"}
    bad = [k for k in want if got.get(k) != want[k]]
    # peer: 7.04 s/token against ferry's 4e9 / 50e9 x 1.1 = 0.088 -> 80.00; prefill 1.0 against
    # max(4e9 / 50e9, 2e12 x 512 / 500e12) x 1.4 = 2.867 -> 0.35
    if [r[3] for r in peer_rows] != ["80.00", "0.35"]:
        bad.append(f"peer ratios {[r[3] for r in peer_rows]}")
    if "| decode, s/token |" not in open(os.path.join(d, "R.md")).read():
        bad.append("--out file")
    verdicts = {r[0]: r[5] for r in rows}
    if verdicts["decode, s/token"] != "met" or verdicts["prefill 4096 tokens, s"] != "met":
        bad.append(f"verdicts {verdicts}")
    subprocess.run(["rm", "-rf", d])
    print("self-test:", "FAILED " + ", ".join(f"{k}: {got.get(k)} (want {want.get(k)})" for k in bad) if bad else "ok",
          file=sys.stderr)
    return 1 if bad else 0


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "synth-llama3-70b-q4_k.ferry"))
    ap.add_argument("--synth", metavar="SHAPE", help="make --model with `ferry synth --shape SHAPE` when it is missing")
    ap.add_argument("--fmt", default="q4_k", help="with --synth (default q4_k)")
    ap.add_argument("--layers", type=int, help="with --synth: fewer layers than the shape's")
    ap.add_argument("--vram", default="4G")
    ap.add_argument("--ram", default="64G")
    ap.add_argument("--prompt", default="512,4096", type=lambda s: [int(x) for x in s.split(",")],
                    help="prefill lengths (default 512,4096)")
    ap.add_argument("--gen", type=int, default=16, help="decode tokens timed (default 16)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; the median is reported")
    ap.add_argument("--ferry", default=os.path.join(ROOT, BUILD, "ferry"))
    ap.add_argument("--peak-json", help="output of bench/gpu_peak (default: run it)")
    ap.add_argument("--disk", action="store_true", help="layers from disk: --ram is --disk-ram")
    ap.add_argument("--disk-ram", default="8G")
    ap.add_argument("--disk-gbps", type=float, help="disk rate for the --disk floor (default: the run's I/O stats)")
    ap.add_argument("--peer-json", help="output of bench/peer_accelerate.py: compare with ferry on that bf16 shape")
    ap.add_argument("--peer-layers", type=int, help="layers of the bf16 model (default: the peer's)")
    ap.add_argument("--peer-model", help="where the bf16 model is (made when missing)")
    ap.add_argument("--out", help="append the markdown section to this file (e.g. bench/RESULTS.md)")
    ap.add_argument("--self-test", action="store_true", help="check the report logic on a fake ferry and exit")
    return ap


def main():
    a = build_parser().parse_args()
    if a.self_test:
        sys.exit(self_test())
    bench(a)


if __name__ == "__main__":
    main()
