"""Run files: the ranked retrieval result for every query, one JSON object a line.

A run file is written by ``swift-ssid retrieve`` and read by ``swift-ssid evaluate``, ``table``
and ``report``. One row per query::

    {"query_id": "1000092795#0",
     "query": "Two young guys with shaggy hair look at their hands ...",
     "gold_images": ["1000092795.jpg"],
     "identifiers": ["two men - yard - hands", "man - garden - plant"],   # ranked, beam order, canonical
     "scores": [-0.41, -1.73],                                            # one per identifier
     "reasons": ["Both men stand outside ...", null],                     # one per identifier, null if none
     "images": ["1000092795.jpg", "2398605966.jpg", "36979.jpg"],         # identifiers expanded, repeats dropped
     "unknown_identifiers": [],                                           # identifiers that map to no image
     "setting": {"reason": "train+infer", "language": "en"},              # optional, free-form
     "index_version": 2}                                                  # optional: the index version used

``index_version`` is the version of the identifier index the row was retrieved with (see
:mod:`swift_ssid.core.index`); a row without it was written before index versions and counts as version 1, the
version every index folder of that time loads as. :func:`check_run_version` refuses rows of another version.
``images`` is what R@K is computed on (see :func:`swift_ssid.core.metrics.evaluate_run`); build it with
:func:`expand_identifiers`. Pure module: no torch, no ms-swift.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from swift_ssid.core.jsonl import iter_jsonl, write_text_atomic
from swift_ssid.core.queries import claim_query_id

REQUIRED_KEYS = ("query_id", "query", "gold_images", "identifiers", "scores", "reasons", "images")
OPTIONAL_KEYS = ("unknown_identifiers", "setting", "index_version")
RESERVED_SETTING_KEYS: tuple[str, ...] = ("reason", "k")
"""Setting keys the retriever itself writes; labels may not override them."""
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


class ImagesFor(Protocol):
    """Anything that maps an identifier to its images (e.g. :class:`swift_ssid.core.index.IdentifierIndex`)."""

    def images_for(self, identifier: str) -> list[str]: ...


def _str_list(value: Any, key: str, allow_none: bool = False) -> list:
    """Check that ``value`` is a list of strings (or ``None`` items when ``allow_none``)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{key!r} must be a list of strings, got {type(value).__name__} {value!r:.80}")
    for item in value:
        if not (isinstance(item, str) or (allow_none and item is None)):
            kind = "strings or null" if allow_none else "strings"
            raise ValueError(f"{key!r} must hold only {kind}, got item {item!r:.80} ({type(item).__name__})")
    return list(value)


