"""``upstream/ms-swift/0001-import-plugins-by-module-name.patch`` applied to a copy of the pinned ms-swift 4.6.0.

The installed ``swift`` package is copied to a temporary folder, the patch is applied with ``patch -p1`` and that
folder goes first on ``PYTHONPATH``. Then:

* the patch's own unit tests (``tests/utils/test_import_external_plugins.py``, ms-swift's unittest style) pass
  against the patched copy, entry points and replay in a fresh interpreter included;
* the real ``swift sft --custom_register_path swift_ssid`` (the package name, run from an unrelated folder)
  registers the SSID template and datasets: importing ``swift_ssid`` itself registers nothing (it is cheap and
  torch-free), but the patched ms-swift also imports the module that the installed distribution declares for
  that name (``[project.entry-points."swift.plugins"] swift_ssid = "swift_ssid.plugin"`` in pyproject.toml). It
  trains the tiny Qwen2 text model for 2 steps with ``--template ssid_qwen2_5 --dataset ssid-retrieve`` and
  writes a checkpoint whose ``args.json`` names the plugin by its package name;
* the canary: the unpatched ms-swift still refuses the same flag with ``ImportError: Cannot import external
  file``. When this fails, upstream has fixed it (or changed the message): update the README's "Load the plugin".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from e2e_helpers import subprocess_env

from swift_ssid.core.caption_identifiers import write_caption_results
from swift_ssid.core.collection import load_collection
from swift_ssid.core.index import build_index
from swift_ssid.integration.settings import SSIDSettings
from swift_ssid.testing.tiny_models import DEMO_DIR, SFT_CPU_FLAGS, build_tiny_qwen2_text
from swift_ssid.workflows.pipeline import swift_executable

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
PATCH = REPO_ROOT / "upstream" / "ms-swift" / "0001-import-plugins-by-module-name.patch"
PLUGIN_NAME = "swift_ssid"
ENTRY_POINT_GROUP = "swift.plugins"  # read by the patched ms-swift (PLUGIN_ENTRY_POINT_GROUP in swift/utils/utils.py)
STEPS = 2


def patched_copy(dest: Path, patch: Path) -> Path:
    """Copy the installed ``swift`` package into ``dest`` (laid out like the ms-swift repository) and apply ``patch``.

    Args:
        dest: an empty folder.
        patch: a ``git format-patch`` file against the ms-swift repository.

    Returns:
        ``dest``, to put first on ``PYTHONPATH``.
    """
    import swift

    shutil.copytree(Path(swift.__file__).parent, dest / "swift", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run(
        ["patch", "-p1", "--forward", "--no-backup-if-mismatch", "-i", str(patch)],
        cwd=dest,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"{patch.name} does not apply to ms-swift {swift.__version__}:\n{proc.stdout}"
    return dest


@pytest.fixture(scope="module")
def patched_swift(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return patched_copy(tmp_path_factory.mktemp("ms-swift"), PATCH)


@pytest.fixture(scope="module")
def sft_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny text model, and SSID settings (demo collection, caption-derived index) for ``ssid-retrieve``."""
    root = tmp_path_factory.mktemp("plugin-by-name")
    items = load_collection(DEMO_DIR / "collection.jsonl")
    write_caption_results(((item.image, item.captions[0]) for item in items), root / "results.jsonl")
    build_index(root / "results.jsonl", root / "index")
    settings = SSIDSettings(index_dir=root / "index", collection=str(DEMO_DIR / "collection.jsonl"))
    cwd = root / "elsewhere"  # no `swift_ssid` folder here: the name must be found as a module
    cwd.mkdir()
    return {"model": build_tiny_qwen2_text(root / "model"), "env": settings.to_env(), "root": root, "cwd": cwd}


def _sft(inputs: dict, out: Path, *python_path: str) -> subprocess.CompletedProcess:
    """``swift sft --custom_register_path swift_ssid`` from the unrelated folder, ``python_path`` first on
    ``PYTHONPATH`` (then the checkout, then the inherited ``PYTHONPATH``, so both see the same installed metadata)."""
    flags = list(SFT_CPU_FLAGS)
    flags[flags.index("--tuner_type") + 1] = "full"
    cmd = [swift_executable(), "sft", "--custom_register_path", PLUGIN_NAME, "--model", str(inputs["model"])]
    cmd += ["--model_type", "qwen2", "--template", "ssid_qwen2_5", "--torch_dtype", "float32", *flags]
    cmd += ["--dataset", "ssid-retrieve", "--max_steps", str(STEPS), "--save_steps", str(STEPS)]
    cmd += ["--per_device_train_batch_size", "4", "--logging_steps", "1", "--output_dir", str(out)]
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = subprocess_env(**inputs["env"], PYTHONPATH=os.pathsep.join([*python_path, str(REPO_ROOT), *inherited]))
    return subprocess.run(cmd, cwd=inputs["cwd"], env=env, capture_output=True, text=True, timeout=600)


def test_patch_unit_tests_pass_on_the_patched_copy(patched_swift):
    env = {**os.environ, "PYTHONPATH": str(patched_swift), "OMP_NUM_THREADS": "1"}
    unit_tests = "tests/utils/test_import_external_plugins.py"  # added by the patch
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", unit_tests]
    proc = subprocess.run(cmd, cwd=patched_swift, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "11 passed" in proc.stdout


def test_swift_sft_registers_the_plugin_by_package_name_with_the_patch(patched_swift, sft_inputs):
    declared = [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP, name=PLUGIN_NAME)]
    fix = "reinstall the project (pip install -e .) so its metadata has pyproject.toml's entry point"
    assert declared == ["swift_ssid.plugin"], f"{ENTRY_POINT_GROUP} {PLUGIN_NAME!r}: {declared}; {fix}"
    out = sft_inputs["root"] / "sft"
    proc = _sft(sft_inputs, out, str(patched_swift))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert f"Successfully imported external_plugins: ['{PLUGIN_NAME}']" in log
    checkpoint = out / f"checkpoint-{STEPS}"
    assert (checkpoint / "model.safetensors").is_file(), sorted(p.name for p in out.rglob("*"))
    args = json.loads((checkpoint / "args.json").read_text())
    assert args["custom_register_path"] == [PLUGIN_NAME] and PLUGIN_NAME in args["external_plugins"]
    assert args["template"] == "ssid_qwen2_5" and args["dataset"] == ["ssid-retrieve"]
    # the rows came from the SSID loader: identifier:<...> targets built from the caption-derived index
    assert "ssid-retrieve: " in log and " rows (protocol standard" in log


def test_unpatched_ms_swift_still_refuses_a_module_name(sft_inputs):
    """Canary: fails once upstream imports module names again (then drop the patch and update the README)."""
    proc = _sft(sft_inputs, sft_inputs["root"] / "sft-unpatched")
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"ImportError: Cannot import external file: {sft_inputs['cwd'] / PLUGIN_NAME}" in log, log[-3000:]
