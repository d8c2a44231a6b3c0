#!/usr/bin/env python3
"""Cross-check tools/ref_forward.py against Hugging Face transformers (run once, by hand).

Needs torch and transformers (written for torch 2.11 + transformers 5.17; runs on
CPU, downloads nothing).  For every gen_tiny_model variant it generates the
checkpoint into a temporary directory, loads it with AutoModelForCausalLM in
float64 with eager attention, and compares:

  err@32   logits of a seeded random 32-token prompt, HF vs ref_forward.forward
  err@64   logits over prompt + the 32 ref-greedy tokens (positions up to 63)
  greedy   32 greedy tokens: ref_forward.greedy vs HF generate(do_sample=False),
           without KV cache (same semantics as the reference) and with it

err is max over positions of ||hf_p - ref_p|| / ||ref_p||.  HF's "float64" eager
path is not float64 throughout: RMSNorm normalizes in float32, softmax runs in
float32, and RoPE inv_freq/angles/cos/sin are float32.  Emulating those casts in
NumPy gives errors of 2e-7..1e-6 on these models, hence the default --tol 1e-5
(structural mistakes give 1e-2 and more).  A model is reloaded before each
check because HF's dynamic RoPE keeps state between calls.  With a KV cache,
HF's dynamic NTK keeps the keys rotated with the base of the step that cached
them, so for rope_type "dynamic" the cached greedy run is reported, not judged.
For Gemma 3 variants (Gemma3ForCausalLM, whose RMSNorm also computes in float32)
the layer types HF resolved (layer_types, or the legacy sliding_window_pattern)
must equal the reference's, or the variant fails as a loading problem.

    python3 tools/hf_check.py [--tol 1e-5] [--variants a,b] [--seed 0]

Exit status 0 when every variant passes, 1 otherwise.
"""

import argparse
import os
import sys
import tempfile
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, GenerationConfig  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_tiny_model  # noqa: E402
import ref_forward  # noqa: E402

PROMPT_LEN = 32
N_GEN = 32


def rel_err(got, ref):
    return float(np.max(np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)))


def load_hf(model_dir):
    """A fresh float64 eager model, and any loading problems (missing/unexpected keys...)."""
    model, info = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float64, attn_implementation="eager",
        local_files_only=True, output_loading_info=True)
    problems = {k: sorted(map(str, v)) for k, v in info.items() if v}
    model = model.to(torch.float64).eval()
    # No eos/pad: generation must run the full N_GEN steps, like the reference.
    model.generation_config = GenerationConfig(do_sample=False)
    return model, problems


def hf_logits(model_dir, ids):
    model, _ = load_hf(model_dir)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], dtype=torch.long))
    return out.logits[0].to(torch.float64).numpy()


def hf_greedy(model_dir, ids, use_cache):
    model, _ = load_hf(model_dir)
    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=N_GEN,
                             do_sample=False, use_cache=use_cache)
    return out[0, len(ids):].tolist()


def greedy_verdict(ref, got):
    if got == ref:
        return "same", True
    first = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
    return f"differs@{first}", False


def check_variant(variant, seed, tol):
    """Return (row of table cells, passed)."""
    with tempfile.TemporaryDirectory() as d:
        gen_tiny_model.generate(variant, d, seed)
        ref = ref_forward.Model(d)
        # Gemma 3 has one RoPE per layer type (rope_types lists them all).
        rope_types = ref.rope_types()
        rng = np.random.default_rng([seed, 2024])
        prompt = [int(t) for t in rng.integers(0, ref.vocab, PROMPT_LEN)]

        model, problems = load_hf(d)
        notes = [f"rope_parameters={dict(model.config.rope_parameters)}"]
        if ref.gemma:
            # What HF resolved the Gemma 3 config to must be what the reference uses.
            hf_types = list(model.config.layer_types)
            if hf_types != ref.layer_types:
                problems["layer_types"] = [f"HF {hf_types} != reference {ref.layer_types}"]
            notes.append(f"layer_types={''.join('S' if t == 'sliding_attention' else 'F' for t in hf_types)}")
        if problems:
            notes.append(f"loading problems: {problems}")
        del model

        err32 = rel_err(hf_logits(d, prompt), ref.logits(prompt))
        ref_gen = ref.greedy(prompt, N_GEN)
        full = prompt + ref_gen
        err64 = rel_err(hf_logits(d, full), ref.logits(full))
        g_nocache, ok_nocache = greedy_verdict(ref_gen, hf_greedy(d, prompt, use_cache=False))
        g_cache, ok_cache = greedy_verdict(ref_gen, hf_greedy(d, prompt, use_cache=True))
        if "dynamic" in rope_types:
            g_cache += " (not judged)"
            ok_cache = True
        passed = not problems and err32 <= tol and err64 <= tol and ok_nocache and ok_cache
        return [variant, f"{err32:.2e}", f"{err64:.2e}", g_nocache, g_cache,
                "PASS" if passed else "FAIL", "; ".join(notes)], passed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--variants", help="comma-separated subset (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    variants = a.variants.split(",") if a.variants else list(gen_tiny_model.VARIANTS)
    torch.set_grad_enabled(False)
    transformers.utils.logging.disable_progress_bar()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}; "
          f"tol {a.tol:g}, prompt {PROMPT_LEN} tokens, {N_GEN} greedy tokens, seed {a.seed}")

    header = ["variant", "err@32", "err@64", "greedy no-cache", "greedy cache", "result", "notes"]
    rows, all_ok = [], True
    for v in variants:
        try:
            row, ok = check_variant(v, a.seed, a.tol)
        except Exception:  # report and carry on with the next variant
            traceback.print_exc()
            row, ok = [v, "-", "-", "-", "-", "ERROR", "exception above"], False
        rows.append(row)
        all_ok &= ok
        print("  " + " | ".join(row), flush=True)

    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header) - 1)]
    print()
    for r in [header] + rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)) + " | " + r[-1])
    print("\nALL PASS" if all_ok else "\nSOME FAILED")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
