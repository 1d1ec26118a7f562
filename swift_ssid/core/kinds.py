"""GRACE's identifier strategies (Li et al., ACL 2024), written as ordinary identifier indexes.

Each kind assigns one identifier to every image the datasets need (``train``, ``restval`` and ``test`` images,
in collection file order; ``val`` is used by no dataset) and is written by :func:`write_kind_index` in exactly the
format ``swift-ssid build-index`` writes (``index.jsonl``, ``index_meta.json``, ``stats.json``,
``regenerate.jsonl``), with ``"kind"`` and its parameters added to ``stats.json`` and ``index_meta.json``. So
datasets, templates, the trie, ``retrieve``, ``evaluate``, ``report`` and ``table`` use it unchanged.

=================  ===================================================  =====================  ===============
kind               identifier of the i-th image                         GRACE source           new tokens
=================  ===================================================  =====================  ===============
``numeric``        its number, digits as separate words: ``1 2 3``      ``" ".join(str(i))``   none
``string``         its number as one string: ``123``                    ``str(i)``             none
``semantic``       a caption of the image (default: the first)          the captions           none
``structured``     hierarchical k-means path: ``0_3-1_17-2_5``          ``structured_id.py``   none
``atomic``         one new token: ``img_000123``                        new vocabulary entry   one per image
``caption-derived`` content words of the first caption (the labelled    not GRACE              none
                   fallback of :mod:`swift_ssid.core.caption_identifiers`)
=================  ===================================================  =====================  ===============

Everything here is pure (numpy and scikit-learn only); image embeddings for ``structured`` come from the caller
(``swift_ssid.encoders.DualEncoder``).
"""

from __future__ import annotations

import os
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from swift_ssid.core.answers import canonical_identifier
from swift_ssid.core.caption_identifiers import SOURCE_LABEL, caption_identifier
from swift_ssid.core.collection import TRAIN_SPLITS, CollectionItem
from swift_ssid.core.index import (
    INDEX_FILE,
    META_FILE,
    CollisionPolicy,
    IdentifierIndex,
    IndexEntry,
    index_counts,
    index_files,
    index_kind,
    read_companion,
    read_manifest,
    write_index,
)

NEW_TOKENS_FILE = "new_tokens.txt"
"""Atomic indexes list their new tokens here, one a line: ``swift sft --new_special_tokens <index>/new_tokens.txt``."""
ATOMIC_PREFIX = "img_"


@dataclass(frozen=True)
class KindInfo:
    """What a kind is, where it comes from and what the paper reports for it (Flamingo, Flickr30K / MS-COCO 5K)."""

    name: str
    title: str
    definition: str
    source: str
    vocabulary: str
    paper_table: str  # "I", "II" or "" (not in the paper)
    paper_flickr: tuple[float, float, float] | None
    paper_coco: tuple[float, float, float] | None = None


