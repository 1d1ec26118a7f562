"""Significance over queries: per-query hits, percentile and paired bootstrap intervals, exact binomial bounds.

Used by ``swift-ssid protocol text`` (and anything comparing two runs on the same queries): a row's R@K gets a 95%
bootstrap interval over its queries, and a paired one says whether two rows' difference is real. Pure numpy/scipy
over :class:`~swift_ssid.core.runs.RunRow`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from swift_ssid.core.metrics import DEFAULT_KS, first_relevant_rank
from swift_ssid.core.runs import RunRow


def hits_at(rows: Sequence[RunRow], ks: Sequence[int] = DEFAULT_KS) -> np.ndarray:
    """Per-query hits: ``[n_queries, len(ks)]`` of 0/1, 1 where a gold image is among the first K images."""
    out = np.zeros((len(rows), len(ks)), dtype=np.float64)
    for i, row in enumerate(rows):
        rank = first_relevant_rank(row.images, row.gold_images)
        if rank is not None:
            out[i] = [rank <= k for k in ks]
    return out


def bootstrap_interval(hits: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> np.ndarray:
    """Percentile bootstrap interval of the mean of each column, resampling rows (queries) with replacement.

    Args:
        hits: ``[n_queries, n_columns]`` per-query values (e.g. :func:`hits_at`); a 1-D array is one column.
        n_boot: resamples.
        seed: numpy seed (the same seed resamples the same queries for every row, so rows are comparable).
        level: coverage.

    Returns:
        ``[n_columns, 2]``: lower and upper bounds.

    Example:
        >>> bootstrap_interval(np.ones((10, 1))).tolist()
        [[1.0, 1.0]]
    """
    hits = np.asarray(hits, dtype=np.float64)
    hits = hits[:, None] if hits.ndim == 1 else hits
    if hits.shape[0] == 0:
        raise ValueError("bootstrap_interval: no queries")
    idx = np.random.default_rng(seed).integers(0, hits.shape[0], size=(n_boot, hits.shape[0]))
    means = hits[idx].mean(axis=1)  # [n_boot, n_columns]
    tail = (1.0 - level) / 2
    return np.stack([np.quantile(means, tail, axis=0), np.quantile(means, 1 - tail, axis=0)], axis=1)


def paired_difference(
    a: Sequence[RunRow], b: Sequence[RunRow], ks: Sequence[int] = DEFAULT_KS, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """R@K of ``a`` minus ``b`` over their common queries, with a paired bootstrap interval (same resamples).

    Returns:
        ``{"n": queries, "R@K": {"diff", "low", "high", "real"}}``; ``real`` is True when the interval excludes 0.
    """
    by_b = {row.query_id: row for row in b}
    pairs = [(row, by_b[row.query_id]) for row in a if row.query_id in by_b]
    if not pairs:
        raise ValueError("paired_difference: the runs share no query")
    diff = hits_at([p for p, _ in pairs], ks) - hits_at([q for _, q in pairs], ks)
    bounds = bootstrap_interval(diff, n_boot, seed)
    out: dict[str, Any] = {"n": len(pairs)}
    for j, k in enumerate(ks):
        low, high = float(bounds[j, 0]), float(bounds[j, 1])
        out[f"R@{k}"] = {"diff": float(diff[:, j].mean()), "low": low, "high": high, "real": low > 0 or high < 0}
    return out


def usable_upper_bound(usable: int, n: int, level: float = 0.95) -> float:
    """One-sided upper ``level`` Clopper-Pearson bound of a usable share seen as ``usable`` of ``n``.

    >>> round(usable_upper_bound(0, 10), 3)  # 0 of 10: the share is below 26% at 95%
    0.259
    >>> usable_upper_bound(10, 10)
    1.0
    """
    from scipy.stats import beta

    return 1.0 if usable >= n else float(beta.ppf(level, usable + 1, n - usable))


def training_answer_share(rows: Sequence[RunRow], train_images: set[str]) -> float | None:
    """Share of queries (with any answer) whose first answer image is a training image; None when none answered."""
    firsts = [row.images[0] for row in rows if row.images]
    return sum(image in train_images for image in firsts) / len(firsts) if firsts else None
