#!/bin/bash
# The text-side protocol (issue 17) as run for benchmarks/TEXT_PROTOCOL.md: one call per row group, one thread each,
# so two groups can run at once on one --out. Usage: OUT=DIR benchmarks/text_protocol/run.sh ROW [ROW ...] [flags]
cd "$(dirname "$0")/../.." || exit 2   # the checkout
OUT=${OUT:-/work/tp/out}
export HF_HUB_OFFLINE=1 MODELSCOPE_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
COMMON=(--out "$OUT" --images 200 --test-share 0.2 --seed 0 --tuner lora --max-steps 60 --batch-size 8
        --max-length 128 --memorise-repeat 2 --k 10 --retrieve-batch-size 16)
echo "start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT.timeline.txt"
.venv/bin/swift-ssid protocol text "${COMMON[@]}" --rows "$@"
rc=$?
echo "end $* $(date -u +%FT%TZ) rc=$rc load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT.timeline.txt"
exit $rc
