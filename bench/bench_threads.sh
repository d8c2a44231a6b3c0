#!/usr/bin/env bash
# CPU decode alone and under a competing load (issue 17): `ferry run` on Gemma 3 270M Q4_K_M, for each
# configuration (a binary with its defaults, or with environment variables or options), alone and with LOAD
# busy-loop processes running (default: one per core; each in its own session, so in its own scheduler
# autogroup, like a program started from another terminal), REPEAT times, the configurations taking turns so
# they see the same machine. Prints every run's decode tok/s (and the 1-minute load average before it: the
# machine may be shared), then the median, min and max per configuration and load, and checks that every run
# generated the same token ids.
#   bash bench/bench_threads.sh [CONFIG...]      (default: build/ferry)
#   CONFIG: "[VAR=VALUE...] BINARY [run options...]", e.g. /tmp/ferry_before build/ferry
#           "GOMP_SPINCOUNT=1000 /tmp/ferry_before" "build/ferry --threads 1"
#   env: MODEL=DIR.ferry (default: models/gemma-3-270m-q4_k_m.gguf converted by the last binary into a temporary
#        directory), LOAD=N busy loops (default nproc), REPEAT=N (default 5), TOKENS=N (default 64)
set -euo pipefail
cd "$(dirname "$0")/.."
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(build/ferry)
LOAD=${LOAD:-$(nproc)}
REPEAT=${REPEAT:-5}
TOKENS=${TOKENS:-64}
tmp=$(mktemp -d)
busy=()
stop_load() {
	for p in "${busy[@]}"; do kill "$p" 2>/dev/null || true; done
	wait "${busy[@]}" 2>/dev/null || true
	busy=()
}
trap 'stop_load; rm -rf "$tmp"' EXIT
model=${MODEL:-}
if [ -z "$model" ]; then
	model=$tmp/gemma.ferry
	read -ra w <<<"${bins[-1]}"
	for x in "${w[@]}"; do [[ $x == *=* ]] || { "$x" convert models/gemma-3-270m-q4_k_m.gguf -o "$model" >/dev/null 2>&1; break; }; done
fi
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load $LOAD busy loops"
echo "command: [VAR=VALUE...] BINARY run -m $model -p 'The capital of France is' -n $TOKENS --ignore-eos --print-ids [options]"
run() { # config, label
	local la w envs=() bin="" opts=() tps
	la=$(cut -d' ' -f1 /proc/loadavg)
	read -ra w <<<"$1"
	for x in "${w[@]}"; do
		if [ -z "$bin" ] && [[ $x == *=* ]]; then envs+=("$x"); elif [ -z "$bin" ]; then bin=$x; else opts+=("$x"); fi
	done
	if ! env "${envs[@]}" "$bin" run -m "$model" -p "The capital of France is" -n "$TOKENS" --ignore-eos --print-ids \
		"${opts[@]}" --stats-json "$tmp/s.json" >"$tmp/ids" 2>"$tmp/err"; then
		echo "$1: run failed: $(tail -n 3 "$tmp/err")" >&2
		exit 1
	fi
	tps=$(python3 -c "import json; d = json.load(open('$tmp/s.json')); print(f\"{d['decode_tokens'] / d['decode_s']:.1f}\")")
	printf '%-44s %-6s loadavg %-5s decode %6s tok/s\n' "$1" "$2" "$la" "$tps"
	printf '%s\t%s\t%s\n' "$1" "$2" "$tps" >>"$tmp/all"
	sha256sum <"$tmp/ids" | cut -c1-16 >>"$tmp/outs"
}
for ((r = 1; r <= REPEAT; r++)); do
	for b in "${bins[@]}"; do run "$b" alone; done
	[ "$LOAD" -gt 0 ] || continue
	for ((i = 0; i < LOAD; i++)); do
		setsid sh -c 'while :; do :; done' &
		busy+=($!)
	done
	sleep 0.5
	for b in "${bins[@]}"; do run "$b" loaded; done
	stop_load
done
echo "summary (decode tok/s over $REPEAT runs: median [min, max]):"
python3 - "$tmp/all" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    b, load, tps = line.rstrip("\n").split("\t")
    runs.setdefault((b, load), []).append(float(tps))
for (b, load), v in runs.items():
    print(f"  {b:44s} {load:6s} {statistics.median(v):6.1f}  [{min(v):.1f}, {max(v):.1f}]  runs: {' '.join(map(str, v))}")
EOF
if [ "$(sort -u "$tmp/outs" | wc -l)" = 1 ]; then
	echo "outputs: all $(wc -l <"$tmp/outs") runs generated the same ids"
else
	echo "outputs: DIFFER between runs"
	exit 1
fi
