#!/usr/bin/env bash
# Issue 21's MoE speed runs in one device call (carry .deb): deps unpacked as bench/gpu_run.sh does, only
# build/ferry built (sm_90), a synthetic model written by `ferry synth --shape SHAPE` into /dev/shm (the GPU
# machine's disk is 64 GB: gpt-oss-120b's ~61 GB shape does not fit there; /dev/shm is RAM, O_DIRECT is refused
# there and reads go buffered, so "disk" is memory-speed), then `ferry run --vram 4G --ram RAM` decoding GEN tokens
# (temperature 1.5, seed 1: a random model decoded greedily repeats a few tokens and their routes) in four modes:
# whole layers (FERRY_MOE_WHOLE=1), by expert without prediction, by expert with prediction, and by expert with a
# skewed router (a second synth with --router-skew 1). SHAPE=qwen3-30b-a3b (default, Q4_K) or gpt-oss-120b
# (MXFP4 experts); RAM (default 8G) small so most layers come from "disk". Figures per token over the run (the
# 8-token prompt included), h2d per decoded token; the floor of a decode step is the h2d bytes / the pinned
# host->device rate (bench/gpu_peak). Logs and the table go to $OUT.
# MOECPU=1 (issues 21 + 22: experts on the CPU): the uniform router only, prediction on, in three modes
# --moe-cpu off / auto / all (auto measures the rates at start: FERRY_HOME=$OUT keeps them), with the host
# experts per token in the table; H2D=13 THREADS=8 emulate a laptop (--h2d-limit 13, --threads 8).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ferry_gpu_out}
SHAPE=${SHAPE:-qwen3-30b-a3b}
RAM=${RAM:-8G}
GEN=${GEN:-64}
MOECPU=${MOECPU:-0}
H2D=${H2D:-}
THREADS=${THREADS:-}
extra=()
[ -n "$H2D" ] && extra+=(--h2d-limit "$H2D")
[ -n "$THREADS" ] && extra+=(--threads "$THREADS")
modes="whole nopred pred"
skews="0 1"
[ "$MOECPU" = 1 ] && modes="cpu_off cpu_auto cpu_all" && skews=0
export FERRY_HOME="$OUT"
mkdir -p "$OUT"
. bench/gpu_build.sh
echo "flags: --vram 4G --ram $RAM ${extra[*]}"
echo "| shape | router | mode | decode tok/s | disk MiB/token | experts read one by one MiB/token | h2d MiB/token | experts uploaded MiB/token | routed experts MiB/token | hit rate % | prediction % | experts on the CPU per token |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for skew in $skews; do
	M=/dev/shm/synth-$SHAPE-skew$skew
	rm -rf /dev/shm/synth-* 2>/dev/null # one model at a time in RAM
	build/ferry synth -o "$M" --shape "$SHAPE" --router-skew $skew >"$OUT/synth.log" 2>&1 ||
		{ tail -n 5 "$OUT/synth.log"; exit 1; }
	echo "synth $SHAPE skew $skew: $(( $(date +%s) - t0 ))s ($(du -sh "$M" | cut -f1))" >&2
	for mode in $modes; do
		[ $skew = 1 ] && [ $mode != pred ] && continue
		env=()
		flags=("${extra[@]}")
		case $mode in cpu_*) flags+=(--moe-cpu "${mode#cpu_}") ;; *) flags+=(--moe-cpu off) ;; esac
		[ $mode = whole ] && env+=(FERRY_MOE_WHOLE=1)
		[ $mode = nopred ] && env+=(FERRY_MOE_PREDICT=0)
		sj="$OUT/$SHAPE-skew$skew-$mode.json"
		env "${env[@]}" build/ferry run -m "$M" --prompt-ids 1,2,3,4,5,6,7,8 -n "$GEN" --temp 1.5 --seed 1 --ignore-eos \
			--vram 4G --ram "$RAM" "${flags[@]}" --stats --stats-json "$sj" >"$OUT/$SHAPE-skew$skew-$mode.log" 2>&1 ||
			{ echo "run $mode failed:"; tail -n 5 "$OUT/$SHAPE-skew$skew-$mode.log"; continue; }
		python3 - "$sj" "$SHAPE" "$skew" "$mode" <<'EOF'
import json, sys
st = json.load(open(sys.argv[1]))
moe, io = st.get("moe", {}), st.get("io", {})
tok, mib = max(moe.get("tokens", 1), 1), 2 ** 20
dec = st.get("decode_tokens", 0) / st["decode_s"] if st.get("decode_s") else 0
hits, miss = moe.get("cache_hits", 0), moe.get("cache_misses", 0)
print(f"| {sys.argv[2]} | {'skewed 1' if sys.argv[3] == '1' else 'uniform'} | {sys.argv[4]} | {dec:.2f} | "
      f"{io.get('bytes_read', 0) / tok / mib:.1f} | {io.get('bytes_experts', 0) / tok / mib:.1f} | "
      f"{st.get('h2d_bytes_decode', 0) / max(st.get('decode_tokens', 0), 1) / mib:.1f} | {moe.get('expert_h2d_bytes', 0) / tok / mib:.1f} | "
      f"{moe.get('union_bytes', 0) / tok / mib:.1f} | {100 * hits / max(hits + miss, 1):.1f} | "
      f"{100 * moe.get('pred_right', 0) / max(moe.get('pred_routed', 0), 1):.1f} | "
      f"{moe.get('host_experts', 0) / tok:.2f} |")
EOF
	done
done
rm -rf /dev/shm/synth-* 2>/dev/null
echo "done: $(( $(date +%s) - t0 ))s" >&2
