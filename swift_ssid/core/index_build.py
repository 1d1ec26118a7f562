"""Building the identifier index from ``swift infer`` results: parse each generation, keep one answer per image.

:func:`build_index` reads the raw result file of the generation stage, parses every response with
:func:`swift_ssid.core.answers.parse_response`, keeps one row per image (the first valid answer, else the latest),
resolves collisions with the policy of :class:`swift_ssid.core.index.IdentifierIndex` and writes the folder with
:func:`swift_ssid.core.index.write_index`: ``index.jsonl`` and ``index_meta.json``, ``stats.json``
(:class:`IndexBuildStats`) and ``regenerate.jsonl`` (the images without a usable identifier as ``swift infer``
dataset rows).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from swift_ssid.core.answers import parse_response
from swift_ssid.core.index import (
    VALID_STATUSES,
    CollisionPolicy,
    IdentifierIndex,
    IndexEntry,
    check_policy,
    index_counts,
    index_files,
    write_index,
)
from swift_ssid.core.jsonl import iter_jsonl
from swift_ssid.core.prompt import render_prompt
from swift_ssid.core.rows import result_key

logger = logging.getLogger(__name__)

_URL_PREFIXES = ("http://", "https://", "data:")
_RESULT_FIX = "rerun `swift infer ... --result_path FILE` and pass that FILE"


def _image_path(row: dict) -> str:
    """Return the one image path of a result row, or raise ValueError saying what is wrong."""
    images = row.get("images")
    if images is None:
        images = []
    if isinstance(images, str | dict):
        images = [images]
    if not isinstance(images, list) or len(images) != 1:
        count = len(images) if isinstance(images, list) else type(images).__name__
        raise ValueError(f"expected exactly one image in 'images', got {count}; the index needs one image per row")
    item = images[0]
    if isinstance(item, dict):
        path = item.get("path")
        if not isinstance(path, str) or not path:
            raise ValueError(
                f"image given without a file path ({ {k: type(v).__name__ for k, v in item.items()} }); "
                "the index stores paths: run swift infer on a dataset whose 'images' are file paths"
            )
        return path
    if isinstance(item, str) and item:
        return item
    raise ValueError(f"image entry must be a path string or {{'path': ...}}, got {item!r}")


def regenerate_row(row: dict, image: str, text_item: bool = False) -> dict:
    """Return a ``swift infer`` dataset row that asks again for this image's identifier (a text item: no image)."""
    messages = row.get("messages")
    if isinstance(messages, list):
        last_user = max(
            (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"), default=None
        )
        if last_user is not None and isinstance(messages[last_user].get("content"), str):
            kept = [
                {"role": m["role"], "content": m["content"]}
                for m in messages[: last_user + 1]
                if isinstance(m, dict) and m.get("role") in ("system", "user") and isinstance(m.get("content"), str)
            ]
            return {"messages": kept} if text_item else {"messages": kept, "images": [image]}
    caption = row.get("caption") if isinstance(row.get("caption"), str) else None
    return {"messages": [{"role": "user", "content": "<image>" + render_prompt(caption)}], "images": [image]}


@dataclass(frozen=True)
class IndexBuildStats:
    """What :func:`build_index` did, as written to ``stats.json`` (:meth:`to_dict`).

    Attributes:
        results_path, out_dir, policy: the input, the index folder and the collision policy.
        rows: result rows read; input_errors: the skipped ones (``{"line", "error"}``); duplicate_rows: repeats.
        images: images indexed; valid = ok + repaired (usable answers); invalid: answers rejected;
        usable_share: valid / images.
        invalid_by_reason, problems: rejection codes and all problem codes, counted.
        unique_identifiers, unique_raw_identifiers: distinct identifiers after / before disambiguation.
        collision_groups, collision_images, collision_group_sizes: shared identifiers (size -> groups).
        disambiguated: identifiers suffixed by ``disambiguate``; identifier_words: word-count statistics.
        regenerate: images to ask again (``regenerate.jsonl``); files: the paths written.
    """

    results_path: str
    out_dir: str
    policy: str
    rows: int
    input_errors: list[dict]
    duplicate_rows: int
    images: int
    ok: int
    repaired: int
    invalid: int
    invalid_by_reason: dict[str, int]
    problems: dict[str, int]
    unique_identifiers: int
    unique_raw_identifiers: int
    collision_groups: int
    collision_images: int
    collision_group_sizes: dict[str, int]
    disambiguated: int
    identifier_words: dict
    regenerate: int
    files: dict[str, str]

    @property
    def valid(self) -> int:
        """Images with a usable answer (ok or repaired)."""
        return self.ok + self.repaired

    @property
    def usable_share(self) -> float:
        """Share of images with a usable answer, rounded to 4 places."""
        return round(self.valid / max(self.images, 1), 4)

    @property
    def input_error_count(self) -> int:
        """Result rows skipped as unusable input."""
        return len(self.input_errors)

    def to_dict(self) -> dict:
        """The ``stats.json`` form (the properties included)."""
        out = asdict(self)
        out.update(valid=self.valid, usable_share=self.usable_share, input_error_count=self.input_error_count)
        return out


@dataclass
class ParsedResults:
    """The answers of a ``swift infer`` result file, one per image (:func:`parse_results`).

    Attributes:
        chosen: image -> (its entry, its result row), in first-seen order.
        errors: ``{"line", "error"}`` per skipped row.
        rows: rows read.
        duplicates: rows of an image seen before.
    """

    chosen: dict[str, tuple[IndexEntry, dict]]
    errors: list[dict]
    rows: int
    duplicates: int
    text_ids: frozenset[str] = frozenset()

    def regenerate(self) -> list[dict]:
        """``swift infer`` dataset rows for the images without a usable identifier."""
        return [
            regenerate_row(row, entry.image, entry.image in self.text_ids)
            for entry, row in self.chosen.values()
            if entry.status == "invalid"
        ]


def parse_results(
    results_path: str | os.PathLike,
    check_images: bool = True,
    image_root: str | os.PathLike | None = None,
    text_keys: Mapping[str, str] | None = None,
) -> ParsedResults:
    """Parse a ``swift infer`` result file into one entry per image (the rules of :func:`build_index`).

    Raises:
        FileNotFoundError: When ``results_path`` does not exist.
        ValueError: An empty file, a file without a single usable row, or an image root that is not a folder.
    """
    results_path = Path(results_path)
    root = Path(image_root) if image_root is not None else Path.cwd()
    if image_root is not None and check_images and not root.is_dir():
        raise ValueError(f"image root {root} is not a directory; pass the folder the image paths are relative to")

    errors: list[dict] = []
    chosen: dict[str, tuple[IndexEntry, dict]] = {}
    rows_read = duplicates = 0
    text_ids = frozenset((text_keys or {}).values())

    def fail(lineno: int, message: str) -> None:
        errors.append({"line": lineno, "error": message})
        logger.warning(message)

    for lineno, row, error in iter_jsonl(results_path):
        rows_read += 1
        where = f"{results_path}:{lineno}"
        if error is not None:
            fail(lineno, error)
            continue
        response = row.get("response")
        if "response" not in row:
            fail(
                lineno,
                f"{where}: missing 'response' field (keys: {sorted(row)}); is this a swift infer result "
                f"file? {_RESULT_FIX}",
            )
            continue
        if not isinstance(response, str):
            fail(lineno, f"{where}: 'response' must be a string, got {type(response).__name__}; {_RESULT_FIX}")
            continue
        text_key = result_key(row, text_keys) if text_keys and not row.get("images") else None
        try:
            image = text_key or _image_path(row)
        except ValueError as e:
            fail(lineno, f"{where}: {e}" + ("" if text_keys else "; for a text collection pass --collection"))
            continue
        if text_keys and image in text_ids:
            text_key = image
        if check_images and text_key is None and not image.startswith(_URL_PREFIXES):
            resolved = Path(image) if Path(image).is_absolute() else root / image
            if not resolved.is_file():
                fail(
                    lineno,
                    f"{where}: image file not found: {resolved} (given as {image!r}); pass --image-root DIR "
                    "if paths are relative to another folder, or --no-check-images to skip this check",
                )
                continue
        record = parse_response(response)
        entry = IndexEntry(
            image=image,
            identifier=record.identifier,
            status=record.status,
            problems=list(record.problems),
            caption=record.caption,
            reason=record.reason,
            raw_identifier=record.identifier,
        )
        if image in chosen:
            duplicates += 1
            if chosen[image][0].status in VALID_STATUSES:
                continue
        chosen[image] = (entry, row)

    if rows_read == 0:
        raise ValueError(f"{results_path}: the file is empty; {_RESULT_FIX}")
    if not chosen:
        shown = "; ".join(e["error"] for e in errors[:3])
        raise ValueError(f"{results_path}: no usable row among {rows_read} ({len(errors)} errors, first: {shown})")
    return ParsedResults(chosen, errors, rows_read, duplicates, text_ids)


def build_index(
    results_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    collisions: CollisionPolicy = "shared",
    check_images: bool = True,
    image_root: str | os.PathLike | None = None,
    text_keys: Mapping[str, str] | None = None,
) -> IndexBuildStats:
    """Parse a ``swift infer --result_path`` file into the identifier index and write it to ``out_dir``.

    Each result row needs a ``response`` string and exactly one image (``images: [{"path": ...}]`` or
    ``images: ["..."]``). A bad row (not JSON, no response, not one image, missing image file) is
    skipped, logged and listed in ``stats.input_errors``; the other rows still count. When an
    image appears in several rows, its first valid row wins (so regenerated results can be
    appended to the original file), else its last row (the latest answer, so
    the stats after a retry describe the latest answers).

    Args:
        results_path: The JSON Lines file ``swift infer`` wrote.
        out_dir: The index directory to write (``index.jsonl``, ``index_meta.json``, ``stats.json``,
            ``regenerate.jsonl``).
        collisions: ``shared`` or ``disambiguate``.
        check_images: Whether each image file must exist (URLs are not checked).
        image_root: Directory that relative image paths are checked against (default: the current
            directory). Paths are stored as given.
        text_keys: For text collections (:func:`swift_ssid.core.rows.generate_keys`): stage-1 prompt -> item id;
            a result row without an image is the item whose prompt it answers, and ids name no file to check.

    Returns:
        The stats written to ``stats.json``.

    Raises:
        FileNotFoundError: When ``results_path`` does not exist.
        ValueError: For an unknown policy, an empty file, or a file without a single usable row.
    """
    check_policy(collisions)
    out_dir = Path(out_dir)
    parsed = parse_results(results_path, check_images, image_root, text_keys)
    chosen, errors, rows_read, duplicates = parsed.chosen, parsed.errors, parsed.rows, parsed.duplicates
    index = IdentifierIndex([entry for entry, _ in chosen.values()], policy=collisions)
    regenerate = parsed.regenerate()

    stats = IndexBuildStats(
        results_path=str(results_path),
        out_dir=str(out_dir),
        policy=collisions,
        rows=rows_read,
        input_errors=errors,
        duplicate_rows=duplicates,
        **index_counts(index),
        regenerate=len(regenerate),
        files=index_files(out_dir),
    )
    write_index(out_dir, index, stats.to_dict(), regenerate=regenerate)
    return stats
