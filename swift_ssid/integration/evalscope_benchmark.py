"""evalscope benchmark ``ssid_retrieval``: the paper's image-level R@1/5/10 from ``swift eval``.

Usage (the plugin file registers the benchmark when ``swift eval`` runs)::

    SSID_INDEX=runs/index SSID_COLLECTION=data/dataset_flickr30k.json \\
    swift eval --custom_register_path templates/ssid_templates.py \\
        --model Qwen/Qwen2.5-VL-7B-Instruct --adapters CKPT --template ssid_qwen2_5_vl \\
        --eval_backend Native --eval_dataset ssid_retrieval --eval_num_proc 1 \\
        [--eval_dataset_args '{"ssid_retrieval": {"local_path": "queries.jsonl", "extra_params": {"k": 10}}}']

What happens:

* ms-swift starts its deploy server (``TransformersEngine``) with the SSID template; the server inherits
  ``SSID_INDEX`` / ``SSID_TARGET`` / ``SSID_INFER_REASON`` and so decodes every identifier under the trie
  constraint (:mod:`swift_ssid.integration.templates`).
* Each query is sent once with ``extra_body={"n": K, "num_beams": K}`` in the adapter's own per-call
  generation config (a plain ``n`` would be evalscope *repeats*), so the server returns K beams.
* The K answers become a run row (:mod:`swift_ssid.core.runs`): identifiers parsed with
  :func:`swift_ssid.integration.retrieval.parse_choice`, expanded to images with the index named by ``SSID_INDEX``.
  The rows are scored by :func:`swift_ssid.core.metrics.evaluate_run` (the one R@K of the project) and written
  next to evalscope's report as ``<reports dir>/ssid_retrieval_<subset>_run.jsonl``, so
  ``swift-ssid evaluate`` / ``report`` read the very same run. The OpenAI API returns no beam scores:
  a row's ``scores`` are ``-rank`` (0, -1, ...) and the row says so (``"score_kind": "beam_rank"``).
* evalscope 1.14 reports only declared metric names as quality metrics, so R@K is the declared ``recall``
  metric with a ``k`` dimension (primary: ``k=1``): ``recall:mean[k=1]`` = R@1, ``[k=5]`` = R@5,
  ``[k=10]`` = R@10. ``unknown_identifier_rate`` is reported as a diagnostic.

Where the queries come from (the benchmark's ``dataset_id``):

* ``ssid-query`` (default): the rows of the registered dataset ``ssid-query``, built from
  ``SSID_COLLECTION`` (and ``SSID_IMAGE_ROOT``) by :mod:`swift_ssid.integration.datasets`, as ``swift infer
  --val_dataset ssid-query`` sees them;
* a JSON Lines file given as ``local_path`` (or ``dataset_id``) in ``--eval_dataset_args``: the same
  queries file ``swift-ssid retrieve --queries`` reads (:func:`swift_ssid.integration.retrieval.load_queries`).

``extra_params``: ``k`` (beams = identifiers per query, default 10), ``max_tokens`` (per answer, used when
the generation config sets none; default 64). Use ``--eval_num_proc 1`` when comparing with
``swift-ssid retrieve --batch-size 1``: the server batches concurrent requests, and a batch pads its
prompts, which can move float ties between beams.

Compatibility patches (ms-swift 4.6.0 with plain evalscope 1.14.1) live in :mod:`swift_ssid.integration.compat`
(``eval_type_service``, ``list_eval_dataset``) and are applied only when the benchmark is registered.

Registration: :func:`register_if_evalscope_loaded`, called by :mod:`swift_ssid.integration.register`, registers
only when ``evalscope`` is already imported, which ``swift eval`` does before it loads plugins
(``swift.pipelines.eval.eval`` imports evalscope at module level). ``swift sft`` / ``swift infer`` never
import evalscope, so there the check is one ``sys.modules`` lookup. A script that imports evalscope
after the plugin calls :func:`register_benchmark` itself.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from swift_ssid.core.metrics import DEFAULT_KS, evaluate_run, first_relevant_rank
from swift_ssid.core.runs import RunRow, row_from_answers, write_run
from swift_ssid.integration.compat import apply_eval_shims
from swift_ssid.integration.settings import SSIDSettings

BENCHMARK_NAME = "ssid_retrieval"
DEFAULT_QUERIES = "ssid-query"
DEFAULT_K = 10
DEFAULT_MAX_TOKENS = 64
PRIMARY_K = 1
SCORE_KIND = "beam_rank"
DESCRIPTION = (
    "Generative text-to-image retrieval with Structured Semantic Identifiers: each caption query gets K "
    "trie-constrained beams from the deploy server (SSID template, identifier index); the ranked identifiers expand "
    "to images and recall[k] is the paper's image-level R@k (hit rate: the gold image among the first k). "
    "The exact values are in each subset's metadata; the run file is written next to this report."
)


# ---------------------------------------------------------------- queries and run rows (no evalscope)


def load_benchmark_queries(source: str) -> list[Any]:
    """The benchmark's queries as :class:`swift_ssid.integration.retrieval.Query` objects.

    Args:
        source: ``ssid-query`` (rows of the registered dataset, from ``SSID_COLLECTION``) or a queries
            JSON Lines file.

    Returns:
        The queries in order.

    Raises:
        ValueError: bad settings or rows, a repeated ``query_id``, or a query with images (text queries only).
        FileNotFoundError: ``source`` is neither ``ssid-query`` nor an existing file.
    """
    from swift_ssid.core.queries import load_queries, query_from_row

    if source == DEFAULT_QUERIES:
        from swift_ssid.integration.datasets import QUERY, build_rows

        rows = build_rows(QUERY, SSIDSettings.from_env())
        queries = [query_from_row(row, i, f"{QUERY} row {i}") for i, row in enumerate(rows, start=1)]
        ids = [q.query_id for q in queries]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{QUERY} has repeated query ids; check the collection for repeated image stems")
    else:
        if not Path(source).is_file():
            raise FileNotFoundError(
                f"{BENCHMARK_NAME}: queries file {source!r} not found; pass an existing JSON Lines file as "
                f'--eval_dataset_args \'{{"{BENCHMARK_NAME}": {{"local_path": "queries.jsonl"}}}}\' or omit it to '
                f"query the {DEFAULT_QUERIES} rows of {SSIDSettings.env_var('collection')}"
            )
        queries = load_queries(source)
    with_images = [q.query_id for q in queries if q.images]
    if with_images:
        raise ValueError(
            f"{BENCHMARK_NAME} sends text queries only, but {len(with_images)} queries carry model-input images "
            f"(<image> tags), e.g. {with_images[:3]}; use `swift-ssid retrieve` for those"
        )
    return queries


def run_row_from_texts(
    query: Any, texts: Sequence[str], images_for: Any, setting: dict[str, Any] | None = None
) -> RunRow:
    """One query's run row from its K generated answers, in beam order.

    A repeated identifier is a padding beam (the index has fewer hypotheses left than K) and
    is kept once (:func:`swift_ssid.core.runs.row_from_answers`). The OpenAI API returns no beam scores,
    so ``scores`` are ``-rank`` and ``extra["score_kind"]`` is ``"beam_rank"``.

    Args:
        query: a :class:`swift_ssid.integration.retrieval.Query`.
        texts: the K answers (``choices[i].message`` text), best beam first.
        images_for: identifier -> its images (``IdentifierIndex.images_for``).
        setting: the row's ``setting`` (:func:`swift_ssid.integration.retrieval.run_setting`).

    Returns:
        The run row.
    """
    return row_from_answers(query, texts, images_for, setting=setting, extra={"score_kind": SCORE_KIND})


# ---------------------------------------------------------------- the evalscope adapter


def _param(value: Any, name: str, default: int) -> int:
    """A positive integer extra param."""
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{BENCHMARK_NAME}: extra_params.{name} must be a positive integer, got {value!r}; e.g. "
            f'--eval_dataset_args \'{{"{BENCHMARK_NAME}": {{"extra_params": {{"{name}": {default}}}}}}}\''
        )
    return value


@cache
def _adapter_class() -> type:
    """The evalscope ``DataAdapter`` of ``ssid_retrieval`` (imports evalscope)."""
    from evalscope.api.benchmark import DefaultDataAdapter
    from evalscope.api.dataset import DatasetDict, Sample, build_dataset_from_records
    from evalscope.api.messages import ChatMessageAssistant, ChatMessageSystem, ChatMessageUser
    from evalscope.api.metric import AggScore, SampleScore, Score
    from evalscope.api.model import GenerateConfig
    from evalscope.utils.logger import get_logger

    log = get_logger()

    roles = {"user": ChatMessageUser, "system": ChatMessageSystem, "assistant": ChatMessageAssistant}

    class SSIDRetrievalAdapter(DefaultDataAdapter):
        """K constrained beams per query from the deploy server; image-level R@K over the run."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            params = self.extra_params or {}
            self.k = _param(params.get("k"), "k", DEFAULT_K)
            self.max_tokens = _param(params.get("max_tokens"), "max_tokens", DEFAULT_MAX_TOKENS)
            self.add_overall_metric = False
            self._index = None
            self._settings = None
            self._runs: dict[str, list[RunRow]] = {}

        # ---- data
        def _ssid(self) -> tuple[Any, Any]:
            """The SSID settings (from the environment) and the identifier index they name."""
            if self._index is None:
                from swift_ssid.core.index import IdentifierIndex

                settings = SSIDSettings.from_env()
                if not settings.enabled:
                    raise ValueError(
                        f"{BENCHMARK_NAME} needs the identifier index: set "
                        f"{SSIDSettings.env_var('index_dir')}=<index dir> (the "
                        "same index the deploy server constrains decoding with)"
                    )
                self._settings, self._index = settings, IdentifierIndex.load(settings.index_dir)
            return self._settings, self._index

        def load(self) -> tuple[Any, None]:
            if self.repeats != 1:
                raise ValueError(
                    f"{BENCHMARK_NAME} returns K beams per query (extra_params.k), not repeats; got repeats="
                    f"{self.repeats} (a generation config 'n' becomes repeats): drop it"
                )
            self._ssid()
            queries = load_benchmark_queries(self.dataset_id)
            log.info(f"{BENCHMARK_NAME}: {len(queries)} queries from {self.dataset_id}, K={self.k} beams per query")
            dataset = build_dataset_from_records(
                records=[dataclasses.asdict(q) for q in queries],
                sample_fields=self.record_to_sample,
                name=self.name,
                location=self.dataset_id,
                limit=self.limit,
                repeats=1,
                shuffle=self.shuffle,
                seed=self.seed,
            )
            return DatasetDict({subset: dataset for subset in self.subset_list}), None

        def record_to_sample(self, record: dict[str, Any]) -> Any:
            messages = [roles[m["role"]](content=m["content"]) for m in record["messages"]]
            return Sample(
                input=messages,
                target=json.dumps(record["gold_images"], ensure_ascii=False),
                metadata={
                    "query_id": record["query_id"],
                    "query": record["query"],
                    "gold_images": record["gold_images"],
                    "ssid_query": record,  # the whole swift_ssid.integration.retrieval.Query, rebuilt for scoring
                },
            )

        # ---- inference
        def _on_inference(self, model: Any, sample: Any) -> Any:
            extra_body = {**(model.config.extra_body or {}), "n": self.k, "num_beams": self.k}
            fields: dict[str, Any] = {"extra_body": extra_body}
            if model.config.max_tokens is None:
                fields["max_tokens"] = self.max_tokens
            return model.generate(input=sample.input, config=GenerateConfig(**fields))

        # ---- scoring
        def calculate_metrics(self, task_state: Any) -> Any:
            from swift_ssid.core.queries import Query
            from swift_ssid.integration.retrieval import run_setting

            settings, index = self._ssid()
            meta = task_state.metadata
            query = Query(**meta["ssid_query"])
            choices = task_state.output.choices if task_state.output is not None else []
            row = run_row_from_texts(
                query, [c.message.text for c in choices], index.images_for, run_setting(settings, self.k)
            )
            rank = first_relevant_rank(row.images, row.gold_images)
            score = Score(
                value={"recall": float(rank is not None and rank <= PRIMARY_K)},
                main_score_name="recall",
                prediction=task_state.output.completion if task_state.output is not None else "",
                extracted_prediction=" | ".join(row.identifiers),
                metadata={"run_row": row.to_dict(), "first_relevant_rank": rank},
            )
            return SampleScore(
                score=score, sample_id=task_state.sample_id, group_id=task_state.group_id, sample_metadata=meta
            )

        def _rows(self, sample_scores: list[Any]) -> list[RunRow]:
            ordered = sorted(sample_scores, key=lambda s: (s.sample_id is None, s.sample_id))
            return [RunRow.from_dict(s.score.metadata["run_row"]) for s in ordered]

        def aggregate_subset(self, subset: str, sample_scores: list[Any]) -> list[Any]:
            rows = self._rows(sample_scores)
            self._runs[subset] = rows
            return self._aggregate(rows)

        def aggregate_scores(self, sample_scores: list[Any]) -> list[Any]:
            return self._aggregate(self._rows(sample_scores))

        def _aggregate(self, rows: list[RunRow]) -> list[Any]:
            metrics = evaluate_run(rows, DEFAULT_KS)
            ids = [row.query_id for row in rows]
            out = [
                AggScore(
                    score=metrics.r_at(k), metric_name="recall", aggregation="mean", dimensions={"k": k},
                    num=len(rows), ids=ids,
                    metadata={"metric": metrics.metric, f"R@{k}": metrics.r_at(k), "n_queries": len(rows)},
                )
                for k in DEFAULT_KS
            ]  # fmt: skip
            out.append(
                AggScore(
                    score=metrics.unknown_identifier_rate, metric_name="unknown_identifier_rate",
                    aggregation="mean", num=len(rows), ids=ids,
                )
            )  # fmt: skip
            return out

        # ---- report
        def _on_generate_report_end(self, report: Any, output_dir: str, **kwargs: Any) -> None:
            for subset, rows in self._runs.items():
                path = Path(output_dir) / f"{self.name}_{subset}_run.jsonl"
                write_run(path, rows)
                log.info(
                    f"{BENCHMARK_NAME}: run file {path} (read it with `swift-ssid evaluate` / `swift-ssid report`)"
                )

    return SSIDRetrievalAdapter


