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
# - CPU time (CPUTIME=1, the default; 0 skips it), steadier than wall time on a loaded machine: user + sys of
#   the whole process (/usr/bin/time), least of the rounds. ferry: a P-token run minus a 1-token run (start-up,
#   loading and the head's one row cancel); llama.cpp: llama-bench -r 3 minus -r 1, halved (model loading and
#   the warm-up run cancel). Printed as ms of CPU per prompt token; the last column is llama.cpp's / ferry's.
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
CPUTIME=${CPUTIME:-1}
# user + sys seconds of one run of a command (the environment passes through)
cpu_of() {
	local f
	f=$(mktemp)
	/usr/bin/time -o "$f" -f '%U %S' "$@" >/dev/null 2>&1 || true
	awk '{printf "%.3f", $1 + $2}' "$f"
	rm -f "$f"
}
least() { printf '%s\n' "$@" | sort -g | head -1; }
if [ "$CPUTIME" = 1 ]; then
	echo "| model | threads | ferry tok/s (best; all) | llama.cpp tok/s (best; all) | ferry / llama.cpp | ferry CPU ms/token | llama.cpp CPU ms/token | by CPU time |"
	echo "|---|---|---|---|---|---|---|---|"
else
	echo "| model | threads | ferry tok/s (best; all) | llama.cpp tok/s (best; all) | ferry / llama.cpp |"
	echo "|---|---|---|---|---|"
fi
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
		row="| $(basename "$g") | $n | $fb (${fr[*]}) | $lb (${lr[*]}) | **$(awk -v a="$fb" -v b="$lb" 'BEGIN{printf "%.2f", a / b}')** |"
		if [ "$CPUTIME" = 1 ]; then
			fp=() f1=() l1=() l3=()
			for r in $(seq 1 "$ROUNDS"); do
				fp+=($(cpu_of "$BUILD/ferry" run -m "$m" --prompt-ids "$IDS" -n 1 --temp 0 --threads "$n"))
				f1+=($(cpu_of "$BUILD/ferry" run -m "$m" --prompt-ids "${IDS%%,*}" -n 1 --temp 0 --threads "$n"))
				l1+=($(LD_LIBRARY_PATH="$LLAMA_BUILD/bin" cpu_of "$LLAMA_BUILD/bin/llama-bench" -m "$g" -p "$P" -n 0 -t "$n" -r 1))
				l3+=($(LD_LIBRARY_PATH="$LLAMA_BUILD/bin" cpu_of "$LLAMA_BUILD/bin/llama-bench" -m "$g" -p "$P" -n 0 -t "$n" -r 3))
			done
			fc=$(awk -v a="$(least "${fp[@]}")" -v b="$(least "${f1[@]}")" -v p="$P" 'BEGIN{printf "%.3f", (a - b) * 1000 / p}')
			lc=$(awk -v a="$(least "${l3[@]}")" -v b="$(least "${l1[@]}")" -v p="$P" 'BEGIN{printf "%.3f", (a - b) / 2 * 1000 / p}')
			row="$row $fc (P: ${fp[*]} s; 1: ${f1[*]} s) | $lc (r3: ${l3[*]} s; r1: ${l1[*]} s) | **$(awk -v a="$fc" -v b="$lc" 'BEGIN{printf "%.2f", b / a}')** |"
		fi
		echo "$row"
	done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
