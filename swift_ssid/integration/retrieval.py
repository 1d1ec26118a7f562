"""Top-K retrieval: trie-constrained beam search through ms-swift's ``TransformersEngine``, into a run file.

The constraint is the SSID template's own (:class:`swift_ssid.integration.templates.SSIDTemplateMixin`): the
retriever hands the template its :class:`~swift_ssid.integration.settings.SSIDSettings` and asks the engine for
``RequestConfig(num_beams=K, n=K, temperature=0)``; the template appends the trie processor in
``prepare_generate_kwargs`` exactly as it does for ``swift infer``.

Queries: :mod:`swift_ssid.core.queries`. Run rows: see :mod:`swift_ssid.core.runs`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from swift_ssid.core.answers import parse_choice
from swift_ssid.core.jsonl import append_jsonl, iter_jsonl, write_jsonl_atomic
from swift_ssid.core.queries import Query
from swift_ssid.core.runs import RunRow, expand_identifiers

logger = logging.getLogger(__name__)

RESERVED_SETTING_KEYS: tuple[str, ...] = ("reason", "k")
"""Setting keys the retriever itself writes; labels may not override them."""


def done_query_ids(out: str | os.PathLike, setting: dict[str, Any]) -> set[str]:
    """Query ids already in a run file, after dropping broken lines (a killed writer's partial line).

    Raises:
        ValueError: the file holds rows made with another ``setting`` (a different K or reason mode).
    """
    path = Path(out)
    if not path.is_file():
        return set()
    good: list[dict] = []
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
        good.append(row)
    if bad:
        logger.warning("%s: dropping %d broken line(s) before resuming", path, bad)
        write_jsonl_atomic(path, good)
    return {row["query_id"] for row in good}


def reason_label(settings: Any) -> str:
    """The run rows' ``setting.reason`` for SSID settings (the paper's Table III rows).

    Args:
        settings: :class:`~swift_ssid.integration.settings.SSIDSettings` (``target``, ``infer_reason``).

    Returns:
        ``"train+infer"`` (reason target, reason generated), ``"train-only"`` (reason target, the response
        ends after the identifier line) or ``"none"`` (identifier-only target).
    """
    if settings.target == "noreason":
        return "none"
    return "train+infer" if settings.infer_reason else "train-only"


class Retriever:
    """Ranks identifiers for queries with trie-constrained beam search on a ``TransformersEngine``.

    Args:
        engine: an ms-swift ``TransformersEngine`` whose template is an SSID template.
        settings: the :class:`~swift_ssid.integration.settings.SSIDSettings` (an index is required).
        k: beams = returned identifiers per query.
        max_new_tokens: generation budget per response (identifier line plus reason).
        labels: extra ``setting`` entries written into every run row (e.g. ``{"language": "zh"}``,
            ``{"protocol": "zeroshot", "n_train": 1000}``); a resumed run file must hold the same ones.
    """

    def __init__(
        self,
        engine: Any,
        settings: Any,
        k: int = 10,
        max_new_tokens: int = 64,
        labels: Mapping[str, Any] | None = None,
    ):
        from swift_ssid.core.index import IdentifierIndex
        from swift_ssid.integration.templates import SSIDTemplateMixin

        if not isinstance(engine.template, SSIDTemplateMixin):
            raise ValueError(
                f"template {engine.template.template_meta.template_type!r} has no SSID constraint; use one of "
                "ssid_qwen2_5_vl, ssid_llava1_6_vicuna_hf, ssid_qwen2_5 (--template)"
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
        """The run rows' ``setting``: reason mode (:func:`reason_label`), K, then the labels."""
        return {"reason": reason_label(self.settings), "k": self.k, **self.labels}

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
        identifiers: list[str] = []
        reasons: list[str | None] = []
        row_scores: list[float] = []
        for j, choice in enumerate(choices):
            identifier, reason = parse_choice(choice.message.content or "")
            if identifier in identifiers:
                continue  # a padding beam (the index has fewer identifiers left than K): keep the best one
            score = None if scores is None else scores[j]
            if score is None or not math.isfinite(score):
                logger.warning("query %s: dropping choice %d, which has no beam score", query.query_id, j)
                continue
            identifiers.append(identifier)
            reasons.append(reason)
            row_scores.append(float(score))
        images, unknown = expand_identifiers(identifiers, self.index.images_for)
        return RunRow(
            query_id=query.query_id,
            query=query.query,
            gold_images=query.gold_images,
            identifiers=identifiers,
            scores=row_scores,
            reasons=reasons,
            images=images,
            unknown_identifiers=unknown,
            setting=self.setting,
        )

    def run(
        self,
        queries: Sequence[Query],
        out: str | os.PathLike,
        batch_size: int = 8,
        progress: Callable[[Iterable[Any]], Any] | None = None,
    ) -> int:
        """Retrieve every query not yet in ``out``, appending one flushed row per query.

        Args:
            queries: the queries.
            out: the run file (created, or resumed: queries already in it are skipped).
            batch_size: queries per engine call.
            progress: optional ``tqdm``-like factory ``progress(total=N)`` with ``update(n)`` / ``close()``.

        Returns:
            The number of queries retrieved in this call.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size!r}")
        done = done_query_ids(out, self.setting)
        pending = [q for q in queries if q.query_id not in done]
        if done:
            logger.info("%s: %d of %d queries already done; %d to go", out, len(done), len(queries), len(pending))
        bar = progress(total=len(pending)) if progress is not None else None
        try:
            for start in range(0, len(pending), batch_size):
                batch = pending[start : start + batch_size]
                for row in self.retrieve_batch(batch):
                    append_jsonl(out, row.to_dict())
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        return len(pending)
