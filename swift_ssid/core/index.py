"""The identifier index and its folder: the one place that writes and reads an index folder.

An index names, for each image, its identifier; :class:`IdentifierIndex` holds it with an explicit collision
policy. Every index folder (``swift-ssid build-index``, every kind of ``swift-ssid identifiers``) is written by
:func:`write_index` and read through :func:`read_manifest` (:func:`load_index`, :func:`read_stats`,
:func:`index_kind`). The folder holds:

* ``index.jsonl``: one row per image (image, identifier, status, problems, caption, reason, raw_identifier), in
  input order;
* ``stats.json``: counts for the build report; the counts of the index itself come from :func:`index_counts`
  (one word count: :func:`swift_ssid.core.answers.identifier_words`), the builder adds its own;
* ``regenerate.jsonl``: images without a usable identifier as ``swift infer`` dataset rows; other companion files
  a builder names (``new_tokens.txt``);
* ``index_meta.json``, the manifest, written last: format version, collision policy, counts, the index version
  (``index_version``), the builder's extra keys (``kind``, ``params``) and the SHA-256 of every other file, so a
  folder mixing two builds is refused.

Index versions: every write adds a version. ``versions/NNNN/`` holds each version as a complete folder of the files
above; ``current`` is a relative symlink to the current one, switched with one ``os.replace``, so a kill at any
moment leaves the index wholly old or wholly new. The files above also sit at the top of the folder as symlinks
through ``current`` (``index.jsonl -> current/index.jsonl``), so every path that named them still does; readers
resolve ``current`` once and read that version. A folder in the flat layout of before (regular files, no
``current``) is version 1 and loads as it is; the first write into it copies it to ``versions/0001`` (the same
bytes), points ``current`` there, turns the top-level files into links one by one (each still the same bytes), and
only then adds version 2. Old versions stay until :func:`prune_versions` (``swift-ssid index prune``).

Collision policies (two images, one identifier):

* ``shared`` (default): the identifier names all its images, in input order; retrieval expands it
  to that list.
* ``disambiguate``: the first image keeps the identifier; each later one gets `` - 2``, `` - 3`` ...
  in input order, skipping any suffix that would equal another existing identifier.

Building from ``swift infer`` results is :func:`swift_ssid.core.index_build.build_index` (also importable from
here).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from swift_ssid.core.answers import REJECTION_CODES, canonical_identifier, identifier_words
from swift_ssid.core.jsonl import iter_jsonl, read_json, write_json_atomic, write_jsonl_atomic, write_text_atomic

if TYPE_CHECKING:  # for type checkers; at run time ``__getattr__`` (at the end) imports them on first use
    from swift_ssid.core.index_build import IndexBuildStats, build_index  # noqa: F401

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
VERSIONS_DIR = "versions"
CURRENT_LINK = "current"
VERSION_KEY = "index_version"
"""The manifest key of the index version (1, 2, ...); a manifest without it (written before versions) is version 1."""
_VERSION_NAME = re.compile(r"\d{4,}")
REBUILD = "rebuild the index with `swift-ssid build-index` (a kind's index: `swift-ssid identifiers`)"


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


def check_policy(policy: str) -> None:
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
        check_policy(policy)
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

    def with_added(self, entries: Iterable[IndexEntry]) -> IdentifierIndex:
        """A new index: these entries after the existing ones, whose identifiers never change.

        Each new identifier is resolved against the existing ones with the index's policy: under ``shared`` it
        joins the images that already have it; under ``disambiguate`` it gets the first free `` - N`` suffix.

        Raises:
            ValueError: an image already in the index or listed twice, or a bad entry (see the constructor).
        """
        entries = list(entries)
        known = [e.image for e in entries if e.image in self._by_image]
        if known:
            raise ValueError(f"image {known[0]!r} is already in the index; remove it first to replace its identifier")
        fresh = self._resolve(entries, "shared")  # checks the entries, canonical raw identifiers
        taken = set(self._by_identifier) | {e.raw_identifier for e in self._entries if e.raw_identifier}
        taken |= {e.raw_identifier for e in fresh if e.raw_identifier}
        out = []
        for entry in fresh:
            final = entry.raw_identifier
            if (
                final is not None
                and self._policy == "disambiguate"
                and (final in self._by_identifier or final in {e.identifier for e in out})
            ):
                n = 2
                while f"{final} - {n}" in taken:
                    n += 1
                final = f"{final} - {n}"
                taken.add(final)
            out.append(replace(entry, identifier=final))
        index = IdentifierIndex.__new__(IdentifierIndex)
        index._setup([*self._entries, *out], self._policy)
        return index

    def without(self, images: Iterable[str]) -> IdentifierIndex:
        """A new index without these images; every other entry keeps its identifier.

        Raises:
            ValueError: an image that is not in the index.
        """
        images = set(images)
        missing = sorted(images - set(self._by_image))
        if missing:
            raise ValueError(f"image {missing[0]!r} is not in the index; list the paths as index.jsonl stores them")
        index = IdentifierIndex.__new__(IdentifierIndex)
        index._setup([e for e in self._entries if e.image not in images], self._policy)
        return index

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index alone into ``directory`` (no stats): :func:`write_index` with nothing else.

        Returns:
            The path of ``index.jsonl``.
        """
        return write_index(directory, self)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> IdentifierIndex:
        """Read an index folder: :func:`load_index`."""
        return load_index(directory)


