"""Top-K retrieval: trie-constrained beam search through ms-swift's ``TransformersEngine``, into a run file.

The constraint is the SSID template's own (:class:`swift_ssid.integration.templates.SSIDTemplateMixin`): the
retriever hands the template its :class:`~swift_ssid.integration.settings.SSIDSettings` and asks the engine for
``RequestConfig(num_beams=K, n=K, temperature=0)``; the template appends the trie processor in
``prepare_generate_kwargs`` exactly as it does for ``swift infer``.

Queries: :mod:`swift_ssid.core.queries`. Run rows: see :mod:`swift_ssid.core.runs`.
"""

from __future__ import annotations

import glob
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from swift_ssid.core.jsonl import append_jsonl, iter_jsonl, write_jsonl_atomic
from swift_ssid.core.queries import Query
from swift_ssid.core.runs import RESERVED_SETTING_KEYS, RunRow, check_run_version, row_from_answers
from swift_ssid.integration.settings import SSIDSettings

logger = logging.getLogger(__name__)


def done_query_ids(
    out: str | os.PathLike, setting: dict[str, Any], repair: bool = True, index: tuple[Any, int] | None = None
) -> set[str]:
    """Query ids already in a run file (or a rank's partial file), ignoring broken lines (a killed writer's).

    Args:
        out: the run file.
        setting: the run's ``setting``; rows made with another one are refused.
        repair: rewrite the file without its broken lines (only the file's own writer may do this).
        index: ``(index folder, its version)``: rows made with another version are refused (None: not checked).

    Raises:
        ValueError: the file holds rows made with another ``setting`` (a different K or reason mode) or another
            version of the index.
    """
    return set(_good_rows(out, setting, repair, index))


def _good_rows(
    path: str | os.PathLike, setting: dict[str, Any], repair: bool, index: tuple[Any, int] | None = None
) -> dict[str, dict[str, Any]]:
    """The well-formed rows of a run file by query id (see :func:`done_query_ids`)."""
    path = Path(path)
    if not path.is_file():
        return {}
    good: dict[str, dict[str, Any]] = {}
    bad = 0
    for _, row, error in iter_jsonl(path):
        if error is not None or not isinstance(row.get("query_id"), str):
            bad += 1
            continue
        if row.get("setting") != setting:
            raise ValueError(
                f"{path}: holds rows made with setting {row.get('setting')!r}, not {setting!r}; "
                "write this run to another file or delete the old one"
            )
        if index is not None:
            check_run_version([row], index[1], index[0], path)
        good.setdefault(row["query_id"], row)
    if bad and repair:
        logger.warning("%s: dropping %d broken line(s) before resuming", path, bad)
        write_jsonl_atomic(path, list(good.values()))
    return good


PARTIAL_INFIX = ".part-rank"
"""A rank's partial run file is ``<out>.part-rank<R>`` beside the run file (see :meth:`Retriever.run`)."""


def partial_path(out: str | os.PathLike, rank: int) -> Path:
    """The partial run file that rank ``rank`` of a data-parallel retrieval appends to."""
    return Path(f"{out}{PARTIAL_INFIX}{rank}")


def partial_files(out: str | os.PathLike) -> dict[int, Path]:
    """The partial run files beside ``out`` (left by a data-parallel run, finished or killed), by rank."""
    out = Path(out)
    prefix = out.name + PARTIAL_INFIX
    found = {}
    for path in out.parent.glob(f"{glob.escape(prefix)}*"):
        suffix = path.name[len(prefix) :]
        if suffix.isdigit():
            found[int(suffix)] = path
    return dict(sorted(found.items()))


