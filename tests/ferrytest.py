"""Shared helpers for ferry's Python end-to-end tests: the binary, scratch directories, the tools."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import gen_tiny_model  # noqa: E402
import ref_forward  # noqa: E402

FERRY = os.environ.get("FERRY_BIN", os.path.join(ROOT, "build", "ferry"))


class Failures:
    """Collects failed checks; finish() prints them and exits 1 if any (tests never pass silently)."""

    def __init__(self):
        self.failed = []
        self.checks = 0

    def check(self, ok, what):
        self.checks += 1
        if not ok:
            self.failed.append(what)
            print("FAIL:", what, flush=True)
        return ok

    def finish(self):
        for f in self.failed:
            print("failed:", f)
        print(f"{self.checks - len(self.failed)}/{self.checks} checks passed")
        sys.exit(1 if self.failed or self.checks == 0 else 0)


def ferry(*args, check=False, env=None):
    """env: variables added to this process's environment for the run. FERRY_TEST_VRAM=SIZE: a CUDA run without
    --vram gets --vram SIZE (tests run side by side on one GPU: by default each ferry takes all of its memory)."""
    args = [str(a) for a in args]
    if os.environ.get("FERRY_TEST_VRAM") and "cuda" in args and "--vram" not in args:
        args += ["--vram", os.environ["FERRY_TEST_VRAM"]]
    p = subprocess.run([FERRY, *args], capture_output=True, text=True,
                       env=dict(os.environ, **env) if env else None)
    if check and p.returncode != 0:
        raise RuntimeError(f"ferry {' '.join(map(str, args))} failed ({p.returncode}): {p.stderr}")
    return p


def rel_per_row(a, b):
    """Each row's distance from the reference b, relative to that row's norm (logits: one row per position)."""
    import numpy as np
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def rel_rows(a, b):
    """The worst row of rel_per_row, as a float."""
    return float(rel_per_row(a, b).max())


def on_gpu(extra):
    """extra with --placement gpu where it names --device cuda and no placement: the default, auto, may put a
    streamed tiny model's layers on the CPU (its measured rates say the CPU is faster), and then a "cuda" run
    compares the CPU with itself."""
    extra = [str(x) for x in extra]
    if "cuda" in extra and "--placement" not in extra:
        extra += ["--placement", "gpu"]
    return extra


def scratch():
    d = tempfile.mkdtemp(prefix="ferry_test_")
    return d, lambda: shutil.rmtree(d, ignore_errors=True)


def tiny_model(variant, root, seed=0):
    """Generates the HF variant and converts it; returns (hf_dir, ferry_dir)."""
    hf = os.path.join(root, variant)
    out = hf + ".ferry"
    gen_tiny_model.generate(variant, hf, seed)
    ferry("convert", hf, "-o", out, check=True)
    return hf, out


GEMMA_GGUF = os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")


def moe_models(f, root):
    """The tiny mixtures of experts the MoE tests run, [(name, ferry dir)]: a synthetic qwen3moe (6 layers, 16
    experts, top-4) and the gpt-oss and Mixtral tiny models."""
    models = []
    tm = os.path.join(root, "tm")
    p = ferry("synth", "-o", tm, "--shape", "tiny-moe", "--layers", 6)
    if f.check(p.returncode == 0, f"synth: {p.stderr}"):
        models.append(("tiny-moe", tm))
    for v in ("gptoss", "mixtral"):
        models.append((v, tiny_model(v, root)[1]))
    return models


def greedy_run(model, root, env, tag, *extra):
    """10 greedy tokens after a fixed prompt on --device cpu with f32 KV: (process, logits bytes, --stats-json)."""
    lg = os.path.join(root, f"{tag}.logits")
    sj = os.path.join(root, f"{tag}.json")
    p = ferry("run", "-m", model, "--prompt-ids", "1,5,9,33,2,7", "-n", 10, "--temp", 0, "--ignore-eos", "--logits",
              lg, "--stats-json", sj, "--device", "cpu", "--kv", "f32", *extra, env=env)
    st = json.load(open(sj)) if p.returncode == 0 and os.path.exists(sj) else {}
    return p, (open(lg, "rb").read() if os.path.exists(lg) else b""), st


def gemma_gguf(f):
    """The default model's GGUF (tools/fetch_model.sh, run by tools/install_deps.sh). Missing, it is a failure,
    except where FERRY_NO_MODEL=1 says the machine cannot fetch it (the GPU machine has no network and a call
    carries at most 64 MiB: bench/gpu_run.sh sets it), where the test skips (exit 77) saying so."""
    if os.path.exists(GEMMA_GGUF):
        return GEMMA_GGUF
    if os.environ.get("FERRY_NO_MODEL") == "1":
        print(f"skip: {GEMMA_GGUF} is not on this machine (FERRY_NO_MODEL=1)")
        sys.exit(77)
    f.check(False, f"{GEMMA_GGUF} is missing: run bash tools/fetch_model.sh (tools/install_deps.sh does)")
    f.finish()
