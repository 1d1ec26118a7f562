"""What every protocol shares: the ``swift-ssid retrieve`` and ``swift sft`` subprocesses, the tables, the result.

Pure module apart from the subprocesses: no torch.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swift_ssid.core.jsonl import read_json, write_text_atomic
from swift_ssid.core.queries import Query, check_gold_in_index, load_queries
from swift_ssid.integration.checkpoints import last_checkpoint
from swift_ssid.integration.settings import SSIDSettings
from swift_ssid.reporting.tables import TableRow, plot_table, summarize_run_files, to_csv, to_markdown
from swift_ssid.workflows.pipeline import run_logged, swift_executable

logger = logging.getLogger(__name__)

SFT_MARKER = "ssid_protocol.json"
_RECIPE_KEYS = (SSIDSettings.env_var("target"), SSIDSettings.env_var("infer_reason"))  # the recipe decides these
NO_ENV_TARGET = {SSIDSettings.env_var("target"): "", SSIDSettings.env_var("infer_reason"): ""}
"""The environment of a retrieve whose flags (``--target``, ``--no-reason``) decide the target, not the caller's."""


@dataclass
class RetrieveOptions:
    """The ``swift-ssid retrieve`` options that stay the same across a protocol's runs.

    Attributes:
        model: base model id or directory.
        template: SSID template (``ssid_qwen2_5_vl``, ``ssid_llava1_6_vicuna_hf``, ``ssid_qwen2_5``).
        index: identifier index directory.
        model_type: ms-swift model type (local directories), or None.
        torch_dtype: ``float32`` / ``float16`` / ``bfloat16``, or None for the model's own.
        k: beams = identifiers per query.
        batch_size: queries per engine call.
        max_new_tokens: generation budget per response.
    """

    model: str
    template: str
    index: Path
    model_type: str | None = None
    torch_dtype: str | None = None
    k: int = 10
    batch_size: int = 8
    max_new_tokens: int = 64

    def model_args(self, checkpoint: str | os.PathLike | None) -> list[str]:
        """``--model`` (and ``--adapters``) for a checkpoint: LoRA on the base model, or the full model, or the base."""
        if checkpoint is None:
            return ["--model", self.model]
        checkpoint = Path(checkpoint)
        if (checkpoint / "adapter_config.json").is_file():
            return ["--model", self.model, "--adapters", str(checkpoint)]
        if (checkpoint / "config.json").is_file():
            return ["--model", str(checkpoint)]
        raise ValueError(
            f"{checkpoint} is neither a LoRA checkpoint (adapter_config.json) nor a model (config.json); pass a "
            "checkpoint-N directory written by swift sft"
        )

    def flags(self) -> list[str]:
        """The flags every run shares (model type, dtype, template, index, K, batch, budget)."""
        out = ["--template", self.template, "--index", str(self.index), "--k", str(self.k)]
        out += ["--batch-size", str(self.batch_size), "--max-new-tokens", str(self.max_new_tokens)]
        if self.model_type:
            out += ["--model_type", self.model_type]
        if self.torch_dtype:
            out += ["--torch-dtype", self.torch_dtype]
        return out


@dataclass(frozen=True)
class Training:
    """How a protocol trains its models: one ``swift sft`` recipe over one collection.

    Attributes:
        recipe: the ``swift sft`` recipe (YAML).
        collection: ``SSID_COLLECTION`` for training.
        image_root: ``SSID_IMAGE_ROOT`` (None: the collection's folder).
        sft_args: extra ``swift sft`` flags (after the recipe's).
    """

    recipe: str | os.PathLike
    collection: str | os.PathLike
    image_root: str | os.PathLike | None = None
    sft_args: Sequence[str] = ()

    def settings(self, index: str | os.PathLike, **fields: Any) -> SSIDSettings:
        """The ``SSID_*`` settings of a training on ``index`` (``fields``: protocol, train size)."""
        image_root = str(self.image_root) if self.image_root else None
        return SSIDSettings(index_dir=Path(index), collection=str(self.collection), image_root=image_root, **fields)


def _env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides)
    return env


