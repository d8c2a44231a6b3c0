"""Hybrid placement (--placement, src/engine/place.c, model.c's hybrid steps) on the CPU: with no GPU a list
of units runs on a second host backend, so every part of a hybrid step is exercised here (two run states,
the residual stream crossing where the backend changes, the streamer's buffers read in place, steps larger
than the hybrid limit running every unit on the first backend, batches of sequences). The kernels are the
same on both sides, so the logits must be bit-identical to --placement gpu (every unit on the first backend)
for every placement, prompt length (hybrid prefill, and a prefill too long for a hybrid step followed by
hybrid decode), KV format and tiny architecture, and when the placement changes between steps (as a re-plan
from measured steps changes it). On a GPU, tests/test_cuda_model.py checks the CUDA + CPU
case. Bad --placement and --h2d-limit values fail with one line."""

import json
import os

from ferrytest import Failures, ferry, scratch, tiny_model

SHORT = "1,5,9,33,2,7"                                  # 6 tokens: the prefill is a hybrid step (<= 16)
LONG = ",".join(str(3 + (7 * i) % 50) for i in range(40))  # 40 tokens: the prefill runs on the first backend


def layers(model):
    return json.load(open(os.path.join(model, "config.json")))["num_hidden_layers"] if os.path.exists(
        os.path.join(model, "config.json")) else None


def run(model, prompt, logits, *extra):
    return ferry("run", "-m", model, "--prompt-ids", prompt, "-n", 8, "--temp", 0, "--ignore-eos", "--logits",
                 logits, "--stats", "--device", "cpu", *extra)


def main():
    f = Failures()
    root, cleanup = scratch()
    os.environ["FERRY_HOME"] = os.path.join(root, "home")  # a given placement's rates are cached: not in ~
    try:
        models = {}
        for variant in ("llama_tied_gqa", "qwen2_bias", "mistral_swa", "gemma3_softcap"):
            hf, model = models[variant] = tiny_model(variant, root)
            L = layers(hf)
            placements = ["0", f"{L - 1}", "head", f"0-{L - 1}", "cpu", f"1-{L - 1},head", "0,head"]
            for kv in (["--kv", "f32"], ["--kv", "q8" if variant in ("mistral_swa", "gemma3_softcap") else "f16"]):  # q8 needs Dh % 32
                for prompt, name in ((SHORT, "short"), (LONG, "long")):
                    ref_lg = os.path.join(root, "ref.logits")
                    ref = run(model, prompt, ref_lg, "--placement", "gpu", *kv)
                    what = f"{variant} {name} {' '.join(kv)}"
                    if not f.check(ref.returncode == 0, f"{what} gpu: {ref.stderr}"):
                        continue
                    f.check("hybrid" not in ref.stderr, f"{what}: --placement gpu reports hybrid steps: {ref.stderr}")
                    ref_bytes = open(ref_lg, "rb").read()
                    for pl in placements:
                        lg = os.path.join(root, "out.logits")
                        p = run(model, prompt, lg, "--placement", pl, *kv)
                        if not f.check(p.returncode == 0, f"{what} --placement {pl}: {p.stderr}"):
                            continue
                        f.check(p.stdout == ref.stdout, f"{what} --placement {pl}: {p.stdout!r} != {ref.stdout!r}")
                        f.check(open(lg, "rb").read() == ref_bytes, f"{what} --placement {pl}: logits differ")
                        # every step is hybrid but the long prompt's prefill
                        n = "8 steps (13 tokens)" if name == "short" else "7 steps (7 tokens)"
                        f.check(f"on the host; {n}" in p.stderr,
                                f"{what} --placement {pl}: hybrid steps not reported as {n}: {p.stderr}")

        # the placement changed between decode steps (what a re-plan from measured steps does; forced here by
        # FERRY_PLACE_SWITCH=N:LIST after hybrid step N): the same tokens and logits as every unit on one side
        for variant in ("llama_tied_gqa", "mistral_swa"):
            hf, model = models[variant]
            L = layers(hf)
            ref_lg, lg = os.path.join(root, "ref.logits"), os.path.join(root, "out.logits")
            ref = run(model, SHORT, ref_lg, "--placement", "gpu")
            for first, then, n_then in (("0,head", f"1-{L - 1}", L - 1), ("cpu", "head", 1), (f"1-{L - 1}", "0", 1)):
                p = ferry("run", "-m", model, "--prompt-ids", SHORT, "-n", 8, "--temp", 0, "--ignore-eos", "--logits", lg,
                          "--stats", "--device", "cpu", "--placement", first, env={"FERRY_PLACE_SWITCH": f"3:{then}"})
                what = f"{variant} --placement {first}, then {then}"
                if f.check(p.returncode == 0 and ref.returncode == 0, f"{what}: {p.stderr} {ref.stderr}"):
                    f.check(p.stdout == ref.stdout, f"{what}: {p.stdout!r} != {ref.stdout!r}")
                    f.check(open(lg, "rb").read() == open(ref_lg, "rb").read(), f"{what}: logits differ")
                    f.check(f"hybrid: {n_then} of {L + 1} units on the host; 8 steps" in p.stderr,
                            f"{what}: not {n_then} units on the host after the switch, or not 8 hybrid steps: {p.stderr}")

        # a batch of sequences in each step, hybrid against every unit on the first backend
        _, model = tiny_model("llama_headdim", root)
        inp = os.path.join(root, "in.jsonl")
        with open(inp, "w") as fh:
            for i in range(6):
                fh.write(json.dumps({"id": i, "prompt": "the sea " * (1 + 3 * i), "max_tokens": 6 + i}) + "\n")
        outs = {}
        for pl in ("gpu", "0,head", "cpu"):
            o = os.path.join(root, f"out_{pl}.jsonl")
            p = ferry("batch", "-m", model, inp, "-o", o, "--max-batch", 4, "--placement", pl, "--device", "cpu")
            if f.check(p.returncode == 0, f"batch --placement {pl}: {p.stderr}"):
                outs[pl] = sorted(json.loads(line)["text"] for line in open(o))
        f.check(len(outs) == 3 and outs["gpu"] == outs["0,head"] == outs["cpu"] and any(outs["gpu"]), f"batch outputs differ: {outs}")

        # bad values: one line, non-zero exit
        for bad in ("9-99", "1-a", "x", "0,", "-1"):
            p = ferry("run", "-m", model, "--prompt-ids", "1", "--placement", bad, "--device", "cpu")
            f.check(p.returncode != 0 and "--placement" in p.stderr and len(p.stderr.strip().splitlines()) == 1,
                    f"--placement {bad}: exit {p.returncode}: {p.stderr}")
        for bad in ("0", "-3", "fast"):
            p = ferry("run", "-m", model, "--prompt-ids", "1", "--h2d-limit", bad)
            f.check(p.returncode == 2 and "--h2d-limit" in p.stderr, f"--h2d-limit {bad}: {p.stderr}")
        p = ferry("run", "-m", model, "--prompt-ids", "1", "--device", "cpu", "--h2d-limit", "13")
        f.check(p.returncode != 0 and "--h2d-limit" in p.stderr, f"--h2d-limit on the CPU: {p.stderr}")
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
