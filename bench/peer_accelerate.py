"""The peer of bench/bench_decode.py: Hugging Face transformers + accelerate CPU offload, the standard way a
user runs a model larger than the GPU with `from_pretrained(device_map="auto", max_memory=...)`.

Builds a LlamaForCausalLM of the Llama 3 70B shape with fewer layers (--layers, default 4) and random bf16
weights on the CPU (fixed seed, no download: every tensor is filled from a 64 MiB pool of seeded normal
values at a seeded offset; norms are 1; timings do not depend on the values, and nothing is zero), saves it
with save_pretrained into a temporary directory and loads it back with device_map="auto" and max_memory
{0: --vram, "cpu": --cpu-mem} (accelerate keeps what fits on the GPU and moves the other layers' weights to
the GPU at every forward). Then measures, with torch.cuda.synchronize() around each timed call:
  decode: greedy generate() of 1 and of 1 + N new tokens after a 16-token prompt (after one warm-up);
          s/token = (t(1 + N) - t(1)) / N
  prefill: one forward over --prompt tokens (use_cache=False), the second of two.
Prints one JSON object: raw figures for this layer count and the same scaled to 80 layers (x 80 / layers,
stated as scaled: the embedding and head do not scale with the layer count, so this slightly overstates
the 80-layer time), the device map (how many layers sit on the GPU), peak GPU memory and versions.

  python3 bench/peer_accelerate.py [--layers 4] [--gen 8] [--prompt 512] [--vram 4GiB] [--json-out FILE]
  python3 bench/peer_accelerate.py --tiny --cpu     (checks this script on a machine without a GPU)
"""

import argparse
import json
import os
import platform
import shutil
import tempfile
import time

import torch

SHAPE_70B = dict(hidden_size=8192, intermediate_size=28672, num_attention_heads=64, num_key_value_heads=8,
                 head_dim=128, vocab_size=128256)
SHAPE_TINY = dict(hidden_size=256, intermediate_size=768, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                  vocab_size=512)


