#!/usr/bin/env bash
# Issue 23's resident decode on the GPU machine in one call (carry .deb .whl .shared): build, the matmul test
# (check_xq_reuse), the whole-model test (check_graphs: graphs and x reuse on/off give identical logits and ids),
# then the resident 8B-shaped Q4_K decode with the 8-bit x quantized at every matmul / once per input / CUDA
# graphs on: tok/s, launches per step, graph replays, and a checksum of the generated ids (must agree).
TESTS=0 SANITIZER=0 IO_BENCH=0 OUT=$OUT bash bench/gpu_run.sh 2>&1 | grep -E "gpu:|build \(CUDA\)"
export LD_LIBRARY_PATH=/tmp/ferry_deps/usr/lib/x86_64-linux-gnu
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} # gguf-py, installed by gpu_run.sh (tools/hf_to_gguf.py needs it)
timeout 200 build/tests/test_cuda_matmul >$OUT/tcm.log 2>&1; echo "test_cuda_matmul rc=$?"; grep -E "FAIL|cases" $OUT/tcm.log | tail -6
timeout 400 python3 tests/test_cuda_model.py >$OUT/tcmodel.log 2>&1; echo "test_cuda_model rc=$?"
grep -E "graphs|FAIL" $OUT/tcmodel.log | tail -20
build/ferry synth -o /tmp/l8b --shape llama3-8b --fmt q4_k >/dev/null 2>&1; echo synth $?
for mode in "FERRY_XQ_REUSE=0 FERRY_CUDA_GRAPH=0" "FERRY_XQ_REUSE=1 FERRY_CUDA_GRAPH=0" "FERRY_XQ_REUSE=1 FERRY_CUDA_GRAPH=1"; do
	for r in 1 2; do
		env $mode timeout 60 build/ferry run -m /tmp/l8b --device cuda --placement gpu --vram 70G --prompt-ids 1,2,3 \
			-n 128 --ignore-eos --temp 0 --stats --warmup >$OUT/run.out 2>$OUT/run.err
		echo "$mode: rc=$? ids $(md5sum <$OUT/run.out | cut -c1-12)"
		grep -iE "decode|launch|graph" $OUT/run.err | sed "s/^/  /"
	done
done
