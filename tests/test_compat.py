"""Canaries for the patches in ``swift_ssid/integration/compat/``: each fails once its patch can be deleted.

A failing canary is good news: the pinned dependency fixed what the patch works around. Delete the patch
module, its use and its canary together.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from swift_ssid.integration import compat
from swift_ssid.integration.compat import eval_type_service, list_eval_dataset, prediction_step, stop_words


@pytest.fixture(scope="module")
def eval_shims():
    import evalscope  # noqa: F401

    compat.apply_eval_shims()
    return compat.applied_eval_shims()


def test_every_patch_names_the_version_it_patches():
    for module in (eval_type_service, list_eval_dataset, prediction_step, stop_words):
        assert "==" in module.PATCHES and module.__doc__ and "Canary" in module.__doc__


def test_eval_type_service_still_needed(eval_shims):
    """Fails when the EvalType.SERVICE alias can go: delete compat/eval_type_service.py."""
    from swift.pipelines.eval.eval import SwiftEval

    assert "EvalType.SERVICE" in inspect.getsource(SwiftEval.get_native_task_cfg), (
        "ms-swift no longer passes EvalType.SERVICE: delete compat/eval_type_service.py"
    )
    assert eval_shims["eval_type_service"], (
        "evalscope defines EvalType.SERVICE again: delete compat/eval_type_service.py"
    )


def test_list_eval_dataset_still_needed(eval_shims):
    """Fails when the opencompass wrapper can go: delete compat/list_eval_dataset.py."""
    from swift.arguments import EvalArguments

    assert eval_shims["list_eval_dataset"]
    original = EvalArguments.list_eval_dataset.__wrapped__
    try:
        original("Native")
    except ModuleNotFoundError as e:
        assert (e.name or "").split(".")[0] == "opencompass", e
    else:
        pytest.fail("EvalArguments.list_eval_dataset works without opencompass: delete compat/list_eval_dataset.py")


def test_stop_words_still_needed(qwen2_tokenizer):
    """Fails when ms-swift's stop-word criterion judges each step afresh: delete compat/stop_words.py."""
    from swift.template.utils import StopWordsCriteria

    tok = qwen2_tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    a, b = tok("dog", add_special_tokens=False)["input_ids"][0], tok("park", add_special_tokens=False)["input_ids"][0]
    step1 = torch.tensor([[5, a, im_end], [5, a, b]])  # row 0 finished
    step2 = torch.tensor([[5, a, b, b], [5, a, b, a]])  # beam search put an unfinished candidate in row 0
    for cls, expected in ((StopWordsCriteria, [True, False]), (stop_words.BeamSafeStopWordsCriteria, [False, False])):
        criteria = cls(tok, ["<|im_end|>"])
        assert criteria(torch.tensor([[5, a], [5, a]]), None).tolist() == [False, False]
        assert criteria(step1, None).tolist() == [True, False]
        assert criteria(step2, None).tolist() == expected, f"{cls.__name__}: delete compat/stop_words.py if ms-swift's"


def test_prediction_step_still_needed():
    """Fails when ms-swift's prediction step passes --num_beams / n to its engine: delete compat/prediction_step.py."""
    from swift.trainers.seq2seq_trainer import Seq2SeqTrainer

    source = inspect.getsource(Seq2SeqTrainer.prediction_step)
    assert "RequestConfig(max_tokens=" in source and "num_beams" not in source and "n=" not in source


def test_replace_prediction_step_returns_the_original():
    class Trainer:
        def prediction_step(self, *args):
            return "original"

    trainer = Trainer()
    original = prediction_step.replace_prediction_step(trainer, lambda *args: "ours")
    assert trainer.prediction_step() == "ours" and original() == "original"
