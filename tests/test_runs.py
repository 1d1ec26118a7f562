"""Run files: the row format, reading with file:line errors, writing, expanding identifiers."""

from __future__ import annotations

import json

import pytest

from swift_ssid.core.runs import RunRow, expand_identifiers, load_run_with_index, read_run, write_run

ROW = {
    "query_id": "1000092795#0",
    "query": "Two young guys with shaggy hair look at their hands while hanging out in the yard.",
    "gold_images": ["1000092795.jpg"],
    "identifiers": ["two men - yard - hands", "man - garden - plant"],
    "scores": [-0.41, -1.73],
    "reasons": ["Two men stand in a yard looking at their hands.", None],
    "images": ["1000092795.jpg", "36979.jpg"],
    "unknown_identifiers": [],
    "setting": {"reason": "train+infer", "language": "en"},
}


class DictIndex:
    """A minimal identifier index: identifier -> images in a fixed order."""

    def __init__(self, mapping: dict[str, list[str]]):
        self.mapping = mapping

    def images_for(self, identifier: str) -> list[str]:
        return list(self.mapping.get(identifier, []))


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_row_round_trips_through_dict_and_file(tmp_path):
    row = RunRow.from_dict(ROW)
    assert row.to_dict() == ROW
    path = tmp_path / "run.jsonl"
    write_run(path, [row, RunRow.from_dict({**ROW, "query_id": "q2", "setting": {}})])
    back = read_run(path)
    assert [r.query_id for r in back] == ["1000092795#0", "q2"]
    assert back[0] == row
    assert not list(tmp_path.glob(".run.jsonl.*"))  # no temporary file left behind


def test_optional_keys_default_and_extra_keys_are_kept():
    minimal = {k: v for k, v in ROW.items() if k not in ("unknown_identifiers", "setting")}
    row = RunRow.from_dict({**minimal, "elapsed_s": 0.25})
    assert row.unknown_identifiers == [] and row.setting == {}
    assert row.to_dict()["elapsed_s"] == 0.25


def test_read_run_names_file_and_line(tmp_path):
    good = json.dumps(ROW)
    path = write_lines(tmp_path / "run.jsonl", [good, "", '{"query_id": "q2", '])
    with pytest.raises(ValueError, match=r"run\.jsonl:3: bad JSON"):
        read_run(path)
    bad = {k: v for k, v in ROW.items() if k != "images"}
    write_lines(path, [json.dumps(bad)])
    with pytest.raises(ValueError, match=r"run\.jsonl:1: run row lacks key\(s\) \['images'\]"):
        read_run(path)
    write_lines(path, [json.dumps({**ROW, "scores": [-0.41]})])
    with pytest.raises(ValueError, match=r"run\.jsonl:1: .*1 scores for 2 identifiers"):
        read_run(path)
    write_lines(path, [good, good])
    with pytest.raises(ValueError, match=r"run\.jsonl:2: query_id '1000092795#0' repeats \(first on line 1\)"):
        read_run(path)
    with pytest.raises(FileNotFoundError, match="swift-ssid retrieve"):
        read_run(tmp_path / "absent.jsonl")


def test_blank_lines_are_skipped_and_an_empty_file_has_no_rows(tmp_path):
    assert read_run(write_lines(tmp_path / "empty.jsonl", ["", "  "])) == []
    assert len(read_run(write_lines(tmp_path / "one.jsonl", ["", json.dumps(ROW), ""]))) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gold_images": []}, "has no gold image"),
        ({"gold_images": "1000092795.jpg"}, "'gold_images' must be a list of strings"),
        ({"identifiers": ["ok", 3]}, "'identifiers' must hold only strings"),
        ({"reasons": [None]}, "1 reasons for 2 identifiers"),
        ({"scores": ["high", "low"]}, "'scores' must hold only numbers"),
        ({"images": ["a.jpg", "a.jpg"]}, "'images' repeats an image"),
        ({"unknown_identifiers": ["never generated"]}, "not among the row's identifiers"),
        ({"query_id": ""}, "'query_id' must be a non-empty string"),
        ({"setting": ["en"]}, "'setting' must be a JSON object"),
    ],
)
def test_invalid_rows_are_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        RunRow.from_dict({**ROW, **change})


def test_expand_identifiers_keeps_beam_order_drops_repeats_and_lists_unknowns():
    index = DictIndex({"dog - park": ["a.jpg", "b.jpg"], "cat - sofa": ["c.jpg", "a.jpg"]})
    images, unknown = expand_identifiers(
        ["cat - sofa", "bird - sky", "dog - park", "cat - sofa", "bird - sky"], index.images_for
    )
    assert images == ["c.jpg", "a.jpg", "b.jpg"]
    assert unknown == ["bird - sky"]

    def strict(identifier: str) -> list[str]:
        return {"x": ["x.jpg"]}[identifier]  # raises KeyError for unknown identifiers

    assert expand_identifiers(["y", "x"], strict) == (["x.jpg"], ["y"])
    assert expand_identifiers([], strict) == ([], [])


def test_load_run_with_index_checks_or_recomputes_images(tmp_path):
    path = tmp_path / "run.jsonl"
    write_run(path, [RunRow.from_dict(ROW)])
    same = DictIndex({"two men - yard - hands": ["1000092795.jpg"], "man - garden - plant": ["36979.jpg"]})
    assert load_run_with_index(path, same)[0].images == ["1000092795.jpg", "36979.jpg"]
    other = DictIndex({"two men - yard - hands": ["1000092795.jpg", "77.jpg"]})
    with pytest.raises(ValueError, match="use the index the run was made with"):
        load_run_with_index(path, other)
    row = load_run_with_index(path, other, reexpand=True)[0]
    assert row.images == ["1000092795.jpg", "77.jpg"]
    assert row.unknown_identifiers == ["man - garden - plant"]
