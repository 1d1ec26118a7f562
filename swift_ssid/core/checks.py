"""Collection checks: every row and every image file, each problem one line with ``file:line`` and the fix.

:func:`check_collection` reads a collection leniently (a bad row is a problem, not an exception) and
checks each image the way the stages will use it:

==================  ==========================================================================================
code                what
==================  ==========================================================================================
``bad-row``         the row is malformed (no image path, unknown split, no captions, an empty caption, ...)
``missing-file``    the image file does not exist under the image root
``svg``             an SVG (vector) file: ms-swift and PIL cannot decode it
``unreadable``      PIL cannot open or fully decode the file (not an image, truncated, unsupported format)
``duplicate-path``  the same image file is listed on two rows (the later row is the problem)
``duplicate-image`` two files with identical bytes (the later row is the problem)
``tiny-image``      a side shorter than :data:`MIN_SIDE` pixels
``extreme-aspect``  longer side / shorter side above :data:`MAX_ASPECT` (Qwen2-VL's resizer refuses > 200)
``huge-image``      more than :data:`MAX_PIXELS` pixels (PIL's decompression-bomb limit)
==================  ==========================================================================================

A text-only row (``id`` + ``text``, no image) names no file: only ``bad-row`` and ``duplicate-path`` (its id
listed twice) apply to it.

Rows with a problem are left out of :attr:`CheckReport.items`; ``--skip-invalid`` uses those items and lists
the problems in a file. Decoding is cached per file (size and modification time) when a cache file is
given, so the pipeline can check at the start of every stage cheaply. Pure module (PIL only).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from swift_ssid.core.collection import CollectionItem, read_rows
from swift_ssid.core.jsonl import read_json, write_json_atomic, write_jsonl_atomic

MIN_SIDE = 8
MAX_ASPECT = 50.0
MAX_PIXELS = 89_478_485
CACHE_VERSION = 1

FIXES: dict[str, str] = {
    "bad-row": "or drop the row",
    "missing-file": "pass the folder the image paths are relative to as --image-root, or drop the row",
    "svg": "convert it to PNG (e.g. `rsvg-convert -o x.png x.svg` or `inkscape x.svg -o x.png`) and list the PNG",
    "unreadable": "re-export the file as PNG or JPEG, or drop the row",
    "duplicate-path": "list each image once, with all its captions on one row",
    "duplicate-image": "drop one of the two rows, or merge their captions onto one row",
    "tiny-image": f"use a larger image (at least {MIN_SIDE} px a side) or drop the row",
    "extreme-aspect": f"crop or pad the image to an aspect ratio of at most {MAX_ASPECT:g}:1, or drop the row",
    "huge-image": f"downscale the image below {MAX_PIXELS:,} pixels",
}


@dataclass(frozen=True)
class Problem:
    """One problem of one row.

    Attributes:
        where: ``file:line`` (or ``file images[i]``) of the row.
        code: a key of :data:`FIXES`.
        message: what is wrong, with the value seen.
        image: the image path of the row, when it has one.
    """

    where: str
    code: str
    message: str
    image: str | None = None

    @property
    def fix(self) -> str:
        """What to do about it."""
        return FIXES[self.code]

    def line(self) -> str:
        """The problem as one line: ``where: [code] message; fix``."""
        return f"{self.where}: [{self.code}] {self.message}; {self.fix}"


@dataclass
class CheckReport:
    """The outcome of :func:`check_collection`.

    Attributes:
        collection: the collection file checked.
        rows: rows read (well-formed or not).
        items: the rows without any problem, in file order.
        problems: every problem, in file order.
    """

    collection: str
    rows: int
    items: list[CollectionItem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no row has a problem."""
        return not self.problems

    def summary(self) -> str:
        """One line: rows, usable rows, problems by code."""
        codes: dict[str, int] = {}
        for p in self.problems:
            codes[p.code] = codes.get(p.code, 0) + 1
        detail = ", ".join(f"{c} {n}" for c, n in codes.items())
        return f"{self.collection}: {self.rows} rows, {len(self.items)} usable, {len(self.problems)} problem(s)" + (
            f" ({detail})" if detail else ""
        )

    def write_skipped(self, path: str | os.PathLike) -> Path:
        """List the problems as JSON Lines (one problem a line: where, code, message, fix, image)."""
        rows = [{**asdict(p), "fix": p.fix} for p in self.problems]
        write_jsonl_atomic(path, rows)
        return Path(path)


