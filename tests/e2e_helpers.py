"""Helpers shared by the end-to-end tests that run the real ``swift`` / ``swift-ssid`` commands on tiny models."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from swift_ssid.testing.tiny_models import OFFLINE_ENV
from swift_ssid.workflows.pipeline import PLUGIN_FILE, run_logged, swift_executable

# One BLAS/OpenMP thread per process: on 2 cores shared with other jobs, torch's default thread pool spins
# against the other processes and a tiny model's sft step takes 3x longer (0.5 s vs 1.6 s measured here).
TINY_MODEL_ENV: dict[str, str] = {**OFFLINE_ENV, "OMP_NUM_THREADS": "1"}
SSID_KEYS = ("SSID_INDEX", "SSID_TARGET", "SSID_INFER_REASON", "SSID_COLLECTION", "SSID_PROTOCOL", "SSID_TRAIN_SIZE")


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process' environment without inherited ``SSID_*`` settings, plus :data:`TINY_MODEL_ENV` and ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in SSID_KEYS}
    return {**env, **TINY_MODEL_ENV, **extra}


def swift(command: str, args: list[str], log: Path, plugin: bool = True, **env: str) -> float:
    """Run ``swift COMMAND [--custom_register_path <plugin>] ARGS``; return its wall time (StageError on failure).

    Args:
        command: ``infer``, ``sft``, ...
        args: the command's flags.
        log: file for its stdout and stderr.
        plugin: pass the SSID plugin file; False relies on a checkpoint's ``args.json`` to re-import it.
        **env: extra environment variables.
    """
    cmd = [swift_executable(), command, *(["--custom_register_path", str(PLUGIN_FILE)] if plugin else []), *args]
    return run_logged(cmd, log, subprocess_env(**env))


def swift_ssid(args: list[str], log: Path, **env: str) -> float:
    """Run ``swift-ssid ARGS`` (as ``python -m swift_ssid.cli``); return its wall time (StageError on failure)."""
    return run_logged([sys.executable, "-m", "swift_ssid.cli", *args], log, subprocess_env(**env))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON Lines file (all must parse)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as JSON Lines; return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def check_run_against_index(rows: list, index: Any, ks: tuple[int, ...] = (1, 5, 10)) -> dict[int, float]:
    """Assert a run file is what the index and the metric say it is, and return its R@K by hand.

    Each row's ``images`` are its identifiers expanded through the index in beam order with repeats dropped
    (the paper's image-level ranking), and ``evaluate_run``'s R@K equals the share of rows whose gold image is
    among the first K of them, counted here without the metric code. A run whose images were not built from
    its identifiers, or a metric that counts otherwise, fails.
    """
    from swift_ssid.core.metrics import evaluate_run

    for row in rows:
        expanded: list[str] = []
        for identifier in row.identifiers:
            expanded += [i for i in (index.images_for(identifier) if identifier in index else []) if i not in expanded]
        assert row.images == expanded, f"{row.query_id}: images {row.images} are not {row.identifiers} expanded"
    by_hand = {k: sum(bool(set(r.gold_images) & set(r.images[:k])) for r in rows) / len(rows) for k in ks}
    metrics = evaluate_run(rows, ks)
    assert {k: metrics.r_at(k) for k in ks} == by_hand
    return by_hand
