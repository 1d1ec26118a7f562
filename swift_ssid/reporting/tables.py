"""Tables of R@K in the paper's layout: one row per run (or per setting), R@1/R@5/R@10 in percent.

The paper's tables (I-IV) give R@1, R@5 and R@10 in percent with one decimal and bold the best
value of each column; :func:`to_markdown` does the same, :func:`to_csv` writes the same numbers
without markup. Every number comes from :func:`swift_ssid.core.metrics.evaluate_run`.

Example::

    | Run | R@1 | R@5 | R@10 | n |
    | --- | ---: | ---: | ---: | ---: |
    | w/ reason | **47.3** | **65.1** | **68.2** | 1000 |
    | w/o reason | 44.3 | 64.5 | 67.4 | 1000 |
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from swift_ssid.core.jsonl import write_bytes_atomic
from swift_ssid.core.metrics import DEFAULT_KS, check_ks, evaluate_run
from swift_ssid.core.runs import RunRow, read_run


@dataclass
class TableRow:
    """One line of a results table.

    Attributes:
        name: the row label (run name, or setting value).
        metrics: :func:`swift_ssid.core.metrics.evaluate_run`'s dict for the row's queries.
        source: where the rows came from (file path, plus the setting when grouped).
    """

    name: str
    metrics: dict[str, Any]
    source: str


def format_percent(fraction: float) -> str:
    """A fraction as a percentage with one decimal, rounding halves up: ``0.4725 -> "47.3"``.

    Rounds the shortest decimal form of the float (``repr``), so 0.4725 gives 47.3 although its
    binary value is slightly below 0.4725.
    """
    return str((Decimal(repr(float(fraction))) * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def group_by_setting(rows: Sequence[RunRow], key: str, source: str = "run") -> dict[str, list[RunRow]]:
    """Split a run's rows by the value of ``row.setting[key]`` (labels in first-seen order).

    Raises:
        ValueError: a row has no such setting.
    """
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        if key not in row.setting:
            present = sorted(row.setting)
            raise ValueError(
                f"{source}: query {row.query_id!r} has no setting {key!r} (its settings: {present}); "
                f"write setting.{key} for every row or drop --by"
            )
        groups.setdefault(_label(row.setting[key]), []).append(row)
    return groups


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def summarize_runs(
    runs: Sequence[tuple[str, Sequence[RunRow]]], by: str | None = None, ks: Iterable[int] = DEFAULT_KS
) -> list[TableRow]:
    """Evaluate named runs into table rows.

    Args:
        runs: ``(name, rows)`` pairs, one per run.
        by: a ``setting`` key; when given, each run is split by that setting's value and each
            value gets its own row. Rows are named by the value alone when no value occurs in two
            runs (one run, or one run file per language / N / reason mode), else ``"name: value"``.
        ks: cut-offs.

    Returns:
        One :class:`TableRow` per run (or per run and setting value), in input order; rows named by
        numeric values alone (e.g. ``n_train``) come in ascending order.
    """
    ks = check_ks(ks)
    table: list[TableRow] = []
    if by is None:
        return [TableRow(name, evaluate_run(rows, ks), name) for name, rows in runs]
    groups = [(name, value, group) for name, rows in runs for value, group in group_by_setting(rows, by, name).items()]
    values = [value for _, value, _ in groups]
    by_value = len(set(values)) == len(values)
    for name, value, group in groups:
        label = value if by_value else f"{name}: {value}"
        table.append(TableRow(label, evaluate_run(group, ks), f"{name} [{by}={value}]"))
    raw = [group[0].setting[by] for _, _, group in groups]
    if by_value and raw and all(_is_number(v) for v in raw):
        order = sorted(range(len(table)), key=lambda i: raw[i])
        table = [table[i] for i in order]
    return table


def summarize_run_files(
    paths: Sequence[str | os.PathLike],
    names: Sequence[str] | None = None,
    by: str | None = None,
    ks: Iterable[int] = DEFAULT_KS,
) -> list[TableRow]:
    """Read run files and evaluate them into table rows.

    Args:
        paths: run files.
        names: one label per file (default: each file's stem).
        by: a ``setting`` key to split each file by (see :func:`summarize_runs`).
        ks: cut-offs.

    Raises:
        ValueError: ``names`` does not match ``paths`` in length, or a run is invalid.
    """
    if not paths:
        raise ValueError("no run file given; pass at least one RUN.jsonl")
    if names is not None and len(names) != len(paths):
        raise ValueError(f"got {len(names)} names for {len(paths)} run files; give one name per file")
    labels = list(names) if names is not None else [Path(p).stem for p in paths]
    return summarize_runs([(label, read_run(p)) for label, p in zip(labels, paths, strict=True)], by=by, ks=ks)


def _best(table: Sequence[TableRow], column: str) -> float:
    return max(row.metrics[column] for row in table)


def to_markdown(
    table: Sequence[TableRow],
    ks: Iterable[int] = DEFAULT_KS,
    first_column: str = "Run",
    title: str | None = None,
    bold_best: bool = True,
) -> str:
    """A Markdown table: R@K in percent with one decimal, the best of each column in bold (as in the paper).

    Args:
        table: rows from :func:`summarize_runs`.
        ks: the R@K columns to show (each must have been evaluated).
        first_column: header of the label column.
        title: optional line above the table.
        bold_best: bold the best value of each column (only with two rows or more).

    Returns:
        The table, ending with a newline.
    """
    ks = check_ks(ks)
    columns = [f"R@{k}" for k in ks]
    lines = [f"{title}\n"] if title else []
    lines.append("| " + " | ".join([first_column, *columns, "n"]) + " |")
    lines.append("| --- |" + " ---: |" * (len(columns) + 1))
    best = {c: _best(table, c) for c in columns} if bold_best and len(table) > 1 else {}
    for row in table:
        cells = [row.name.replace("|", "\\|")]
        for c in columns:
            text = format_percent(row.metrics[c])
            cells.append(f"**{text}**" if c in best and row.metrics[c] == best[c] else text)
        cells.append(str(row.metrics["n_queries"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_table(
    table: Sequence[TableRow],
    out_path: str | os.PathLike,
    ks: Iterable[int] = DEFAULT_KS,
    x_label: str = "run",
    title: str | None = None,
) -> Path:
    """Plot R@K (percent) of each table row as a PNG: one line per K, rows along x (as the paper's Fig. 3).

    When every row label is a number (``--by n_train``) the x axis is numeric (rows sorted by it),
    otherwise the rows are evenly spaced categories in table order.

    Args:
        table: rows from :func:`summarize_runs`.
        out_path: the PNG to write (folders created; written atomically).
        ks: the R@K curves to draw (each must have been evaluated).
        x_label: the x axis title (e.g. the ``--by`` key).
        title: optional plot title.

    Returns:
        ``out_path`` as a Path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ks = check_ks(ks)
    if not table:
        raise ValueError("nothing to plot: the table has no rows")
    rows = list(table)
    try:
        xs: list[float] = [float(row.name) for row in rows]
        numeric = True
    except ValueError:
        numeric = False
    if numeric:
        order = sorted(range(len(rows)), key=lambda i: xs[i])
        rows, xs = [rows[i] for i in order], [xs[i] for i in order]
    else:
        xs = list(range(len(rows)))
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for k in ks:
        ys = [100 * row.metrics[f"R@{k}"] for row in rows]
        ax.plot(xs, ys, marker="o", label=f"R@{k}")
    ax.set_xticks(xs, [row.name for row in rows])  # a tick per row: its N, language or run name
    ax.set_xlabel(x_label)
    ax.set_ylabel("R@K (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    out = Path(out_path)
    write_bytes_atomic(out, lambda f: fig.savefig(f, format="png"))
    return out


def to_csv(table: Sequence[TableRow], ks: Iterable[int] = DEFAULT_KS, first_column: str = "run") -> str:
    """CSV with the same numbers as :func:`to_markdown` (percent, one decimal) plus ``n_queries``."""
    ks = check_ks(ks)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([first_column, *(f"R@{k}" for k in ks), "n_queries"])
    for row in table:
        writer.writerow([row.name, *(format_percent(row.metrics[f"R@{k}"]) for k in ks), row.metrics["n_queries"]])
    return buf.getvalue()