# ---------------------------------------------------------------- the folder: one writer, one reader


def write_index(
    directory: str | os.PathLike,
    index: IdentifierIndex,
    stats: Mapping[str, Any] | None = None,
    *,
    regenerate: Iterable[dict] | None = None,
    texts: Mapping[str, str] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a new version of an index folder and make it the current one with one ``os.replace``.

    The version is written whole into a hidden staging folder (the companions, then ``index.jsonl``, then the
    manifest), renamed to ``versions/NNNN``, and only then does ``current`` point to it (see the module docstring),
    so a kill at any moment leaves the folder's current version wholly old or wholly new. The manifest holds the
    SHA-256 of every file, so a hand-mixed folder is still refused on load.

    Args:
        directory: The index directory; created when missing (a flat folder of before is adopted as version 1).
        index: The index.
        stats: The ``stats.json`` object (None: no stats file is written).
        regenerate: Rows of ``regenerate.jsonl`` (None: not written).
        texts: Further companion files, name -> text (``new_tokens.txt``).
        meta: Extra manifest keys (``kind``, ``params``, ``new_tokens_file``), after the standard ones.

    Returns:
        The path of ``index.jsonl`` (at the top of the folder, a link into the new version).
    """
    directory = Path(directory)
    versions = directory / VERSIONS_DIR
    versions.mkdir(parents=True, exist_ok=True)
    _clear_staging(versions)
    _adopt_flat(directory)
    number = max(list_versions(directory), default=0) + 1
    staging = versions / f"{_STAGING}{number:04d}-{os.getpid()}"
    staging.mkdir()
    companions: list[str] = []
    if regenerate is not None:
        write_jsonl_atomic(staging / REGENERATE_FILE, regenerate)
        companions.append(REGENERATE_FILE)
    for name, text in (texts or {}).items():
        write_text_atomic(staging / name, text)
        companions.append(name)
    if stats is not None:
        write_json_atomic(staging / STATS_FILE, dict(stats))
        companions.insert(0, STATS_FILE)
    write_jsonl_atomic(staging / INDEX_FILE, (entry.to_dict() for entry in index.entries))
    manifest = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "policy": index.policy,
        "images": len(index.entries),
        "identifiers": len(index),
        VERSION_KEY: number,
        "sha256": {name: file_sha256(staging / name) for name in (INDEX_FILE, *companions)},
        **(meta or {}),
    }
    write_json_atomic(staging / META_FILE, manifest)
    os.rename(staging, versions / _version_name(number))  # fails, rather than mixing, if another writer took it
    _switch(directory, number, [INDEX_FILE, META_FILE, *companions])
    return directory / INDEX_FILE


# ---------------------------------------------------------------- versions: the pointer, the links, the list

_STAGING = ".staging-"
_PRUNING = ".pruning-"


def _version_name(number: int) -> str:
    return f"{number:04d}"


def version_dir(directory: str | os.PathLike) -> Path:
    """The folder holding the current version's files, read once (a reader then sees one version throughout).

    ``current``'s target when the top-level manifest is a link through it; else the folder itself (a flat folder of
    before, a ``versions/NNNN`` folder given directly, or a folder whose top-level manifest was replaced by hand).
    """
    directory = Path(directory)
    pointer = directory / CURRENT_LINK
    if (directory / META_FILE).is_symlink() and pointer.is_symlink():
        return directory / os.readlink(pointer)
    return directory


def index_version(directory: str | os.PathLike) -> int:
    """The version of an index folder's current index (1 for a folder written before versions)."""
    return int(read_manifest(directory).get(VERSION_KEY, 1))


def list_versions(directory: str | os.PathLike) -> list[int]:
    """The numbers of the versions kept under ``versions/``, ascending (``[]`` for a flat folder of before)."""
    versions = Path(directory) / VERSIONS_DIR
    if not versions.is_dir():
        return []
    return sorted(int(p.name) for p in versions.iterdir() if _VERSION_NAME.fullmatch(p.name) and p.is_dir())


