"""The settings of ``swift-ssid run`` (and ``demo --model``) as a pipeline, and running it to the result block.

:data:`DEFAULTS` names every setting with its default; :func:`pipeline_config` turns resolved settings into a
:class:`~swift_ssid.workflows.pipeline.PipelineConfig`; :func:`run_pipeline` runs every stage and returns the
result block. Errors propagate (:class:`~swift_ssid.workflows.pipeline.CollectionError`,
:class:`~swift_ssid.workflows.pipeline.StageError`, ``ValueError``); the command line turns them into exit codes.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from swift_ssid.core.errors import UserError
from swift_ssid.workflows.pipeline import Pipeline, PipelineConfig, format_summary

DTYPES = ("float32", "float16", "bfloat16")
"""torch dtype names a model (``--torch-dtype``) or a dual encoder (``--dtype``) can be loaded in."""

DEFAULTS: dict[str, Any] = {
    "image_root": None,
    "model": None,
    "template": None,
    "model_type": None,
    "torch_dtype": None,
    "max_pixels": 401408,
    "identifiers": "auto",
    "index": None,
    "min_usable": 0.8,
    "out": "ssid_run",
    "protocol": "standard",
    "tuner": "lora",
    "max_steps": None,
    "epochs": 3,
    "learning_rate": 1e-4,
    "batch_size": 4,
    "sft_args": "",
    "k": 10,
    "retrieve_batch_size": 8,
    "generate_max_new_tokens": 128,
    "retrieve_max_new_tokens": 64,
    "skip_invalid": False,
    "alpha_background": "#ffffff",
    "memorisation_images": 100,
}
"""Every setting's default (flags default to None so that a ``--config`` file can fill them in)."""


def add_model_arguments(
    group: argparse._ActionsContainer, model_help: str, template_help: str, dtype_help: str
) -> None:
    """Add the model settings' flags (``--model``, ``--template``, ``--model-type``, ``--torch-dtype``) to ``group``."""
    group.add_argument("--model", help=model_help)
    group.add_argument("--template", help=template_help)
    group.add_argument("--model-type", help="ms-swift model type, when it cannot be told from the model")
    group.add_argument("--torch-dtype", help=dtype_help)


def model_flags(s: dict[str, Any]) -> list[str]:
    """The swift flags that load the model (model type, dtype, image size cap)."""
    flags: list[str] = []
    if s["model_type"]:
        flags += ["--model_type", s["model_type"]]
    if s["torch_dtype"]:
        flags += ["--torch_dtype", s["torch_dtype"]]
    return flags


def sft_flags(s: dict[str, Any]) -> list[str]:
    """The ``swift sft`` flags from the training settings."""
    flags = ["--tuner_type", s["tuner"], "--learning_rate", str(s["learning_rate"])]
    flags += ["--per_device_train_batch_size", str(s["batch_size"]), "--add_version", "false"]
    if s["max_steps"]:
        flags += ["--max_steps", str(s["max_steps"]), "--save_steps", str(s["max_steps"])]
    else:
        flags += ["--num_train_epochs", str(s["epochs"])]
    return flags + shlex.split(s["sft_args"] or "")


def pipeline_config(s: dict[str, Any]) -> PipelineConfig:
    """The :class:`~swift_ssid.workflows.pipeline.PipelineConfig` of resolved settings (keys: :data:`DEFAULTS`).

    Raises:
        UserError: ``collection``, ``model`` or ``template`` is missing.
    """
    missing = [name for name in ("collection", "model", "template") if not s[name]]
    if missing:
        raise UserError(f"missing {', '.join(missing)}: pass them as arguments or in --config")
    return PipelineConfig(
        workdir=Path(s["out"]).resolve(),
        collection=Path(s["collection"]),
        image_root=Path(s["image_root"]) if s["image_root"] else None,
        model=str(s["model"]),
        template=s["template"],
        model_flags=model_flags(s),
        identifier_source=s["identifiers"],
        index=Path(s["index"]) if s["index"] else None,
        min_valid_share=float(s["min_usable"]),
        sft_flags=sft_flags(s),
        protocol=s["protocol"],
        k=int(s["k"]),
        generate_max_new_tokens=int(s["generate_max_new_tokens"]),
        retrieve_max_new_tokens=int(s["retrieve_max_new_tokens"]),
        retrieve_batch_size=int(s["retrieve_batch_size"]),
        env={"MAX_PIXELS": str(s["max_pixels"])},
        skip_invalid=bool(s["skip_invalid"]),
        alpha_background=str(s["alpha_background"]),
        memorisation_images=int(s["memorisation_images"]),
    )


def run_pipeline(config: PipelineConfig, title: str) -> str:
    """Run every stage (resuming finished ones) and return the result block under ``title``.

    Raises:
        CollectionError: the collection has problem rows (the message lists them).
        StageError: a stage's command failed (the message names it and the end of its log).
        ValueError: a setting or input cannot be used (e.g. a collection without test images).
    """
    return format_summary(Pipeline(config).run_all(), title)


def add_retrieval_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and index flags of every command that retrieves with a trained model (retrieve, search, serve)."""
    parser.add_argument("--model", required=True, help="model id or local directory (the base model with --adapters)")
    parser.add_argument("--adapters", nargs="*", default=[], metavar="A", help="LoRA checkpoint(s) from swift sft")
    parser.add_argument("--model_type", "--model-type", default=None, help="ms-swift model type (local dirs)")
    parser.add_argument(
        "--template",
        required=True,
        help="SSID template: ssid_<ms-swift template>, e.g. ssid_qwen2_5_vl, ssid_qwen2_vl, ssid_llava1_6_vicuna_hf",
    )
    parser.add_argument("--index", required=True, metavar="DIR", help="identifier index (swift-ssid build-index)")
    parser.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=64, help="tokens per response")
    parser.add_argument("--torch-dtype", "--torch_dtype", choices=DTYPES, default=None, help="default: the model's")
    parser.add_argument(
        "--target",
        choices=("reason", "noreason"),
        default=None,
        help="the model's training target: identifier + reason line (reason) or identifier only (noreason); "
        "default: the adapters' args.json, else the target setting (environment), else reason",
    )
    parser.add_argument(
        "--no-reason",
        action="store_true",
        help="end each response after the identifier line (the paper's 'reason in training only' ablation)",
    )
