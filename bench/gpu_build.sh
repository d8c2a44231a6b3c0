# Sourced by the one-call GPU scripts (bench/gpu_hybrid70.sh, gpu_moe.sh) with OUT set: unpacks the carried
# .deb packages into /tmp/ferry_deps as bench/gpu_run.sh does and builds only build/ferry for sm_90 (its log
# in $OUT/build.log); sets LIB, LD_LIBRARY_PATH and t0 (the start, for the timings the scripts print).
DEPS=/tmp/ferry_deps
for f in .deb/*.deb; do dpkg -x "$f" "$DEPS"; done
LIB=$DEPS/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$LIB:${LD_LIBRARY_PATH:-}
t0=$(date +%s)
make -j"$(nproc)" CUDA_ARCHS=90 EXTRA_CFLAGS="-I$DEPS/usr/include" EXTRA_LDFLAGS="-L$LIB" build/ferry >"$OUT/build.log" 2>&1 ||
	{ tail -n 20 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 ))s"
