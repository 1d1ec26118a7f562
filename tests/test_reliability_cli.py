"""Reliability of the ``swift-ssid`` commands (issue 9): output paths (1), undecodable bytes (2), file modes (5),
a report against the wrong index (6), retrieve failing before the model loads (11), one exit-code policy (12).

Commands run in process through :func:`swift_ssid.cli.main` (the exit status is its return value); the policy
test also runs ``python -m swift_ssid.cli`` to see exactly what a user sees on stderr.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from swift_ssid.cli import main
from swift_ssid.core.index import IdentifierIndex, build_index
from swift_ssid.core.runs import RunRow, expand_identifiers, write_run

IDENTIFIERS = {"a.jpg": "dog - park", "b.jpg": "cat - sofa", "c.jpg": "man - bicycle"}


DEMO = str(Path(__file__).resolve().parents[1] / "swift_ssid" / "data" / "demo" / "collection.jsonl")


def _results(path: Path, identifiers: dict[str, str] = IDENTIFIERS) -> Path:
    rows = [
        {"response": f"caption:x\nidentifier:{ident}\nreason:y", "images": [{"path": image}]}
        for image, ident in identifiers.items()
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def work(tmp_path) -> Path:
    """An index folder ``index``, a run file ``run.jsonl`` made with it, and a queries file ``q.jsonl``."""
    build_index(_results(tmp_path / "results.jsonl"), tmp_path / "index", check_images=False)
    index = IdentifierIndex.load(tmp_path / "index")
    rows = []
    for i, (image, ident) in enumerate(IDENTIFIERS.items()):
        ranked = [ident, "unicorn - moon"]
        images, unknown = expand_identifiers(ranked, index.images_for)
        rows.append(RunRow(f"q{i}", f"query {i}", [image], ranked, [-0.1, -2.0], [None, None], images, unknown))
    write_run(tmp_path / "run.jsonl", rows)
    queries = [{"query_id": f"q{i}", "query": f"query {i}", "gold_images": [im]} for i, im in enumerate(IDENTIFIERS)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    return tmp_path


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.count("\n") == 0, err
    assert err.startswith(f"swift-ssid {command}: error: "), err
    return err


# ---------------------------------------------------------------- 1. output paths


OUTPUT_CASES: list[tuple[str, str, Callable[[Path], list[str]], str]] = [
    # (id, command, argv up to the bad output path given the work folder, what the path should be)
    (
        "build-index",
        "build-index",
        lambda w: ["build-index", str(w / "results.jsonl"), "--no-check-images", "--out"],
        "dir",
    ),
    ("evaluate", "evaluate", lambda w: ["evaluate", str(w / "run.jsonl"), "--json"], "file"),
    ("table --csv", "table", lambda w: ["table", str(w / "run.jsonl"), "--csv"], "file"),
    ("table --markdown", "table", lambda w: ["table", str(w / "run.jsonl"), "--markdown"], "file"),
    ("table --plot", "table", lambda w: ["table", str(w / "run.jsonl"), "--plot"], "file"),
    ("report", "report", lambda w: ["report", str(w / "run.jsonl"), "--index", str(w / "index"), "--out"], "file"),
    ("quality", "quality", lambda w: ["quality", str(w / "index"), "--out"], "file"),
    ("fuse", "fuse", lambda w: ["fuse", str(w / "run.jsonl"), str(w / "run.jsonl"), "--out"], "file"),
    (
        "dense",
        "dense",
        lambda w: [
            "dense",
            "--encoder",
            str(w / "no-encoder"),
            "--collection",
            DEMO,
            "--queries",
            str(w / "q.jsonl"),
            "--k",
            "2",
            "--out",
        ],
        "file",
    ),
    ("identifiers", "identifiers", lambda w: ["identifiers", "numeric", "--collection", DEMO, "--out"], "dir"),
    ("check", "check", lambda w: ["check", DEMO, "--skip-invalid", "--out"], "dir"),
    ("recipe", "recipe", lambda w: ["recipe", "train_qwen2_5_vl", "--collection", DEMO, "--out"], "file"),
    ("run", "run", lambda w: ["run", DEMO, "--model", "unused", "--template", "unused", "--out"], "dir"),
    ("demo", "demo", lambda w: ["demo", "--out"], "dir"),
]


@pytest.mark.parametrize(
    ("command", "make_argv", "kind"), [c[1:] for c in OUTPUT_CASES], ids=[c[0] for c in OUTPUT_CASES]
)
@pytest.mark.parametrize("problem", ["folder_for_file", "file_for_folder", "parent_is_a_file", "unwritable"])
def test_bad_output_path_exits_2_naming_it_and_leaves_nothing(work, capsys, command, make_argv, kind, problem):
    argv = make_argv(work)
    blocker = work / "blocker"
    if problem == "folder_for_file":
        if kind == "dir":
            pytest.skip(f"a folder is what {command} expects")
        target = work / "out_dir"
        target.mkdir()
    elif problem == "file_for_folder":
        if kind == "file":
            pytest.skip("an existing file is replaced, as expected")
        target = work / "out_file"
        target.write_text("keep me")
    elif problem == "parent_is_a_file":
        blocker.write_text("keep me")
        target = blocker / "out"
    else:  # /proc refuses new files even for root, unlike a chmod-ed folder
        target = Path("/proc/swift_ssid_out")
    before = sorted(p.name for p in work.iterdir())
    assert main([*argv, str(target)]) == 2
    err = _one_line_error(capsys, command)
    assert str(target) in err
    assert sorted(p.name for p in work.iterdir()) == before  # no partial or temporary file
    if target.is_file():
        assert target.read_text() == "keep me"


BAD_INPUT_CASES: list[tuple[str, str, Callable[[Path], list[str]], str]] = [
    # (id, command, argv given the work folder, a word the one-line message must hold)
    ("check missing collection", "check", lambda w: ["check", str(w / "none.jsonl")], "none.jsonl"),
    ("check problem rows", "check", lambda w: ["check", str(w / "gone.jsonl")], "--skip-invalid"),
    (
        "recipe unknown name",
        "recipe",
        lambda w: ["recipe", "nonsense", "--collection", DEMO, "--out", str(w / "r.yaml")],
        "train_qwen2_5_vl",
    ),
    (
        "recipe no --collection",
        "recipe",
        lambda w: ["recipe", "train_qwen2_5_vl", "--out", str(w / "r.yaml")],
        "--collection",
    ),
    ("run no --model", "run", lambda w: ["run", DEMO, "--out", str(w / "work")], "model"),
    (
        "run unknown setting",
        "run",
        lambda w: ["run", "--config", str(w / "bad.yaml"), "--out", str(w / "work")],
        "colour",
    ),
    (
        "demo --model without --template",
        "demo",
        lambda w: ["demo", "--model", "m", "--out", str(w / "work")],
        "--template",
    ),
]


@pytest.mark.parametrize(
    ("command", "make_argv", "expected"), [c[1:] for c in BAD_INPUT_CASES], ids=[c[0] for c in BAD_INPUT_CASES]
)
def test_bad_input_exits_2_on_one_line_and_writes_nothing(work, capsys, command, make_argv, expected):
    (work / "bad.yaml").write_text("colour: red\n")
    (work / "gone.jsonl").write_text(json.dumps({"image": "gone.jpg", "captions": ["x"], "split": "test"}) + "\n")
    before = sorted(p.name for p in work.iterdir())
    assert main(make_argv(work)) == 2
    assert expected in _one_line_error(capsys, command)
    assert sorted(p.name for p in work.iterdir()) == before


# ---------------------------------------------------------------- 2. undecodable bytes


def test_undecodable_run_or_queries_names_file_and_line(work, capsys):
    bad = work / "bad.jsonl"
    bad.write_bytes((work / "run.jsonl").read_bytes() + b'{"query_id": "q9", "query": "caf\xe9"}\n')
    for command, argv in [
        ("evaluate", ["evaluate", str(bad)]),
        ("table", ["table", str(bad)]),
        ("report", ["report", str(bad), "--index", str(work / "index"), "--out", str(work / "r.html")]),
    ]:
        assert main(argv) == 2
        assert f"{bad}:4: not UTF-8" in _one_line_error(capsys, command)


# ---------------------------------------------------------------- 5. file modes


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_follow_the_umask(work, umask):
    old = os.umask(umask)
    try:
        out = work / f"out{umask}"
        assert main(["build-index", str(work / "results.jsonl"), "--no-check-images", "--out", str(out / "idx")]) == 0
        assert main(["evaluate", str(work / "run.jsonl"), "--json", str(out / "m.json")]) == 0
        assert main(["table", str(work / "run.jsonl"), "--csv", str(out / "t.csv"), "--plot", str(out / "t.png")]) == 0
        report = ["report", str(work / "run.jsonl"), "--index", str(work / "index"), "--out", str(out / "r.html")]
        assert main(report) == 0
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 8
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_rewriting_a_file_keeps_its_mode(work):
    target = work / "m.json"
    target.write_text("{}")
    target.chmod(0o640)
    assert main(["evaluate", str(work / "run.jsonl"), "--json", str(target)]) == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and json.loads(target.read_text())["n_queries"] == 3


# ---------------------------------------------------------------- 6. report against the wrong index


def test_report_refuses_a_run_made_with_another_index(work, capsys):
    other = {"a.jpg": "dog - park", "b.jpg": "unicorn - moon", "d.jpg": "cat - sofa"}
    build_index(_results(work / "other.jsonl", other), work / "other_index", check_images=False)
    out = work / "r.html"
    assert main(["report", str(work / "run.jsonl"), "--index", str(work / "other_index"), "--out", str(out)]) == 2
    err = _one_line_error(capsys, "report")
    assert "made with another index" in err and "--index" in err
    assert not out.exists()
    assert main(["report", str(work / "run.jsonl"), "--index", str(work / "index"), "--out", str(out)]) == 0


# ---------------------------------------------------------------- 11. fail before the expensive part


@pytest.mark.parametrize(
    ("flag", "make"),
    [
        ("--out", lambda w: ["--out", str(w / "index")]),  # a folder
        ("--index", lambda w: ["--index", str(w / "nowhere")]),
        ("--adapters", lambda w: ["--adapters", str(w / "no-checkpoint")]),
        ("--model", lambda w: ["--model", str(w / "no-model")]),
        ("--queries", lambda w: ["--queries", str(w / "bad.jsonl")]),  # not UTF-8
        ("--max-new-tokens", lambda w: ["--max-new-tokens", "0"]),
    ],
)
def test_retrieve_validates_inputs_before_loading_the_model(work, capsys, monkeypatch, flag, make):
    import swift.infer_engine

    def tripwire(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(swift.infer_engine, "TransformersEngine", tripwire)
    (work / "model").mkdir()
    (work / "bad.jsonl").write_bytes(b'{"query": "caf\xe9", "gold_images": ["a.jpg"]}\n')
    args = {
        "--model": str(work / "model"),
        "--template": "ssid_qwen2_5",
        "--index": str(work / "index"),
        "--queries": str(work / "q.jsonl"),
        "--out": str(work / "run2.jsonl"),
    }
    override = make(work)
    args[override[0]] = override[1]
    assert main(["retrieve", *(x for kv in args.items() for x in kv)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("swift-ssid retrieve: error: ") and (flag in err or override[1] in err), err
    assert not (work / "run2.jsonl").exists()


# ---------------------------------------------------------------- 12. one exit-code policy


def test_exit_codes_user_error_2_bug_1_with_a_line_saying_so(work, monkeypatch, capsys):
    # 2: the user's input or environment, on one line.
    assert main(["evaluate", str(work / "missing.jsonl")]) == 2
    assert "missing.jsonl" in _one_line_error(capsys, "evaluate")
    assert main(["build-index", str(work / "missing.jsonl"), "--out", str(work / "x")]) == 2
    _one_line_error(capsys, "build-index")

    # An OSError a command does not catch itself is still the environment's: exit 2, one line.
    import swift_ssid.cli.evaluate as evaluate

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(work / "m.json"))

    monkeypatch.setattr(evaluate, "write_text_atomic", disk_full)
    assert main(["evaluate", str(work / "run.jsonl"), "--json", str(work / "m.json")]) == 2
    assert "No space left on device" in _one_line_error(capsys, "evaluate")

    # 1: a bug keeps its traceback and says it is one.
    def broken(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(evaluate, "evaluate_run", broken)
    assert main(["evaluate", str(work / "run.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'oops'" in err
    assert err.strip().splitlines()[-1].startswith("swift-ssid evaluate: internal error (a bug in swift_ssid")


def test_exit_code_policy_seen_from_a_shell(work):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cases = [
        (["evaluate", str(work / "run.jsonl")], 0),
        (["evaluate", str(work / "run.jsonl"), "--json", str(work)], 2),
        (["table", str(work / "q.jsonl")], 2),
        (["evaluate", str(work / "index")], 2),  # a folder given as the run file
        (["evaluate"], 2),  # argparse: usage error
    ]
    for argv, code in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "swift_ssid.cli", *argv], capture_output=True, text=True, env=env, timeout=120
        )
        assert proc.returncode == code, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_main_alone_turns_missing_extras_and_failed_steps_into_exit_codes(work, monkeypatch, capsys):
    import swift_ssid.cli.evaluate as evaluate
    import swift_ssid.cli.quality as quality
    import swift_ssid.cli.run as run_command
    from swift_ssid.workflows.pipeline import CollectionError, StageError

    def missing(*args, **kwargs):
        raise ImportError("No module named 'sentence_transformers'")

    # A command that declares its extra: the missing library is the environment's (2), with the extra to install.
    monkeypatch.setattr(quality, "run", missing)
    assert main(["quality", str(work / "index"), "--out", str(work / "q.json")]) == 2
    assert "pip install 'swift-ssid[embed]'" in _one_line_error(capsys, "quality")
    # Any other command: a broken install is a bug (1, traceback kept).
    monkeypatch.setattr(evaluate, "run", missing)
    assert main(["evaluate", str(work / "run.jsonl")]) == 1
    assert "Traceback" in capsys.readouterr().err

    # run names itself in every message: bad input (2), the collection's problem list (2), a failed step (1).
    argv = ["run", DEMO, "--model", "m", "--template", "t", "--out", str(work / "w")]
    for error, code, line in [
        (ValueError("the collection has no test image; give some rows split test"), 2, "error: the collection"),
        (CollectionError("1 problem(s):\nc.jsonl:3: [svg] ...\nfix these rows"), 2, "the collection has problems: 1"),
        (StageError("`swift sft` exited 1; full log: w/logs/3_sft.log"), 1, "a step failed: `swift sft`"),
    ]:

        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(run_command, "run_pipeline", fail)
        assert main(argv) == code
        err = capsys.readouterr().err
        assert err.startswith(f"swift-ssid run: {line}") and "Traceback" not in err, err


def test_protocol_errors_name_the_protocol(work, capsys):
    argv = ["protocol", "multilingual", "--model", "m", "--template", "ssid_qwen2_5", "--index", str(work / "index")]
    q = str(work / "q.jsonl")
    assert main([*argv, "--out", str(work / "p"), "--queries", f"en={q}", f"en={q}"]) == 2
    assert "names a language twice" in _one_line_error(capsys, "protocol multilingual")
