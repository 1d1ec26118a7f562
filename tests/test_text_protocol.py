"""The text-side protocol's pure parts: captions file, split, rows, per-query hits, bootstrap, training-answer share.

Fast (no model). The protocol itself is a benchmark (``swift-ssid protocol text``, benchmarks/TEXT_PROTOCOL.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from swift_ssid.core.runs import RunRow
from swift_ssid.workflows.protocols.text import (
    TextProtocolOptions,
    bootstrap_interval,
    collection_rows,
    description_rows,
    hits_at,
    paired_difference,
    read_caption_groups,
    split_images,
    training_answer_share,
)


def _row(qid: str, gold: str, images: list[str]) -> RunRow:
    return RunRow(qid, "q", [gold], list(images), [0.0] * len(images), [None] * len(images), list(images))


def test_the_captions_file_groups_five_lines_per_image_and_names_bad_input(tmp_path):
    path = tmp_path / "caps.txt"
    path.write_text("".join(f"image {i // 5} caption {i % 5}\n" for i in range(15)) + "\n")
    groups = read_caption_groups(path, images=2)
    assert groups == [tuple(f"image {i} caption {c}" for c in range(5)) for i in range(2)]
    with pytest.raises(ValueError, match=r"--images 4: give 2 \.\. 3"):
        read_caption_groups(path, images=4)
    path.write_text("a\nb\n\nc\nd\ne\n")
    with pytest.raises(ValueError, match=r"caps.txt:3: blank caption"):
        read_caption_groups(path)
    path.write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match="no multiple of 5"):
        read_caption_groups(path)
    with pytest.raises(FileNotFoundError, match="--captions"):
        read_caption_groups(tmp_path / "missing.txt")


def test_the_split_is_seeded_and_keeps_the_share():
    split = split_images(200, 0.2, seed=0)
    assert split.count("test") == 40 and split.count("train") == 160
    assert split == split_images(200, 0.2, seed=0) and split != split_images(200, 0.2, seed=1)
    assert split_images(3, 0.01, seed=0).count("test") == 1  # at least one test image, at least one training one
    assert split_images(3, 0.99, seed=0).count("train") == 1
    with pytest.raises(ValueError, match="--test-share"):
        split_images(10, 1.0, seed=0)


def test_caption_one_is_the_description_and_never_a_query():
    groups = [tuple(f"{i}-{c}" for c in range(5)) for i in range(3)]
    rows = collection_rows(groups, ["train", "test", "train"])
    assert rows[1] == {"id": "img-0001", "text": "1-0", "captions": ["1-1", "1-2", "1-3", "1-4"], "split": "test"}
    described = description_rows(rows)
    assert [r["captions"] for r in described] == [["0-0"], ["1-0"], ["2-0"]]  # identifiers read the description
    assert [r["id"] for r in described] == [r["id"] for r in rows]


def test_hits_bootstrap_and_paired_differences_by_hand():
    run = [_row("a", "g", ["x", "g"]), _row("b", "g", ["g"]), _row("c", "g", [f"x{i}" for i in range(10)] + ["g"])]
    assert hits_at(run, (1, 2, 10)).tolist() == [[0, 1, 1], [1, 1, 1], [0, 0, 0]]
    bounds = bootstrap_interval(hits_at(run, (1, 2, 10)), n_boot=2000, seed=0)
    assert bounds.shape == (3, 2) and (bounds[:, 0] <= bounds[:, 1]).all()
    assert bounds[0, 0] == 0.0 and bounds[1, 1] == 1.0  # R@1 = 1/3 can resample to 0; R@2 = 2/3 to 1
    assert bootstrap_interval(np.ones(40), seed=3).tolist() == [[1.0, 1.0]]
    assert np.array_equal(bootstrap_interval(hits_at(run), seed=5), bootstrap_interval(hits_at(run), seed=5))
    with pytest.raises(ValueError, match="no queries"):
        bootstrap_interval(np.zeros((0, 3)))
    better = [_row(q, "g", ["g"]) for q in "abcdefghij"]
    worse = [_row(q, "g", ["x"]) for q in "abcdefghij"]
    diff = paired_difference(better, worse, ks=(1,), n_boot=500)
    assert diff["n"] == 10 and diff["R@1"] == {"diff": 1.0, "low": 1.0, "high": 1.0, "real": True}
    same = paired_difference(better, better, ks=(1,), n_boot=500)
    assert same["R@1"]["real"] is False and same["R@1"]["diff"] == 0.0


def test_the_training_answer_share_counts_first_answers_only():
    run = [_row("a", "t1", ["tr1", "t1"]), _row("b", "t1", ["t1", "tr1"])]
    run += [_row("c", "t2", []), _row("d", "t2", ["tr2"])]
    assert training_answer_share(run, {"tr1", "tr2"}) == pytest.approx(2 / 3)  # c has no answer: not counted
    assert training_answer_share([_row("c", "t2", [])], {"tr1"}) is None


def test_options_check_rows_and_fusion_inputs(tmp_path):
    options = TextProtocolOptions(out=tmp_path, model="m", rows=("fusion", "bm25", "dense"), fuse=("bm25", "dense"))
    assert options.rows == ("bm25", "dense", "fusion")  # table order
    with pytest.raises(ValueError, match="--rows"):
        TextProtocolOptions(out=tmp_path, model="m", rows=("nope",))
    with pytest.raises(ValueError, match="--fuse"):
        TextProtocolOptions(out=tmp_path, model="m", rows=("fusion",), fuse=("bm25",))
    with pytest.raises(ValueError, match="--tuner"):
        TextProtocolOptions(out=tmp_path, model="m", tuner="qlora")
