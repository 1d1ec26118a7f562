"""Dense retrieval and hybrids: exact top-K against brute force, the embedding store, and end to end on the demo.

The end-to-end test runs the real commands on the bundled demo collection: ``swift-ssid retrieve`` (tiny random
Qwen2 text model, trie-constrained, over a caption-derived index), ``swift-ssid dense`` (tiny random CLIP built
from config), ``swift-ssid fuse`` (RRF, checked against ranx directly; ``--rerank``, checked against the
encoder's own similarities), then ``evaluate``, ``table`` and ``report`` on the results.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from swift_ssid.cli import main
from swift_ssid.core.runs import read_run
from swift_ssid.encoders.dense_retrieval import exact_top_k, image_embeddings
from swift_ssid.testing.tiny_models import DEMO_DIR, build_tiny_clip

DEMO = DEMO_DIR / "collection.jsonl"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_exact_top_k_matches_brute_force_across_blocks(backend):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((300, 16)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    queries = images[[3, 150, 299]] + 0.05 * rng.standard_normal((3, 16)).astype(np.float32)
    stored = images.astype(np.float16)  # the float16 storage option, searched in float32 blocks
    scores, ids = exact_top_k(queries, stored, 7, backend=backend, block_size=64)
    full = queries @ stored.astype(np.float32).T
    expected = np.argsort(-full, axis=1, kind="stable")[:, :7]
    assert ids.tolist() == expected.tolist()
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), atol=1e-5)
    assert ids[:, 0].tolist() == [3, 150, 299]
    few_scores, few_ids = exact_top_k(queries, stored[:5], 10, backend=backend)
    assert few_ids.shape == (3, 5)  # k is capped at the number of images


def test_image_embeddings_are_stored_once_in_the_chosen_dtype(clip_dir, tmp_path):
    from swift_ssid.encoders.dual_encoder import DualEncoder

    images = sorted(str(p) for p in (DEMO_DIR / "images").iterdir())
    encoder = DualEncoder(clip_dir)
    half = image_embeddings(encoder, images, tmp_path, storage="float16", progress=False)
    assert half.dtype == np.float16 and half.shape == (len(images), 32) and isinstance(half, np.memmap)
    (stored,) = tmp_path.glob("images-*.float16.npy")
    stamp = stored.stat().st_mtime_ns
    again = image_embeddings(encoder, images, tmp_path, storage="float16", progress=False)
    assert stored.stat().st_mtime_ns == stamp and np.array_equal(again, half)  # read back, not recomputed
    full = image_embeddings(encoder, images, tmp_path, storage="float32", progress=False)
    np.testing.assert_allclose(full, half.astype(np.float32), atol=2e-3)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".json", ".npy", ".npy"]  # no work files left


@pytest.mark.slow
def test_generative_dense_and_hybrid_runs_end_to_end_on_the_demo(clip_dir, tmp_path, capsys):
    """About 40 s: the tiny Qwen2 retrieval dominates."""
    from ranx import Run, fuse

    from swift_ssid.core.caption_identifiers import caption_identifier
    from swift_ssid.core.collection import load_collection
    from swift_ssid.core.fusion import fusion_scores
    from swift_ssid.core.index import IdentifierIndex, IndexEntry
    from swift_ssid.encoders.dual_encoder import DualEncoder
    from swift_ssid.integration.datasets import query_rows
    from swift_ssid.testing.tiny_models import build_tiny_qwen2_text

    items = load_collection(DEMO)
    index_dir = tmp_path / "index"
    IdentifierIndex([IndexEntry(i.image, caption_identifier(i.captions[0]), "ok") for i in items]).save(index_dir)
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps(row) + "\n" for row in query_rows(items)), encoding="utf-8")
    qwen = build_tiny_qwen2_text(tmp_path / "qwen")
    gen, dense, hybrid, rerank = (tmp_path / f"{n}.jsonl" for n in ("gen", "dense", "hybrid", "rerank"))

    retrieve = ["retrieve", "--model", str(qwen), "--model_type", "qwen2", "--template", "ssid_qwen2_5"]
    retrieve += ["--index", str(index_dir), "--queries", str(queries), "--k", "5", "--out", str(gen)]
    retrieve += ["--batch-size", "10", "--max-new-tokens", "24", "--torch-dtype", "float32", "--setting", "kind=ssid"]
    assert main(retrieve) == 0
    cache = tmp_path / "cache"
    dense_args = ["dense", "--encoder", str(clip_dir), "--collection", str(DEMO), "--queries", str(queries)]
    dense_args += ["--k", "5", "--out", str(dense), "--storage", "float16", "--cache", str(cache)]
    assert main(dense_args) == 0
    assert main(["fuse", str(gen), str(dense), "--method", "rrf", "--out", str(hybrid)]) == 0
    rerank_args = ["fuse", str(gen), "--rerank", "--encoder", str(clip_dir), "--collection", str(DEMO)]
    assert main([*rerank_args, "--out", str(rerank), "--cache", str(cache), "--storage", "float16"]) == 0
    capsys.readouterr()

    gen_rows, dense_rows, hybrid_rows, rerank_rows = (read_run(p) for p in (gen, dense, hybrid, rerank))
    n = 20  # 4 test images x 5 captions
    assert len(gen_rows) == len(dense_rows) == len(hybrid_rows) == len(rerank_rows) == n
    # dense: every collection image is a candidate; the scores are the encoder's cosine similarities
    encoder = DualEncoder(clip_dir)
    text = encoder.embed_texts([row.query for row in dense_rows], progress=False)
    image_emb = encoder.embed_images([i.image for i in items], progress=False)
    position = {item.image: j for j, item in enumerate(items)}
    for row, vector in zip(dense_rows, text, strict=True):
        assert row.setting["kind"] == "dense" and row.identifiers == row.images and len(row.images) == 5
        sims = image_emb @ vector
        assert row.images[0] == items[int(np.argmax(sims))].image
        assert row.scores == pytest.approx([float(sims[position[i]]) for i in row.images], abs=5e-3)  # float16
    # hybrid = ranx's RRF of the two runs
    expected = fuse(
        [Run({r.query_id: fusion_scores(r) for r in rows}) for rows in (gen_rows, dense_rows)], method="rrf"
    )
    for row in hybrid_rows:
        assert dict(zip(row.images, row.scores, strict=True)) == pytest.approx(
            {d: float(s) for d, s in expected.run[row.query_id].items()}, abs=1e-6
        )
    # rerank: the generative run's images, ordered by the encoder's similarity
    for row, base, vector in zip(rerank_rows, gen_rows, text, strict=True):
        assert sorted(row.images) == sorted(base.images) and row.setting["kind"] == "ssid+rerank"
        sims = [float(image_emb[position[i]] @ vector) for i in row.images]
        assert sims == sorted(sims, reverse=True) or np.allclose(sims, sorted(sims, reverse=True), atol=5e-3)

    # the same scoring code reads every run
    for path in (gen, dense, hybrid, rerank):
        assert main(["evaluate", str(path), "--json", str(path.with_suffix(".metrics.json"))]) == 0
        metrics = json.loads(path.with_suffix(".metrics.json").read_text())
        assert metrics["n_queries"] == n and 0.0 <= metrics["R@1"] <= metrics["R@5"] <= metrics["R@10"] <= 1.0
    assert main(["table", str(gen), str(dense), str(hybrid), str(rerank), "--by", "kind"]) == 0
    table = capsys.readouterr().out
    # Table I lines the kinds (here SSID), dense and the hybrids up, above the paper's numbers (labelled)
    for label in ("Structured Semantic Identifier (SSID)", "dense", "hybrid-rrf", "ssid+rerank"):
        assert f"| {label} |" in table.split("Reference, the paper's Table I")[0]
    report = tmp_path / "report.html"
    argv = ["report", str(gen), "--index", str(index_dir), "--out", str(report), "--compare", str(dense)]
    assert main([*argv, str(hybrid), "--max-cases", "4"]) == 0
    page = report.read_text()
    assert 'id="comparison-table"' in page and page.count('<tr><th class="label">') >= 3
    assert main(["report", str(dense), "--out", str(tmp_path / "dense.html"), "--max-cases", "2"]) == 0


def test_dense_command_fails_in_one_line(clip_dir, tmp_path, capsys):
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"query_id": "q", "query": "a cat", "gold_images": ["elsewhere/cat.jpg"]}) + "\n")
    good = tmp_path / "good.jsonl"
    gold = str(DEMO_DIR / "images" / "chelsea.jpg")
    good.write_text(json.dumps({"query_id": "q", "query": "a cat", "gold_images": [gold]}) + "\n")
    base = ["dense", "--collection", str(DEMO), "--queries", str(queries), "--out", str(tmp_path / "run.jsonl")]
    for argv, expected in (
        ([*base, "--encoder", str(clip_dir)], "no query's gold image is among the 12 candidates"),
        ([*base, "--queries", str(good), "--encoder", str(tmp_path / "no-model")], "has no config.json"),
        ([*base, "--encoder", str(clip_dir), "--k", "0"], "--k 0 must be at least 1"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("swift-ssid dense: error:") and expected in err, err
