# ferry build. `make` builds the ferry binary and the test programs, in parallel (as many jobs as the cores
# this process may use, unless -j is given); CUDA sources (src/kernels/cuda/*.cu) are compiled and linked when
# nvcc is found, for every GPU architecture where there is a GPU, else for one (it says so; CUDA_ARCHS=
# chooses); `make NVCC=` forces a CPU-only build. `make test` runs every test; `make asan` builds into
# build-asan with ASan + UBSan and runs the tests there; `make check` (what CI runs) does both, one after
# the other, with CUDA built for every architecture. V=1 shows commands.

# -j unless given on the command line (which wins over this anyway) or in MAKEFLAGS from the environment;
# sub-makes share the top make's jobs.
ifeq ($(MAKELEVEL)$(filter -j% j%,$(MAKEFLAGS) $(shell printenv MAKEFLAGS)),0)
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 1)
endif

# nvcc: on PATH, else the toolkit's usual place, else the one tools/install_deps.sh unpacks from PyPI into .cuda
# (CUDA_SYSTEM=/nonexistent skips /usr/local/cuda, to test that path on a machine that has a toolkit).
CUDA_SYSTEM ?= /usr/local/cuda
NVCC ?= $(shell command -v nvcc 2>/dev/null || { [ -x $(CUDA_SYSTEM)/bin/nvcc ] && echo $(CUDA_SYSTEM)/bin/nvcc; } || \
	{ [ -x .cuda/bin/nvcc ] && echo $(CURDIR)/.cuda/bin/nvcc; })
# `all` whatever rule comes first (with NVCC= the first rule in this file was http.o's dependency line)
.DEFAULT_GOAL := all
BUILD ?= build
OPT ?= -O2 -g
# Vector units of the build machine (AVX2/AVX-512/F16C...), as llama.cpp does by default; `make ARCH=` for a
# portable binary.
ARCH ?= -march=native
SAN ?=
# Headers are included by their path under src/ ("engine/model.h"), so every #include names the folder it
# depends on; a folder's internal headers (jinja_internal.h, tok_internal.h...) are included from their own
# folder only (tests/test_structure.sh checks both).
INC := -Isrc
# C sources see the project's headers for #include "..." only, so no project header can stand in for a
# system one.
CINC := $(INC:-I%=-iquote %)
CFLAGS := -std=c11 -Wall -Wextra $(OPT) $(ARCH) $(SAN) -D_GNU_SOURCE -fopenmp -MMD -MP $(CINC) $(EXTRA_CFLAGS)
LDFLAGS := -fopenmp $(SAN) $(EXTRA_LDFLAGS)
LDLIBS := -ljansson -lxxhash -lpcre2-8 -lutf8proc -luring -llz4 -lmicrohttpd -ledit -lm -lpthread