KINDS: dict[str, KindInfo] = {
    "numeric": KindInfo(
        "numeric",
        "Numeric Identifier",
        "the image's number (0-based, collection order), its digits written as separate words: 1 2 3",
        "GRACE data_process: ' '.join(list(str(n)))",
        "none",
        "I",
        (22.5, 28.9, 29.4),
        (0.03, 0.14, 0.28),
    ),
    "string": KindInfo(
        "string",
        "String Identifier",
        "the same number as one string, tokenised as the tokenizer likes: 123",
        "GRACE data_process: str(n)",
        "none",
        "I",
        (30.5, 39.0, 40.4),
        (0.12, 0.37, 0.88),
    ),
    "semantic": KindInfo(
        "semantic",
        "Semantic Identifier",
        "a caption of the image, canonicalised (default the first; --pseudo-captions replaces it)",
        "GRACE data_process: the training captions, pseudo-queries for test images",
        "none",
        "I",
        (22.9, 34.9, 37.4),
        (13.3, 30.4, 35.9),
    ),
    "structured": KindInfo(
        "structured",
        "Structured Identifier",
        "path of hierarchical k-means over image embeddings (k clusters a level until a cluster holds <= c "
        "images, then the position inside it): 0_3-1_17-2_5",
        "GRACE data_process/structured_id.py (CLIP ViT-L/14, k = c = 30)",
        "none",
        "I",
        (37.4, 59.5, 66.4),
        (16.7, 39.2, 50.3),
    ),
    "ssid": KindInfo(
        "ssid",
        "Structured Semantic Identifier (SSID)",
        "concept words an MLLM writes for the image: cheerleaders - chairs - spectators (swift-ssid build-index)",
        "this paper",
        "none",
        "I",
        (47.3, 65.1, 68.2),
        (22.1, 42.2, 50.4),
    ),
    "atomic": KindInfo(
        "atomic",
        "Atomic Identifier",
        "one new vocabulary token per image: img_000123",
        "GRACE (atomic identifiers)",
        "one new token per image",
        "II",
        (68.4, 88.9, 93.7),
    ),
    "image-tokenization": KindInfo(
        "image-tokenization",
        "Image tokenization",
        "the image's VQ codes as new tokens (not implemented: needs a VQ image tokenizer)",
        "GRACE (image tokenisation)",
        "a VQ codebook",
        "II",
        (50.4, 73.2, 76.9),
    ),
    "caption-derived": KindInfo(
        "caption-derived",
        "Caption-derived (labelled fallback)",
        "content words of the first caption joined with ' - ' (not an MLLM; not in the paper)",
        f"swift_ssid.core.caption_identifiers ({SOURCE_LABEL})",
        "none",
        "",
        None,
    ),
}
"""Every kind the comparison knows, in the paper's row order (``ssid`` is built by ``swift-ssid build-index``)."""

BUILDABLE: tuple[str, ...] = ("numeric", "string", "semantic", "structured", "atomic", "caption-derived")
"""Kinds ``swift-ssid identifiers`` builds."""

PAPER_SSID_TABLE_II: dict[str, tuple[float, float, float]] = {
    "flamingo": (47.3, 65.1, 68.2),
    "llava": (46.4, 68.9, 77.2),
    "qwen2.5-vl": (54.8, 75.0, 79.8),
}
"""Table II's SSID rows per MLLM (Flickr30K)."""


# ---------------------------------------------------------------- which images, and their identifiers


def indexed_items(collection: Sequence[CollectionItem]) -> list[CollectionItem]:
    """The images that get an identifier: ``train``, ``restval`` and ``test`` ones, in file order.

    Args:
        collection: All items of the collection.

    Returns:
        The items the datasets memorise or retrieve (``val`` is left out, as the datasets leave it out).

    Raises:
        ValueError: When no image is left.
    """
    items = [item for item in collection if item.split in TRAIN_SPLITS or item.split == "test"]
    if not items:
        raise ValueError("the collection has no train, restval or test image to give an identifier to")
    return items


def numeric_identifiers(n: int, start: int = 0) -> list[str]:
    """GRACE's numeric identifiers: ``start`` .. ``start+n-1`` with the digits separated by spaces (``"1 2"`` for 12).

    ``start`` continues the numbering of an index (``swift-ssid add``).
    """
    return [" ".join(str(i)) for i in range(start, start + n)]


def string_identifiers(n: int, start: int = 0) -> list[str]:
    """GRACE's string identifiers: ``str(start)`` .. ``str(start+n-1)``, one string each (the tokenizer may merge)."""
    return [str(i) for i in range(start, start + n)]


def atomic_tokens(n: int, width: int | None = None, start: int = 0) -> list[str]:
    """One token per image: ``img_000000`` .. (zero-padded to ``width``, default ``max(6, digits of n-1)``).

    ``start`` continues the numbering of an index (``swift-ssid add``): tokens ``start`` .. ``start+n-1``.

    The tokens are lower-case and bare (no ``<...>``): the index stores identifiers in canonical form
    (:func:`swift_ssid.core.answers.canonical_identifier` lower-cases and strips enclosing ``<>``), and the token
    must be exactly the stored identifier so the trie, training targets and parsing all see one token.
    """
    width = width if width is not None else max(6, len(str(max(n - 1, 0))))
    return [f"{ATOMIC_PREFIX}{i:0{width}d}" for i in range(start, start + n)]


