"""Patch: K-beam predictions from ms-swift 4.6.0's ``Seq2SeqTrainer.prediction_step``.

With ``--predict_with_generate`` ms-swift asks its engine for ``RequestConfig(max_tokens=...)`` only, whose
``num_beams=1`` / ``n=1`` defaults override ``--num_beams``: one greedy answer per row. R@K needs K ranked
identifiers, so the ``ssid_recall`` metric replaces that one method of its trainer (falling back to the original
for loss-only steps). Canary: ``tests/test_compat.py::test_prediction_step_still_needed``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PATCHES = "ms-swift==4.6.0 (swift/trainers/seq2seq_trainer.py: Seq2SeqTrainer.prediction_step)"


def replace_prediction_step(trainer: Any, step: Callable[..., Any]) -> Callable[..., Any]:
    """Make ``step`` the trainer's ``prediction_step``.

    Args:
        trainer: the ms-swift ``Seq2SeqTrainer``.
        step: the replacement, with ``prediction_step``'s signature.

    Returns:
        The trainer's original bound ``prediction_step`` (for the steps ``step`` hands back).
    """
    original = trainer.prediction_step
    trainer.prediction_step = step
    return original
