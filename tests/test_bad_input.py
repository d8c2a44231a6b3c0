"""Bad input gets one clear line on stderr naming the file and the problem, a non-zero exit, and loses
nothing: no output directory (or OUT.tmp) is left behind by a failed conversion, an existing output is
kept unless --force, and damaged model files are caught before (or while) they are used."""

import json
import os

import numpy as np
import safetensors.numpy

from ferrytest import Failures, ferry, gen_tiny_model, scratch, tiny_model

# broken kind -> words the one-line error must contain
EXPECT = {
    "truncated": ["model.safetensors", "truncated"],
    "bad_header": ["model.safetensors", "header length"],
    "bad_header_json": ["model.safetensors", "malformed header JSON"],
    "bad_shape": ["model.safetensors", "model.layers.0.self_attn.q_proj.weight", "shape [32, 64]", "[64, 64]"],
    "bad_dtype": ["model.safetensors", "model.layers.0.input_layernorm.weight", "I32"],
    "missing_key": ["config.json", "num_attention_heads"],
    "unknown_arch": ["config.json", "FooForCausalLM"],
}


def one_line_error(f, p, what, words):
    # "ferry: io: ..." lines are the streamer's one-time notices (reader fallback, O_DIRECT refused), not errors
    lines = [ln for ln in p.stderr.strip().splitlines() if not ln.startswith("ferry: io: ")]
    f.check(p.returncode != 0, f"{what}: exit code 0")
    if f.check(len(lines) == 1, f"{what}: {len(lines)} stderr lines: {p.stderr!r}"):
        for w in words:
            f.check(w in lines[0], f"{what}: error {lines[0]!r} lacks {w!r}")


