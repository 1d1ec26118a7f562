"""The paper's evaluation protocols (Sec. IV.D-F) as resumable sequences of real ``swift`` / ``swift-ssid`` runs.

Every run file these drivers write is an ordinary ``swift-ssid retrieve`` run whose rows carry the protocol's
labels in ``setting`` (``swift-ssid retrieve --setting KEY=VALUE``), so ``swift-ssid table --by KEY`` tabulates
them in the paper's layout:

============  =============================================  ==========================================
protocol      what varies (one run file each)                ``setting`` of every row
============  =============================================  ==========================================
ablation      reason in training and inference / training    ``reason``: ``train+infer`` /
(Table III)   only / neither                                 ``train-only`` / ``none``; ``protocol``
zeroshot      training on the first N training images, test  ``n_train``: N; ``protocol``: ``zeroshot``
(Fig. 3)      images never memorised (``SSID_PROTOCOL``)
multilingual  query files in other languages, one English-   ``language``: the file's language;
(Table IV)    trained model                                  ``protocol``: ``multilingual``
============  =============================================  ==========================================

``reason`` and ``k`` are always written (by :class:`swift_ssid.integration.retrieval.Retriever`). Each driver writes
``<out>/run_<label>.jsonl``, ``<out>/table.md`` and ``<out>/table.csv`` (the zero-shot one also
``<out>/zeroshot.png``, R@K against N) and logs every command to ``<out>/logs/``; a re-run skips
finished training and resumes unfinished run files. Pure module apart from the subprocesses: no torch.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swift_ssid.core.jsonl import read_json, write_text_atomic
from swift_ssid.core.queries import Query, load_queries
from swift_ssid.integration.checkpoints import checkpoint_training_target, last_checkpoint
from swift_ssid.integration.retrieval import RESERVED_SETTING_KEYS, done_query_ids
from swift_ssid.integration.settings import SSIDSettings
from swift_ssid.reporting.tables import TableRow, plot_table, summarize_run_files, to_csv, to_markdown
from swift_ssid.workflows.kinds import KindOptions
from swift_ssid.workflows.pipeline import run_logged, swift_executable

logger = logging.getLogger(__name__)

REASON_SETTINGS: tuple[str, ...] = ("train+infer", "train-only", "none")
"""``setting.reason`` values, in the order of the paper's Table III."""
REASON_RUN_STEMS = {
    "train+infer": "run_reason_train_infer",
    "train-only": "run_reason_train_only",
    "none": "run_noreason",
}
SFT_MARKER = "ssid_protocol.json"
_RECIPE_KEYS = (SSIDSettings.env_var("target"), SSIDSettings.env_var("infer_reason"))  # the recipe decides these
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_LANGUAGE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
MAX_LISTED = 5


# ---------------------------------------------------------------- setting labels


def parse_label_value(text: str) -> int | float | str:
    """A label value from the command line: a whole number or a decimal becomes a number, anything else stays text.

    Example:
        >>> parse_label_value("1000"), parse_label_value("0.5"), parse_label_value("zh")
        (1000, 0.5, 'zh')
    """
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?", text):
        return float(text)
    return text