def describe_versions(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per version (``swift-ssid index versions``): number, current or not, images, identifiers, kind.

    A flat folder of before is one row, version 1. A version whose manifest cannot be read says why in ``error``.
    """
    directory = Path(directory)
    if not (directory / CURRENT_LINK).is_symlink():
        meta = read_manifest(directory)
        return [_version_row(1, True, directory, meta)]
    current = index_version(directory)
    rows = []
    for number in list_versions(directory):
        folder = directory / VERSIONS_DIR / _version_name(number)
        try:
            rows.append(_version_row(number, number == current, folder, read_manifest(folder)))
        except (OSError, ValueError) as e:
            rows.append({"version": number, "current": number == current, "path": str(folder), "error": str(e)})
    return rows


def _version_row(number: int, current: bool, folder: Path, meta: dict) -> dict[str, Any]:
    return {
        "version": int(meta.get(VERSION_KEY, number)),
        "current": current,
        "path": str(folder),
        "kind": str(meta.get("kind") or "ssid"),
        "images": meta.get("images"),
        "identifiers": meta.get("identifiers"),
    }


def prune_versions(directory: str | os.PathLike, keep: int = 1) -> list[int]:
    """Delete all versions but the current one and the ``keep - 1`` newest others; return the numbers deleted.

    Each version is first renamed to a hidden name, then deleted, so a kill leaves no half-deleted version behind.

    Raises:
        ValueError: ``keep`` below 1.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be a whole number >= 1 (the current version is always kept), got {keep!r}")
    directory = Path(directory)
    if not (directory / CURRENT_LINK).is_symlink():
        return []  # a flat folder of before: one version
    versions = directory / VERSIONS_DIR
    _clear_staging(versions)  # and what a killed prune left
    current = index_version(directory)
    others = [n for n in list_versions(directory) if n != current]
    doomed = others[: max(0, len(others) - (keep - 1))]
    for number in doomed:
        gone = versions / f"{_PRUNING}{number:04d}-{os.getpid()}"
        os.rename(versions / _version_name(number), gone)
        shutil.rmtree(gone)
    return doomed


def _clear_staging(versions: Path) -> None:
    """Delete the staging and pruning folders that killed writers left (never a live process' own)."""
    for path in versions.iterdir():
        if not path.name.startswith((_STAGING, _PRUNING)):
            continue
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _adopt_flat(directory: Path) -> None:
    """Turn a flat folder of before into ``versions/0001`` + ``current`` + links, the same bytes at every step."""
    pointer = directory / CURRENT_LINK
    if pointer.is_symlink():
        return
    if pointer.exists():
        raise ValueError(
            f"{pointer}: a folder, not the link swift-ssid writes (was the index copied without its links?); "
            "copy index folders with `cp -a`, or write to a new folder"
        )
    try:
        meta = read_manifest(directory)
    except (OSError, ValueError):
        return  # nothing readable to keep: the folder's first version is the one being written
    number = int(meta.get(VERSION_KEY, 1))
    sums = meta.get("sha256") if isinstance(meta.get("sha256"), dict) else {}
    names = [n for n in dict.fromkeys([INDEX_FILE, *sums, STATS_FILE, REGENERATE_FILE]) if (directory / n).is_file()]
    versions = directory / VERSIONS_DIR
    final = versions / _version_name(number)
    if final.exists():
        shutil.rmtree(final)  # an adoption killed before it pointed ``current`` there: nothing reads it
    staging = versions / f"{_STAGING}{number:04d}-{os.getpid()}"
    staging.mkdir()
    for name in [*names, META_FILE]:
        shutil.copy2(directory / name, staging / name)
    os.rename(staging, final)
    _switch(directory, number, [*names, META_FILE])


def _switch(directory: Path, number: int, names: Iterable[str]) -> None:
    """Link ``names`` at the top through ``current``, point ``current`` at version ``number``, drop stale links."""
    names = list(names)
    for name in names:
        _link(directory / name, f"{CURRENT_LINK}/{name}")
    _link(directory / CURRENT_LINK, f"{VERSIONS_DIR}/{_version_name(number)}")  # the one switch
    for path in directory.iterdir():
        if path.is_symlink() and path.name not in names and os.readlink(path).startswith(f"{CURRENT_LINK}/"):
            if not path.exists():
                path.unlink()  # a file the current version does not have


def _link(path: Path, target: str) -> None:
    """Make ``path`` a symlink to ``target`` with one ``os.replace`` (nothing when it already is one)."""
    if path.is_symlink() and os.readlink(path) == target:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest (``index_meta.json``) of an index folder, its format, version and policy checked.

    Every reader of an index folder starts here.

    Raises:
        FileNotFoundError: The folder has no manifest.
        ValueError: The manifest is not JSON, or of another format, version or policy; the message says to rebuild.
    """
    meta_path = version_dir(directory) / META_FILE
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
    if meta.get("policy") not in POLICIES:
        raise ValueError(
            f"{meta_path}: policy {meta.get('policy')!r} is not one of {', '.join(POLICIES)}; fix the file"
        )
    return meta


def load_index(directory: str | os.PathLike) -> IdentifierIndex:
    """Read an index folder written by :func:`write_index`, validating every row against its manifest.

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
    directory = version_dir(directory)
    meta_path = directory / META_FILE
    meta = read_manifest(directory)
    policy = meta["policy"]
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
    index = IdentifierIndex.__new__(IdentifierIndex)
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
    """The ``stats.json`` of an index folder, verified against the manifest (see :func:`write_index`).

    Raises:
        FileNotFoundError: the folder has no manifest.
        ValueError: the stats are missing, or belong to another build than the manifest; the message says to rebuild.
    """
    directory = version_dir(directory)
    _verify_part(directory, read_manifest(directory), STATS_FILE)
    stats = read_json(directory / STATS_FILE)
    if not isinstance(stats, dict):
        raise ValueError(f"{directory / STATS_FILE}: missing or not a JSON object; {REBUILD}")
    return stats


def read_companion(directory: str | os.PathLike, name: str) -> str:
    """The text of a companion file of an index folder (``new_tokens.txt``), verified against the manifest.

    Raises:
        FileNotFoundError: the folder has no manifest, or the file is missing.
        ValueError: the file belongs to another build than the manifest; the message says to rebuild.
    """
    directory = version_dir(directory)
    _verify_part(directory, read_manifest(directory), name)
    path = directory / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {REBUILD}")
    return path.read_text(encoding="utf-8")


def index_kind(directory: str | os.PathLike) -> str:
    """The identifier kind the manifest records (``ssid`` for indexes from ``swift-ssid build-index``)."""
    return str(read_manifest(directory).get("kind") or "ssid")


def index_files(directory: str | os.PathLike) -> dict[str, str]:
    """The paths of an index folder's files, as ``stats.json`` lists them under ``files``."""
    directory = Path(directory)
    names = {"index": INDEX_FILE, "meta": META_FILE, "stats": STATS_FILE, "regenerate": REGENERATE_FILE}
    return {key: str(directory / name) for key, name in names.items()}


# ---------------------------------------------------------------- counts of an index (the stats every folder has)


def index_counts(index: IdentifierIndex) -> dict[str, Any]:
    """The counts every ``stats.json`` holds, from the index alone (builders add their own keys).

    Returns:
        ``images``; ``ok``, ``repaired``, ``invalid`` (answer statuses); ``invalid_by_reason`` (rejection codes of
        invalid images) and ``problems`` (all problem codes), most common first; ``unique_identifiers`` and
        ``unique_raw_identifiers`` (after / before disambiguation); ``collision_groups``, ``collision_images``,
        ``collision_group_sizes`` (group size -> groups); ``disambiguated`` (identifiers suffixed by the policy);
        ``identifier_words`` (:func:`word_stats` of the raw identifiers).
    """
    entries = index.entries
    status = Counter(entry.status for entry in entries)
    groups = index.collision_groups()
    raws = [e.raw_identifier for e in entries if e.raw_identifier is not None]
    return {
        "images": len(entries),
        "ok": status["ok"],
        "repaired": status["repaired"],
        "invalid": status["invalid"],
        "invalid_by_reason": _counts(
            p for e in entries if e.status == "invalid" for p in e.problems if p in REJECTION_CODES
        ),
        "problems": _counts(p for e in entries for p in e.problems),
        "unique_identifiers": len(index),
        "unique_raw_identifiers": len(dict.fromkeys(raws)),
        "collision_groups": len(groups),
        "collision_images": sum(len(images) for images in groups.values()),
        "collision_group_sizes": {str(k): v for k, v in sorted(Counter(len(g) for g in groups.values()).items())},
        "disambiguated": sum(1 for e in entries if e.identifier is not None and e.identifier != e.raw_identifier),
        "identifier_words": word_stats(raws),
    }


def _counts(items: Iterable[str]) -> dict[str, int]:
    """Return counts, most common first (ties in first-seen order)."""
    return dict(Counter(items).most_common())


def word_stats(identifiers: Iterable[str]) -> dict[str, Any]:
    """min/median/mean/max and a histogram of identifier lengths in words (`` - `` is no word: see identifier_words).

    Example:
        >>> word_stats(["two white males - bushes", "dog"])["max"]
        4
    """
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


def __getattr__(name: str) -> Any:
    """``build_index`` and ``IndexBuildStats`` live in :mod:`swift_ssid.core.index_build`; importable from here too."""
    if name in ("build_index", "IndexBuildStats"):
        from swift_ssid.core import index_build

        return getattr(index_build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
