#!/usr/bin/env bash
# Issue 23's 8-bit matvec for every quantized format (branch mvk) on the GPU machine (carry .deb .whl .shared):
#   bash bench/gpu_mvk.sh test    build, the host test, test_cuda_matmul (26 formats' 8-bit kernels vs cpu_matmul)
#   bash bench/gpu_mvk.sh bench   bench_cuda_matmul --mv over every format (floor, old and new ratio per shape and T,
#                                 then the T = 1 summary); on a warm machine after `test` (the build is kept)
# Two calls: each fits the device tool's 10 minutes. Logs in $OUT (tcm.log, mv.md).
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-test}
if [ "$what" = test ]; then
	TESTS=0 SANITIZER=0 IO_BENCH=0 OUT=$OUT bash bench/gpu_run.sh 2>&1 | grep -E "gpu:|build \(CUDA\)"
fi
export LD_LIBRARY_PATH=/tmp/ferry_deps/usr/lib/x86_64-linux-gnu
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
make -j16 CUDA_ARCHS=90 EXTRA_CFLAGS="-I/tmp/ferry_deps/usr/include" EXTRA_LDFLAGS="-L$LD_LIBRARY_PATH" \
	build/bench/bench_cuda_matmul build/tests/test_cuda_matmul build/tests/test_cuda_mvq_host >/dev/null 2>&1
if [ "$what" = test ]; then
	build/tests/test_cuda_mvq_host 2>&1 | tail -2
	timeout 400 build/tests/test_cuda_matmul >$OUT/tcm.log 2>&1; echo "test_cuda_matmul rc=$?"
	grep -E "FAIL|cases" $OUT/tcm.log | tail -8
else
	timeout 540 build/bench/bench_cuda_matmul --mv >$OUT/mv.md 2>&1; echo "bench --mv rc=$?"
	sed -n '/^T = 1, new ratio/,$p' $OUT/mv.md
fi
