"""The reason ablation (Table III): reason in training and inference / training only / neither."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from swift_ssid.integration.checkpoints import checkpoint_training_target
from swift_ssid.workflows.protocols.runner import (
    NO_ENV_TARGET,
    ProtocolResult,
    RetrieveOptions,
    check_queries,
    retrieve,
    write_tables,
)

logger = logging.getLogger(__name__)

REASON_SETTINGS: tuple[str, ...] = ("train+infer", "train-only", "none")
"""``setting.reason`` values, in the order of the paper's Table III."""
REASON_RUN_STEMS = {
    "train+infer": "run_reason_train_infer",
    "train-only": "run_reason_train_only",
    "none": "run_noreason",
}


def run_ablation(
    opts: RetrieveOptions,
    queries: str | os.PathLike,
    out_dir: str | os.PathLike,
    reason_checkpoint: str | os.PathLike | None,
    noreason_checkpoint: str | os.PathLike | None,
    settings: Sequence[str] = REASON_SETTINGS,
) -> ProtocolResult:
    """The reason ablation (Table III): one run per setting, from the two checkpoints of the ablation's trainings.

    ``train+infer`` and ``train-only`` query the checkpoint trained with reasons (``train_*.yaml``), the second
    ending each response after the identifier line (``--no-reason``); ``none`` queries the checkpoint trained
    without (``train_*_noreason.yaml``, ``--target noreason``). A checkpoint whose ``args.json`` names the other
    target's datasets is refused.

    Args:
        opts: the shared retrieve options.
        queries: the queries file (test captions).
        out_dir: where runs, logs and tables go.
        reason_checkpoint: ``swift sft`` checkpoint trained on ``ssid-memorize``/``ssid-retrieve``.
        noreason_checkpoint: checkpoint trained on the ``-noreason`` datasets.
        settings: which of :data:`REASON_SETTINGS` to run.

    Returns:
        The runs and the table by ``reason``.
    """
    out_dir = Path(out_dir)
    unknown = [s for s in settings if s not in REASON_SETTINGS]
    if unknown or not settings:
        raise ValueError(f"ablation settings {list(settings)}: use some of {', '.join(REASON_SETTINGS)}")
    plans = {  # setting -> (checkpoint, training target, extra retrieve flags)
        "train+infer": (reason_checkpoint, "reason", []),
        "train-only": (reason_checkpoint, "reason", ["--no-reason"]),
        "none": (noreason_checkpoint, "noreason", []),
    }
    for setting in settings:
        checkpoint, target, _ = plans[setting]
        flag = "--reason-adapter" if target == "reason" else "--noreason-adapter"
        if checkpoint is None:
            raise ValueError(f"setting {setting!r} needs the checkpoint trained with target {target}: pass {flag}")
        trained = checkpoint_training_target(checkpoint)
        if trained is None:
            logger.warning(
                "%s: its args.json names no SSID dataset; assuming it was trained with target %s", checkpoint, target
            )
        elif trained != target:
            raise ValueError(
                f"{flag} {checkpoint} was trained on the {trained} datasets (args.json), but setting {setting!r} needs "
                f"a model trained with target {target}; swap the checkpoints"
            )
    check_queries(opts, queries)
    runs: dict[str, Path] = {}
    for setting in settings:
        checkpoint, target, extra = plans[setting]
        stem = REASON_RUN_STEMS[setting]
        runs[setting] = retrieve(
            opts,
            queries,
            out_dir / f"{stem}.jsonl",
            {"protocol": "ablation"},
            out_dir / "logs" / f"{stem}.log",
            checkpoint,
            ["--target", target, *extra],
            env=NO_ENV_TARGET,
        )
    table, markdown = write_tables(list(runs.values()), "reason", out_dir, "Reason ablation (Table III)")
    return ProtocolResult(runs, table, markdown, {"table.md": out_dir / "table.md", "table.csv": out_dir / "table.csv"})
