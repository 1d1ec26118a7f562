"""``swift-ssid add`` / ``remove``: round trips for every identifier kind, and bad input refused with nothing written.

Fast: no model. ``ssid`` uses the caption-derived stand-in answers (``write_caption_results``) as its stage-1 result
file; ``structured`` a fixed embedding per image instead of a dual encoder.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from swift_ssid.cli import main
from swift_ssid.core import kinds
from swift_ssid.core.caption_identifiers import write_caption_results
from swift_ssid.core.collection import load_collection
from swift_ssid.core.index import (
    META_FILE,
    IdentifierIndex,
    IndexEntry,
    build_index,
    index_version,
    list_versions,
    load_index,
    read_stats,
)
from swift_ssid.testing.tiny_models import DEMO_DIR
from swift_ssid.workflows.update import add_images, remove_images, structured_paths

DEMO = DEMO_DIR / "collection.jsonl"


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> tuple[Path, Path, list]:
    """The demo collection in two: the first 9 images (old), the last 3 (new); absolute image paths."""
    root = tmp_path_factory.mktemp("split")
    rows = [json.loads(line) for line in DEMO.read_text().splitlines() if line.strip()]
    for row in rows:
        row["image"] = str(DEMO_DIR / row["image"])
    old, new = root / "old.jsonl", root / "new.jsonl"
    old.write_text("".join(json.dumps(r) + "\n" for r in rows[:9]))
    new.write_text("".join(json.dumps(r) + "\n" for r in rows[9:]))
    return old, new, load_collection(new)


def _build(kind: str, old: Path, out: Path) -> None:
    if kind == "ssid":
        results = out.with_suffix(".results.jsonl")
        write_caption_results(((it.image, it.captions[0]) for it in load_collection(old)), results)
        build_index(results, out, check_images=False)
    elif kind == "structured":
        items = kinds.indexed_items(load_collection(old))
        paths = [f"0_{i // 3}-1_{i % 3}" for i in range(len(items))]  # 3 leaves of c = 3 images
        kinds.write_kind_index("structured", items, paths, out, {"c": 3, "encoder": "unused"})
    else:
        assert main(["identifiers", kind, "--collection", str(old), "--out", str(out)]) == 0


def _embed(images):
    """A fixed unit vector per image (the image name's hash), standing in for a dual encoder."""
    out = [np.random.default_rng(zlib.crc32(Path(i).name.encode())).normal(size=8) for i in images]
    return np.stack([v / np.linalg.norm(v) for v in out])


@pytest.mark.parametrize("kind", ["numeric", "string", "atomic", "semantic", "caption-derived", "structured", "ssid"])
def test_add_then_remove_round_trip(kind, split, tmp_path):
    old, new, new_items = split
    d = tmp_path / "index"
    _build(kind, old, d)
    before = {e.image: e.identifier for e in load_index(d).entries}
    results = None
    if kind == "ssid":
        results = tmp_path / "new_results.jsonl"
        write_caption_results(((it.image, it.captions[0]) for it in new_items), results)
    added = add_images(d, new, results=results, embed=_embed)
    assert (added.from_version, added.version, index_version(d), list_versions(d)) == (1, 2, 2, [1, 2])
    index = load_index(d)
    assert {e.image: e.identifier for e in index.entries[: len(before)]} == before  # existing never change
    assert [e.image for e in index.entries[len(before) :]] == [it.image for it in new_items]
    assert added.identifiers == [index.identifier_for(it.image) for it in new_items] and all(added.identifiers)
    if kind == "numeric":
        assert added.identifiers == ["9", "1 0", "1 1"]
    if kind == "string":
        assert added.identifiers == ["9", "10", "11"]
    if kind == "atomic":
        assert added.identifiers == ["img_000009", "img_000010", "img_000011"]
        assert kinds.index_new_tokens(d) == [*(f"img_{i:06d}" for i in range(9)), *added.identifiers]
    if kind == "semantic":
        assert added.identifiers == [it.captions[0].lower().rstrip(".") for it in new_items]
    if kind == "structured":
        assert all(i.count("-") == 1 and i not in before.values() for i in added.identifiers)
    assert read_stats(d)["images"] == 12 and read_stats(d)["changes"][-1] == {"from_version": 1, "added": 3}

    gone = [new_items[-1].image, next(iter(before))]
    removed = remove_images(d, gone)
    assert (removed.version, index_version(d), removed.total_images) == (3, 3, 10)
    after = load_index(d)
    assert not set(gone) & {e.image for e in after.entries}
    kept = {e.image: e.identifier for e in index.entries if e.image not in gone}
    assert {e.image: e.identifier for e in after.entries} == kept
    if kind == "atomic":  # the trained model keeps its tokens
        assert len(kinds.index_new_tokens(d)) == 12
    if kind in kinds.NUMBERED_KINDS:  # a removed image's number is never given again
        again = tmp_path / "again.jsonl"
        again.write_text(json.dumps({"image": gone[0], "captions": ["a photo."], "split": "train"}) + "\n")
        assert add_images(d, again).identifiers[0].replace(" ", "").endswith("12")


def test_structured_fills_the_nearest_leaf_and_opens_a_sibling_when_it_is_full():
    index = IdentifierIndex([IndexEntry(f"{i}.jpg", f"0_{i // 2}-1_{i % 2}", "ok") for i in range(3)])
    vectors = {"0.jpg": [1, 0], "1.jpg": [1, 0], "2.jpg": [0, 1], "near2.jpg": [0.1, 1], "near0.jpg": [1, 0.1]}

    def embed(images):
        return np.array([vectors[i] for i in images], dtype=float)

    assert structured_paths(index, ["near2.jpg", "near0.jpg"], embed, c=2) == ["0_1-1_1", "0_2-1_0"]


def test_disambiguate_gives_new_collisions_a_free_suffix_and_keeps_old_ones():
    old = IdentifierIndex(
        [IndexEntry("a.jpg", "dog", "ok"), IndexEntry("b.jpg", "dog", "ok"), IndexEntry("c.jpg", "dog - 3", "ok")],
        policy="disambiguate",
    )
    assert [e.identifier for e in old.entries] == ["dog", "dog - 2", "dog - 3"]
    new = old.with_added([IndexEntry("d.jpg", "Dog", "ok"), IndexEntry("e.jpg", "cat", "ok")])
    assert [e.identifier for e in new.entries] == ["dog", "dog - 2", "dog - 3", "dog - 4", "cat"]
    shared = IdentifierIndex([IndexEntry("a.jpg", "dog", "ok")]).with_added([IndexEntry("d.jpg", "dog", "ok")])
    assert shared.images_for("dog") == ["a.jpg", "d.jpg"]


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_bad_input_is_one_line_and_nothing_is_written(split, tmp_path, capsys):
    old, new, new_items = split
    d = tmp_path / "index"
    _build("numeric", old, d)
    present = tmp_path / "present.jsonl"
    present.write_text(old.read_text().splitlines()[0] + "\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"image": str(tmp_path / "missing.jpg"), "captions": ["x."], "split": "train"}) + "\n")
    absent = tmp_path / "absent.txt"
    absent.write_text(new_items[0].image + "\n")
    before = _snapshot(d)
    cases = [
        (["add", str(d), "--collection", str(present)], "already in the index"),
        (["add", str(d), "--collection", str(broken)], "missing.jpg"),
        (["remove", str(d), "--images", str(absent)], "not in the index"),
    ]
    for argv, says in cases:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, err
        assert _snapshot(d) == before
    meta_path = d / "versions" / "0001" / META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "kind": "mystery"}))
    before = _snapshot(d)
    assert main(["add", str(d), "--collection", str(new)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown kind 'mystery'" in err
    assert _snapshot(d) == before and list_versions(d) == [1]


def test_the_cli_prints_the_new_version_and_index_versions_lists_it(split, tmp_path, capsys):
    old, new, new_items = split
    d = tmp_path / "index"
    _build("caption-derived", old, d)
    assert main(["add", str(d), "--collection", str(new)]) == 0
    assert "version 2 (from 1), 12 images" in capsys.readouterr().out
    gone = tmp_path / "gone.txt"
    gone.write_text(os.path.relpath(new_items[0].image) + "\n")  # the same file by another spelling
    assert main(["remove", str(d), "--images", str(gone)]) == 0
    assert "version 3 (from 2), 11 images left" in capsys.readouterr().out
    assert main(["index", "versions", str(d)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("*    3") and "11 images" in lines[-1]


# ---------------------------------------------------------------- continued training: the rows and the command


def test_update_rows_replay_old_pairs_at_the_ratio_and_never_a_removed_image(split, tmp_path):
    from swift_ssid.workflows.update import continued_training_command, update_rows

    old, new, new_items = split
    d = tmp_path / "index"
    _build("caption-derived", old, d)
    add_images(d, new)
    old_items = load_collection(old)
    remove_images(d, [old_items[0].image])
    rows = update_rows(d, new_items, old_items, replay_ratio=0.5, seed=1)
    n_new = sum(1 for it in new_items if it.split in ("train", "restval", "test")) + sum(
        len(it.captions) for it in new_items if it.split in ("train", "restval")
    )
    assert len(rows.new) == n_new and len(rows.replay) == round(0.5 * n_new) and not rows.with_reason
    replayed_images = {r["images"][0] for r in rows.replay if "images" in r}
    assert old_items[0].image not in replayed_images and not replayed_images & {it.image for it in new_items}
    gone_caption = old_items[0].captions[0]
    assert all(gone_caption not in r["messages"][0]["content"] for r in rows.replay)
    assert update_rows(d, new_items, old_items, replay_ratio=0).replay == []
    assert (
        update_rows(d, new_items, old_items, replay_ratio=1, seed=1).replay
        == update_rows(d, new_items, old_items, replay_ratio=1, seed=1).replay
    )  # seeded
    everything = update_rows(d, new_items, old_items, replay_ratio=1000)
    assert len(everything.replay) == len(update_rows(d, old_items[1:], [], replay_ratio=0).new)  # at most all old
    with pytest.raises(ValueError, match="add` the new images first"):
        update_rows(d, [old_items[0]], [], replay_ratio=0)
    args = continued_training_command("M", "T", "ckpt", "rows.jsonl", "out", d, ["--max_steps", "3"])
    assert args[args.index("--resume_from_checkpoint") + 1] == "ckpt"
    assert args[args.index("--resume_only_model") + 1] == "true" and args[-2:] == ["--max_steps", "3"]
