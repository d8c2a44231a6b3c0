#!/usr/bin/env bash
# The main job on a fresh machine: convert the default model once (cached in models/) and generate from it,
# printing tokens as they come, then one chat turn (--chat) through its tokenizer and chat template. The
# device is picked automatically (this version computes on the CPU).
# Until GGUF and Gemma 3 support land, the default model is a tiny Llama-3-style model with random weights,
# generated locally (no download), so the output ids carry no meaning.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p models
[ -f models/tiny-llama3/config.json ] || python3 tools/gen_tiny_model.py llama3_rope models/tiny-llama3
[ -f models/tiny-llama3.ferry/manifest.json ] || ./build/ferry convert models/tiny-llama3 -o models/tiny-llama3.ferry
./build/ferry inspect models/tiny-llama3.ferry
echo "generating 32 tokens after the prompt 1,15,27,300,42:"
./build/ferry run -m models/tiny-llama3.ferry --prompt-ids 1,15,27,300,42 -n 32 --seed 1 --stats
echo
echo "a chat turn through the model's tokenizer and chat template (random weights: the reply is noise):"
./build/ferry run -m models/tiny-llama3.ferry --chat -p "Hello! What can you do?" -n 16 --seed 1 --show-prompt
