"""Retrieval metrics, stated exactly. The paper's R@K is image-level ``hit_rate@k``.

Notation, for a query q: ``ranked(q)`` is the ranked list of retrieved items with repeats dropped
(first occurrence kept), ``top_k(q)`` its first k items, ``rel(q)`` the set of relevant items, Q the
set of queries in ``relevant``.

* ``hit_rate@k`` (the paper's **R@K**; ranx ``hit_rate@k``; trec_eval ``success_k``)::

      hit_rate@k = 1/|Q| * sum_{q in Q} [ rel(q) ∩ top_k(q) ≠ ∅ ]

* ``recall@k`` (differs from R@K only for queries with several relevant images)::

      recall@k = 1/|Q| * sum_{q in Q} |rel(q) ∩ top_k(q)| / |rel(q)|

For SSID the retrieved items are **images**: the ranked identifiers expanded to their images in
beam order (:func:`swift_ssid.core.runs.expand_identifiers`). :func:`evaluate_run` is the one R@K that
every entry point uses (``swift-ssid evaluate``, the training-time metric, the benchmark), so they
agree to the last digit. :func:`identifier_level_hit_rate` scores identifiers instead and is kept
only for contrast: it counts a shared identifier as a hit for every image that has it, which
overstates results when identifiers collide.

Pure module: no torch, no ms-swift.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from swift_ssid.core.runs import RunRow

IMAGE_LEVEL_METRIC = "image-level hit_rate@k (the paper's R@K)"
IDENTIFIER_LEVEL_METRIC = (
    "identifier-level hit_rate@k (for contrast only: counts a shared identifier as a hit for every image "
    "that has it, so it overstates R@K when identifiers collide)"
)
DEFAULT_KS = (1, 5, 10)


@dataclass
class MetricResult:
    """A metric's per-query values and their mean.

    Attributes:
        name: the metric, e.g. ``"hit_rate@5"``.
        k: the cut-off.
        per_query: query id -> value, for every query in ``relevant`` (in its order).
        mean: the mean over all queries in ``relevant``.
        missing_queries: queries in ``relevant`` that ``ranked`` lacks (each scored 0).
    """

    name: str
    k: int
    per_query: dict[str, float]
    mean: float
    missing_queries: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunMetrics:
    """R@K of a run (or of ranked lists), as every entry point reports it.

    Attributes:
        hit_rate: k -> the paper's R@k (image-level ``hit_rate@k``), a fraction in [0, 1].
        recall: k -> ``recall@k``; None for the identifier-level contrast, which has none.
        n_queries: queries scored.
        missing_queries: queries with gold images but no ranked list (each scored 0).
        unknown_identifier_rate: share of generated identifiers not in the index (None when not known).
        metric: what ``hit_rate`` is (:data:`IMAGE_LEVEL_METRIC` or :data:`IDENTIFIER_LEVEL_METRIC`).

    Example:
        >>> m = evaluate_ranked_images({"q1": ["b", "a"]}, {"q1": ["a"]}, ks=(1, 2))
        >>> m.r_at(1), m.r_at(2), m.to_dict()["R@2"]
        (0.0, 1.0, 1.0)
    """

    hit_rate: dict[int, float]
    recall: dict[int, float] | None = None
    n_queries: int = 0
    missing_queries: list[str] = field(default_factory=list)
    unknown_identifier_rate: float | None = None
    metric: str = IMAGE_LEVEL_METRIC

    @property
    def ks(self) -> tuple[int, ...]:
        """The cut-offs, ascending."""
        return tuple(sorted(self.hit_rate))

    def r_at(self, k: int) -> float:
        """R@k; KeyError names the cut-offs computed."""
        if k not in self.hit_rate:
            raise KeyError(f"R@{k} was not computed; the cut-offs are {list(self.ks)}")
        return self.hit_rate[k]

    def column(self, name: str) -> float | int:
        """A table column by its printed name: ``R@k``, ``recall@k`` or ``n_queries``."""
        if name == "n_queries":
            return self.n_queries
        kind, _, k = name.partition("@")
        if kind == "R" and k.isdigit():
            return self.r_at(int(k))
        if kind == "recall" and k.isdigit() and self.recall and int(k) in self.recall:
            return self.recall[int(k)]
        raise KeyError(f"unknown metric column {name!r}; use R@k, recall@k or n_queries")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"R@1": ..., "recall@1": ..., "n_queries", "missing_queries", "metric", ...}``."""
        out: dict[str, Any] = {f"R@{k}": v for k, v in sorted(self.hit_rate.items())}
        out.update({f"recall@{k}": v for k, v in sorted((self.recall or {}).items())})
        out["n_queries"] = self.n_queries
        if self.recall is not None:
            out["missing_queries"] = list(self.missing_queries)
        out["metric"] = self.metric
        if self.unknown_identifier_rate is not None:
            out["unknown_identifier_rate"] = self.unknown_identifier_rate
        return out


