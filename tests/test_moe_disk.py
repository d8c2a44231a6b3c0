"""MoE layers read from disk by expert (issue 21: io_unit_experts in src/io/stream.c, weights_experts): with a
RAM tier too small for any layer (--ram 1: two I/O slots, every layer read from disk each step) a layer file
brings its trunk only and the routed experts are read one by one. Greedy ids and logits must be byte-identical
to everything in RAM, per expert and whole (FERRY_MOE_WHOLE=1), on the CPU backend, on the emulated device
(FERRY_CPU_DEVICE=1, --stream-all: trunk uploads, the expert cache, prediction reading guessed experts ahead)
and in hybrid steps (--placement 1: that layer on the host backend);
and the stats must show the experts read one by one and fewer bytes from disk than whole layers. Tiny
synthetic qwen3moe (6 layers, 16 experts, top-4) and the gpt-oss and Mixtral tiny models."""

import os

from ferrytest import Failures, greedy_run, moe_models, scratch

def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        for name, model in moe_models(f, root):
            ref, ref_lg, _ = greedy_run(model, root, {}, f"{name}_ram")
            if not f.check(ref.returncode == 0 and ref_lg, f"{name} in RAM: {ref.stderr}"):
                continue
            read = {}
            # hybrid: layer 1 on the host backend (its experts read into the held buffer), the rest on the device
            places = {"cpu": (), "device": ("--placement", "gpu", "--stream-all"),
                      "hybrid": ("--placement", "1", "--stream-all")}
            for dev in ("cpu", "device", "hybrid"):
                for cname, env in (("expert", {}), ("whole", {"FERRY_MOE_WHOLE": "1"}),
                                   ("expert_nopred", {"FERRY_MOE_PREDICT": "0"}),
                                   ("expert_nocache", {"FERRY_EXPERT_CACHE": "0"})):
                    if dev != "device" and cname not in ("expert", "whole"):
                        continue
                    tag = f"{name}_{dev}_{cname}"
                    extra = ("--ram", "1") + places[dev]
                    e = {**env, "FERRY_CPU_DEVICE": "1"} if dev != "cpu" else env
                    p, lg, st = greedy_run(model, root, e, tag, *extra)
                    if not f.check(p.returncode == 0, f"{tag}: {p.stderr}"):
                        continue
                    f.check(p.stdout == ref.stdout, f"{tag}: ids {p.stdout!r} != in RAM {ref.stdout!r}")
                    f.check(lg == ref_lg, f"{tag}: logits differ from everything in RAM")
                    io = st.get("io", {})
                    f.check(io.get("tier_units") == 0, f"{tag}: layers in the RAM tier: {io}")
                    n = io.get("n_experts", -1)
                    if cname == "whole":
                        f.check(n == 0 and io.get("bytes_experts") == 0, f"{tag}: experts read one by one: {io}")
                    else:
                        # the experts read are the routed ones, fewer than a whole read's (every layer's all)
                        moe = st.get("moe", {})
                        f.check(n > 0 and 0 < io.get("bytes_experts", 0) < io.get("bytes_read", 0),
                                f"{tag}: no experts read one by one: {io}")
                        f.check(io.get("bytes_experts", 0) < moe.get("all_bytes", 0),
                                f"{tag}: {io.get('bytes_experts')} bytes of experts read, whole layers' "
                                f"{moe.get('all_bytes')}")
                    read[(dev, cname)] = io.get("bytes_read", 0)
                    tok = max(st.get("moe", {}).get("tokens", 0), 1)
                    print(f"{tag}: {io.get('bytes_read', 0) / tok / 2**20:.3f} MiB read per token, "
                          f"{n} experts read one by one")
            # all bytes read, by expert vs whole: where experts are most of a layer (tiny-moe, like the real
            # models: 16 experts of which 4 are routed); the tiny gpt-oss and Mixtral are mostly attention, and
            # which loads the streamer cancels or finds again in a slot varies more than what they save
            for dev in ("cpu", "device"):
                if name == "tiny-moe" and (dev, "expert") in read and (dev, "whole") in read:
                    f.check(read[(dev, "expert")] < read[(dev, "whole")],
                            f"{name} {dev}: by expert read {read[(dev, 'expert')]} bytes, whole {read[(dev, 'whole')]}")
                    f.check(read.get((dev, "expert_nocache"), 0) < read[(dev, "whole")],
                            f"{name} {dev}: by expert without a cache read {read.get((dev, 'expert_nocache'))} bytes, "
                            f"whole {read[(dev, 'whole')]}")
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
