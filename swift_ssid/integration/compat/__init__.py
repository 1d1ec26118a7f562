"""Patches of ms-swift's and evalscope's internals: one module each, naming the pinned version it patches.

====================================  ===============================================================
module                                patches
====================================  ===============================================================
:mod:`.eval_type_service`             evalscope 1.14.1 dropped ``EvalType.SERVICE``; ms-swift 4.6.0 uses it
:mod:`.list_eval_dataset`             ms-swift 4.6.0 ``EvalArguments.list_eval_dataset`` needs opencompass
:mod:`.stop_words`                    ms-swift 4.6.0 ``StopWordsCriteria`` keeps per-row state across beams
:mod:`.prediction_step`               ms-swift 4.6.0 ``Seq2SeqTrainer.prediction_step`` decodes greedily
====================================  ===============================================================

Each is backed by a canary in ``tests/test_compat.py`` that fails once the patch is no longer needed.
"""

from __future__ import annotations


def apply_eval_shims() -> list[str]:
    """Apply the ``swift eval`` patches that are still needed (idempotent; imports ms-swift and evalscope).

    Returns:
        The names of the patches applied by this call.
    """
    from swift_ssid.integration.compat import eval_type_service, list_eval_dataset

    return [
        name
        for name, patch in (("eval_type_service", eval_type_service), ("list_eval_dataset", list_eval_dataset))
        if patch.apply()
    ]


def applied_eval_shims() -> dict[str, bool]:
    """Which ``swift eval`` patches are in force in this process."""
    from swift_ssid.integration.compat import eval_type_service, list_eval_dataset

    return {"eval_type_service": eval_type_service.APPLIED, "list_eval_dataset": list_eval_dataset.APPLIED}
