#!/usr/bin/env bash
# Issue 22's 70B measurement in one device call (carry .deb): deps unpacked as bench/gpu_run.sh does, only
# build/ferry built (sm_90), a Llama-3-70B-shaped Q4_K model written by `ferry synth` on the local disk, then
# bench/bench_hybrid.py at --vram 4G over PLACEMENTS (default gpu,auto,cpu) with PROMPT/GEN tokens; H2D=13
# THREADS=8 for the laptop emulation. Logs and the table go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ferry_gpu_out}
mkdir -p "$OUT"
. bench/gpu_build.sh
mkdir -p models
M=models/synth-70b-q4k.ferry
[ -f $M/manifest.json ] || build/ferry synth -o $M --shape llama3-70b --fmt q4_k >"$OUT/synth.log" 2>&1 ||
	{ tail -n 5 "$OUT/synth.log"; exit 1; }
echo "synth: $(( $(date +%s) - t0 ))s ($(du -sh $M | cut -f1))"
extra=()
[ -n "${H2D:-}" ] && extra+=(--h2d-limit "$H2D")
[ -n "${THREADS:-}" ] && extra+=(--threads "$THREADS")
python3 bench/bench_hybrid.py --model $M --vram 4G --ram "${RAM:-64G}" --placements "${PLACEMENTS:-gpu,auto,cpu}" \
	--prompt "${PROMPT:-512}" --gen "${GEN:-8}" "${extra[@]}" ${BATCH:+--batch "$BATCH"} --out "$OUT/hybrid70.md" \
	>"$OUT/hybrid70.log" 2>&1
echo "bench_hybrid: exit $? at $(( $(date +%s) - t0 ))s"
cat "$OUT/hybrid70.md" 2>/dev/null || tail -n 30 "$OUT/hybrid70.log"
