#!/usr/bin/env bash
# A short correctness pass of a merged tree on the GPU machine, for when device time is short (carry .deb .whl
# .shared): build, the CUDA op and matmul tests, the whole-model test on a few variants (FERRY_TEST_VARIANTS,
# default one dense, one MoE, Gemma), and the resident 8B-shaped Q4_K decode with the 8-bit x quantized per
# matmul / once per input / CUDA graphs (ids must agree), and auto placement on it (the rates measured at start).
TESTS=0 SANITIZER=0 IO_BENCH=0 OUT=$OUT bash bench/gpu_run.sh 2>&1 | grep -E "gpu:|build \(CUDA\)"
export LD_LIBRARY_PATH=/tmp/ferry_deps/usr/lib/x86_64-linux-gnu
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} # gguf-py, installed by gpu_run.sh (tools/hf_to_gguf.py needs it)
timeout 90 build/tests/test_cuda_ops >$OUT/tco.log 2>&1; echo "test_cuda_ops rc=$?"; grep -iE "fail|worst" $OUT/tco.log | tail -4
timeout 120 build/tests/test_cuda_matmul >$OUT/tcm.log 2>&1; echo "test_cuda_matmul rc=$?"; grep -E "FAIL|cases|reuse" $OUT/tcm.log | tail -5
FERRY_BUILD=build FERRY_TEST_VARIANTS=${VARIANTS:-llama_headdim,qwen3moe,gemma3} timeout ${MODEL_TIMEOUT:-200} \
	python3 tests/test_cuda_model.py >$OUT/tcmodel.log 2>&1
echo "test_cuda_model ($VARIANTS) rc=$?"; grep -E "FAIL|checks passed|graphs" $OUT/tcmodel.log | tail -12
build/ferry synth -o /tmp/l8b --shape llama3-8b --fmt q4_k >/dev/null 2>&1
for mode in "FERRY_XQ_REUSE=0 FERRY_CUDA_GRAPH=0" "FERRY_XQ_REUSE=1 FERRY_CUDA_GRAPH=0" "FERRY_XQ_REUSE=1 FERRY_CUDA_GRAPH=1"; do
	env $mode timeout 60 build/ferry run -m /tmp/l8b --device cuda --placement gpu --vram 70G --prompt-ids 1,2,3 \
		-n 128 --ignore-eos --temp 0 --stats --warmup >$OUT/run.out 2>$OUT/run.err
	echo "$mode: rc=$? ids $(md5sum <$OUT/run.out | cut -c1-12)"
	grep -iE "^ferry: (prefill|.*launches|.*graph)" $OUT/run.err | sed "s/^/  /"
done
timeout 90 build/ferry run -m /tmp/l8b --device cuda --vram 2G --prompt-ids 1,2,3 -n 8 --ignore-eos --temp 0 --stats \
	>$OUT/auto.out 2>$OUT/auto.err; echo "auto placement at --vram 2G: rc=$?"
grep -E "placement|predicted|decode" $OUT/auto.err | head -6
