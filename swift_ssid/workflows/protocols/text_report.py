"""The text-side protocol's output: one row per table line, the markdown and CSV tables and the bar plot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from swift_ssid.core.metrics import DEFAULT_KS

if TYPE_CHECKING:  # text.py imports this module
    from swift_ssid.workflows.protocols.text import TextProtocolOptions


@dataclass
class RowResult:
    """One table row: its run, R@K with intervals, chance, the training-answer share and costs."""

    name: str
    kind: str
    run: str
    n: int
    recall: dict[str, float]
    interval: dict[str, list[float]]
    chance: dict[str, float]
    train_answer_share: float | None
    tokens_mean: float | None
    steps: int | None
    train_s: float | None
    retrieve_s_per_query: float | None
    note: str = ""


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def to_markdown(
    rows: Sequence[RowResult], differences: dict[str, Any], o: TextProtocolOptions, n_images: int, n_train: int
) -> str:
    """The table by kind (R@K in percent, 95% bootstrap intervals) and the paired differences."""
    ks = [f"R@{k}" for k in DEFAULT_KS]
    lines = [
        f"Text-side protocol: {n_images} Flickr30K images as text ({n_train} train / {n_images - n_train} test), "
        f"held-out queries = captions 2-5 of the test images; {o.model_label}; {o.tuner}, {o.max_steps} steps\n",
        "| kind | " + " | ".join(f"{k} [95% CI]" for k in ks) + " | chance R@1/5/10 | first answer a training image "
        "| tokens/id | steps | train s | retrieve s/query | n |",
        "| --- |" + " ---: |" * (len(ks) + 7),
    ]
    for r in rows:
        cells = [f"{_pct(r.recall[k])} [{_pct(r.interval[k][0])}, {_pct(r.interval[k][1])}]" for k in ks]
        chance = "/".join(_pct(r.chance[k]) for k in ks)
        tokens = "–" if r.tokens_mean is None else f"{r.tokens_mean:.1f}"
        kind = r.kind.replace("|", "\\|") + (f" ({r.note})" if r.note else "")
        lines.append(
            f"| {kind} | " + " | ".join(cells) + f" | {chance} | {_pct(r.train_answer_share)} | {tokens} | "
            f"{r.steps if r.steps is not None else '–'} | {r.train_s if r.train_s is not None else '–'} | "
            f"{r.retrieve_s_per_query if r.retrieve_s_per_query is not None else '–'} | {r.n} |"
        )
    lines.append("")
    lines.append(
        f"First answer a training image: {100 * n_train / n_images:.0f}% would be unbiased (the training share). "
        "Intervals: percentile bootstrap over held-out queries (same resamples for every row)."
    )
    if differences:
        lines += ["", "Paired differences (percentage points, 95% paired bootstrap; * = interval excludes 0)\n"]
        lines.append("| pair | " + " | ".join(ks) + " | n |")
        lines.append("| --- |" + " ---: |" * (len(ks) + 1))
        for pair, d in differences.items():
            cells = [
                f"{100 * d[k]['diff']:+.1f} [{100 * d[k]['low']:+.1f}, {100 * d[k]['high']:+.1f}]"
                + ("*" if d[k]["real"] else "")
                for k in ks
            ]
            lines.append(f"| {pair} | " + " | ".join(cells) + f" | {d['n']} |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[RowResult]) -> str:
    """One line per row: kind, R@K, interval bounds, chance, training-answer share, tokens, steps, times (fractions)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    ks = [f"R@{k}" for k in DEFAULT_KS]
    header = ["row", "kind"] + [f"{k}{s}" for k in ks for s in ("", "_low", "_high", "_chance")]
    writer.writerow(header + ["train_answer_share", "tokens_mean", "steps", "train_s", "retrieve_s_per_query", "n"])
    for r in rows:
        values = [v for k in ks for v in (r.recall[k], *r.interval[k], r.chance[k])]
        tail = [r.train_answer_share, r.tokens_mean, r.steps, r.train_s, r.retrieve_s_per_query, r.n]
        writer.writerow([r.name, r.kind, *values, *["" if v is None else v for v in tail]])
    return buf.getvalue()


def plot(rows: Sequence[RowResult], path: Path, model_label: str) -> None:
    """Grouped bars of R@1/5/10 per row with their 95% intervals and the chance levels (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [f"R@{k}" for k in DEFAULT_KS]
    x = np.arange(len(rows))
    width = 0.8 / len(ks)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.2))
    for j, k in enumerate(ks):
        values = np.array([100 * r.recall[k] for r in rows])
        low = values - np.array([100 * r.interval[k][0] for r in rows])
        high = np.array([100 * r.interval[k][1] for r in rows]) - values
        ax.bar(x + (j - 1) * width, values, width, yerr=[low, high], capsize=2, label=k)
        if rows:
            ax.axhline(100 * rows[0].chance[k], color=f"C{j}", linestyle="--", linewidth=0.8)
    labels = [f"{r.name}\n(fallback)" if "fallback" in r.kind else r.name for r in rows]
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel("held-out R@K (%), dashed: chance")
    ax.set_title(f"Text-side protocol ({model_label})", fontsize=9)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
