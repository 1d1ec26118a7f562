"""JSON Lines input and output: tolerant reading, atomic writing, resumable appending.

Every artifact of the pipeline is JSON Lines (one JSON object a line, UTF-8). Readers here report
a bad line with its file and line number instead of failing on the whole file; writers either
replace a file atomically (temp file + ``os.replace``) or append one flushed line at a time.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield each non-blank line of a JSON Lines file as ``(line_number, object, error)``.

    Args:
        path: The file to read.

    Returns:
        An iterator of ``(lineno, obj, None)`` for good lines and ``(lineno, None, message)`` for
        lines that are not UTF-8, not JSON or not a JSON object; line numbers start at 1 and blank
        lines are skipped. Messages name the file and line.

    Raises:
        FileNotFoundError: When the file does not exist (``IsADirectoryError`` when it is a folder).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, expected a JSON Lines file; pass the file inside it")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; check the path (it is read as JSON Lines)")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield lineno, None, f"{path}:{lineno}: not UTF-8 ({e.reason} at byte {e.start}); save the file as UTF-8"
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, None, f"{path}:{lineno}: bad JSON ({e.msg} at column {e.colno}); fix or drop the line"
                continue
            if not isinstance(obj, dict):
                kind = type(obj).__name__
                yield lineno, None, f"{path}:{lineno}: expected a JSON object, got {kind}; write one {{...}} per line"
                continue
            yield lineno, obj, None


def read_jsonl(path: PathLike) -> list[dict]:
    """Read a whole JSON Lines file, failing on the first bad line.

    Args:
        path: The file to read.

    Returns:
        The objects in file order (blank lines skipped).

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: For the first line that is not a JSON object; the message names file and line.
    """
    rows = []
    for _, obj, error in iter_jsonl(path):
        if error is not None:
            raise ValueError(error)
        rows.append(obj)
    return rows


def _dumps(row: Any) -> str:
    """Return one JSON line (UTF-8 kept readable, no embedded newlines)."""
    return json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"


def write_jsonl_atomic(path: PathLike, rows: Iterable[dict]) -> int:
    """Write rows as JSON Lines to ``path`` atomically: readers see the old file or the complete new one.

    Args:
        path: The destination; parent directories are created.
        rows: JSON-serialisable dicts.

    Returns:
        The number of rows written.
    """

    def write(f) -> int:
        count = 0
        for row in rows:
            f.write(_dumps(row))
            count += 1
        return count

    return _write_atomic(path, write)


def write_json_atomic(path: PathLike, obj: Any) -> None:
    """Write one JSON document (indented, UTF-8) to ``path`` atomically.

    Args:
        path: The destination; parent directories are created.
        obj: A JSON-serialisable object.
    """
    _write_atomic(path, lambda f: f.write(json.dumps(obj, ensure_ascii=False, indent=2, allow_nan=False) + "\n"))


def _current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(path: PathLike) -> int:
    """The mode a file written to ``path`` should get: an existing file's own, else ``0o666`` less the umask.

    ``tempfile.mkstemp`` creates files ``0600``; a temp file renamed into place gets this mode first, so
    atomic writes leave the same permissions as a plain ``open(path, "w")`` would.
    """
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_current_umask()


def atomic_temp_path(path: PathLike) -> tuple[int, Path]:
    """Create a temp file beside ``path`` (parents created) with :func:`new_file_mode`; return ``(fd, temp path)``.

    Raises:
        OSError: the folder cannot be created or written; the message names ``path`` and the fix.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise type(e)(e.errno, f"{path}: cannot write here ({e.strerror}); choose a writable location") from None
    os.fchmod(fd, new_file_mode(path))
    return fd, Path(tmp)


def _write_atomic(path: PathLike, write, binary: bool = False) -> Any:
    """Run ``write(file)`` on a temp file beside ``path``, fsync it, move it into place (see :func:`new_file_mode`)."""
    path = Path(path)
    fd, tmp = atomic_temp_path(path)
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            result = write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


def write_bytes_atomic(path: PathLike, write) -> Any:
    """Run ``write(binary_file)`` into a temp file beside ``path`` and move it into place atomically."""
    return _write_atomic(path, write, binary=True)


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    _write_atomic(path, lambda f: f.write(text))


def read_json(path: PathLike, default: Any = None) -> Any:
    """The JSON value in ``path``, or ``default`` when the file is missing, unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def append_jsonl(path: PathLike, row: dict) -> None:
    """Append one row to a JSON Lines file and flush it, for incremental, resumable outputs.

    If the file ends in a partial line (a writer was killed mid-line), a newline is written first so
    the partial line stays a single bad line (reported by :func:`iter_jsonl`) and the new row is intact.

    Args:
        path: The file; it and its parent directories are created when missing.
        row: A JSON-serialisable dict.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = _dumps(row)
    with path.open("ab+") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode("utf-8"))
        f.flush()
