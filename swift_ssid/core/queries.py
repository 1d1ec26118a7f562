"""Retrieval queries: the queries file format and its reader (pure: no torch, no ms-swift).

Queries file (JSON Lines), one query a line, either

* ``{"query_id"?: "...", "query": "<caption>", "gold_images": ["a.jpg"]}`` (the user turn becomes
  :func:`swift_ssid.core.prompt.retrieve_prompt` of the caption, the prompt the model was trained with), or
* an ``ssid-query`` dataset row ``{"messages": [{"role": "user", ...}], "query_id"?, "query"?,
  "gold_images": [...]}`` (the messages are sent as they are; ``images`` stands for ``gold_images``
  when the messages hold no ``<image>`` tag).

A query without ``query_id`` gets ``line<N>`` (its line number). Either form may carry ``"language": "zh"``
(the query's language, for the multilingual protocol; ``swift-ssid retrieve`` records it in the run's
``setting``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from swift_ssid.core.errors import MAX_LISTED
from swift_ssid.core.jsonl import iter_jsonl
from swift_ssid.core.prompt import RETRIEVE_PROMPT, retrieve_prompt


@dataclass(frozen=True)
class Query:
    """One retrieval query.

    Args:
        query_id: unique id within the queries file.
        query: the query text (a caption).
        gold_images: the relevant image(s).
        messages: the chat messages sent to the model (the user turn).
        images: model-input images referenced by ``<image>`` tags in ``messages`` (usually none).
        language: the query's language (e.g. ``"zh"``), or None when the row does not say.
    """

    query_id: str
    query: str
    gold_images: list[str]
    messages: list[dict[str, Any]]
    images: list[str] = field(default_factory=list)
    language: str | None = None


def _str_list(value: Any, key: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where}: {key!r} must be a non-empty list of image paths, got {value!r:.120}")
    return list(value)


def _caption_of(content: str) -> str:
    """The caption inside a retrieval user turn (the turn itself when it is not one)."""
    head, _, tail = RETRIEVE_PROMPT.partition("{caption}")
    if content.startswith(head) and content.endswith(tail) and len(content) > len(head) + len(tail):
        return content[len(head) : len(content) - len(tail)]
    return content


def query_from_row(row: dict[str, Any], lineno: int, where: str) -> Query:
    """Build a :class:`Query` from one queries-file row (see the module docstring for the two forms).

    Args:
        row: the parsed JSON object.
        lineno: its line number (names the query when it has no ``query_id``).
        where: ``file:line`` for error messages.

    Raises:
        ValueError: the row has neither ``query`` nor ``messages``, no gold images, or a bad field.
    """
    query_id = row.get("query_id", f"line{lineno}")
    if not isinstance(query_id, (str, int)) or isinstance(query_id, bool) or str(query_id) == "":
        raise ValueError(f"{where}: 'query_id' must be a non-empty string, got {query_id!r}")
    images: list[str] = []
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise ValueError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
        if messages[-1].get("role") == "assistant":
            messages = messages[:-1]  # a dataset row with its target: query with the user turn only
        users = [m for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str)]
        if not users:
            raise ValueError(f"{where}: 'messages' has no user turn with text content")
        has_image_tag = any("<image>" in m.get("content", "") for m in messages if isinstance(m.get("content"), str))
        if has_image_tag:
            images = _str_list(row.get("images"), "images", where)
            gold = row.get("gold_images")
        else:
            gold = row.get("gold_images", row.get("images"))
        text = row.get("query", _caption_of(users[-1]["content"]))
    elif "query" in row:
        text = row["query"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: 'query' must be a non-empty string, got {text!r:.80}")
        messages = [{"role": "user", "content": retrieve_prompt(text)}]
        gold = row.get("gold_images")
    else:
        raise ValueError(f"{where}: a query row needs 'query' (caption text) or 'messages'; got keys {sorted(row)}")
    if gold is None:
        raise ValueError(f"{where}: no 'gold_images'; list the relevant image(s) so the run can be scored")
    if not isinstance(text, str):
        raise ValueError(f"{where}: 'query' must be a string, got {type(text).__name__}")
    language = row.get("language")
    if language is not None and (not isinstance(language, str) or not language.strip()):
        raise ValueError(f"{where}: 'language' must be a non-empty string such as \"zh\", got {language!r:.80}")
    return Query(
        str(query_id), text, _str_list(gold, "gold_images", where), messages, images, language and language.strip()
    )


def claim_query_id(first: dict[str, int], query_id: str, lineno: int, where: str, fix: str) -> None:
    """Record the line ``query_id`` first appears on in ``first``.

    Raises:
        ValueError: ``query_id`` was seen before (names ``where``, the first line and ``fix``).
    """
    if query_id in first:
        raise ValueError(f"{where}: query_id {query_id!r} repeats (first on line {first[query_id]}); {fix}")
    first[query_id] = lineno


def load_queries(path: str | os.PathLike) -> list[Query]:
    """Read a queries file (JSON Lines), failing on the first bad line.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a bad line or row, or a repeated ``query_id`` (the message names file and line).
    """
    queries: list[Query] = []
    first: dict[str, int] = {}
    for lineno, row, error in iter_jsonl(path):
        if error is not None:
            raise ValueError(error)
        where = f"{path}:{lineno}"
        query = query_from_row(row, lineno, where)
        claim_query_id(first, query.query_id, lineno, where, "give each query a unique id")
        queries.append(query)
    if not queries:
        raise ValueError(f"{path}: no queries; write one JSON object a line")
    return queries


def queries_language(queries: Sequence[Query], source: str) -> str | None:
    """The one language that a queries file's rows declare (``"language"``), or None when none does.

    Raises:
        ValueError: the rows mix languages, or only some rows declare one (a run file holds one language).
    """
    languages = {q.language for q in queries}
    if languages == {None}:
        return None
    if len(languages) > 1:
        shown = sorted(str(x) for x in languages)
        raise ValueError(
            f"{source}: the queries mix languages {shown} (rows without 'language' show as None); a run holds one "
            "language: split the file per language and retrieve each into its own run file"
        )
    return languages.pop()


def check_gold_in_index(queries: Sequence[Query], index: Any, source: str) -> None:
    """Fail when a query's gold image has no identifier in the index (it could never be retrieved).

    Args:
        queries: the queries.
        index: anything with ``identifier_for(image) -> str | None`` (:class:`swift_ssid.core.index.IdentifierIndex`).
        source: the queries file, for the message.

    Raises:
        ValueError: naming the first such images and the fix.
    """
    missing = sorted({g for q in queries for g in q.gold_images if index.identifier_for(g) is None})
    if missing:
        raise ValueError(
            f"{source}: {len(missing)} gold image(s) have no identifier in the index, so no query can find them; "
            f"first: {missing[:MAX_LISTED]}. Stage 1 must cover the test images (zero-shot included) and the query "
            "file must name images exactly as the index does (build both from the same collection)"
        )


def check_aligned(query_sets: Mapping[str, Sequence[Query]]) -> list[str]:
    """Check that translated query files describe the same queries: a shared ``query_id`` has the same gold images.

    Args:
        query_sets: language -> its queries.

    Returns:
        Warnings (query ids that some languages lack).

    Raises:
        ValueError: a query id whose gold images differ between two languages.
    """
    first: dict[str, tuple[str, list[str]]] = {}
    for language, queries in query_sets.items():
        for q in queries:
            seen = first.setdefault(q.query_id, (language, q.gold_images))
            if sorted(seen[1]) != sorted(q.gold_images):
                raise ValueError(
                    f"query {q.query_id!r} has gold images {seen[1]} in {seen[0]} but {q.gold_images} in {language}; "
                    "a translated query file keeps each query_id and its gold_images, only the text changes"
                )
    warnings = []
    for language, queries in query_sets.items():
        lacking = len(first) - len({q.query_id for q in queries})
        if lacking:
            warnings.append(f"{language}: {lacking} of {len(first)} query ids are missing (its rows are scored alone)")
    return warnings
