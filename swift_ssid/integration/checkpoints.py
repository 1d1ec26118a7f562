"""What a ``swift sft`` output holds: its newest checkpoint and the target it was trained on.

The one module that reads checkpoints' ``args.json`` (ms-swift writes it into every output and checkpoint
folder). Pure: no torch, no ms-swift import.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from swift_ssid.core.jsonl import read_json

REASON_DATASETS = {
    "ssid-memorize": "reason",
    "ssid-retrieve": "reason",
    "ssid-memorize-noreason": "noreason",
    "ssid-retrieve-noreason": "noreason",
}
"""SSID training datasets -> the target they teach (``swift sft --dataset``)."""


def last_checkpoint(output_dir: str | os.PathLike) -> Path:
    """The newest checkpoint in ``output_dir``: ``last-checkpoint``, else the highest ``checkpoint-N``.

    Raises:
        FileNotFoundError: there is none.
    """
    output_dir = Path(output_dir)
    link = output_dir / "last-checkpoint"
    if link.exists():
        return link.resolve()
    numbered = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.rsplit("-", 1)[-1].isdigit()]
    checkpoints = sorted(numbered, key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    if not checkpoints:
        raise FileNotFoundError(f"swift sft wrote no checkpoint-N under {output_dir}")
    return checkpoints[-1]


def datasets_target(names: Sequence[str], source: str = "training") -> str | None:
    """The training target that ``swift sft --dataset`` names imply: ``reason``, ``noreason`` or None (unknown).

    Args:
        names: dataset names as ms-swift records them (``ssid-retrieve``, ``ssid-memorize-noreason#500``, files).
        source: where the names come from, for the error message.

    Raises:
        ValueError: the names mix reason and no-reason SSID datasets.
    """
    targets: dict[str, list[str]] = {}
    for name in names:
        base = str(name).split("#", 1)[0].split(":", 1)[0]
        if base in REASON_DATASETS:
            targets.setdefault(REASON_DATASETS[base], []).append(str(name))
    if len(targets) > 1:
        raise ValueError(
            f"{source} mixes reason datasets {targets['reason']} and no-reason datasets {targets['noreason']}; "
            "an ablation model is trained on one target only"
        )
    return next(iter(targets), None)


def checkpoint_training_target(checkpoint: str | os.PathLike) -> str | None:
    """The target a ``swift sft`` checkpoint was trained on, from the ``dataset`` list in its ``args.json``.

    Args:
        checkpoint: a checkpoint (or output) directory of ``swift sft``.

    Returns:
        ``reason``, ``noreason``, or None when it has no ``args.json`` or names no SSID dataset (dataset files).

    Raises:
        ValueError: its datasets mix the two targets.
    """
    args_file = Path(checkpoint) / "args.json"
    if not args_file.is_file():
        return None
    args = read_json(args_file)
    names = (args.get("dataset") if isinstance(args, dict) else None) or []
    return datasets_target(names if isinstance(names, list) else [names], source=str(args_file))
