"""Multilingual retrieval (Table IV): query files in other languages against one English-trained model."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from swift_ssid.core.queries import check_aligned, queries_language
from swift_ssid.workflows.protocols.runner import ProtocolResult, RetrieveOptions, check_queries, retrieve, write_tables

logger = logging.getLogger(__name__)

_LANGUAGE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def run_multilingual(
    opts: RetrieveOptions,
    query_files: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None,
) -> ProtocolResult:
    """Multilingual retrieval (Table IV): each language's query file against one (English-trained) model.

    Args:
        opts: the shared retrieve options.
        query_files: language label (``en``, ``zh``, ...) -> its queries file; translations keep each
            ``query_id`` and its ``gold_images``. A file's own ``language`` field must agree with its label.
        out_dir: where runs (``run_<language>.jsonl``), logs and tables go.
        checkpoint: the fine-tuned checkpoint (LoRA or full), or None for the base model.

    Returns:
        The runs and the table by ``language`` (in the order given).
    """
    out_dir = Path(out_dir)
    if not query_files:
        raise ValueError("no query files: pass --queries en=q_en.jsonl zh=q_zh.jsonl ...")
    bad = [language for language in query_files if not _LANGUAGE.fullmatch(language)]
    if bad:
        raise ValueError(f"language labels {bad} must be short codes such as en, zh, pt-BR (letters, digits, - or _)")
    loaded = check_queries(opts, *query_files.values())
    by_language = {language: loaded[str(path)] for language, path in query_files.items()}
    for language, queries in by_language.items():
        declared = queries_language(queries, str(query_files[language]))
        if declared is not None and declared != language:
            raise ValueError(f"{query_files[language]} declares language {declared!r} but is passed as {language}=")
    for warning in check_aligned(by_language):
        logger.warning("%s", warning)
    runs: dict[str, Path] = {}
    for language, path in query_files.items():
        labels = {"protocol": "multilingual", "language": language}
        out = out_dir / f"run_{language}.jsonl"
        runs[language] = retrieve(opts, path, out, labels, out_dir / "logs" / f"run_{language}.log", checkpoint)
    title = "Multilingual retrieval (Table IV)"
    table, markdown = write_tables(list(runs.values()), "language", out_dir, title)
    return ProtocolResult(runs, table, markdown, {"table.md": out_dir / "table.md", "table.csv": out_dir / "table.csv"})
