#!/usr/bin/env bash
# `make bench`: builds the ceiling probe with ferry's own flags (-O2, ARCH) and runs the CPU benchmark (bench/bench_cpu.py).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${FERRY_BUILD:-build}
mkdir -p "$BUILD/bench" models
${CC:-cc} -std=c11 -O2 ${ARCH--march=native} -fopenmp bench/cpu_peak.c -o "$BUILD/bench/cpu_peak"
FERRY_BUILD=$BUILD python3 bench/bench_cpu.py "$@"
