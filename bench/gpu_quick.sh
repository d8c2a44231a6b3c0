#!/usr/bin/env bash
# gpu_quick.sh: the GPU correctness tests of a merged tree in one short device call (carry .deb .whl .shared):
#   BUDGET=300 bash bench/gpu_quick.sh
# builds only build/ferry and the two CUDA test binaries (sm_90), then runs in parallel, each bounded by what is
# left of BUDGET seconds: test_cuda_matmul (every kernel vs the CPU, the int8 tensor-core kernel bit for bit, the
# 26 formats' 8-bit matvec), test_cuda_ops (attention in every KV format incl. a4/a5/ka5v4), and
# test_cuda_model.py in four variant groups (FERRY_TEST_VARIANTS; the tail checks in the first). Logs: $OUT/tests.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ferry_gpu_out}
mkdir -p "$OUT" /tmp/tl
DEPS=/tmp/ferry_deps
for f in .deb/*.deb; do dpkg -x "$f" "$DEPS"; done
LIB=$DEPS/usr/lib/x86_64-linux-gnu
# FERRY_TEST_VRAM: the test groups share the GPU (by default each ferry would take all of its memory)
export LD_LIBRARY_PATH=$LIB:${LD_LIBRARY_PATH:-} PYTHONUNBUFFERED=1 FERRY_NO_MODEL=1 FERRY_BUILD=build FERRY_TEST_VRAM=10G
[ -d ../shared/data ] || { [ -d .shared/data ] && ln -sfn "$PWD/.shared" ../shared; }
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
	.whl/*.whl >/dev/null 2>&1 && export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
make -j"$(nproc)" CUDA_ARCHS=90 EXTRA_CFLAGS="-I$DEPS/usr/include" EXTRA_LDFLAGS="-L$LIB" build/ferry \
	build/tests/test_cuda_matmul build/tests/test_cuda_ops >"$OUT/build.log" 2>&1 || { tail -n 20 "$OUT/build.log"; exit 1; }
echo "build: ${SECONDS}s"
lim=$((${BUDGET:-300} - SECONDS))
run_t() { # NAME CMD...
	local n=$1
	shift
	timeout $lim "$@" >/tmp/tl/$n.log 2>&1
	echo "$n: exit $? at ${SECONDS}s"
	grep -E "FAIL|checks passed|cases|failed" /tmp/tl/$n.log | tail -n 8
}
(run_t test_cuda_matmul build/tests/test_cuda_matmul; run_t test_cuda_ops build/tests/test_cuda_ops) &
g=0
for vs in llama_yarn_rope,llama_headdim,mistral_swa qwen3,gemma3,gemma3_softcap qwen3moe,mixtral qwen2moe,gptoss; do
	g=$((g + 1))
	FERRY_TEST_VARIANTS=$vs FERRY_TEST_TAIL=$([ $g = 1 ] && echo 1 || echo 0) \
		run_t test_cuda_model$g python3 tests/test_cuda_model.py &
done
wait
for l in /tmp/tl/*.log; do echo "==== $l"; cat "$l"; done >"$OUT/tests.log"
