"""Patch: ``EvalType.SERVICE`` for ms-swift 4.6.0's ``swift eval`` on evalscope 1.14.1.

ms-swift 4.6.0's ``SwiftEval.get_native_task_cfg`` passes ``EvalType.SERVICE``, which evalscope removed in
1.11; evalscope's own deprecation table maps the old ``server`` type to ``EvalType.OPENAI_API``, so this
aliases it. Canary: ``tests/test_compat.py::test_eval_type_service_still_needed``.
"""

from __future__ import annotations

PATCHES = "ms-swift==4.6.0 (swift/pipelines/eval/eval.py) with evalscope==1.14.1 (evalscope/constants.py)"
APPLIED = False


def apply() -> bool:
    """Alias ``EvalType.SERVICE`` to ``EvalType.OPENAI_API`` unless evalscope defines it; True if applied now."""
    global APPLIED
    from evalscope.constants import EvalType

    if APPLIED or hasattr(EvalType, "SERVICE"):
        return False
    EvalType.SERVICE = EvalType.OPENAI_API
    APPLIED = True
    return True
