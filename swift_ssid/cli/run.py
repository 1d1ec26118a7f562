"""``swift-ssid run COLLECTION``: the whole SSID method on your collection, from images to R@K and an HTML report.

One resumable command over :class:`swift_ssid.workflows.pipeline.Pipeline`: check the collection, write
identifiers (``swift infer``), build the index, train (``swift sft``), retrieve the test captions, evaluate.
Every stage writes into the work folder (``--out``); running the same command again resumes.

Settings come from flags, or from a YAML/JSON file (``--config``) whose keys are the flag names
(``learning-rate: 1e-4`` or ``learning_rate: 1e-4``); a flag given on the command line wins over the file.

Examples:
    swift-ssid run my/collection.jsonl --image-root my/images --model Qwen/Qwen2.5-VL-7B-Instruct \\
        --template ssid_qwen2_5_vl --out runs/mine --skip-invalid
    swift-ssid run my/collection.jsonl --model MODEL --template ssid_qwen2_5_vl --identifiers caption-derived
    swift-ssid run my/collection.jsonl --model MODEL --template ssid_qwen2_5_vl --index my_index/
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from swift_ssid.core.errors import UserError, check_output_dir
from swift_ssid.workflows.run import DEFAULTS, add_model_arguments, pipeline_config, run_pipeline

EPILOG = """examples:
  swift-ssid run my/collection.jsonl --image-root my/images --model Qwen/Qwen2.5-VL-7B-Instruct \\
      --template ssid_qwen2_5_vl --out runs/mine --skip-invalid
  swift-ssid run my/collection.jsonl --model MODEL --template ssid_qwen2_5_vl --identifiers caption-derived
  swift-ssid run --config my_settings.yaml

Every stage writes into --out; running the same command again resumes. The run ends with image-level
R@1/5/10 on the test captions and on the training captions of memorised images (each beside chance) and
an HTML report. Guide: docs/own-collection.md"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the run arguments to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    d = DEFAULTS
    parser.add_argument("collection", nargs="?", help="collection .jsonl or Karpathy-split .json (or in --config)")
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of settings (keys: the flag names)")
    parser.add_argument("--image-root", help="folder the image paths are relative to (default: the collection's)")
    parser.add_argument("--out", help=f"work folder; running again resumes (default {d['out']})")
    g = parser.add_argument_group("model")
    add_model_arguments(
        g,
        model_help="model folder or hub id (required)",
        template_help="SSID template: ssid_<ms-swift template>, e.g. ssid_qwen2_5_vl (required)",
        dtype_help="bfloat16, float16 or float32 (default: the model's)",
    )
    g.add_argument(
        "--max-pixels",
        type=int,
        help=f"image size cap in pixels, the same in every stage (default {d['max_pixels']}, as the recipes)",
    )
    g = parser.add_argument_group("identifiers")
    g.add_argument(
        "--identifiers",
        choices=("auto", "model", "caption-derived"),
        help="auto (default): the model's answers, or the labelled caption-derived fallback when fewer than "
        "--min-usable are usable; model: never fall back; caption-derived: skip stage 1",
    )
    g.add_argument(
        "--index",
        metavar="DIR",
        help="a prebuilt identifier index folder (swift-ssid build-index or swift-ssid identifiers KIND); skips "
        "stages 1 and 2",
    )
    g.add_argument("--min-usable", type=float, help=f"usable share of model answers needed (default {d['min_usable']})")
    g = parser.add_argument_group("training (swift sft)")
    g.add_argument("--protocol", choices=("standard", "zeroshot"), help="default standard (memorise every image)")
    g.add_argument("--tuner", choices=("lora", "full"), help=f"default {d['tuner']}")
    g.add_argument("--max-steps", type=int, help="training steps (default: --epochs)")
    g.add_argument("--epochs", type=float, help=f"training epochs (default {d['epochs']})")
    g.add_argument("--learning-rate", type=float, help=f"default {d['learning_rate']}")
    g.add_argument("--batch-size", type=int, help=f"per-device batch size (default {d['batch_size']})")
    g.add_argument("--sft-args", help='more swift sft flags as one string, e.g. "--lora_rank 16 --deepspeed zero2"')
    g = parser.add_argument_group("retrieval")
    g.add_argument("--k", type=int, help=f"beams = identifiers per query (default {d['k']})")
    g.add_argument("--retrieve-batch-size", type=int, help=f"queries per batch (default {d['retrieve_batch_size']})")
    g.add_argument(
        "--generate-max-new-tokens", type=int, help=f"stage 1 budget (default {d['generate_max_new_tokens']})"
    )
    g.add_argument(
        "--retrieve-max-new-tokens", type=int, help=f"retrieval budget (default {d['retrieve_max_new_tokens']})"
    )
    g.add_argument(
        "--memorisation-images",
        type=int,
        help="training images whose training captions are also queried, as a memorisation check "
        f"(default {d['memorisation_images']}; 0: none)",
    )
    g = parser.add_argument_group("images")
    g.add_argument(
        "--skip-invalid",
        action="store_true",
        default=None,
        help="leave out the rows `swift-ssid check` flags (listed in OUT/skipped.jsonl) instead of stopping",
    )
    g.add_argument(
        "--alpha-background",
        help="colour transparent image areas are composited onto, in every stage and the report (default white)",
    )


def load_config(path: str) -> dict[str, Any]:
    """Read a YAML or JSON settings file into ``{setting: value}`` (dashes in keys become underscores).

    Raises:
        UserError: the file is not a mapping, or names an unknown setting (the message lists the known ones).
    """
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".json"):
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of setting: value, got {type(data).__name__}")
    out = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(out) - set(DEFAULTS) - {"collection"})
    if unknown:
        raise UserError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; use any of collection, {', '.join(DEFAULTS)}"
        )
    return out


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The settings in force: command-line flags, else the ``--config`` file, else :data:`DEFAULTS`."""
    config = load_config(args.config) if getattr(args, "config", None) else {}
    out = {}
    for key in ("collection", *DEFAULTS):
        value = getattr(args, key, None)
        out[key] = value if value is not None else config.get(key, DEFAULTS.get(key))
    return out


def run(args: argparse.Namespace) -> int:
    """Resolve the settings and run the pipeline."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    settings = resolve(args)
    config = pipeline_config(settings)
    check_output_dir(settings["out"], "--out")
    print(run_pipeline(config, f"SSID run on {config.collection} ({config.model}, K={config.k})"))
    return 0
