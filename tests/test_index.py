"""Tests for the identifier index, its collision policies, build_index and the build-index command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from swift_ssid.core.index import (
    INDEX_FILE,
    META_FILE,
    REGENERATE_FILE,
    STATS_FILE,
    IdentifierIndex,
    IndexEntry,
    build_index,
)
from swift_ssid.core.jsonl import read_jsonl
from swift_ssid.core.prompt import render_prompt

REPO_ROOT = Path(__file__).resolve().parents[1]


def entry(image: str, identifier: str | None, status: str = "ok") -> IndexEntry:
    return IndexEntry(image=image, identifier=identifier, status=status, raw_identifier=identifier)


ENTRIES = [
    entry("a.jpg", "dog - ball"),
    entry("b.jpg", "Cat – Sofa"),  # non-canonical spelling: canonicalised on build
    entry("c.jpg", "dog - ball"),
    entry("d.jpg", None, "invalid"),
    entry("e.jpg", "dog - ball - 2"),  # an identifier that a naive suffix would clash with
    entry("f.jpg", "dog - ball"),
    entry("g.jpg", "cat - sofa"),
]


# ---------------------------------------------------------------- IdentifierIndex


def test_shared_policy_maps_an_identifier_to_all_its_images_in_input_order():
    index = IdentifierIndex(ENTRIES)
    assert index.policy == "shared"
    assert index.identifiers() == ["dog - ball", "cat - sofa", "dog - ball - 2"]
    assert len(index) == 3
    assert index.images_for("dog - ball") == ["a.jpg", "c.jpg", "f.jpg"]
    assert index.images_for("CAT — SOFA.") == ["b.jpg", "g.jpg"]  # lookups are canonicalised
    assert index.images_for("unknown") == []
    assert index.identifier_for("b.jpg") == "cat - sofa"
    assert index.identifier_for("d.jpg") is None  # invalid
    assert index.identifier_for("nope.jpg") is None
    assert "Dog – Ball" in index
    assert "dog" not in index
    assert 3 not in index
    assert [e.image for e in index.entries] == [e.image for e in ENTRIES]
    assert index.collision_groups() == {"dog - ball": ["a.jpg", "c.jpg", "f.jpg"], "cat - sofa": ["b.jpg", "g.jpg"]}


def test_disambiguate_policy_suffixes_later_images_without_clashing():
    index = IdentifierIndex(ENTRIES, policy="disambiguate")
    finals = [e.identifier for e in index.entries]
    # c.jpg cannot take "dog - ball - 2" (e.jpg owns it), so it gets " - 3"; f.jpg then gets " - 4".
    assert finals == [
        "dog - ball",
        "cat - sofa",
        "dog - ball - 3",
        None,
        "dog - ball - 2",
        "dog - ball - 4",
        "cat - sofa - 2",
    ]
    assert [e.raw_identifier for e in index.entries] == [
        "dog - ball",
        "cat - sofa",
        "dog - ball",
        None,
        "dog - ball - 2",
        "dog - ball",
        "cat - sofa",
    ]
    valid = [f for f in finals if f is not None]
    assert len(set(valid)) == len(valid) == len(index)
    for e in index.entries:
        if e.identifier is not None:
            assert index.images_for(e.identifier) == [e.image]
    assert index.identifiers() == [
        "dog - ball",
        "cat - sofa",
        "dog - ball - 3",
        "dog - ball - 2",
        "dog - ball - 4",
        "cat - sofa - 2",
    ]
    # The collision groups are still reported by raw identifier.
    assert index.collision_groups()["dog - ball"] == ["a.jpg", "c.jpg", "f.jpg"]


def test_index_does_not_mutate_the_given_entries():
    given = [entry("a.jpg", "Dog"), entry("b.jpg", "dog")]
    IdentifierIndex(given, policy="disambiguate")
    assert [e.identifier for e in given] == ["Dog", "dog"]


@pytest.mark.parametrize(
    ("entries", "policy", "message"),
    [
        ([entry("a.jpg", "dog")], "unique", "unknown collision policy 'unique'"),
        ([entry("a.jpg", "dog"), entry("a.jpg", "cat")], "shared", "image 'a.jpg' appears twice"),
        ([entry("a.jpg", "  ")], "shared", "identifier '  ' is empty"),
        ([entry("a.jpg", None)], "shared", "identifier None is empty"),
        ([entry("", "dog")], "shared", "image must be a non-empty path"),
        ([entry("a.jpg", "dog", "good")], "shared", "status 'good'"),
    ],
)
def test_index_rejects_bad_entries(entries, policy, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        IdentifierIndex(entries, policy=policy)


@pytest.mark.parametrize("policy", ["shared", "disambiguate"])
def test_save_load_round_trip(tmp_path, policy):
    index = IdentifierIndex(ENTRIES, policy=policy)
    index.save(tmp_path)
    assert json.loads((tmp_path / META_FILE).read_text())["policy"] == policy
    rows = read_jsonl(tmp_path / INDEX_FILE)
    assert len(rows) == len(ENTRIES)
    assert set(rows[0]) == {"image", "identifier", "status", "problems", "caption", "reason", "raw_identifier"}
    loaded = IdentifierIndex.load(tmp_path)
    assert loaded.policy == policy
    assert loaded.entries == index.entries
    assert loaded.identifiers() == index.identifiers()


def _saved(tmp_path: Path) -> Path:
    IdentifierIndex(ENTRIES, policy="disambiguate").save(tmp_path)
    return tmp_path


def _edit_row(path: Path, lineno: int, **changes) -> None:
    lines = path.read_text().splitlines()
    row = json.loads(lines[lineno - 1])
    row.update(changes)
    lines[lineno - 1] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    meta = json.loads((path.parent / META_FILE).read_text())
    meta.pop("sha256")  # a deliberate hand edit: drop the manifest's checksums (documented in load)
    (path.parent / META_FILE).write_text(json.dumps(meta))


def test_load_keeps_a_hand_edited_identifier(tmp_path):
    d = _saved(tmp_path)
    _edit_row(d / INDEX_FILE, 3, identifier="Brand – New")
    index = IdentifierIndex.load(d)
    assert index.images_for("brand new") == []
    assert index.images_for("brand - new") == ["c.jpg"]
    assert index.identifier_for("f.jpg") == "dog - ball - 4"  # the other rows are untouched


def test_load_rejects_a_shared_identifier_under_disambiguate(tmp_path):
    d = _saved(tmp_path)
    _edit_row(d / INDEX_FILE, 3, identifier="dog - ball")
    with pytest.raises(ValueError, match=r"index\.jsonl:3: identifier 'dog - ball' is also on line 1"):
        IdentifierIndex.load(d)


@pytest.mark.parametrize(
    ("lineno", "changes", "message"),
    [
        (2, {"status": "fine"}, r"index\.jsonl:2: 'status' must be ok, repaired or invalid, got 'fine'"),
        (1, {"image": None}, r"index\.jsonl:1: 'image' must be a non-empty string"),
        (1, {"problems": "none"}, r"index\.jsonl:1: 'problems' must be a list of strings"),
        (1, {"identifier": None}, r"index\.jsonl:1: status 'ok' but identifier None is empty"),
        (1, {"identifier": 7}, r"index\.jsonl:1: 'identifier' must be a string or null, got 7"),
        (2, {"image": "a.jpg"}, r"index\.jsonl:2: image 'a\.jpg' also on line 1"),
    ],
)
def test_load_names_the_bad_row(tmp_path, lineno, changes, message):
    d = _saved(tmp_path)
    _edit_row(d / INDEX_FILE, lineno, **changes)
    with pytest.raises(ValueError, match=message):
        IdentifierIndex.load(d)


def test_load_reports_broken_json_and_missing_or_bad_meta(tmp_path):
    d = _saved(tmp_path)
    _edit_row(d / INDEX_FILE, 1)
    with (d / INDEX_FILE).open("a") as f:
        f.write("{not json\n")
    with pytest.raises(ValueError, match=r"index\.jsonl:8: bad JSON .*rebuild the index"):
        IdentifierIndex.load(d)
    (d / META_FILE).write_text(json.dumps({"format": "swift_ssid.identifier_index", "version": 99, "policy": "shared"}))
    with pytest.raises(ValueError, match="index version 99"):
        IdentifierIndex.load(d)
    (d / META_FILE).write_text("[]")
    with pytest.raises(ValueError, match="format 'list'"):
        IdentifierIndex.load(d)
    (d / META_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="index_meta.json: missing; rebuild"):
        IdentifierIndex.load(d)


# ---------------------------------------------------------------- build_index

GOOD = "caption:A dog runs.\nidentifier:dog - ball\nreason:The dog chases a ball."
REPAIRABLE = "Sure!\n**Caption:** A cat.\n**Identifier:** <Cat – Sofa>.\n**Reason:** A cat on a sofa."
BAD = "caption:A bird.\nidentifier:<your identifier here>\nreason:x"
SENTENCE = "caption:A man.\nidentifier:A man is standing on the street.\nreason:x"


def infer_row(response, image, user: str | None = "<image>" + render_prompt(), **extra):
    """A row as `swift infer --result_path` writes it: response, labels, logprobs, messages (+ assistant), images."""
    messages = [] if user is None else [{"role": "user", "content": user}]
    messages.append({"role": "assistant", "content": response})
    images = image if isinstance(image, list) else [{"bytes": None, "path": image}]
    return {"response": response, "labels": None, "logprobs": None, "messages": messages, "images": images, **extra}


@pytest.fixture()
def images(tmp_path) -> Path:
    root = tmp_path / "imgs"
    root.mkdir()
    for name in ("1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg", "6.jpg"):
        (root / name).write_bytes(b"\xff\xd8")
    return root


def write_lines(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_build_index_from_swift_infer_results(tmp_path, images):
    captioned = "<image>" + render_prompt("A brown bird on a branch.")
    results = write_lines(
        tmp_path / "results.jsonl",
        [
            infer_row(GOOD, str(images / "1.jpg")),
            infer_row(REPAIRABLE, ["2.jpg"]),  # plain, relative path string
            "{broken json",
            infer_row(BAD, str(images / "3.jpg"), user=captioned),
            {"labels": None, "images": [str(images / "4.jpg")]},  # no response
            infer_row(GOOD, str(images / "missing.jpg")),
            infer_row(GOOD.replace("dog - ball", "Dog - Ball"), str(images / "5.jpg")),  # collides with 1.jpg
            infer_row(SENTENCE, str(images / "6.jpg"), user=None),
            infer_row(GOOD, [str(images / "1.jpg"), str(images / "2.jpg")]),  # two images
            "",
        ],
    )
    out = tmp_path / "index"
    stats = build_index(results, out, image_root=images)

    assert stats.rows == 9
    assert stats.images == 5
    assert (stats.valid, stats.ok, stats.repaired, stats.invalid) == (3, 2, 1, 2)
    assert stats.invalid_by_reason == {"placeholder_identifier": 1, "sentence_identifier": 1}
    assert stats.unique_identifiers == 2
    assert (stats.collision_groups, stats.collision_images) == (1, 2)
    assert stats.collision_group_sizes == {"2": 1}
    assert stats.identifier_words == {"min": 2, "median": 2, "mean": 2.0, "max": 2, "histogram": {"2": 3}}
    assert stats.problems["markdown"] == 1
    assert [e["line"] for e in stats.input_errors] == [3, 5, 6, 9]
    messages = [e["error"] for e in stats.input_errors]
    assert "results.jsonl:3: bad JSON" in messages[0]
    assert "results.jsonl:5: missing 'response' field" in messages[1] and "--result_path" in messages[1]
    assert "results.jsonl:6: image file not found" in messages[2] and "--image-root" in messages[2]
    assert "results.jsonl:9: expected exactly one image in 'images', got 2" in messages[3]
    assert json.loads((out / STATS_FILE).read_text()) == stats.to_dict()

    index = IdentifierIndex.load(out)
    assert index.policy == "shared"
    assert index.images_for("dog - ball") == [str(images / "1.jpg"), str(images / "5.jpg")]
    assert index.identifier_for("2.jpg") == "cat - sofa"  # stored as given, relative
    assert index.identifier_for(str(images / "3.jpg")) is None
    by_image = {e.image: e for e in index.entries}
    assert by_image["2.jpg"].caption == "A cat."
    assert by_image["2.jpg"].status == "repaired"
    assert "preamble" in by_image["2.jpg"].problems

    regenerate = read_jsonl(out / REGENERATE_FILE)
    assert regenerate == [
        {"messages": [{"role": "user", "content": captioned}], "images": [str(images / "3.jpg")]},
        {"messages": [{"role": "user", "content": "<image>" + render_prompt()}], "images": [str(images / "6.jpg")]},
    ]


def test_build_index_disambiguate_and_duplicate_rows(tmp_path):
    results = write_lines(
        tmp_path / "results.jsonl",
        [
            infer_row(GOOD, "a.jpg"),
            infer_row(BAD, "b.jpg"),
            infer_row(GOOD, "c.jpg"),
            infer_row(GOOD.replace("dog - ball", "cat - hat"), "b.jpg"),  # regenerated row: replaces the invalid one
            infer_row(GOOD.replace("dog - ball", "bird"), "a.jpg"),  # a.jpg already valid: ignored
        ],
    )
    stats = build_index(results, tmp_path / "idx", collisions="disambiguate", check_images=False)
    assert stats.duplicate_rows == 2
    assert (stats.images, stats.valid, stats.invalid, stats.regenerate) == (3, 3, 0, 0)
    assert stats.disambiguated == 1
    assert read_jsonl(tmp_path / "idx" / REGENERATE_FILE) == []
    index = IdentifierIndex.load(tmp_path / "idx")
    assert [(e.image, e.identifier) for e in index.entries] == [
        ("a.jpg", "dog - ball"),
        ("b.jpg", "cat - hat"),
        ("c.jpg", "dog - ball - 2"),
    ]


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        ("", ValueError, "the file is empty"),
        ("\n\n", ValueError, "the file is empty"),
        ("{bad\n[1]\n", ValueError, "no usable row among 2"),
        (json.dumps({"images": ["a.jpg"]}) + "\n", ValueError, "missing 'response' field"),
    ],
)
def test_build_index_unusable_input_raises(tmp_path, content, error, message):
    path = tmp_path / "results.jsonl"
    path.write_text(content)
    with pytest.raises(error, match=re.escape(message)):
        build_index(path, tmp_path / "out", check_images=False)
    assert not (tmp_path / "out" / INDEX_FILE).exists()


def test_build_index_missing_file_and_bad_policy(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl: no such file"):
        build_index(tmp_path / "nope.jsonl", tmp_path / "out")
    with pytest.raises(ValueError, match="unknown collision policy 'merge'"):
        build_index(tmp_path / "nope.jsonl", tmp_path / "out", collisions="merge")  # type: ignore[arg-type]


def test_build_index_bytes_only_image_is_a_line_error(tmp_path):
    results = write_lines(
        tmp_path / "r.jsonl",
        [
            infer_row(GOOD, [{"bytes": "abc", "path": None}]),
            infer_row(GOOD, "x.jpg"),
        ],
    )
    stats = build_index(results, tmp_path / "out", check_images=False)
    assert stats.images == 1
    assert "r.jsonl:1: image given without a file path" in stats.input_errors[0]["error"]


def test_build_index_on_real_flickr_captions(tmp_path, flickr_captions):
    # One caption per Flickr30K test image; identifier = its first three words (so real collisions occur).
    rows = []
    for i, caption in enumerate(flickr_captions[::5]):
        identifier = " ".join(re.findall(r"[A-Za-z]+", caption)[:3])
        rows.append(infer_row(f"caption:{caption}\nidentifier:{identifier}\nreason:It matches.", f"flickr/{i}.jpg"))
    results = write_lines(tmp_path / "results.jsonl", rows)
    shared = build_index(results, tmp_path / "shared", check_images=False)
    distinct = build_index(results, tmp_path / "distinct", collisions="disambiguate", check_images=False)
    assert shared.images == distinct.images == 1000
    valid = shared.valid
    # Prefixes with a finite "be" and no separator ("A man is") read as sentences and are rejected by design.
    clauses = sum(
        1
        for row in rows
        if re.search(r"\nidentifier:\S* ?\S* ?\b(is|are|was|were|am)\b", row["response"], re.IGNORECASE)
    )
    assert 0 < clauses < 150
    assert valid == 1000 - clauses
    assert shared.invalid_by_reason == {"sentence_identifier": clauses}
    assert shared.collision_groups > 50  # "A man in" and friends
    index = IdentifierIndex.load(tmp_path / "shared")
    assert sum(len(index.images_for(i)) for i in index.identifiers()) == valid
    assert len(index) == shared.unique_identifiers == distinct.unique_raw_identifiers
    assert distinct.unique_identifiers == valid
    assert distinct.disambiguated == valid - len(index)
    assert shared.identifier_words["max"] == 3


# ---------------------------------------------------------------- the command


def test_build_index_command(tmp_path, images):
    results = write_lines(
        tmp_path / "results.jsonl",
        [
            infer_row(GOOD, "1.jpg"),
            infer_row(REPAIRABLE, "2.jpg"),
            infer_row(BAD, "3.jpg"),
            "not json at all",
            infer_row(GOOD, "missing.jpg"),
            infer_row(GOOD, "4.jpg"),
        ],
    )
    out = tmp_path / "index"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "swift_ssid.cli",
        "build-index",
        str(results),
        "--out",
        str(out),
        "--collisions",
        "disambiguate",
        "--image-root",
        str(images),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "valid 3 (ok 2, repaired 1), invalid 1 (placeholder_identifier 1)" in proc.stdout
    assert "input errors 2" in proc.stdout
    assert "results.jsonl:4: bad JSON" in proc.stdout
    assert "results.jsonl:5: image file not found" in proc.stdout
    assert str(out / INDEX_FILE) in proc.stdout
    index = IdentifierIndex.load(out)
    assert [e.identifier for e in index.entries] == ["dog - ball", "cat - sofa", None, "dog - ball - 2"]
    assert read_jsonl(out / REGENERATE_FILE)[0]["images"] == ["3.jpg"]
    stats = json.loads((out / STATS_FILE).read_text())
    assert stats["policy"] == "disambiguate"
    assert stats["input_error_count"] == 2

    # An unusable input exits non-zero with the reason on stderr and writes nothing.
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = subprocess.run(
        cmd[:4] + [str(empty), "--out", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2  # bad input (docs/errors.md)
    assert "empty.jsonl: the file is empty" in proc.stderr
    assert not (tmp_path / "none").exists()


def test_identifier_words_are_counted_one_way_in_every_stats(tmp_path):
    """``two white males - bushes`` is 4 words in build-index's stats, a kind's stats and the quality report."""
    from swift_ssid.core.answers import identifier_words
    from swift_ssid.core.collection import CollectionItem
    from swift_ssid.core.kinds import write_kind_index
    from swift_ssid.core.quality import length

    ident = "two white males - bushes"
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps({"response": f"caption:c\nidentifier:{ident}\nreason:r", "images": ["a.jpg"]}))
    built = build_index(results, tmp_path / "built", check_images=False)
    item = CollectionItem(image="a.jpg", captions=(ident,), split="train")
    kind = write_kind_index("semantic", [item], [ident], tmp_path / "kind", {})
    assert identifier_words(ident) == 4
    assert built.identifier_words == kind["identifier_words"] == {
        "min": 4, "median": 4, "mean": 4.0, "max": 4, "histogram": {"4": 1},
    }  # fmt: skip
    assert length(IdentifierIndex.load(tmp_path / "kind")).words.max == 4


def test_build_index_lives_in_index_build_and_is_importable_from_the_index_module():
    from swift_ssid.core import index, index_build

    assert index.build_index is index_build.build_index and index.IndexBuildStats is index_build.IndexBuildStats
    with pytest.raises(AttributeError):
        index.no_such_name  # noqa: B018
