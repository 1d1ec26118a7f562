"""``swift-ssid recipe NAME --collection FILE --out my.yaml``: a shipped recipe filled in for your collection.

The shipped recipes (``recipes/*.yaml``) are written for Flickr30K from the repository root: relative plugin
paths and Flickr30K paths in their ``ENV:`` block. The recipe this command writes works from any folder:

* ``custom_register_path`` is this installation's plugin file (``swift-ssid plugin-path``), an absolute path;
* the ``ENV:`` block names every path setting with your values (absolute), nothing from Flickr30K:
  ``SSID_COLLECTION``, ``SSID_IMAGE_ROOT`` (blank: the collection's folder), ``SSID_INDEX`` where the stage
  needs one, ``SSID_SKIP_INVALID``, ``SSID_ALPHA_BACKGROUND``; the recipe's target and protocol settings are kept;
* output paths (``result_path``, ``output_dir``) go under ``--runs`` (default ``runs/<collection name>/<family>``);
* ``--torch-dtype`` and ``--max-pixels`` replace the recipe's ``torch_dtype`` and ``max_pixels``;
* given an ``--index`` without reasons (``swift-ssid identifiers KIND``), a train recipe trains the ``-noreason``
  datasets and a retrieve recipe sets ``SSID_TARGET: noreason`` (the command says so).

A variable already set in your shell still wins over the ``ENV:`` block (ms-swift's rule, it logs a warning).

Example:
    swift-ssid recipe train_qwen2_5_vl --collection my/collection.jsonl --image-root my/images --out train.yaml
    swift sft train.yaml
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from swift_ssid.core.errors import UserError, check_output_file
from swift_ssid.core.jsonl import write_text_atomic
from swift_ssid.workflows.pipeline import DATASETS, index_target
from swift_ssid.workflows.run import DTYPES

RECIPES_DIR = Path(__file__).resolve().parents[1] / "data" / "recipes"  # package data; recipes/ links here
_RUNS = re.compile(r"^runs/flickr30k/([\w.]+)/?")


EPILOG = """example:
  swift-ssid recipe train_qwen2_5_vl --collection my/collection.jsonl --image-root my/images --out train.yaml
  swift sft train.yaml

The written recipe loads this installation's plugin by absolute path and names your paths in its ENV:
block, so it runs from any folder; a variable set in your shell still wins over the ENV: block."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the recipe arguments to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "name", nargs="?", help="a shipped recipe (e.g. train_qwen2_5_vl; `--list` shows all) or a recipe file"
    )
    parser.add_argument("--collection", help="your collection .jsonl or Karpathy-split .json (required)")
    parser.add_argument("--image-root", help="folder the image paths are relative to (default: the collection's)")
    parser.add_argument("--index", help="identifier index folder (default: RUNS/index)")
    parser.add_argument("--runs", help="folder for this recipe's outputs (default: runs/<collection name>/<family>)")
    parser.add_argument("--model", help="model folder or hub id instead of the recipe's")
    parser.add_argument("--skip-invalid", action="store_true", help="leave out the rows `swift-ssid check` flags")
    parser.add_argument("--alpha-background", help="colour transparency is composited onto (default white)")
    parser.add_argument("--torch-dtype", "--torch_dtype", choices=DTYPES, help="instead of the recipe's torch_dtype")
    parser.add_argument(
        "--max-pixels", "--max_pixels", type=int, help="image size cap in pixels instead of the recipe's max_pixels"
    )
    parser.add_argument("--out", help="the recipe file to write (required)")
    parser.add_argument("--list", action="store_true", help="list the shipped recipes and exit")


