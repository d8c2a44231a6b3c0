"""`ferry run` through the layer streamer end to end: a model converted with --lz4 gives bit-identical logits
to the raw conversion, with every layer in the RAM tier or streamed through 2 slots, on both readers;
--stats reports what the streamer did. Gaussian bf16 weights shrink to ~87% with byte-shuffled lz4, so they
are stored compressed; gaussian f16 ones save less than 10%, so --lz4 leaves them raw."""

import os
import re

from ferrytest import Failures, ferry, scratch, tiny_model


def run(model, *extra):
    return ferry("run", "-m", model, "--prompt-ids", "1,5,9,33,2,7", "-n", 6, "--temp", 0, "--ignore-eos",
                 "--stats", *extra)


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        for variant, compresses in (("llama3_rope", True), ("qwen2_bias", False)):
            hf, raw = tiny_model(variant, root)
            z = raw + ".lz4"
            p = ferry("convert", hf, "-o", z, "--lz4")
            if not f.check(p.returncode == 0, f"{variant}: convert --lz4: {p.stderr}"):
                continue
            p = ferry("inspect", z, "--verify")
            f.check(p.returncode == 0 and ("lz4:" in p.stdout) == compresses and "checksums match" in p.stdout,
                    f"{variant}: inspect of the lz4 model: {p.stdout} {p.stderr}")
            files = lambda d: sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d) if n.endswith(".bin"))
            f.check((files(z) < files(raw)) == compresses, f"{variant}: {files(z)} bytes with lz4, {files(raw)} without")
            ref_logits = os.path.join(root, variant + ".ref.logits")
            ref = run(raw, "--logits", ref_logits)
            if not f.check(ref.returncode == 0, f"{variant}: raw run: {ref.stderr}"):
                continue
            ref_bytes = open(ref_logits, "rb").read()
            uring = "io_uring" in ref.stderr  # auto picked it: this machine allows io_uring
            for model in (raw, z):
                for opts in (["--io", "pread"], ["--io", "uring"], ["--ram", "1", "--io", "pread"],
                             ["--ram", "1", "--io", "uring"], ["--ram", "1"]):
                    if "uring" in opts and not uring:
                        continue
                    lg = os.path.join(root, "out.logits")
                    p = run(model, "--logits", lg, *opts)
                    what = f"{variant} {os.path.basename(model)} {' '.join(opts)}"
                    if not f.check(p.returncode == 0, f"{what}: {p.stderr}"):
                        continue
                    f.check(p.stdout == ref.stdout, f"{what}: tokens {p.stdout!r} != {ref.stdout!r}")
                    f.check(open(lg, "rb").read() == ref_bytes, f"{what}: logits differ from the raw run")
                    engine = "pread pool" if "pread" in opts else "io_uring"
                    f.check(engine in p.stderr, f"{what}: engine not reported: {p.stderr}")
                    decoded = float(re.search(r"([0-9.]+) MiB decoded", p.stderr).group(1))
                    f.check((decoded > 0) == (model == z and compresses), f"{what}: {decoded} MiB decoded")
                    streamed = "--ram" in opts
                    f.check(("2 slots" in p.stderr) == streamed and ("RAM tier 0/" in p.stderr) == streamed,
                            f"{what}: slot plan: {p.stderr}")
        p = ferry("run", "-m", raw, "--prompt-ids", "1", "--io", "mmap")
        f.check(p.returncode == 2 and "--io" in p.stderr, f"bad --io: {p.stderr}")
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
