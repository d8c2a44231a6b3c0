#!/usr/bin/env bash
# Issue 22's side by side on the GPU machine: llama.cpp and ferry on the SAME 70B-shaped Q4_K GGUF (the peer
# kit's make_gguf.py), llama.cpp's -ngl swept inside 4 GiB, ferry streaming-only, CPU-only and hybrid, in the
# phases below; each phase fits one device call (at most 10 minutes) and the machine must stay warm between
# them (the files live in /tmp/peer_work and /dev/shm/peer_kit). Carry .deb and .peer, made here first with
#   mkdir -p .peer && cp -r ../shared/peers/kit ../shared/peers/llama.cpp .peer/
#
#   PHASE=prep    bash bench/gpu_peer70.sh   build/ferry (sm_90), llama.cpp with CUDA, the 70B GGUF (TESTS=1:
#                                            the CUDA model tests beside the llama.cpp build)
#   PHASE=convert bash bench/gpu_peer70.sh   (resumes whatever prep left) + `ferry convert` of that GGUF
#   PHASE=bench   bash bench/gpu_peer70.sh   bench/bench_hybrid.py: ferry PLACEMENTS, llama-bench -ngl NGL,
#                                            THREADS (default all cores), H2D=13 for the laptop emulation
# Outputs (logs, hybrid70*.md) go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ferry_gpu_out}
mkdir -p "$OUT"
DEPS=/tmp/ferry_deps
for f in .deb/*.deb; do dpkg -x "$f" "$DEPS"; done
LIB=$DEPS/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$LIB:${LD_LIBRARY_PATH:-}
WORK=/tmp/peer_work
G70=""
for d in /dev/shm/peer_kit "$WORK"; do [ -f "$d/llama3-70b.gguf" ] && G70=$d/llama3-70b.gguf; done
F70=$WORK/llama3-70b.ferry
t0=$(date +%s)
el() { echo $(($(date +%s) - t0)); }
peer() { # STAGE BUDGET
	FERRY_DIR=$PWD OUT="$OUT/peer" WORK=$WORK STAGE=$1 INVOCATION_BUDGET=$2 bash .peer/kit/run_peer.sh >>"$OUT/peer.log" 2>&1
	echo "run_peer $1: exit $? at $(el)s"
	grep -E "rc=|skipped|NOT finished|no room|wrote" "$OUT/peer/run_peer.log" 2>/dev/null | tail -n 6
}

case "${PHASE:-}" in
prep)
	# TESTS=1: the whole build (tests too), and the CUDA model tests run while llama.cpp builds beside them
	target=build/ferry
	[ "${TESTS:-0}" = 1 ] && target=
	make -j"$(nproc)" CUDA_ARCHS=90 EXTRA_CFLAGS="-I$DEPS/usr/include" EXTRA_LDFLAGS="-L$LIB" $target \
		>"$OUT/build.log" 2>&1 || { tail -n 20 "$OUT/build.log"; exit 1; }
	echo "ferry build: $(el)s"
	# PEER=0: no llama.cpp build and 70B GGUF (a call for the tests alone)
	[ "${PEER:-1}" = 1 ] && peer build,gen70 $((560 - $(el))) &
	# the GPU tests (bench/gpu_quick.sh: matmul, ops, test_cuda_model.py in four groups) beside the peer build
	[ "${TESTS:-0}" = 1 ] && OUT=$OUT BUDGET=$((${BUDGET:-530} - $(el))) bash bench/gpu_quick.sh
	wait
	;;
convert)
	[ -x build/ferry ] || { echo "no build/ferry: run PHASE=prep first"; exit 1; }
	[ -x $WORK/llama-build/bin/llama-bench ] || peer build 300
	[ -n "$G70" ] || { peer gen70 300; for d in /dev/shm/peer_kit "$WORK"; do [ -f "$d/llama3-70b.gguf" ] && G70=$d/llama3-70b.gguf; done; }
	[ -n "$G70" ] || { echo "no 70B GGUF"; exit 1; }
	if [ ! -f $F70/manifest.json ]; then
		build/ferry convert "$G70" -o $F70 >"$OUT/convert.log" 2>&1
		echo "ferry convert $G70: exit $? at $(el)s; $(tail -n 1 "$OUT/convert.log")"
	fi
	df -h /tmp /dev/shm | tail -n 2
	free -g | head -2
	;;
bench)
	[ -f $F70/manifest.json ] && [ -n "$G70" ] || { echo "no $F70 or GGUF: run PHASE=convert first"; exit 1; }
	extra=()
	tag=t${THREADS:-all}
	[ -n "${H2D:-}" ] && { extra+=(--h2d-limit "$H2D"); tag=$tag-h2d$H2D; }
	[ -n "${THREADS:-}" ] && extra+=(--threads "$THREADS")
	[ -n "${NGL:-4,5,6}" ] && extra+=(--gguf "$G70" --llama-bench $WORK/llama-build/bin/llama-bench --ngl "${NGL:-4,5,6}")
	python3 bench/bench_hybrid.py --model $F70 --vram 4G --ram "${RAM:-64G}" --placements "${PLACEMENTS:-gpu,auto,cpu}" \
		--prompt "${PROMPT:-512}" --gen "${GEN:-8}" "${extra[@]}" ${BATCH:+--batch "$BATCH"} \
		--out "$OUT/hybrid70-$tag.md" >"$OUT/hybrid70-$tag.log" 2>&1
	echo "bench_hybrid: exit $? at $(el)s"
	cat "$OUT/hybrid70-$tag.md" 2>/dev/null || tail -n 30 "$OUT/hybrid70-$tag.log"
	;;
*)
	echo "PHASE=prep|convert|bench (see the header)"
	exit 2
	;;
esac
