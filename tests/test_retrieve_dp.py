"""Data-parallel retrieval: ``NPROC_PER_NODE=2 swift-ssid retrieve`` writes the single-process run file exactly.

The fast tests check the sharding (whole batches, contiguous, covering every query once) and the merge (query
order, partial files removed, the run file replaced atomically). The slow test runs the real CLI on the tiny
Qwen2 text model, once in one process and once under torchrun with two CPU processes (gloo), the second time
resuming a killed rank's partial file, and compares the two run files byte for byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swift_ssid.core.index import build_index
from swift_ssid.core.queries import load_queries
from swift_ssid.integration.retrieval import (
    merge_partials,
    partial_files,
    partial_path,
    shard_span,
)
from swift_ssid.testing.tiny_models import OFFLINE_ENV

IDENTIFIERS = [
    "dog - park - ball",
    "two men - street",
    "girl - red dress",
    "man - bicycle - road",
    "children - beach",
    "woman - kitchen",
    "cat - sofa",
    "boat - lake - sunset",
]
CAPTIONS = [
    "A dog chases a ball in the park.",
    "Two men walk down a street.",
    "A girl in a red dress.",
    "A man rides a bicycle on the road.",
    "Children play on the beach.",
    "A woman cooks in a kitchen.",
    "A cat sleeps on a sofa.",
]
SETTING = {"reason": "train+infer", "k": 3}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 33])
@pytest.mark.parametrize("batch_size", [1, 2, 3])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_shard_span_deals_whole_batches_in_order(n, batch_size, world_size):
    spans = [shard_span(n, batch_size, rank, world_size) for rank in range(world_size)]
    assert [i for span in spans for i in span] == list(range(n))  # each query once, in order
    for span in spans:
        if len(span):  # whole batches (the last one may be short)
            assert span.start % batch_size == 0 and (span.stop % batch_size == 0 or span.stop == n)
    sizes = [-(-len(span) // batch_size) for span in spans]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)  # balanced, extras first


def test_shard_span_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        shard_span(4, 1, 2, 2)


def test_merge_partials_writes_query_order_and_removes_the_partials(tmp_path):
    queries = load_queries(
        write_jsonl(
            tmp_path / "q.jsonl",
            [{"query_id": f"q{i}", "query": c, "gold_images": [f"img{i}.jpg"]} for i, c in enumerate(CAPTIONS[:5])],
        )  # fmt: skip
    )

    def row(query_id: str) -> dict:
        return {"query_id": query_id, "query": "x", "gold_images": ["a.jpg"], "identifiers": [], "scores": [],
                "reasons": [], "images": [], "setting": SETTING}  # fmt: skip

    out = tmp_path / "run.jsonl"
    write_jsonl(out, [row("old"), row("q1")])  # a row of another queries file stays, after the query-ordered rows
    write_jsonl(partial_path(out, 1), [row("q4"), row("q3")])
    partial_path(out, 0).write_text(json.dumps(row("q0")) + '\n{"query_id": "q2", "que', encoding="utf-8")
    assert sorted(partial_files(out)) == [0, 1]
    assert merge_partials(out, queries, SETTING) == 5
    assert [json.loads(line)["query_id"] for line in out.read_text().splitlines()] == ["q0", "q1", "q3", "q4", "old"]
    assert partial_files(out) == {} and not list(tmp_path.glob(".run.jsonl.*"))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"NPROC_PER_NODE": "1"}, None),
        ({"NPROC_PER_NODE": "2", "RANK": "0", "LOCAL_RANK": "0"}, None),  # already a torchrun worker
        ({"NPROC_PER_NODE": "2"}, ["--nproc_per_node", "2", "--master_port"]),  # a free port on one node
        ({"NPROC_PER_NODE": "4", "MASTER_PORT": "29512"}, ["--nproc_per_node", "4", "--master_port", "29512"]),
    ],
)
def test_torchrun_command(monkeypatch, env, expected):
    from swift_ssid.cli.retrieve import torchrun_command

    for key in ("NPROC_PER_NODE", "NNODES", "RANK", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cmd = torchrun_command(["retrieve", "--k", "3"])
    if expected is None:
        assert cmd is None
    else:
        assert cmd[1:3] == ["-m", "torch.distributed.run"] and cmd[-5:] == [
            "-m",
            "swift_ssid.cli",
            "retrieve",
            "--k",
            "3",
        ]
        assert cmd[3 : 3 + len(expected)] == expected


def test_torchrun_command_rejects_a_bad_process_count(monkeypatch):
    from swift_ssid.cli.retrieve import torchrun_command

    monkeypatch.setenv("NPROC_PER_NODE", "two")
    with pytest.raises(ValueError, match="NPROC_PER_NODE='two' must be a positive integer"):
        torchrun_command(["retrieve"])


# ---------------------------------------------------------------- the real CLI under torchrun


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("retrieve-dp")
    results = [
        {
            "response": f"caption:a photo\nidentifier:{identifier}\nreason:It shows {identifier}.",
            "images": [{"bytes": None, "path": f"img{i}.jpg"}],
            "messages": [],
        }
        for i, identifier in enumerate(IDENTIFIERS)
    ]
    build_index(write_jsonl(root / "results.jsonl", results), root / "index", check_images=False)
    from swift_ssid.testing.tiny_models import build_tiny_qwen2_text

    queries = [{"query_id": f"q{i}", "query": c, "gold_images": [f"img{i}.jpg"]} for i, c in enumerate(CAPTIONS)]
    return {
        "root": root,
        "index": root / "index",
        "model": build_tiny_qwen2_text(root / "model"),
        "queries": write_jsonl(root / "queries.jsonl", queries),
    }


def retrieve(world: dict[str, Path], out: Path, nproc: int | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSID_") and k not in ("RANK", "LOCAL_RANK")}
    env.update(OFFLINE_ENV, OMP_NUM_THREADS="1")  # torchrun sets 1 thread per worker; the same for one process
    env.pop("NPROC_PER_NODE", None)
    if nproc is not None:
        env["NPROC_PER_NODE"] = str(nproc)
    cmd = [sys.executable, "-m", "swift_ssid.cli", "retrieve", "--model", str(world["model"]), "--model_type", "qwen2"]
    cmd += ["--template", "ssid_qwen2_5", "--index", str(world["index"]), "--queries", str(world["queries"])]
    cmd += ["--k", "3", "--batch-size", "2", "--max-new-tokens", "20", "--torch-dtype", "float32", "--out", str(out)]
    return subprocess.run(cmd, cwd=world["root"], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_write_the_single_process_run_file_and_resume(world, tmp_path):
    single = tmp_path / "single.jsonl"
    proc = retrieve(world, single, None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "retrieved 7 queries" in proc.stdout and "1 process(es)" in proc.stdout
    rows = single.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["query_id"] for line in rows] == [f"q{i}" for i in range(7)]

    # Rank 1 (queries q4..q6: batches [q4 q5] [q6]) was killed after its first batch, mid-way through a line.
    parallel = tmp_path / "parallel.jsonl"
    partial_path(parallel, 1).write_text(rows[4] + "\n" + rows[5] + '\n{"query_id": "q6", "quer', encoding="utf-8")
    proc = retrieve(world, parallel, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch.distributed.run" in proc.stdout and "--nproc_per_node 2" in proc.stdout
    assert "retrieved 5 queries" in proc.stdout and "2 process(es)" in proc.stdout  # q4, q5 not retrieved again
    assert parallel.read_text(encoding="utf-8") == single.read_text(encoding="utf-8")  # rows, order, scores
    assert partial_files(parallel) == {}
