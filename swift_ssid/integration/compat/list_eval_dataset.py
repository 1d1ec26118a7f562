"""Patch: ms-swift 4.6.0's ``EvalArguments.list_eval_dataset`` without opencompass.

It imports ``opencompass`` even for ``--eval_backend Native`` (and ``ms-swift[eval]`` cannot be installed next
to numpy 2); the patched version lists the Native benchmarks from evalscope's registry (and VLMEvalKit's when
importable) when only opencompass is missing. Canary: ``tests/test_compat.py::test_list_eval_dataset_still_needed``.
"""

from __future__ import annotations

import functools

PATCHES = "ms-swift==4.6.0 (swift/arguments/eval_args.py: EvalArguments.list_eval_dataset)"
APPLIED = False


def apply() -> bool:
    """Wrap ``EvalArguments.list_eval_dataset``; True if applied now."""
    from swift.arguments import EvalArguments

    global APPLIED
    if APPLIED:
        return False
    original = EvalArguments.list_eval_dataset

    @functools.wraps(original)
    def list_eval_dataset(eval_backend=None):
        try:
            return original(eval_backend)
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] != "opencompass" or eval_backend == "OpenCompass":
                raise
        from evalscope.api.registry import BENCHMARK_REGISTRY
        from evalscope.constants import EvalBackend

        res = {EvalBackend.NATIVE: sorted(BENCHMARK_REGISTRY.keys())}
        try:
            from evalscope.backend.vlm_eval_kit import VLMEvalKitBackendManager

            res[EvalBackend.VLM_EVAL_KIT] = sorted(VLMEvalKitBackendManager.list_supported_datasets())
        except ImportError:
            if eval_backend == "VLMEvalKit":
                raise
        return res

    EvalArguments.list_eval_dataset = staticmethod(list_eval_dataset)
    APPLIED = True
    return True
