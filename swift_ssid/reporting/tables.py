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
from swift_ssid.core.metrics import DEFAULT_KS, RunMetrics, check_ks, evaluate_run
from swift_ssid.core.runs import RunRow, read_run


@dataclass
class TableRow:
    """One line of a results table.

    Attributes:
        name: the row label (run name, or setting value).
        metrics: :func:`swift_ssid.core.metrics.evaluate_run` of the row's queries.
        source: where the rows came from (file path, plus the setting when grouped).
    """

    name: str
    metrics: RunMetrics
    source: str


def format_percent(fraction: float) -> str:
    """A fraction as a percentage with one decimal, rounding halves up: ``0.4725 -> "47.3"``.

    Rounds the shortest decimal form of the float (``repr``), so 0.4725 gives 47.3 although its
    binary value is slightly below 0.4725.
    """
    return str((Decimal(repr(float(fraction))) * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def format_metrics(metrics: RunMetrics, run: str, note: str | None = None) -> str:
    """The metrics of one run as aligned text lines (``R@1    47.3%``: percent, one decimal, as the paper)."""
    lines = [f"run: {run}", f"metric: {metrics.metric}", f"queries: {metrics.n_queries}"]
    if note:
        lines.append(f"note: {note}")
    lines += [f"{f'R@{k}':<6}{format_percent(metrics.r_at(k)):>6}%" for k in metrics.ks]
    lines.append(f"unknown identifiers: {format_percent(metrics.unknown_identifier_rate or 0.0)}%")
    return "\n".join(lines)


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
    return max(row.metrics.column(column) for row in table)


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
            text = format_percent(row.metrics.column(c))
            cells.append(f"**{text}**" if c in best and row.metrics.column(c) == best[c] else text)
        cells.append(str(row.metrics.n_queries))
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
        ys = [100 * row.metrics.r_at(k) for row in rows]
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
        writer.writerow([row.name, *(format_percent(row.metrics.r_at(k)) for k in ks), row.metrics.n_queries])
    return buf.getvalue()


# ---------------------------------------------------------------- Tables I and II: one row per identifier kind

TABLE_I_KINDS = ("numeric", "string", "semantic", "structured", "ssid", "caption-derived")
"""Table I: identifiers without new vocabulary (caption-derived is ours, a labelled fallback, not in the paper)."""
TABLE_II_KINDS = ("atomic", "image-tokenization", "ssid")
"""Table II: vocabulary-extending identifiers against SSID."""


def _kind_info(name: str) -> Any:
    from swift_ssid.core.kinds import KINDS

    return KINDS.get(name)


def _method(name: str) -> str:
    info = _kind_info(name)
    return info.title if info is not None else name


def _cells(metrics: RunMetrics | None, ks: Sequence[int], best: dict[str, float] | None = None) -> list[str]:
    out = []
    for k in ks:
        value = None if metrics is None else metrics.hit_rate.get(k)
        if value is None:
            out.append("–")
            continue
        text = format_percent(value)
        out.append(f"**{text}**" if best and value == best.get(f"R@{k}") else text)
    return out


def _paper_cells(values: tuple[float, float, float] | None, ks: Sequence[int]) -> list[str]:
    """The paper's numbers as it prints them (0.03 stays 0.03), "–" where it has none."""
    if values is None:
        return ["–"] * len(ks)
    by_k = dict(zip(DEFAULT_KS, values, strict=True))
    return [str(by_k[k]) if k in by_k else "–" for k in ks]


def kind_tables(
    table: Sequence[TableRow],
    ks: Iterable[int] = DEFAULT_KS,
    reference: bool = True,
    model: str = "this model",
    collection: str = "this collection",
) -> str:
    """Tables I and II of the paper from rows labelled by ``setting.kind`` (``swift-ssid table --by kind``).

    Table I holds the kinds that add no vocabulary (numeric, string, semantic, structured, SSID; caption-derived
    when run, labelled as ours), Table II the vocabulary-extending ones against SSID (atomic; image tokenisation
    only as a paper row). With ``reference`` the paper's numbers (Flamingo; Flickr30K and MS-COCO 5K for Table I,
    Flickr30K and three MLLMs for Table II) follow as labelled tables in the paper's own layout.

    Args:
        table: rows from :func:`summarize_runs` with ``by="kind"``.
        ks: R@K columns.
        reference: add the paper's tables.
        model: the model label for Table II's ``Models`` column.
        collection: the collection label in the titles.

    Returns:
        Markdown text.
    """
    from swift_ssid.core.kinds import KINDS, PAPER_SSID_TABLE_II

    ks = check_ks(ks)
    rows = {row.name: row for row in table}
    unknown = [name for name in rows if name not in KINDS]
    cols = [f"R@{k}" for k in ks]
    out: list[str] = []

    def body(kinds: Sequence[str], with_model: bool) -> list[str]:
        present = [rows[k] for k in kinds if k in rows] + ([rows[k] for k in unknown] if not with_model else [])
        best = {c: _best(present, c) for c in cols} if len(present) > 1 else {}
        lines = ["| Methods |" + (" Models |" if with_model else "") + "".join(f" {c} |" for c in cols) + " n |"]
        lines.append("| --- |" + (" --- |" if with_model else "") + " ---: |" * (len(cols) + 1))
        for row in present:
            label = _method(row.name).replace("|", "\\|")
            cells = [label, *([model] if with_model else []), *_cells(row.metrics, ks, best)]
            lines.append("| " + " | ".join(cells) + f" | {row.metrics.n_queries} |")
        return lines

    out.append(f"Table I: identifiers without new vocabulary ({collection}, {model})\n")
    out += body(TABLE_I_KINDS, with_model=False)
    out.append("")
    out.append(f"Table II: vocabulary-extending identifiers vs SSID ({collection})\n")
    out += body(TABLE_II_KINDS, with_model=True)
    if reference:
        paper_ks = [k for k in ks if k in DEFAULT_KS]
        pcols = [f"R@{k}" for k in paper_ks]
        out.append("")
        out.append("Reference, the paper's Table I (Flamingo; not this run)\n")
        out.append(
            "| Methods |" + "".join(f" Flickr30K {c} |" for c in pcols) + "".join(f" MS-COCO {c} |" for c in pcols)
        )
        out.append("| --- |" + " ---: |" * (2 * len(pcols)))
        for name in TABLE_I_KINDS:
            info = KINDS[name]
            if not info.paper_table:
                continue
            cells = _paper_cells(info.paper_flickr, paper_ks) + _paper_cells(info.paper_coco, paper_ks)
            out.append(f"| {info.title} | " + " | ".join(cells) + " |")
        out.append("")
        out.append("Reference, the paper's Table II (Flickr30K; not this run)\n")
        out.append("| Methods | Models |" + "".join(f" {c} |" for c in pcols))
        out.append("| --- | --- |" + " ---: |" * len(pcols))
        for name in ("atomic", "image-tokenization"):
            info = KINDS[name]
            out.append(f"| {info.title} | flamingo | " + " | ".join(_paper_cells(info.paper_flickr, paper_ks)) + " |")
        for model_name, values in PAPER_SSID_TABLE_II.items():
            out.append(f"| SSID | {model_name} | " + " | ".join(_paper_cells(values, paper_ks)) + " |")
    return "\n".join(out) + "\n"


def kind_tables_csv(
    table: Sequence[TableRow], ks: Iterable[int] = DEFAULT_KS, reference: bool = True, model: str = "this model"
) -> str:
    """CSV of :func:`kind_tables`: ``table,kind,method,source,model,collection,R@K...,n_queries`` (percent)."""
    from swift_ssid.core.kinds import KINDS, PAPER_SSID_TABLE_II

    ks = check_ks(ks)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["table", "kind", "method", "source", "model", "collection", *(f"R@{k}" for k in ks), "n_queries"])

    def pct(metrics: RunMetrics | None, k: int) -> str:
        value = None if metrics is None else metrics.hit_rate.get(k)
        return "" if value is None else format_percent(value)

    for row in table:
        info = KINDS.get(row.name)
        which = "II" if row.name in ("atomic", "image-tokenization") else "I"
        title = info.title if info else row.name
        cells = [pct(row.metrics, k) for k in ks]
        writer.writerow([which, row.name, title, "this run", model, "", *cells, row.metrics.n_queries])
    if reference:
        for name, info in KINDS.items():
            if not info.paper_table:
                continue
            for collection, values in (("Flickr30K", info.paper_flickr), ("MS-COCO 5K", info.paper_coco)):
                if values is not None:
                    cells = [c.replace("–", "") for c in _paper_cells(values, ks)]
                    writer.writerow([info.paper_table, name, info.title, "paper", "flamingo", collection, *cells, ""])
        for model_name, values in PAPER_SSID_TABLE_II.items():
            cells = [c.replace("–", "") for c in _paper_cells(values, ks)]
            writer.writerow(["II", "ssid", "SSID", "paper", model_name, "Flickr30K", *cells, ""])
    return buf.getvalue()


# ---------------------------------------------------------------- identifier quality next to R@K

QUALITY_HEADERS: tuple[str, ...] = (
    "distinct %",
    "largest group",
    "sentence-like %",
    "words",
    "tokens",
    "BM25 R@1",
    "emb R@1",
    "margin",
    "trie nodes",
    "root fan-out",
)
"""Quality columns of ``swift-ssid table --quality``; definitions in :mod:`swift_ssid.core.quality`."""


def quality_cells(report: Any) -> list[str]:
    """The :data:`QUALITY_HEADERS` cells of a :class:`swift_ssid.core.quality.QualityReport` ("–": not measured)."""
    u, c, length = report.uniqueness, report.conformity, report.length
    d, s, t = report.discriminability, report.consistency, report.trie
    dash = "–"
    return [
        format_percent(u.distinct_share),
        str(u.largest_group),
        format_percent(c.sentence_like_share),
        f"{length.words.mean:.1f}" if length.words.mean is not None else dash,
        f"{length.tokens.mean:.1f}" if length.tokens is not None and length.tokens.mean is not None else dash,
        format_percent(d.bm25["R@1"]) if d is not None and d.bm25 else dash,
        format_percent(d.embedder["R@1"]) if d is not None and d.embedder else dash,
        f"{s.mean_margin:.3f}" if s is not None else dash,
        str(t.nodes) if t is not None else dash,
        str(t.fanout_root) if t is not None else dash,
    ]


def load_quality_files(items: Sequence[str]) -> dict[str, Any]:
    """Read ``[NAME=]quality.json`` items into row label -> QualityReport.

    A plain file is labelled by the kind it records (``meta.kind``), else by its stem.

    Raises:
        ValueError: a file is not a quality report, or two files get the same label.
    """
    from swift_ssid.core.quality import QualityReport

    out: dict[str, Any] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = "", item
        report = QualityReport.load(path)
        label = name or str(report.meta.get("kind") or Path(path).stem)
        if label in out:
            raise ValueError(f"two quality files are labelled {label!r}; write them as NAME=FILE")
        out[label] = report
    return out


def quality_markdown(table: Sequence[TableRow], qualities: dict[str, Any], ks: Iterable[int] = DEFAULT_KS) -> str:
    """R@K next to the identifier-quality columns, one line per table row (row labels match quality labels).

    Rows without a quality report (dense, hybrid) show "–" in the quality columns; a quality report without
    a table row is listed with "–" for R@K, so an index can be judged before it is trained on.
    """
    ks = check_ks(ks)
    cols = [f"R@{k}" for k in ks]
    lines = ["Identifier quality next to R@K (definitions: docs/quality-dense-hybrid.md)\n"]
    lines.append("| Row | " + " | ".join([*cols, *QUALITY_HEADERS]) + " |")
    lines.append("| --- |" + " ---: |" * (len(cols) + len(QUALITY_HEADERS)))
    names = [row.name for row in table] + [name for name in qualities if name not in {r.name for r in table}]
    by_name = {row.name: row for row in table}
    for name in names:
        row = by_name.get(name)
        recall = [format_percent(row.metrics.r_at(k)) for k in ks] if row is not None else ["–"] * len(cols)
        quality = quality_cells(qualities[name]) if name in qualities else ["–"] * len(QUALITY_HEADERS)
        lines.append("| " + " | ".join([name.replace("|", "\\|"), *recall, *quality]) + " |")
    return "\n".join(lines) + "\n"
