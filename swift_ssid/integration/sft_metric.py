"""ms-swift eval metric ``ssid_recall``: image-level R@1/5/10 from K constrained beams while training.

Usage::

    SSID_INDEX=runs/index swift sft --custom_register_path templates/ssid_templates.py \\
        --template ssid_qwen2_5_vl ... --val_dataset ssid-query --remove_unused_columns false \\
        --predict_with_generate true --eval_metric ssid_recall --num_beams 10 --metric_for_best_model R@1

Validation then logs ``eval_R@1``, ``eval_R@5``, ``eval_R@10`` and ``eval_unknown_identifier_rate``, and
``--metric_for_best_model R@1`` (or ``R@5`` / ``R@10``) selects checkpoints on them.

How the K beams are made. ms-swift 4.6.0's ``Seq2SeqTrainer.prediction_step`` decodes greedily (one answer
per row); R@K needs K ranked identifiers, so :class:`SSIDRecallMetrics` (which ms-swift builds with the trainer)
replaces that one method of its trainer (:mod:`swift_ssid.integration.compat.prediction_step`): for each
validation batch it runs :meth:`swift_ssid.integration.retrieval.Retriever.retrieve_batch` (the code behind
``swift-ssid retrieve``) on the trainer's own engine and template, inside the same
``unwrap_model_for_generation`` / ``template.generate_context()`` contexts ms-swift uses. So each
batch costs one K-beam constrained ``generate`` instead of a greedy one, and the trie constraint comes
from the SSID template exactly as at retrieval time. The step returns each query's run row, serialised
with ms-swift's ``Serializer``; the trainer gathers them across ranks as usual, and
:meth:`SSIDRecallMetrics.compute_metrics` scores them with :func:`swift_ssid.core.metrics.evaluate_run` (the
project's one R@K) and writes them to ``<output_dir>/ssid_recall/run-step<N>.jsonl``.

Settings:

* K: ``--num_beams K`` when above 1, else 10; ``--max_new_tokens`` bounds each answer (default 64).
* ``SSID_INDEX`` (required), ``SSID_TARGET``, ``SSID_INFER_REASON``: as for every SSID template.
* The validation rows: ``ssid-query`` rows (or any rows with ``gold_images``; keep those columns with
  ``--remove_unused_columns false``) are scored against their gold images. Rows with a target instead
  (e.g. a split of ``ssid-retrieve``) are scored against the images of the target's identifier, which
  counts every image of a shared identifier as gold.
* ``--metric_for_best_model``: ms-swift's default under ``--predict_with_generate`` (``rouge-l``) is
  replaced by ``R@1``; another name this metric does not report is an error.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from swift.metrics import eval_metrics_map
from swift.metrics.base import EvalMetrics
from swift.utils import get_logger
from transformers.trainer_utils import EvalPrediction

from swift_ssid.core.metrics import DEFAULT_KS, evaluate_run
from swift_ssid.core.runs import RunRow, write_run
from swift_ssid.integration.compat.prediction_step import replace_prediction_step

logger = get_logger()

METRIC_NAME = "ssid_recall"
DEFAULT_K = 10
DEFAULT_MAX_NEW_TOKENS = 64
MS_SWIFT_DEFAULT_BEST_METRIC = "rouge-l"  # what ms-swift sets under --predict_with_generate
REPORTED = tuple(f"R@{k}" for k in DEFAULT_KS) + ("unknown_identifier_rate",)


def rows_from_predictions(predictions: Any) -> list[RunRow]:
    """Decode the run rows that :class:`SSIDRecallMetrics`' prediction step serialised.

    Args:
        predictions: ``EvalPrediction.predictions``, one ``Serializer`` byte row per query, padded.

    Returns:
        The rows in order; a query id seen again (a row repeated to even out DDP shards) is dropped.
    """
    from swift.utils import Serializer

    rows: list[RunRow] = []
    seen: set[str] = set()
    for i in range(len(predictions)):
        data = Serializer.from_tensor(predictions[i])
        if not isinstance(data, dict) or "query_id" not in data:
            raise ValueError(
                f"prediction {i} is not an SSID run row ({type(data).__name__}); the ssid_recall metric needs its "
                "own prediction step: train with --eval_metric ssid_recall --predict_with_generate true"
            )
        if data["query_id"] in seen:
            continue
        seen.add(data["query_id"])
        rows.append(RunRow.from_dict(data))
    return rows


def metrics_from_rows(rows: list[RunRow]) -> dict[str, float]:
    """R@1/5/10 and the unknown-identifier rate of run rows, by :func:`swift_ssid.core.metrics.evaluate_run`."""
    metrics = evaluate_run(rows, DEFAULT_KS).to_dict()
    return {key: metrics[key] for key in REPORTED}


class SSIDRecallMetrics(EvalMetrics):
    """``--eval_metric ssid_recall``: R@1/5/10 from K trie-constrained beams per validation query.

    Args:
        args: the trainer's arguments (needs ``predict_with_generate``).
        trainer: the ms-swift ``Seq2SeqTrainer``; its ``prediction_step`` is replaced (see the module docstring).

    Raises:
        ValueError: without ``--predict_with_generate true``, without ``SSID_INDEX``, with a template that
            has no SSID constraint, or with a ``--metric_for_best_model`` this metric does not report.
    """

    def __init__(self, args: Any, trainer: Any):
        from swift_ssid.integration.settings import SSIDSettings
        from swift_ssid.integration.templates import SSIDTemplateMixin

        super().__init__(args, trainer)
        if not getattr(args, "predict_with_generate", False):
            raise ValueError(
                f"--eval_metric {METRIC_NAME} scores generated identifiers: add --predict_with_generate true"
            )
        self.settings = SSIDSettings.from_env()
        if not self.settings.enabled:
            raise ValueError(
                f"--eval_metric {METRIC_NAME} needs the identifier index: "
                f"set {SSIDSettings.env_var('index_dir')}=<index dir>"
            )
        template = getattr(trainer, "template", None)
        if not isinstance(template, SSIDTemplateMixin):
            name = getattr(getattr(template, "template_meta", None), "template_type", type(template).__name__)
            raise ValueError(
                f"--eval_metric {METRIC_NAME} needs an SSID template, got {name!r}; use --template ssid_{name} "
                "(every ms-swift template has an SSID form ssid_<template>)"
            )
        self._check_best_metric(args)
        self._retriever = None
        self._n_queries = 0
        self._original_prediction_step = replace_prediction_step(trainer, self.prediction_step)

    @staticmethod
    def _check_best_metric(args: Any) -> None:
        """Point ms-swift's default ``rouge-l`` at R@1; reject other names this metric does not report."""
        name = args.metric_for_best_model
        if name is None:
            return
        bare = name[len("eval_") :] if name.startswith("eval_") else name
        if bare == MS_SWIFT_DEFAULT_BEST_METRIC:
            args.metric_for_best_model = "R@1"
            logger.info("%s: metric_for_best_model %r -> 'R@1'", METRIC_NAME, name)
        elif bare not in REPORTED:
            raise ValueError(
                f"--metric_for_best_model {name!r} is not reported by --eval_metric {METRIC_NAME}; use one of "
                f"{', '.join(REPORTED[:-1])}"
            )

    def retriever(self) -> Any:
        """The :class:`~.retrieval.Retriever` on the trainer's engine (built at the first evaluation)."""
        if self._retriever is None:
            from swift_ssid.integration.retrieval import Retriever

            config = self.trainer.model.generation_config
            beams = int(getattr(config, "num_beams", None) or 1)
            k = beams if beams > 1 else DEFAULT_K
            max_new_tokens = getattr(config, "max_new_tokens", None) or DEFAULT_MAX_NEW_TOKENS
            self._retriever = Retriever(self.trainer.infer_engine, self.settings, k=k, max_new_tokens=max_new_tokens)
            logger.info("%s: K=%d constrained beams per query, max_new_tokens=%d", METRIC_NAME, k, max_new_tokens)
        return self._retriever

    def _query(self, data: dict[str, Any]) -> Any:
        """A validation row as a :class:`~.retrieval.Query` (gold images from the row or its target)."""
        from swift_ssid.core.answers import parse_choice
        from swift_ssid.core.queries import query_from_row

        row = {key: value for key, value in data.items() if value is not None}
        rank = int(os.environ.get("RANK", "0") or 0)
        self._n_queries += 1
        row.setdefault("query_id", f"val{rank}-{self._n_queries}")
        where = f"validation row {row['query_id']}"
        messages = row.get("messages") or []
        if row.get("images") and "gold_images" not in row:
            raise ValueError(
                f"{where} has model-input images (a memorise row?); {METRIC_NAME} scores text retrieval queries: "
                "validate on --val_dataset ssid-query (with --remove_unused_columns false) or ssid-retrieve"
            )
        if "gold_images" not in row and messages and messages[-1].get("role") == "assistant":
            identifier, _ = parse_choice(messages[-1].get("content") or "")
            gold = self.retriever().index.images_for(identifier)
            if not gold:
                raise ValueError(
                    f"{where}: its target identifier {identifier!r} is not in the index {self.settings.index_dir}; "
                    "validate on ssid-query rows or on rows built from this index"
                )
            row["gold_images"] = gold
        elif "gold_images" not in row:
            raise ValueError(
                f"{where} has neither 'gold_images' nor a target; for --val_dataset ssid-query add "
                "--remove_unused_columns false so ms-swift keeps query_id/query/gold_images"
            )
        return query_from_row(row, self._n_queries, where)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        """K-beam constrained retrieval for a validation batch; returns serialised run rows as predictions."""
        trainer = self.trainer
        if prediction_loss_only or not isinstance(inputs, dict) or "_data" not in inputs:
            return self._original_prediction_step(model, inputs, prediction_loss_only, ignore_keys, **gen_kwargs)
        from swift.trainers.utils import pad_for_ddp_gather
        from swift.utils import Serializer, unwrap_model_for_generation
        from torch.nn.utils.rnn import pad_sequence

        queries = [self._query(data) for data in inputs["_data"]]
        retriever = self.retriever()
        with (
            unwrap_model_for_generation(
                trainer.model_wrapped,
                trainer.accelerator,
                gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
            ),
            trainer.template.generate_context(),
        ):
            rows = retriever.retrieve_batch(queries)
        device = trainer.args.device
        preds = [Serializer.to_tensor(row.to_dict()).to(device=device) for row in rows]
        labels = [Serializer.to_tensor(row.query_id).to(device=device) for row in rows]
        preds = pad_for_ddp_gather(pad_sequence(preds, batch_first=True, padding_value=0), padding_value=0)
        labels = pad_for_ddp_gather(pad_sequence(labels, batch_first=True, padding_value=0), padding_value=0)
        return None, preds, labels

    def compute_metrics(self, eval_prediction: EvalPrediction) -> dict[str, float]:
        """R@1/5/10 and the unknown-identifier rate over all gathered validation queries."""
        self._n_queries = 0
        rows = rows_from_predictions(eval_prediction.predictions)
        metrics = metrics_from_rows(rows)
        trainer = self.trainer
        if trainer.is_world_process_zero():
            path = os.path.join(trainer.args.output_dir, METRIC_NAME, f"run-step{trainer.state.global_step}.jsonl")
            write_run(path, rows)
            logger.info("%s: %d queries, %s; run file %s", METRIC_NAME, len(rows), metrics, path)
        return metrics

    def preprocess_logits_for_metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return logits


def register_metrics() -> None:
    """Add ``ssid_recall`` to ms-swift's ``eval_metrics_map`` (``--eval_metric ssid_recall``).

    Raises:
        ValueError: the name is already registered (registration runs once per process, from
            :mod:`swift_ssid.integration.register`).
    """
    if METRIC_NAME in eval_metrics_map:
        raise ValueError(f"eval metric {METRIC_NAME!r} is already registered ({eval_metrics_map[METRIC_NAME]!r})")
    eval_metrics_map[METRIC_NAME] = SSIDRecallMetrics