NUMBERED_KINDS = ("numeric", "string", "atomic")
"""Kinds whose identifiers count images: ``swift-ssid add`` continues the count, never reusing a number."""


def next_number(index: IdentifierIndex, params: dict[str, Any]) -> int:
    """The number the next image of a numbered kind gets: ``params["next_number"]`` (recorded by ``add`` and
    ``remove``), else the image count (a freshly built index numbers its images 0 .. n-1)."""
    recorded = params.get("next_number")
    return int(recorded) if isinstance(recorded, int) and not isinstance(recorded, bool) else len(index.entries)


def semantic_identifiers(
    items: Sequence[CollectionItem], caption_index: int = 0, pseudo: dict[str, str] | None = None
) -> list[str]:
    """A caption per image as its identifier (canonical form: lower case, no trailing period).

    Args:
        items: The indexed images.
        caption_index: Which caption (the last one when an image has fewer).
        pseudo: image path -> a caption to use instead (GRACE uses generated pseudo-queries for test images, so
            the identifier is not a query's own text).

    Returns:
        One identifier per item.
    """
    if caption_index < 0:
        raise ValueError(f"--caption-index {caption_index}: give 0 (first caption) or more")
    out = []
    for item in items:
        text = (pseudo or {}).get(item.image) or item.captions[min(caption_index, len(item.captions) - 1)]
        ident = canonical_identifier(text)
        if not ident:
            raise ValueError(f"{item.where or item.image}: caption {text!r} is empty after canonicalisation")
        out.append(ident)
    return out


def caption_derived_identifiers(items: Sequence[CollectionItem]) -> list[str]:
    """The labelled fallback: content words of each image's first caption (see ``caption_identifiers``)."""
    out = []
    for item in items:
        ident = caption_identifier(item.captions[0])
        out.append(ident or canonical_identifier(item.captions[0]))
    return out


# ---------------------------------------------------------------- structured: GRACE's hierarchical k-means