def build(layers, shape, seed):
    """LlamaForCausalLM in bf16 on the CPU with seeded random weights, without the cost of HF's own init."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = LlamaConfig(num_hidden_layers=layers, rope_theta=500000.0, rms_norm_eps=1e-5, max_position_embeddings=8192,
                      tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None, **shape)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    model.model.rotary_emb = LlamaRotaryEmbedding(config=cfg)  # its inv_freq buffer was left empty by to_empty
    g = torch.Generator().manual_seed(seed)
    pool = (torch.randn(32 << 20, generator=g) * 0.02).to(torch.bfloat16)  # 64 MiB of bf16
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # RMSNorm weights
                p.fill_(1.0)
                continue
            flat, n = p.view(-1), p.numel()
            src = torch.roll(pool, int(torch.randint(0, pool.numel(), (1,), generator=g)))
            for s in range(0, n, pool.numel()):
                k = min(pool.numel(), n - s)
                flat[s:s + k] = src[:k]
    return model


def sync(cuda):
    if cuda:
        torch.cuda.synchronize()


def timed(fn, cuda):
    sync(cuda)
    t0 = time.perf_counter()
    out = fn()
    sync(cuda)
    return time.perf_counter() - t0, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--gen", type=int, default=8, help="decode tokens timed")
    ap.add_argument("--prompt", type=int, default=512, help="prefill tokens timed")
    ap.add_argument("--vram", default="4GiB")
    ap.add_argument("--cpu-mem", default="200GiB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="a tiny shape instead of 70B's (to check the script)")
    ap.add_argument("--cpu", action="store_true", help="no GPU: everything on the CPU (to check the script)")
    ap.add_argument("--dispatch", action="store_true",
                    help="dispatch the in-memory model with accelerate (infer_auto_device_map + dispatch_model) "
                         "instead of save_pretrained + from_pretrained; the same hooks, no disk round trip")
    ap.add_argument("--json-out")
    a = ap.parse_args()

    import accelerate
    import transformers
    from transformers import AutoModelForCausalLM

    cuda = not a.cpu
    if cuda and not torch.cuda.is_available():
        raise SystemExit("peer_accelerate: no CUDA device (use --cpu to check the script without one)")
    shape = SHAPE_TINY if a.tiny else SHAPE_70B
    max_memory = {"cpu": a.cpu_mem} if a.cpu else {0: a.vram, "cpu": a.cpu_mem}

    t0 = time.perf_counter()
    model = build(a.layers, shape, a.seed)
    t_build = time.perf_counter() - t0
    tmp = None
    t0 = time.perf_counter()
    if a.dispatch:
        from accelerate import dispatch_model, infer_auto_device_map

        dmap = infer_auto_device_map(model, max_memory=dict(max_memory), no_split_module_classes=["LlamaDecoderLayer"])
        model = dispatch_model(model, device_map=dmap, main_device="cpu" if a.cpu else 0)
        how = "accelerate infer_auto_device_map + dispatch_model"
    else:
        tmp = tempfile.mkdtemp(prefix="peer_accelerate_")
        model.save_pretrained(tmp)
        del model
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16, device_map="auto",
                                                     max_memory=dict(max_memory))
        how = 'from_pretrained(device_map="auto", max_memory=...)'
    t_load = time.perf_counter() - t0
    model.eval()
    dmap = getattr(model, "hf_device_map", {}) or {}
    on = {}
    for k, v in dmap.items():
        on[str(v)] = on.get(str(v), 0) + 1
    gpu_layers = sum(1 for k, v in dmap.items() if ".layers." in k and str(v) not in ("cpu", "disk"))
    if a.layers and all(".layers." not in k for k in dmap):  # a whole-model map ({"": device})
        gpu_layers = a.layers if cuda and str(dmap.get("", "cpu")) not in ("cpu", "disk") else 0

    dev = "cuda:0" if cuda else "cpu"
    g = torch.Generator().manual_seed(a.seed + 1)
    V = shape["vocab_size"]
    short = torch.randint(0, V, (1, 16), generator=g).to(dev)
    long = torch.randint(0, V, (1, a.prompt), generator=g).to(dev)
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def gen(n):
        return model.generate(short, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0,
                              eos_token_id=None)

    with torch.no_grad():
        timed(lambda: gen(2), cuda)  # warm-up: kernels, cuBLAS handles, hooks
        t1, _ = timed(lambda: gen(1), cuda)
        tn, out = timed(lambda: gen(1 + a.gen), cuda)
        assert out.shape[1] == 16 + 1 + a.gen, out.shape
        decode = (tn - t1) / a.gen
        pre = [timed(lambda: model(long, use_cache=False), cuda)[0] for _ in range(2)]
    prefill = pre[-1]
    scale = 80 / a.layers
    res = {
        "peer": f"transformers {transformers.__version__} + accelerate {accelerate.__version__} (torch {torch.__version__})",
        "load": how,
        "gpu": torch.cuda.get_device_name(0) if cuda else "none",
        "host": platform.node(),
        "shape": {"layers": a.layers, **shape},
        "max_memory": {str(k): v for k, v in max_memory.items()},
        "device_map": {k: str(v) for k, v in dmap.items()},
        "device_map_counts": on,
        "gpu_layers": gpu_layers,
        "gpu_mem_peak_bytes": torch.cuda.max_memory_allocated() if cuda else 0,
        "decode_tokens": a.gen,
        "decode_s_per_token": decode,
        "generate_1_s": t1,
        "generate_1_plus_n_s": tn,
        "prefill_tokens": a.prompt,
        "prefill_s": prefill,
        "prefill_s_runs": pre,
        "scaled_to_80_layers": {"note": f"raw x 80/{a.layers} (embedding and head scaled too: an overestimate)",
                                "decode_s_per_token": decode * scale, "prefill_s": prefill * scale},
        "build_s": t_build,
        "load_s": t_load,
    }
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(res, indent=1)
    print(text)
    if a.json_out:
        with open(a.json_out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
