"""``swift-ssid protocol text`` end to end on a tiny random text model, through the real ``swift`` CLI.

The protocol's numbers need the real LM and hours (benchmarks/TEXT_PROTOCOL.md); this test checks that every kind of
row runs (trained kinds, atomic with its new tokens, SSID whose stage-1 probe finds the random model's answers
unusable and so falls back to the caption-derived row, a lexical row and a fusion), that the table, plot and JSON
are written, that each run ranks only indexed images, that a second call on a moved copy of the folder recomputes
nothing, and that a changed training setting retrains and ranks again instead of reporting the old checkpoint's run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swift_ssid.core.index import load_index

pytestmark = pytest.mark.slow

ROWS = ["caption-derived", "atomic", "ssid", "bm25", "fusion"]


def _protocol(out: Path, model: Path, captions: Path, rows=ROWS, steps=1) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "swift_ssid.cli", "protocol", "text", "--out", str(out), "--captions",
               str(captions), "--images", "5", "--test-share", "0.2", "--model", str(model), "--model_type", "qwen2",
               "--template", "ssid_qwen2_5", "--rows", *rows, "--fuse", "atomic", "bm25", "--max-steps", str(steps),
               "--batch-size", "2", "--max-length", "128", "--memorise-repeat", "1", "--k", "3",
               "--bootstrap", "50", "--stage1-probe", "3"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MODELSCOPE_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


def test_the_text_protocol_runs_every_row_type_and_resumes(tmp_path, flickr_captions):
    from swift_ssid.testing.tiny_models import build_tiny_qwen2_text

    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(flickr_captions[:25]) + "\n", encoding="utf-8")
    model = build_tiny_qwen2_text(tmp_path / "model")
    out = tmp_path / "protocol"

    first = _protocol(out, model, captions)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    names = [row["name"] for row in results["rows"]]
    assert names == ROWS, names
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    assert len(queries) == 4  # captions 2-5 of the one test image
    for kind in ("caption-derived", "atomic"):
        indexed = {entry.image for entry in load_index(out / f"index_{kind}").entries}
        run = [json.loads(line) for line in (out / f"run_{kind}.jsonl").read_text().splitlines()]
        assert {r["query_id"] for r in run} == {q["query_id"] for q in queries}
        assert all(set(r["images"]) <= indexed and r["images"] for r in run), kind
    assert (out / "sft_atomic" / "ssid_protocol.json").is_file()  # atomic trained with its new tokens
    ssid = next(row for row in results["rows"] if row["name"] == "ssid")
    stage1 = json.loads((out / "ssid_stage1" / "stage1.json").read_text())
    assert stage1["decided_on"] == "a probe of 3" and stage1["probe"]["upper_95"] < 0.8  # random answers: unusable
    assert not (out / "ssid_stage1" / "results.jsonl").exists()  # the other descriptions never went to stage 1
    assert ssid["kind"] == "ssid (fallback: caption-derived)" and ssid["run"].endswith("run_caption-derived.jsonl")
    assert not (out / "sft_ssid").exists()  # the fallback reuses the caption-derived training
    assert "| atomic" in (out / "table.md").read_text() and (out / "text_protocol.png").stat().st_size > 0

    moved = tmp_path / "moved"  # a copied --out (mtimes kept) resumes like the original: its records name the old one
    shutil.copytree(out, moved, symlinks=True)
    shutil.rmtree(out)
    out = moved
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("run_*.jsonl") if p.name != "run_fusion.jsonl"}
    second = _protocol(out, model, captions)
    assert second.returncode == 0, second.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing ranked again (fusion is re-fused: cheap)
    assert "skipping swift sft" in second.stderr

    third = _protocol(out, model, captions, rows=["atomic"], steps=2)  # a changed training retrains and re-ranks
    assert third.returncode == 0, third.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["rows"][0]["steps"] == 2
    assert (out / "run_atomic.jsonl").stat().st_mtime_ns > stamps[out / "run_atomic.jsonl"]
    assert (out / "run_atomic.jsonl.stale").is_file()  # the old checkpoint's ranking, kept aside
