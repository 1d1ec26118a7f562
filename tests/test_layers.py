"""The package's layers, enforced: what each subpackage may import, and who may name an ``SSID_*`` variable.

core        no torch, transformers, ms-swift or evalscope, and nothing above it
decoding    torch + transformers, no ms-swift or evalscope; only core below it
encoders    torch + transformers (dual encoders), no ms-swift or evalscope; core and decoding below it
integration anything below; never workflows, reporting or cli
reporting   no torch, transformers, ms-swift; core only
workflows   anything but cli and service
service     the search service (HTTP): anything but cli, and no layer but cli uses it (HTTP stays out of the rest)
cli         anything; but a command (a module under cli/ other than main.py) imports no other cli module
testing     tiny models built from config and the offline assets (real tokenizers): product code, since
            ``swift-ssid demo`` and ``fetch-assets`` run it; torch + transformers, no ms-swift or evalscope;
            only core below it, and only workflows and cli above it use it

The check reads every import statement (lazy ones inside functions included, relative ones resolved
against the module's package) with ``ast``, and a subprocess imports each core module on its own to prove
that none of torch, transformers or swift loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "swift_ssid"
HEAVY = ("torch", "transformers", "swift", "evalscope", "peft", "trl", "accelerate")
LAYERS = ("core", "decoding", "encoders", "integration", "reporting", "workflows", "service", "cli", "testing")
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
    "integration": (
        "swift_ssid.workflows",
        "swift_ssid.reporting",
        "swift_ssid.service",
        "swift_ssid.cli",
        "swift_ssid.testing",
    ),
    "reporting": (
        "torch",
        "transformers",
        "swift",
        "evalscope",
        "swift_ssid.integration",
        "swift_ssid.workflows",
        "swift_ssid.service",
        "swift_ssid.cli",
        "swift_ssid.decoding",
    ),
    "workflows": ("swift_ssid.cli", "swift_ssid.service"),
    "service": ("swift_ssid.cli", "swift_ssid.testing"),
    "testing": (
        "swift",
        "evalscope",
        *(f"swift_ssid.{layer}" for layer in LAYERS if layer not in ("core", "testing")),
    ),
}


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` import names (``from ..core import x`` in cli/m.py: ``swift_ssid.core``)."""
    if node.level == 0:
        return node.module or ""
    package = list(path.relative_to(PACKAGE.parent).parts[:-1])  # the package the module is in
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(path, node)
            out.append((node.lineno, module))
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names if module == "swift_ssid"]
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


def test_the_checker_resolves_relative_imports():
    """``from ..integration import x`` inside core/ is caught like its absolute spelling."""
    module = PACKAGE / "core" / "_layer_probe.py"  # never written: _absolute only reads the path
    parent = ast.parse("from ..integration import templates").body[0]
    sibling = ast.parse("from .answers import parse_answer").body[0]
    package = ast.parse("from . import answers").body[0]
    assert _absolute(module, parent) == "swift_ssid.integration"
    assert _violates(_absolute(module, parent), FORBIDDEN["core"]) == "swift_ssid.integration"
    assert _absolute(module, sibling) == "swift_ssid.core.answers"
    assert _absolute(PACKAGE / "core" / "__init__.py", package) == "swift_ssid.core"


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


def _environment_reads_of_settings(path: Path) -> list[int]:
    """Lines that read the environment with a key built by ``SSIDSettings.env_var(...)``.

    ``os.environ[...]``, ``os.environ.get(...)``, ``os.getenv(...)`` and ``... in os.environ``: naming a variable
    in a message is fine, reading it belongs to the settings module.
    """

    def names_env_var(node: ast.AST) -> bool:
        return any(
            isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "env_var"
            for n in ast.walk(node)
        )

    def is_environ(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "environ"
            or isinstance(node, ast.Name)
            and node.id == "environ"
        )

    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        key = None
        if isinstance(node, ast.Subscript) and is_environ(node.value) and isinstance(node.ctx, ast.Load):
            key = node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            if node.func.attr in ("get", "pop") and is_environ(node.func.value) or node.func.attr == "getenv":
                key = node.args[0]
        elif isinstance(node, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops):
            if any(is_environ(c) for c in node.comparators):
                key = node.left
        if key is not None and names_env_var(key):
            lines.append(node.lineno)
    return lines


def test_only_the_settings_module_reads_ssid_variables():
    owner = PACKAGE / "integration" / "settings.py"
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{lineno}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != owner
        for lineno in _environment_reads_of_settings(path)
    ]
    assert not bad, "read settings through SSIDSettings (from_env, is_set), not os.environ:\n" + "\n".join(bad)


def test_the_settings_read_check_sees_each_spelling(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text(
        "import os\n"
        "a = os.environ.get(SSIDSettings.env_var('target'), '')\n"
        "b = os.environ[SSIDSettings.env_var('target')]\n"
        "c = os.getenv(SSIDSettings.env_var('target'))\n"
        "d = SSIDSettings.env_var('target') in os.environ\n"
        "e = f'set {SSIDSettings.env_var(\"target\")}=noreason'\n"
    )
    assert _environment_reads_of_settings(sample) == [2, 3, 4, 5]