def retrieve(
    opts: RetrieveOptions,
    queries: str | os.PathLike,
    out: Path,
    labels: Mapping[str, Any],
    log: Path,
    checkpoint: str | os.PathLike | None = None,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Path:
    """Run ``swift-ssid retrieve`` into ``out`` (resumed when it exists) with ``--setting`` labels.

    Returns:
        ``out``.

    Raises:
        swift_ssid.workflows.pipeline.StageError: the command failed (the message holds the end of its log).
    """
    settings = [f"{key}={value}" for key, value in labels.items()]
    cmd = [sys.executable, "-m", "swift_ssid.cli", "retrieve", *opts.model_args(checkpoint), *opts.flags()]
    cmd += ["--queries", str(queries), "--out", str(out), *extra, "--setting", *settings]
    logger.info("retrieve -> %s (%s)", out, ", ".join(settings))
    run_logged(cmd, log, _env(**(env or {})))
    return out


def write_tables(
    run_files: Sequence[Path], by: str, out_dir: Path, title: str, plot: Path | None = None
) -> tuple[list[TableRow], str]:
    """Tabulate run files by a setting into ``table.md`` / ``table.csv`` (and a PNG plot when asked).

    Returns:
        The table rows and the Markdown text.
    """
    table = summarize_run_files(run_files, by=by)
    markdown = to_markdown(table, first_column=by, title=title)
    write_text_atomic(out_dir / "table.md", markdown)
    write_text_atomic(out_dir / "table.csv", to_csv(table, first_column=by))
    if plot is not None:
        plot_table(table, plot, x_label=by, title=title)
    return table, markdown


@dataclass
class ProtocolResult:
    """What a protocol run produced.

    Attributes:
        run_files: row label (setting value) -> run file.
        table: the table rows (``swift_ssid.reporting.tables.TableRow``).
        markdown: the Markdown table (also in ``table.md``).
        files: other outputs (``table.md``, ``table.csv``, a plot).
    """

    run_files: dict[str, Path]
    table: list[TableRow]
    markdown: str
    files: dict[str, Path] = field(default_factory=dict)


def check_queries(opts: RetrieveOptions, *files: str | os.PathLike) -> dict[str, list[Query]]:
    """Load each queries file and check that every gold image has an identifier in ``opts.index``.

    Returns:
        queries file (as given, as a string) -> its queries.

    Raises:
        ValueError: a bad queries file, or a gold image the index lacks (:func:`check_gold_in_index`).
    """
    from swift_ssid.core.index import IdentifierIndex

    index = IdentifierIndex.load(opts.index)
    loaded = {}
    for path in files:
        loaded[str(path)] = load_queries(path)
        check_gold_in_index(loaded[str(path)], index, str(path))
    return loaded


def train_once(
    recipe: str | os.PathLike,
    opts: RetrieveOptions,
    settings: SSIDSettings,
    output_dir: Path,
    log: Path,
    record: dict[str, Any],
    extra: Sequence[str] = (),
) -> Path:
    """``swift sft RECIPE`` under ``settings``, skipped when ``<output_dir>/ssid_protocol.json`` records ``record``.

    The recipe decides the target and reason settings; ``settings`` supplies the index, collection and protocol.

    Returns:
        The checkpoint it wrote (recorded in the marker with ``record``).
    """
    label = ", ".join(f"{v}" if k == "kind" else f"{k}={v}" for k, v in record.items() if k != "protocol")
    marker = output_dir / SFT_MARKER
    done = read_json(marker, {})
    if isinstance(done, dict) and all(done.get(k) == v for k, v in record.items()):
        if Path(done.get("checkpoint", "")).is_dir():
            logger.info("%s: trained before (%s), skipping swift sft", label, done["checkpoint"])
            return Path(done["checkpoint"])
    cmd = [swift_executable(), "sft", str(recipe), "--model", opts.model, "--template", opts.template]
    if opts.model_type:
        cmd += ["--model_type", opts.model_type]
    if opts.torch_dtype:
        cmd += ["--torch_dtype", opts.torch_dtype]
    cmd += [*extra, "--output_dir", str(output_dir), "--add_version", "false"]
    env = {k: v for k, v in settings.to_env().items() if k not in _RECIPE_KEYS}
    logger.info("%s: swift sft %s -> %s", label, recipe, output_dir)
    run_logged(cmd, log, _env(**env))
    checkpoint = last_checkpoint(output_dir)
    write_text_atomic(marker, json.dumps({**record, "recipe": str(recipe), "checkpoint": str(checkpoint)}, indent=2))
    return checkpoint
