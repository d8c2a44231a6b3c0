"""Experts computed on the host (--moe-cpu, issues 21 and 22: src/engine/moe_cpu.c, model.c moe_split /
moe_host / moe_sum, weights_host_experts) on the CPU: FERRY_CPU_DEVICE=1 makes --device cpu a device, and the
host backend beside it computes the experts a range's device image and expert cache lack. The partial
outputs are summed in ascending expert order whichever side computed them, so greedy ids and logits must be
byte-identical to the plain CPU backend's with --moe-cpu off, auto and all, prediction on and off, every layer
in the RAM tier and every layer read from disk by expert (--ram 1), and in hybrid steps (--placement 1).
The figures must show the split at work (all: experts on the host in every weighed range; off: none), so a
path that silently fell back cannot pass. --plan names the policy; a bad value is refused naming the option.
Tiny synthetic qwen3moe (6 layers, 16 experts, top-4) and the gpt-oss and Mixtral tiny models."""

from ferrytest import Failures, ferry, greedy_run, moe_models, scratch


def main():
    f = Failures()
    root, cleanup = scratch()
    home = {"FERRY_HOME": root}  # the rates auto measures stay in the scratch directory
    try:
        models = moe_models(f, root)
        for name, model in models:
            ref, ref_lg, _ = greedy_run(model, root, home, f"{name}_cpu")
            if not f.check(ref.returncode == 0 and ref_lg, f"{name} cpu: {ref.stderr}"):
                continue
            for store, extra in (("ram", ()), ("disk", ("--ram", "1"))):
                for mode in ("off", "auto", "all"):
                    for pred in ("1", "0"):
                        tag = f"{name}_{store}_{mode}_p{pred}"
                        env = {**home, "FERRY_CPU_DEVICE": "1", "FERRY_MOE_PREDICT": pred}
                        p, lg, st = greedy_run(model, root, env, tag, "--placement", "gpu", "--stream-all",
                                               "--moe-cpu", mode, "--stats", *extra)
                        if not f.check(p.returncode == 0, f"{tag}: {p.stderr}"):
                            continue
                        f.check(p.stdout == ref.stdout, f"{tag}: ids {p.stdout!r} != cpu {ref.stdout!r}")
                        f.check(lg == ref_lg, f"{tag}: logits differ from the CPU backend's")
                        moe = st.get("moe", {})
                        ranges, split, host = (moe.get(k, -1) for k in ("cpu_ranges", "cpu_split_ranges",
                                                                         "host_experts"))
                        f.check(moe.get("cpu_mode") == mode, f"{tag}: mode {moe.get('cpu_mode')}")
                        if mode == "off":
                            f.check(ranges == 0 and host == 0, f"{tag}: experts on the host with off: {moe}")
                        if mode == "all":
                            # every range weighed has a miss the host takes unless the device held them all
                            f.check(ranges > 0 and split > 0 and host > 0, f"{tag}: nothing on the host: {moe}")
                            f.check("computed on the host" in p.stderr, f"{tag}: --stats has no host experts line")
                        if store == "disk":
                            io = st.get("io", {})
                            f.check(io.get("tier_units") == 0 and io.get("n_experts", 0) > 0,
                                    f"{tag}: not read by expert from disk: {io}")
                        tok = max(moe.get("tokens", 0), 1)
                        print(f"{tag}: per token {host / tok:.2f} experts on the host, "
                              f"{moe.get('uploads', 0) / tok:.2f} uploaded, {moe.get('cache_hits', 0) / tok:.2f} "
                              f"cache hits; {split} of {ranges} ranges split")
            # hybrid steps: layer 1 on the host backend, the device's layers' missing experts on it too
            tag = f"{name}_hybrid_all"
            p, lg, st = greedy_run(model, root, {**home, "FERRY_CPU_DEVICE": "1"}, tag, "--placement", "1",
                                   "--stream-all", "--moe-cpu", "all")
            if f.check(p.returncode == 0, f"{tag}: {p.stderr}"):
                f.check(p.stdout == ref.stdout and lg == ref_lg, f"{tag}: ids or logits differ from the CPU's")
                f.check(st.get("moe", {}).get("host_experts", 0) > 0, f"{tag}: {st.get('moe')}")
        if models and models[0][0] == "tiny-moe":
            tm = models[0][1]
            dev = {**home, "FERRY_CPU_DEVICE": "1"}
            p = ferry("run", "-m", tm, "--device", "cpu", "--placement", "gpu", "--stream-all", "--moe-cpu", "all",
                      "--plan", "--prompt-ids", "1", env=dev)
            f.check(p.returncode == 0 and "--moe-cpu all" in p.stderr, f"--plan all: {p.returncode} {p.stderr}")
            p = ferry("run", "-m", tm, "--device", "cpu", "--placement", "gpu", "--stream-all", "--moe-cpu", "auto",
                      "--plan", "--prompt-ids", "1", env=dev)
            f.check(p.returncode == 0 and "--moe-cpu auto" in p.stderr and "the host takes" in p.stderr,
                    f"--plan auto: {p.returncode} {p.stderr}")
            p = ferry("run", "-m", tm, "--device", "cpu", "--placement", "gpu", "--stream-all", "--plan", "--prompt-ids", "1",
                      env=dev)  # the default is off until the CUDA path has run on a GPU
            f.check(p.returncode == 0 and "--moe-cpu" not in p.stderr, f"--plan default: {p.returncode} {p.stderr}")
            p = ferry("run", "-m", tm, "--device", "cpu", "--moe-cpu", "some", "--prompt-ids", "1", "-n", 1, env=dev)
            f.check(p.returncode != 0 and "--moe-cpu" in p.stderr and len(p.stderr.strip().splitlines()) <= 3,
                    f"--moe-cpu some: {p.returncode} {p.stderr}")
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