def benchmark_meta() -> Any:
    """The ``BenchmarkMeta`` of ``ssid_retrieval`` (imports evalscope)."""
    from evalscope.api.benchmark import BenchmarkMeta
    from evalscope.api.metric.semantics import MetricSelector

    return BenchmarkMeta(
        name=BENCHMARK_NAME,
        pretty_name="SSID text-to-image retrieval",
        description=DESCRIPTION,
        tags=["Retrieval"],
        dataset_id=DEFAULT_QUERIES,
        subset_list=["default"],
        metric_list=["recall"],
        primary_metric=MetricSelector(name="recall", dimensions={"k": PRIMARY_K}),
        few_shot_mode="disabled",
        extra_params={
            "k": {"type": "int", "description": "beams = identifiers returned per query", "value": DEFAULT_K},
            "max_tokens": {
                "type": "int",
                "description": "tokens per answer when the generation config sets no max_tokens",
                "value": DEFAULT_MAX_TOKENS,
            },
        },
    )


def register_benchmark() -> None:
    """Register ``ssid_retrieval`` with evalscope and apply the compatibility shims (imports evalscope).

    Raises:
        ValueError: the benchmark is already registered (registration runs once per process, from
            :mod:`swift_ssid.integration.register`).
    """
    from evalscope.api.registry import register_benchmark as evalscope_register

    apply_eval_shims()
    evalscope_register(benchmark_meta())(_adapter_class())


def register_if_evalscope_loaded() -> bool:
    """Register the benchmark when ``evalscope`` is already imported (``swift eval``); True if it did."""
    if "evalscope" not in sys.modules:
        return False
    register_benchmark()
    return True
