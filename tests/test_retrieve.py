"""Retrieval: queries file, parsing, the resumable run file, and top-K constrained beam search end to end.

The index is built by ``swift_ssid.core.index.build_index`` from a fake ``swift infer`` result file (two
images share one identifier, so expansion to images is exercised). The model is the tiny random
Qwen2 text model of ``swift_ssid.testing.tiny_models``; the slow tests run the real ``swift-ssid retrieve``
and ``swift infer`` CLIs in subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swift_ssid.core.answers import parse_choice
from swift_ssid.core.index import IdentifierIndex, build_index
from swift_ssid.core.queries import Query, load_queries
from swift_ssid.core.runs import read_run
from swift_ssid.integration.retrieval import Retriever, done_query_ids
from swift_ssid.testing.tiny_models import OFFLINE_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]
SWIFT = Path(sys.executable).with_name("swift")
OFFLINE = OFFLINE_ENV  # the environment every swift call on a tiny model needs
# image -> identifier; img6 shares img0's identifier (a collision under the "shared" policy)
IMAGES = {
    "img0.jpg": "dog - park - ball",
    "img1.jpg": "two men - street",
    "img2.jpg": "girl - red dress",
    "img3.jpg": "man - bicycle - road",
    "img4.jpg": "children - beach",
    "img5.jpg": "woman - kitchen",
    "img6.jpg": "dog - park - ball",
}
QUERIES = [
    {"query_id": "q0", "query": "A dog chases a ball in the park.", "gold_images": ["img0.jpg"]},
    {"query_id": "q1", "query": "Two men walk down a street.", "gold_images": ["img1.jpg"]},
    {"query": "A girl in a red dress.", "gold_images": ["img2.jpg"]},
    {
        "messages": [{"role": "user", "content": "Which image matches this caption? Kids play on the beach."}],
        "query_id": "q3",
        "images": ["img4.jpg"],
    },
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> Path:
    """An index built from a fake swift infer result file."""
    root = tmp_path_factory.mktemp("retrieve")
    results = [
        {
            "response": f"caption:a photo\nidentifier:{identifier}\nreason:It shows {identifier}.",
            "images": [{"bytes": None, "path": image}],
            "messages": [],
        }
        for image, identifier in IMAGES.items()
    ]
    build_index(write_jsonl(root / "results.jsonl", results), root / "index", check_images=False)
    return root / "index"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from swift_ssid.testing.tiny_models import build_tiny_qwen2_text

    return build_tiny_qwen2_text(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="module")
def engine(model_dir):
    from swift.infer_engine import TransformersEngine

    import swift_ssid.integration.register  # noqa: F401

    return TransformersEngine(
        str(model_dir), model_type="qwen2", template_type="ssid_qwen2_5", torch_dtype=torch.float32
    )


def settings_for(index_dir: Path, **kwargs):
    from swift_ssid.integration.settings import SSIDSettings

    return SSIDSettings(index_dir=index_dir, **kwargs)


# ---------------------------------------------------------------- queries and parsing


def test_load_queries_both_forms(tmp_path):
    queries = load_queries(write_jsonl(tmp_path / "q.jsonl", QUERIES))
    assert [q.query_id for q in queries] == ["q0", "q1", "line3", "q3"]
    assert queries[0].messages == [
        {"role": "user", "content": "Which image matches this caption? A dog chases a ball in the park."}
    ]
    assert queries[2].query == "A girl in a red dress." and queries[2].gold_images == ["img2.jpg"]
    # an ssid-query dataset row: messages sent as they are, caption recovered, `images` read as the gold images
    assert queries[3].messages == QUERIES[3]["messages"] and queries[3].images == []
    assert (queries[3].query, queries[3].gold_images) == ("Kids play on the beach.", ["img4.jpg"])


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"query": "a dog"}], "no 'gold_images'"),
        ([{"caption": "a dog", "gold_images": ["a.jpg"]}], "needs 'query'"),
        ([{"query_id": "x", "query": "a", "gold_images": ["a.jpg"]}] * 2, "query_id 'x' repeats"),
        ([{"query": "a", "gold_images": []}], "non-empty list of image paths"),
    ],
)
def test_load_queries_errors_name_line_and_fix(tmp_path, rows, expected):
    path = write_jsonl(tmp_path / "q.jsonl", rows)
    with pytest.raises(ValueError, match=expected) as info:
        load_queries(path)
    assert f"{path}:" in str(info.value)


def test_parse_choice():
    assert parse_choice("identifier:Dog – Park\nreason:A dog  runs.") == ("dog - park", "A dog runs.")
    assert parse_choice("identifier:dog - park\n") == ("dog - park", None)
    assert parse_choice("identifier:dog - park") == ("dog - park", None)


def test_done_query_ids_drops_broken_lines_and_refuses_other_settings(tmp_path):
    run = tmp_path / "run.jsonl"
    setting = {"reason": "train+infer", "k": 2}
    row = {"query_id": "q0", "query": "a", "gold_images": ["a.jpg"], "identifiers": [], "scores": [], "reasons": []}
    run.write_text(json.dumps({**row, "images": [], "setting": setting}) + '\n{"query_id": "q1", "que', "utf-8")
    assert done_query_ids(run, setting) == {"q0"}
    assert len(read_run(run)) == 1  # the killed writer's partial line is gone
    with pytest.raises(ValueError, match="made with setting"):
        done_query_ids(run, {"reason": "train-only", "k": 2})


# ---------------------------------------------------------------- in-process retrieval


def test_retriever_ranks_k_identifiers_from_the_index_and_resumes(engine, index_dir, tmp_path):
    index = IdentifierIndex.load(index_dir)
    queries = load_queries(write_jsonl(tmp_path / "q.jsonl", QUERIES))
    retriever = Retriever(engine, settings_for(index_dir), k=3, max_new_tokens=24)
    out = tmp_path / "run.jsonl"
    assert retriever.run(queries[:3], out, batch_size=2) == 3
    rows = read_run(out)
    assert [r.query_id for r in rows] == ["q0", "q1", "line3"]
    for row in rows:
        assert len(row.identifiers) == 3 and len(set(row.identifiers)) == 3
        assert all(identifier in index for identifier in row.identifiers) and row.unknown_identifiers == []
        assert row.scores == sorted(row.scores, reverse=True)  # beam order
        images = [image for identifier in row.identifiers for image in index.images_for(identifier)]
        assert row.images == list(dict.fromkeys(images))
        assert row.setting == {"reason": "train+infer", "k": 3}

    assert retriever.run(queries, out, batch_size=2) == 1  # only q3 is new
    assert [r.query_id for r in read_run(out)] == ["q0", "q1", "line3", "q3"]
    assert retriever.run(queries, out, batch_size=2) == 0


def test_retriever_k_beyond_index_size_returns_each_identifier_once(engine, index_dir, tmp_path):
    retriever = Retriever(engine, settings_for(index_dir, infer_reason=False), k=8, max_new_tokens=24)
    query = Query("q", "a dog", ["img0.jpg"], [{"role": "user", "content": "Which image matches this caption? a dog"}])
    (row,) = retriever.retrieve_batch([query])
    assert sorted(row.identifiers) == sorted(set(IMAGES.values()))  # 6 identifiers for 8 beams
    assert row.reasons == [None] * 6 and row.setting["reason"] == "train-only"
    assert sorted(row.images) == sorted(IMAGES)  # the shared identifier expands to both of its images


def test_retriever_k1_returns_the_best_beam_with_its_score(engine, index_dir):
    query = Query("q", "a dog", ["img0.jpg"], [{"role": "user", "content": "Which image matches this caption? a dog"}])
    (top1,) = Retriever(engine, settings_for(index_dir), k=1, max_new_tokens=16).retrieve_batch([query])
    assert len(top1.identifiers) == len(top1.scores) == 1 and top1.identifiers[0] in IMAGES.values()
    assert -100 < top1.scores[0] < 0  # a length-normalised log-probability, not a missing score


def test_retriever_refuses_a_template_without_the_constraint(model_dir, index_dir):
    from swift.infer_engine import TransformersEngine

    plain = TransformersEngine(str(model_dir), model_type="qwen2", template_type="qwen2_5", torch_dtype=torch.float32)
    with pytest.raises(ValueError, match="has no SSID constraint"):
        Retriever(plain, settings_for(index_dir), k=2)


# ---------------------------------------------------------------- the real CLIs


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **OFFLINE, **(env or {})}
    for key in ("SSID_INDEX", "SSID_TARGET", "SSID_INFER_REASON"):
        if env is None or key not in env:
            full_env.pop(key, None)
    return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_cli_retrieve_top_k_and_resume(model_dir, index_dir, tmp_path):
    index = IdentifierIndex.load(index_dir)
    queries = write_jsonl(tmp_path / "q.jsonl", QUERIES[:2])
    out = tmp_path / "run.jsonl"
    base = [sys.executable, "-m", "swift_ssid.cli", "retrieve", "--model", str(model_dir), "--model_type", "qwen2"]
    base += ["--template", "ssid_qwen2_5", "--index", str(index_dir), "--k", "4", "--out", str(out)]
    base += ["--batch-size", "2", "--max-new-tokens", "20", "--torch-dtype", "float32"]
    first = run_cli([*base, "--queries", str(queries)], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "retrieved 2 queries" in first.stdout and "R@1" in first.stdout and "R@10" in first.stdout
    rows = read_run(out)
    assert len(rows) == 2
    for row in rows:
        assert len(row.identifiers) == 4 and all(identifier in index for identifier in row.identifiers)

    more = write_jsonl(tmp_path / "q.jsonl", QUERIES[:3])
    second = run_cli([*base, "--queries", str(more)], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "retrieved 1 queries (2 already in" in second.stdout
    assert [r.query_id for r in read_run(out)] == ["q0", "q1", "line3"]
    assert [r.to_dict() for r in read_run(out)[:2]] == [r.to_dict() for r in rows]  # old rows untouched


@pytest.mark.slow
def test_swift_infer_with_plugin_and_ssid_index_writes_identifiers_from_the_index(model_dir, index_dir, tmp_path):
    index = IdentifierIndex.load(index_dir)
    dataset = write_jsonl(tmp_path / "queries.jsonl", [{"messages": q["messages"]} for q in QUERIES[3:]] * 2)
    result = tmp_path / "result.jsonl"
    args = [str(SWIFT), "infer", "--model", str(model_dir), "--model_type", "qwen2", "--template", "ssid_qwen2_5"]
    args += ["--custom_register_path", str(REPO_ROOT / "templates" / "ssid_templates.py")]
    args += ["--val_dataset", str(dataset), "--result_path", str(result), "--torch_dtype", "float32"]
    args += ["--max_new_tokens", "20", "--num_beams", "2"]
    proc = run_cli(args, cwd=tmp_path, env={"SSID_INDEX": str(index_dir)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    responses = [json.loads(line)["response"] for line in result.read_text().splitlines()]
    assert len(responses) == 2
    for response in responses:
        assert response.startswith("identifier:")
        assert response[len("identifier:") :].split("\n")[0] in index