def shard_span(n_queries: int, batch_size: int, rank: int, world_size: int) -> range:
    """The query positions rank ``rank`` of ``world_size`` retrieves: a contiguous run of whole batches.

    The batches are those a single process makes (``batch_size`` consecutive queries), dealt out in
    contiguous blocks as ``datasets.Dataset.shard(contiguous=True)`` does for ``swift infer`` (the first
    ``n_batches % world_size`` ranks get one batch more). Every batch therefore holds the same queries
    (and the same padding) as in a single-process run, so the scores are the same.

    Args:
        n_queries: queries in the file.
        batch_size: queries per engine call.
        rank: this process' rank (0-based).
        world_size: number of processes.

    Returns:
        A range of query positions (possibly empty).

    Example:
        >>> [list(shard_span(7, 2, r, 2)) for r in range(2)]
        [[0, 1, 2, 3], [4, 5, 6]]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} process(es)")
    n_batches = -(-n_queries // batch_size)
    per, extra = divmod(n_batches, world_size)
    first = rank * per + min(rank, extra)
    last = first + per + (1 if rank < extra else 0)
    return range(min(first * batch_size, n_queries), min(last * batch_size, n_queries))


def merge_partials(
    out: str | os.PathLike, queries: Sequence[Query], setting: dict[str, Any], index: tuple[Any, int] | None = None
) -> int:
    """Merge the run file and every rank's partial file into the run file, in query order; delete the partials.

    Rows for the queries come in the queries' order; rows of other queries already in the run file (an
    earlier run on another queries file) follow in their old order. The run file is replaced atomically
    before any partial file is removed, so a kill at any point loses nothing.

    Returns:
        The number of rows in the merged run file.
    """
    rows = _good_rows(out, setting, repair=False, index=index)
    partials = partial_files(out)
    for path in partials.values():
        for query_id, row in _good_rows(path, setting, repair=False, index=index).items():
            rows.setdefault(query_id, row)
    ordered = [rows.pop(q.query_id) for q in queries if q.query_id in rows]
    count = write_jsonl_atomic(out, ordered + list(rows.values()))
    for path in partials.values():
        path.unlink(missing_ok=True)
    return count


def run_setting(settings: SSIDSettings, k: int, labels: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A run row's ``setting``: the reason mode (:attr:`SSIDSettings.reason_label`), K, then the labels."""
    return {"reason": settings.reason_label, "k": k, **(labels or {})}


def check_template(template: str) -> None:
    """Raise ``UserError`` unless ``template`` is an SSID template (naming ``ssid_<template>`` when that exists)."""
    from swift_ssid.core.errors import UserError
    from swift_ssid.integration.templates import is_ssid_template, ssid_template_names

    if not is_ssid_template(template):
        hint = f"ssid_{template}" if is_ssid_template(f"ssid_{template}") else "ssid_<ms-swift template>"
        raise UserError(
            f"--template {template!r} is not an SSID template; use {hint} "
            f"(e.g. {', '.join(ssid_template_names()[:3])}; see docs/models.md)"
        )


def check_model_inputs(
    model: str, index: str | os.PathLike, adapters: Sequence[str], numbers: Mapping[str, int] | None = None
) -> None:
    """Validate the index, adapters, a local model folder and positive numbers before a model loads (fail fast).

    Raises:
        UserError: a bad ``--index``, ``--adapters``, local ``--model`` or number, naming the fix.
    """
    from swift_ssid.core.errors import UserError
    from swift_ssid.core.index import IdentifierIndex

    for flag, value in (numbers or {}).items():
        if value < 1:
            raise UserError(f"{flag} {value}: must be a positive integer")
    if len(IdentifierIndex.load(index)) == 0:
        raise UserError(f"--index {index}: holds no valid identifier; rebuild it with `swift-ssid build-index`")
    for adapter in adapters:
        if not Path(adapter).is_dir():
            raise UserError(f"--adapters {adapter}: no such checkpoint folder; pass a `swift sft` checkpoint directory")
    looks_local = Path(model).is_absolute() or model.startswith(".") or model.count("/") > 1
    if looks_local and not Path(model).is_dir():
        raise UserError(f"--model {model}: no such model folder; pass a local model directory or a model id")


def retrieval_settings(
    index: str | os.PathLike, adapters: Sequence[str], target: str | None = None, no_reason: bool = False
) -> SSIDSettings:
    """The settings a trained model retrieves with: the index, its training target and the reason mode.

    The target is ``target`` (``--target``), else ``SSID_TARGET``, else the adapters' (their ``args.json``), else
    ``reason``; the reason is generated unless ``no_reason`` or ``SSID_INFER_REASON=false``.

    Raises:
        UserError: an explicit target contradicts the datasets an adapter was trained on, or adapters disagree.
    """
    from swift_ssid.core.errors import UserError
    from swift_ssid.integration.checkpoints import checkpoint_training_target

    env = SSIDSettings.from_env(ignore=("index_dir",))
    explicit = target or (env.target if SSIDSettings.is_set("target") else None)
    trained = {str(a): t for a in adapters if (t := checkpoint_training_target(a)) is not None}
    if len(set(trained.values())) > 1:
        raise UserError(f"the adapters were trained on different targets {trained}; pass one ablation's adapter")
    resolved = explicit or env.target
    if trained:
        adapter, resolved = next(iter(trained.items()))
        if explicit is not None and explicit != resolved:
            raise UserError(
                f"--target/{SSIDSettings.env_var('target')} is {explicit!r} but adapter {adapter} was trained on the "
                f"{resolved} datasets (its args.json); drop --target or pass --target {resolved}"
            )
        if explicit is None:
            logger.info("training target %s, from %s/args.json", resolved, adapter)
    return SSIDSettings(index_dir=Path(index), target=resolved, infer_reason=not no_reason and env.infer_reason)