def check_k(k: Any) -> int:
    """Return ``k`` if it is a positive integer cut-off; raise ``ValueError`` otherwise."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}; use e.g. k=1, 5 or 10")
    return k


def check_ks(ks: Iterable[Any]) -> tuple[int, ...]:
    """Validate cut-offs; return them sorted without repeats, e.g. ``(10, 1, 5, 5) -> (1, 5, 10)``."""
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks is empty; pass at least one cut-off, e.g. ks=(1, 5, 10)")
    return tuple(sorted({check_k(k) for k in ks}))


def dedupe(items: Iterable[str]) -> list[str]:
    """The items with repeats dropped, first occurrence kept (order preserved)."""
    return list(dict.fromkeys(items))


def _check_inputs(
    ranked: Mapping[str, Sequence[str]], relevant: Mapping[str, Collection[str]]
) -> tuple[dict[str, list[str]], dict[str, set[str]], list[str]]:
    """Validate ``ranked``/``relevant``; return deduplicated lists, relevant sets and missing queries."""
    if not isinstance(ranked, Mapping) or not isinstance(relevant, Mapping):
        raise ValueError(
            f"ranked and relevant must be dicts keyed by query id, got {type(ranked).__name__} and "
            f"{type(relevant).__name__}"
        )
    if not relevant:
        raise ValueError("relevant is empty: there is no query to evaluate; pass {query_id: [gold items]}")
    extra = [q for q in ranked if q not in relevant]
    if extra:
        raise ValueError(
            f"{len(extra)} ranked queries have no relevance judgements, e.g. {extra[:3]!r}; pass relevant items "
            "for every ranked query or drop those queries from ranked"
        )
    rel_sets: dict[str, set[str]] = {}
    for q, items in relevant.items():
        if isinstance(items, str) or not isinstance(items, Collection):
            raise ValueError(f"relevant[{q!r}] must be a collection of item ids, got {items!r:.80}; wrap it: [item]")
        if not items:
            raise ValueError(f"relevant[{q!r}] is empty; every query needs at least one relevant item")
        rel_sets[q] = set(items)
    lists: dict[str, list[str]] = {}
    for q, items in ranked.items():
        if isinstance(items, str) or not isinstance(items, Sequence):
            raise ValueError(f"ranked[{q!r}] must be a list of item ids, got {items!r:.80}; wrap it: [item]")
        lists[q] = dedupe(items)
    missing = [q for q in relevant if q not in ranked]
    return lists, rel_sets, missing


def first_relevant_rank(ranked: Sequence[str], relevant: Collection[str]) -> int | None:
    """The 1-based rank of the first relevant item in ``ranked`` after dropping repeats, or ``None``.

    ``hit_rate@k`` of a query is 1 exactly when this rank is ``<= k``.

    Example:
        >>> first_relevant_rank(["a", "a", "b", "g"], {"g"})
        3
    """
    relevant = set(relevant)
    for rank, item in enumerate(dedupe(ranked), start=1):
        if item in relevant:
            return rank
    return None


def hit_rate_at_k(ranked: Mapping[str, Sequence[str]], relevant: Mapping[str, Collection[str]], k: int) -> MetricResult:
    """The paper's R@K: the share of queries with a relevant item among the first k ranked items.

    ``hit_rate@k = 1/|Q| * sum_q [rel(q) ∩ top_k(ranked(q)) ≠ ∅]``, with repeats in ``ranked(q)``
    dropped before cutting at k, and Q = all queries in ``relevant`` (ranx ``hit_rate@k``,
    trec_eval ``success_k``).

    Args:
        ranked: query id -> ranked item ids (e.g. images).
        relevant: query id -> relevant item ids (at least one per query).
        k: the cut-off, >= 1. A k beyond the list length uses the whole list.

    Returns:
        Per-query 1.0/0.0 and the mean; a query missing from ``ranked`` scores 0 and is listed in
        ``missing_queries``.

    Raises:
        ValueError: k is not a positive integer, ``relevant`` is empty or has an empty entry,
            ``ranked`` has a query that ``relevant`` lacks, or a value is a bare string.

    Example:
        >>> hit_rate_at_k({"q1": ["a", "g"], "q2": ["b"]}, {"q1": ["g"], "q2": ["c"]}, k=2).mean
        0.5
    """
    k = check_k(k)
    lists, rel, missing = _check_inputs(ranked, relevant)
    per_query = {q: float(any(item in rel[q] for item in lists.get(q, [])[:k])) for q in rel}
    hits = sum(1 for v in per_query.values() if v)
    return MetricResult(f"hit_rate@{k}", k, per_query, hits / len(per_query), missing)


def chance_hit_rate(k: int, n_images: int) -> float:
    """R@K of a random ranking of ``n_images`` images, one gold image per query: ``min(1, K / n_images)``.

    Example:
        >>> chance_hit_rate(5, 12), chance_hit_rate(20, 12)
        (0.4166666666666667, 1.0)

    Raises:
        ValueError: ``n_images`` < 1 (no chance level without images).
    """
    if n_images < 1:
        raise ValueError(f"n_images {n_images} must be at least 1: the chance level needs indexed images")
    return min(1.0, k / n_images)


def recall_at_k(ranked: Mapping[str, Sequence[str]], relevant: Mapping[str, Collection[str]], k: int) -> MetricResult:
    """Recall at k: the mean share of each query's relevant items found in its first k ranked items.

    ``recall@k = 1/|Q| * sum_q |rel(q) ∩ top_k(ranked(q))| / |rel(q)|`` (repeats dropped first).
    Equals :func:`hit_rate_at_k` when every query has one relevant item.

    Args:
        ranked: query id -> ranked item ids.
        relevant: query id -> relevant item ids (at least one per query).
        k: the cut-off, >= 1.

    Returns:
        Per-query recall and the mean (computed with ``math.fsum``, so it is independent of order).

    Raises:
        ValueError: as :func:`hit_rate_at_k`.

    Example:
        >>> recall_at_k({"q1": ["a", "g1"]}, {"q1": ["g1", "g2"]}, k=2).mean
        0.5
    """
    k = check_k(k)
    lists, rel, missing = _check_inputs(ranked, relevant)
    per_query = {q: len(rel[q].intersection(lists.get(q, [])[:k])) / len(rel[q]) for q in rel}
    return MetricResult(f"recall@{k}", k, per_query, math.fsum(per_query.values()) / len(per_query), missing)


def evaluate_ranked_images(
    ranked: Mapping[str, Sequence[str]], relevant: Mapping[str, Collection[str]], ks: Iterable[int] = DEFAULT_KS
) -> RunMetrics:
    """R@K (image-level hit rate) and recall@K for several cut-offs.

    Args:
        ranked: query id -> ranked image ids (repeats are dropped before cutting).
        relevant: query id -> gold image ids.
        ks: cut-offs, e.g. ``(1, 5, 10)``.

    Returns:
        The metrics; values are fractions in [0, 1].
    """
    ks = check_ks(ks)
    hit_rate: dict[int, float] = {}
    missing: list[str] = []
    for k in ks:
        result = hit_rate_at_k(ranked, relevant, k)
        hit_rate[k] = result.mean
        missing = result.missing_queries
    recall = {k: recall_at_k(ranked, relevant, k).mean for k in ks}
    return RunMetrics(hit_rate, recall, len(relevant), missing)


def _run_mappings(rows: Sequence[RunRow]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        raise ValueError(f"rows must be a list of RunRow, got {type(rows).__name__}; read them with read_run(path)")
    if not rows:
        raise ValueError("the run has no rows: there is no query to evaluate; check that retrieval wrote its output")
    ranked: dict[str, list[str]] = {}
    relevant: dict[str, list[str]] = {}
    for row in rows:
        if not isinstance(row, RunRow):
            raise ValueError(f"rows must hold RunRow objects, got {type(row).__name__}; use RunRow.from_dict(d)")
        if row.query_id in ranked:
            raise ValueError(f"query_id {row.query_id!r} appears twice in the run; each query must appear once")
        ranked[row.query_id] = row.images
        relevant[row.query_id] = row.gold_images
    return ranked, relevant


def unknown_identifier_rate(rows: Sequence[RunRow]) -> float:
    """The share of generated identifiers that map to no image.

    ``sum_q |{i in identifiers(q) : i unknown}| / sum_q |identifiers(q)|`` (counting repeats); 0.0
    when no identifier was generated. Under trie-constrained decoding it should be 0.
    """
    total = sum(len(row.identifiers) for row in rows)
    if total == 0:
        return 0.0
    unknown = 0
    for row in rows:
        unknown_here = set(row.unknown_identifiers)
        unknown += sum(1 for identifier in row.identifiers if identifier in unknown_here)
    return unknown / total


def evaluate_run(rows: Sequence[RunRow], ks: Iterable[int] = DEFAULT_KS) -> RunMetrics:
    """The paper's R@K for a run: image-level hit rate on each row's ``images`` against its ``gold_images``.

    This is the single R@K implementation behind every entry point. It is deterministic: hit rates
    are exact ratios of integer counts.

    Args:
        rows: the run's rows (one per query, unique query ids), e.g. from :func:`swift_ssid.core.runs.read_run`.
        ks: cut-offs.

    Returns:
        :func:`evaluate_ranked_images`'s metrics with the ``unknown_identifier_rate`` (see
        :func:`unknown_identifier_rate`).

    Raises:
        ValueError: the run is empty, a query id repeats, or ``ks`` is invalid.
    """
    ranked, relevant = _run_mappings(rows)
    return replace(evaluate_ranked_images(ranked, relevant, ks), unknown_identifier_rate=unknown_identifier_rate(rows))


def gold_identifiers(row: RunRow, identifier_for: Callable[[str], str | None]) -> list[str]:
    """The identifiers of a row's gold images (images the index does not know are skipped)."""
    out: list[str] = []
    for image in row.gold_images:
        try:
            identifier = identifier_for(image)
        except KeyError:
            identifier = None
        if identifier is not None and identifier not in out:
            out.append(identifier)
    return out