@dataclass
class RunRow:
    """One query's ranked result.

    Args:
        query_id: unique id of the query within the run.
        query: the query text (a caption).
        gold_images: the relevant image(s); at least one.
        identifiers: generated identifiers, ranked (beam order), canonical form.
        scores: one score per identifier (e.g. the beam's log-probability).
        reasons: one generated reason per identifier, ``None`` where none was generated.
        images: the identifiers expanded to images in beam order, repeats dropped.
        unknown_identifiers: identifiers that map to no image in the index.
        setting: free-form description of the experimental setting (used by ``swift-ssid table --by``).
        index_version: the version of the identifier index the row was made with; None: not recorded (version 1).
        extra: any other keys found in the file, kept so that reading and writing a run loses nothing.
    """

    query_id: str
    query: str
    gold_images: list[str]
    identifiers: list[str]
    scores: list[float]
    reasons: list[str | None]
    images: list[str]
    unknown_identifiers: list[str] = field(default_factory=list)
    setting: dict[str, Any] = field(default_factory=dict)
    index_version: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.query_id, str) or not self.query_id:
            raise ValueError(f"'query_id' must be a non-empty string, got {self.query_id!r}")
        if not isinstance(self.query, str):
            raise ValueError(f"'query' must be a string, got {type(self.query).__name__} {self.query!r:.80}")
        self.gold_images = _str_list(self.gold_images, "gold_images")
        if not self.gold_images:
            raise ValueError(
                f"query {self.query_id!r} has no gold image: 'gold_images' must list the relevant image(s)"
            )
        self.identifiers = _str_list(self.identifiers, "identifiers")
        self.reasons = _str_list(self.reasons, "reasons", allow_none=True)
        self.images = _str_list(self.images, "images")
        self.unknown_identifiers = _str_list(self.unknown_identifiers, "unknown_identifiers")
        if isinstance(self.scores, str) or not isinstance(self.scores, (list, tuple)):
            raise ValueError(f"'scores' must be a list of numbers, got {self.scores!r:.80}")
        for score in self.scores:
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise ValueError(f"'scores' must hold only numbers, got item {score!r:.80}")
        self.scores = [float(s) for s in self.scores]
        n = len(self.identifiers)
        for key in ("scores", "reasons"):
            if len(getattr(self, key)) != n:
                raise ValueError(
                    f"query {self.query_id!r}: {len(getattr(self, key))} {key} for {n} identifiers; "
                    f"write exactly one {key[:-1]} per identifier (use null for a missing reason)"
                )
        if len(set(self.images)) != len(self.images):
            raise ValueError(
                f"query {self.query_id!r}: 'images' repeats an image; build it with expand_identifiers(), "
                "which drops repeats"
            )
        stray = [u for u in self.unknown_identifiers if u not in self.identifiers]
        if stray:
            raise ValueError(
                f"query {self.query_id!r}: unknown_identifiers {stray!r:.120} are not among the row's identifiers"
            )
        clash = sorted(set(self.extra) & set(REQUIRED_KEYS + OPTIONAL_KEYS))
        if clash:
            raise ValueError(f"'extra' must not hold the row's own keys, got {clash}; set those fields directly")
        if not isinstance(self.setting, dict):
            raise ValueError(f"'setting' must be a JSON object, got {type(self.setting).__name__} {self.setting!r:.80}")
        if self.index_version is not None and (
            isinstance(self.index_version, bool) or not isinstance(self.index_version, int) or self.index_version < 1
        ):
            raise ValueError(f"'index_version' must be a whole number >= 1 or null, got {self.index_version!r:.80}")

    def to_dict(self) -> dict[str, Any]:
        """The row as a JSON-ready dict, keys in the documented order."""
        return {
            "query_id": self.query_id,
            "query": self.query,
            "gold_images": list(self.gold_images),
            "identifiers": list(self.identifiers),
            "scores": list(self.scores),
            "reasons": list(self.reasons),
            "images": list(self.images),
            "unknown_identifiers": list(self.unknown_identifiers),
            "setting": dict(self.setting),
            **({"index_version": self.index_version} if self.index_version is not None else {}),
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: Any) -> RunRow:
        """Build a row from a parsed JSON object; raises ``ValueError`` naming a missing key or a bad value."""
        if not isinstance(data, dict):
            raise ValueError(f"a run row must be a JSON object, got {type(data).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ValueError(f"run row lacks key(s) {missing}; every row needs {list(REQUIRED_KEYS)}")
        return cls(
            query_id=data["query_id"],
            query=data["query"],
            gold_images=data["gold_images"],
            identifiers=data["identifiers"],
            scores=data["scores"],
            reasons=data["reasons"],
            images=data["images"],
            unknown_identifiers=data.get("unknown_identifiers", []),
            setting=data.get("setting") or {},
            index_version=data.get("index_version"),
            extra={k: v for k, v in data.items() if k not in REQUIRED_KEYS and k not in OPTIONAL_KEYS},
        )


def parse_label_value(text: str) -> int | float | str:
    """A label value from the command line: a whole number or a decimal becomes a number, anything else stays text.

    Example:
        >>> parse_label_value("1000"), parse_label_value("0.5"), parse_label_value("zh")
        (1000, 0.5, 'zh')
    """
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?", text):
        return float(text)
    return text


def parse_labels(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` items (``swift-ssid retrieve --setting``) into run-row ``setting`` labels.

    Args:
        items: e.g. ``["language=zh", "n_train=1000"]``.

    Returns:
        ``{"language": "zh", "n_train": 1000}`` (values through :func:`parse_label_value`).

    Raises:
        ValueError: an item without ``=``, a bad or repeated key, an empty value, or a key the retriever
            writes itself (:data:`RESERVED_SETTING_KEYS`: ``reason``, ``k``).
    """
    labels: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ValueError(f"--setting {item!r} is not KEY=VALUE with a key such as language or n_train")
        if not value.strip():
            raise ValueError(f"--setting {item!r} has an empty value; write e.g. {key}=zh")
        if key in RESERVED_SETTING_KEYS:
            raise ValueError(
                f"--setting {item!r}: {key!r} is written by retrieve itself; use --target/--no-reason (reason) or --k"
            )
        if key in labels:
            raise ValueError(f"--setting names {key!r} twice ({labels[key]!r} and {value!r}); give each key once")
        labels[key] = parse_label_value(value.strip())
    return labels


def read_run(path: str | os.PathLike) -> list[RunRow]:
    """Read a run file (JSON Lines; blank lines skipped).

    Args:
        path: the run file.

    Returns:
        The rows in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line is not valid JSON or not a valid row (the message names file and line),
            or a query id repeats.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"run file {str(path)!r} not found; write it with `swift-ssid retrieve`")
    rows: list[RunRow] = []
    first_line: dict[str, int] = {}
    for lineno, data, error in iter_jsonl(path):
        if error is not None:
            raise ValueError(error)
        try:
            row = RunRow.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from e
        claim_query_id(first_line, row.query_id, lineno, f"{path}:{lineno}", "each query must appear once per run file")
        rows.append(row)
    return rows


def write_run(path: str | os.PathLike, rows: Iterable[RunRow]) -> None:
    """Write rows as a run file (atomically: readers never see a half-written file)."""
    text = "".join(json.dumps(row.to_dict(), ensure_ascii=False) + "\n" for row in rows)
    write_text_atomic(path, text)


def expand_identifiers(
    identifiers: Sequence[str], images_for: Callable[[str], Sequence[str]]
) -> tuple[list[str], list[str]]:
    """Expand ranked identifiers to ranked images.

    Each identifier contributes its images in the index's fixed order; an image already listed
    (a repeated identifier, or one image under several identifiers) is dropped.

    Args:
        identifiers: ranked identifiers (beam order).
        images_for: identifier -> its images; may return ``[]`` or raise ``KeyError`` for an
            identifier that is not in the index.

    Returns:
        ``(images, unknown)``: the images in beam order without repeats, and the identifiers
        (in order, once each) that map to no image.

    Example:
        >>> index = {"dog - park": ["a.jpg", "b.jpg"], "cat - sofa": ["c.jpg"]}
        >>> expand_identifiers(["dog - park", "bird", "cat - sofa", "dog - park"], lambda i: index.get(i, []))
        (['a.jpg', 'b.jpg', 'c.jpg'], ['bird'])
    """
    images: list[str] = []
    seen: set[str] = set()
    unknown: list[str] = []
    for identifier in identifiers:
        try:
            found = images_for(identifier)
        except KeyError:
            found = []
        if not found:
            if identifier not in unknown:
                unknown.append(identifier)
            continue
        for image in found:
            if image not in seen:
                seen.add(image)
                images.append(image)
    return images, unknown


def load_run_with_index(path: str | os.PathLike, index: ImagesFor, *, reexpand: bool = False) -> list[RunRow]:
    """Read a run and check its ``images`` against the index it is used with.

    Args:
        path: the run file.
        index: any object with ``images_for(identifier) -> list[str]``.
        reexpand: replace each row's ``images`` and ``unknown_identifiers`` with the expansion
            under ``index`` instead of checking them.

    Returns:
        The rows.

    Raises:
        ValueError: (without ``reexpand``) a row's images differ from the index's expansion: the
            run was made with another index.
    """
    rows = read_run(path)
    if reexpand:
        for row in rows:
            row.images, row.unknown_identifiers = expand_identifiers(row.identifiers, index.images_for)
        return rows
    check_run_index(rows, index, path)
    return rows


def check_run_index(rows: Sequence[RunRow], index: ImagesFor, source: str | os.PathLike = "run") -> None:
    """Raise ``ValueError`` unless every row's ``images`` is what ``index`` expands its identifiers to.

    Args:
        rows: the run's rows.
        index: any object with ``images_for(identifier) -> list[str]``.
        source: the run file, for the message.

    Raises:
        ValueError: a row's images differ: the run was made with another index (the message says which query).
    """
    for row in rows:
        images, _ = expand_identifiers(row.identifiers, index.images_for)
        if images != row.images:
            raise ValueError(
                f"{source}: query {row.query_id!r}: the run lists images {row.images[:5]!r:.200} but this index "
                f"expands its identifiers to {images[:5]!r:.200}: the run was made with another index; use the "
                "index the run was made with (--index), or rerun `swift-ssid retrieve` with this one"
            )


def row_version(row: RunRow | dict[str, Any]) -> int:
    """The index version a run row was made with (a row without one predates versions: 1)."""
    version = row.get("index_version") if isinstance(row, dict) else row.index_version
    return 1 if version is None else version


def check_run_version(rows: Iterable[RunRow | dict[str, Any]], version: int, index: Any, source: Any = "run") -> None:
    """Raise ``ValueError`` when a row was made with another version of the index than ``version``, naming both.

    Args:
        rows: run rows (or their dicts).
        version: the index's version (:func:`swift_ssid.core.index.index_version`).
        index: the index folder, for the message.
        source: the run file, for the message.
    """
    for row in rows:
        made = row_version(row)
        if made != version:
            query_id = row.get("query_id") if isinstance(row, dict) else row.query_id
            raise ValueError(
                f"{source}: query {query_id!r} was retrieved with version {made} of the index {index}, which is now "
                f"at version {version}; pass --index {Path(index) / 'versions' / f'{made:04d}'} (kept until "
                "`swift-ssid index prune`), or rerun `swift-ssid retrieve` into a new run file"
            )


def row_from_answers(
    query: Any,
    answers: Sequence[str],
    images_for: Callable[[str], Sequence[str]],
    *,
    scores: Sequence[float | None] | None = None,
    setting: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> RunRow:
    """One query's run row from its K generated answers, best beam first: the one place run rows are built.

    Each answer is read with :func:`swift_ssid.core.answers.parse_choice`. A repeated identifier is a padding beam
    (the index had fewer hypotheses left than K) and is kept once, at its best rank. With ``scores``, an answer
    whose score is missing or not finite is dropped; without them the scores are ``-rank``.

    Args:
        query: a :class:`swift_ssid.core.queries.Query` (``query_id``, ``query``, ``gold_images``).
        answers: the K answer texts.
        images_for: identifier -> its images (``IdentifierIndex.images_for``).
        scores: one beam score per answer, or None when the engine gives none.
        setting: the row's ``setting``.
        extra: extra row fields (e.g. ``{"score_kind": "beam_rank"}``).

    Example:
        >>> from types import SimpleNamespace
        >>> q = SimpleNamespace(query_id="q1", query="a dog", gold_images=["a.jpg"])
        >>> row = row_from_answers(q, ["identifier:dog\\nreason:x", "identifier:dog", "identifier:cat"],
        ...                        {"dog": ["a.jpg"], "cat": ["b.jpg"]}.get)
        >>> row.identifiers, row.images, row.scores
        (['dog', 'cat'], ['a.jpg', 'b.jpg'], [-0.0, -1.0])
    """
    from swift_ssid.core.answers import parse_choice

    identifiers: list[str] = []
    reasons: list[str | None] = []
    row_scores: list[float] = []
    for rank, text in enumerate(answers):
        identifier, reason = parse_choice(text or "")
        if identifier in identifiers:
            continue
        score = -float(len(identifiers)) if scores is None else scores[rank]
        if score is None or not math.isfinite(score):
            continue
        identifiers.append(identifier)
        reasons.append(reason)
        row_scores.append(float(score))
    images, unknown = expand_identifiers(identifiers, lambda i: images_for(i) or [])
    return RunRow(
        query_id=query.query_id,
        query=query.query,
        gold_images=list(query.gold_images),
        identifiers=identifiers,
        scores=row_scores,
        reasons=reasons,
        images=images,
        unknown_identifiers=unknown,
        setting=dict(setting or {}),
        extra=dict(extra or {}),
    )
