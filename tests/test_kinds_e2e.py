"""The identifier comparison end to end: ``swift-ssid protocol identifiers`` on the tiny random Qwen2 text model.

One protocol run (numeric, atomic and structured kinds on the bundled demo collection) goes through the real
``swift-ssid identifiers``, ``swift sft`` (the shipped kind recipe, overridden to the tiny model and two steps on the
retrieve rows) and ``swift-ssid retrieve``; the tests read its outputs. Atomic identifiers exercise new tokens through
training (``--new_special_tokens``, ``modules_to_save``), saving, loading the checkpoint and constrained decoding.
R@K values of a random tiny model mean nothing; each run's images are checked against its identifiers expanded
through its kind's index, and its R@K against a count by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_helpers import check_run_against_index

from swift_ssid.cli import main
from swift_ssid.core.index import IdentifierIndex
from swift_ssid.core.kinds import index_new_tokens
from swift_ssid.core.runs import read_run
from swift_ssid.testing.tiny_models import DEMO_DIR, OFFLINE_ENV, build_tiny_clip, build_tiny_qwen2_text

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO = DEMO_DIR / "collection.jsonl"
K = 3
KINDS = ("numeric", "atomic", "structured")
SFT_FLAGS = [
    "--dataset", "ssid-retrieve-noreason", "--max_steps", "2", "--save_steps", "2", "--per_device_train_batch_size",
    "2", "--dataset_num_proc", "1", "--dataloader_num_workers", "0", "--gradient_accumulation_steps", "1",
    "--check_model", "false", "--report_to", "none", "--save_only_model", "true", "--seed", "0",
]  # fmt: skip


def protocol_cmd(model_dir: Path, clip_dir: Path, queries: Path, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "swift_ssid.cli", "protocol", "identifiers", "--model", str(model_dir)]
    cmd += [
        "--model_type",
        "qwen2",
        "--template",
        "ssid_qwen2_5",
        "--torch-dtype",
        "float32",
        "--queries",
        str(queries),
    ]
    cmd += ["--collection", str(DEMO), "--kinds", *KINDS, "--encoder", str(clip_dir), "--cluster-k", "2"]
    cmd += ["--cluster-c", "3", "--n-init", "2", "--out", str(out), "--k", str(K), "--max-new-tokens", "24"]
    cmd += ["--recipe", "recipes/train_qwen2_5_vl_kind_noreason.yaml", "--sft-args", " ".join(SFT_FLAGS)]
    return cmd + ["--batch-size", "4", "--model-label", "tiny-qwen2"]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SSID_")}
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, env={**env, **OFFLINE_ENV, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


@pytest.fixture(scope="module")
def comparison(tmp_path_factory) -> dict:
    from swift_ssid.core.collection import load_collection
    from swift_ssid.integration.datasets import write_dataset_files

    root = tmp_path_factory.mktemp("kinds-e2e")
    model_dir = build_tiny_qwen2_text(root / "model")
    clip_dir = build_tiny_clip(root / "clip")
    written = write_dataset_files(root / "datasets", load_collection(DEMO), names=["ssid-query"])["ssid-query"]
    queries = root / "queries.jsonl"  # one caption of each test image: enough to check, fewer beams to run
    queries.write_text("".join(line + "\n" for line in written.read_text().splitlines() if '#0"' in line))
    out = root / "identifiers"
    proc = run(protocol_cmd(model_dir, clip_dir, queries, out))
    return {
        "out": out, "proc": proc, "model": model_dir, "clip": clip_dir,
        "queries": queries,
    }  # fmt: skip


@pytest.mark.slow
def test_every_kind_is_indexed_trained_and_retrieved(comparison):
    out = comparison["out"]
    n_queries = len(comparison["queries"].read_text().splitlines())
    for kind in KINDS:
        stats = json.loads((out / f"index_{kind}" / "stats.json").read_text())
        assert stats["kind"] == kind and stats["tokens"]["trie_nodes"] > 1  # token stats with the model's tokenizer
        index = IdentifierIndex.load(out / f"index_{kind}")
        rows = read_run(out / f"run_{kind}.jsonl")
        assert len(rows) == n_queries
        assert all(r.setting == {"reason": "none", "k": K, "protocol": "identifiers", "kind": kind} for r in rows)
        assert all(len(r.identifiers) == K and all(i in index for i in r.identifiers) for r in rows)
        assert all(r.unknown_identifiers == [] and r.reasons == [None] * K for r in rows)
        check_run_against_index(rows, index)
        marker = json.loads((out / f"sft_{kind}" / "ssid_protocol.json").read_text())
        assert marker["kind"] == kind and Path(marker["checkpoint"]).name == "checkpoint-2"
        assert f"--adapters {marker['checkpoint']}" in (out / "logs" / f"run_{kind}.log").read_text()


@pytest.mark.slow
def test_atomic_tokens_go_through_training_saving_loading_and_decoding(comparison):
    from safetensors import safe_open

    out = comparison["out"]
    tokens = index_new_tokens(out / "index_atomic")
    assert tokens == [f"img_{i:06d}" for i in range(12)]
    checkpoint = Path(json.loads((out / "sft_atomic" / "ssid_protocol.json").read_text())["checkpoint"])
    args = json.loads((checkpoint / "args.json").read_text())
    assert args["new_special_tokens"] == tokens and set(args["modules_to_save"]) == {"embed_tokens", "lm_head"}
    assert "Added 12 new special tokens" in (out / "logs" / "sft_atomic.log").read_text()
    with safe_open(str(checkpoint / "adapter_model.safetensors"), "pt") as f:
        saved = {k: f.get_slice(k).get_shape() for k in f.keys() if "lora" not in k}
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(str(comparison["model"]))) + 12  # ms-swift rounds up to 128
    assert any(k.endswith("embed_tokens.weight") for k in saved) and any(k.endswith("lm_head.weight") for k in saved)
    assert all(shape[0] == -(-vocab // 128) * 128 for shape in saved.values())  # resized rows saved with the adapter
    rows = read_run(out / "run_atomic.jsonl")
    assert {i for r in rows for i in r.identifiers} <= set(tokens)  # decoded text keeps the special tokens
    # numeric keeps GRACE's digit spelling through decoding
    assert all(
        all(part.isdigit() for part in i.split()) for r in read_run(out / "run_numeric.jsonl") for i in r.identifiers
    )


@pytest.mark.slow
def test_tables_one_and_two_come_out_of_the_run(comparison, tmp_path, capsys):
    out = comparison["out"]
    tables = (out / "tables.md").read_text()
    assert tables in comparison["proc"].stdout
    assert tables.startswith("Table I: identifiers without new vocabulary (collection.jsonl, tiny-qwen2)")
    assert "| Numeric Identifier |" in tables and "| Structured Identifier |" in tables
    assert "| Atomic Identifier | tiny-qwen2 |" in tables
    assert (
        "Reference, the paper's Table II (Flickr30K; not this run)" in tables and "| SSID | qwen2.5-vl | 54.8" in tables
    )
    runs = [str(out / f"run_{kind}.jsonl") for kind in KINDS]
    csv = tmp_path / "kinds.csv"
    assert main(["table", *runs, "--by", "kind", "--model-label", "tiny-qwen2", "--csv", str(csv)]) == 0
    assert capsys.readouterr().out.replace("this collection", "collection.jsonl") == tables
    lines = csv.read_text().splitlines()
    assert lines[0] == "table,kind,method,source,model,collection,R@1,R@5,R@10,n_queries"
    assert [line.split(",")[:4] for line in lines[1:4]] == [
        ["I", "numeric", "Numeric Identifier", "this run"],
        ["II", "atomic", "Atomic Identifier", "this run"],
        ["I", "structured", "Structured Identifier", "this run"],
    ]
    assert "I,numeric,Numeric Identifier,paper,flamingo,MS-COCO 5K,0.03,0.14,0.28," in lines


@pytest.mark.slow
def test_a_second_run_reuses_indexes_and_checkpoints(comparison):
    out = comparison["out"]
    before = {kind: (out / f"run_{kind}.jsonl").read_text() for kind in KINDS}
    weights = {p: p.stat().st_mtime_ns for p in out.glob("sft_*/**/*.safetensors")}
    proc = run(protocol_cmd(comparison["model"], comparison["clip"], comparison["queries"], out))
    for kind in KINDS:
        assert f"{kind}: index built before" in proc.stderr and f"{kind}: trained before" in proc.stderr
        assert (out / f"run_{kind}.jsonl").read_text() == before[kind]  # nothing retrieved twice
    assert weights and {p: p.stat().st_mtime_ns for p in out.glob("sft_*/**/*.safetensors")} == weights