def hierarchical_kmeans(
    embeddings: np.ndarray,
    k: int = 30,
    c: int = 30,
    seed: int = 7,
    n_init: int = 100,
    minibatch_from: int = 1000,
    progress: bool = False,
) -> list[list[int]]:
    """GRACE's structured-identifier clustering (``data_process/structured_id.py``), deterministic for a seed.

    The top level always splits the images into (at most) ``k`` clusters; a cluster with more than ``c`` images
    is split again into ``k``; a cluster of 2..``c`` images gives each image its position inside it as the last
    level; a single image ends its path there. Clusters of ``minibatch_from`` or more images use
    ``MiniBatchKMeans`` (GRACE: 1000, batch 1000), smaller ones ``KMeans``. A split that leaves every image in
    one cluster (duplicate embeddings) falls back to ``k`` contiguous chunks, so the recursion always ends.

    Args:
        embeddings: ``[N, D]`` image embeddings.
        k: Clusters per level.
        c: Largest leaf cluster.
        seed: ``random_state`` of every k-means.
        n_init: k-means restarts (GRACE: 100).
        minibatch_from: Cluster size from which MiniBatchKMeans is used.
        progress: Show a tqdm bar over the top-level clusters.

    Returns:
        One path (list of ints) per row.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty [N, D] array, got shape {x.shape}")
    if k < 2 or c < 1:
        raise ValueError(f"k={k} and c={c}: k must be at least 2 and c at least 1")
    paths: list[list[int]] = [[] for _ in range(x.shape[0])]

    def split(rows: np.ndarray) -> np.ndarray:
        from sklearn.cluster import KMeans, MiniBatchKMeans

        n_clusters = min(k, rows.size)
        if rows.size >= minibatch_from:
            model: Any = MiniBatchKMeans(
                n_clusters=n_clusters,
                max_iter=300,
                n_init=n_init,
                init="k-means++",
                random_state=seed,
                batch_size=1000,
                reassignment_ratio=0.01,
                max_no_improvement=20,
                tol=1e-7,
            )
        else:
            model = KMeans(
                n_clusters=n_clusters, max_iter=300, n_init=n_init, init="k-means++", random_state=seed, tol=1e-7
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning on duplicate points: handled below
            labels = np.asarray(model.fit_predict(x[rows]), dtype=np.int64)
        if np.unique(labels).size < 2:  # degenerate: identical embeddings
            labels = np.minimum(np.arange(rows.size) * n_clusters // rows.size, n_clusters - 1)
        return labels

    def recurse(rows: np.ndarray) -> None:
        if rows.size <= c:
            if rows.size > 1:
                for pos, row in enumerate(rows):
                    paths[row].append(pos)
            return
        labels = split(rows)
        for label in range(int(labels.max()) + 1):
            members = rows[labels == label]
            for row in members:
                paths[row].append(label)
            recurse(members)

    all_rows = np.arange(x.shape[0])
    top = split(all_rows)
    labels = range(int(top.max()) + 1)
    if progress:
        from tqdm.auto import tqdm

        labels = tqdm(labels, desc="cluster", unit="cluster")
    for row, label in zip(all_rows, top, strict=True):
        paths[row].append(int(label))
    for label in labels:
        recurse(all_rows[top == label])
    return paths


def structured_identifier(path: Sequence[int]) -> str:
    """GRACE's spelling of a cluster path: ``level_value`` joined by ``-`` (``[3, 17, 5]`` -> ``0_3-1_17-2_5``)."""
    return "-".join(f"{level}_{value}" for level, value in enumerate(path))


# ---------------------------------------------------------------- writing the index


