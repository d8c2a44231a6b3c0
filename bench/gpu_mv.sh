#!/usr/bin/env bash
# Issue 23's 8-bit matvec on the GPU machine in one call (carry .deb .whl .shared): build, the host and GPU
# matmul tests, bench_cuda_matmul --mv (old vs new per format), resident 8B Q4_K decode with FERRY_MATMUL=old|auto.
TESTS=0 SANITIZER=0 IO_BENCH=0 OUT=$OUT bash bench/gpu_run.sh 2>&1 | grep -E "gpu:|build \(CUDA\)"
export LD_LIBRARY_PATH=/tmp/ferry_deps/usr/lib/x86_64-linux-gnu
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} # gguf-py, installed by gpu_run.sh (tools/hf_to_gguf.py needs it)
make -j16 CUDA_ARCHS=90 EXTRA_CFLAGS="-I/tmp/ferry_deps/usr/include" EXTRA_LDFLAGS="-L$LD_LIBRARY_PATH" build/bench/bench_cuda_matmul >/dev/null 2>&1
build/tests/test_cuda_mvq_host 2>&1 | tail -2
timeout 200 build/tests/test_cuda_matmul >$OUT/tcm.log 2>&1; echo "test_cuda_matmul rc=$?"; tail -4 $OUT/tcm.log
timeout 150 build/bench/bench_cuda_matmul --mv >$OUT/mv.md 2>&1; echo "bench --mv rc=$?"; cat $OUT/mv.md | tail -60
build/ferry synth -o /tmp/l8b --shape llama3-8b --fmt q4_k >/dev/null 2>&1; echo synth $?
for m in old auto; do for r in 1 2; do FERRY_MATMUL=$m timeout 60 build/ferry run -m /tmp/l8b --device cuda --placement gpu --vram 70G --prompt-ids 1,2,3 -n 128 --ignore-eos --temp 0 --stats --warmup 2>&1 | grep -iE "decode|launch" | sed "s/^/$m: /"; done; done
