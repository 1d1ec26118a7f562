"""The identifier comparison (Tables I and II): GRACE's identifier kinds and SSID, each trained and retrieved alike."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from swift_ssid.core.jsonl import write_text_atomic
from swift_ssid.core.queries import check_gold_in_index, load_queries
from swift_ssid.integration.retrieval import done_query_ids
from swift_ssid.workflows.kinds import KindOptions
from swift_ssid.workflows.protocols.runner import (
    NO_ENV_TARGET,
    ProtocolResult,
    RetrieveOptions,
    Training,
    retrieve,
    train_once,
    write_tables,
)

logger = logging.getLogger(__name__)

IDENTIFIER_KINDS: tuple[str, ...] = ("numeric", "string", "semantic", "structured", "atomic")
"""GRACE's kinds the ``identifiers`` protocol runs by default (``ssid`` joins when ``--ssid-index`` is given)."""


def build_kind_index(
    kind: str,
    collection: str | os.PathLike,
    image_root: str | os.PathLike | None,
    out: Path,
    options: KindOptions,
    tokenizer: str | None = None,
) -> Path:
    """Build ``kind``'s index into ``out`` (as ``swift-ssid identifiers``); skipped when ``out`` already holds it.

    Returns:
        ``out``.
    """
    from swift_ssid.core.index import read_stats
    from swift_ssid.workflows.kinds import build_identifiers

    try:
        built = read_stats(out).get("kind")
    except (OSError, ValueError):  # not built yet, or an unfinished or damaged build: build it
        built = None
    if built == kind:
        logger.info("%s: index built before (%s), skipping", kind, out)
        return out
    logger.info("%s: building the identifier index -> %s", kind, out)
    build_identifiers(options.spec(kind), collection, out, image_root, tokenizer)
    return out


def train_kind(
    kind: str,
    index: Path,
    training: Training,
    opts: RetrieveOptions,
    output_dir: Path,
    log: Path,
) -> Path:
    """``swift sft RECIPE`` with ``SSID_INDEX`` = the kind's index (atomic: plus its new tokens); skipped when done.

    The recipe trains the no-reason targets (``ssid-*-noreason``: baselines have no reason line). For ``atomic``
    the command adds ``--new_special_tokens <index>/new_tokens.txt`` and, for LoRA, ``--modules_to_save
    embed_tokens lm_head``.

    Returns:
        The checkpoint it wrote (recorded in ``<output_dir>/ssid_protocol.json``).
    """
    from swift_ssid.core.kinds import new_token_sft_flags

    extra = [*training.sft_args, *new_token_sft_flags(index)]
    record = {"protocol": "identifiers", "kind": kind}
    return train_once(training.recipe, opts, training.settings(index), output_dir, log, record, extra)


def run_identifiers(
    opts: RetrieveOptions,
    queries: str | os.PathLike,
    out_dir: str | os.PathLike,
    collection: str | os.PathLike,
    recipe: str | os.PathLike,
    kinds: Sequence[str] = IDENTIFIER_KINDS,
    image_root: str | os.PathLike | None = None,
    kind_options: KindOptions | None = None,
    ssid_index: str | os.PathLike | None = None,
    sft_args: Sequence[str] = (),
    tokenizer: str | None = None,
    model_label: str = "this model",
) -> ProtocolResult:
    """The identifier comparison (Tables I and II): per kind, build its index, train, retrieve; then tabulate.

    Every kind is trained by the same recipe on the no-reason targets and retrieved the same way, so only the
    identifiers differ. ``ssid`` (an index from ``swift-ssid build-index``, ``ssid_index``) is trained alike. A
    re-run skips built indexes and finished trainings and resumes unfinished run files.

    Args:
        opts: the shared retrieve options (``index`` is ignored: each kind has its own).
        queries: the queries file (test captions).
        out_dir: ``index_<kind>/``, ``sft_<kind>/``, ``run_<kind>.jsonl``, ``logs/``, ``table.md``/``.csv``
            (rows by kind) and ``tables.md``/``tables.csv`` (the paper's Tables I and II, with its numbers).
        collection: the collection (Karpathy JSON or ``.jsonl``) for the indexes and training.
        recipe: the ``swift sft`` recipe (``recipes/train_<family>_kind_noreason.yaml``).
        kinds: which kinds (of :data:`swift_ssid.core.kinds.BUILDABLE`) to run.
        image_root: ``SSID_IMAGE_ROOT`` (None: the collection's folder).
        kind_options: index-building options (structured needs ``encoder``).
        ssid_index: add the ``ssid`` row from this index.
        sft_args: extra ``swift sft`` flags (after the recipe's).
        tokenizer: tokenizer folder for the token statistics (default: the model folder, when local).
        model_label: the model named in Table II.

    Returns:
        The runs and the table by ``kind``.
    """
    from dataclasses import replace

    from swift_ssid.core.index import IdentifierIndex
    from swift_ssid.core.kinds import BUILDABLE
    from swift_ssid.reporting.tables import kind_tables, kind_tables_csv

    out_dir = Path(out_dir)
    options = kind_options or KindOptions()
    bad = [k for k in kinds if k not in BUILDABLE]
    if bad or not kinds or len(set(kinds)) != len(kinds):
        raise ValueError(f"--kinds {list(kinds)}: give distinct kinds of {', '.join(BUILDABLE)}")
    if not Path(recipe).is_file():
        raise FileNotFoundError(f"recipe {recipe} not found; run from the repository root or pass --recipe")
    if "structured" in kinds:
        options.spec("structured")  # fails early without an encoder
    loaded = load_queries(queries)
    if tokenizer is None and Path(opts.model).is_dir():
        tokenizer = opts.model
    plan: list[tuple[str, Path]] = []
    for kind in kinds:
        index = build_kind_index(kind, collection, image_root, out_dir / f"index_{kind}", options, tokenizer)
        check_gold_in_index(loaded, IdentifierIndex.load(index), str(queries))
        plan.append((kind, index))
    if ssid_index is not None:
        check_gold_in_index(loaded, IdentifierIndex.load(ssid_index), str(queries))
        plan.append(("ssid", Path(ssid_index)))
    training = Training(recipe, collection, image_root, sft_args)
    logs = out_dir / "logs"
    runs: dict[str, Path] = {}
    for kind, index in plan:
        checkpoint = train_kind(kind, index, training, opts, out_dir / f"sft_{kind}", logs / f"sft_{kind}.log")
        labels = {"protocol": "identifiers", "kind": kind}
        run_file = out_dir / f"run_{kind}.jsonl"
        if {q.query_id for q in loaded} <= done_query_ids(run_file, {"reason": "none", "k": opts.k, **labels}):
            logger.info("%s: retrieved before (%s), skipping", kind, run_file)
            runs[kind] = run_file
            continue
        runs[kind] = retrieve(
            replace(opts, index=index),
            queries,
            run_file,
            labels,
            logs / f"run_{kind}.log",
            checkpoint,
            ["--target", "noreason"],
            env=NO_ENV_TARGET,
        )
    title = "Identifier kinds (rows by kind; Tables I and II in tables.md)"
    table, markdown = write_tables(list(runs.values()), "kind", out_dir, title)
    tables = kind_tables(table, model=model_label, collection=Path(collection).name)
    write_text_atomic(out_dir / "tables.md", tables)
    write_text_atomic(out_dir / "tables.csv", kind_tables_csv(table, model=model_label))
    files = {name: out_dir / name for name in ("table.md", "table.csv", "tables.md", "tables.csv")}
    return ProtocolResult(runs, table, tables, files)