LIB_SRC := $(wildcard src/*/*.c src/kernels/cpu/*.c)
LIB_SRC := $(filter-out src/cli/main.c,$(LIB_SRC))
TEST_SRC := $(wildcard tests/test_*.c)
# C++ tests: tests/test_cuda_decoders.cpp compiles the CUDA decoders for the host
TEST_CXX_SRC := $(wildcard tests/test_*.cpp)
CU_SRC := $(wildcard src/kernels/cuda/*.cu)

ifneq ($(strip $(NVCC)),)
ifneq ($(strip $(CU_SRC)),)
CUDA_HOME ?= $(shell dirname "$$(dirname "$$(readlink -f "$(NVCC)")")")
# Every GPU generation users have, Turing on; PTX of the newest for later ones. Nothing requires Hopper.
# Where there is no GPU (no /dev/nvidia0), only Turing, whose PTX later GPUs compile when they load it: a
# fifth of the compile time (minutes) for a binary that cannot use a GPU here anyway.
CUDA_ARCHS_ALL := 75 80 86 89 90
CUDA_ARCHS ?= $(if $(wildcard /dev/nvidia[0-9]* /proc/driver/nvidia/gpus/*),$(CUDA_ARCHS_ALL),75)
NVCCFLAGS := -O2 -g -std=c++17 $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
	-gencode arch=compute_$(lastword $(CUDA_ARCHS)),code=compute_$(lastword $(CUDA_ARCHS)) \
	-Xcompiler -Wall -MMD -MP $(INC)
CFLAGS += -DFERRY_CUDA -I$(CUDA_HOME)/include -DFERRY_CUDA_HOME='"$(CUDA_HOME)"'
# Objects per list of architectures, so that `make` and `make check` keep theirs; the stamp holds the list
# and changes with it, so the binaries are linked again.
CU_DIR := $(BUILD)/cuda-sm$(subst $(eval) ,-,$(strip $(CUDA_ARCHS)))
CU_OBJ := $(CU_SRC:%.cu=$(CU_DIR)/%.o)
CU_STAMP := $(BUILD)/cuda_archs
# Only where this make builds into $(BUILD) (`check` and `asan` leave it to the makes they start).
ifneq ($(filter-out clean asan fuzz check,$(or $(MAKECMDGOALS),all)),)
$(shell mkdir -p $(BUILD) && { echo '$(CUDA_ARCHS)' | cmp -s - $(CU_STAMP) || echo '$(CUDA_ARCHS)' >$(CU_STAMP); })
ifeq ($(origin CUDA_ARCHS)$(CUDA_ARCHS),file75)
$(info note: no GPU here: CUDA code built for sm_75 (+ PTX) only; make CUDA_ARCHS="$(CUDA_ARCHS_ALL)" builds all (make check does))
endif
endif
# The runtime is linked statically; cuBLAS (the GEMM of the prefill path) is loaded with dlopen when the CUDA
# backend starts (src/backend/cuda_blas.c), found through this runpath or in CUDA_HOME.
LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart_static -lrt -ldl -lstdc++
# The GPU's ceilings for bench/bench_decode.py (bench/gpu_peak.c). `all` is listed first so it stays the default goal.
# bench_cuda_matmul is built too, so a change that breaks it fails here rather than on the GPU machine.
all: $(BUILD)/bench/gpu_peak $(BUILD)/bench/bench_cuda_matmul
$(BUILD)/bench/gpu_peak: $(BUILD)/bench/gpu_peak.o
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcublas
endif
endif

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CU_OBJ) $(CU_STAMP)
# Files made at build time, included by their path under $(BUILD)/gen: the chat page of `ferry serve`
# (src/serve/chat.html as a C array, compiled into the binary; python3, which the tools need anyway, rather than
# xxd, which a bare machine may lack).
GEN := $(BUILD)/gen
CFLAGS += -iquote $(GEN)
$(BUILD)/src/serve/http.o: $(GEN)/serve/chat_html.h
$(GEN)/serve/chat_html.h: src/serve/chat.html
	@mkdir -p $(dir $@)
	@echo "  GEN     $@"
	$(Q)python3 -c 'import sys; d = open(sys.argv[1], "rb").read(); \
		print("unsigned char chat_html[] = {" + ",".join(map(str, d)) + "};"); \
		print("unsigned int chat_html_len = %d;" % len(d))' src/serve/chat.html >$@.tmp && mv $@.tmp $@
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%) $(TEST_CXX_SRC:tests/%.cpp=$(BUILD)/tests/%)
# Helpers the Python tests run (not tests themselves: run_tests.sh runs only test_* programs).
TEST_TOOLS := $(BUILD)/tests/dequant_tool $(BUILD)/tests/spec_tool $(BUILD)/tests/gram_tool

ifeq ($(V),1)
Q :=
else
Q := @
endif

.PHONY: all test asan check fuzz fuzz-run bench bench-io bench-matmul bench-cuda-matmul clean
.SECONDARY:
all: $(BUILD)/ferry $(TEST_BIN) $(TEST_TOOLS) $(BUILD)/bench/io_stream $(BUILD)/bench/bench_matmul

$(BUILD)/ferry: $(BUILD)/src/cli/main.o $(LIB_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LDLIBS)

$(BUILD)/bench/io_stream: $(BUILD)/bench/io_stream.o $(LIB_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LDLIBS)

$(BUILD)/bench/bench_matmul: $(BUILD)/bench/bench_matmul.o $(LIB_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(LIB_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LDLIBS)

# the C++ tests link as C++ (a sanitized build needs the C++ runtime of -fsanitize=undefined)
$(TEST_CXX_SRC:tests/%.cpp=$(BUILD)/tests/%): $(BUILD)/tests/%: $(BUILD)/tests/%.o $(LIB_OBJ)
	@echo "  LD      $@"
	$(Q)$(CXX) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LDLIBS)

# The x86 SIMD kernels: each file gets its instruction set whatever ARCH is, and runs only where cpuid finds it
# (src/kernels/cpu/qdot.c); the AVX2 one never uses AVX-512, so both are tested on an AVX-512 machine.
ifneq ($(filter x86_64 i%86,$(shell uname -m)),)
$(BUILD)/src/kernels/cpu/qdot_avx2.o: CFLAGS += -mavx2 -mfma -mf16c -mno-avx512f
$(BUILD)/src/kernels/cpu/qdot_avx512.o: CFLAGS += -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512vnni
$(BUILD)/src/kernels/cpu/geglu_avx2.o: CFLAGS += -mavx2 -mno-avx512f
$(BUILD)/src/kernels/cpu/geglu_avx512.o: CFLAGS += -mavx2 -mavx512f
endif
# geglu's paths compute the same bits only when no multiply-add is fused (src/kernels/cpu/geglu_simd.h)
$(BUILD)/src/kernels/cpu/geglu.o $(BUILD)/src/kernels/cpu/geglu_avx2.o $(BUILD)/src/kernels/cpu/geglu_avx512.o: \
	CFLAGS += -ffp-contract=off

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

# no fused multiply-add: the decoders' __fmul_rn/__fadd_rn are emulated as single rounded operations
$(BUILD)/tests/%.o: tests/%.cpp
	@mkdir -p $(dir $@)
	@echo "  CXX     $<"
	$(Q)$(CXX) -std=c++17 -Wall -Wextra $(OPT) $(SAN) -ffp-contract=off -Wno-unknown-pragmas -MMD -MP $(CINC) -c -o $@ $<

ifneq ($(CU_OBJ),)
$(CU_DIR)/%.o: %.cu
	@mkdir -p $(dir $@)
	@echo "  NVCC    $<"
	$(Q)$(NVCC) $(NVCCFLAGS) -c -o $@ $<
endif

test: $(BUILD)/ferry $(TEST_BIN) $(TEST_TOOLS)
	$(Q)FERRY_BUILD=$(BUILD) bash tests/run_tests.sh

ASAN_VARS := BUILD=build-asan NVCC= OPT="-O1 -g -fno-omit-frame-pointer" \
	SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
asan:
	$(Q)$(MAKE) --no-print-directory $(ASAN_VARS) test

# Real fuzzing with libFuzzer (needs clang), from the seeds of the regression build:
#   build/tests/test_fuzz_X --seeds DIR && build-fuzz/tests/test_fuzz_X DIR -max_total_time=60
FUZZ_BIN := $(patsubst tests/%.c,build-fuzz/tests/%,$(wildcard tests/test_fuzz_*.c))
# The parsers, the tokenizer, the Jinja interpreter and the grammars; nothing that needs OpenMP.
FUZZ_SRC := $(wildcard src/layout/*.c) $(filter-out src/text/chat_template.c,$(wildcard src/text/*.c)) src/base/strmap.c src/base/util.c \
	src/convert/imatrix.c \
	$(wildcard src/jinja/*.c) $(wildcard src/grammar/*.c)
fuzz: $(FUZZ_BIN)
build-fuzz/tests/%: tests/%.c $(FUZZ_SRC)
	@mkdir -p $(dir $@)
	@echo "  FUZZ    $@"
	$(Q)clang -std=c11 -O1 -g -D_GNU_SOURCE -DFUZZ_LIBFUZZER -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $(CINC) \
		-o $@ $^ -ljansson -lxxhash -lpcre2-8 -lutf8proc -llz4 -lm -lpthread

# What check runs last (with the ASan build's seed writers, which need no CUDA): every fuzzer for FUZZ_SECONDS
# from the regression build's seeds (a target whose regression run skips, exit 77: its data is missing, is
# skipped too); a crash, a leak or an
# undefined-behaviour report fails it, the input kept as build-fuzz/NAME-crash-* and the log as build-fuzz/NAME.log.
FUZZ_SECONDS ?= 20
fuzz-run: $(FUZZ_BIN) $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_fuzz_*.c))
	$(Q)for f in $(FUZZ_BIN); do n=$$(basename $$f); d=build-fuzz/seeds/$$n; rm -rf $$d; mkdir -p $$d; \
		$(BUILD)/tests/$$n >/dev/null 2>&1; [ $$? -eq 77 ] && { echo "  SKIP    $$n (its data is missing)"; continue; }; \
		$(BUILD)/tests/$$n --seeds $$d >/dev/null && $$f $$d -max_total_time=$(FUZZ_SECONDS) \
			-artifact_prefix=build-fuzz/$$n- >build-fuzz/$$n.log 2>&1 || \
			{ echo "FAIL fuzzing $$n (build-fuzz/$$n.log):"; tail -n 30 build-fuzz/$$n.log; exit 1; }; \
		echo "  FUZZED  $$n for $(FUZZ_SECONDS)s: $$(grep -o 'Done [0-9]* runs' build-fuzz/$$n.log)"; done

# What CI runs: the tests (CUDA compiled for every architecture unless CUDA_ARCHS is given), then again under
# ASan + UBSan; one after the other, not as parallel jobs.
check:
	$(Q)$(MAKE) --no-print-directory test CUDA_ARCHS="$(if $(filter file,$(origin CUDA_ARCHS)),$(CUDA_ARCHS_ALL),$(CUDA_ARCHS))"
	$(Q)$(MAKE) --no-print-directory asan
	$(Q)$(MAKE) --no-print-directory $(ASAN_VARS) fuzz-run

bench: $(BUILD)/ferry
	$(Q)FERRY_BUILD=$(BUILD) ARCH="$(ARCH)" bash bench/run_bench.sh $(ARGS)

# The layer streamer against the disk and bus floors (bench/io_stream.c), e.g. make bench-io ARGS="--size 4G".
bench-io: $(BUILD)/bench/io_stream
	$(Q)$(BUILD)/bench/io_stream $(ARGS)

# cpu_matmul per weight format against the read bandwidth (bench/bench_matmul.c), e.g. make bench-matmul ARGS=2 for T=2.
bench-matmul: $(BUILD)/bench/bench_matmul
	$(Q)$(BUILD)/bench/bench_matmul $(ARGS)

# cuda_matmul per weight format against the device copy rate and plain cuBLAS (bench/bench_cuda_matmul.c; needs a GPU).
bench-cuda-matmul: $(BUILD)/bench/bench_cuda_matmul
	$(Q)$(BUILD)/bench/bench_cuda_matmul

$(BUILD)/bench/bench_cuda_matmul: $(BUILD)/bench/bench_cuda_matmul.o $(LIB_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LDLIBS) -lcublas

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
