"""The expert cache and next-layer expert prediction (issue 21: src/engine/expert_cache.c, weights.c,
model.c moe_predict) on the CPU: FERRY_CPU_DEVICE=1 makes --device cpu a device (budgeted memory, uploads,
slots, fences), so the streamed device path with routed experts runs here. Greedy ids and logits must be
byte-identical whatever the cache and the guesses do: whole-layer uploads (FERRY_MOE_WHOLE=1), routed
uploads with no cache and no prediction, the planner's cache, a 5-entry cache (evictions, refusals), each
with prediction on and off, and the plain CPU backend. The figures must show the cache and the guesses at
work (hits, evictions, guessed layers), so a path that silently fell back cannot pass. Tiny synthetic
qwen3moe (6 layers, 16 experts, top-4) and the gpt-oss and Mixtral tiny models (biases, MXFP4-free).
With a cache every layer's router stays on the device, so every layer after the first gets a guess."""

import json
import os

from ferrytest import Failures, greedy_run, moe_models, scratch

def run(model, root, env, tag, *extra):
    p, lg, st = greedy_run(model, root, env, tag, "--placement", "gpu", *extra)
    return p, lg, st.get("moe", {})


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        for name, model in moe_models(f, root):
            ref, ref_lg, _ = run(model, root, {}, f"{name}_cpu")
            if not f.check(ref.returncode == 0 and ref_lg, f"{name} cpu: {ref.stderr}"):
                continue
            dev = {"FERRY_CPU_DEVICE": "1"}
            cases = [("whole", {"FERRY_MOE_WHOLE": "1"}), ("nocache", {"FERRY_EXPERT_CACHE": "0"}), ("cache", {}),
                     ("cache5", {"FERRY_EXPERT_CACHE": "5"})]
            for cname, env in cases:
                for pred in ("1", "0"):
                    tag = f"{name}_{cname}_p{pred}"
                    p, lg, moe = run(model, root, {**dev, **env, "FERRY_MOE_PREDICT": pred}, tag, "--stream-all")
                    if not f.check(p.returncode == 0, f"{tag}: {p.stderr}"):
                        continue
                    f.check(p.stdout == ref.stdout, f"{tag}: ids {p.stdout!r} != cpu {ref.stdout!r}")
                    f.check(lg == ref_lg, f"{tag}: logits differ from the CPU backend's")
                    if cname == "whole":
                        f.check(not moe.get("routed_uploads"), f"{tag}: {moe}")
                        continue
                    f.check(moe.get("routed_uploads") is True, f"{tag}: no routed uploads: {moe}")
                    entries = moe.get("cache_entries", -1)
                    if cname == "nocache":
                        f.check(entries == 0 and moe.get("cache_hits") == 0, f"{tag}: {moe}")
                    if cname == "cache":
                        f.check(entries >= 5 and moe.get("cache_hits", 0) + (pred == "0") > 0, f"{tag}: cache unused: {moe}")
                    if cname == "cache5" and name == "tiny-moe":
                        f.check(entries == 5 and moe.get("cache_evictions", 0) > 0, f"{tag}: no evictions: {moe}")
                    if pred == "1" and entries:
                        # the routers stay on the device with a cache: every layer but the first is guessed,
                        # whatever the slots hold
                        L = json.load(open(os.path.join(model, "manifest.json")))["hparams"]["n_layers"]
                        steps = moe.get("layer_steps", 0) // L
                        f.check(moe.get("pred_layers", 0) == steps * (L - 1) and moe.get("pred_guessed", 0) > 0,
                                f"{tag}: not every layer guessed ({steps} steps of {L} layers): {moe}")
                        print(f"{tag}: cache {entries} entries, hits {moe['cache_hits']} misses {moe['cache_misses']}, "
                              f"prediction {moe['pred_right']}/{moe['pred_routed']}, "
                              f"{moe['expert_h2d_bytes'] / max(moe['tokens'], 1) / 2**20:.3f} MiB of experts per token")
                    if pred == "0":
                        f.check(moe.get("pred_layers", 0) == 0, f"{tag}: guesses with prediction off: {moe}")
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