def write_kind_index(
    kind: str,
    items: Sequence[CollectionItem],
    identifiers: Sequence[str],
    out_dir: str | os.PathLike,
    params: dict[str, Any],
    collisions: CollisionPolicy = "shared",
    new_tokens: Sequence[str] = (),
    tokens: Callable[[IdentifierIndex], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write an identifier index for a kind with :func:`swift_ssid.core.index.write_index`; return its ``stats.json``.

    Args:
        kind: One of :data:`BUILDABLE`.
        items: The indexed images (:func:`indexed_items`).
        identifiers: One identifier per item (canonical form).
        out_dir: Index directory.
        params: The kind's parameters (recorded in stats and meta).
        collisions: ``shared`` or ``disambiguate`` (only ``semantic`` and ``caption-derived`` collide).
        new_tokens: Tokens the model must add (atomic), written to ``new_tokens.txt``.
        tokens: Computes the token statistics of the built index (stored under ``tokens``); None: left out.

    Returns:
        The stats (also written to ``stats.json``).
    """
    if kind not in BUILDABLE:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(BUILDABLE)} (ssid: swift-ssid build-index)")
    if len(items) != len(identifiers):
        raise ValueError(f"{len(items)} images but {len(identifiers)} identifiers")
    out_dir = Path(out_dir)
    entries = [
        IndexEntry(image=item.image, identifier=ident, status="ok", caption=item.captions[0], raw_identifier=ident)
        for item, ident in zip(items, identifiers, strict=True)
    ]
    index = IdentifierIndex(entries, policy=collisions)
    counts = index_counts(index)
    files = index_files(out_dir)
    if new_tokens:
        files["new_tokens"] = str(out_dir / NEW_TOKENS_FILE)
    stats = {
        **identifier_stats(index, counts),
        "kind": kind,
        "params": params,
        "out_dir": str(out_dir),
        "policy": collisions,
        "rows": len(items),
        "input_error_count": 0,
        "input_errors": [],
        "duplicate_rows": 0,
        "valid": counts["ok"] + counts["repaired"],
        **{key: counts[key] for key in ("ok", "repaired", "invalid", "invalid_by_reason", "problems")},
        "regenerate": 0,
        "new_tokens_added": len(new_tokens),
        "files": files,
    }
    if tokens is not None:
        stats["tokens"] = tokens(index)
    write_index(
        out_dir,
        index,
        stats,
        regenerate=[],
        texts={NEW_TOKENS_FILE: "".join(t + "\n" for t in new_tokens)} if new_tokens else None,
        meta={"kind": kind, "params": params, **({"new_tokens_file": NEW_TOKENS_FILE} if new_tokens else {})},
    )
    return stats


def identifier_stats(index: IdentifierIndex, counts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counts that explain a kind: images, distinct identifiers and their ratio, collisions, length in characters.

    Args:
        index: The built index.
        counts: Its :func:`swift_ssid.core.index.index_counts` (computed when None).

    Returns:
        ``images``, ``unique_identifiers``, ``unique_raw_identifiers``, ``distinct_ratio``, ``collision_groups``,
        ``collision_images``, ``collision_group_sizes``, ``disambiguated``, ``identifier_chars``,
        ``identifier_words`` (min/median/mean/max and histogram, as every index's stats count words).
    """
    counts = counts if counts is not None else index_counts(index)
    images, distinct = counts["images"], counts["unique_raw_identifiers"]
    raws = [e.raw_identifier for e in index.entries if e.raw_identifier is not None]
    return {
        "images": images,
        "unique_identifiers": counts["unique_identifiers"],
        "unique_raw_identifiers": distinct,
        "distinct_ratio": round(distinct / images, 6) if images else None,
        **{key: counts[key] for key in ("collision_groups", "collision_images", "collision_group_sizes")},
        "disambiguated": counts["disambiguated"],
        "identifier_chars": summary([len(r) for r in raws]),
        "identifier_words": counts["identifier_words"],
    }


def summary(values: Sequence[float]) -> dict[str, Any]:
    """min / median / mean / max of numbers (all None when empty)."""
    if not values:
        return {"min": None, "median": None, "mean": None, "max": None}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "mean": round(statistics.fmean(values), 3),
        "max": max(values),
    }


def index_new_tokens(index_dir: str | os.PathLike) -> list[str]:
    """The new tokens an index needs the model to have (atomic indexes), in order; ``[]`` for other kinds.

    Args:
        index_dir: An index directory.

    Returns:
        The tokens of ``new_tokens.txt`` when the index meta names it, else ``[]`` (also without a meta file).
    """
    index_dir = Path(index_dir)
    if not (index_dir / META_FILE).is_file():
        return []
    name = read_manifest(index_dir).get("new_tokens_file")
    return read_companion(index_dir, name).split() if name else []


NEW_TOKEN_TRAINABLE = ("--modules_to_save", "embed_tokens", "lm_head")
"""With LoRA, the resized embedding and output layers stay trainable and are saved, so new tokens are learnt."""


def new_token_sft_flags(index_dir: str | os.PathLike) -> list[str]:
    """The ``swift sft`` flags an index's new tokens need (atomic): ``[]`` for an index without any.

    >>> new_token_sft_flags("/no/such/index")
    []
    """
    if not index_new_tokens(index_dir):
        return []
    return ["--new_special_tokens", str(Path(index_dir) / NEW_TOKENS_FILE), *NEW_TOKEN_TRAINABLE]


__all__ = [
    "ATOMIC_PREFIX",
    "BUILDABLE",
    "INDEX_FILE",
    "KINDS",
    "NEW_TOKENS_FILE",
    "KindInfo",
    "NUMBERED_KINDS",
    "atomic_tokens",
    "caption_derived_identifiers",
    "hierarchical_kmeans",
    "index_kind",
    "index_new_tokens",
    "new_token_sft_flags",
    "indexed_items",
    "next_number",
    "numeric_identifiers",
    "semantic_identifiers",
    "string_identifiers",
    "structured_identifier",
    "write_kind_index",
]
