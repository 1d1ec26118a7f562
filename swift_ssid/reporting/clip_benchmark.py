"""A run's R@K in LAION ``clip_benchmark``'s result layout, so ``clip_benchmark build`` tables it beside CLIP rows.

``clip_benchmark eval --task zeroshot_retrieval --recall_k 1 5 10 --output x.json`` (PyPI 1.6.2) writes
``{"dataset", "model", "pretrained", "task": "zeroshot_retrieval", "metrics": {...}, "language"}``; its
``image_retrieval_recall@k`` is text -> image retrieval scored 1 when any relevant image is in the top k, the share
of queries: the paper's R@K, :func:`swift_ssid.core.metrics.evaluate_run`'s image-level ``hit_rate@k``, a fraction
in [0, 1]. A generative run has no image -> text direction, so ``text_retrieval_recall@k`` is left out (``clip_benchmark
build`` leaves the cell empty).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from swift_ssid.core.jsonl import write_text_atomic
from swift_ssid.core.metrics import RunMetrics
from swift_ssid.core.runs import RunRow

TASK = "zeroshot_retrieval"


def run_names(rows: Sequence[RunRow]) -> tuple[str, str]:
    """``(model, pretrained)`` for a run: ``swift_ssid-<kind>`` and its setting, or a dense run's encoder.

    Example:
        >>> from swift_ssid.core.runs import RunRow
        >>> setting = {"reason": "none", "k": 10}
        >>> run_names([RunRow("q", "a dog", ["a.jpg"], ["dog"], [0.0], [None], ["a.jpg"], setting=setting)])
        ('swift_ssid-ssid', 'reason=none k=10')
    """
    setting = dict(rows[0].setting) if rows else {}
    if setting.get("kind") == "dense":
        return str(setting.get("encoder", "dense")), str(setting.get("fingerprint", ""))[:12] or "dense"
    kind = setting.pop("kind", "ssid")
    setting.pop("language", None)  # a column of its own
    return f"swift_ssid-{kind}", " ".join(f"{key}={value}" for key, value in setting.items()) or "default"


def clip_benchmark_result(
    metrics: RunMetrics, dataset: str, model: str, pretrained: str, language: str = "en"
) -> dict[str, Any]:
    """The ``clip_benchmark`` result object of a run's metrics (the module docstring gives the layout).

    Example:
        >>> from swift_ssid.core.metrics import RunMetrics
        >>> clip_benchmark_result(RunMetrics({1: 0.5, 5: 1.0}), "flickr30k", "swift_ssid-ssid", "k=10")["metrics"]
        {'image_retrieval_recall@1': 0.5, 'image_retrieval_recall@5': 1.0}
    """
    return {
        "dataset": dataset,
        "model": model,
        "pretrained": pretrained,
        "task": TASK,
        "metrics": {f"image_retrieval_recall@{k}": metrics.hit_rate[k] for k in metrics.ks},
        "language": language,
    }


def run_result(
    rows: Sequence[RunRow], metrics: RunMetrics, dataset: str, model: str | None = None, pretrained: str | None = None
) -> dict[str, Any]:
    """A run's ``clip_benchmark`` result: names from :func:`run_names` unless given, the queries' ``language``."""
    default_model, default_pretrained = run_names(rows)
    language = str(rows[0].setting.get("language", "en")) if rows else "en"
    return clip_benchmark_result(metrics, dataset, model or default_model, pretrained or default_pretrained, language)


def write_run_result(path: str | os.PathLike, rows: Sequence[RunRow], metrics: RunMetrics, dataset: str,
                     model: str | None = None, pretrained: str | None = None) -> str:  # fmt: skip
    """Write :func:`run_result` to ``path`` (JSON, atomically); return the line that says so."""
    result = run_result(rows, metrics, dataset, model, pretrained)
    write_text_atomic(path, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return f"wrote {path} (clip_benchmark {result['task']}: {result['model']} {result['pretrained']})"
