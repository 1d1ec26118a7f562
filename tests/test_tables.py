"""Tables in the paper's layout, and the `evaluate` / `table` commands end to end on real files."""

from __future__ import annotations

import json

import pytest

from swift_ssid.cli import main
from swift_ssid.core.runs import RunRow, write_run
from swift_ssid.reporting.tables import format_percent, summarize_run_files, summarize_runs, to_csv, to_markdown


def ranked_row(query_id: str, hit_rank: int | None, setting: dict | None = None) -> RunRow:
    """A row whose gold image sits at image rank ``hit_rank`` (or nowhere) among 10 retrieved images."""
    gold = f"{query_id}.jpg"
    images = [f"other{i}.jpg" for i in range(10)]
    if hit_rank is not None:
        images[hit_rank - 1] = gold
    identifiers = [f"id {image}" for image in images]
    return RunRow(
        query_id, f"caption {query_id}", [gold], identifiers, [0.0] * 10, [None] * 10, images, [], setting or {}
    )


# Hit ranks 1, 1, 3, none -> R@1 50.0, R@5 75.0, R@10 75.0.
RUN_A = [ranked_row("a1", 1), ranked_row("a2", 1), ranked_row("a3", 3), ranked_row("a4", None)]
# Hit ranks 1, none, none, 7 -> R@1 25.0, R@5 25.0, R@10 50.0.
RUN_B = [ranked_row("b1", 1), ranked_row("b2", None), ranked_row("b3", None), ranked_row("b4", 7)]


@pytest.mark.parametrize(
    ("fraction", "text"),
    [
        (0.4725, "47.3"),
        (1 / 3, "33.3"),
        (2 / 3, "66.7"),
        (0.0, "0.0"),
        (1.0, "100.0"),
        (0.0005, "0.1"),
        (0.00049, "0.0"),
    ],
)
def test_format_percent_one_decimal_half_up(fraction, text):
    assert format_percent(fraction) == text


def test_markdown_table_bolds_the_best_of_each_column():
    table = summarize_runs([("w/ reason", RUN_A), ("w/o reason", RUN_B)])
    assert to_markdown(table, title="Reason ablation") == (
        "Reason ablation\n\n"
        "| Run | R@1 | R@5 | R@10 | n |\n"
        "| --- | ---: | ---: | ---: | ---: |\n"
        "| w/ reason | **50.0** | **75.0** | **75.0** | 4 |\n"
        "| w/o reason | 25.0 | 25.0 | 50.0 | 4 |\n"
    )
    assert to_csv(table) == "run,R@1,R@5,R@10,n_queries\nw/ reason,50.0,75.0,75.0,4\nw/o reason,25.0,25.0,50.0,4\n"


def test_group_by_setting_gives_one_row_per_value_in_first_seen_order():
    rows = [
        ranked_row("q1", 1, {"language": "en"}),
        ranked_row("q2", None, {"language": "zh"}),
        ranked_row("q3", 2, {"language": "en"}),
        ranked_row("q4", 1, {"language": "zh"}),
    ]
    table = summarize_runs([("ssid", rows)], by="language", ks=(1, 5))
    assert [(row.name, row.metrics.r_at(1), row.metrics.r_at(5), row.metrics.n_queries) for row in table] == [
        ("en", 0.5, 1.0, 2),
        ("zh", 0.5, 0.5, 2),
    ]
    two_runs = summarize_runs([("a", rows[:2]), ("b", rows[2:])], by="language", ks=(1,))
    assert [row.name for row in two_runs] == ["a: en", "a: zh", "b: en", "b: zh"]
    numeric = summarize_runs([("zs", [ranked_row("q1", 1, {"n_train": 1000})])], by="n_train")
    assert numeric[0].name == "1000"
    with pytest.raises(ValueError, match=r"query 'q1' has no setting 'reason' \(its settings: \['language'\]\)"):
        summarize_runs([("ssid", rows)], by="reason")


def test_summarize_run_files_names_and_errors(tmp_path):
    write_run(tmp_path / "with_reason.jsonl", RUN_A)
    with pytest.raises(ValueError, match="got 2 names for 1 run files"):
        summarize_run_files([tmp_path / "with_reason.jsonl"], names=["a", "b"])
    with pytest.raises(ValueError, match="no run file given"):
        summarize_run_files([])
    assert summarize_run_files([tmp_path / "with_reason.jsonl"])[0].name == "with_reason"


def test_evaluate_command_prints_and_writes_json(tmp_path, capsys):
    write_run(tmp_path / "run.jsonl", RUN_A)
    out_json = tmp_path / "metrics" / "run.json"
    assert main(["evaluate", str(tmp_path / "run.jsonl"), "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "R@1     50.0" in printed and "R@5     75.0" in printed and "R@10    75.0" in printed
    assert "queries: 4" in printed and "unknown identifiers: 0.0%" in printed
    metrics = json.loads(out_json.read_text())
    assert metrics["R@1"] == 0.5 and metrics["R@10"] == 0.75 and metrics["n_queries"] == 4
    assert metrics["metric"] == "image-level hit_rate@k (the paper's R@K)"


def test_evaluate_command_reports_a_bad_file_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query_id": "q1"}\n')
    assert main(["evaluate", str(bad)]) == 2
    assert "bad.jsonl:1: run row lacks key(s)" in capsys.readouterr().err


def test_table_command_markdown_and_csv(tmp_path, capsys):
    write_run(tmp_path / "a.jsonl", RUN_A)
    write_run(tmp_path / "b.jsonl", RUN_B)
    csv_path, md_path = tmp_path / "t.csv", tmp_path / "t.md"
    argv = ["table", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--names", "SSID", "baseline"]
    assert main([*argv, "--csv", str(csv_path), "--markdown", str(md_path)]) == 0
    printed = capsys.readouterr().out
    assert "| SSID | **50.0** | **75.0** | **75.0** | 4 |" in printed
    assert md_path.read_text() == printed
    assert csv_path.read_text().splitlines()[2] == "baseline,25.0,25.0,50.0,4"
    assert main(["table", str(tmp_path / "a.jsonl"), "--names", "x", "y"]) == 2
    assert "got 2 names for 1 run files" in capsys.readouterr().err
