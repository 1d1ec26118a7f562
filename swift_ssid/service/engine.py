"""The search engine: model, index and trie loaded once; texts in, ranked images out.

Every answer goes through :class:`swift_ssid.integration.retrieval.Retriever` (the code behind ``swift-ssid
retrieve``), with one retriever per K (beams = K), so a query answered here ranks what ``swift-ssid retrieve --k K``
writes for it: the same identifiers, images, scores and reasons. A search has no gold image; the hits are the run
row's images (identifiers expanded in beam order, repeats dropped), the first K of them, each with the identifier,
beam score and reason that brought it.

Not thread-safe by design: one thread calls :meth:`SearchEngine.search` (the batching worker of
:mod:`swift_ssid.service.batching`, or ``swift-ssid search``).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from swift_ssid.core.errors import UserError
from swift_ssid.core.prompt import retrieve_prompt
from swift_ssid.core.queries import Query

logger = logging.getLogger(__name__)

NO_GOLD = "(search)"
"""The stand-in gold image of a search query (a run row needs one; searches are not scored)."""
MAX_QUERY_CHARS = 2000
"""The longest query text accepted (a caption is a sentence or two)."""


@dataclass(frozen=True)
class Hit:
    """One ranked image: its 1-based ``rank``, the ``identifier`` that named it, that beam's ``score``, ``reason``."""

    rank: int
    image: str
    identifier: str
    score: float
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchResult:
    """The answer to one query: the hits, best first, and the run ``setting`` they were made with."""

    query: str
    k: int
    hits: list[Hit]
    setting: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "k": self.k, "hits": [h.to_dict() for h in self.hits], "setting": self.setting}


def check_query(text: Any) -> str:
    """The query text, stripped; ``UserError`` (one line) when it is not a non-empty string of sensible length."""
    if not isinstance(text, str):
        raise UserError(f"query must be a string, got {type(text).__name__}; send the caption text")
    text = text.strip()
    if not text:
        raise UserError("query is empty; send a caption such as 'a tabby cat on a sofa'")
    if len(text) > MAX_QUERY_CHARS:
        raise UserError(f"query has {len(text)} characters, at most {MAX_QUERY_CHARS} are accepted; shorten it")
    return text


def search_query(text: str, position: int = 0) -> Query:
    """The :class:`Query` for a search text: the retrieval prompt the model was trained with, as ``retrieve`` sends."""
    return Query(f"search{position}", text, [NO_GOLD], [{"role": "user", "content": retrieve_prompt(text)}])


def hits_from_row(row: Any, k: int, images_for: Callable[[str], Sequence[str]]) -> list[Hit]:
    """The first ``k`` images of a run row, each with the identifier (its score and reason) that ranked it first.

    Args:
        row: a :class:`~swift_ssid.core.runs.RunRow`.
        k: how many images.
        images_for: identifier -> its images (``IdentifierIndex.images_for``), as the row was expanded with.
    """
    owner: dict[str, tuple[str, float, str | None]] = {}
    for identifier, score, reason in zip(row.identifiers, row.scores, row.reasons, strict=True):
        for image in images_for(identifier) if identifier not in row.unknown_identifiers else []:
            owner.setdefault(image, (identifier, score, reason))
    return [Hit(rank, image, *owner[image]) for rank, image in enumerate(row.images[:k], start=1)]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and index flags of ``swift-ssid search`` and ``serve``: ``swift-ssid retrieve``'s own."""
    from swift_ssid.workflows.run import add_retrieval_arguments

    add_retrieval_arguments(parser)


@dataclass
class ModelSpec:
    """What to load: the flags of :func:`add_model_arguments`."""

    model: str
    template: str
    index: str
    adapters: list[str] = field(default_factory=list)
    model_type: str | None = None
    torch_dtype: str | None = None
    max_new_tokens: int = 64
    target: str | None = None
    no_reason: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ModelSpec:
        return cls(
            args.model, args.template, args.index, list(args.adapters), args.model_type, args.torch_dtype,
            args.max_new_tokens, args.target, args.no_reason,
        )  # fmt: skip

    def check(self) -> None:
        """Fail fast, before the model loads, on a bad template, index, adapter or budget (``UserError``)."""
        from swift_ssid.integration.retrieval import check_model_inputs, check_template

        check_template(self.template)
        check_model_inputs(self.model, self.index, self.adapters, {"--max-new-tokens": self.max_new_tokens})

    def settings(self) -> Any:
        """The :class:`SSIDSettings` of this model: the target as ``swift-ssid retrieve`` resolves it."""
        from swift_ssid.integration.retrieval import retrieval_settings

        return retrieval_settings(self.index, self.adapters, self.target, self.no_reason)


class SearchEngine:
    """The loaded model and index: :meth:`search` answers texts with the ranked images of the index.

    Args:
        engine: an ms-swift ``TransformersEngine`` with an SSID template.
        settings: its :class:`~swift_ssid.integration.settings.SSIDSettings` (the index).
        max_new_tokens: generation budget per response.
        info: what the page and ``/health`` show about the model (name, adapters, template).
    """

    def __init__(self, engine: Any, settings: Any, max_new_tokens: int = 64, info: dict[str, Any] | None = None):
        from swift_ssid.core.index import index_kind, index_version, read_manifest

        self.engine = engine
        self.settings = settings
        self.max_new_tokens = max_new_tokens
        self._retrievers: dict[int, Any] = {}
        first = self.retriever(1)  # validates the template, the index and the budget once, at start
        self.index = first.index
        manifest = read_manifest(settings.index_dir)
        self.info = {
            **(info or {}),
            "index": {
                "path": str(settings.index_dir),
                "kind": index_kind(settings.index_dir),
                "version": index_version(settings.index_dir),  # the number run files record (`index versions`)
                "checksum": str(manifest.get("sha256", {}).get("index.jsonl", ""))[:12] or None,
                "policy": self.index.policy,
                "images": sum(1 for e in self.index.entries if e.identifier is not None),
                "identifiers": len(self.index),
            },
        }

    @classmethod
    def open(cls, spec: ModelSpec, max_batch_size: int = 8) -> SearchEngine:
        """Load ``spec``'s model once (as ``swift-ssid retrieve`` does) and its index and trie.

        Raises:
            UserError: a bad flag, or a model that ms-swift cannot load or match.
        """
        spec.check()
        settings = spec.settings()
        from swift_ssid.integration.retrieval import open_engine

        engine = open_engine(
            spec.model, spec.template, spec.index, spec.adapters, spec.model_type, spec.torch_dtype, max_batch_size
        )
        info = {"model": spec.model, "adapters": spec.adapters, "template": spec.template}
        return cls(engine, settings, spec.max_new_tokens, info)

    def retriever(self, k: int) -> Any:
        """The retriever with ``k`` beams (made on first use, kept)."""
        from swift_ssid.integration.retrieval import Retriever

        if k not in self._retrievers:
            self._retrievers[k] = Retriever(self.engine, self.settings, k=k, max_new_tokens=self.max_new_tokens)
        return self._retrievers[k]

    def search(self, texts: Sequence[str], k: int) -> list[SearchResult]:
        """Answer ``texts`` (one engine batch) with the first ``k`` images each, as ``swift-ssid retrieve --k k``."""
        retriever = self.retriever(k)
        rows = retriever.retrieve_batch([search_query(t, i) for i, t in enumerate(texts)])
        return [
            SearchResult(text, k, hits_from_row(row, k, self.index.images_for), retriever.setting)
            for text, row in zip(texts, rows, strict=True)
        ]
