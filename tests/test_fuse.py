"""Hybrid runs: fusion checked against ranx itself, reranking by hand, and the `fuse` command's errors."""

from __future__ import annotations

import random

import pytest
from ranx import Run, fuse

from swift_ssid.cli import main
from swift_ssid.core.fusion import (
    ImageLevelIndex,
    check_same_queries,
    fuse_runs,
    fusion_scores,
    is_image_level,
    rerank_rows,
)
from swift_ssid.core.runs import RunRow, expand_identifiers, read_run, write_run

IMAGES = [f"img{i:02d}.jpg" for i in range(30)]


def generative_row(qid: str, gold: str, identifiers: list[str], groups: dict[str, list[str]]) -> RunRow:
    images, unknown = expand_identifiers(identifiers, lambda i: groups.get(i, []))
    scores = [-0.1 * (i + 1) for i in range(len(identifiers))]
    return RunRow(qid, f"query {qid}", [gold], identifiers, scores, [None] * len(identifiers), images, unknown)


def dense_row(qid: str, gold: str, images: list[str], scores: list[float]) -> RunRow:
    return RunRow(qid, f"query {qid}", [gold], images, scores, [None] * len(images), images, [], {"kind": "dense"})


def random_runs(seed: int, n_queries: int = 40) -> tuple[list[RunRow], list[RunRow]]:
    """A generative run (identifiers shared by up to three images) and a dense run over the same queries."""
    rng = random.Random(seed)
    groups = {f"id{i}": IMAGES[3 * i : 3 * i + rng.randint(1, 3)] for i in range(10)}
    gen, dense = [], []
    for q in range(n_queries):
        gold = rng.choice(IMAGES)
        gen.append(generative_row(f"q{q}", gold, rng.sample(sorted(groups), 4), groups))
        picked = rng.sample(IMAGES, 8)
        dense.append(dense_row(f"q{q}", gold, picked, sorted((rng.random() for _ in picked), reverse=True)))
    return gen, dense


def test_fusion_scores_follow_the_image_ranking():
    groups = {"dog": ["a", "b"], "cat": ["c"]}
    row = generative_row("q", "b", ["dog", "cat"], groups)
    assert row.images == ["a", "b", "c"] and not is_image_level(row)
    assert fusion_scores(row) == {"a": 3.0, "b": 2.0, "c": 1.0}  # a and b share "dog" but keep their order
    dense = dense_row("q", "b", ["c", "a"], [0.9, 0.4])
    assert is_image_level(dense) and fusion_scores(dense) == {"c": 0.9, "a": 0.4}


@pytest.mark.parametrize(
    ("method", "norm", "params"),
    [
        ("rrf", "min-max", {}),
        ("rrf", "none", {"k": 10}),
        ("sum", "min-max", {}),
        ("wsum", "min-max", {"weights": [0.7, 0.3]}),
    ],
)  # few methods: each costs numba compile time on a fresh install
def test_fusion_matches_ranx_directly(method, norm, params):
    gen, dense = random_runs(seed=7)
    fused = fuse_runs([gen, dense], method=method, norm=norm, params=params, names=["gen", "dense"])
    expected = fuse(
        [
            Run({row.query_id: fusion_scores(row) for row in gen}, name="gen"),
            Run({row.query_id: fusion_scores(row) for row in dense}, name="dense"),
        ],
        norm=None if norm == "none" else norm,
        method=method,
        params=params,
    )
    assert [row.query_id for row in fused] == [row.query_id for row in gen]
    for row in fused:
        want = {doc: round(float(score), 6) for doc, score in expected.run[row.query_id].items()}
        assert dict(zip(row.images, row.scores, strict=True)) == pytest.approx(want, abs=1e-6)
        assert row.scores == sorted(row.scores, reverse=True) and is_image_level(row)
        assert row.setting["kind"] == f"hybrid-{method}" and row.setting["inputs"] == ["gen", "dense"]


