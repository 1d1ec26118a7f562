"""Smoke test: the constrained-decoding benchmark runs end to end at a tiny size (so it cannot rot).

The benchmark itself checks that the processor and the GENRE-style reference allow the same tokens,
that the CPU and fixed-width masking paths agree, that both generate runs do equal work, and that
every constrained output is an identifier of the set; any failure exits non-zero.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH = REPO_ROOT / "benchmarks" / "bench_constrained.py"


def test_benchmark_runs_at_tiny_size(tmp_path, qwen2_tokenizer, flickr_captions):
    out = tmp_path / "RESULTS.md"
    cmd = [
        sys.executable,
        str(BENCH),
        "--sizes",
        "300",
        "1200",
        "--repeats",
        "2",
        "--build-repeats",
        "1",
        "--e2e-repeats",
        "1",
        "--e2e-sizes",
        "1200",
        "--new-tokens",
        "8",
        "--groups",
        "2",
        "--beams",
        "3",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = json.loads((tmp_path / "results.json").read_text())
    assert [s["n"] for s in report["sizes"]] == [300, 1200]
    for size in report["sizes"]:
        mem = size["memory"]
        assert mem["trie_bytes_per_id"] == 8 * (mem["nodes"] - 1) / size["n"]  # one int64 key per non-root node
        assert size["build"]["tokens_per_id"] > 2
        for position in ("root", "widest", "mid"):
            step = size["steps"][position]
            for variant in ("floor_clone", "floor_masked_fill", "floor_full", "fill_existing", "ssid", "genre"):
                assert step[variant]["n"] == 2 and step[variant]["median"] > 0
        assert size["steps"]["widest"]["fanout_max"] >= size["steps"]["root"]["fanout_max"]
    e2e = report["sizes"][1]["e2e"]
    assert e2e["rows"] == 6 and e2e["complete_identifiers"] == 6
    assert "e2e" not in report["sizes"][0]

    text = out.read_text()
    assert "## Targets" in text and "| 1,200 | mid |" in text and "bench_constrained.py" in text
    assert (tmp_path / "scaling.png").stat().st_size > 10_000
