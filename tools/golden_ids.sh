#!/usr/bin/env bash
# Greedy token ids of every tiny model variant (and Gemma 3 270M when models/ has it) through ferry run,
# over the paths a refactor could disturb: one prompt, several prompts in one step, chunked prefill,
# the KV formats, and on a GPU resident and streamed. Used to show that a change of structure changes no
# output: run it with the binary before and after and diff the two files.
#   bash tools/golden_ids.sh FERRY_BINARY OUT_FILE [WORK_DIR]
# The models are made once in WORK_DIR (default /tmp/ferry_golden) by tools/gen_tiny_model.py and converted
# with the binary under test, so the converter is covered too.
set -euo pipefail
FERRY=$(readlink -f "$1")
OUT=$2
W=${3:-/tmp/ferry_golden}
cd "$(dirname "$0")/.."
mkdir -p "$W"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gpu=$("$FERRY" run --help >/dev/null 2>&1; command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
: >"$OUT.tmp"
run() { # name, args...
	local name=$1
	shift
	if "$FERRY" run "$@" --print-ids >"$tmp/o" 2>"$tmp/e"; then
		printf '%s: %s\n' "$name" "$(tr '\n' '|' <"$tmp/o")" >>"$OUT.tmp"
	else
		printf '%s: FAILED %s\n' "$name" "$(tail -n 1 "$tmp/e")" >>"$OUT.tmp"
	fi
}
printf '1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21\n7,8,9\n5\n3,1,4,1,5,9,2,6,5,3,5,8,9,7,9,3,2,3,8,4,6,2,6,4,3,3,8,3,2,7,9,5,0,2,8,8,4,1,9,7,1,6,9,3,9,9,3,7,5,1,0,5,8,2,0,9,7,4,9,4,4,5,9,2,3,0,7,8,1,6\n' >"$tmp/ids"
devices="cpu"
[ "$gpu" = 1 ] && devices="cpu cuda"
for v in $(python3 tools/gen_tiny_model.py --list); do
	[ -d "$W/$v" ] || python3 tools/gen_tiny_model.py "$v" "$W/$v" >/dev/null
	rm -rf "$tmp/m.ferry"
	"$FERRY" convert "$W/$v" -o "$tmp/m.ferry" >/dev/null 2>&1
	m=$tmp/m.ferry
	printf '%s convert: %s\n' "$v" "$(cd "$m" && find . -type f | sort | xargs sha256sum | sha256sum | cut -c1-16)" >>"$OUT.tmp"
	for d in $devices; do
		run "$v $d one" -m "$m" --device "$d" --prompt-ids 1,2,3,4,5,6,7,8,9,10,11 -n 24
		run "$v $d batch" -m "$m" --device "$d" --prompt-ids-file "$tmp/ids" -n 16
		run "$v $d chunk5" -m "$m" --device "$d" --prompt-ids-file "$tmp/ids" -n 16 --chunk 5 --max-batch 2
		for kv in q8 q4; do
			run "$v $d kv-$kv" -m "$m" --device "$d" --prompt-ids-file "$tmp/ids" -n 16 --kv "$kv"
		done
		if [ "$d" = cuda ]; then
			run "$v cuda stream" -m "$m" --device cuda --prompt-ids-file "$tmp/ids" -n 16 --stream-all --chunk 8
			run "$v cuda kv-host" -m "$m" --device cuda --prompt-ids-file "$tmp/ids" -n 16 --kv-host --kv q4
		fi
	done
done
if [ -f models/gemma-3-270m-q4_k_m.gguf ]; then
	g=$tmp/gemma.ferry
	"$FERRY" convert models/gemma-3-270m-q4_k_m.gguf -o "$g" >/dev/null 2>&1
	printf 'gemma convert: %s\n' "$(cd "$g" && find . -type f | sort | xargs sha256sum | sha256sum | cut -c1-16)" >>"$OUT.tmp"
	for d in $devices; do
		run "gemma $d text" -m "$g" --device "$d" -p "The capital of France is" -n 32
		run "gemma $d chat" -m "$g" --device "$d" --chat -p "Write a haiku about rivers." -n 32
		run "gemma $d q8" -m "$g" --device "$d" -p "def fibonacci(n):" -n 32 --kv q8
	done
	[ "$gpu" = 1 ] && run "gemma cuda stream" -m "$g" --device cuda -p "Once upon a time" -n 32 --stream-all
fi
mv "$OUT.tmp" "$OUT"
echo "golden_ids: $(wc -l <"$OUT") lines in $OUT"
