#!/usr/bin/env bash
# Issue 20's real pair on the GPU machine: bench/bench_spec.py over every prompt of the three task sets
# (bench/spec_prompts.json, 22 each) with Qwen2.5-Coder-1.5B-Instruct Q4_K_M as target and the 0.5B as draft,
# both resident on CUDA (--placement gpu), sources lookup, draft, tree and combined at --spec-max 16 and 64, the
# plain decode beside them, greedy, every prompt through the chat template, the planner given the streamed 70B
# pass cost and a resident draft's step (COST, default 0.7,0,0.01: the trees get the sizes they would have on the
# streamed target, as in bench/RESULTS.md's CPU tables). Carry .deb (see bench/gpu_run.sh).
#
#   [SET=summarize|code|chat|summarize,code,chat] [PROMPTS=0] [N=96] [JOBS=6] [BUDGET=500] bash bench/gpu_spec_pair.sh
#
# The models: the two GGUFs in $MODELS (default models/; tools/fetch_instruct.py fetches them), converted once
# into WORK (default /tmp/spec_pair, kept while the machine stays warm). They do not travel in one call (1.1 GB + 0.5 GB against
# the 64 MiB a call carries): PHASE=stage puts the carried folder .spec_stage (one or more pieces made here by
# `split -b 56M -d -a 2 models/X.gguf .spec_parts/X.gguf.part`, moved into .spec_stage a call's worth at a time)
# into models/.spec_parts on the machine; the bench assembles each GGUF from its pieces there once all of them
# arrived (checked against models/.spec_parts/SHA256SUMS, carried with the first piece: `cd models && sha256sum
# qwen2.5-coder-*.gguf >../.spec_parts/SHA256SUMS`). 29 pieces of 56 MiB: 29 staging calls back to back (carry
# .spec_stage, git-ignored as .spec_parts and .spec_pair are, so only what a call names travels).
#
# Resumable: every run is appended to /tmp/spec_pair/runs.jsonl as it is measured; BUDGET seconds after the start
# the bench starts no new run and writes the table of what the log holds (the 10-minute call then ends cleanly), and
# a second call on the warm machine goes on where it stopped (SET= splits the work by set if one call is short).
# A log brought back from $OUT can seed a fresh machine: carry it as .spec_pair/runs.jsonl.
# $OUT gets spec_pair.md (the table: tokens per pass, tokens per target decode step, acceptance, the projection
# for the streamed 70B), runs.jsonl and build.log. JOBS ferry processes run side by side (prompts in parallel):
# the counts do not depend on it, the tok/s columns are then a shared GPU's.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ferry_gpu_out}
mkdir -p "$OUT"
MODELS=${MODELS:-models}
PARTS=models/.spec_parts
TARGET=qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
DRAFT=qwen2.5-coder-0.5b-instruct.gguf
if [ "${PHASE:-bench}" = stage ]; then
	mkdir -p "$PARTS" && cp .spec_stage/* "$PARTS"/ && ls -la "$PARTS" | tail -n +2
	exit
fi
if [ "${DEVICE:-cuda}" = cuda ]; then
	. bench/gpu_build.sh
else # (a CPU check of this script's path: the build here)
	t0=$(date +%s)
	make -j2 build/ferry >"$OUT/build.log" 2>&1 || { tail -n 20 "$OUT/build.log"; exit 1; }
fi
W=${WORK:-/tmp/spec_pair}
mkdir -p "$W"
for g in $TARGET $DRAFT; do
	if [ ! -f "$MODELS/$g" ] && ls "$PARTS/$g.part"* >/dev/null 2>&1; then
		cat "$PARTS/$g.part"* >"$PARTS/$g.tmp"
		want=$(awk -v g="$g" '$2 == g { print $1 }' "$PARTS/SHA256SUMS" 2>/dev/null)
		if [ -n "$want" ] && [ "$(sha256sum <"$PARTS/$g.tmp" | cut -d' ' -f1)" = "$want" ]; then
			mv "$PARTS/$g.tmp" "$PARTS/$g" && rm -f "$PARTS/$g.part"*
		else
			echo "gpu_spec_pair: $g: its pieces in $PARTS do not give the SHA256SUMS digest (a piece missing?)"; exit 1
		fi
	fi
	src=$MODELS/$g
	[ -f "$src" ] || src=$PARTS/$g
	[ -f "$src" ] || { echo "gpu_spec_pair: $g: neither in $MODELS nor assembled in $PARTS (see the header)"; exit 1; }
	[ -f "$W/${g%.gguf}.ferry/manifest.json" ] || build/ferry convert "$src" -o "$W/${g%.gguf}.ferry" >"$OUT/convert.log" 2>&1 ||
		{ tail -n 5 "$OUT/convert.log"; exit 1; }
done
[ -f "$W/runs.jsonl" ] || [ ! -f .spec_pair/runs.jsonl ] || cp .spec_pair/runs.jsonl "$W/runs.jsonl"
placement=()
[ "${DEVICE:-cuda}" = cuda ] && placement=(--placement gpu)
export PYTHONUNBUFFERED=1
FERRY_BIN=$PWD/build/ferry python3 bench/bench_spec.py --model "$W/${TARGET%.gguf}.ferry" --draft "$W/${DRAFT%.gguf}.ferry" \
	--device "${DEVICE:-cuda}" "${placement[@]}" --chat-all -n "${N:-96}" --spec-max "${SIZES:-16,64}" \
	--sources "${SOURCES:-lookup,draft,tree,combined}" --spec-cost "${COST:-0.7,0,0.01}" --sets "${SET:-summarize,code,chat}" \
	--prompts "${PROMPTS:-0}" --jobs "${JOBS:-6}" --stop-after "${BUDGET:-500}" --log "$W/runs.jsonl" \
	--out "$OUT/spec_pair.md" 2>"$OUT/bench.err"
echo "bench_spec rc=$? ($(( $(date +%s) - ${t0:-$(date +%s)} ))s); $(grep -c . "$W/runs.jsonl") runs logged"
grep -E "differ|failed" "$OUT/bench.err" | head -5
cp "$W/runs.jsonl" "$OUT/runs.jsonl"
