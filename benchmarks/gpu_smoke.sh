#!/usr/bin/env bash
# CUDA smoke test of the SSID decoding path (tiny Qwen2.5-VL in bf16): the processor's fixed-width path against the
# CPU path, its per-step cost against the clone/masked_fill floor on the GPU, constrained beam search with
# model.generate, and `swift-ssid retrieve --torch-dtype bfloat16` (see benchmarks/gpu_smoke.py for the checks).
#
# Needs: a CUDA GPU, torch + transformers (+ ms-swift for the retrieve check), and the Qwen2 tokenizer at
# .cache/assets/qwen2-tokenizer (`make assets`). Writes $OUT/gpu_smoke.json, $OUT/gpu_smoke.log, $OUT/env.txt.
#
# From a session lent a GPU machine, in one call (about 3-5 minutes, the first of them starting the machine):
#   run(command="bash benchmarks/gpu_smoke.sh", carry=[".cache/assets/qwen2-tokenizer"], timeout_s=540)
# then copy the numbers of gpu_smoke.json into benchmarks/RESULTS.md ("GPU smoke test").
# On a machine without a GPU, `DEVICE=cpu QUICK=1 bash benchmarks/gpu_smoke.sh` checks the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_smoke}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 MODELSCOPE_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi: not available"
  "$PY" - <<'PYEOF'
import importlib
for name in ("torch", "transformers", "swift", "numpy", "tokenizers"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as e:  # noqa: BLE001
        print(name, "MISSING:", type(e).__name__, e)
import torch
print("cuda available:", torch.cuda.is_available(), torch.version.cuda)
PYEOF
} 2>&1 | tee "$OUT/env.txt"
if [ ! -f .cache/assets/qwen2-tokenizer/tokenizer.json ]; then
  echo "missing .cache/assets/qwen2-tokenizer/tokenizer.json: run 'make assets' here, or carry it to the device" \
    | tee -a "$OUT/env.txt"
  exit 2
fi
DEVICE=${DEVICE:-cuda}
EXTRA=()
if [ -n "${QUICK:-}" ]; then EXTRA+=(--quick); fi
timeout "${SMOKE_TIMEOUT:-480}" "$PY" benchmarks/gpu_smoke.py --out "$OUT" --device "$DEVICE" --dtype bfloat16 \
  "${EXTRA[@]}" 2>&1 | tee "$OUT/gpu_smoke.log"
exit "${PIPESTATUS[0]}"
