"""Index versions: numbered versions behind one atomically switched link, flat folders adopted, prune, kill -9.

Also the run side: rows record the version they were made with, and a run of another version is refused.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from swift_ssid.cli import main
from swift_ssid.core.index import (
    CURRENT_LINK,
    INDEX_FILE,
    META_FILE,
    STATS_FILE,
    VERSION_KEY,
    IdentifierIndex,
    IndexEntry,
    describe_versions,
    index_version,
    list_versions,
    load_index,
    prune_versions,
    read_stats,
    write_index,
)
from swift_ssid.core.runs import RunRow, check_run_version, read_run, write_run

REPO_ROOT = Path(__file__).resolve().parents[1]
KILLS = 15


def _index(n: int, word: str = "thing", policy: str = "shared") -> IdentifierIndex:
    return IdentifierIndex([IndexEntry(f"i{i}.jpg", f"{word} {i}", "ok") for i in range(n)], policy=policy)


def _flat(path: Path, index: IdentifierIndex) -> Path:
    """A folder in the layout of before versions: regular files, a manifest without ``index_version``."""
    write_index(path.with_name(path.name + "_src"), index, {"images": len(index.entries)}, regenerate=[])
    path.mkdir()
    src = path.with_name(path.name + "_src") / "versions" / "0001"
    for name in (INDEX_FILE, STATS_FILE, "regenerate.jsonl"):
        shutil.copy(src / name, path / name)
    meta = json.loads((src / META_FILE).read_text())
    del meta[VERSION_KEY]
    (path / META_FILE).write_text(json.dumps(meta))
    return path


def test_each_write_adds_a_version_and_the_top_level_paths_follow_it(tmp_path):
    d = tmp_path / "index"
    write_index(d, _index(3), {"images": 3})
    write_index(d, _index(5), {"images": 5})
    assert list_versions(d) == [1, 2] and index_version(d) == 2
    assert os.readlink(d / CURRENT_LINK) == "versions/0002"
    assert (d / INDEX_FILE).is_symlink() and len((d / INDEX_FILE).read_text().splitlines()) == 5
    assert len(load_index(d).entries) == 5 and read_stats(d)["images"] == 5
    old = d / "versions" / "0001"  # a version folder is a complete index folder of its own
    assert len(load_index(old).entries) == 3 and index_version(old) == 1
    assert [(r["version"], r["current"], r["images"]) for r in describe_versions(d)] == [(1, False, 3), (2, True, 5)]


def test_a_flat_folder_loads_as_version_1_and_is_adopted_on_the_first_write(tmp_path):
    d = _flat(tmp_path / "index", _index(4))
    before = {name: (d / name).read_bytes() for name in (INDEX_FILE, META_FILE, STATS_FILE)}
    assert index_version(d) == 1 and len(load_index(d).entries) == 4 and list_versions(d) == []
    assert [r["version"] for r in describe_versions(d)] == [1] and prune_versions(d) == []
    write_index(d, _index(6), {"images": 6})
    assert list_versions(d) == [1, 2] and index_version(d) == 2 and len(load_index(d).entries) == 6
    kept = d / "versions" / "0001"
    assert {name: (kept / name).read_bytes() for name in before} == before  # the same bytes, now version 1
    assert all((d / name).is_symlink() for name in before)


def test_prune_keeps_the_current_version_and_the_newest_others(tmp_path):
    d = tmp_path / "index"
    for n in range(1, 5):
        write_index(d, _index(n))
    assert prune_versions(d, keep=2) == [1, 2] and list_versions(d) == [3, 4]
    assert main(["index", "prune", str(d)]) == 0 and list_versions(d) == [4]
    assert len(load_index(d).entries) == 4
    with pytest.raises(ValueError, match="keep must be"):
        prune_versions(d, keep=0)


def test_a_version_without_a_companion_drops_its_top_level_link(tmp_path):
    d = tmp_path / "index"
    write_index(d, _index(2), texts={"new_tokens.txt": "img_0\nimg_1\n"})
    assert (d / "new_tokens.txt").read_text() == "img_0\nimg_1\n"
    write_index(d, _index(3))
    assert not os.path.lexists(d / "new_tokens.txt")


WRITER = textwrap.dedent(
    """
    import sys
    from swift_ssid.core.index import IdentifierIndex, IndexEntry, write_index
    def index(n, word):
        return IdentifierIndex([IndexEntry(f"i{i}.jpg", f"{word} {i}", "ok") for i in range(n)])
    A, B = index(400, "alpha"), index(300, "beta")
    print("ready", flush=True)
    flip = 0
    while True:
        which = (A, B)[flip % 2]
        write_index("index", which, {"images": len(which.entries)}, regenerate=[])
        flip += 1
    """
)


def test_kill_at_any_moment_leaves_the_index_wholly_old_or_wholly_new(tmp_path):
    """SIGKILL a process writing versions in a loop (from a flat folder, so adoption is hit too): never a mix."""
    want = {400: _index(400, "alpha").entries, 300: _index(300, "beta").entries}
    _flat(tmp_path / "index", _index(400, "alpha"))
    rng = random.Random(0)
    seen: set[int] = set()
    for _ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        )
        try:
            assert proc.stdout.readline().strip() == b"ready"
            time.sleep(rng.uniform(0, 0.5))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        index = load_index(tmp_path / "index")  # never refused: the current version is always whole
        assert index.entries == want[len(index.entries)]
        assert read_stats(tmp_path / "index")["images"] == len(index.entries)
        top = json.loads((tmp_path / "index" / STATS_FILE).read_text())  # a path a recipe names
        assert top["images"] == len(index.entries)
        seen.add(len(index.entries))
    assert seen == {400, 300}  # both sides of the switch were hit (dozens of versions in 15 kills)
    write_index(tmp_path / "index", _index(2), regenerate=[])  # the next writer clears what killed ones left
    assert not [p.name for p in (tmp_path / "index" / "versions").iterdir() if p.name.startswith(".")]
    assert len(list((tmp_path / "index").glob(".*.tmp"))) <= KILLS


# ---------------------------------------------------------------- runs record the version


def _row(query_id: str, version: int | None) -> RunRow:
    return RunRow(query_id, "a thing", ["i0.jpg"], ["thing 0"], [-1.0], [None], ["i0.jpg"], index_version=version)


def test_run_rows_round_trip_their_version_and_old_rows_count_as_version_1(tmp_path):
    write_run(tmp_path / "run.jsonl", [_row("q1", 2), _row("q2", None)])
    rows = read_run(tmp_path / "run.jsonl")
    assert [r.index_version for r in rows] == [2, None]
    assert "index_version" not in rows[1].to_dict()  # a run without versions is written as before
    check_run_version(rows[1:], 1, "idx")
    with pytest.raises(ValueError, match=r"version 2 of the index idx, which is now at version 1"):
        check_run_version(rows, 1, "idx")


def test_a_run_made_with_version_1_is_refused_against_version_2(tmp_path, capsys):
    d = tmp_path / "index"
    write_index(d, _index(3))
    write_run(tmp_path / "run.jsonl", [_row("q1", index_version(d))])
    assert main(["evaluate", str(tmp_path / "run.jsonl"), "--index", str(d)]) == 0
    write_index(d, _index(4))
    capsys.readouterr()
    for argv in (
        ["evaluate", str(tmp_path / "run.jsonl"), "--index", str(d)],
        ["report", str(tmp_path / "run.jsonl"), "--index", str(d), "--out", str(tmp_path / "r.html")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "version 1 of the index" in err and "now at version 2" in err
    assert not (tmp_path / "r.html").exists()
    # the named old version still evaluates
    assert main(["evaluate", str(tmp_path / "run.jsonl"), "--index", str(d / "versions" / "0001")]) == 0


def test_resume_refuses_a_run_file_of_another_version(tmp_path):
    from swift_ssid.integration.retrieval import done_query_ids

    write_run(tmp_path / "run.jsonl", [_row("q1", None)])
    setting: dict = {}
    assert done_query_ids(tmp_path / "run.jsonl", setting, index=("idx", 1)) == {"q1"}
    with pytest.raises(ValueError, match="version 1 of the index idx, which is now at version 2"):
        done_query_ids(tmp_path / "run.jsonl", setting, index=("idx", 2))
