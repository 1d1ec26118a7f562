"""Text collections: rows with ``text`` (and an ``id``) instead of an image, through rows, build-index and report.

Fast (no model): the collection reader and its one-line errors, the dataset rows, build-index matching text results
to their ids by prompt, the collection check and the report's text in place of a thumbnail. The end-to-end run with
the real language model is in ``test_real_lm.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swift_ssid.core.checks import check_collection
from swift_ssid.core.collection import load_collection
from swift_ssid.core.index import IdentifierIndex, IndexEntry, build_index
from swift_ssid.core.prompt import render_text_prompt
from swift_ssid.core.rows import generate_keys, generate_rows, memorize_rows, query_rows, retrieve_rows
from swift_ssid.core.runs import RunRow
from swift_ssid.reporting.report import render_report

DOCS = [
    ("doc-a", "A black dog runs across a green field.", ["A dog running.", "Dog on grass."], "train"),
    ("doc-b", "Two men play guitars on a stage.", ["Musicians on stage."], "train"),
    ("doc-c", "A child eats ice cream on a bench.", ["A kid with ice cream.", "Child on a bench."], "test"),
]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _index(*pairs: tuple[str, str]) -> IdentifierIndex:
    return IdentifierIndex([IndexEntry(image=key, identifier=ident, status="ok") for key, ident in pairs])


@pytest.fixture()
def collection(tmp_path: Path) -> Path:
    rows = [{"id": i, "text": t, "captions": c, "split": s} for i, t, c, s in DOCS]
    return _write(tmp_path / "docs.jsonl", rows)


def test_text_rows_are_keyed_by_their_id(collection: Path) -> None:
    items = load_collection(collection)
    assert [it.id for it in items] == ["doc-a", "doc-b", "doc-c"] and not any(it.has_image for it in items)
    assert items[0].text == DOCS[0][1] and items[0].to_row() == {
        "id": "doc-a",
        "text": DOCS[0][1],
        "captions": DOCS[0][2],
        "split": "train",
    }
    report = check_collection(collection)  # no file to check for a text row
    assert report.ok and len(report.items) == 3


def test_a_row_with_neither_text_nor_image_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.jsonl", [{"id": "a", "text": "x", "captions": ["y"], "split": "test"}, {"id": "b"}])
    with pytest.raises(ValueError, match=r"c\.jsonl:2: the row has neither 'image' nor 'text'") as err:
        load_collection(path)
    assert "\n" not in str(err.value)
    no_id = _write(tmp_path / "d.jsonl", [{"text": "a dog", "captions": ["y"], "split": "test"}])
    with pytest.raises(ValueError, match=r"d\.jsonl:1: a text row without 'image' needs an 'id'"):
        load_collection(no_id)
    twice = _write(tmp_path / "e.jsonl", [{"id": "a", "text": "t", "captions": ["y"], "split": "test"}] * 2)
    with pytest.raises(ValueError, match=r"e\.jsonl:2: id a is already listed at .*e\.jsonl:1"):
        load_collection(twice)
    problems = check_collection(twice).problems
    assert [p.code for p in problems] == ["duplicate-path"]


def test_text_rows_put_the_text_where_the_image_would_be(collection: Path) -> None:
    items = load_collection(collection)
    generate = generate_rows(items)
    assert "images" not in generate[0] and generate[0]["messages"][0]["content"] == render_text_prompt(
        DOCS[0][1], DOCS[0][2][0]
    )
    index = _index(("doc-a", "black dog - field"), ("doc-b", "men - guitars"), ("doc-c", "kid"))
    memorise = memorize_rows(index, items, with_reason=False)
    assert [r["messages"][0]["content"] for r in memorise][0] == f"Which identifier does this text have? {DOCS[0][1]}"
    assert all("images" not in r for r in memorise) and len(memorise) == 3
    assert len(retrieve_rows(index, items, with_reason=False)) == 3  # training captions only
    queries = query_rows(items)
    assert [(q["query_id"], q["gold_images"]) for q in queries] == [("doc-c#0", ["doc-c"]), ("doc-c#1", ["doc-c"])]


def test_build_index_matches_text_results_to_their_ids(collection: Path, tmp_path: Path) -> None:
    items = load_collection(collection)
    results = []
    for row, ident in zip(generate_rows(items), ["black dog - field", "men - guitars", "kid - ice cream"], strict=True):
        response = f"caption:c\nidentifier:{ident}\nreason:r"
        results.append({"response": response, "messages": [*row["messages"], {"role": "assistant", "content": "x"}]})
    path = _write(tmp_path / "results.jsonl", results)
    stats = build_index(path, tmp_path / "index", text_keys=generate_keys(items))
    assert stats.valid == 3 and not stats.input_errors
    index = IdentifierIndex.load(tmp_path / "index")
    assert index.identifier_for("doc-c") == "kid - ice cream"
    with pytest.raises(ValueError, match="pass --collection"):
        build_index(path, tmp_path / "index3")


def test_build_index_cli_takes_the_collection(collection: Path, tmp_path: Path, capsys) -> None:
    from swift_ssid.cli.main import main

    items = load_collection(collection)
    rows = [{"response": "caption:c\nidentifier:x\nreason:r", **row} for row in generate_rows(items)]
    rows[1]["response"] = "no answer"
    results = _write(tmp_path / "results.jsonl", rows)
    args = ["build-index", str(results), "--out", str(tmp_path / "ix"), "--min-usable", "0"]
    assert main([*args, "--collection", str(collection)]) == 0
    assert "indexed 3 images" in capsys.readouterr().out
    regenerate = [json.loads(line) for line in (tmp_path / "ix" / "regenerate.jsonl").read_text().splitlines()]
    assert regenerate == [{"messages": generate_rows(items[1:2])[0]["messages"]}]  # asked again, with no image


def test_report_shows_the_text_in_place_of_a_thumbnail(collection: Path) -> None:
    items = load_collection(collection)
    index = _index(("doc-a", "black dog"), ("doc-b", "men"), ("doc-c", "kid"))
    row = RunRow(
        query_id="doc-c#0",
        query="A kid with ice cream.",
        gold_images=["doc-c"],
        identifiers=["kid", "men"],
        scores=[-0.1, -2.0],
        reasons=[None, None],
        images=["doc-c", "doc-b"],
    )
    page, stats = render_report([row], index, texts={it.id: it.text for it in items})
    assert DOCS[2][1] in page and DOCS[1][1] in page and 'class="text-item"' in page
    assert stats.n_thumbnails == 0 and stats.missing_images == []
