"""Hybrid retrieval: fuse runs with ranx, or rerank a run's images by given (dense) similarities.

Both work on the *image* rankings of runs (``RunRow.images``, what R@K scores) and write *image-level* rows:
each image is its own identifier (``identifiers == images``), as dense runs are, so ``evaluate``, ``report``
and ``table`` read them unchanged.

What each run contributes to ranx (:func:`fusion_scores`): an image-level run (dense, or fused before) its own
scores when they do not increase down the list; a generative run ``n - position`` for its n images (its
beam scores belong to identifiers, and the images of one shared identifier would tie), so rank-based methods
(``rrf``, ``isr``, ``bordafuse``, ...) see exactly the run's order and score-based ones (``sum``, ``mnz``,
...) a linear rank score after normalisation. Queries where some runs retrieved nothing are fused over the
runs that did (ranx cannot take an empty ranking; an empty run would add nothing to these methods' ordering),
and a query only one run answered keeps that run's ranking and scores.

Pure module: no torch (ranx runs on numba).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from swift_ssid.core.runs import RunRow

METHODS: tuple[str, ...] = (
    "rrf",
    "sum",
    "mnz",
    "max",
    "min",
    "med",
    "anz",
    "gmnz",
    "isr",
    "log_isr",
    "logn_isr",
    "bordafuse",
    "condorcet",
    "rbc",
    "wsum",
)
"""ranx fusion methods that need no training qrels (``rrf`` is Cormack et al.'s reciprocal rank fusion)."""
NORMS: tuple[str, ...] = ("min-max", "max", "sum", "zmuv", "rank", "borda", "none")


def is_image_level(row: RunRow) -> bool:
    """True when each retrieved item is its own identifier (dense, fused and reranked runs)."""
    return row.identifiers == row.images


def fusion_scores(row: RunRow) -> dict[str, float]:
    """The image -> score ranking a row contributes to fusion (see the module docstring).

    Example:
        >>> row = RunRow("q", "a dog", ["b"], ["dog"], [-0.2], [None], ["a", "b", "c"])
        >>> fusion_scores(row)
        {'a': 3.0, 'b': 2.0, 'c': 1.0}
    """
    n = len(row.images)
    if is_image_level(row) and all(a >= b for a, b in zip(row.scores, row.scores[1:], strict=False)):
        return {image: float(score) for image, score in zip(row.images, row.scores, strict=True)}
    return {image: float(n - i) for i, image in enumerate(row.images)}


def check_same_queries(runs: Sequence[Sequence[RunRow]], names: Sequence[str]) -> None:
    """Raise ValueError unless every run has the same query ids with the same gold images."""
    first = {row.query_id: sorted(row.gold_images) for row in runs[0]}
    for name, rows in zip(names[1:], runs[1:], strict=True):
        other = {row.query_id: sorted(row.gold_images) for row in rows}
        if other.keys() != first.keys():
            only = sorted(set(first) ^ set(other))
            raise ValueError(
                f"{name} and {names[0]} have different queries ({len(only)} in one only, e.g. {only[:3]}); "
                "fuse runs made from the same queries file"
            )
        differ = [q for q in first if first[q] != other[q]]
        if differ:
            raise ValueError(
                f"{name} and {names[0]} disagree on the gold images of query {differ[0]!r} "
                f"({other[differ[0]]} vs {first[differ[0]]}); the runs name images differently: make them from "
                "the same collection file"
            )


def fuse_runs(
    runs: Sequence[Sequence[RunRow]],
    *,
    method: str = "rrf",
    norm: str = "min-max",
    params: Mapping[str, Any] | None = None,
    k: int | None = None,
    names: Sequence[str] | None = None,
    setting: Mapping[str, Any] | None = None,
) -> list[RunRow]:
    """Fuse two runs or more with ``ranx.fuse`` into image-level rows, in the first run's query order.

    Args:
        runs: the runs' rows (same queries, same gold images).
        method: one of :data:`METHODS`.
        norm: ranx score normalisation (one of :data:`NORMS`; ``none`` skips it).
        params: the method's parameters (e.g. ``{"k": 60}`` for rrf, ``{"weights": [0.7, 0.3]}`` for wsum).
        k: keep the first k fused images (default: all).
        names: labels of the runs, for messages and the ``setting``.
        setting: extra ``setting`` entries of the fused rows.

    Returns:
        One row per query: images by fused score (ties: the better rank in any input run first).

    Raises:
        ValueError: fewer than two runs, an unknown method or norm, or runs over different queries.
    """
    from ranx import Run, fuse

    if len(runs) < 2:
        raise ValueError(f"fusion needs two runs or more, got {len(runs)}; pass e.g. a generative and a dense run")
    if method not in METHODS:
        raise ValueError(f"fusion method {method!r} is not one of {', '.join(METHODS)}")
    if norm not in NORMS:
        raise ValueError(f"normalisation {norm!r} is not one of {', '.join(NORMS)}")
    names = list(names) if names is not None else [f"run{i + 1}" for i in range(len(runs))]
    check_same_queries(runs, names)
    by_query = [{row.query_id: row for row in rows} for rows in runs]
    params = dict(params or {})
    base = {"kind": f"hybrid-{method}", "fusion": method, "norm": norm, "inputs": names, **dict(setting or {})}
    if params:
        base["params"] = params

    scores = [{row.query_id: fusion_scores(row) for row in rows} for rows in runs]
    groups: dict[tuple[int, ...], list[str]] = {}
    for row in runs[0]:
        present = tuple(i for i, run in enumerate(scores) if run[row.query_id])
        groups.setdefault(present, []).append(row.query_id)
    fused: dict[str, dict[str, float]] = {}
    for present, query_ids in groups.items():
        if len(present) == 0:
            fused.update({q: {} for q in query_ids})
        elif len(present) == 1:
            fused.update({q: scores[present[0]][q] for q in query_ids})
        else:
            group_params = dict(params)
            if "weights" in group_params:
                group_params["weights"] = [params["weights"][i] for i in present]
            ranx_runs = [Run({q: scores[i][q] for q in query_ids}, name=names[i]) for i in present]
            try:
                result = fuse(ranx_runs, norm=None if norm == "none" else norm, method=method, params=group_params)
            except TypeError as e:  # a missing or unknown parameter of the method
                raise ValueError(f"fusion method {method!r}: {e}; pass its parameters with --param KEY=VALUE") from e
            fused.update({q: {d: float(s) for d, s in result.run[q].items()} for q in query_ids})

    out = []
    for row in runs[0]:
        best_rank: dict[str, int] = {}
        for run in by_query:
            for rank, image in enumerate(run[row.query_id].images):
                best_rank[image] = min(best_rank.get(image, rank), rank)
        ranked = sorted(fused[row.query_id].items(), key=lambda item: (-item[1], best_rank.get(item[0], 1 << 30)))
        if k is not None:
            ranked = ranked[:k]
        images = [image for image, _ in ranked]
        out.append(_image_row(row, images, [s for _, s in ranked], base))
    return out


def _image_row(row: RunRow, images: list[str], scores: list[float], setting: Mapping[str, Any]) -> RunRow:
    return RunRow(
        query_id=row.query_id,
        query=row.query,
        gold_images=list(row.gold_images),
        identifiers=list(images),
        scores=[round(float(s), 6) for s in scores],
        reasons=[None] * len(images),
        images=list(images),
        setting=dict(setting),
    )


def rerank_rows(
    rows: Sequence[RunRow],
    similarity: Callable[[Sequence[RunRow]], Sequence[Sequence[float]]],
    *,
    setting: Mapping[str, Any] | None = None,
    k: int | None = None,
) -> list[RunRow]:
    """Order each row's images by a similarity (e.g. dense query-image cosine), keeping the row's candidates.

    Args:
        rows: the run to rerank (typically generative: its images are the candidates).
        similarity: given the rows, one score per image of each row (same order as ``row.images``).
        setting: the reranked rows' ``setting`` (default: the row's own plus ``{"rerank": "dense"}``).
        k: rerank only the first k images of each row (the rest follow in their order).

    Returns:
        Image-level rows; equal similarities keep the run's order (stable sort).
    """
    sims = similarity(rows)
    out = []
    for row, row_sims in zip(rows, sims, strict=True):
        if len(row_sims) != len(row.images):
            raise ValueError(f"query {row.query_id!r}: {len(row_sims)} similarities for {len(row.images)} images")
        head = len(row.images) if k is None else min(k, len(row.images))
        order = sorted(range(head), key=lambda i: -row_sims[i])
        images = [row.images[i] for i in order] + row.images[head:]
        scores = [row_sims[i] for i in order] + list(row_sims[head:])
        label = dict(setting) if setting is not None else {**row.setting, "rerank": "dense"}
        out.append(_image_row(row, images, scores, label))
    return out


class ImageLevelIndex:
    """The index of an image-level run (dense, fused, reranked): every image is its own identifier.

    Lets ``swift-ssid report`` render such a run without an identifier index; the identifier-level hit rate
    then equals the image-level one.
    """

    entries: tuple = ()

    def images_for(self, identifier: str) -> list[str]:
        """The image itself."""
        return [identifier]

    def identifier_for(self, image: str) -> str:
        """The image itself."""
        return image
