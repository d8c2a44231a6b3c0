#!/usr/bin/env bash
# bench_cpu_prefill.sh: ferry's CPU prefill against llama.cpp's (CPU build) at one thread (or THREADS), on the SAME
# GGUF files (issue 22): tokens per second of a P-token prompt, best of ROUNDS alternating runs.
#
#   bench/bench_cpu_prefill.sh [ROUNDS]    (default 5; env P=128, THREADS="1", MODELS="models/gemma-3-270m-q4_k_m.gguf
#                                           models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" (those present),
#                                           LLAMA_BUILD=, PARTS= where the converted models go)
#
# - ferry: `ferry run -m MODEL.ferry --prompt-ids <P ids> -n 1 --temp 0 --stats --threads N`, the "prefill P
#   tokens in S s" of --stats. It includes the step's first read of every layer (from the page cache) and its
#   checksums, which llama-bench's warm-up run takes outside its timing: ferry's figure is the conservative one.
# - llama.cpp: `llama-bench -m MODEL.gguf -p P -n 0 -t N -r 1` (pp P), built as bench_cpu_decode.sh builds it.
# The machine is shared: runs alternate, the best of the rounds is kept, the load average is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
P=${P:-128}
THREADS=${THREADS:-1}
LLAMA_BUILD=${LLAMA_BUILD:-/tmp/llama-build}
PARTS=${PARTS:-.model_parts}
MODELS=${MODELS:-$(ls models/gemma-3-270m-q4_k_m.gguf models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf 2>/dev/null || true)}
BUILD=${FERRY_BUILD:-build}
[ -x "$LLAMA_BUILD/bin/llama-bench" ] || { echo "no $LLAMA_BUILD/bin/llama-bench: build it as bench/bench_cpu_decode.sh does" >&2; exit 1; }
[ -x "$BUILD/ferry" ] || make -s -j2
mkdir -p "$PARTS"
IDS=$(python3 -c "print(','.join(str(1000 + 7 * i) for i in range($P)))")
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "ferry $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+dirty'); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| model | threads | ferry tok/s (best; all) | llama.cpp tok/s (best; all) | ferry / llama.cpp |"
echo "|---|---|---|---|---|"
for g in $MODELS; do
	m="$PARTS/$(basename "$g" .gguf).ferry"
	[ -f "$m/manifest.json" ] || "$BUILD/ferry" convert "$g" -o "$m" >/dev/null
	for n in $THREADS; do
		fr=() lr=()
		for r in $(seq 1 "$ROUNDS"); do
			fr+=($("$BUILD/ferry" run -m "$m" --prompt-ids "$IDS" -n 1 --temp 0 --stats --threads "$n" 2>&1 >/dev/null |
				sed -n "s/.*prefill $P tokens in \([0-9.]*\)s.*/\1/p" | awk -v p="$P" '{printf "%.1f", p / $1}'))
			lr+=($(LD_LIBRARY_PATH="$LLAMA_BUILD/bin" "$LLAMA_BUILD/bin/llama-bench" -m "$g" -p "$P" -n 0 -t "$n" -r 1 -o csv 2>/dev/null |
				python3 -c 'import csv, sys; r = list(csv.DictReader(sys.stdin))[-1]; print("%.1f" % float(r["avg_ts"]))'))
		done
		fb=$(printf '%s\n' "${fr[@]}" | sort -g | tail -1) lb=$(printf '%s\n' "${lr[@]}" | sort -g | tail -1)
		echo "| $(basename "$g") | $n | $fb (${fr[*]}) | $lb (${lr[*]}) | **$(awk -v a="$fb" -v b="$lb" 'BEGIN{printf "%.2f", a / b}')** |"
	done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
