"""The package's layers, enforced: what each subpackage may import, and who may name an ``SSID_*`` variable.

core        no torch, transformers, ms-swift or evalscope, and nothing above it
decoding    torch + transformers, no ms-swift or evalscope; only core below it
encoders    torch + transformers (dual encoders), no ms-swift or evalscope; core and decoding below it
integration anything below; never workflows, reporting or cli
reporting   no torch, transformers, ms-swift; core only
workflows   anything but cli
cli         anything; but a command (a module under cli/ other than main.py) imports no other cli module

The check reads every import statement (lazy ones inside functions included) with ``ast``, and a
subprocess imports each core module on its own to prove that none of torch, transformers or swift loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "swift_ssid"
HEAVY = ("torch", "transformers", "swift", "evalscope", "peft", "trl", "accelerate")
LAYERS = ("core", "decoding", "encoders", "integration", "reporting", "workflows", "cli", "testing")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": (*HEAVY, *(f"swift_ssid.{layer}" for layer in LAYERS if layer != "core")),
    "decoding": (
        "swift",
        "evalscope",
        *(f"swift_ssid.{layer}" for layer in LAYERS if layer not in ("core", "decoding")),
    ),
    "encoders": (
        "swift",
        "evalscope",
        *(f"swift_ssid.{layer}" for layer in LAYERS if layer not in ("core", "decoding", "encoders")),
    ),
    "integration": ("swift_ssid.workflows", "swift_ssid.reporting", "swift_ssid.cli"),
    "reporting": (
        "torch",
        "transformers",
        "swift",
        "evalscope",
        "swift_ssid.integration",
        "swift_ssid.workflows",
        "swift_ssid.cli",
        "swift_ssid.decoding",
    ),
    "workflows": ("swift_ssid.cli",),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names if node.module == "swift_ssid"]
    return out


def _violates(name: str, forbidden: tuple[str, ...]) -> str | None:
    return next((f for f in forbidden if name == f or name.startswith(f + ".")), None)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer):
    bad = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for lineno, name in _imports(path):
            if rule := _violates(name, FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{lineno}: imports {name} ({layer} may not use {rule})")
    assert not bad, "\n".join(bad)


def test_cli_commands_import_no_other_cli_module():
    """What two commands share lives in a layer below (reporting, workflows, core); only main.py dispatches."""
    bad = []
    for path in sorted((PACKAGE / "cli").rglob("*.py")):
        if path.name in ("main.py", "__init__.py", "__main__.py"):
            continue
        for lineno, name in _imports(path):
            if _violates(name, ("swift_ssid.cli",)):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{lineno}: imports {name}")
    assert not bad, "move what commands share out of cli/:\n" + "\n".join(bad)


def test_the_checker_sees_lazy_imports(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    import torch\n    from swift_ssid.integration import templates\n")
    names = [name for _, name in _imports(sample)]
    assert _violates(names[0], FORBIDDEN["core"]) == "torch"
    assert _violates(names[1], FORBIDDEN["core"]) == "swift_ssid.integration"


def test_core_modules_import_without_torch_or_swift():
    modules = sorted(f"swift_ssid.core.{p.stem}" for p in (PACKAGE / "core").glob("*.py") if p.stem != "__init__")
    modules += ["swift_ssid.integration.settings", "swift_ssid.reporting.tables"]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(h for h in {HEAVY!r} if h in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String constants that are not docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_only_the_settings_module_names_ssid_variables():
    from swift_ssid.integration.settings import ENV_KEYS

    owner = PACKAGE / "integration" / "settings.py"
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == owner:
            continue
        for lineno, text in _code_strings(path):
            if any(key in text for key in ENV_KEYS):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{lineno}: {text[:80]!r}")
    assert not bad, "use SSIDSettings (swift_ssid.integration.settings) instead of naming variables:\n" + "\n".join(bad)
