"""The identifier index: which image each identifier names, built from ``swift infer`` results.

``build_index`` reads the raw result file of the generation stage, parses every response with
:func:`swift_ssid.core.answers.parse_response`, resolves identifier collisions with an explicit policy and
writes three files into the index directory:

* ``index.jsonl``: one row per image (image, identifier, status, problems, caption, reason,
  raw_identifier), in input order, plus ``index_meta.json`` (format version and collision policy);
* ``stats.json``: counts for the build report (valid / repaired / invalid by reason, collisions,
  identifier lengths, problem codes, per-line input errors);
* ``regenerate.jsonl``: the images without a usable identifier as ``swift infer`` dataset rows.

Collision policies (two images, one identifier):

* ``shared`` (default): the identifier names all its images, in input order; retrieval expands it
  to that list.
* ``disambiguate``: the first image keeps the identifier; each later one gets `` - 2``, `` - 3`` ...
  in input order, skipping any suffix that would equal another existing identifier.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from swift_ssid.core.answers import REJECTION_CODES, canonical_identifier, identifier_words, parse_response
from swift_ssid.core.jsonl import iter_jsonl, read_json, write_json_atomic, write_jsonl_atomic
from swift_ssid.core.prompt import render_prompt

logger = logging.getLogger(__name__)

CollisionPolicy = Literal["shared", "disambiguate"]
POLICIES: tuple[str, ...] = ("shared", "disambiguate")
VALID_STATUSES = frozenset({"ok", "repaired"})
STATUSES = frozenset({"ok", "repaired", "invalid"})
INDEX_FILE = "index.jsonl"
META_FILE = "index_meta.json"
STATS_FILE = "stats.json"
REGENERATE_FILE = "regenerate.jsonl"
INDEX_FORMAT = "swift_ssid.identifier_index"
INDEX_VERSION = 1
_URL_PREFIXES = ("http://", "https://", "data:")
REBUILD = "rebuild the index with `swift-ssid build-index`"


@dataclass
class IndexEntry:
    """One image of the index.

    Attributes:
        image: The image path exactly as the results file gave it.
        identifier: The final identifier (after the collision policy), or None when invalid.
        status: ``ok``, ``repaired`` or ``invalid`` (see :class:`swift_ssid.core.answers.SSIDRecord`).
        problems: Problem codes from parsing.
        caption: The caption line of the model's answer, or None.
        reason: The reason line of the model's answer, or None.
        raw_identifier: The canonical identifier before disambiguation, or None when invalid.
    """

    image: str
    identifier: str | None
    status: str
    problems: list[str] = field(default_factory=list)
    caption: str | None = None
    reason: str | None = None
    raw_identifier: str | None = None

    def to_dict(self) -> dict:
        """Return the entry as an ``index.jsonl`` row."""
        return asdict(self)


def _check_policy(policy: str) -> None:
    """Raise ValueError for an unknown collision policy."""
    if policy not in POLICIES:
        raise ValueError(f"unknown collision policy {policy!r}; use one of {', '.join(POLICIES)}")


class IdentifierIndex:
    """Identifiers and the images they name, with a fixed order and an explicit collision policy.

    The index is built from entries in input order. For each valid entry the identifier source is its
    ``raw_identifier`` (or, when that is None, its ``identifier``), canonicalised; the policy then
    assigns the final identifier. Lookups canonicalise the identifier they are given.

    Args:
        entries: One entry per image, in input order; images must be unique.
        policy: ``shared`` or ``disambiguate`` (see the module docstring).

    Example:
        >>> idx = IdentifierIndex([IndexEntry("a.jpg", "dog", "ok"), IndexEntry("b.jpg", "Dog", "ok")])
        >>> idx.images_for("DOG")
        ['a.jpg', 'b.jpg']
    """

    def __init__(self, entries: Iterable[IndexEntry], policy: CollisionPolicy = "shared") -> None:
        _check_policy(policy)
        self._setup(self._resolve(list(entries), policy), policy)

    def _setup(self, entries: list[IndexEntry], policy: str) -> None:
        """Store resolved entries and build the lookup tables."""
        self._policy = policy
        self._entries = tuple(entries)
        self._by_identifier: dict[str, list[str]] = {}
        self._by_image: dict[str, IndexEntry] = {}
        for entry in self._entries:
            self._by_image[entry.image] = entry
            if entry.identifier is not None:
                self._by_identifier.setdefault(entry.identifier, []).append(entry.image)

    @staticmethod
    def _resolve(entries: list[IndexEntry], policy: str) -> list[IndexEntry]:
        """Return copies of the entries with canonical raw identifiers and final identifiers set by the policy."""
        seen_images: set[str] = set()
        raws: list[str | None] = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, IndexEntry):
                raise TypeError(f"entry {i} is a {type(entry).__name__}, expected IndexEntry")
            if not isinstance(entry.image, str) or not entry.image:
                raise ValueError(f"entry {i}: image must be a non-empty path string, got {entry.image!r}")
            if entry.image in seen_images:
                raise ValueError(f"entry {i}: image {entry.image!r} appears twice; keep one entry per image")
            seen_images.add(entry.image)
            if entry.status not in STATUSES:
                raise ValueError(f"entry {i} ({entry.image}): status {entry.status!r} is not ok, repaired or invalid")
            source = entry.raw_identifier if entry.raw_identifier is not None else entry.identifier
            raw = canonical_identifier(source) if entry.status in VALID_STATUSES and source is not None else None
            if entry.status in VALID_STATUSES and not raw:
                raise ValueError(
                    f"entry {i} ({entry.image}): status {entry.status!r} but identifier {source!r} is empty; "
                    "mark the entry 'invalid' or give it an identifier"
                )
            raws.append(raw)
        taken = {raw for raw in raws if raw}
        next_suffix: dict[str, int] = {}
        assigned: set[str] = set()
        out = []
        for entry, raw in zip(entries, raws, strict=True):
            final = raw
            if raw is not None and policy == "disambiguate" and raw in assigned:
                n = next_suffix.get(raw, 2)
                while f"{raw} - {n}" in taken:
                    n += 1
                final = f"{raw} - {n}"
                next_suffix[raw] = n + 1
                taken.add(final)
            if final is not None:
                assigned.add(final)
            out.append(replace(entry, identifier=final, raw_identifier=raw, problems=list(entry.problems)))
        return out

    @property
    def policy(self) -> str:
        """The collision policy (``shared`` or ``disambiguate``)."""
        return self._policy

    @property
    def entries(self) -> tuple[IndexEntry, ...]:
        """All entries, valid and invalid, in input order (treat them as read-only)."""
        return self._entries

    def identifiers(self) -> list[str]:
        """Return the unique valid identifiers in order of first appearance."""
        return list(self._by_identifier)

    def images_for(self, identifier: str) -> list[str]:
        """Return the images an identifier names, in input order.

        Args:
            identifier: Any spelling; it is canonicalised first.

        Returns:
            The images (one under ``disambiguate``); ``[]`` for an unknown identifier.
        """
        if not isinstance(identifier, str):
            return []
        return list(self._by_identifier.get(canonical_identifier(identifier), ()))

    def identifier_for(self, image: str) -> str | None:
        """Return the identifier of an image (path as stored), or None for an invalid or unknown image."""
        entry = self._by_image.get(image)
        return entry.identifier if entry is not None else None

    def collision_groups(self) -> dict[str, list[str]]:
        """Return raw identifiers shared by more than one image, each with its images in input order."""
        groups: dict[str, list[str]] = {}
        for entry in self._entries:
            if entry.raw_identifier is not None:
                groups.setdefault(entry.raw_identifier, []).append(entry.image)
        return {raw: images for raw, images in groups.items() if len(images) > 1}

    def __len__(self) -> int:
        """Return the number of unique valid identifiers."""
        return len(self._by_identifier)

    def __contains__(self, identifier: object) -> bool:
        """Return True when the (canonicalised) identifier is in the index."""
        return isinstance(identifier, str) and canonical_identifier(identifier) in self._by_identifier

    def __repr__(self) -> str:
        return f"IdentifierIndex({len(self._entries)} images, {len(self)} identifiers, policy={self._policy!r})"

    def save(self, directory: str | os.PathLike, companions: Iterable[str] = ()) -> Path:
        """Write ``index.jsonl``, then ``index_meta.json`` (the manifest) into ``directory``, each atomically.

        The manifest, written last, holds the SHA-256 of ``index.jsonl`` and of each companion file already
        written in the folder (``stats.json``...). :meth:`load` and :func:`read_stats` verify them, so a build
        killed between two files is refused, never read as a mix of two builds.

        Args:
            directory: The index directory; created when missing.
            companions: Names of files in ``directory`` written for this build before the index.

        Returns:
            The path of ``index.jsonl``.
        """
        directory = Path(directory)
        path = directory / INDEX_FILE
        write_jsonl_atomic(path, (entry.to_dict() for entry in self._entries))
        meta = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "policy": self._policy,
            "images": len(self._entries),
            "identifiers": len(self),
            "sha256": {name: file_sha256(directory / name) for name in (INDEX_FILE, *companions)},
        }
        write_json_atomic(directory / META_FILE, meta)
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> IdentifierIndex:
        """Read an index written by :meth:`save` (or ``swift-ssid build-index``), validating every row.

        The stored ``identifier`` column is authoritative (canonicalised on read), so a hand-edited
        identifier is kept as long as the rows stay consistent with the policy (after a hand edit, delete
        the manifest's ``sha256`` entry: it otherwise refuses the edited file as part of another build).

        Args:
            directory: The index directory holding ``index.jsonl`` and ``index_meta.json``.

        Returns:
            The index.

        Raises:
            FileNotFoundError: When a file is missing.
            ValueError: For a malformed row or meta file, naming the file, the line and the fix; also for
                an image listed twice or, under ``disambiguate``, an identifier given to two images.
        """
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: missing; {REBUILD}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{meta_path}: not valid JSON ({e}); {REBUILD}") from e
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        if found != INDEX_FORMAT:
            raise ValueError(f"{meta_path}: format {found!r}, expected {INDEX_FORMAT!r}; {REBUILD}")
        if meta.get("version") != INDEX_VERSION:
            raise ValueError(
                f"{meta_path}: index version {meta.get('version')!r}, this code reads {INDEX_VERSION}; {REBUILD}"
            )
        policy = meta.get("policy")
        if policy not in POLICIES:
            raise ValueError(f"{meta_path}: policy {policy!r} is not one of {', '.join(POLICIES)}; fix the file")
        path = directory / INDEX_FILE
        _verify_part(directory, meta, INDEX_FILE)
        entries: list[IndexEntry] = []
        owner: dict[str, int] = {}
        images: dict[str, int] = {}
        for lineno, row, error in iter_jsonl(path):
            if error is not None:
                raise ValueError(f"{error}; or {REBUILD}")
            entry = _entry_from_row(row, f"{path}:{lineno}")
            if entry.image in images:
                raise ValueError(
                    f"{path}:{lineno}: image {entry.image!r} also on line {images[entry.image]}; "
                    f"keep one row per image or {REBUILD}"
                )
            images[entry.image] = lineno
            if entry.identifier is not None and policy == "disambiguate":
                if entry.identifier in owner:
                    raise ValueError(
                        f"{path}:{lineno}: identifier {entry.identifier!r} is also on line {owner[entry.identifier]}, "
                        f"but the policy is 'disambiguate' (one image per identifier); make it unique or {REBUILD}"
                    )
                owner[entry.identifier] = lineno
            entries.append(entry)
        if isinstance(meta.get("sha256"), dict) and meta.get("images") != len(entries):
            raise ValueError(
                f"{path}: {len(entries)} rows but {meta_path} records {meta['images']}; the folder mixes two builds "
                f"(an interrupted build-index); {REBUILD}"
            )
        index = cls.__new__(cls)
        index._setup(entries, policy)
        return index


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify_part(directory: Path, meta: dict, name: str) -> None:
    """Raise ValueError when ``directory/name`` differs from the checksum the manifest recorded for it."""
    sums = meta.get("sha256")
    if not isinstance(sums, dict) or name not in sums:
        return  # an index written before manifests carried checksums
    path = directory / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing, but {directory / META_FILE} lists it; {REBUILD}")
    if file_sha256(path) != sums[name]:
        raise ValueError(
            f"{path}: does not match the checksum in {directory / META_FILE}: the folder mixes two builds "
            f"(build-index was interrupted) or the file was edited; {REBUILD} (after a deliberate hand edit, "
            f"delete the 'sha256' entry of {META_FILE} instead)"
        )


def read_stats(directory: str | os.PathLike) -> dict:
    """The ``stats.json`` of an index folder, verified against the manifest (see :meth:`IdentifierIndex.save`).

    Raises:
        FileNotFoundError: the folder has no manifest or no stats.
        ValueError: the stats belong to another build than the manifest; the message says to rebuild.
    """
    directory = Path(directory)
    meta = read_json(directory / META_FILE)
    if not isinstance(meta, dict):
        raise FileNotFoundError(f"{directory / META_FILE}: missing or unreadable; {REBUILD}")
    _verify_part(directory, meta, STATS_FILE)
    stats = read_json(directory / STATS_FILE)
    if not isinstance(stats, dict):
        raise ValueError(f"{directory / STATS_FILE}: missing or not a JSON object; {REBUILD}")
    return stats


def _entry_from_row(row: dict, where: str) -> IndexEntry:
    """Validate one ``index.jsonl`` row and return its entry (identifiers canonicalised); errors name ``where``."""
    fix = f"fix the row or {REBUILD}"
    image = row.get("image")
    if not isinstance(image, str) or not image:
        raise ValueError(f"{where}: 'image' must be a non-empty string, got {image!r}; {fix}")
    status = row.get("status")
    if status not in STATUSES:
        raise ValueError(f"{where}: 'status' must be ok, repaired or invalid, got {status!r}; {fix}")
    for key in ("identifier", "caption", "reason", "raw_identifier"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise ValueError(f"{where}: {key!r} must be a string or null, got {row[key]!r}; {fix}")
    problems = row.get("problems", [])
    if not isinstance(problems, list) or not all(isinstance(p, str) for p in problems):
        raise ValueError(f"{where}: 'problems' must be a list of strings, got {problems!r}; {fix}")
    identifier = raw = None
    if status in VALID_STATUSES:
        identifier = canonical_identifier(row.get("identifier") or "")
        if not identifier:
            raise ValueError(f"{where}: status {status!r} but identifier {row.get('identifier')!r} is empty; {fix}")
        raw = canonical_identifier(row["raw_identifier"]) if row.get("raw_identifier") else identifier
    return IndexEntry(
        image=image,
        identifier=identifier,
        status=status,
        problems=list(problems),
        caption=row.get("caption"),
        reason=row.get("reason"),
        raw_identifier=raw,
    )


# ---------------------------------------------------------------- building from swift infer results

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


def _regenerate_row(row: dict, image: str) -> dict:
    """Return a ``swift infer`` dataset row that asks again for this image's identifier."""
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
            return {"messages": kept, "images": [image]}
    caption = row.get("caption") if isinstance(row.get("caption"), str) else None
    return {"messages": [{"role": "user", "content": "<image>" + render_prompt(caption)}], "images": [image]}


def _counts(items: Iterable[str]) -> dict[str, int]:
    """Return counts, most common first (ties in first-seen order)."""
    return dict(Counter(items).most_common())


def _word_stats(identifiers: list[str]) -> dict:
    """Return min/median/mean/max and a histogram of identifier lengths in words."""
    lengths = [identifier_words(identifier) for identifier in identifiers]
    if not lengths:
        return {"min": None, "median": None, "mean": None, "max": None, "histogram": {}}
    return {
        "min": min(lengths),
        "median": statistics.median(lengths),
        "mean": round(statistics.fmean(lengths), 3),
        "max": max(lengths),
        "histogram": {str(k): v for k, v in sorted(Counter(lengths).items())},
    }


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


def build_index(
    results_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    collisions: CollisionPolicy = "shared",
    check_images: bool = True,
    image_root: str | os.PathLike | None = None,
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

    Returns:
        The stats written to ``stats.json``.

    Raises:
        FileNotFoundError: When ``results_path`` does not exist.
        ValueError: For an unknown policy, an empty file, or a file without a single usable row.
    """
    _check_policy(collisions)
    results_path, out_dir = Path(results_path), Path(out_dir)
    root = Path(image_root) if image_root is not None else Path.cwd()
    if image_root is not None and check_images and not root.is_dir():
        raise ValueError(f"image root {root} is not a directory; pass the folder the image paths are relative to")

    errors: list[dict] = []
    chosen: dict[str, tuple[IndexEntry, dict]] = {}
    rows_read = duplicates = 0

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
        try:
            image = _image_path(row)
        except ValueError as e:
            fail(lineno, f"{where}: {e}")
            continue
        if check_images and not image.startswith(_URL_PREFIXES):
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

    index = IdentifierIndex([entry for entry, _ in chosen.values()], policy=collisions)
    index_path = out_dir / INDEX_FILE
    regenerate = [_regenerate_row(row, entry.image) for entry, row in chosen.values() if entry.status == "invalid"]
    regenerate_path = out_dir / REGENERATE_FILE

    entries = index.entries
    status = Counter(entry.status for entry in entries)
    invalid = [entry for entry in entries if entry.status == "invalid"]
    groups = index.collision_groups()
    raw_identifiers = list(dict.fromkeys(e.raw_identifier for e in entries if e.raw_identifier is not None))
    stats = IndexBuildStats(
        results_path=str(results_path),
        out_dir=str(out_dir),
        policy=collisions,
        rows=rows_read,
        input_errors=errors,
        duplicate_rows=duplicates,
        images=len(entries),
        ok=status["ok"],
        repaired=status["repaired"],
        invalid=status["invalid"],
        invalid_by_reason=_counts(p for e in invalid for p in e.problems if p in REJECTION_CODES),
        problems=_counts(p for e in entries for p in e.problems),
        unique_identifiers=len(index),
        unique_raw_identifiers=len(raw_identifiers),
        collision_groups=len(groups),
        collision_images=sum(len(images) for images in groups.values()),
        collision_group_sizes={str(k): v for k, v in sorted(Counter(len(g) for g in groups.values()).items())},
        disambiguated=sum(1 for e in entries if e.identifier is not None and e.identifier != e.raw_identifier),
        identifier_words=_word_stats([e.raw_identifier for e in entries if e.raw_identifier is not None]),
        regenerate=len(regenerate),
        files={
            "index": str(index_path),
            "meta": str(out_dir / META_FILE),
            "stats": str(out_dir / STATS_FILE),
            "regenerate": str(regenerate_path),
        },
    )
    # Companions first, the index and its manifest last: the manifest's checksums tie the folder to one build.
    write_jsonl_atomic(regenerate_path, regenerate)
    write_json_atomic(out_dir / STATS_FILE, stats.to_dict())
    index.save(out_dir, companions=(STATS_FILE, REGENERATE_FILE))
    return stats