def parse_labels(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` items (``swift-ssid retrieve --setting``) into run-row ``setting`` labels.

    Args:
        items: e.g. ``["language=zh", "n_train=1000"]``.

    Returns:
        ``{"language": "zh", "n_train": 1000}`` (values through :func:`parse_label_value`).

    Raises:
        ValueError: an item without ``=``, a bad or repeated key, an empty value, or a key the retriever
            writes itself (``reason``, ``k``).
    """
    labels: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ValueError(f"--setting {item!r} is not KEY=VALUE with a key such as language or n_train")
        if not value.strip():
            raise ValueError(f"--setting {item!r} has an empty value; write e.g. {key}=zh")
        if key in RESERVED_SETTING_KEYS:
            raise ValueError(
                f"--setting {item!r}: {key!r} is written by retrieve itself; use --target/--no-reason (reason) or --k"
            )
        if key in labels:
            raise ValueError(f"--setting names {key!r} twice ({labels[key]!r} and {value!r}); give each key once")
        labels[key] = parse_label_value(value.strip())
    return labels


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


# ---------------------------------------------------------------- query files


def check_gold_in_index(queries: Sequence[Query], index: Any, source: str) -> None:
    """Fail when a query's gold image has no identifier in the index (it could never be retrieved).

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


# ---------------------------------------------------------------- running retrieve and sft


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


def run_ablation(
    opts: RetrieveOptions,
    queries: str | os.PathLike,
    out_dir: str | os.PathLike,
    reason_checkpoint: str | os.PathLike | None,
    noreason_checkpoint: str | os.PathLike | None,
    settings: Sequence[str] = REASON_SETTINGS,
) -> ProtocolResult:
    """The reason ablation (Table III): one run per setting, from the two checkpoints of the ablation's trainings.

    ``train+infer`` and ``train-only`` query the checkpoint trained with reasons (``train_*.yaml``), the second
    ending each response after the identifier line (``--no-reason``); ``none`` queries the checkpoint trained
    without (``train_*_noreason.yaml``, ``--target noreason``). A checkpoint whose ``args.json`` names the other
    target's datasets is refused.

    Args:
        opts: the shared retrieve options.
        queries: the queries file (test captions).
        out_dir: where runs, logs and tables go.
        reason_checkpoint: ``swift sft`` checkpoint trained on ``ssid-memorize``/``ssid-retrieve``.
        noreason_checkpoint: checkpoint trained on the ``-noreason`` datasets.
        settings: which of :data:`REASON_SETTINGS` to run.

    Returns:
        The runs and the table by ``reason``.
    """
    out_dir = Path(out_dir)
    unknown = [s for s in settings if s not in REASON_SETTINGS]
    if unknown or not settings:
        raise ValueError(f"ablation settings {list(settings)}: use some of {', '.join(REASON_SETTINGS)}")
    plans = {  # setting -> (checkpoint, training target, extra retrieve flags)
        "train+infer": (reason_checkpoint, "reason", []),
        "train-only": (reason_checkpoint, "reason", ["--no-reason"]),
        "none": (noreason_checkpoint, "noreason", []),
    }
    for setting in settings:
        checkpoint, target, _ = plans[setting]
        flag = "--reason-adapter" if target == "reason" else "--noreason-adapter"
        if checkpoint is None:
            raise ValueError(f"setting {setting!r} needs the checkpoint trained with target {target}: pass {flag}")
        trained = checkpoint_training_target(checkpoint)
        if trained is None:
            logger.warning(
                "%s: its args.json names no SSID dataset; assuming it was trained with target %s", checkpoint, target
            )
        elif trained != target:
            raise ValueError(
                f"{flag} {checkpoint} was trained on the {trained} datasets (args.json), but setting {setting!r} needs "
                f"a model trained with target {target}; swap the checkpoints"
            )
    _check_queries(opts, queries)
    runs: dict[str, Path] = {}
    for setting in settings:
        checkpoint, target, extra = plans[setting]
        stem = REASON_RUN_STEMS[setting]
        runs[setting] = retrieve(
            opts,
            queries,
            out_dir / f"{stem}.jsonl",
            {"protocol": "ablation"},
            out_dir / "logs" / f"{stem}.log",
            checkpoint,
            ["--target", target, *extra],
            env={SSIDSettings.env_var("target"): "", SSIDSettings.env_var("infer_reason"): ""},  # the flags decide
        )
    table, markdown = write_tables(list(runs.values()), "reason", out_dir, "Reason ablation (Table III)")
    return ProtocolResult(runs, table, markdown, {"table.md": out_dir / "table.md", "table.csv": out_dir / "table.csv"})


def _check_queries(opts: RetrieveOptions, *files: str | os.PathLike) -> dict[str, list[Query]]:
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


def train_zeroshot(
    n: int,
    recipe: str | os.PathLike,
    opts: RetrieveOptions,
    collection: str | os.PathLike,
    image_root: str | os.PathLike | None,
    output_dir: Path,
    log: Path,
    sft_args: Sequence[str] = (),
) -> Path:
    """``swift sft RECIPE`` on the first N training images under ``SSID_PROTOCOL=zeroshot``; skipped when done before.

    Returns:
        The checkpoint it wrote (recorded in ``<output_dir>/ssid_protocol.json``).
    """
    settings = SSIDSettings(
        index_dir=Path(opts.index),
        collection=str(collection),
        image_root=str(image_root) if image_root else None,
        protocol="zeroshot",
        train_size=n,
    )
    record = {"protocol": "zeroshot", "n_train": n}
    return train_once(recipe, opts, settings, output_dir, log, record, sft_args)


def run_zeroshot(
    opts: RetrieveOptions,
    queries: str | os.PathLike,
    out_dir: str | os.PathLike,
    ns: Sequence[int],
    recipe: str | os.PathLike,
    collection: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    sft_args: Sequence[str] = (),
) -> ProtocolResult:
    """The zero-shot curve (Fig. 3): for each N, train on the first N training images, then retrieve.

    N = 0 is the base model (no training). Training uses ``SSID_PROTOCOL=zeroshot``, so no test image's
    identifier is ever a training target; the index still holds the test images (stage 1 covered them).

    Args:
        opts: the shared retrieve options (``--model`` etc. also go to ``swift sft``).
        queries: the queries file (test captions).
        out_dir: where checkpoints (``sft_n<N>/``), runs, logs, tables and ``zeroshot.png`` go.
        ns: training-set sizes N (training images; whole numbers >= 0, no repeats).
        recipe: the ``swift sft`` recipe (``recipes/train_qwen2_5_vl_zeroshot.yaml``).
        collection: ``SSID_COLLECTION`` for training.
        image_root: ``SSID_IMAGE_ROOT`` (None: the collection's folder).
        sft_args: extra ``swift sft`` flags (after the recipe's).

    Returns:
        The runs and the table by ``n_train`` (ascending N).
    """
    out_dir = Path(out_dir)
    if not ns or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in ns) or len(set(ns)) != len(ns):
        raise ValueError(f"--ns {list(ns)}: give distinct whole numbers >= 0, e.g. --ns 0 1000 3000 5000")
    if not Path(recipe).is_file():
        raise FileNotFoundError(f"recipe {recipe} not found; run from the repository root or pass --recipe")
    _check_queries(opts, queries)
    runs: dict[str, Path] = {}
    for n in sorted(ns):
        checkpoint = None
        if n > 0:
            sft_dir = out_dir / f"sft_n{n}"
            checkpoint = train_zeroshot(
                n, recipe, opts, collection, image_root, sft_dir, out_dir / "logs" / f"sft_n{n}.log", sft_args
            )
        labels = {"protocol": "zeroshot", "n_train": n}
        runs[str(n)] = retrieve(
            opts, queries, out_dir / f"run_n{n}.jsonl", labels, out_dir / "logs" / f"run_n{n}.log", checkpoint
        )
    plot = out_dir / "zeroshot.png"
    title = "Zero-shot retrieval: R@K vs training images N (Fig. 3)"
    table, markdown = write_tables(list(runs.values()), "n_train", out_dir, title, plot=plot)
    files = {"table.md": out_dir / "table.md", "table.csv": out_dir / "table.csv", "zeroshot.png": plot}
    return ProtocolResult(runs, table, markdown, files)


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
    loaded = _check_queries(opts, *query_files.values())
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


# ---------------------------------------------------------------- identifier kinds (Tables I and II)

IDENTIFIER_KINDS: tuple[str, ...] = ("numeric", "string", "semantic", "structured", "atomic")
"""GRACE's kinds the ``identifiers`` protocol runs by default (``ssid`` joins when ``--ssid-index`` is given)."""
ATOMIC_SFT_FLAGS = ("--modules_to_save", "embed_tokens", "lm_head")
"""LoRA keeps the (resized) embedding and output layers trainable and saved, so the new tokens are learnt."""


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
    from swift_ssid.workflows.kinds import build_identifiers

    stats = out / "stats.json"
    if stats.is_file():
        done = json.loads(stats.read_text(encoding="utf-8"))
        if done.get("kind") == kind:
            logger.info("%s: index built before (%s), skipping", kind, out)
            return out
    logger.info("%s: building the identifier index -> %s", kind, out)
    build_identifiers(options.spec(kind), collection, out, image_root, tokenizer)
    return out


def train_kind(
    kind: str,
    index: Path,
    recipe: str | os.PathLike,
    opts: RetrieveOptions,
    collection: str | os.PathLike,
    image_root: str | os.PathLike | None,
    output_dir: Path,
    log: Path,
    sft_args: Sequence[str] = (),
) -> Path:
    """``swift sft RECIPE`` with ``SSID_INDEX`` = the kind's index (atomic: plus its new tokens); skipped when done.

    The recipe trains the no-reason targets (``ssid-*-noreason``: baselines have no reason line). For ``atomic``
    the command adds ``--new_special_tokens <index>/new_tokens.txt`` and, for LoRA, ``--modules_to_save
    embed_tokens lm_head``.

    Returns:
        The checkpoint it wrote (recorded in ``<output_dir>/ssid_protocol.json``).
    """
    from swift_ssid.core.kinds import NEW_TOKENS_FILE, index_new_tokens

    extra = [*sft_args]
    if index_new_tokens(index):
        extra += ["--new_special_tokens", str(index / NEW_TOKENS_FILE), *ATOMIC_SFT_FLAGS]
    settings = SSIDSettings(
        index_dir=Path(index), collection=str(collection), image_root=str(image_root) if image_root else None
    )
    return train_once(recipe, opts, settings, output_dir, log, {"protocol": "identifiers", "kind": kind}, extra)


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
    runs: dict[str, Path] = {}
    for kind, index in plan:
        checkpoint = train_kind(
            kind, index, recipe, opts, collection, image_root, out_dir / f"sft_{kind}",
            out_dir / "logs" / f"sft_{kind}.log", sft_args,
        )  # fmt: skip
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
            out_dir / "logs" / f"run_{kind}.log",
            checkpoint,
            ["--target", "noreason"],
            env={SSIDSettings.env_var("target"): "", SSIDSettings.env_var("infer_reason"): ""},
        )
    title = "Identifier kinds (rows by kind; Tables I and II in tables.md)"
    table, markdown = write_tables(list(runs.values()), "kind", out_dir, title)
    tables = kind_tables(table, model=model_label, collection=Path(collection).name)
    write_text_atomic(out_dir / "tables.md", tables)
    write_text_atomic(out_dir / "tables.csv", kind_tables_csv(table, model=model_label))
    files = {name: out_dir / name for name in ("table.md", "table.csv", "tables.md", "tables.csv")}
    return ProtocolResult(runs, table, tables, files)
