"""Tests for JSON Lines reading and atomic / appending writing."""

from __future__ import annotations

import json

import pytest

from swift_ssid.core.jsonl import append_jsonl, iter_jsonl, read_jsonl, write_json_atomic, write_jsonl_atomic


def test_iter_jsonl_reports_each_bad_line_and_keeps_the_rest(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"a": 1}\n'  # UTF-8 BOM on the first line
        b"\n"
        b"   \n"
        b"{oops\n"
        b"[1, 2]\n"
        b'{"b": "\xff"}\n'  # not UTF-8
        b'{"c": "\xc3\xa9"}'  # no final newline
    )
    got = list(iter_jsonl(path))
    assert [(n, obj) for n, obj, _ in got] == [(1, {"a": 1}), (4, None), (5, None), (6, None), (7, {"c": "é"})]
    errors = [e for _, _, e in got]
    assert errors[0] is None and errors[4] is None
    assert errors[1].startswith(f"{path}:4: bad JSON")
    assert errors[2] == f"{path}:5: expected a JSON object, got list; write one {{...}} per line"
    assert errors[3].startswith(f"{path}:6: not UTF-8")


def test_read_jsonl_fails_on_the_first_bad_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n"text"\n{bad\n')
    with pytest.raises(ValueError, match=r"r\.jsonl:2: expected a JSON object, got str"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl: no such file"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_write_jsonl_atomic_writes_and_replaces(tmp_path):
    path = tmp_path / "deep" / "out.jsonl"
    assert write_jsonl_atomic(path, [{"a": "é"}, {"b": [1, None]}]) == 2
    assert path.read_text(encoding="utf-8") == '{"a": "é"}\n{"b": [1, null]}\n'
    assert write_jsonl_atomic(path, iter([{"c": 3}])) == 1
    assert read_jsonl(path) == [{"c": 3}]
    assert write_jsonl_atomic(path, []) == 0
    assert path.read_text() == ""
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.jsonl"]


def test_write_jsonl_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl_atomic(path, [{"old": True}])

    def rows():
        yield {"new": 1}
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError, match="generator failed"):
        write_jsonl_atomic(path, rows())
    with pytest.raises(ValueError):
        write_jsonl_atomic(path, [{"x": float("nan")}])  # NaN is not JSON
    assert read_jsonl(path) == [{"old": True}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_write_json_atomic(tmp_path):
    path = tmp_path / "stats.json"
    write_json_atomic(path, {"n": 1, "s": "é"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"n": 1, "s": "é"}
    assert "é" in path.read_text(encoding="utf-8")


def test_append_jsonl_appends_and_survives_a_partial_last_line(tmp_path):
    path = tmp_path / "sub" / "run.jsonl"
    append_jsonl(path, {"i": 0})
    append_jsonl(path, {"i": 1})
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}]
    with path.open("a") as f:
        f.write('{"i": 2, "trunc')  # a writer killed mid-line
    append_jsonl(path, {"i": 3})
    got = list(iter_jsonl(path))
    assert [obj for _, obj, _ in got] == [{"i": 0}, {"i": 1}, None, {"i": 3}]
    assert got[2][2].startswith(f"{path}:3: bad JSON")