def identifier_level_hit_rate(
    rows: Sequence[RunRow], identifier_for: Callable[[str], str | None], k: int
) -> MetricResult:
    """Identifier-level hit rate, for contrast only: it overstates R@K when identifiers collide.

    ``1/|Q| * sum_q [ids(rel(q)) ∩ top_k(identifiers(q)) ≠ ∅]`` where ``ids(rel(q))`` are the
    identifiers of the gold images. A shared identifier counts as a hit for *every* image that has
    it, although the images it expands to fill several ranks; :func:`evaluate_run` (image-level)
    is the paper's metric. A query whose gold images are all unknown to the index scores 0.

    Args:
        rows: the run's rows.
        identifier_for: image -> its identifier (e.g. ``IdentifierIndex.identifier_for``); may
            return ``None`` or raise ``KeyError`` for an unknown image.
        k: the cut-off.

    Returns:
        Per-query 1.0/0.0 and the mean over all rows.
    """
    k = check_k(k)
    _run_mappings(rows)  # same validation as evaluate_run: non-empty, unique query ids
    per_query: dict[str, float] = {}
    for row in rows:
        gold = set(gold_identifiers(row, identifier_for))
        per_query[row.query_id] = float(any(i in gold for i in dedupe(row.identifiers)[:k]))
    hits = sum(1 for v in per_query.values() if v)
    return MetricResult(f"identifier_hit_rate@{k}", k, per_query, hits / len(per_query))


def evaluate_run_identifier_level(
    rows: Sequence[RunRow], identifier_for: Callable[[str], str | None], ks: Iterable[int] = DEFAULT_KS
) -> RunMetrics:
    """:func:`identifier_level_hit_rate` for several cut-offs, labelled as the contrast metric (no recall)."""
    ks = check_ks(ks)
    hit_rate = {k: identifier_level_hit_rate(rows, identifier_for, k).mean for k in ks}
    return RunMetrics(hit_rate, None, len(rows), metric=IDENTIFIER_LEVEL_METRIC)