def open_engine(
    model: str,
    template: str,
    index: str | os.PathLike,
    adapters: Sequence[str] | None = None,
    model_type: str | None = None,
    torch_dtype: str | None = None,
    max_batch_size: int = 8,
) -> Any:
    """ms-swift's ``TransformersEngine`` for retrieval over ``index`` (``swift-ssid retrieve``, ``search``, ``serve``).

    An atomic index names one new token per image; the model gets them as ``swift sft --new_special_tokens`` did
    (same tokens, same order, so the same ids and the resized embeddings the checkpoint saved).

    Raises:
        UserError: ms-swift cannot load the model or match it to the template (its message, with the model).
    """
    import torch
    from swift.infer_engine import TransformersEngine

    import swift_ssid.integration.register  # noqa: F401  (registers the SSID templates once)
    from swift_ssid.core.errors import UserError
    from swift_ssid.core.kinds import index_new_tokens

    new_tokens = index_new_tokens(index)
    try:
        return TransformersEngine(
            model,
            adapters=list(adapters or []) or None,
            **({"new_special_tokens": new_tokens} if new_tokens else {}),
            model_type=model_type,
            template_type=template,
            torch_dtype=getattr(torch, torch_dtype) if torch_dtype else None,
            max_batch_size=max_batch_size,
        )
    except (OSError, ValueError) as e:  # ms-swift's own messages for a model it cannot load or match
        raise UserError(f"--model {model}: {e}") from e


