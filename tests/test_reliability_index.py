"""Reliability of what the pipeline writes (issue 9): an index folder is one unit (class 4), every writer survives
``kill -9`` as old-or-new (index, run file, report), and ``build-index`` on random bytes never tracebacks and
keeps every good row.

The kill tests run a writer in a subprocess that rewrites one target in a loop, alternating between two
versions, and kill it at random moments; the reader must then see one whole version (or, for the index, a
refusal that names the fix), never a mix.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swift_ssid.cli import main
from swift_ssid.core.index import INDEX_FILE, IdentifierIndex, build_index
from swift_ssid.core.runs import read_run

REPO_ROOT = Path(__file__).resolve().parents[1]
KILLS = 5


def _results(path: Path, n: int, shared_every: int = 0) -> Path:
    """A ``swift infer`` result file of ``n`` images; every ``shared_every``-th repeats the previous identifier."""
    rows = []
    for i in range(n):
        ident = f"thing {i - 1 if shared_every and i % shared_every == 0 and i else i} - place"
        rows.append({"response": f"caption:c\nidentifier:{ident}\nreason:r", "images": [{"path": f"img{i}.jpg"}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------- 4. the index folder is one unit


def test_index_mixed_from_two_builds_is_refused(tmp_path):
    """The case seen: rebuilt with --collisions disambiguate, killed before the meta file: it loaded as shared."""
    results = _results(tmp_path / "r.jsonl", 30, shared_every=3)
    build_index(results, tmp_path / "index", check_images=False)  # shared
    build_index(results, tmp_path / "new", collisions="disambiguate", check_images=False)
    shutil.copy(tmp_path / "new" / INDEX_FILE, tmp_path / "index" / INDEX_FILE)  # the new rows, the old meta
    with pytest.raises(ValueError, match=r"mixes two builds.*rebuild the index with `swift-ssid build-index`"):
        IdentifierIndex.load(tmp_path / "index")


def test_stats_from_another_build_are_refused(tmp_path):
    from swift_ssid.core.index import STATS_FILE, read_stats

    build_index(_results(tmp_path / "a.jsonl", 5), tmp_path / "index", check_images=False)
    assert read_stats(tmp_path / "index")["images"] == 5
    build_index(_results(tmp_path / "b.jsonl", 7), tmp_path / "new", check_images=False)
    shutil.copy(tmp_path / "new" / STATS_FILE, tmp_path / "index" / STATS_FILE)
    with pytest.raises(ValueError, match="mixes two builds"):
        read_stats(tmp_path / "index")


# ---------------------------------------------------------------- kill -9 during each writer

WRITER = textwrap.dedent(
    """
    import sys
    {setup}
    flip = 0
    while True:
        {write}
        if flip == 1:
            print("ready", flush=True)
        flip += 1
    """
)


def _kill_repeatedly(setup: str, write: str, check, cwd: Path, max_delay: float = 0.4) -> None:
    """Start the writer ``KILLS`` times, SIGKILL it at a random moment after its second write, then ``check()``."""
    script = WRITER.format(setup=setup, write=write)
    rng = random.Random(0)
    for _ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=cwd,
            stdout=subprocess.PIPE,
            env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        )
        try:
            assert proc.stdout.readline().strip() == b"ready", "the writer died before its second write"
            time.sleep(rng.uniform(0, max_delay))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        check()
    leftovers = [p.name for p in cwd.rglob(".*.tmp")]
    assert len(leftovers) <= KILLS  # a killed writer may leave its temp file, never a torn target


def test_kill_during_build_index_leaves_old_or_new_or_a_refusal(tmp_path):
    _results(tmp_path / "a.jsonl", 1500, shared_every=3)
    results_a = tmp_path / "a.jsonl"
    build_index(results_a, tmp_path / "want_a", check_images=False)
    build_index(results_a, tmp_path / "want_b", collisions="disambiguate", check_images=False)
    want = {
        "shared": IdentifierIndex.load(tmp_path / "want_a").entries,
        "disambiguate": IdentifierIndex.load(tmp_path / "want_b").entries,
    }
    seen = {"ok": 0, "refused": 0}

    def check() -> None:
        try:
            index = IdentifierIndex.load(tmp_path / "index")
        except ValueError as e:
            assert "rebuild the index" in str(e)
            seen["refused"] += 1
            return
        assert index.entries == want[index.policy]  # the rows of the build the meta describes
        seen["ok"] += 1

    _kill_repeatedly(
        "from swift_ssid.core.index import build_index",
        "build_index('a.jsonl', 'index', collisions=('shared', 'disambiguate')[flip % 2], check_images=False)",
        check,
        tmp_path,
    )
    assert seen["ok"] >= 1


def test_kill_during_run_file_writes_leaves_whole_rows(tmp_path):
    """Both run-file writers: the atomic rewrite (old or new file) and the resumable append (whole rows)."""
    setup = textwrap.dedent(
        """
        import os
        from swift_ssid.core.jsonl import append_jsonl
        from swift_ssid.core.runs import RunRow, write_run
        def rows(tag, n):
            return [RunRow(f"{tag}{i}", "q" * 200, ["a.jpg"], [f"id {i}"], [-1.0], [None], ["a.jpg"]) for i in range(n)]
        A, B = rows("a", 3000), rows("b", 2000)
        """
    )
    seen: set[int] = set()

    def check_rewrite() -> None:
        rows = read_run(tmp_path / "run.jsonl")
        assert len(rows) in (3000, 2000) and len({r.query_id[0] for r in rows}) == 1
        seen.add(len(rows))

    _kill_repeatedly(setup, "write_run('run.jsonl', (A, B)[flip % 2])", check_rewrite, tmp_path)

    from swift_ssid.core.jsonl import iter_jsonl
    from swift_ssid.integration.retrieval import done_query_ids

    def check_append() -> None:
        lines = list(iter_jsonl(tmp_path / "append.jsonl"))
        broken = [n for n, _, error in lines if error is not None]
        assert len(broken) <= KILLS  # at most one torn last line per kill, each reported and skipped
        done = done_query_ids(tmp_path / "append.jsonl", {})  # resume: drops torn lines, keeps whole rows
        assert len(done) == len(lines) - len(broken)
        assert all(error is None for _, _, error in iter_jsonl(tmp_path / "append.jsonl"))

    _kill_repeatedly(
        setup,
        "[append_jsonl('append.jsonl', {**r.to_dict(), 'query_id': f'{os.getpid()}-{flip}-{i}'}) "
        "for i, r in enumerate(A[:50])]",
        check_append,
        tmp_path,
    )


def test_kill_during_report_leaves_old_or_new_page(tmp_path):
    setup = textwrap.dedent(
        """
        from swift_ssid.core.index import IdentifierIndex, IndexEntry
        from swift_ssid.core.runs import RunRow
        from swift_ssid.reporting.report import write_report
        index = IdentifierIndex([IndexEntry(f"i{i}.jpg", f"thing {i}", "ok") for i in range(120)])
        rows = [RunRow(f"q{i}", "x" * 500, [f"i{i}.jpg"], [f"thing {i}"], [-1.0], [None], [f"i{i}.jpg"])
                for i in range(120)]
        def page(title):
            write_report("report.html", rows, index, title=title, max_cases=120)
        """
    )
    seen: set[str] = set()

    def check() -> None:
        text = (tmp_path / "report.html").read_text(encoding="utf-8")
        assert text.rstrip().endswith("</html>")
        titles = {t for t in ("TITLE-A", "TITLE-B") if t in text}
        assert len(titles) == 1
        seen.update(titles)

    _kill_repeatedly(setup, "page(('TITLE-A', 'TITLE-B')[flip % 2])", check, tmp_path)


# ---------------------------------------------------------------- build-index on random bytes

GOOD = [
    {"response": f"caption:c\nidentifier:word{i} - place\nreason:r", "images": [{"path": f"good{i}.jpg"}]}
    for i in range(6)
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    junk=st.lists(st.binary(max_size=80).map(lambda b: b.replace(b"\n", b" ")), max_size=12),
    keep=st.lists(st.booleans(), min_size=len(GOOD), max_size=len(GOOD)),
    seed=st.integers(0, 2**16),
)
def test_build_index_on_random_bytes_never_tracebacks_and_keeps_good_rows(tmp_path_factory, capsys, junk, keep, seed):
    root = tmp_path_factory.mktemp("fuzz")
    good = [row for row, k in zip(GOOD, keep, strict=True) if k]
    lines = [json.dumps(row).encode() for row in good] + junk
    random.Random(seed).shuffle(lines)
    (root / "r.jsonl").write_bytes(b"\n".join(lines) + (b"\n" if seed % 2 else b""))
    code = main(["build-index", str(root / "r.jsonl"), "--no-check-images", "--out", str(root / "index")])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if not good:
        assert code == 2 and err.count("\n") == 1
        return
    assert code == 0
    index = IdentifierIndex.load(root / "index")
    for row in good:
        image = row["images"][0]["path"]
        assert index.identifier_for(image) == row["response"].split("identifier:")[1].split("\n")[0]


def test_hand_edited_stats_of_a_kind_index_are_refused_like_build_index_ones(tmp_path):
    from swift_ssid.core.collection import load_collection
    from swift_ssid.core.index import STATS_FILE, read_stats
    from swift_ssid.core.kinds import indexed_items, numeric_identifiers, write_kind_index
    from swift_ssid.testing.tiny_models import DEMO_DIR

    items = indexed_items(load_collection(DEMO_DIR / "collection.jsonl"))
    write_kind_index("numeric", items, numeric_identifiers(len(items)), tmp_path / "kind", {})
    stats = read_stats(tmp_path / "kind")
    assert stats["kind"] == "numeric" and stats["images"] == len(items)
    (tmp_path / "kind" / STATS_FILE).write_text(json.dumps({**stats, "images": 1}))
    with pytest.raises(ValueError, match="mixes two builds"):
        read_stats(tmp_path / "kind")