def _inspect(path: str) -> dict:
    """Decode one image file fully: ``{"error": code, "message": ...}`` or ``{"width", "height", "sha1"}``."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return {"error": "unreadable", "message": f"cannot read {path}: {e.strerror or e}"}
    head = data[:512].lstrip().lower()
    svg_text = head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower())
    if path.lower().endswith((".svg", ".svgz")) or svg_text:
        return {"error": "svg", "message": f"{path} is an SVG (vector) image, which PIL and ms-swift cannot decode"}
    import io

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            width, height = im.size
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        return {"error": "unreadable", "message": f"PIL cannot decode {path} ({type(e).__name__}: {e})"}
    return {"width": width, "height": height, "sha1": hashlib.sha1(data).hexdigest()}


def _inspect_all(paths: Iterable[str], cache_path: Path | None, workers: int) -> dict[str, dict]:
    """Inspect every file (in threads), reusing cached results for files whose size and mtime are unchanged."""
    cache = read_json(cache_path, {}) if cache_path else {}
    entries = cache.get("files", {}) if isinstance(cache, dict) and cache.get("version") == CACHE_VERSION else {}
    out: dict[str, dict] = {}
    todo: list[tuple[str, list]] = []
    for path in dict.fromkeys(paths):
        try:
            st = os.stat(path)
        except OSError:
            continue
        stamp = [st.st_size, st.st_mtime_ns]
        cached = entries.get(path)
        if isinstance(cached, dict) and cached.get("stamp") == stamp:
            out[path] = cached["result"]
        else:
            todo.append((path, stamp))
    if todo:
        from tqdm import tqdm

        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_inspect, [p for p, _ in todo])
            for (path, stamp), result in tqdm(
                zip(todo, results, strict=True), total=len(todo), desc="checking images", disable=len(todo) < 200
            ):
                out[path] = result
                entries[path] = {"stamp": stamp, "result": result}
        if cache_path:
            write_json_atomic(cache_path, {"version": CACHE_VERSION, "files": entries})
    return out


def check_collection(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    cache: str | os.PathLike | None = None,
    workers: int = 4,
) -> CheckReport:
    """Check every row and image of a collection (see the module docstring for the problem codes).

    Args:
        path: a collection ``.jsonl`` or Karpathy-split ``.json`` file.
        image_root: the folder image paths are relative to (default: the collection file's folder).
        cache: optional JSON file caching decode results by file size and modification time.
        workers: threads decoding images.

    Returns:
        The report: usable items and problems, both in file order.

    Raises:
        FileNotFoundError / ValueError: the collection file itself cannot be read, or the image root is not
            a folder (nothing to check row by row).
    """
    if image_root is not None and not Path(image_root).is_dir():
        raise FileNotFoundError(
            f"image root {image_root} is not a directory; pass the folder the collection's image paths are relative to"
        )
    problems: list[Problem] = []

    def bad_row(where: str, image: str | None, message: str) -> None:
        if message.startswith(where):  # "file:line (image): what": keep "what"
            message = message[len(where) :].split(": ", 1)[-1]
        problems.append(Problem(where, "bad-row", message, image))

    items = read_rows(path, image_root, on_error=bad_row)
    rows = len(items) + len(problems)
    found = _inspect_all(
        (it.image for it in items if it.has_image and os.path.isfile(it.image)), Path(cache) if cache else None, workers
    )
    good: list[CollectionItem] = []
    seen_path: dict[str, str] = {}
    seen_hash: dict[str, str] = {}
    for item in items:
        mine: list[Problem] = []

        def add(code: str, message: str, item: CollectionItem = item, mine: list[Problem] = mine) -> None:
            mine.append(Problem(item.where, code, message, item.image))

        if item.image in seen_path:
            add("duplicate-path", f"{item.image} is already listed at {seen_path[item.image]}")
        seen_path.setdefault(item.image, item.where)
        info = found.get(item.image) if item.has_image else {}  # a text row names no file to check
        if info is None:
            add("missing-file", f"image file {item.image} does not exist")
        elif "error" in info:
            add(info["error"], info["message"])
        elif info:
            w, h = info["width"], info["height"]
            if min(w, h) < MIN_SIDE:
                add("tiny-image", f"{item.image} is {w}x{h} px")
            elif max(w, h) / min(w, h) > MAX_ASPECT:
                add("extreme-aspect", f"{item.image} is {w}x{h} px (aspect {max(w, h) / min(w, h):.0f}:1)")
            if w * h > MAX_PIXELS:
                add("huge-image", f"{item.image} is {w}x{h} px")
            if info["sha1"] in seen_hash and not mine:
                add("duplicate-image", f"{item.image} has the same bytes as the image at {seen_hash[info['sha1']]}")
            seen_hash.setdefault(info["sha1"], item.where)
        problems.extend(mine)
        if not mine:
            good.append(item)
    problems.sort(key=lambda p: _order(p.where))
    return CheckReport(collection=str(path), rows=rows, items=good, problems=problems)


def _order(where: str) -> tuple[int, str]:
    """Sort key putting problems in file order (``file:12`` or ``file images[12]``)."""
    tail = where.rsplit(":", 1)[-1] if ":" in where else where.rsplit("[", 1)[-1].rstrip("]")
    return (int(tail), where) if tail.isdigit() else (0, where)