class Retriever:
    """Ranks identifiers for queries with trie-constrained beam search on a ``TransformersEngine``.

    Args:
        engine: an ms-swift ``TransformersEngine`` whose template is an SSID template.
        settings: the :class:`~swift_ssid.integration.settings.SSIDSettings` (an index is required).
        k: beams = returned identifiers per query.
        max_new_tokens: generation budget per response (identifier line plus reason).
        labels: extra ``setting`` entries written into every run row (e.g. ``{"language": "zh"}``,
            ``{"protocol": "zeroshot", "n_train": 1000}``); a resumed run file must hold the same ones.

    Every row records the index's version (``index_version``); a run file of another version is not resumed
    (refused, naming both versions).
    """

    def __init__(
        self,
        engine: Any,
        settings: Any,
        k: int = 10,
        max_new_tokens: int = 64,
        labels: Mapping[str, Any] | None = None,
    ):
        from swift_ssid.core.index import IdentifierIndex, index_version
        from swift_ssid.integration.templates import SSIDTemplateMixin

        if not isinstance(engine.template, SSIDTemplateMixin):
            raise ValueError(
                f"template {engine.template.template_meta.template_type!r} has no SSID constraint; use its SSID form "
                f"ssid_{engine.template.template_meta.template_type} (--template)"
            )
        if not settings.enabled:
            raise ValueError("retrieval needs an identifier index: set SSIDSettings(index_dir=...) (--index)")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens!r}")
        labels = dict(labels or {})
        reserved = sorted(set(labels) & set(RESERVED_SETTING_KEYS))
        if reserved:
            raise ValueError(
                f"setting label(s) {reserved} are written by the retriever itself (reason mode and K); "
                "set them with the SSID settings and k instead"
            )
        self.labels = labels
        self.engine = engine
        self.settings = settings
        self.k = k
        self.max_new_tokens = max_new_tokens
        self.index = IdentifierIndex.load(settings.index_dir)
        self.index_version = index_version(settings.index_dir)
        if k > len(self.index):
            logger.warning(
                "k=%d exceeds the %d identifiers in the index: queries get fewer choices", k, len(self.index)
            )
        engine.template.set_ssid_settings(settings)
        needed = engine.template.ssid_trie(settings).required_new_tokens()
        if max_new_tokens < needed:
            raise ValueError(
                f"max_new_tokens {max_new_tokens} cannot hold the index's longest identifier ({needed} tokens with the "
                f"prefix and line end), so cut identifiers would rank; pass --max-new-tokens {needed} or more"
            )

    @property
    def setting(self) -> dict[str, Any]:
        """The run rows' ``setting`` (:func:`run_setting`)."""
        return run_setting(self.settings, self.k, self.labels)

    def _request_config(self) -> Any:
        from swift.infer_engine import RequestConfig

        # k=1 still runs beam search (2 beams, 1 returned): greedy decoding has no comparable score.
        return RequestConfig(num_beams=max(self.k, 2), n=self.k, max_tokens=self.max_new_tokens, temperature=0)

    def retrieve_batch(self, queries: Sequence[Query]) -> list[RunRow]:
        """Run one batch through the engine and build its run rows (beam order, each identifier once)."""
        from swift.infer_engine import InferRequest

        requests = [InferRequest(messages=[dict(m) for m in q.messages], images=list(q.images)) for q in queries]
        template = self.engine.template
        template.ssid_last_beam_scores = None
        if 0 < self.engine.max_batch_size < len(requests):
            self.engine.max_batch_size = len(requests)  # one generate call: the scores belong to this batch
        responses = self.engine.infer(requests, self._request_config(), use_tqdm=False)
        scores = template.ssid_last_beam_scores
        if scores is not None and len(scores) != len(queries) * self.k:
            raise RuntimeError(
                f"the template recorded {len(scores)} beam scores for {len(queries)} queries x k={self.k}; "
                "the engine split the batch (set engine.max_batch_size >= the batch size)"
            )
        rows = []
        for i, (query, response) in enumerate(zip(queries, responses, strict=True)):
            rows.append(self._row(query, response.choices, None if scores is None else scores[i * self.k :]))
        return rows

    def _row(self, query: Query, choices: Sequence[Any], scores: Sequence[float | None] | None) -> RunRow:
        if scores is not None and any(s is None or not math.isfinite(s) for s in scores[: len(choices)]):
            logger.warning("query %s: dropping choices that have no beam score", query.query_id)
        answers = [choice.message.content or "" for choice in choices]
        scores = [None] * len(answers) if scores is None else scores
        row = row_from_answers(query, answers, self.index.images_for, scores=scores, setting=self.setting)
        row.index_version = self.index_version
        return row

    def run(
        self,
        queries: Sequence[Query],
        out: str | os.PathLike,
        batch_size: int = 8,
        progress: Callable[..., Any] | None = None,
        rank: int = 0,
        world_size: int = 1,
        barrier: Callable[[], None] | None = None,
    ) -> int:
        """Retrieve every query not yet in ``out``, appending one flushed row per query.

        With ``world_size > 1`` (data parallel, one process per rank), rank ``r`` retrieves the queries of
        :func:`shard_span` into its own partial file (:func:`partial_path`), resuming it like a run file;
        after ``barrier()`` rank 0 merges everything into ``out`` in query order (:func:`merge_partials`),
        so ``out`` is the file a single process writes. Every rank skips queries found in ``out`` or in any
        partial file, so a killed run resumes with any number of processes.

        Args:
            queries: the queries (the same list, in the same order, on every rank).
            out: the run file (created, or resumed: queries already in it are skipped).
            batch_size: queries per engine call.
            progress: optional ``tqdm``-like factory ``progress(total=N)`` with ``update(n)`` / ``close()``.
            rank: this process' rank.
            world_size: number of processes; above 1, ``barrier`` is required.
            barrier: waits for every rank (e.g. ``torch.distributed.barrier``).

        Returns:
            The number of queries this process retrieved in this call.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size!r}")
        if world_size > 1 and barrier is None:
            raise ValueError(f"world_size={world_size} needs a barrier (e.g. torch.distributed.barrier)")
        partials = partial_files(out)
        own = Path(out) if world_size == 1 else partial_path(out, rank)
        # Each file is repaired only by its writer: the run file and stale partials by rank 0, a rank's own by it.
        version = (self.settings.index_dir, self.index_version)
        done = done_query_ids(out, self.setting, repair=rank == 0, index=version)
        for r, path in partials.items():
            repair = (r == rank) or (rank == 0 and r >= world_size)
            done |= done_query_ids(path, self.setting, repair=repair, index=version)
        span = shard_span(len(queries), batch_size, rank, world_size)
        # The batches of a fresh single-process run, less the queries already done: a resumed run keeps the
        # batch boundaries (so the padding and the scores) of every batch that was not cut short by the kill.
        batches = [[q for q in queries[i : min(i + batch_size, span.stop)] if q.query_id not in done]
                   for i in range(span.start, span.stop, batch_size)]  # fmt: skip
        batches = [batch for batch in batches if batch]
        pending = sum(len(batch) for batch in batches)
        if pending < len(span):
            logger.info(
                "%s: %d of this process' %d queries already done; %d to go", own, len(span) - pending, len(span),
                pending,
            )  # fmt: skip
        bar = progress(total=pending) if progress is not None else None
        try:
            for batch in batches:
                for row in self.retrieve_batch(batch):
                    append_jsonl(own, row.to_dict())
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        if world_size > 1:
            barrier()
        if rank == 0 and (world_size > 1 or partials):
            merge_partials(out, queries, self.setting, version)
        if world_size > 1:
            barrier()  # no rank reads the run file before it is complete
        return pending