def test_rrf_by_hand_and_k_cut():
    gen = [generative_row("q", "b", ["dog", "cat"], {"dog": ["a", "b"], "cat": ["c"]})]  # a, b, c
    dense = [dense_row("q", "b", ["b", "d"], [0.9, 0.1])]
    (row,) = fuse_runs([gen, dense], method="rrf", params={"k": 60})
    # b: 1/62 + 1/61; a: 1/61; d: 1/62; c: 1/63
    assert row.images == ["b", "a", "d", "c"]
    assert row.scores[0] == pytest.approx(1 / 62 + 1 / 61, abs=1e-6)
    assert fuse_runs([gen, dense], method="rrf", k=2)[0].images == ["b", "a"]


def test_a_query_one_run_left_empty_keeps_the_other_runs_order():
    gen = [generative_row("q", "x", ["nothing"], {}), generative_row("r", "a", ["dog"], {"dog": ["a", "b"]})]
    dense = [dense_row("q", "x", ["x", "y"], [0.5, 0.2]), dense_row("r", "a", ["b"], [0.3])]
    empty = [generative_row("q", "x", ["nothing"], {}), generative_row("r", "a", ["nothing"], {})]
    rows = fuse_runs([gen, dense], method="rrf")
    assert rows[0].images == ["x", "y"] and rows[1].images == ["b", "a"]
    both_empty = fuse_runs([empty, empty], method="sum")
    assert [row.images for row in both_empty] == [[], []]


def test_fusion_refuses_mismatched_runs_and_bad_parameters():
    gen, dense = random_runs(seed=1, n_queries=3)
    with pytest.raises(ValueError, match="different queries"):
        check_same_queries([gen, dense[:2]], ["gen", "dense"])
    other_gold = [dense_row(r.query_id, "elsewhere.jpg", r.images, r.scores) for r in dense]
    with pytest.raises(ValueError, match="disagree on the gold images"):
        fuse_runs([gen, other_gold])
    with pytest.raises(ValueError, match="not one of"):
        fuse_runs([gen, dense], method="bayesfuse")
    with pytest.raises(ValueError, match="two runs or more"):
        fuse_runs([gen])
    with pytest.raises(ValueError, match="gmnz.*--param"):
        fuse_runs([gen, dense], method="gmnz")


def test_rerank_orders_the_candidates_by_similarity_with_stable_ties():
    rows = [generative_row("q", "c", ["dog", "cat"], {"dog": ["a", "b"], "cat": ["c"]})]
    sims = {"a": 0.1, "b": 0.5, "c": 0.5}
    (row,) = rerank_rows(rows, lambda batch: [[sims[i] for i in r.images] for r in batch])
    assert row.images == ["b", "c", "a"]  # b before c: equal similarity keeps the run's order
    assert row.scores == [0.5, 0.5, 0.1] and row.setting == {"rerank": "dense"}
    (head,) = rerank_rows(rows, lambda batch: [[sims[i] for i in r.images] for r in batch], k=2)
    assert head.images == ["b", "a", "c"]  # only the first two are reordered
    index = ImageLevelIndex()
    assert index.images_for("a") == ["a"] and index.identifier_for("a") == "a"


def test_fuse_command_writes_a_run_and_fails_in_one_line(tmp_path, capsys):
    gen, dense = random_runs(seed=3, n_queries=5)
    write_run(tmp_path / "gen.jsonl", gen)
    write_run(tmp_path / "dense.jsonl", dense)
    out = tmp_path / "hybrid.jsonl"
    assert main(["fuse", str(tmp_path / "gen.jsonl"), str(tmp_path / "dense.jsonl"), "--out", str(out)]) == 0
    assert [r.query_id for r in read_run(out)] == [r.query_id for r in gen]
    assert "R@10" in capsys.readouterr().out
    for argv in (
        ["fuse", str(tmp_path / "gen.jsonl"), "--out", str(out)],
        ["fuse", str(tmp_path / "gen.jsonl"), str(tmp_path / "dense.jsonl"), "--method", "wsum", "--out", str(out)],
        ["fuse", str(tmp_path / "gen.jsonl"), "--rerank", "--out", str(out)],
        ["fuse", str(tmp_path / "missing.jsonl"), str(tmp_path / "gen.jsonl"), "--out", str(out)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("swift-ssid fuse: error:"), err
