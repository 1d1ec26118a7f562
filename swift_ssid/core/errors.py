"""The user-facing error type and the checks every command runs on its output paths before any work.

Exit-code policy of ``swift-ssid`` (see ``docs/errors.md``): 0 done; 2 the user's input or environment
(:class:`UserError`, and ``OSError`` / ``ValueError`` raised while validating inputs), printed as one line
``swift-ssid <cmd>: error: ...`` naming what is wrong and the fix; 1 a bug (the traceback is kept).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

MAX_LISTED = 5
"""How many offending items an error message names before it only counts the rest."""


class UserError(ValueError):
    """Bad input or environment: the message names the input, the value seen and the fix (exit status 2)."""


def _writable_dir(directory: Path, flag: str, path: Path) -> None:
    """Raise UserError unless ``directory`` (the nearest existing ancestor of ``path``) is a writable folder."""
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{flag} {path}: {probe} is a file, not a folder; choose a path under a folder")
    try:  # a real probe: permission bits say nothing for root, read-only mounts and special file systems
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise UserError(
            f"{flag} {path}: cannot write in folder {probe} ({e.strerror or e}); choose a writable location"
        ) from None


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """Check that ``path`` can be written as a file, before any work is done.

    Args:
        path: The file a command will write (it may exist; it will be replaced).
        flag: The option that named it (``--out``, ``--json``...), for the message.

    Returns:
        ``path`` as a Path.

    Raises:
        UserError: ``path`` is a folder, an existing file that cannot be replaced, or lies where no file
            can be created (a parent is a file, or a folder is not writable).
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a folder, expected a file name; pass a file path, e.g. {path}/out")
    _writable_dir(path.parent, flag, path)
    return path


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """Check that ``path`` can be created or written as a folder, before any work is done.

    Args:
        path: The folder a command will write into (created when missing).
        flag: The option that named it, for the message.

    Returns:
        ``path`` as a Path.

    Raises:
        UserError: ``path`` is an existing file, or a folder (it or its nearest existing parent) is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: is a file, expected a folder; pass a folder path or move the file")
    _writable_dir(path, flag, path)
    return path
