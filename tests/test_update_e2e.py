"""End to end: add + continued training + remove + retrieve on a tiny random LLaVA-NeXT through the real commands.

``swift sft`` on 9 demo images (caption-derived index) -> ``swift-ssid add`` 3 images -> ``swift-ssid update``
(continued training from the checkpoint with replay) -> ``swift-ssid remove`` one old and one new image ->
``swift-ssid retrieve`` over every caption of all 12 images: no ranked list holds a removed image, every row records
the index version, and the run of the older version is refused by ``evaluate --index``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_helpers import read_jsonl, swift, swift_ssid, write_jsonl

from swift_ssid.core.collection import load_collection
from swift_ssid.core.index import index_version, load_index
from swift_ssid.core.rows import caption_query_rows, memorize_rows, retrieve_rows
from swift_ssid.core.runs import read_run
from swift_ssid.testing.tiny_models import BUILDERS
from swift_ssid.workflows.demo import DEMO_COLLECTION, TEMPLATES, demo_sft_flags, model_flags

pytestmark = pytest.mark.slow
FAMILY = "llava_next"  # 2k-token vocabulary: the cheapest sft and retrieval steps
STEPS = 4


def test_add_update_remove_retrieve_never_returns_a_removed_image(tmp_path):
    rows = [json.loads(line) for line in DEMO_COLLECTION.read_text().splitlines() if line.strip()]
    for row in rows:
        row["image"] = str(DEMO_COLLECTION.parent / row["image"])
        row["split"] = "train"
    old, new = write_jsonl(tmp_path / "old.jsonl", rows[:9]), write_jsonl(tmp_path / "new.jsonl", rows[9:])
    model = BUILDERS[FAMILY](tmp_path / "model")
    template, flags = TEMPLATES[FAMILY], model_flags(FAMILY)
    index, logs = tmp_path / "index", tmp_path / "logs"
    swift_ssid(["identifiers", "caption-derived", "--collection", str(old), "--out", str(index)], logs / "ids.log")
    old_items = load_collection(old)
    first = write_jsonl(
        tmp_path / "first.jsonl",
        [*memorize_rows(index, old_items, with_reason=False), *retrieve_rows(index, old_items, with_reason=False)],
    )
    sft = demo_sft_flags(STEPS)
    args = ["--model", str(model), *flags, "--template", template, "--dataset", str(first)]
    swift("sft", [*args, "--output_dir", str(tmp_path / "sft"), "--add_version", "false", *sft], logs / "sft.log")
    checkpoint = tmp_path / "sft" / f"checkpoint-{STEPS}"
    assert checkpoint.is_dir()

    swift_ssid(["add", str(index), "--collection", str(new)], logs / "add.log")
    update = ["update", "--model", str(model), "--template", template, "--checkpoint", str(checkpoint)]
    update += ["--index", str(index), "--collection", str(new), "--old-collection", str(old)]
    update += ["--out", str(tmp_path / "sft_update"), "--replay-ratio", "1", "--tuner", "full"]
    update += ["--max-steps", str(STEPS), "--learning-rate", "1e-2", "--batch-size", "8"]
    swift_ssid(update, logs / "update.log")
    updated = tmp_path / "sft_update" / f"checkpoint-{STEPS}"
    assert updated.is_dir()
    assert "--resume_only_model" in (tmp_path / "sft_update" / "update_sft.log").read_text()

    queries = write_jsonl(tmp_path / "queries.jsonl", caption_query_rows(load_collection(old) + load_collection(new)))
    retrieve = ["retrieve", "--model", str(updated), *flags, "--template", template, "--index", str(index)]
    retrieve += ["--queries", str(queries), "--k", "5", "--max-new-tokens", "24"]
    swift_ssid([*retrieve, "--out", str(tmp_path / "run_v2.jsonl")], logs / "retrieve_v2.log")
    gone = [rows[0]["image"], rows[-1]["image"]]
    (tmp_path / "gone.txt").write_text("\n".join(gone) + "\n")
    swift_ssid(["remove", str(index), "--images", str(tmp_path / "gone.txt")], logs / "remove.log")
    assert index_version(index) == 3 and not set(gone) & {e.image for e in load_index(index).entries}
    swift_ssid([*retrieve, "--out", str(tmp_path / "run_v3.jsonl")], logs / "retrieve_v3.log")

    run = read_run(tmp_path / "run_v3.jsonl")
    assert len(run) == len(read_jsonl(queries)) == 60
    assert all(row.index_version == 3 for row in run)
    assert not [row.query_id for row in run if set(gone) & set(row.images)]  # removed: never in a ranked list
    before = read_run(tmp_path / "run_v2.jsonl")
    assert all(row.index_version == 2 for row in before) and any(set(gone) & set(r.images) for r in before)
    swift_ssid(["evaluate", str(tmp_path / "run_v3.jsonl"), "--index", str(index)], logs / "evaluate_v3.log")
    with pytest.raises(Exception, match="version 2 of the index"):
        swift_ssid(["evaluate", str(tmp_path / "run_v2.jsonl"), "--index", str(index)], logs / "evaluate_v2.log")
    assert Path(index / "versions" / "0002").is_dir()  # the old version stays until `swift-ssid index prune`