def shipped_recipes() -> list[str]:
    """Names of the shipped recipes (empty when this installation has no ``recipes/`` folder)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")) if RECIPES_DIR.is_dir() else []


def _source(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    candidate = RECIPES_DIR / f"{name.removesuffix('.yaml')}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(shipped_recipes()) or f"none: no recipes folder at {RECIPES_DIR}; pass a recipe file"
    raise UserError(f"no recipe {name!r}; use one of: {known}")


def fill_recipe(config: dict[str, Any], args: argparse.Namespace, plugin: Path) -> dict[str, Any]:
    """Return ``config`` with the plugin path, the user's paths and outputs under ``--runs`` (see the module doc)."""
    from swift_ssid.integration.settings import SSIDSettings

    collection = Path(args.collection).expanduser().resolve()
    family = next((m.group(1) for v in config.values() if isinstance(v, str) and (m := _RUNS.match(v))), "model")
    runs = Path(args.runs).expanduser().resolve() if args.runs else Path.cwd() / "runs" / collection.stem / family
    out = dict(config)
    old_env = dict(out.pop("ENV", None) or {})
    env = {
        SSIDSettings.env_var("collection"): str(collection),
        SSIDSettings.env_var("image_root"): str(Path(args.image_root).expanduser().resolve())
        if args.image_root
        else "",
    }
    for field in ("target", "infer_reason", "protocol", "train_size"):
        name = SSIDSettings.env_var(field)
        if name in old_env:
            env[name] = old_env[name]
    if SSIDSettings.env_var("index_dir") in old_env:
        env[SSIDSettings.env_var("index_dir")] = str(Path(args.index).resolve()) if args.index else str(runs / "index")
    env[SSIDSettings.env_var("skip_invalid")] = "true" if args.skip_invalid else "false"
    if args.alpha_background:
        env[SSIDSettings.env_var("alpha_background")] = args.alpha_background
    SSIDSettings.from_env({k: str(v) for k, v in env.items()}, ignore=("index_dir",))  # validates the values
    out["custom_register_path"] = [str(plugin)]
    if args.model:
        out["model"] = args.model
    if getattr(args, "torch_dtype", None):
        out["torch_dtype"] = args.torch_dtype
    if getattr(args, "max_pixels", None):
        if args.max_pixels < 1:
            raise UserError(f"--max-pixels {args.max_pixels}: must be a positive number of pixels")
        out["max_pixels"] = args.max_pixels
    for key, value in out.items():
        if isinstance(value, str) and _RUNS.match(value):
            out[key] = str(runs / _RUNS.sub("", value)) if _RUNS.sub("", value) else str(runs)
    return {"ENV": env, **out}


def match_index_target(filled: dict[str, Any], index: str | None) -> str | None:
    """Switch ``filled`` to the identifier-only target when ``index`` has no reasons; return a note, or None.

    A train recipe then trains the ``-noreason`` datasets, a retrieve recipe retrieves with ``SSID_TARGET: noreason``
    (kind indexes of ``swift-ssid identifiers`` carry no reasons, and the reason datasets need one per image).
    """
    from swift_ssid.integration.settings import SSIDSettings

    if not index or not (Path(index) / "index.jsonl").is_file() or index_target(index) == "reason":
        return None
    env = filled["ENV"]
    reason, noreason = DATASETS["reason"], DATASETS["noreason"]
    switched = False
    datasets = filled.get("dataset")
    if isinstance(datasets, list) and any(d in reason for d in datasets):
        filled["dataset"] = [noreason[reason.index(d)] if d in reason else d for d in datasets]
        switched = True
    if SSIDSettings.env_var("index_dir") in env and (switched or "val_dataset" in filled):
        env[SSIDSettings.env_var("target")] = "noreason"
        env.pop(SSIDSettings.env_var("infer_reason"), None)
        switched = True
    if not switched:
        return None
    return (
        f"index {index} has no reasons: this recipe uses the identifier-only target "
        f"({' '.join(noreason) if filled.get('dataset') else SSIDSettings.env_var('target') + ': noreason'})"
    )


def run(args: argparse.Namespace) -> int:
    """Write the filled-in recipe; 0 on success (UserError for a bad name or path)."""
    import yaml

    if args.list:
        print("\n".join(shipped_recipes()) or f"no recipes folder at {RECIPES_DIR}")
        return 0
    needed = (("NAME", args.name), ("--collection", args.collection), ("--out", args.out))
    missing = [flag for flag, value in needed if not value]
    if missing:
        raise UserError(f"{' and '.join(missing)} required")
    out = check_output_file(args.out, "--out")
    if not Path(args.collection).is_file():
        raise UserError(f"collection {args.collection} does not exist; pass your collection .jsonl or .json")
    if args.image_root and not Path(args.image_root).is_dir():
        raise UserError(f"image root {args.image_root} is not a folder; pass the folder of the images")
    source = _source(args.name)
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    plugin = Path(__file__).resolve().parents[1] / "plugin.py"
    filled = fill_recipe(config, args, plugin)
    note = match_index_target(filled, args.index)
    head = []
    for line in source.read_text(encoding="utf-8").splitlines():  # the recipe's leading comment block
        if not line.startswith("#"):
            break
        if "repository root" not in line and "recipes/" not in line:
            head.append(line)
    text = (
        f"# Written by `swift-ssid recipe {args.name}` from {source}; runs from any folder.\n"
        "# A variable already set in your shell wins over this ENV: block.\n"
        + "\n".join(head)
        + "\n"
        + yaml.safe_dump(filled, sort_keys=False, allow_unicode=True)
    )
    write_text_atomic(out, text)
    if note:
        print(note)
    command = "sft" if source.stem.startswith("train") else "infer"
    print(f"wrote {out}; run: swift {command} {out}")
    return 0