def flip_byte(path, offset):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x55]))


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        assert sorted(EXPECT) == sorted(gen_tiny_model.BROKEN_KINDS), "a broken kind has no expectation"
        for kind, words in EXPECT.items():
            src = os.path.join(root, "broken_" + kind)
            gen_tiny_model.write_broken(kind, src)
            out = src + ".ferry"
            p = ferry("convert", src, "-o", out)
            one_line_error(f, p, f"convert {kind}", words)
            f.check(not os.path.exists(out) and not os.path.exists(out + ".tmp"), f"{kind}: output left behind")

        hf, out = tiny_model("llama_tied_gqa", root)
        p = ferry("convert", hf, "-o", out)
        one_line_error(f, p, "existing output", [out, "already exists", "--force"])
        f.check(ferry("inspect", out, "--verify").returncode == 0, "existing output damaged by a refused convert")
        p = ferry("convert", hf, "-o", out, "--force")
        f.check(p.returncode == 0 and not os.path.exists(out + ".old"), f"--force: {p.stderr}")
        p = ferry("convert", hf, "-o", root)
        one_line_error(f, p, "--force onto a foreign directory", [root, "already exists"])
        p = ferry("convert", hf, "-o", root, "--force")
        one_line_error(f, p, "--force onto a foreign directory", [root, "not a ferry model"])
        f.check(os.path.isdir(os.path.join(root, "llama_tied_gqa")), "--force removed a foreign directory")

        # A damaged tensor: verify names it; run stops on its checksum.
        bad = os.path.join(root, "bad.ferry")
        os.system(f"cp -r '{out}' '{bad}'")
        flip_byte(os.path.join(bad, "layer.001.bin"), 4096 + 100)
        p = ferry("inspect", bad, "--verify")
        f.check(p.returncode == 1 and "layer.001.bin: tensor attn_norm.weight: checksum mismatch" in p.stderr,
                f"verify of a damaged tensor: {p.stderr!r}")
        p = ferry("run", "-m", bad, "--prompt-ids", "1,2,3", "-n", 2)
        one_line_error(f, p, "run on a damaged tensor", ["layer.001.bin", "attn_norm.weight", "checksum"])

        # A truncated layer file and a damaged header are refused at open.
        os.system(f"rm -rf '{bad}' && cp -r '{out}' '{bad}'")
        os.truncate(os.path.join(bad, "layer.000.bin"), 8192)
        for cmd in (["inspect", bad], ["run", "-m", bad, "--prompt-ids", "1", "-n", 1]):
            one_line_error(f, ferry(*cmd), f"{cmd[0]} on a truncated file", ["layer.000.bin", "truncated"])
        os.system(f"rm -rf '{bad}' && cp -r '{out}' '{bad}'")
        flip_byte(os.path.join(bad, "head.bin"), 100)
        one_line_error(f, ferry("inspect", bad), "damaged header", ["head.bin", "header checksum"])
        one_line_error(f, ferry("inspect", os.path.join(root, "nothing")), "missing model", ["nothing"])
        one_line_error(f, ferry("inspect", hf), "not a ferry model", [hf, "no manifest.json"])

        # Hand-edited manifests: each edit gets a one-line error at open, never a crash.
        def edited(name, edit, words):
            d = os.path.join(root, name + ".ferry")
            os.system(f"rm -rf '{d}' && cp -r '{out}' '{d}'")
            path = os.path.join(d, "manifest.json")
            with open(path) as fh:
                man = json.load(fh)
            edit(man)
            with open(path, "w") as fh:
                json.dump(man, fh)
            for cmd in (["inspect", d], ["run", "-m", d, "--prompt-ids", "1,2", "-n", 1]):
                one_line_error(f, ferry(*cmd), f"{cmd[0]} with {name}", words)

        edited("no_format", lambda m: m["units"]["head"][0].pop("format"), ["manifest.json", "output_norm.weight"])
        edited("foreign_file", lambda m: m["units"]["layers"][0][0].update(
            file="layer.001.bin"), ["units.layers[0]", "another unit's file"])
        edited("listed_twice", lambda m: m["units"]["layers"][1].append(m["units"]["layers"][1][0]),
               ["units.layers[1]", "listed twice"])
        edited("huge_head_dim", lambda m: m["hparams"].update(head_dim=1 << 20), ["hparams", "head_dim"])
        edited("bad_eps", lambda m: m["hparams"].update(rms_eps=-1), ["hparams", "rms_eps"])
        edited("bad_window", lambda m: m["hparams"].update(sliding_window=[0, 1 << 40]), ["sliding_window"])
        edited("raw_bytes", lambda m: m["units"]["layers"][0][1].update(raw_bytes=m["units"]["layers"][0][1]["raw_bytes"] + 1),
               ["manifest.json", "does not match the header"])

        # A tensor the architecture does not have (a misspelt name): run cannot bind it, and verify says so
        # (both the stray name and the missing one), beside the checksums that all match.
        d = os.path.join(root, "misspelt.ferry")
        os.system(f"rm -rf '{d}' && cp -r '{out}' '{d}'")
        path = os.path.join(d, "manifest.json")
        man = json.load(open(path))
        man["units"]["layers"][1] = [dict(t, name="attn_k.veight") if t["name"] == "attn_k.weight" else t
                                     for t in man["units"]["layers"][1]]
        json.dump(man, open(path, "w"))
        p = ferry("inspect", d, "--verify")
        f.check(p.returncode == 1 and "layer 1: tensor attn_k.veight is not one of architecture" in p.stderr and
                "layer 1: tensor attn_k.weight is missing" in p.stderr and "layer 0" not in p.stderr,
                f"verify of a misspelt tensor: {p.stderr!r}")
        one_line_error(f, ferry("run", "-m", d, "--prompt-ids", "1,2", "-n", 1), "run with a misspelt tensor",
                       ["attn_k.weight"])

        # Weights that produce NaN: run stops with an error instead of printing garbage tokens.
        nan_hf = os.path.join(root, "nan")
        gen_tiny_model.generate("llama_tied_gqa", nan_hf)
        st = os.path.join(nan_hf, "model.safetensors")
        w = safetensors.numpy.load_file(st)
        w["model.layers.1.input_layernorm.weight"][3] = np.nan
        safetensors.numpy.save_file(w, st)
        f.check(ferry("convert", nan_hf).returncode == 0, "convert of NaN weights")
        p = ferry("run", "-m", nan_hf + ".ferry", "--prompt-ids", "1,2,3", "-n", 4, "--temp", "0.7")
        one_line_error(f, p, "run with NaN weights", ["non-finite logits"])

        # Bad requests: usage errors exit 2 with a message naming the option.
        p = ferry("run", "-m", out, "--prompt-ids", "1,99999", "-n", 1)
        f.check(p.returncode == 2 and "99999" in p.stderr, f"out-of-vocabulary id: {p.stderr!r}")
        p = ferry("run", "-m", out, "--prompt-ids", "1,x", "-n", 1)
        f.check(p.returncode == 2 and "--prompt-ids" in p.stderr, f"malformed ids: {p.stderr!r}")
        p = ferry("run", "-m", out, "--prompt-ids", "1", "--top-p", "1.5")
        f.check(p.returncode == 2 and "--top-p" in p.stderr, f"bad --top-p: {p.stderr!r}")
        p = ferry("run", "-m", out, "--prompt-ids", "1,2,3,4", "--ctx", "3")
        one_line_error(f, p, "prompt longer than --ctx", ["--ctx 3"])
        p = ferry("run", "-m", out)
        f.check(p.returncode == 2, "run without --prompt-ids must be a usage error")
        for bad_vram in ("0", "lots", "-4G"):
            p = ferry("run", "-m", out, "--prompt-ids", "1", "--vram", bad_vram)
            f.check(p.returncode == 2 and "--vram" in p.stderr, f"--vram {bad_vram}: {p.stderr!r}")
        p = ferry("run", "-m", out, "--prompt-ids", "1", "--device", "tpu")
        f.check(p.returncode == 2 and "--device" in p.stderr, f"--device tpu: {p.stderr!r}")
        # Where no GPU is visible (CI, this machine) --device cuda is an error, never a silent CPU run; on a GPU
        # machine an impossible budget is refused with the plan's numbers.
        p = ferry("run", "-m", out, "--prompt-ids", "1,2", "-n", 1, "--device", "cuda", "--vram", "100M")
        one_line_error(f, p, "--device cuda without a GPU or with --vram 100M",
                       [])
        f.check(any(w in p.stderr for w in ("without CUDA", "no CUDA GPU", "--vram")),
                f"--device cuda: {p.stderr!r}")
        f.check(ferry("frobnicate").returncode == 2, "unknown command must be a usage error")
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
